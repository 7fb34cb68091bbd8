//! The admin listener: `/healthz` (the process serves), `/readyz` (config, CA, secrets and policy are loaded),
//! `/metrics` (Prometheus text), `POST /reload` (the config file, else the policies; a broken one is refused), the kill
//! switch (`POST /block`, `/unblock`, `/agents/{id}/block`, `/agents/{id}/unblock`, `GET /blocked`) and
//! `GET /config` (redacted). Everything but the probes and `/metrics` requires the admin token, which always
//! exists (generated at start when none is configured, see [`crate::admin_token`]).

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

use crate::killswitch::KillSwitch;
use crate::reload::{Outcome, Reloader};

const JSON: &str = "application/json";
use crate::secrets::{Secret, SecretStore};
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
    pub kill_switch: Arc<KillSwitch>,
    /// The configuration in force (`/config`, its policies) and `POST /reload`.
    pub reloader: Arc<Reloader>,
    /// Every endpoint but the probes and `/metrics` requires `Authorization: Bearer <token>`.
    pub token: Secret,
}

/// Open admin connections kept; past it the oldest is closed to make room.
const MAX_CONNECTIONS: usize = 64;
/// A connection must have sent a whole request head within this.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Accepts admin connections until shutdown. A flood of half-open connections must not starve the probes
/// (a failing liveness probe gets the pod killed): when full, the oldest connection is closed, so the newest
/// (a kubelet probe sends its request at once) is always served; and a request head must arrive within
/// [`HEADER_READ_TIMEOUT`].
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    admin: Arc<Admin>,
) {
    let mut open: std::collections::VecDeque<tokio::task::AbortHandle> = Default::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        open.retain(|c| !c.is_finished());
        if open.len() >= MAX_CONNECTIONS {
            if let Some(oldest) = open.pop_front() {
                oldest.abort();
            }
        }
        open.push_back(tokio::spawn(serve(admin.clone(), stream)).abort_handle());
    }
}

async fn serve(admin: Arc<Admin>, stream: TcpStream) {
    let service = service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(route(&admin, &req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

async fn route(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let open = req.method() == Method::GET && matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
    if !open && !authorized(admin, req) {
        return reply(
            StatusCode::UNAUTHORIZED,
            JSON,
            r#"{"error":"unauthorized","message":"admin API needs Authorization: Bearer <admin token>"}"#.into(),
        );
    }
    let path = req.uri().path();
    if req.method() == Method::POST {
        if let Some(action) = kill_switch_action(path) {
            match action {
                (true, agent) => admin.kill_switch.block(agent),
                (false, agent) => admin.kill_switch.unblock(agent),
            }
            return reply(
                StatusCode::OK,
                JSON,
                json!({ "blocked": admin.kill_switch.status() }).to_string(),
            );
        }
    }
    match (req.method(), path) {
        (&Method::GET, "/blocked") => reply(
            StatusCode::OK,
            JSON,
            json!({ "blocked": admin.kill_switch.status() }).to_string(),
        ),
        (&Method::GET, "/config") => reply(StatusCode::OK, JSON, admin.reloader.view().to_string()),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, JSON, r#"{"status":"ok"}"#.into()),
        (&Method::GET, "/readyz") => {
            // A refused reload leaves the previous configuration or policy in force: reported here, not
            // "unready".
            let policy_error = admin.reloader.policies().and_then(|p| p.last_error());
            let config_error = admin.reloader.last_error();
            match admin.readiness.get() {
                None => reply(
                    StatusCode::OK,
                    JSON,
                    json!({ "ready": true, "policy_error": policy_error, "config_error": config_error }).to_string(),
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

/// `POST /block`, `/unblock`, `/agents/{id}/block`, `/agents/{id}/unblock` → (block?, agent).
fn kill_switch_action(path: &str) -> Option<(bool, Option<&str>)> {
    match path {
        "/block" => Some((true, None)),
        "/unblock" => Some((false, None)),
        _ => {
            let rest = path.strip_prefix("/agents/")?;
            let (agent, action) = rest.rsplit_once('/')?;
            if agent.is_empty() || agent.contains('/') {
                return None;
            }
            match action {
                "block" => Some((true, Some(agent))),
                "unblock" => Some((false, Some(agent))),
                _ => None,
            }
        }
    }
}

fn authorized(admin: &Admin, req: &Request<Incoming>) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    token_matches(presented, &admin.token)
}

/// Constant-time comparison of a presented bearer token, so response timing does not leak it byte by byte.
pub fn token_matches(presented: &str, expected: &Secret) -> bool {
    let (a, b) = (presented.as_bytes(), expected.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /reload`: the config file if it changed (see [`crate::reload`]), else the policy directory.
async fn reload(admin: &Admin) -> Response<Full<Bytes>> {
    let (status, body) = match admin.reloader.reload().await {
        Ok(Outcome::Applied { restart_needed }) => (
            StatusCode::OK,
            json!({ "config": "reloaded", "restart_needed": restart_needed }),
        ),
        Ok(Outcome::Unchanged) => return reload_policy(admin).await,
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": "config_reload_failed", "message": e.to_string() }),
        ),
    };
    reply(status, JSON, body.to_string())
}

async fn reload_policy(admin: &Admin) -> Response<Full<Bytes>> {
    let (status, body) = match admin.reloader.reload_policies().await {
        None => (
            StatusCode::OK,
            json!({ "config": "unchanged", "policy": "none configured" }),
        ),
        Some(Ok(changed)) => (
            StatusCode::OK,
            json!({ "config": "unchanged", "policy": if changed { "reloaded" } else { "unchanged" } }),
        ),
        Some(Err(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": "policy_reload_failed", "message": e.to_string() }),
        ),
    };
    reply(status, JSON, body.to_string())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static status and headers are valid")
}
