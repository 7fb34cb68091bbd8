//! The sidecar's side of `keyward controller` (`keyward run --controller URL`): at start it generates a key
//! pair in memory, sends a CSR authenticated by its projected service-account token, and mints leaves under
//! the intermediate it gets back. It renews at two-thirds of the lifetime, retrying with jitter; past expiry it
//! reports not ready rather than serve certificates agents would refuse. It also follows the fleet-wide
//! blocked set by long poll, so a block reaches every sidecar within the poll's round trip.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};

use crate::admin::Readiness;
use crate::killswitch::{Fleet, KillSwitch};
use crate::reload::Reloader;
use crate::telemetry::metrics::Metrics;
use crate::tls::ca::Ca;
use crate::tls::leaf::{Issuing, LeafCache};

/// How long one blocked-set poll may wait at the controller.
const POLL_WAIT: Duration = Duration::from_secs(30);
/// Retry delays after a failed call: from the first to the longest.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A controller this sidecar uses: its URL, the CA its serving certificate chains to, and the projected
/// token file (re-read at every call: the kubelet rotates it).
pub struct Link {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    token: PathBuf,
}

/// An intermediate certificate from the controller, ready to sign leaves.
pub struct Issued {
    pub issuing: Issuing,
    pub trust_bundle: String,
    pub not_after: SystemTime,
}

impl Link {
    /// `ca`: the PEM of the CA the controller's serving certificate chains to; `source` names it in errors.
    pub fn new(url: &str, ca: &[u8], source: &str, token: PathBuf) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &ca[..]) {
            let cert = cert.map_err(|e| format!("{source}: {e}"))?;
            roots.add(cert).map_err(|e| format!("{source}: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("{source}: no PEM certificate"));
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            token,
        })
    }

    /// One call; the answer's status, ETag and JSON body (`Null` when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        etag: Option<&str>,
        limit: Duration,
    ) -> Result<(StatusCode, Option<String>, serde_json::Value), String> {
        let token = std::fs::read_to_string(&self.token).map_err(|e| format!("{}: {e}", self.token.display()))?;
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(etag) = etag {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("controller at {}: {e}", self.base))?;
            let status = response.status();
            let etag = response
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let json = if bytes.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|e| format!("controller answer: {e}"))?
            };
            Ok((status, etag, json))
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| format!("controller at {}: no answer within {limit:?}", self.base))?
    }

    /// As [`Link::new`], with the CA read from a file.
    pub fn with_ca_file(url: &str, ca: &Path, token: PathBuf) -> Result<Self, String> {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        Self::new(url, &pem, &ca.display().to_string(), token)
    }

    /// One call of the controller's API (`keyward block|unblock|blocked`): status and body text.
    pub async fn call_api(&self, method: Method, path: &str) -> Result<(StatusCode, String), String> {
        let (status, _, body) = self.call(method, path, None, None, Duration::from_secs(10)).await?;
        Ok((status, body.to_string()))
    }

    /// A fresh key pair and an intermediate certificate for it.
    pub async fn certificate(&self) -> Result<Issued, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "keyward sidecar");
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| e.to_string())?;
        let body = serde_json::json!({ "csr": csr });
        let (status, _, answer) = self
            .call(
                Method::POST,
                "/v1/certificate",
                Some(body),
                None,
                Duration::from_secs(10),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(format!(
                "controller refused the certificate ({status}): {}",
                answer["message"].as_str().unwrap_or("")
            ));
        }
        let pem = answer["certificate"]
            .as_str()
            .ok_or("controller answer has no certificate")?;
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or("controller answer: certificate is not PEM")?;
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| e.to_string())?;
        let not_after = answer["not_after"]
            .as_str()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .ok_or("controller answer: no not_after")?;
        Ok(Issued {
            issuing: Issuing {
                ca: Ca { issuer },
                chain: vec![der],
            },
            trust_bundle: answer["trust_bundle"].as_str().unwrap_or_default().to_string(),
            not_after: not_after.into(),
        })
    }

    /// Renews the intermediate at two-thirds of its lifetime, for as long as the process runs. A failure is
    /// logged, counted and retried with jittered backoff; past expiry the sidecar reports not ready until a
    /// renewal succeeds.
    pub async fn keep_certificate(
        self: Arc<Self>,
        leaves: Arc<LeafCache>,
        mut not_after: SystemTime,
        trust_bundle: Option<PathBuf>,
        readiness: Arc<Readiness>,
        metrics: Arc<Metrics>,
    ) {
        metrics.certificate_expiry(not_after);
        loop {
            let left = not_after.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left * 2 / 3).await;
            let mut delay = RETRY_FIRST;
            loop {
                match self.certificate().await {
                    Ok(issued) => {
                        if let Some(path) = &trust_bundle {
                            if let Err(e) = crate::tls::bundle::write(path, &issued.trust_bundle) {
                                tracing::error!(error = %e, "writing the renewed trust bundle failed");
                            }
                        }
                        not_after = issued.not_after;
                        leaves.replace_issuer(issued.issuing);
                        metrics.certificate_renewed(true);
                        metrics.controller_answered();
                        metrics.certificate_expiry(not_after);
                        readiness.set(None);
                        tracing::info!(not_after = %humantime::format_rfc3339_seconds(not_after), "intermediate certificate renewed");
                        break;
                    }
                    Err(e) => {
                        metrics.certificate_renewed(false);
                        let expired = SystemTime::now() >= not_after;
                        if expired {
                            readiness.set(Some(
                                "the intermediate certificate expired and could not be renewed".into(),
                            ));
                        }
                        tracing::error!(error = %e, expired, "renewing the intermediate certificate failed; retrying");
                        tokio::time::sleep(jittered(delay)).await;
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    }

    /// The proxy configuration `name`: `None` when `etag` is still current after the poll's wait.
    pub async fn config(&self, name: &str, etag: Option<&str>) -> Result<Option<(String, Files)>, String> {
        // A ConfigMap name (DNS subdomain); anything else could change the request's path or query.
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(format!(
                "{name:?} is not a configuration name (a Kubernetes object name: a-z, 0-9, - and .)"
            ));
        }
        let wait = if etag.is_some() { POLL_WAIT } else { Duration::ZERO };
        let path = format!("/v1/configs/{name}?wait={}s", wait.as_secs());
        let (status, tag, answer) = self
            .call(Method::GET, &path, None, etag, wait + Duration::from_secs(10))
            .await?;
        match status {
            StatusCode::OK => {
                let files = serde_json::from_value(answer["files"].clone())
                    .map_err(|e| format!("controller answer for config {name}: {e}"))?;
                Ok(Some((tag.unwrap_or_default(), files)))
            }
            StatusCode::NOT_MODIFIED => Ok(None),
            status => Err(format!(
                "controller answered {status} for config {name}: {}",
                answer["message"].as_str().unwrap_or("")
            )),
        }
    }

    /// Follows configuration `name`: each new version is written next to `config` and applied by `reloader`,
    /// which validates it as at start and keeps the running one if it fails.
    pub async fn follow_config(
        self: Arc<Self>,
        name: String,
        mut etag: String,
        config: PathBuf,
        reloader: Arc<Reloader>,
        metrics: Arc<Metrics>,
    ) {
        let mut delay = RETRY_FIRST;
        loop {
            match self.config(&name, Some(&etag)).await {
                Ok(None) => {
                    metrics.controller_answered();
                    delay = RETRY_FIRST;
                }
                Ok(Some((tag, files))) => {
                    metrics.controller_answered();
                    delay = RETRY_FIRST;
                    etag = tag;
                    match write_config(&config, &files) {
                        Ok(()) => {
                            tracing::info!(config = %name, version = %etag, "new configuration from keyward controller");
                            // Refusals are logged, counted and shown in /readyz by the reloader.
                            if let Ok(crate::reload::Outcome::Unchanged) = reloader.reload().await {
                                reloader.reload_policies().await;
                            }
                        }
                        Err(e) => {
                            tracing::error!(config = %name, error = %e, "writing the configuration from keyward controller failed")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(config = %name, error = %e, "polling keyward controller for the configuration failed; the running one stays in force");
                    tokio::time::sleep(jittered(delay)).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Follows the fleet-wide blocked set: a long poll that answers at once when the set changes.
    pub async fn follow_blocked(self: Arc<Self>, kill_switch: Arc<KillSwitch>, metrics: Arc<Metrics>) {
        let mut etag: Option<String> = None;
        let mut delay = RETRY_FIRST;
        loop {
            let path = format!("/v1/blocked?wait={}s", POLL_WAIT.as_secs());
            let limit = POLL_WAIT + Duration::from_secs(10);
            match self.call(Method::GET, &path, None, etag.as_deref(), limit).await {
                Ok((StatusCode::OK, tag, answer)) => {
                    metrics.controller_answered();
                    match serde_json::from_value::<Fleet>(answer) {
                        Ok(fleet) => kill_switch.set_fleet(fleet),
                        Err(e) => tracing::warn!(error = %e, "the controller's blocked set did not parse"),
                    }
                    etag = tag;
                    delay = RETRY_FIRST;
                }
                Ok((StatusCode::NOT_MODIFIED, _, _)) => {
                    metrics.controller_answered();
                    delay = RETRY_FIRST;
                }
                Ok((status, _, answer)) => {
                    tracing::warn!(%status, message = answer["message"].as_str().unwrap_or(""), "the controller refused the blocked-set poll");
                    tokio::time::sleep(jittered(delay)).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "polling the controller's blocked set failed; the last known set stays in force");
                    tokio::time::sleep(jittered(delay)).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// A served configuration's files: `keyward.yaml` and the policy files.
pub type Files = std::collections::BTreeMap<String, String>;

/// Writes `keyward.yaml` at `config` and every other file into `policies/` beside it (where the served
/// configuration's `policy.dir: policies` points), removing policy files the new version no longer has. Each
/// file is written to a temporary name and renamed, so a reader never sees half of one.
pub fn write_config(config: &Path, files: &Files) -> Result<(), String> {
    let main = files
        .get("keyward.yaml")
        .ok_or("the configuration has no keyward.yaml")?;
    let dir = config.parent().unwrap_or(Path::new("."));
    let policies = dir.join("policies");
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(&policies).map_err(|e| io(&policies, e))?;
    let put = |path: &Path, text: &str| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    };
    for (name, text) in files.iter().filter(|(n, _)| *n != "keyward.yaml") {
        let safe = !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !safe {
            return Err(format!(
                "file name {name:?} in the configuration is not a plain file name"
            ));
        }
        put(&policies.join(name), text)?;
    }
    if let Ok(entries) = std::fs::read_dir(&policies) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !files.contains_key(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    put(config, main)
}

/// `delay` plus up to half of it again, so a fleet that lost the controller does not retry in step.
fn jittered(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    delay + delay.mul_f64(f64::from(nanos % 1000) / 2000.0)
}
