//! OAuth2 credentials: access tokens obtained with the `client_credentials`, `refresh_token` or (for Google
//! service accounts) JWT-bearer grant, cached
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
    /// RFC 7523 with a Google service-account key (`client_id` is the key file; the token URL is its
    /// `token_uri`).
    JwtBearer,
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
    /// `None` for [`Grant::JwtBearer`]: the key names its token endpoint.
    pub token_url: Option<Uri>,
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
/// The whole token exchange (connect, request, response and its body). An endpoint that accepts and never
/// answers held requests for good.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest time between two token requests, whatever `expires_in` says (0 meant one token request per call).
const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// Longest a token is cached (`expires_in: 1e19` overflowed the clock and panicked).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a token refresh failed. The message names the endpoint's status and error code at most, never a
/// value; [`RefreshError::reason`] is the metric label.
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error("{0}")]
    SecretUnavailable(String),
    #[error("client credentials do not form a header")]
    InvalidSecret,
    #[error("cannot build the token request")]
    InvalidRequest,
    #[error("{0}")]
    Connect(String),
    #[error("HTTP {status} (error: {code})")]
    Http { status: u16, code: String },
    #[error("{0}")]
    InvalidResponse(String),
    #[error("writing the rotated refresh token back: {0}")]
    WriteBack(String),
    #[error("no complete answer within {} s", EXCHANGE_TIMEOUT.as_secs())]
    Timeout,
}

impl RefreshError {
    fn reason(&self) -> &'static str {
        match self {
            Self::SecretUnavailable(_) => "secret_unavailable",
            Self::InvalidSecret => "invalid_secret",
            Self::InvalidRequest => "invalid_request",
            Self::Connect(_) => "connect",
            Self::Http { status, .. } if *status >= 500 => "http_5xx",
            Self::Http { .. } => "http_4xx",
            Self::InvalidResponse(_) => "invalid_response",
            Self::WriteBack(_) => "write_back",
            Self::Timeout => "timeout",
        }
    }
}

/// One token request, as the grant built it.
struct Exchange {
    url: Uri,
    form: Vec<(&'static str, String)>,
    /// What the endpoint must never be able to echo into an error code we show.
    sent: Vec<String>,
    authorization: Option<http::HeaderValue>,
    /// The refresh token sent, to tell a rotated one in the answer.
    refresh_token: Option<Secret>,
}

struct Token {
    value: Secret,
    refresh_at: Instant,
    expires_at: Instant,
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
    /// A background refresh (of a token that is due but still valid) is under way.
    refreshing: std::sync::atomic::AtomicBool,
}

pub struct OAuth2Store {
    credentials: HashMap<String, Credential>,
    generation: super::Generation,
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
                    refreshing: Default::default(),
                };
                (name, c)
            })
            .collect();
        Self {
            credentials,
            generation: Default::default(),
            upstream,
            vault,
            metrics,
        }
    }

    /// Whether the named credential's token is cached and not yet due: the common case, with nothing to do.
    pub fn is_fresh(&self, name: &str) -> bool {
        self.credentials.get(name).is_some_and(Credential::fresh)
    }

    /// Makes the named credential's access token fresh. A token that is due but still valid keeps serving while
    /// it is refreshed in the background; only a request without a usable token waits (bounded by
    /// [`EXCHANGE_TIMEOUT`]). `base` resolves the client id, secret and refresh token.
    pub async fn ensure_fresh(self: &Arc<Self>, name: &str, base: &Arc<dyn SecretStore>) {
        use std::sync::atomic::Ordering;
        let Some(c) = self.credentials.get(name) else { return };
        if c.fresh() {
            return;
        }
        if c.usable() {
            if c.refreshing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let (this, base, name) = (self.clone(), base.clone(), name.to_string());
                tokio::spawn(async move {
                    this.refresh(&name, &*base).await;
                    if let Some(c) = this.credentials.get(&name) {
                        c.refreshing.store(false, Ordering::Release);
                    }
                });
            }
            return;
        }
        self.refresh(name, &**base).await;
    }

    /// One refresh at a time per credential; requests that find one under way wait, then reuse its result.
    async fn refresh(&self, name: &str, base: &dyn SecretStore) {
        let Some(c) = self.credentials.get(name) else { return };
        let mut refresher = c.refresher.lock().await;
        if c.fresh() || refresher.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let fetched = tokio::time::timeout(EXCHANGE_TIMEOUT, self.fetch(c, &mut refresher, base))
            .await
            .unwrap_or(Err(RefreshError::Timeout));
        match fetched {
            Ok(()) => {
                refresher.failures = 0;
                refresher.retry_at = None;
                *c.last_error.write().unwrap_or_else(|e| e.into_inner()) = None;
                self.metrics.oauth2_refresh(name, "ok");
            }
            Err(error) => {
                let reason = error.reason();
                let message = error.to_string();
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
    ) -> Result<(), RefreshError> {
        let spec = &c.spec;
        let need = |r: &SecretRef| base.get(r).map_err(|e| RefreshError::SecretUnavailable(e.to_string()));
        let client_id = need(&spec.client_id)?;
        if spec.grant == Grant::JwtBearer {
            let (url, assertion) = super::google::assertion(client_id.expose(), &spec.scopes)
                .map_err(|e| RefreshError::SecretUnavailable(e.to_string()))?;
            let form = vec![
                ("grant_type", super::google::GRANT_TYPE.to_string()),
                ("assertion", assertion.clone()),
            ];
            let request = Exchange {
                url,
                form,
                sent: vec![assertion],
                authorization: None,
                refresh_token: None,
            };
            return self.exchange(c, refresher, request).await;
        }
        let client_secret = spec.client_secret.as_ref().map(need).transpose()?;
        let (url, grant_type) = match (spec.grant, &spec.token_url) {
            (Grant::ClientCredentials, Some(url)) => (url.clone(), "client_credentials"),
            (Grant::RefreshToken, Some(url)) => (url.clone(), "refresh_token"),
            _ => return Err(RefreshError::InvalidRequest),
        };
        let mut form = vec![("grant_type", grant_type.to_string())];
        let refresh_token = match (&spec.refresh_token, &refresher.pending_refresh_token) {
            (_, Some(pending)) => Some(pending.clone()),
            (Some(r), None) => Some(need(&SecretRef::Vault(r.clone()))?),
            (None, None) => None,
        };
        if let Some(rt) = &refresh_token {
            form.push(("refresh_token", rt.expose().to_string()));
        }
        // What the endpoint must never be able to echo into an error code we show.
        let mut sent: Vec<String> = client_secret
            .iter()
            .chain(refresh_token.iter())
            .map(|s| s.expose().to_string())
            .collect();
        if !spec.scopes.is_empty() {
            form.push(("scope", spec.scopes.join(" ")));
        }
        let mut authorization = None;
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
                .map_err(|_| RefreshError::InvalidSecret)?;
                value.set_sensitive(true);
                sent.extend(
                    value
                        .to_str()
                        .ok()
                        .and_then(|v| v.strip_prefix("Basic "))
                        .map(str::to_string),
                );
                authorization = Some(value);
            }
            ClientAuth::Body => {
                form.push(("client_id", client_id.expose().to_string()));
                if let Some(s) = &client_secret {
                    form.push(("client_secret", s.expose().to_string()));
                }
            }
        }
        let request = Exchange {
            url,
            form,
            sent,
            authorization,
            refresh_token,
        };
        self.exchange(c, refresher, request).await
    }

    /// Posts the token request and keeps the access token (and a rotated refresh token, written back first).
    async fn exchange(&self, c: &Credential, refresher: &mut Refresher, x: Exchange) -> Result<(), RefreshError> {
        let spec = &c.spec;
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(x.url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        if let Some(value) = x.authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        let body: String = x
            .form
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
            .map_err(|_| RefreshError::InvalidRequest)?;
        let response = self
            .upstream
            .send(
                request,
                self.upstream
                    .defaults(crate::upstream::Reach::allowing_private(spec.allow_private)),
            )
            .await
            .map_err(|e| RefreshError::Connect(e.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|_| RefreshError::InvalidResponse("token response unreadable or over 64 KiB".into()))?
            .to_bytes();
        // The body holds tokens: only the fields named here ever leave this function.
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            return Err(RefreshError::Http {
                status: status.as_u16(),
                code: error_code(&json, &x.sent),
            });
        }
        let access = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| RefreshError::InvalidResponse("no access_token in the token response".into()))?;
        super::check_length(access).map_err(|e| RefreshError::InvalidResponse(format!("access_token: {e}")))?;
        let lifetime = lifetime(json.get("expires_in")).map_err(RefreshError::InvalidResponse)?;
        let now = Instant::now();
        *c.token.write().unwrap_or_else(|e| e.into_inner()) = Some(Token {
            value: Secret::new(access),
            refresh_at: now + lifetime.saturating_sub(spec.refresh_before).max(MIN_LIFETIME),
            expires_at: now + lifetime,
        });
        self.generation.bump();
        if let (Some(new), Some(target)) = (json.get("refresh_token").and_then(|t| t.as_str()), &spec.refresh_token) {
            if x.refresh_token.as_ref().is_none_or(|old| old.expose() != new) {
                refresher.pending_refresh_token = Some(Secret::new(new));
                self.write_back(target, new).await.map_err(RefreshError::WriteBack)?;
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
    /// A token that is not yet due for refresh.
    fn fresh(&self) -> bool {
        self.token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|t| Instant::now() < t.refresh_at)
    }

    /// A token that has not expired (it may be due for refresh).
    fn usable(&self) -> bool {
        self.token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|t| Instant::now() < t.expires_at)
    }
}

/// How long a token lives, from `expires_in` (a number, or a numeric string as some providers send):
/// clamped to [`MIN_LIFETIME`]..[`MAX_LIFETIME`], 3600 s when absent; a negative value is an expired token.
fn lifetime(expires_in: Option<&serde_json::Value>) -> Result<Duration, String> {
    let Some(value) = expires_in else {
        return Ok(Duration::from_secs(3600));
    };
    let secs = value
        .as_f64()
        .or_else(|| value.as_str()?.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .ok_or("expires_in is not a number")?;
    if secs < 0.0 {
        return Err("expires_in is negative: the token is already expired".into());
    }
    Ok(Duration::from_secs_f64(secs.min(MAX_LIFETIME.as_secs_f64())).max(MIN_LIFETIME))
}

/// The `error` of a token endpoint's refusal, as far as it can be shown: RFC 6749 error codes are short
/// identifiers. Anything longer, outside `[A-Za-z0-9._-]`, or containing a credential that was sent (an
/// endpoint that echoes the Basic credentials) is withheld: it reaches the agent and the log.
fn error_code(json: &serde_json::Value, sent: &[String]) -> String {
    let Some(code) = json.get("error").and_then(|e| e.as_str()) else {
        return "-".into();
    };
    let identifier = !code.is_empty()
        && code.len() <= 40
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let echoes = sent
        .iter()
        .filter(|s| s.len() >= 4)
        .any(|s| code.contains(s.as_str()) || s.contains(code));
    if identifier && !echoes {
        code.to_string()
    } else {
        "(withheld: not an RFC 6749 error code)".into()
    }
}

impl SecretStore for OAuth2Store {
    fn generation(&self) -> u64 {
        self.generation.get()
    }

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
            // Past `refresh_at` the token still has some life: serve it while a refresh runs or fails.
            if Instant::now() < token.expires_at {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lifetimes_are_clamped_and_negative_is_expired() {
        assert_eq!(lifetime(None).unwrap(), Duration::from_secs(3600));
        assert_eq!(lifetime(Some(&json!(0))).unwrap(), MIN_LIFETIME);
        assert_eq!(lifetime(Some(&json!(1e19))).unwrap(), MAX_LIFETIME);
        assert_eq!(lifetime(Some(&json!(u64::MAX))).unwrap(), MAX_LIFETIME);
        assert_eq!(lifetime(Some(&json!("120"))).unwrap(), Duration::from_secs(120));
        assert!(lifetime(Some(&json!(-5))).is_err());
        assert!(lifetime(Some(&json!("soon"))).is_err());
    }

    #[test]
    fn error_codes_that_are_not_identifiers_or_echo_credentials_are_withheld() {
        let sent = vec!["cs-REAL-42".to_string(), "a2V5d2FyZDpjcy1SRUFMLTQy".to_string()];
        assert_eq!(error_code(&json!({"error": "invalid_client"}), &sent), "invalid_client");
        assert_eq!(error_code(&json!({}), &sent), "-");
        for bad in [
            "a2V5d2FyZDpjcy1SRUFMLTQy",
            "x\nforged",
            "cs-REAL-42",
            "a b",
            &"x".repeat(41),
        ] {
            assert!(
                error_code(&json!({ "error": bad }), &sent).starts_with("(withheld"),
                "{bad}"
            );
        }
    }
}
