//! OpenTelemetry traces: one server span per intercepted request, W3C trace context continued from the agent
//! and passed to the upstream. The policy decision, the secret lookup and each upstream attempt are events on
//! that span by default; `child_spans: true` makes each a child span instead. Events cost a fraction of a span:
//! a span is a separate record the export queue encodes and ships, an event is a few values on one that
//! already exists (see BENCHMARKS.md for the measured difference).
//!
//! Spans carry names and codes only (route, credential names, decision); the query is recorded with its values
//! replaced, and no header value is ever copied into a span. With tracing off every call here is a no-op
//! on an empty `Option`, so the request path pays nothing for it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use super::export::{Flusher, QueueProcessor, QueueSettings};
use super::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Validated `telemetry.traces` settings.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub sample_ratio: f64,
    pub max_queue: usize,
    pub max_batch: usize,
    pub flush_interval: Duration,
    pub export_timeout: Duration,
    pub service_name: String,
    /// Policy, secrets and upstream attempts as child spans rather than events on the request span.
    pub child_spans: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the OTLP trace exporter for {endpoint} could not be built: {message}")]
pub struct TraceError {
    endpoint: String,
    message: String,
}

/// The tracer and the export queue behind it.
pub struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    flusher: Flusher,
    propagator: TraceContextPropagator,
    child_spans: bool,
}

impl Tracing {
    /// Must run inside the Tokio runtime: the exporter's queue is drained by a task.
    pub fn start(settings: &TraceSettings, metrics: Arc<Metrics>) -> Result<Self, TraceError> {
        let failed = |e: &dyn std::fmt::Display| TraceError {
            endpoint: settings.endpoint.clone(),
            message: e.to_string(),
        };
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let exporter = match settings.protocol {
            OtlpProtocol::Grpc => builder
                .with_tonic()
                .with_endpoint(&settings.endpoint)
                .with_timeout(settings.export_timeout)
                .build(),
            OtlpProtocol::HttpProtobuf => builder
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(&settings.endpoint)
                .with_timeout(settings.export_timeout)
                .build(),
        }
        .map_err(|e| failed(&e))?;
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let queue = QueueSettings {
            max_queue: settings.max_queue,
            max_batch: settings.max_batch,
            flush_interval: settings.flush_interval,
        };
        let (processor, flusher) = QueueProcessor::spawn(exporter, &resource, queue, metrics);
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_span_processor(processor)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "keyward");
        Ok(Self {
            tracer,
            provider,
            flusher,
            propagator: TraceContextPropagator::new(),
            child_spans: settings.child_spans,
        })
    }

    /// Exports what is queued; called once requests have drained at shutdown.
    pub async fn shutdown(&self, timeout: Duration) {
        self.flusher.flush(timeout).await;
        let _ = self.provider.shutdown();
    }
}

/// The spans of one request. Empty when tracing is off.
pub struct RequestTrace {
    cx: Option<(Arc<Tracing>, Context)>,
}

/// One step of a request (policy, secrets, an upstream attempt): a child span, or an event on the request span
/// written when it ends. Either way it is recorded when dropped.
pub struct ChildSpan {
    step: Step,
}

enum Step {
    Off,
    Span(Context),
    Event {
        request: Context,
        name: &'static str,
        attributes: Vec<KeyValue>,
        started: Instant,
    },
}

impl RequestTrace {
    pub const OFF: Self = Self { cx: None };

    /// Starts the server span, as a child of the agent's `traceparent` when it sent one.
    pub fn start(
        tracing: Option<&Arc<Tracing>>,
        headers: &HeaderMap,
        method: &http::Method,
        attributes: Vec<KeyValue>,
    ) -> Self {
        let Some(tracing) = tracing else { return Self::OFF };
        let parent = tracing.propagator.extract(&HeaderRead(headers));
        let span = tracing
            .tracer
            .span_builder(method.to_string())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&tracing.tracer, &parent);
        Self {
            cx: Some((tracing.clone(), parent.with_span(span))),
        }
    }

    /// The W3C trace id, for joining audit lines to traces.
    pub fn trace_id(&self) -> Option<String> {
        let (_, cx) = self.cx.as_ref()?;
        Some(cx.span().span_context().trace_id().to_string())
    }

    pub fn set(&self, attribute: KeyValue) {
        if let Some((_, cx)) = &self.cx {
            cx.span().set_attribute(attribute);
        }
    }

    /// Names the span after its route, as HTTP server spans are named after their route template.
    pub fn rename(&self, name: String) {
        if let Some((_, cx)) = &self.cx {
            cx.span().update_name(name);
        }
    }

    pub fn child(&self, name: &'static str, kind: SpanKind, attributes: Vec<KeyValue>) -> ChildSpan {
        let step = match &self.cx {
            None => Step::Off,
            Some((tracing, parent)) if tracing.child_spans => {
                let span = tracing
                    .tracer
                    .span_builder(name)
                    .with_kind(kind)
                    .with_attributes(attributes)
                    .start_with_context(&tracing.tracer, parent);
                Step::Span(parent.with_span(span))
            }
            Some((_, parent)) => Step::Event {
                request: parent.clone(),
                name,
                attributes,
                started: Instant::now(),
            },
        };
        ChildSpan { step }
    }

    /// Ends the server span; an error status for 5xx answers, as the HTTP conventions ask of server spans.
    pub fn end(self, status: http::StatusCode, error_type: Option<&'static str>) {
        let Some((_, cx)) = self.cx else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
        if let Some(error) = error_type {
            span.set_attribute(KeyValue::new("error.type", error));
        }
        if status.is_server_error() {
            span.set_status(Status::error(error_type.unwrap_or("")));
        }
        span.end();
    }
}

impl ChildSpan {
    pub fn set(&mut self, attribute: KeyValue) {
        match &mut self.step {
            Step::Off => {}
            Step::Span(cx) => cx.span().set_attribute(attribute),
            Step::Event { attributes, .. } => attributes.push(attribute),
        }
    }

    /// Marks the step failed; as a child span that is an error status, as an event an `error.type` attribute
    /// (the request span's own status is set once, when it ends).
    pub fn fail(&mut self, error_type: &'static str) {
        self.set(KeyValue::new("error.type", error_type));
        if let Step::Span(cx) = &self.step {
            cx.span().set_status(Status::error(error_type));
        }
    }

    /// Writes `traceparent` (and `tracestate`) naming this step's span, or the request span when steps are
    /// events, replacing whatever the agent sent.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let cx = match &self.step {
            Step::Off => return,
            Step::Span(cx) | Step::Event { request: cx, .. } => cx,
        };
        TraceContextPropagator::new().inject_context(cx, &mut HeaderWrite(headers));
    }
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.step, Step::Off) {
            Step::Off => {}
            Step::Span(cx) => cx.span().end(),
            Step::Event {
                request,
                name,
                mut attributes,
                started,
            } => {
                let micros = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
                attributes.push(KeyValue::new("duration_us", micros));
                request.span().add_event(name, attributes);
            }
        }
    }
}

/// A string-array attribute (credential names).
pub fn strings(key: &'static str, values: &[String]) -> KeyValue {
    let values: Vec<StringValue> = values.iter().map(|v| StringValue::from(v.clone())).collect();
    KeyValue::new(key, Value::Array(Array::String(values)))
}

pub fn text(key: &'static str, value: impl Into<Cow<'static, str>>) -> KeyValue {
    let mut value = value.into();
    if value.len() > MAX_ATTRIBUTE {
        let mut end = MAX_ATTRIBUTE;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value = Cow::Owned(value[..end].to_string());
    }
    KeyValue::new(key, Value::String(StringValue::from(value)))
}

/// Longest text attribute kept on a span (paths and user ids come from the agent).
const MAX_ATTRIBUTE: usize = 1024;

struct HeaderRead<'a>(&'a HeaderMap);

impl Extractor for HeaderRead<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderWrite<'a>(&'a mut HeaderMap);

impl Injector for HeaderWrite<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
