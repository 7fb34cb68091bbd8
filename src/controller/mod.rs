//! `keyward controller`: the in-cluster service sidecars talk to. It signs each sidecar a short-lived
//! intermediate CA certificate (so the root CA key stays in one Secret, in the controller's namespace), and
//! keeps the fleet-wide blocked-agents set, which sidecars follow by long poll. It can also serve the admission
//! webhook, so one Deployment does both.
//!
//! Stateless: the root CA is read from its Secret (re-read every `--root-refresh`, 10 s by default, so a
//! rotation needs no restart), the blocked set lives in a ConfigMap that every replica watches, and sidecars authenticate with a
//! projected service-account token (audience `keyward`) checked by the TokenReview API.
//!
//! API (HTTPS):
//! - `POST /v1/certificate` `{"csr": PEM}`, bearer: the sidecar's token → `{"certificate", "trust_bundle",
//!   "not_after"}`;
//! - `GET /v1/configs/{name}[?wait=30s]` (with `If-None-Match`, the answer waits for a change), bearer: a
//!   sidecar's token → `{"name", "version", "files": {"keyward.yaml": …, "*.rego": …}}`, from the ConfigMap of
//!   that name labelled `keyward.dev/proxy-config=true` in the controller's namespace;
//! - `GET /v1/blocked[?wait=30s]` (with `If-None-Match` the answer waits for a change, up to `wait`), bearer:
//!   a sidecar's token or the API token → `{"version", "all", "agents"}`;
//! - `POST /v1/block`, `/v1/unblock`, `/v1/agents/{id}/block`, `/v1/agents/{id}/unblock`, bearer: the API token
//!   (audited);
//! - `POST /mutate` (the webhook, when configured), `GET /healthz`, `/readyz`, `/metrics`.

pub mod cluster;
pub mod issue;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rcgen::{Issuer, KeyPair};
use serde_json::json;
use tokio::sync::watch;

use crate::killswitch::Fleet;
use crate::secrets::Secret;
use cluster::{Cluster, Refusal};

/// Longest a blocked-set poll waits for a change.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The label that makes a ConfigMap in the controller's namespace a served proxy configuration.
pub const CONFIG_LABEL: &str = "keyward.dev/proxy-config=true";
/// Largest request body (a CSR, or a block call).
const MAX_BODY: usize = 16 * 1024;

/// `keyward controller`'s settings (its flags).
pub struct Settings {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub namespace: String,
    pub ca_secret: String,
    pub blocked_configmap: String,
    /// The audience sidecars' tokens must carry.
    pub audience: String,
    /// Labels an agent's namespace must carry for its sidecars to get certificates.
    pub namespace_selector: BTreeMap<String, String>,
    pub intermediate_lifetime: Duration,
    /// How often the root CA Secret is re-read.
    pub root_refresh: Duration,
    /// Bearer token for the block API (from a chart-generated Secret).
    pub api_token: Secret,
    pub webhook: Option<crate::webhook::Settings>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("the Kubernetes API client could not be set up: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
}

/// The root CA as loaded from its Secret.
struct Root {
    issuer: Issuer<'static, KeyPair>,
    /// Every root agents must trust (the root itself, plus the old one during a rotation).
    bundle: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
    reason: &'static str,
}

struct Metrics {
    registry: Registry,
    certificates: Family<Outcome, Counter>,
    configs_served: Counter,
    watchers: Gauge,
    blocked_agents: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("keyward_controller");
        let certificates = Family::<Outcome, Counter>::default();
        registry.register(
            "certificates",
            "Intermediate certificates by result (issued, refused) and reason",
            certificates.clone(),
        );
        let configs_served = Counter::default();
        registry.register(
            "configs_served",
            "Proxy configurations sent to sidecars (first fetches and changes)",
            configs_served.clone(),
        );
        let watchers = Gauge::default();
        registry.register(
            "watchers",
            "Sidecars waiting on a change (blocked set or configuration) now",
            watchers.clone(),
        );
        let blocked_agents = Gauge::default();
        registry.register(
            "blocked_agents",
            "Agents blocked fleet-wide (all agents counts as -1)",
            blocked_agents.clone(),
        );
        Self {
            registry,
            certificates,
            configs_served,
            watchers,
            blocked_agents,
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

struct Controller {
    settings: Settings,
    cluster: Cluster,
    root: ArcSwapOption<Root>,
    /// `(version, set)`: the version moves at every change the watch sees.
    fleet: watch::Sender<(u64, Fleet)>,
    /// The served proxy configurations by name.
    configs: watch::Sender<BTreeMap<String, cluster::Served>>,
    metrics: Metrics,
}

/// Serves until `shutdown` flips.
pub async fn run(settings: Settings, shutdown: watch::Receiver<bool>) -> Result<(), ControllerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(crate::webhook::tls(&settings.tls_cert, &settings.tls_key)?);
    let cluster = Cluster::connect(settings.namespace.clone()).await?;
    let listener =
        tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| crate::webhook::WebhookError::Bind {
                addr: settings.listen,
                source,
            })?;
    let controller = Arc::new(Controller {
        cluster,
        root: ArcSwapOption::empty(),
        fleet: watch::channel((0, Fleet::default())).0,
        configs: watch::channel(BTreeMap::new()).0,
        metrics: Metrics::new(),
        settings,
    });
    tokio::spawn(controller.clone().keep_root());
    tokio::spawn(controller.clone().follow_blocked());
    let watching = controller.clone();
    tokio::spawn(async move {
        let sender = watching.configs.clone();
        watching
            .cluster
            .watch_configs(CONFIG_LABEL, move |configs| {
                sender.send_if_modified(|current| {
                    let changed = *current != configs;
                    *current = configs.clone();
                    changed
                });
            })
            .await;
    });
    tracing::info!(addr = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
        namespace = %controller.settings.namespace, "keyward controller listening");
    crate::listener::serve(
        listener,
        shutdown,
        crate::listener::cap(4096),
        move |stream, peer, slot| {
            let (acceptor, controller) = (acceptor.clone(), controller.clone());
            async move {
                let _slot = slot;
                let Ok(tls) = acceptor.accept(stream).await else {
                    tracing::debug!(%peer, "controller TLS handshake failed");
                    return;
                };
                let service = service_fn(move |req| {
                    let controller = controller.clone();
                    async move { Ok::<_, Infallible>(controller.handle(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        },
    )
    .await;
    Ok(())
}

impl Controller {
    async fn keep_root(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.root_refresh);
        loop {
            tick.tick().await;
            match self
                .cluster
                .ca(&self.settings.ca_secret)
                .await
                .and_then(|files| load_root(&files))
            {
                Ok(root) => self.root.store(Some(Arc::new(root))),
                Err(e) => {
                    tracing::error!(error = %e, "the root CA could not be loaded; certificates are refused until it can")
                }
            }
        }
    }

    async fn follow_blocked(self: Arc<Self>) {
        let this = self.clone();
        self.cluster
            .watch_blocked(&self.settings.blocked_configmap, move |fleet| {
                let count = if fleet.all { -1 } else { fleet.agents.len() as i64 };
                this.metrics.blocked_agents.set(count);
                this.fleet.send_if_modified(|(version, current)| {
                    if *current == fleet {
                        return false;
                    }
                    *version += 1;
                    *current = fleet.clone();
                    true
                });
            })
            .await;
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/healthz") => reply(StatusCode::OK, json!({ "status": "ok" })),
            (Method::GET, "/readyz") => self.ready().await,
            (Method::GET, "/metrics") => Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(self.metrics.render())))
                .expect("static headers"),
            (Method::POST, "/v1/certificate") => self.certificate(req).await,
            (Method::GET, "/v1/blocked") => self.blocked(req).await,
            (Method::GET, p) if p.starts_with("/v1/configs/") => {
                let name = p.trim_start_matches("/v1/configs/").to_string();
                self.config(req, &name).await
            }
            (Method::POST, "/mutate") if self.settings.webhook.is_some() => {
                let settings = self.settings.webhook.as_ref().expect("checked");
                crate::webhook::handle(settings, req).await
            }
            (Method::POST, p) => match block_action(p) {
                Some((block, agent)) => self.block(&req, block, agent).await,
                None => reply(StatusCode::NOT_FOUND, json!({ "error": "not_found" })),
            },
            _ => reply(StatusCode::NOT_FOUND, json!({ "error": "not_found" })),
        }
    }

    async fn ready(&self) -> Response<Full<Bytes>> {
        let root = self.root.load().is_some();
        let api = self.cluster.reachable(&self.settings.ca_secret).await;
        let status = if root && api {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        reply(
            status,
            json!({ "ready": root && api, "ca_loaded": root, "kubernetes_api": api }),
        )
    }

    /// The sidecar's identity from its bearer token, or the refusal (logged without the token, counted).
    async fn sidecar(&self, headers: &HeaderMap) -> Result<issue::Identity, Refusal> {
        let token = bearer(headers).ok_or_else(|| Refusal::Token("no bearer token".into()))?;
        let identity = self.cluster.review(token, &self.settings.audience).await?;
        self.cluster
            .enrolled(&identity.namespace, &self.settings.namespace_selector)
            .await?;
        Ok(identity)
    }

    async fn certificate(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let refused = |reason: &'static str, status: StatusCode, message: String| {
            self.metrics
                .certificates
                .get_or_create(&Outcome {
                    result: "refused",
                    reason,
                })
                .inc();
            tracing::warn!(reason, %message, "certificate refused");
            reply(status, json!({ "error": reason, "message": message }))
        };
        // The body is read before any answer: answering while the client still sends would reset the
        // connection under it, and the client would see no answer at all.
        let (parts, body) = req.into_parts();
        let body = read_json(body).await;
        let identity = match self.sidecar(&parts.headers).await {
            Ok(identity) => identity,
            Err(e @ Refusal::Api(_)) => return refused(e.code(), StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            Err(e @ Refusal::NotEnrolled(_)) => return refused(e.code(), StatusCode::FORBIDDEN, e.to_string()),
            Err(e) => return refused(e.code(), StatusCode::UNAUTHORIZED, e.to_string()),
        };
        let Some(root) = self.root.load_full() else {
            return refused(
                "ca_not_loaded",
                StatusCode::SERVICE_UNAVAILABLE,
                "the root CA is not loaded".into(),
            );
        };
        let csr = match body.map(|body| body["csr"].as_str().map(str::to_string)) {
            Ok(Some(csr)) => csr,
            _ => {
                return refused(
                    "bad_csr",
                    StatusCode::BAD_REQUEST,
                    "the body must be {\"csr\": PEM}".into(),
                )
            }
        };
        match issue::intermediate(&csr, &identity, self.settings.intermediate_lifetime, &root.issuer) {
            Ok((certificate, not_after)) => {
                self.metrics
                    .certificates
                    .get_or_create(&Outcome {
                        result: "issued",
                        reason: "ok",
                    })
                    .inc();
                tracing::info!(namespace = %identity.namespace, service_account = %identity.service_account,
                    pod = identity.pod.as_deref().unwrap_or("-"), %not_after, "intermediate certificate issued");
                let not_after = not_after
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                reply(
                    StatusCode::OK,
                    json!({ "certificate": certificate, "trust_bundle": root.bundle, "not_after": not_after }),
                )
            }
            Err(e @ issue::IssueError::BadCsr(_)) => refused("bad_csr", StatusCode::BAD_REQUEST, e.to_string()),
            Err(e) => refused("sign_failed", StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    fn is_api_caller(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| crate::admin::token_matches(t, &self.settings.api_token))
    }

    /// A sidecar (or the API token's holder) may read; anyone else gets the refusal.
    async fn reader(&self, req: &Request<Incoming>) -> Result<(), Response<Full<Bytes>>> {
        if self.is_api_caller(req.headers()) {
            return Ok(());
        }
        self.sidecar(req.headers()).await.map(|_| ()).map_err(|e| {
            reply(
                StatusCode::UNAUTHORIZED,
                json!({ "error": e.code(), "message": e.to_string() }),
            )
        })
    }

    async fn blocked(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if let Err(refused) = self.reader(&req).await {
            return refused;
        }
        let answer = long_poll(&req, &self.fleet, &self.metrics.watchers, |(version, fleet)| {
            let body = json!({ "version": version, "all": fleet.all, "agents": fleet.agents });
            Some((version.to_string(), body))
        })
        .await;
        answer.unwrap_or_else(|| reply(StatusCode::NOT_FOUND, json!({ "error": "not_found" })))
    }

    async fn config(&self, req: Request<Incoming>, name: &str) -> Response<Full<Bytes>> {
        if let Err(refused) = self.reader(&req).await {
            return refused;
        }
        let answer = long_poll(&req, &self.configs, &self.metrics.watchers, |configs| {
            let served = configs.get(name)?;
            let body = json!({ "name": name, "version": served.version, "files": served.files });
            Some((served.version.clone(), body))
        })
        .await;
        match answer {
            Some(response) => {
                if response.status() == StatusCode::OK {
                    self.metrics.configs_served.inc();
                }
                response
            }
            None => reply(
                StatusCode::NOT_FOUND,
                json!({ "error": "no_such_config", "message": format!("no ConfigMap {name} labelled {CONFIG_LABEL} in the controller's namespace") }),
            ),
        }
    }

    async fn block(&self, req: &Request<Incoming>, block: bool, agent: Option<String>) -> Response<Full<Bytes>> {
        if !self.is_api_caller(req.headers()) {
            tracing::warn!(path = %req.uri().path(), "controller API call refused: missing or wrong API token");
            return reply(StatusCode::UNAUTHORIZED, json!({ "error": "unauthorized" }));
        }
        let name = &self.settings.blocked_configmap;
        let result = self
            .cluster
            .update_blocked(name, |fleet| match (&agent, block) {
                (None, all) => fleet.all = all,
                (Some(id), true) => {
                    if !fleet.agents.contains(id) {
                        fleet.agents.push(id.clone());
                        fleet.agents.sort();
                    }
                }
                (Some(id), false) => fleet.agents.retain(|a| a != id),
            })
            .await;
        let action = if block { "block" } else { "unblock" };
        match result {
            Ok(fleet) => {
                tracing::warn!(target: "keyward::audit", action, agent = agent.as_deref().unwrap_or("*"),
                    "fleet kill switch changed through the controller API");
                reply(StatusCode::OK, json!({ "all": fleet.all, "agents": fleet.agents }))
            }
            Err(e) => {
                tracing::error!(action, error = %e, "fleet kill switch change failed");
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": "kubernetes_unavailable", "message": e.to_string() }),
                )
            }
        }
    }
}

/// Answers with `view` of the value in `channel`, tagged with its version as ETag. When the caller's
/// `If-None-Match` names the current version, waits up to `?wait=` (at most [`MAX_WAIT`]) for a change and
/// answers 304 when none comes. `None`: the view has nothing to show (no such item).
async fn long_poll<T: Clone>(
    req: &Request<Incoming>,
    channel: &watch::Sender<T>,
    watchers: &Gauge,
    view: impl Fn(&T) -> Option<(String, serde_json::Value)>,
) -> Option<Response<Full<Bytes>>> {
    let seen = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_string());
    let wait = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("wait=")))
        .and_then(|w| humantime::parse_duration(w).ok())
        .unwrap_or_default()
        .min(MAX_WAIT);
    let mut changes = channel.subscribe();
    let (mut version, mut body) = view(&changes.borrow_and_update())?;
    if seen.as_deref() == Some(version.as_str()) {
        watchers.inc();
        let deadline = tokio::time::Instant::now() + wait;
        let changed = loop {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {
                    let now = view(&changes.borrow_and_update())?;
                    if now.0 != version {
                        break Some(now);
                    }
                }
                _ => break None,
            }
        };
        watchers.dec();
        let Some(now) = changed else {
            return Some(
                Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .header(header::ETAG, format!("\"{version}\""))
                    .body(Full::new(Bytes::new()))
                    .expect("static headers"),
            );
        };
        (version, body) = now;
    }
    let mut response = reply(StatusCode::OK, body);
    if let Ok(tag) = header::HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    Some(response)
}

fn load_root(files: &cluster::RootFiles) -> Result<Root, String> {
    // Not `KeyPair::from_pem`: with ring it takes PKCS#8 only, and Helm's genCA writes PKCS#1.
    let key = crate::tls::ca::key_pair(&files.key)
        .ok_or("tls.key: not a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 P-256)")?;
    let der = rustls_pemfile::certs(&mut files.cert.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or("tls.crt: no PEM certificate")?;
    let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| format!("tls.crt: {e}"))?;
    let bundle = files.bundle.clone().unwrap_or_else(|| files.cert.clone());
    Ok(Root { issuer, bundle })
}

/// `POST /v1/block` → (true, None); `/v1/agents/{id}/unblock` → (false, Some(id)).
fn block_action(path: &str) -> Option<(bool, Option<String>)> {
    match path {
        "/v1/block" => Some((true, None)),
        "/v1/unblock" => Some((false, None)),
        _ => {
            let rest = path.strip_prefix("/v1/agents/")?;
            let (id, action) = rest.rsplit_once('/')?;
            let valid = !id.is_empty()
                && id.len() <= 253
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            match action {
                "block" if valid => Some((true, Some(id.to_string()))),
                "unblock" if valid => Some((false, Some(id.to_string()))),
                _ => None,
            }
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn read_json(body: Incoming) -> Result<serde_json::Value, ()> {
    let body = Limited::new(body, MAX_BODY).collect().await.map_err(|_| ())?;
    serde_json::from_slice(&body.to_bytes()).map_err(|_| ())
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart's CA Secret holds Helm `genCA` output: a PKCS#1 RSA key, which rcgen's `KeyPair::from_pem`
    /// (ring) refuses.
    #[test]
    fn a_root_from_helm_gen_ca_loads_and_signs() {
        for dir in ["ca-rsa-pkcs1", "ca-ec-sec1"] {
            let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(dir);
            let read = |name: &str| std::fs::read_to_string(base.join(name)).unwrap();
            let files = cluster::RootFiles {
                cert: read("ca.crt"),
                key: read("ca.key"),
                bundle: None,
            };
            let root = load_root(&files).unwrap_or_else(|e| panic!("{dir}: {e}"));
            assert_eq!(root.bundle, files.cert, "{dir}: the bundle is the root itself");
            let leaf_key = KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
            assert!(params.signed_by(&leaf_key, &root.issuer).is_ok(), "{dir} signs");
        }
    }
}
