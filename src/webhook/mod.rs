//! `keyward webhook`: the Kubernetes mutating admission webhook (AdmissionReview v1) that injects the
//! Keyward sidecar into annotated pods. It serves HTTPS only, answers malformed or oversized reviews with an
//! error instead of failing, and never touches a pod that did not ask for injection.

pub mod annotations;
mod containers;
pub mod mutate;
pub mod settings;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use mutate::Settings;

/// Largest AdmissionReview accepted; the API server's own limit on objects is 1.5 MiB.
const MAX_REVIEW: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

pub fn load_settings(path: &Path) -> Result<Settings, WebhookError> {
    let err = |message: String| WebhookError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut settings: Settings =
        crate::yaml::parse(&text).map_err(|e| err(format!("line {}: {}", e.line, e.message)))?;
    if let Some(file) = &settings.controller_ca_file {
        if !settings.controller_ca.trim().is_empty() {
            return Err(err("set controller_ca or controller_ca_file, not both".into()));
        }
        settings.controller_ca =
            std::fs::read_to_string(file).map_err(|e| err(format!("controller_ca_file {}: {e}", file.display())))?;
    }
    settings.check().map_err(err)?;
    Ok(settings)
}

/// The serving TLS configuration, with the certificate re-read when its files change
/// ([`crate::tls::serving`]).
pub(crate) fn tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
    let resolver = crate::tls::serving::FileCert::load(cert, key).map_err(|message| WebhookError::File {
        path: cert.display().to_string(),
        message,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::File {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves until `shutdown` flips.
pub async fn run(
    listen: SocketAddr,
    cert: &Path,
    key: &Path,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> Result<(), WebhookError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls(cert, key)?);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| WebhookError::Bind { addr: listen, source })?;
    tracing::info!(addr = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()), "keyward webhook listening");
    let settings = Arc::new(settings);
    crate::listener::serve(
        listener,
        shutdown,
        crate::listener::cap(1024),
        move |stream, peer, slot| {
            let (acceptor, settings) = (acceptor.clone(), settings.clone());
            async move {
                let _slot = slot;
                let Ok(tls) = acceptor.accept(stream).await else {
                    tracing::debug!(%peer, "webhook TLS handshake failed");
                    return;
                };
                let service = service_fn(move |req| {
                    let settings = settings.clone();
                    async move { Ok::<_, Infallible>(handle(&settings, req).await) }
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

pub(crate) async fn handle(settings: &Settings, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, json!({ "status": "ok" })),
        (&Method::POST, "/mutate") if declared_length(&req).is_some_and(|n| n > MAX_REVIEW as u64) => reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({ "error": "review over 2 MiB refused" }),
        ),
        (&Method::POST, "/mutate") => match Limited::new(req.into_body(), MAX_REVIEW).collect().await {
            Ok(body) => review(settings, &body.to_bytes()),
            Err(_) => reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({ "error": "review over 2 MiB refused" }),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, json!({ "error": "not found" })),
    }
}

fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The AdmissionReview answer: `allowed`, with a patch when the pod asked for injection; refused only when a
/// pod that asks for injection carries a bad `keyward.dev/*` annotation value (the message says which).
fn review(settings: &Settings, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return reply(StatusCode::BAD_REQUEST, json!({ "error": "body is not JSON" }));
    };
    let (Some(uid), Some(pod)) = (
        review.pointer("/request/uid").and_then(Value::as_str),
        review.pointer("/request/object"),
    ) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({ "error": "not an AdmissionReview: request.uid and request.object are required" }),
        );
    };
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Err(message) = annotations::check_annotations(pod) {
        tracing::info!(%message, "pod refused: a bad keyward.dev annotation");
        response["allowed"] = json!(false);
        response["status"] = json!({ "code": 400, "reason": "BadRequest", "message": message });
    } else if let Some(ops) = mutate::patch(pod, settings) {
        let name = pod
            .pointer("/metadata/name")
            .or(pod.pointer("/metadata/generateName"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        tracing::info!(pod = name, operations = ops.len(), "injecting the keyward sidecar");
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(Value::Array(ops).to_string()));
    }
    reply(
        StatusCode::OK,
        json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response }),
    )
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static status and headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBkeywardControllerCA\n-----END CERTIFICATE-----\n";

    fn load(text: &str) -> Result<Settings, WebhookError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.yaml");
        std::fs::write(&path, text).unwrap();
        load_settings(&path)
    }

    #[test]
    fn the_controller_ca_comes_inline_or_from_a_file_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, PEM).unwrap();
        let base = "image: keyward:test\ncontroller_url: https://keyward-controller.keyward.svc:443\n";

        let from_file = load(&format!("{base}controller_ca_file: {}\n", ca.display())).unwrap();
        assert_eq!(from_file.controller_ca, PEM);
        let inline = load(&format!("{base}controller_ca: {PEM:?}\n")).unwrap();
        assert_eq!(inline.controller_ca, PEM);

        let both = load(&format!(
            "{base}controller_ca: {PEM:?}\ncontroller_ca_file: {}\n",
            ca.display()
        ));
        assert!(both.unwrap_err().to_string().contains("not both"));
        let missing = load(&format!(
            "{base}controller_ca_file: {}\n",
            dir.path().join("nope").display()
        ));
        assert!(missing.unwrap_err().to_string().contains("controller_ca_file"));
        let neither = load(base);
        assert!(neither.unwrap_err().to_string().contains("controller_ca"));
        let plain = load(&format!(
            "image: keyward:test\ncontroller_url: http://keyward-controller.keyward.svc\ncontroller_ca: {PEM:?}\n"
        ));
        assert!(plain.unwrap_err().to_string().contains("https://"));
    }
}
