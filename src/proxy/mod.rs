//! The proxy: first-hop protocol handling (`connect`), the ordered request stages (`pipeline`), the per-request
//! record (`ctx`) and the one place errors become responses (`error`).

mod body;
pub mod connect;
pub mod ctx;
pub mod error;
mod headers;
pub mod inflate;
pub mod pipeline;
pub mod runtime;
pub(crate) mod scrubbing;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Unmatched;
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
    pub leaves: LeafCache,
    pub unmatched: Unmatched,
    pub unmatched_allow_private: bool,
    pub agent_tls_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// `None` when tracing is off.
    pub tracing: Option<Arc<crate::telemetry::trace::Tracing>>,
    pub audit: crate::telemetry::audit::AuditLog,
    /// The outbound canary's scrubber: every credential's current values.
    pub(crate) canary: scrubbing::ScrubberSlot,
    pub kill_switch: Arc<crate::killswitch::KillSwitch>,
    pub limits: crate::config::raw::RawLimits,
    pub drain: Arc<crate::listener::Drain>,
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
