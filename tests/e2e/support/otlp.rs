//! A test OpenTelemetry collector speaking real OTLP: the gRPC `TraceService/Export` (tonic, generated from
//! the OTLP protos) or HTTP/protobuf `POST /v1/traces`, on 127.0.0.1. It keeps every span it receives.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

/// One received span, flattened for assertions. Ids are lowercase hex, as in `traceparent`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub service: String,
    /// Attribute values rendered as strings; arrays as their items joined by `,`.
    pub attributes: BTreeMap<String, String>,
    /// The span's events by name, with their attributes rendered the same way.
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The attributes of this span's event `name`; panics when it has none.
    pub fn event(&self, name: &str) -> &BTreeMap<String, String> {
        self.events
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, attributes)| attributes)
            .unwrap_or_else(|| panic!("no {name} event on {self:#?}"))
    }
}

/// SpanKind values of the OTLP protocol.
pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;

pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<ReceivedSpan>>>);

impl Sink {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| render(a.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(ReceivedSpan {
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    service: service.clone(),
                    attributes: rendered(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), rendered(&e.attributes)))
                        .collect(),
                });
            }
        }
    }
}

fn rendered(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|a| (a.key.clone(), render(a.value.as_ref().and_then(|v| v.value.as_ref()))))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    pub async fn grpc() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = Sink(Arc::default());
        let spans = sink.0.clone();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        Self { addr, spans, task }
    }

    /// The OTLP/HTTP receiver: protobuf bodies on `POST /v1/traces`; anything else is a 404 or 415.
    pub async fn http() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = Sink(Arc::default());
        let spans = sink.0.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let protobuf = req
                                .headers()
                                .get("content-type")
                                .is_some_and(|v| v == "application/x-protobuf");
                            let status = if req.uri().path() != "/v1/traces" || req.method() != "POST" {
                                404
                            } else if !protobuf {
                                415
                            } else {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                match ExportTraceServiceRequest::decode(body) {
                                    Ok(request) => {
                                        sink.take(request);
                                        200
                                    }
                                    Err(_) => 400,
                                }
                            };
                            let body = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, spans, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (bounded) until the spans received satisfy `done`, and returns them.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        super::eventually(what, Duration::from_secs(20), || done(&self.spans())).await;
        self.spans()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn render(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| render(v.value.as_ref()))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
