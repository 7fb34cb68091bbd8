//! Every way a request can fail, mapped in one place to an HTTP status, a stable error code and a JSON body.
//! Messages are built from names and hosts only; no variant can carry a secret value.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::credentials::SwapError;
use crate::upstream::{Body, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches {method} {host}{path}")]
    NoRoute { host: String, method: String, path: String },
    #[error("Host header `{header}` does not match the CONNECT target `{target}`")]
    HostMismatch { header: String, target: String },
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("this agent is blocked by the kill switch")]
    Blocked,
    #[error("denied by policy: {reason}")]
    PolicyDenied { reason: String },
    #[error("{scope} rate limit exceeded; retry in {}s", retry_after_secs(*.retry_after))]
    RateLimited {
        scope: &'static str,
        retry_after: std::time::Duration,
    },
    #[error(transparent)]
    Saturated(#[from] crate::ratelimit::Saturated),
    #[error("the request already carries a real secret value (in {place}); agents must only hold placeholders")]
    SecretInRequest { place: &'static str },
    #[error("WebSocket handshake refused: {0}")]
    WebSocket(&'static str),
    /// Never quotes the upstream's values: they are its free text, and may spell a secret.
    #[error("the upstream answered with a content or transfer coding that cannot be scrubbed for secrets (only identity, gzip or deflate)")]
    Unscrubbable,
    #[error("the upstream sent a header that cannot be scrubbed (a secret split over lines of one header, or in a header name)")]
    SplitSecret,
    #[error("the JSON body repeats a key in one object; the policy and the upstream could read different values")]
    AmbiguousJson,
    #[error("CONNECT inside an intercepted connection is refused")]
    NestedConnect,
    #[error(transparent)]
    Swap(#[from] SwapError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl ProxyError {
    /// `(status, code)`: the code is stable, documented, and used as the metric outcome.
    pub fn classify(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Self::NoRoute { .. } => (S::FORBIDDEN, "no_route"),
            Self::HostMismatch { .. } => (S::FORBIDDEN, "host_mismatch"),
            Self::BadRequest(_) => (S::BAD_REQUEST, "bad_request"),
            Self::Blocked => (S::FORBIDDEN, "agent_blocked"),
            Self::PolicyDenied { .. } => (S::FORBIDDEN, "policy_denied"),
            Self::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Saturated(_) => (S::SERVICE_UNAVAILABLE, "concurrency_limited"),
            Self::SecretInRequest { .. } => (S::FORBIDDEN, "secret_in_request"),
            Self::Unscrubbable => (S::BAD_GATEWAY, "unscrubbable_encoding"),
            Self::WebSocket(_) => (S::BAD_GATEWAY, "websocket_refused"),
            Self::SplitSecret => (S::BAD_GATEWAY, "unscrubbable_header"),
            Self::AmbiguousJson => (S::BAD_REQUEST, "ambiguous_json"),
            Self::NestedConnect => (S::METHOD_NOT_ALLOWED, "nested_connect"),
            Self::Swap(e) => match e {
                SwapError::NotBound { .. } => (S::FORBIDDEN, "placeholder_not_bound"),
                SwapError::Misplaced { .. } => (S::FORBIDDEN, "placeholder_misplaced"),
                SwapError::Ambiguous => (S::BAD_REQUEST, "ambiguous_placeholder"),
                SwapError::Plaintext { .. } => (S::FORBIDDEN, "plaintext_credential"),
                SwapError::Secret { .. } => (S::SERVICE_UNAVAILABLE, "secret_unavailable"),
                SwapError::InvalidValue(_) => (S::BAD_GATEWAY, "invalid_secret_value"),
                SwapError::Unsignable { .. } => (S::BAD_REQUEST, "unsignable_request"),
            },
            Self::Upstream(e) => match e {
                UpstreamError::Forbidden { .. } => (S::FORBIDDEN, "private_destination"),
                UpstreamError::NotInternal { .. } => (S::FORBIDDEN, "no_route"),
                UpstreamError::Resolve { .. } => (S::BAD_GATEWAY, "upstream_unresolvable"),
                UpstreamError::Connect { .. } => (S::BAD_GATEWAY, "upstream_connect_failed"),
                UpstreamError::Request { .. } => (S::BAD_GATEWAY, "upstream_failed"),
                UpstreamError::Timeout { .. } => (S::GATEWAY_TIMEOUT, "upstream_timeout"),
                UpstreamError::Roots { .. } => (S::INTERNAL_SERVER_ERROR, "internal"),
                UpstreamError::OwnListener { .. } => (S::FORBIDDEN, "own_listener"),
                UpstreamError::ClientCertificate { .. } => (S::BAD_GATEWAY, "invalid_client_certificate"),
            },
        }
    }

    /// `{"error": code, "message": ..., "request_id": ...}`, plus `reason` and `decision_id` (the request id)
    /// for policy denials: the body every refusal carries.
    pub fn response(&self, request_id: &str) -> Response<Body> {
        let (status, code) = self.classify();
        let mut body = serde_json::json!({ "error": code, "message": self.to_string(), "request_id": request_id });
        match self {
            Self::PolicyDenied { reason } => {
                body["reason"] = reason.as_str().into();
                body["decision_id"] = request_id.into();
            }
            Self::Upstream(UpstreamError::Timeout { phase, .. }) => body["phase"] = phase.as_str().into(),
            _ => {}
        }
        let mut builder = Response::builder().status(status);
        if let Self::RateLimited { retry_after, .. } = self {
            builder = builder.header(header::RETRY_AFTER, retry_after_secs(*retry_after));
        }
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-keyward-error", code)
            .body(
                Full::new(Bytes::from(body.to_string()))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .expect("static status and headers are valid")
    }
}

/// Whole seconds for `Retry-After`, rounded up so that a client that waits that long is let through.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}
