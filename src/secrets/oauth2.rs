//! OAuth2 credentials: access tokens obtained with the `client_credentials` or `refresh_token` grant, cached
//! until shortly before they expire, and refreshed by one task per credential however many requests need the
//! token at once. When the provider rotates the refresh token, the new one is written to Vault KV (a new
//! version) before the old one is let go, and kept in memory until Vault has it.
//!
//! A failing token endpoint is retried with exponential backoff and jitter; until the next attempt, requests
//! fail at once with 503 naming the credential instead of hammering the provider.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::vault::VaultStore;
use super::{Secret, SecretError, SecretRef, SecretStore, VaultRef};
use crate::telemetry::metrics::Metrics;
use crate::upstream::Upstream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    ClientCredentials,
    RefreshToken,
}

/// How the client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` (client_secret_basic, what RFC 6749 requires servers to support).
    Basic,
    /// `client_id` and `client_secret` in the form body (client_secret_post).
    Body,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub token_url: Uri,
    pub grant: Grant,
    pub client_id: SecretRef,
    pub client_secret: Option<SecretRef>,
    /// For the `refresh_token` grant: a Vault KV v2 key, so rotations can be written back.
    pub refresh_token: Option<VaultRef>,
    pub scopes: Vec<String>,
    pub client_auth: ClientAuth,
    /// A token is refreshed this long before it expires.
    pub refresh_before: Duration,
    pub allow_private: bool,
}

/// Largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct Token {
    value: Secret,
    refresh_at: Instant,
}

/// The single-flight half: held while a refresh runs; requests that find it held wait, then reuse the result.
#[derive(Default)]
struct Refresher {
    failures: u32,
    retry_at: Option<Instant>,
    /// A rotated refresh token not yet confirmed in Vault.
    pending_refresh_token: Option<Secret>,
}

struct Credential {
    spec: Spec,
    token: RwLock<Option<Token>>,
    last_error: RwLock<Option<String>>,
    refresher: tokio::sync::Mutex<Refresher>,
}

pub struct OAuth2Store {
    credentials: HashMap<String, Credential>,
    upstream: Arc<Upstream>,
    vault: Option<Arc<VaultStore>>,
    metrics: Arc<Metrics>,
}

impl OAuth2Store {
    pub fn new(
        specs: Vec<Spec>,
        upstream: Arc<Upstream>,
        vault: Option<Arc<VaultStore>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let credentials = specs
            .into_iter()
            .map(|spec| {
                let name = spec.name.clone();
                let c = Credential {
                    spec,
                    token: RwLock::new(None),
                    last_error: RwLock::new(None),
                    refresher: tokio::sync::Mutex::new(Refresher::default()),
                };
                (name, c)
            })
            .collect();
        Self {
            credentials,
            upstream,
            vault,
            metrics,
        }
    }

    /// Refreshes the named credential's access token if it is missing or due, unless the endpoint is in backoff.
    /// `base` resolves the client id, secret and refresh token.
    pub async fn ensure_fresh(&self, name: &str, base: &dyn SecretStore) {
        let Some(c) = self.credentials.get(name) else { return };
        if c.fresh() {
            return;
        }
        let mut refresher = c.refresher.lock().await;
        if c.fresh() || refresher.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match self.fetch(c, &mut refresher, base).await {
            Ok(()) => {
                refresher.failures = 0;
                refresher.retry_at = None;
                *c.last_error.write().unwrap_or_else(|e| e.into_inner()) = None;
                self.metrics.oauth2_refresh(name, "ok");
            }
            Err((reason, message)) => {
                refresher.failures += 1;
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << refresher.failures.min(7))
                    .min(MAX_BACKOFF);
                let wait = backoff.mul_f64(0.5 + jitter_fraction() / 2.0);
                refresher.retry_at = Some(Instant::now() + wait);
                tracing::warn!(credential = name, reason, error = %message, retry_in_ms = wait.as_millis() as u64, "OAuth2 token refresh failed");
                *c.last_error.write().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "token endpoint: {message}; next attempt in {} ms",
                    wait.as_millis()
                ));
                self.metrics.oauth2_refresh(name, reason);
            }
        }
    }

    async fn fetch(
        &self,
        c: &Credential,
        refresher: &mut Refresher,
        base: &dyn SecretStore,
    ) -> Result<(), (&'static str, String)> {
        let spec = &c.spec;
        let need = |r: &SecretRef| base.get(r).map_err(|e| ("secret_unavailable", e.to_string()));
        let client_id = need(&spec.client_id)?;
        let client_secret = spec.client_secret.as_ref().map(need).transpose()?;
        let mut form = vec![(
            "grant_type",
            match spec.grant {
                Grant::ClientCredentials => "client_credentials".to_string(),
                Grant::RefreshToken => "refresh_token".to_string(),
            },
        )];
        let refresh_token = match (&spec.refresh_token, &refresher.pending_refresh_token) {
            (_, Some(pending)) => Some(pending.clone()),
            (Some(r), None) => Some(need(&SecretRef::Vault(r.clone()))?),
            (None, None) => None,
        };
        if let Some(rt) = &refresh_token {
            form.push(("refresh_token", rt.expose().to_string()));
        }
        if !spec.scopes.is_empty() {
            form.push(("scope", spec.scopes.join(" ")));
        }
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(spec.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        match spec.client_auth {
            ClientAuth::Basic => {
                let pair = format!(
                    "{}:{}",
                    form_encode(client_id.expose()),
                    client_secret
                        .as_ref()
                        .map_or(String::new(), |s| form_encode(s.expose()))
                );
                let mut value = http::HeaderValue::try_from(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
                .map_err(|_| ("invalid_secret", "client credentials do not form a header".to_string()))?;
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
            ClientAuth::Body => {
                form.push(("client_id", client_id.expose().to_string()));
                if let Some(s) = &client_secret {
                    form.push(("client_secret", s.expose().to_string()));
                }
            }
        }
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = builder
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|_| ("invalid_request", "cannot build the token request".to_string()))?;
        let response = self
            .upstream
            .send(request, self.upstream.defaults(spec.allow_private))
            .await
            .map_err(|e| ("connect", e.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|_| {
                (
                    "invalid_response",
                    "token response unreadable or over 64 KiB".to_string(),
                )
            })?
            .to_bytes();
        // The body holds tokens: only the fields named here ever leave this function.
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let code = json.get("error").and_then(|e| e.as_str()).unwrap_or("-");
            let reason = if status.is_server_error() {
                "http_5xx"
            } else {
                "http_4xx"
            };
            return Err((reason, format!("HTTP {} (error: {code})", status.as_u16())));
        }
        let access = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or(("invalid_response", "no access_token in the token response".to_string()))?;
        let expires_in = json.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(3600);
        let lifetime = Duration::from_secs(expires_in);
        let refresh_at = Instant::now() + lifetime.saturating_sub(spec.refresh_before);
        *c.token.write().unwrap_or_else(|e| e.into_inner()) = Some(Token {
            value: Secret::new(access),
            refresh_at,
        });
        if let (Some(new), Some(target)) = (json.get("refresh_token").and_then(|t| t.as_str()), &spec.refresh_token) {
            if refresh_token.as_ref().is_none_or(|old| old.expose() != new) {
                refresher.pending_refresh_token = Some(Secret::new(new));
                self.write_back(target, new).await.map_err(|e| ("write_back", e))?;
                refresher.pending_refresh_token = None;
                tracing::info!(credential = %spec.name, "rotated refresh token written back to Vault");
            }
        }
        Ok(())
    }

    async fn write_back(&self, target: &VaultRef, value: &str) -> Result<(), String> {
        let vault = self.vault.as_ref().ok_or("no Vault configured for the refresh token")?;
        vault.write_back(target, value).await
    }
}

impl Credential {
    fn fresh(&self) -> bool {
        self.token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|t| Instant::now() < t.refresh_at)
    }
}

impl SecretStore for OAuth2Store {
    fn get(&self, secret: &SecretRef) -> Result<Secret, SecretError> {
        let unavailable = |reason: String| SecretError::Unavailable {
            name: secret.to_string(),
            reason,
        };
        let SecretRef::OAuth2(name) = secret else {
            return Err(unavailable("not an OAuth2 credential".into()));
        };
        let c = self
            .credentials
            .get(name)
            .ok_or_else(|| unavailable("unknown OAuth2 credential".into()))?;
        if let Some(token) = c.token.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            // Past `refresh_at` the token still has `refresh_before` of life: serve it while a refresh fails.
            if Instant::now() < token.refresh_at + c.spec.refresh_before {
                return Ok(token.value.clone());
            }
        }
        let error = c.last_error.read().unwrap_or_else(|e| e.into_inner()).clone();
        Err(unavailable(error.unwrap_or_else(|| "no access token yet".into())))
    }

    fn not_ready(&self) -> Option<String> {
        None
    }
}

/// application/x-www-form-urlencoded: everything but alphanumerics and `*-._` is percent-encoded.
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

fn form_encode(value: &str) -> String {
    utf8_percent_encode(value, FORM).to_string()
}

fn jitter_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}
