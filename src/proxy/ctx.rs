//! The record of one request, filled in by each stage and written out once when the response head is sent.
//! It holds names and codes only: the path without its query, credential names, never values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{Method, StatusCode};

use super::error::ProxyError;
use super::Target;
use crate::credentials::SwapError;
use crate::policy::{Decision, Mode};
use crate::telemetry::metrics::Metrics;

pub struct RequestCtx {
    pub id: String,
    started: Instant,
    method: Method,
    path: String,
    host: String,
    port: u16,
    pub route: Option<String>,
    pub user: Option<String>,
    pub credentials: Vec<String>,
    /// Second attempts made upstream (after a rejected credential turned out to be rotated).
    pub retries: u32,
    /// `allow`, `deny`, `shadow_deny` or `error`, once the policy has run.
    decision: Option<(&'static str, String)>,
    error: Option<(&'static str, String)>,
}

impl RequestCtx {
    pub fn start(target: &Target, method: &Method, path: &str) -> Self {
        Self {
            id: next_id(),
            started: Instant::now(),
            method: method.clone(),
            path: path.to_string(),
            host: target.host.clone(),
            port: target.port,
            route: None,
            user: None,
            credentials: Vec::new(),
            retries: 0,
            decision: None,
            error: None,
        }
    }

    /// Records the policy's answer; in shadow mode a denial is logged here since nothing else will show it.
    pub fn decide(&mut self, decision: &Decision, mode: Mode) {
        let label = match (decision.allow, decision.error, mode) {
            (true, _, _) => "allow",
            (false, _, Mode::Shadow) => "shadow_deny",
            (false, true, Mode::Enforce) => "error",
            (false, false, Mode::Enforce) => "deny",
        };
        if label == "shadow_deny" {
            tracing::warn!(request_id = %self.id, reason = %decision.reason, route = self.route.as_deref().unwrap_or("-"),
                method = %self.method, host = %self.host, path = %self.path,
                "policy would deny (shadow mode): request forwarded");
        }
        self.decision = Some((label, decision.reason.clone()));
    }

    pub fn fail(&mut self, error: &ProxyError, metrics: &Metrics) {
        let (_, code) = error.classify();
        if let ProxyError::Swap(SwapError::NotBound { credential }) = error {
            metrics.exfiltration_attempt(credential);
            tracing::warn!(
                request_id = %self.id, credential = %credential, host = %self.host, method = %self.method, path = %self.path,
                "exfiltration attempt: placeholder sent to a destination its credential is not bound to"
            );
        }
        self.error = Some((code, error.to_string()));
    }

    /// One log line and one metric per request.
    pub fn finish(self, status: StatusCode, agent_id: &str, metrics: &Metrics) {
        let outcome = self.error.as_ref().map_or("forwarded", |(code, _)| *code);
        metrics.request(self.route.as_deref(), outcome);
        if let Some((decision, _)) = &self.decision {
            metrics.policy_decision(self.route.as_deref(), decision);
        }
        tracing::info!(
            request_id = %self.id,
            agent_id,
            method = %self.method,
            host = %self.host,
            port = self.port,
            path = %self.path,
            route = self.route.as_deref().unwrap_or("-"),
            user_id = self.user.as_deref().unwrap_or("-"),
            decision = self.decision.as_ref().map_or("-", |(d, _)| *d),
            reason = self.decision.as_ref().map_or("", |(_, r)| r.as_str()),
            credentials = %self.credentials.join(","),
            status = status.as_u16(),
            retries = self.retries,
            outcome,
            error = self.error.as_ref().map_or("", |(_, m)| m.as_str()),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// Unique within the process and ordered; enough to join a response to its log line.
fn next_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static EPOCH: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| time::OffsetDateTime::now_utc().unix_timestamp() as u32);
    format!("{epoch:08x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
