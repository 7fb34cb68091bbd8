//! The ordered stages of one intercepted request. This is the only module that knows the order:
//! destination integrity → route → credential swap (binding check) → destination guard + forward → response.

use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, Scheme as UriScheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::body::{Held, Outgoing, Tracked};
use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::headers::strip_hop_by_hop;
use super::upload::{AgentBody, Tail};
use super::{PolicyGate, ProxyState, Scheme, Target};
use crate::config::RouteLimits;
use crate::config::Unmatched;
use crate::policy::{input, Mode};
use crate::ratelimit::Scope;
use crate::retry::{RetryPolicy, Transient};
use crate::route::{normalize_host, normalize_path, split_host_port, DotSegment};
use crate::scrub::Scrubber;
use crate::upstream::Body;
use crate::upstream::{ConnectOptions, Phase, UpstreamError};
use bytes::Bytes;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use std::time::Instant;

use crate::telemetry::trace;

/// Runs the stages and turns any failure into its JSON response; never fails itself.
pub async fn handle(state: Arc<ProxyState>, target: Arc<Target>, req: Request<Incoming>) -> Response<Body> {
    let in_flight = state.drain.enter();
    let canary = super::scrubbing::canary_scrubber(&state).await;
    let mut ctx = RequestCtx::start(&state, &target, &req, canary.as_deref());
    // Over HTTP/2 the response ends only after the agent's body has (see `upload`).
    let h2 = req.version() == http::Version::HTTP_2;
    let (parts, body) = req.into_parts();
    let (body, upload) = AgentBody::new(body, h2);
    let req = Request::from_parts(parts, body);
    let response = match forward(&state, &target, req, &mut ctx, canary.as_deref()).await {
        Ok(response) => response,
        Err(error) => {
            ctx.fail(&error, &state.metrics);
            error.response(&ctx.id)
        }
    };
    let completion = ctx.respond(response.status(), state.clone());
    // The request counts as in flight, and its record stays open, until the agent has the whole body.
    response.map(|body| Held::new(body, in_flight, completion, Tail::new(upload)).boxed_unsync())
}

async fn forward(
    state: &ProxyState,
    target: &Target,
    req: Request<AgentBody>,
    ctx: &mut RequestCtx,
    canary: Option<&Scrubber>,
) -> Result<Response<Body>, ProxyError> {
    if state.kill_switch.is_blocked(&state.agent.id) {
        return Err(ProxyError::Blocked);
    }
    let (mut parts, body) = req.into_parts();
    super::scrubbing::canary(state, canary, &parts, None)?;
    if parts.method == http::Method::CONNECT {
        return Err(ProxyError::NestedConnect);
    }
    check_host(target, &parts)?;
    let path = normalize_path(parts.uri.path()).map_err(|DotSegment| {
        ProxyError::BadRequest("dot segments (`.` or `..`, in any spelling) are not allowed in the path")
    })?;
    let https = target.scheme == Scheme::Https;
    let route = state
        .routes
        .find(&target.host, target.port, https, &parts.method, &path.path);
    if path.ambiguous && route.is_some_and(|r| !r.paths.is_empty()) {
        return Err(ProxyError::BadRequest(
            "an encoded `/` or `\\`, a `\\` or double percent-encoding in the path is ambiguous on a route limited to paths",
        ));
    }
    ctx.set_route(route.map(|r| r.name.clone()));
    let user = take_user(&mut parts.headers, &state.user_header)?;
    ctx.set_user(user.clone());
    let plan = state.credentials.plan(route.map(|r| &**r), !https, &parts)?;
    ctx.set_credentials(state.credentials.names(&plan));
    let allow_private = match route {
        Some(route) => route.allow_private,
        None if state.unmatched == Unmatched::Tunnel => state.unmatched_allow_private,
        None => {
            return Err(ProxyError::NoRoute {
                host: target.authority(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
            })
        }
    };
    // Limits come before any work that grows with the agent's input (the policy reads the body).
    if let Err(limited) = state.rate_limits.check(ctx.route(), user.as_deref()) {
        let scope = match limited.scope {
            Scope::Route => "route",
            Scope::Agent => "agent",
        };
        ctx.rate_limited(scope, &state.metrics);
        return Err(ProxyError::RateLimited {
            scope,
            retry_after: limited.retry_after,
        });
    }
    let limits = ctx
        .route()
        .and_then(|r| state.route_limits.get(r))
        .unwrap_or(&NO_LIMITS);
    let permit = match ctx.route().and_then(|r| state.concurrency.get(r)) {
        Some(cap) => Some(cap.acquire(ctx.route().unwrap_or("-")).await?),
        None => None,
    };
    let body = match &state.policy {
        Some(gate) => {
            let entrypoint = route.and_then(|r| r.policy.as_deref()).unwrap_or(&gate.entrypoint);
            let (body, seen) = super::body::peek(body, &parts.headers, gate.body_limit)
                .await
                .map_err(|_| ProxyError::BadRequest("the request body could not be read"))?;
            let span = ctx.span("keyward.policy", SpanKind::Internal, Vec::new());
            let input = policy_input(state, gate, target, &parts, seen, user.as_deref(), ctx)?;
            let decision = gate.policies.decide(entrypoint, input);
            ctx.decide(&decision, gate.policies.mode(), &state.metrics);
            span.set(trace::text(
                "keyward.policy.decision",
                if decision.allow { "allow" } else { "deny" },
            ));
            drop(span);
            if !decision.allow && gate.policies.mode() == Mode::Enforce {
                return Err(ProxyError::PolicyDenied {
                    reason: decision.reason,
                });
            }
            body
        }
        None => Outgoing::from(body),
    };
    let retry = limits
        .retry
        .as_ref()
        .filter(|p| p.allows(&parts.method, &parts.headers));
    let body = match retry {
        Some(p) => body
            .buffered_up_to(&parts.headers, p.max_body)
            .await
            .map_err(|_| ProxyError::BadRequest("the request body could not be read"))?,
        None => body,
    };
    if let Some(bytes) = body.bytes() {
        super::scrubbing::canary(state, canary, &parts, Some(bytes))?;
    }
    // Responses on a route with credentials are scrubbed: ask for them uncompressed where the upstream obliges,
    // whether or not a value is at hand yet (an OAuth2 token may be fetched just below).
    let scrubbed = ctx.route().is_some_and(|r| state.credentials.route_has_any(r));
    if scrubbed {
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
    }
    // What a second attempt needs if the upstream rejects a credential: the request before the swap.
    let pre_swap = (body.replayable() && state.credentials.uses_any(&plan)).then(|| (parts.clone(), plan.clone()));
    let refs = state.credentials.secrets(&plan);
    let span = ctx.span("keyward.secrets", SpanKind::Internal, Vec::new());
    state.secrets.prepare(&refs).await;
    let mut written = match state.credentials.write(plan, &mut parts, &*state.secrets) {
        Ok(written) => written,
        Err(e) => {
            let e = ProxyError::from(e);
            span.fail(e.classify().1);
            return Err(e);
        }
    };
    drop(span);
    finalize(target, &mut parts)?;
    let opts = ConnectOptions {
        allow_private,
        connect: limits.connect.unwrap_or(state.upstream.defaults(allow_private).connect),
        tls: limits.tls,
    };
    let exchange = Exchange {
        state,
        opts,
        limits,
        retry,
    };
    let (first, replay) = body.into_parts();
    let first = super::body::counted(first, ctx.bytes_in.clone());
    let mut response = exchange.send(&parts, first, replay.clone(), ctx).await?;
    if let (StatusCode::UNAUTHORIZED, Some((mut parts, plan)), Some(bytes)) = (response.status(), pre_swap, replay) {
        if rotated(state, &refs).await {
            written.extend(state.credentials.write(plan, &mut parts, &*state.secrets)?);
            finalize(target, &mut parts)?;
            ctx.retried(&state.metrics);
            tracing::info!(request_id = %ctx.id, "upstream rejected the credential and a rotated value was found; retrying once");
            response = exchange.once(&parts, full(bytes), ctx).await?;
        }
    }
    let (mut parts, body) = response.into_parts();
    // A custom reason phrase is the upstream's free text (`401 Invalid key Bearer sk-…`): never passed on.
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    // Decided from every Content-Encoding value before hop-by-hop stripping, which could remove them.
    let encoding = scrubbed
        .then(|| super::scrubbing::Encoding::of(&parts.headers))
        .transpose()?;
    strip_hop_by_hop(&mut parts.headers);
    let body = Tracked::new(body, limits.idle, permit).boxed_unsync();
    let route = ctx.route().unwrap_or_default();
    let scrubber = match encoding {
        Some(encoding) => super::scrubbing::for_route(state, route, &written)
            .await
            .map(|scrubber| (scrubber, encoding)),
        None => None,
    };
    let body = match scrubber {
        Some((scrubber, encoding)) => super::scrubbing::response(
            scrubber,
            encoding,
            &mut parts.headers,
            body,
            state.metrics.clone(),
            route.to_string(),
        )?,
        None => body,
    };
    Ok(Response::from_parts(parts, body))
}

static NO_LIMITS: RouteLimits = RouteLimits {
    connect: None,
    tls: None,
    response_headers: None,
    idle: None,
    concurrency: None,
    retry: None,
};

/// Sending one request upstream under a route's limits, with its retries.
struct Exchange<'a> {
    state: &'a ProxyState,
    opts: ConnectOptions,
    limits: &'a RouteLimits,
    /// Set only when the request may be repeated (idempotent) under the route's policy.
    retry: Option<&'a RetryPolicy>,
}

impl Exchange<'_> {
    /// One attempt, bounded by the time-to-response-headers limit, in its own client span whose context the
    /// upstream receives as `traceparent`.
    async fn once(
        &self,
        parts: &http::request::Parts,
        body: Body,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut parts = parts.clone();
        let span = ctx.span(
            "keyward.upstream",
            SpanKind::Client,
            vec![
                trace::text("http.request.method", parts.method.to_string()),
                trace::text("server.address", parts.uri.host().unwrap_or_default().to_string()),
            ],
        );
        span.inject(&mut parts.headers);
        let started = Instant::now();
        let result = self.attempt(parts, body).await;
        ctx.upstream_answered(started.elapsed(), &self.state.metrics);
        match &result {
            Ok(response) => span.set(KeyValue::new(
                "http.response.status_code",
                i64::from(response.status().as_u16()),
            )),
            Err(e) => span.fail(e.classify().1),
        }
        result
    }

    async fn attempt(&self, parts: http::request::Parts, body: Body) -> Result<Response<Incoming>, ProxyError> {
        let host = parts.uri.host().unwrap_or_default().to_string();
        let sending = self.state.upstream.send(Request::from_parts(parts, body), self.opts);
        match self.limits.response_headers {
            Some(limit) => tokio::time::timeout(limit, sending)
                .await
                .map_err(|_| UpstreamError::Timeout {
                    host,
                    phase: Phase::ResponseHeaders,
                })?,
            None => sending.await,
        }
        .map_err(ProxyError::from)
    }

    /// Attempts until a final answer, the attempt budget or the deadline. A retry needs the body in memory
    /// (`replay`), and only happens before anything has been sent back to the agent.
    async fn send(
        &self,
        parts: &http::request::Parts,
        first: Body,
        replay: Option<Bytes>,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Incoming>, ProxyError> {
        let policy = self.retry.filter(|_| replay.is_some());
        let started = Instant::now();
        let mut body = Some(first);
        let mut attempt = 1;
        loop {
            let this = body.take().unwrap_or_else(|| full(replay.clone().unwrap_or_default()));
            let result = self.once(parts, this, ctx).await;
            let Some(policy) = policy else { return result };
            let why = match &result {
                Ok(response) => policy.transient_status(response.status(), response.headers()),
                Err(ProxyError::Upstream(
                    UpstreamError::Connect { .. }
                    | UpstreamError::Request { .. }
                    | UpstreamError::Timeout {
                        phase: Phase::Connect | Phase::Tls,
                        ..
                    },
                )) => Some(Transient::Connection),
                Err(_) => None,
            };
            let Some(why) = why else { return result };
            let delay = policy.delay(attempt + 1, why);
            if attempt >= policy.attempts || started.elapsed() + delay > policy.deadline {
                return result;
            }
            tracing::info!(request_id = %ctx.id, attempt = attempt + 1, reason = ?why, delay_ms = delay.as_millis() as u64, "retrying the upstream request");
            drop(result);
            tokio::time::sleep(delay).await;
            attempt += 1;
            ctx.retried(&self.state.metrics);
        }
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// The rotation race: the cached value went stale between a rotation and the next refresh. Re-reads every
/// secret the request used; true when any of them changed.
async fn rotated(state: &ProxyState, refs: &[crate::secrets::SecretRef]) -> bool {
    let mut changed = false;
    for r in refs {
        changed |= state.secrets.reread(r).await;
    }
    changed
}

/// Headers and URI as the upstream must see them.
fn finalize(target: &Target, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(HOST);
    parts.uri = upstream_uri(target, &parts.uri)?;
    parts.version = Version::HTTP_11;
    Ok(())
}

/// Longest user id accepted: ids key rate limits and appear in spans and audit lines.
const MAX_USER_ID: usize = 256;

/// The user the agent acts for, from the configured header, which never travels upstream.
fn take_user(headers: &mut http::HeaderMap, name: &http::HeaderName) -> Result<Option<String>, ProxyError> {
    let Some(value) = headers.remove(name) else {
        return Ok(None);
    };
    if value.len() > MAX_USER_ID {
        return Err(ProxyError::BadRequest("the user id header is longer than 256 bytes"));
    }
    Ok(value.to_str().ok().map(str::to_string).filter(|v| !v.is_empty()))
}

fn policy_input(
    state: &ProxyState,
    gate: &PolicyGate,
    target: &Target,
    parts: &http::request::Parts,
    body: input::Body,
    user: Option<&str>,
    ctx: &RequestCtx,
) -> Result<regorus::Value, ProxyError> {
    if matches!(body, input::Body::DuplicateKey) {
        return Err(ProxyError::AmbiguousJson);
    }
    let has_placeholder = |b: &[u8]| state.credentials.has_placeholder(b);
    let context = input::Context {
        agent: &state.agent,
        user,
        route: ctx.route(),
        credentials: ctx.credentials(),
        now: chrono::Utc::now().with_timezone(&gate.timezone),
        has_placeholder: &has_placeholder,
    };
    let scheme = match target.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let request = input::Request {
        scheme,
        host: &target.host,
        port: target.port,
        parts,
        body,
    };
    Ok(regorus::Value::from(input::build(&context, request)))
}

/// The `Host` header and the HTTP/2 `:authority` must name the CONNECT target; a port, when given, must match.
fn check_host(target: &Target, parts: &http::request::Parts) -> Result<(), ProxyError> {
    let header = parts.headers.get(HOST).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let authority = parts.uri.authority().map(Authority::as_str);
    for claimed in [header, authority].into_iter().flatten() {
        let ok = split_host_port(claimed)
            .is_some_and(|(host, port)| normalize_host(host) == target.host && port.is_none_or(|p| p == target.port));
        if !ok {
            return Err(ProxyError::HostMismatch {
                header: claimed.to_string(),
                target: target.authority(),
            });
        }
    }
    Ok(())
}

fn upstream_uri(target: &Target, uri: &Uri) -> Result<Uri, ProxyError> {
    let scheme = match target.scheme {
        Scheme::Http => UriScheme::HTTP,
        Scheme::Https => UriScheme::HTTPS,
    };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Uri::builder()
        .scheme(scheme)
        .authority(target.authority())
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::BadRequest("the request target is not a valid URI"))
}
