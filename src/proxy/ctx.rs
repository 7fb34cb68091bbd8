//! The record of one request, filled in by each stage. When the response head is sent it becomes metrics; when
//! the response body is done (or abandoned) it becomes the audit line and the end of the request's span.
//! It holds names and codes only: the path, the query with its values redacted, credential names, never values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

use super::error::ProxyError;
use super::{ProxyState, Scheme, Target};
use crate::credentials::SwapError;
use crate::policy::{Decision, Mode};
use crate::scrub::Scrubber;
use crate::telemetry::audit::AuditRecord;
use crate::telemetry::metrics::{Metrics, RequestOutcome};
use crate::telemetry::redact_query;
use crate::telemetry::trace::{self, ChildSpan, RequestTrace};

pub struct RequestCtx {
    pub id: String,
    started: Instant,
    method: Method,
    scheme: &'static str,
    path: String,
    query: Option<String>,
    host: String,
    port: u16,
    route: Option<String>,
    user: Option<String>,
    credentials: Vec<String>,
    /// Upstream attempts after the first (transient failures, rotated credentials).
    retries: u32,
    ratelimited: bool,
    /// `allow`, `deny`, `shadow_deny` or `error`, once the policy has run.
    decision: Option<(&'static str, String)>,
    error: Option<(&'static str, String)>,
    /// Summed over attempts: how long the upstream took to answer with a head.
    upstream: Option<Duration>,
    /// Request body bytes read from the agent and sent upstream (first attempt).
    pub bytes_in: Arc<AtomicU64>,
    trace: RequestTrace,
}

impl RequestCtx {
    /// `canary` finds real secrets: a path that carries one is recorded redacted (the request is refused).
    pub fn start<B>(state: &ProxyState, target: &Target, req: &http::Request<B>, canary: Option<&Scrubber>) -> Self {
        let uri = req.uri();
        let query = uri.query().map(redact_query);
        let path = match canary {
            Some(scrubber) if super::scrubbing::in_url_part(scrubber, uri.path()) => {
                "[redacted: the path carried a real secret]".to_string()
            }
            _ => uri.path().to_string(),
        };
        let scheme = match target.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let trace = match &state.tracing {
            None => RequestTrace::OFF,
            Some(tracing) => {
                let mut attributes = vec![
                    trace::text("http.request.method", req.method().to_string()),
                    trace::text("url.scheme", scheme),
                    trace::text("url.path", path.clone()),
                    trace::text("server.address", target.host.clone()),
                    KeyValue::new("server.port", i64::from(target.port)),
                    trace::text("keyward.agent.id", state.agent.id.clone()),
                ];
                if let Some(q) = &query {
                    attributes.push(trace::text("url.query", q.clone()));
                }
                RequestTrace::start(Some(tracing), req.headers(), req.method(), attributes)
            }
        };
        Self {
            id: next_id(),
            started: Instant::now(),
            method: req.method().clone(),
            scheme,
            path,
            query,
            host: target.host.clone(),
            port: target.port,
            route: None,
            user: None,
            credentials: Vec::new(),
            retries: 0,
            ratelimited: false,
            decision: None,
            error: None,
            upstream: None,
            bytes_in: Arc::default(),
            trace,
        }
    }

    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    pub fn set_route(&mut self, route: Option<String>) {
        if let Some(name) = &route {
            self.trace.set(trace::text("keyward.route", name.clone()));
            self.trace.rename(format!("{} {name}", self.method));
        }
        self.route = route;
    }

    pub fn set_user(&mut self, user: Option<String>) {
        if let Some(user) = &user {
            self.trace.set(trace::text("keyward.user.id", user.clone()));
        }
        self.user = user;
    }

    pub fn credentials(&self) -> &[String] {
        &self.credentials
    }

    pub fn set_credentials(&mut self, names: Vec<String>) {
        if !names.is_empty() {
            self.trace.set(trace::strings("keyward.credential", &names));
        }
        self.credentials = names;
    }

    /// A child span of this request's span (a no-op when tracing is off).
    pub fn span(&self, name: &'static str, kind: SpanKind, attributes: Vec<KeyValue>) -> ChildSpan {
        self.trace.child(name, kind, attributes)
    }

    /// Records the policy's answer; in shadow mode a denial is logged here since nothing else will show it.
    pub fn decide(&mut self, decision: &Decision, mode: Mode, metrics: &Metrics) {
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
        if !decision.allow {
            metrics.policy_denial(self.route.as_deref(), decision.code.as_deref(), &decision.reason);
        }
        self.trace.set(trace::text("keyward.policy.decision", label));
        self.decision = Some((label, decision.reason.clone()));
    }

    pub fn rate_limited(&mut self, scope: &'static str, metrics: &Metrics) {
        self.ratelimited = true;
        metrics.rate_limited(self.route.as_deref(), scope);
    }

    pub fn retried(&mut self, metrics: &Metrics) {
        self.retries += 1;
        metrics.retried(self.route.as_deref());
    }

    pub fn upstream_answered(&mut self, took: Duration, metrics: &Metrics) {
        self.upstream = Some(self.upstream.unwrap_or_default() + took);
        metrics.upstream_duration(self.route.as_deref(), took);
    }

    pub fn fail(&mut self, error: &ProxyError, metrics: &Metrics) {
        let (_, code) = error.classify();
        match error {
            ProxyError::Swap(SwapError::NotBound { credential }) => {
                metrics.exfiltration_attempt(credential);
                tracing::warn!(
                    request_id = %self.id, credential = %credential, host = %self.host, method = %self.method, path = %self.path,
                    "exfiltration attempt: placeholder sent to a destination its credential is not bound to"
                );
            }
            ProxyError::Swap(SwapError::Misplaced { credential, place, .. }) => {
                metrics.exfiltration_attempt(credential);
                tracing::warn!(
                    request_id = %self.id, credential = %credential, place = %place, host = %self.host, method = %self.method, path = %self.path,
                    "exfiltration attempt: placeholder outside its credential's configured header or query key"
                );
            }
            _ => {}
        }
        self.error = Some((code, error.to_string()));
    }

    /// The response head is going out: count the request, and hand back what finishes the record once the
    /// body is done.
    pub fn respond(self, status: StatusCode, state: Arc<ProxyState>) -> Completion {
        let head = self.started.elapsed();
        state.metrics.request(&RequestOutcome {
            agent: &state.agent.id,
            route: self.route.as_deref(),
            method: &self.method,
            status,
            decision: self.decision.as_ref().map(|(d, _)| *d),
            outcome: self.outcome(),
            duration: head,
        });
        Completion {
            ctx: self,
            status,
            state,
            bytes_out: 0,
        }
    }

    fn outcome(&self) -> &'static str {
        self.error.as_ref().map_or("forwarded", |(code, _)| *code)
    }
}

/// The rest of a request's record, carried by its response body.
pub struct Completion {
    ctx: RequestCtx,
    status: StatusCode,
    state: Arc<ProxyState>,
    pub bytes_out: u64,
}

impl Drop for Completion {
    /// Runs when the agent has the whole body, or the body was abandoned: the audit line and the span's end.
    fn drop(&mut self) {
        let ctx = &mut self.ctx;
        let outcome = ctx.outcome();
        let duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0;
        let path = match &ctx.query {
            Some(q) => format!("{}?{q}", ctx.path),
            None => ctx.path.clone(),
        };
        let reason = ctx
            .decision
            .as_ref()
            .filter(|(d, _)| *d != "allow")
            .map(|(_, r)| r.as_str())
            .or(ctx.error.as_ref().map(|(_, m)| m.as_str()));
        let audit = &self.state.audit;
        if audit.enabled() {
            audit.record(&AuditRecord {
                timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                request_id: &ctx.id,
                trace_id: ctx.trace.trace_id(),
                agent_id: &self.state.agent.id,
                user_id: ctx.user.as_deref(),
                route: ctx.route.as_deref(),
                method: ctx.method.as_str(),
                scheme: ctx.scheme,
                host: &ctx.host,
                port: ctx.port,
                path: &path,
                decision: ctx.decision.as_ref().map(|(d, _)| *d),
                reason,
                credentials: &ctx.credentials,
                status: self.status.as_u16(),
                outcome,
                ratelimited: ctx.ratelimited,
                retries: ctx.retries,
                duration_ms,
                upstream_ms: ctx.upstream.map(|d| d.as_secs_f64() * 1000.0),
                bytes_in: ctx.bytes_in.load(Ordering::Relaxed),
                bytes_out: self.bytes_out,
            });
        }
        tracing::debug!(request_id = %ctx.id, status = self.status.as_u16(), outcome, duration_ms, "request done");
        let trace = std::mem::replace(&mut ctx.trace, RequestTrace::OFF);
        trace.set(KeyValue::new("keyward.ratelimited", ctx.ratelimited));
        trace.set(KeyValue::new("http.request.resend_count", i64::from(ctx.retries)));
        trace.end(self.status, ctx.error.as_ref().map(|(code, _)| *code));
    }
}

/// Unique within the process and ordered; enough to join a response to its log line.
fn next_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static EPOCH: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| time::OffsetDateTime::now_utc().unix_timestamp() as u32);
    format!("{epoch:08x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
