//! The record of one request: plain data, filled in by each phase, with no side effect of its own. Two places
//! turn it into telemetry: [`RequestCtx::respond`] when the response head is sent (metrics, and the alert
//! lines: exfiltration attempts, shadow denials), and [`Completion`]'s drop when the body is done or abandoned
//! (the audit line, the span's attributes and its end).
//! It holds names and codes only: the path, the query with its values redacted, credential names, never values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

use super::error::ProxyError;
use super::runtime::RouteRuntime;
use super::{ProxyState, Scheme, Target};
use crate::credentials::SwapError;
use crate::policy::{Decision, Mode};
use crate::ratelimit::Scope;
use crate::scrub::Scrubber;
use crate::telemetry::audit::AuditRecord;
use crate::telemetry::metrics::RequestOutcome;
use crate::telemetry::redact_query;
use crate::telemetry::trace::{self, ChildSpan, RequestTrace};

/// What the policy made of the request, as the metrics and the audit line name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOutcome {
    Allow,
    Deny,
    /// Denied in shadow mode: forwarded all the same.
    ShadowDeny,
    /// The policy failed: denied (fail closed).
    Error,
}

impl PolicyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::ShadowDeny => "shadow_deny",
            Self::Error => "error",
        }
    }
}

struct Decided {
    outcome: PolicyOutcome,
    reason: String,
    code: Option<String>,
}

/// A refusal as recorded: its stable code, its message, and the alert it raises, if any.
struct Failure {
    code: &'static str,
    message: String,
    alert: Option<Alert>,
}

/// A refusal that operators must hear about at once.
enum Alert {
    /// A placeholder toward a destination its credential is not bound to, or outside its configured place.
    Exfiltration { credential: String, place: Option<String> },
}

pub struct RequestCtx {
    pub id: String,
    started: Instant,
    method: Method,
    scheme: Scheme,
    path: String,
    query: Option<String>,
    host: String,
    port: u16,
    route: Option<Arc<RouteRuntime>>,
    user: Option<String>,
    credentials: Vec<String>,
    /// Upstream attempts after the first (transient failures, rotated credentials).
    retries: u32,
    ratelimited: Option<Scope>,
    decision: Option<Decided>,
    error: Option<Failure>,
    /// How long the upstream took to answer each attempt with a head.
    attempts: Vec<Duration>,
    /// Request body bytes read from the agent and sent upstream (first attempt).
    pub bytes_in: Arc<AtomicU64>,
    trace: RequestTrace,
}

impl RequestCtx {
    /// `canary` finds real secrets: a path that carries one is recorded redacted (the request is refused).
    pub fn start<B>(state: &ProxyState, target: &Target, req: &http::Request<B>, canary: Option<&Scrubber>) -> Self {
        let uri = req.uri();
        // Only the audit line and the span show the query; without either, it is not built.
        let recorded = state.audit.enabled() || state.tracing.is_some();
        let query = uri.query().filter(|_| recorded).map(redact_query);
        let path = match canary {
            Some(scrubber) if super::scrubbing::in_url_part(scrubber, uri.path()) => {
                "[redacted: the path carried a real secret]".to_string()
            }
            _ => uri.path().to_string(),
        };
        let trace = match &state.tracing {
            None => RequestTrace::OFF,
            Some(tracing) => {
                let mut attributes = vec![
                    trace::text("http.request.method", req.method().to_string()),
                    trace::text("url.scheme", target.scheme.as_str()),
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
            scheme: target.scheme,
            path,
            query,
            host: target.host.clone(),
            port: target.port,
            route: None,
            user: None,
            credentials: Vec::new(),
            retries: 0,
            ratelimited: None,
            decision: None,
            error: None,
            attempts: Vec::new(),
            bytes_in: Arc::default(),
            trace,
        }
    }

    pub fn route(&self) -> Option<&str> {
        self.route.as_deref().map(RouteRuntime::name)
    }

    pub fn set_route(&mut self, route: Option<Arc<RouteRuntime>>) {
        self.route = route;
    }

    pub fn set_user(&mut self, user: Option<String>) {
        self.user = user;
    }

    pub fn credentials(&self) -> &[String] {
        &self.credentials
    }

    pub fn set_credentials(&mut self, names: Vec<String>) {
        self.credentials = names;
    }

    /// A child span of this request's span (a no-op when tracing is off).
    pub fn span(&self, name: &'static str, kind: SpanKind, attributes: Vec<KeyValue>) -> ChildSpan {
        self.trace.child(name, kind, attributes)
    }

    pub fn decide(&mut self, decision: &Decision, mode: Mode) {
        let outcome = match (decision.allow, decision.error, mode) {
            (true, _, _) => PolicyOutcome::Allow,
            (false, _, Mode::Shadow) => PolicyOutcome::ShadowDeny,
            (false, true, Mode::Enforce) => PolicyOutcome::Error,
            (false, false, Mode::Enforce) => PolicyOutcome::Deny,
        };
        self.decision = Some(Decided {
            outcome,
            reason: decision.reason.clone(),
            code: decision.code.clone(),
        });
    }

    pub fn rate_limited(&mut self, scope: Scope) {
        self.ratelimited = Some(scope);
    }

    pub fn retried(&mut self) {
        self.retries += 1;
    }

    pub fn upstream_answered(&mut self, took: Duration) {
        self.attempts.push(took);
    }

    pub fn fail(&mut self, error: &ProxyError) {
        let (_, code) = error.classify();
        let alert = match error {
            ProxyError::Swap(SwapError::NotBound { credential }) => Some(Alert::Exfiltration {
                credential: credential.clone(),
                place: None,
            }),
            ProxyError::Swap(SwapError::Misplaced { credential, place, .. }) => Some(Alert::Exfiltration {
                credential: credential.clone(),
                place: Some(place.clone()),
            }),
            _ => None,
        };
        self.error = Some(Failure {
            code,
            message: error.to_string(),
            alert,
        });
    }

    /// The response head is going out: the request's metrics and alert lines, then what finishes the record
    /// once the body is done.
    pub fn respond(self, status: StatusCode, state: Arc<ProxyState>) -> Completion {
        let metrics = &state.metrics;
        let handles = self.route.as_ref().map_or(&state.unrouted, |r| &r.metrics);
        metrics.request(&RequestOutcome {
            route: handles,
            method: &self.method,
            status,
            decision: self.decision.as_ref().map(|d| d.outcome.as_str()),
            outcome: self.outcome(),
            duration: self.started.elapsed(),
        });
        for took in &self.attempts {
            handles.upstream_duration(*took);
        }
        for _ in 0..self.retries {
            handles.retried();
        }
        if let Some(scope) = self.ratelimited {
            metrics.rate_limited(handles, scope.as_str());
        }
        if let Some(d) = self.decision.as_ref().filter(|d| d.outcome != PolicyOutcome::Allow) {
            metrics.policy_denial(handles, d.code.as_deref(), &d.reason);
            if d.outcome == PolicyOutcome::ShadowDeny {
                tracing::warn!(request_id = %self.id, reason = %d.reason, route = self.route().unwrap_or("-"),
                    method = %self.method, host = %self.host, path = %self.path,
                    "policy would deny (shadow mode): request forwarded");
            }
        }
        if let Some(Alert::Exfiltration { credential, place }) = self.error.as_ref().and_then(|e| e.alert.as_ref()) {
            metrics.exfiltration_attempt(credential);
            match place {
                None => tracing::warn!(
                    request_id = %self.id, credential = %credential, host = %self.host, method = %self.method, path = %self.path,
                    "exfiltration attempt: placeholder sent to a destination its credential is not bound to"
                ),
                Some(place) => tracing::warn!(
                    request_id = %self.id, credential = %credential, place = %place, host = %self.host, method = %self.method, path = %self.path,
                    "exfiltration attempt: placeholder outside its credential's configured header or query key"
                ),
            }
        }
        Completion {
            ctx: self,
            status,
            state,
            bytes_out: 0,
            websocket: None,
        }
    }

    fn outcome(&self) -> &'static str {
        self.error.as_ref().map_or("forwarded", |e| e.code)
    }
}

/// The rest of a request's record, carried by its response body.
pub struct Completion {
    ctx: RequestCtx,
    status: StatusCode,
    state: Arc<ProxyState>,
    pub bytes_out: u64,
    websocket: Option<super::websocket::Summary>,
}

impl Completion {
    /// A WebSocket's record is written when the socket closes, with its message counts and payload bytes.
    pub fn websocket_closed(&mut self, summary: super::websocket::Summary) {
        self.ctx.bytes_in.store(summary.bytes_in, Ordering::Relaxed);
        self.bytes_out = summary.bytes_out;
        self.websocket = Some(summary);
    }
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
        let decision = ctx.decision.as_ref();
        let reason = decision
            .filter(|d| d.outcome != PolicyOutcome::Allow)
            .map(|d| d.reason.as_str())
            .or(ctx.error.as_ref().map(|e| e.message.as_str()));
        let audit = &self.state.audit;
        if audit.enabled() {
            audit.record(&AuditRecord {
                timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                request_id: &ctx.id,
                trace_id: ctx.trace.trace_id(),
                agent_id: &self.state.agent.id,
                user_id: ctx.user.as_deref(),
                route: ctx.route(),
                method: ctx.method.as_str(),
                scheme: ctx.scheme.as_str(),
                host: &ctx.host,
                port: ctx.port,
                path: &path,
                decision: decision.map(|d| d.outcome.as_str()),
                reason,
                credentials: &ctx.credentials,
                status: self.status.as_u16(),
                outcome,
                ratelimited: ctx.ratelimited.is_some(),
                retries: ctx.retries,
                duration_ms,
                upstream_ms: (!ctx.attempts.is_empty())
                    .then(|| ctx.attempts.iter().sum::<Duration>().as_secs_f64() * 1000.0),
                bytes_in: ctx.bytes_in.load(Ordering::Relaxed),
                bytes_out: self.bytes_out,
                websocket: self.websocket.as_ref(),
            });
        }
        tracing::debug!(request_id = %ctx.id, status = self.status.as_u16(), outcome, duration_ms, "request done");
        let trace = std::mem::replace(&mut ctx.trace, RequestTrace::OFF);
        if let Some(route) = ctx.route() {
            trace.set(trace::text("keyward.route", route.to_string()));
            trace.rename(format!("{} {route}", ctx.method));
        }
        if let Some(user) = &ctx.user {
            trace.set(trace::text("keyward.user.id", user.clone()));
        }
        if !ctx.credentials.is_empty() {
            trace.set(trace::strings("keyward.credential", &ctx.credentials));
        }
        if let Some(d) = decision {
            trace.set(trace::text("keyward.policy.decision", d.outcome.as_str()));
        }
        trace.set(KeyValue::new("keyward.ratelimited", ctx.ratelimited.is_some()));
        trace.set(KeyValue::new("http.request.resend_count", i64::from(ctx.retries)));
        if let Some(ws) = &self.websocket {
            trace.set(KeyValue::new("keyward.websocket.messages_in", ws.messages_in as i64));
            trace.set(KeyValue::new("keyward.websocket.messages_out", ws.messages_out as i64));
            trace.set(KeyValue::new("keyward.websocket.bytes_in", ws.bytes_in as i64));
            trace.set(KeyValue::new("keyward.websocket.bytes_out", ws.bytes_out as i64));
            trace.set(trace::text("keyward.websocket.closed_by", ws.closed_by));
            if let Some(code) = ws.close_code {
                trace.set(KeyValue::new("keyward.websocket.close_code", i64::from(code)));
            }
        }
        trace.end(self.status, ctx.error.as_ref().map(|e| e.code));
    }
}

/// Unique within the process and ordered; enough to join a response to its log line.
fn next_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static EPOCH: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| time::OffsetDateTime::now_utc().unix_timestamp() as u32);
    format!("{epoch:08x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
