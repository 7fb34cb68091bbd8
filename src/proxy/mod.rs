//! The proxy: first-hop protocol handling (`connect`), the ordered request stages (`pipeline`), the per-request
//! record (`ctx`) and the one place errors become responses (`error`).

mod body;
pub mod connect;
pub mod ctx;
pub mod error;
mod headers;
mod idle;
pub mod inflate;
pub mod pipeline;
mod rewind;
pub mod runtime;
pub(crate) mod scrubbing;
pub mod transparent;
mod upload;
pub mod websocket;

use std::sync::Arc;
use std::time::Duration;

use crate::credentials::Credentials;
use crate::route::RouteTable;
use crate::secrets::SecretStore;
use crate::telemetry::metrics::Metrics;
use crate::tls::leaf::LeafCache;
use crate::upstream::Upstream;

/// Everything a request needs, built once from validated configuration and shared by all connections.
pub struct ProxyState {
    pub agent: crate::policy::input::Agent,
    pub user_header: http::HeaderName,
    /// `None` when no policy is configured: every request a route matches is allowed.
    pub policy: Option<PolicyGate>,
    /// The agent-wide rate limit; each route's is in its runtime object.
    pub agent_rate: Option<crate::ratelimit::Limiter>,
    pub routes: RouteTable<runtime::RouteRuntime>,
    pub credentials: Credentials,
    pub secrets: Arc<dyn SecretStore>,
    pub upstream: Arc<Upstream>,
    pub leaves: Arc<LeafCache>,
    pub unmatched: Unmatched,
    pub unmatched_allow_private: bool,
    pub agent_tls_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Metric handles for requests that match no route.
    pub unrouted: crate::telemetry::metrics::RouteMetrics,
    /// `None` when tracing is off.
    pub tracing: Option<Arc<crate::telemetry::trace::Tracing>>,
    pub audit: crate::telemetry::audit::AuditLog,
    /// The outbound canary's scrubber: every credential's current values.
    pub(crate) canary: scrubbing::ScrubberSlot,
    pub kill_switch: Arc<crate::killswitch::KillSwitch>,
    pub limits: Limits,
    pub drain: Arc<crate::listener::Drain>,
}

/// The configuration in force, replaced whole by a reload ([`crate::reload`]). Each request loads it once
/// when it starts, so it runs on one configuration from its first phase to its last.
pub struct Live(arc_swap::ArcSwap<ProxyState>);

impl Live {
    pub fn new(state: Arc<ProxyState>) -> Self {
        Self(arc_swap::ArcSwap::new(state))
    }

    pub fn load(&self) -> Arc<ProxyState> {
        self.0.load_full()
    }

    pub fn replace(&self, state: Arc<ProxyState>) {
        self.0.store(state);
    }
}

/// What happens to CONNECT targets and absolute-form hosts that no route names.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Intercept, then answer every request with 403 `no_route` (placeholders seen there are exfiltration).
    #[default]
    Deny,
    /// Splice bytes to the destination without interception or credentials.
    Tunnel,
    /// Tunnel only destinations whose every address is on a private network (in-cluster services: RFC 1918,
    /// 100.64/10, IPv6 ULA); intercept and deny the rest, as `deny` does. Loopback and link-local (cloud
    /// metadata) are never reached this way.
    TunnelPrivate,
}

impl Unmatched {
    /// Which addresses an unmatched destination may be forwarded to; `None` when it is refused.
    pub fn reach(self, allow_private: bool) -> Option<crate::upstream::Reach> {
        match self {
            Self::Deny => None,
            Self::Tunnel => Some(crate::upstream::Reach::allowing_private(allow_private)),
            Self::TunnelPrivate => Some(crate::upstream::Reach::Internal),
        }
    }
}

/// Protection of the listeners against slow, huge or numerous clients (`limits:`, validated).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// Bytes of request line and headers (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Concurrent HTTP/2 streams per intercepted connection.
    pub max_concurrent_streams: u32,
    /// An intercepted connection with no request in flight for this long is closed.
    pub idle_connection_timeout: Duration,
    /// The largest WebSocket message (and frame) relayed either way; a larger one closes the socket (1009).
    pub max_websocket_message: usize,
}

/// The policy stage's settings and the running policies.
pub struct PolicyGate {
    pub policies: Arc<crate::policy::Policies>,
    pub entrypoint: String,
    pub body_limit: u64,
    pub timezone: chrono_tz::Tz,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Where a request goes, fixed by the CONNECT line or the absolute-form URI before any header is read.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    /// Normalized with [`crate::route::normalize_host`].
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests;
