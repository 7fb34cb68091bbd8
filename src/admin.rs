//! The admin listener: `/healthz` (the process serves), `/readyz` (config, CA and secrets are loaded) and
//! `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::telemetry::metrics::Metrics;

/// Why the process is not ready yet, or `None` once it is.
pub struct Readiness(RwLock<Option<String>>);

impl Readiness {
    pub fn starting() -> Self {
        Self(RwLock::new(Some("starting".into())))
    }

    pub fn set(&self, not_ready: Option<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = not_ready;
    }

    fn get(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub struct Admin {
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
}

pub async fn serve(admin: Arc<Admin>, stream: TcpStream) {
    let service = service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(route(&admin, &req)) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

fn route(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(
            StatusCode::OK,
            "application/json",
            r#"{"status":"ok"}"#.into(),
        ),
        (&Method::GET, "/readyz") => match admin.readiness.get() {
            None => reply(
                StatusCode::OK,
                "application/json",
                r#"{"ready":true}"#.into(),
            ),
            Some(reason) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({ "ready": false, "reason": reason }).to_string(),
            ),
        },
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            admin.metrics.render(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"not_found"}"#.into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static status and headers are valid")
}
