//! The admin listener: `/healthz` (the process serves), `/readyz` (config, CA, secrets and policy are loaded),
//! `/metrics` (Prometheus text) and `POST /reload` (recompile the policies; a broken one is refused).

use std::convert::Infallible;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use serde_json::json;

use crate::policy::Policies;
use crate::secrets::SecretStore;
use crate::telemetry::metrics::Metrics;

/// Why the process is not ready: still starting, or a secret backend that cannot serve every secret yet.
pub struct Readiness {
    starting: RwLock<Option<String>>,
    secrets: OnceLock<Arc<dyn SecretStore>>,
}

impl Readiness {
    pub fn starting() -> Self {
        Self {
            starting: RwLock::new(Some("starting".into())),
            secrets: OnceLock::new(),
        }
    }

    pub fn set(&self, not_ready: Option<String>) {
        *self.starting.write().unwrap_or_else(|e| e.into_inner()) = not_ready;
    }

    /// From now on, readiness also requires the store to have every configured secret.
    pub fn watch_secrets(&self, store: Arc<dyn SecretStore>) {
        let _ = self.secrets.set(store);
    }

    fn get(&self) -> Option<String> {
        let starting = self.starting.read().unwrap_or_else(|e| e.into_inner()).clone();
        starting.or_else(|| self.secrets.get().and_then(|s| s.not_ready()))
    }
}

pub struct Admin {
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    pub policies: Option<Arc<Policies>>,
}

pub async fn serve(admin: Arc<Admin>, stream: TcpStream) {
    let service = service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(route(&admin, &req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

async fn route(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, JSON, r#"{"status":"ok"}"#.into()),
        (&Method::GET, "/readyz") => {
            // A refused policy reload leaves the previous policy enforcing: reported here, not "unready".
            let policy_error = admin.policies.as_ref().and_then(|p| p.last_error());
            match admin.readiness.get() {
                None => reply(
                    StatusCode::OK,
                    JSON,
                    json!({ "ready": true, "policy_error": policy_error }).to_string(),
                ),
                Some(reason) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    JSON,
                    json!({ "ready": false, "reason": reason }).to_string(),
                ),
            }
        }
        (&Method::POST, "/reload") => reload(admin).await,
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            admin.metrics.render(),
        ),
        _ => reply(StatusCode::NOT_FOUND, JSON, r#"{"error":"not_found"}"#.into()),
    }
}

async fn reload(admin: &Admin) -> Response<Full<Bytes>> {
    let Some(policies) = admin.policies.clone() else {
        return reply(
            StatusCode::OK,
            "application/json",
            r#"{"policy":"none configured"}"#.into(),
        );
    };
    let result = tokio::task::spawn_blocking(move || policies.reload()).await;
    let (status, body) = match result {
        Ok(Ok(changed)) => {
            admin.metrics.policy_reload(true);
            tracing::info!(changed, "policy reloaded through the admin API");
            (
                StatusCode::OK,
                json!({ "policy": if changed { "reloaded" } else { "unchanged" } }),
            )
        }
        Ok(Err(e)) => {
            admin.metrics.policy_reload(false);
            tracing::error!(error = %e, "policy reload refused; the previous policy stays in force");
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": "policy_reload_failed", "message": e.to_string() }),
            )
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": "internal", "message": e.to_string() }),
        ),
    };
    reply(status, "application/json", body.to_string())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static status and headers are valid")
}
