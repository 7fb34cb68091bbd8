//! The phases of one intercepted request, in their one fixed order. This is the only module that knows the
//! order; each phase is a plain function, called from [`forward`]:
//!
//! 1. [`admit`]: the kill switch; the outbound canary on the head (path, headers, query), so no later error
//!    message or record can quote a real secret; a nested CONNECT; destination integrity (Host, :authority).
//! 2. [`route`]: the normalised path (dot segments refused) → the route's runtime object; ambiguous encodings
//!    refused on routes limited to paths; the user the agent acts for.
//! 3. [`plan_credentials`]: placeholders found and checked, without reading a secret: one bound to another
//!    route is exfiltration, one outside its credential's header or query key is misplaced. Then the
//!    destination: no route is `no_route`, unless unmatched hosts are tunnelled.
//! 4. [`admission`]: rate limits (route, then agent-wide) and the route's in-flight cap, before any work that
//!    grows with the agent's input.
//! 5. [`prepare_body`]: the body read for the policy (up to its limit) or kept for retries, and the canary on
//!    whatever is in memory.
//! 6. [`authorize`]: the Rego policy, which never sees a secret.
//! 7. [`prepare_upstream`]: placeholders swapped or credentials injected, recording every value written, and
//!    the request made what the upstream must see. The 401 replay in the next phase calls it again.
//! 8. [`exchange`]: send, with retries, and one replay with a re-read value after a 401.
//! 9. [`respond`]: the upstream's reason phrase dropped, the encoding decided from every value before
//!    hop-by-hop stripping, and the body scrubbed of every value of the route and every value written into
//!    this request.
//!
//! Every phase records into the [`RequestCtx`]; metrics go out when the head is sent, the audit line and the
//! span end when the body is done. Errors become responses in one place, [`handle`].

use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, Scheme as UriScheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

use super::body::{Held, Outgoing, Tracked};
use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::headers::{strip_hop_by_hop, strip_request_hop_by_hop};
use super::runtime::RouteLimits;
use super::runtime::RouteRuntime;
use super::upload::{AgentBody, Tail};
use super::websocket::{self, Handshake};
use super::{ProxyState, Scheme, Target};
use crate::credentials::Plan;
use crate::policy::{input, Mode};
use crate::retry::{RetryPolicy, Transient};
use crate::route::{normalize_host, normalize_path, split_host_port, DotSegment};
use crate::scrub::Scrubber;
use crate::secrets::{Secret, SecretRef};
use crate::upstream::Body;
use crate::upstream::{ConnectOptions, Identity, Phase, Reach, UpstreamError};
use bytes::Bytes;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use std::time::Instant;

use crate::telemetry::trace;

/// Runs the phases and turns any failure into its JSON response; never fails itself.
pub async fn handle(state: Arc<ProxyState>, target: Arc<Target>, mut req: Request<Incoming>) -> Response<Body> {
    let in_flight = state.drain.enter();
    let canary = super::scrubbing::canary_scrubber(&state).await;
    let mut ctx = RequestCtx::start(&state, &target, &req, canary.as_deref());
    let websocket = Handshake::take(&mut req);
    // Over HTTP/2 the response ends only after the agent's body has (see `upload`).
    let h2 = req.version() == http::Version::HTTP_2;
    let (mut parts, body) = req.into_parts();
    let kind = websocket.as_ref().map(|w| w.kind);
    if let Some(kind) = kind {
        websocket::as_upgrade_request(kind, &mut parts);
    }
    let (body, upload) = AgentBody::new(body, h2);
    let (response, relay) = match forward(&state, &target, parts, body, kind, &mut ctx, canary.as_deref()).await {
        Ok(forwarded) => forwarded,
        Err(error) => {
            ctx.fail(&error);
            (error.response(&ctx.id), None)
        }
    };
    let completion = ctx.respond(response.status(), state.clone());
    if let (Some(relay), Some(handshake)) = (relay, websocket) {
        // The record stays open, and the socket counts as in flight, until it closes.
        tokio::spawn(relay.run(handshake, completion, in_flight, state));
        return response;
    }
    // The request counts as in flight, and its record stays open, until the agent has the whole body.
    response.map(|body| Held::new(body, in_flight, completion, Tail::new(upload)).boxed_unsync())
}

/// The phases, in order. A WebSocket handshake that the upstream accepts also returns the relay to run.
async fn forward(
    state: &ProxyState,
    target: &Target,
    mut parts: http::request::Parts,
    body: AgentBody,
    websocket: Option<websocket::Kind>,
    ctx: &mut RequestCtx,
    canary: Option<&Scrubber>,
) -> Result<(Response<Body>, Option<websocket::Relay>), ProxyError> {
    admit(state, target, &parts, canary)?;
    let (route, user) = route(state, target, &mut parts, ctx)?;
    let route = route.as_deref();
    let (mut plan, reach) = plan_credentials(state, target, route, &parts, ctx)?;
    let permit = admission(state, route, user.as_deref(), ctx).await?;
    let limits = route.map_or(&UNROUTED, |r| &r.limits);
    let retry = limits
        .retry
        .as_ref()
        .filter(|p| p.allows(&parts.method, &parts.headers));
    let hashed = state.credentials.needs_body(&plan, &parts);
    let swapped = state.credentials.searches_bodies() && crate::credentials::BodyEncoding::of(&parts.headers).is_some();
    let hold = [
        hashed.then_some(crate::credentials::MAX_HASHED_BODY),
        swapped.then_some(crate::credentials::MAX_SWAPPED_BODY),
    ];
    let (body, seen) = prepare_body(state, &parts, body, retry, hold.into_iter().flatten().max(), canary).await?;
    if let Some(bytes) = body.bytes() {
        // Phase 3 for the body: its placeholders, checked like the head's, once it is in memory.
        let plain_http = target.scheme == Scheme::Http;
        state
            .credentials
            .plan_body(&mut plan, route.map(|r| &r.route), plain_http, &parts.headers, bytes)?;
        ctx.set_credentials(state.credentials.names(&plan));
    }
    if let Some(seen) = seen {
        authorize(state, target, route, &parts, seen, user.as_deref(), ctx)?;
    }
    let scrubbed = route.is_some_and(|r| r.scrubbed);
    if scrubbed {
        // Echoed secrets must be found in the response: ask for it uncompressed where the upstream obliges,
        // whether or not a value is at hand yet (an OAuth2 token may be fetched just below).
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
    }
    // What a replay needs if the upstream rejects a credential: the request before the swap.
    let replay = match body.shared() {
        Some(bytes) if state.credentials.uses_any(&plan) => Some((parts.clone(), plan.clone(), bytes)),
        _ => None,
    };
    let mut refs = state.credentials.secrets(&plan);
    let certificate = route.and_then(|r| r.route.client_certificate.as_ref());
    refs.extend(certificate.into_iter().flat_map(|c| [c.cert.clone(), c.key.clone()]));
    let (mut written, swapped) = prepare_upstream(state, target, &mut parts, plan, &refs, body.shared(), ctx).await?;
    let body = match swapped {
        Some(bytes) => Outgoing::Buffered(bytes),
        None => body,
    };
    if websocket.is_some() {
        websocket::restore_upgrade_headers(&mut parts.headers);
    }
    let exchange = Exchange {
        state,
        target,
        refs: &refs,
        opts: ConnectOptions {
            reach,
            connect: limits.connect.unwrap_or(state.upstream.defaults(reach).connect),
            tls: limits.tls,
            // An upgrade is HTTP/1.1 only: the pool for it never negotiates h2.
            http1_only: websocket.is_some(),
            identity: client_identity(state, route)?,
        },
        limits,
        retry,
    };
    let response = exchange.run(&parts, body, replay, &mut written, ctx).await?;
    if let Some(kind) = websocket.filter(|_| response.status() == StatusCode::SWITCHING_PROTOCOLS) {
        let scrubber = match route.filter(|r| r.scrubbed) {
            Some(route) => super::scrubbing::for_route(state, route, &written).await,
            None => None,
        };
        let canary = super::scrubbing::canary_scrubber(state).await;
        let (response, relay) = websocket::accept(
            kind,
            parts.headers.get(http::header::SEC_WEBSOCKET_KEY),
            route.map_or("-", |r| r.name()).to_string(),
            response,
            scrubber,
            canary,
            limits.idle,
            state.limits.max_websocket_message,
            permit,
        )?;
        return Ok((response, Some(relay)));
    }
    Ok((respond(state, route, response, permit, &written).await?, None))
}

/// The route's client certificate (mTLS), read like a secret and registered with the upstream client, which
/// keeps a pool per certificate: a rotated one means new connections.
fn client_identity(state: &ProxyState, route: Option<&RouteRuntime>) -> Result<Option<Identity>, ProxyError> {
    let Some((name, certificate)) = route.and_then(|r| Some((r.name(), r.route.client_certificate.as_ref()?))) else {
        return Ok(None);
    };
    let read = |r: &SecretRef| {
        state.secrets.get(r).map_err(|source| {
            ProxyError::Swap(crate::credentials::SwapError::Secret {
                credential: format!("{name} client_certificate"),
                source,
            })
        })
    };
    let (cert, key) = (read(&certificate.cert)?, read(&certificate.key)?);
    Ok(Some(state.upstream.identity(
        name,
        cert.expose().as_bytes(),
        key.expose().as_bytes(),
    )?))
}

/// Phase 1. Nothing here reads more than the request head.
fn admit(
    state: &ProxyState,
    target: &Target,
    parts: &http::request::Parts,
    canary: Option<&Scrubber>,
) -> Result<(), ProxyError> {
    if state.kill_switch.is_blocked(&state.agent.id) {
        return Err(ProxyError::Blocked);
    }
    super::scrubbing::canary(state, canary, parts, None)?;
    if parts.method == http::Method::CONNECT {
        return Err(ProxyError::NestedConnect);
    }
    check_host(target, parts)
}

/// Phase 2: the route (if any) and the user the agent acts for (whose header never travels upstream).
fn route(
    state: &ProxyState,
    target: &Target,
    parts: &mut http::request::Parts,
    ctx: &mut RequestCtx,
) -> Result<(Option<Arc<RouteRuntime>>, Option<String>), ProxyError> {
    let path = normalize_path(parts.uri.path()).map_err(|DotSegment| {
        ProxyError::BadRequest("dot segments (`.` or `..`, in any spelling) are not allowed in the path")
    })?;
    let https = target.scheme == Scheme::Https;
    let route = state
        .routes
        .find(&target.host, target.port, https, &parts.method, &path.path)
        .cloned();
    if path.ambiguous && route.as_ref().is_some_and(|r| !r.route.paths.is_empty()) {
        return Err(ProxyError::BadRequest(
            "an encoded `/` or `\\`, a `\\` or double percent-encoding in the path is ambiguous on a route limited to paths",
        ));
    }
    ctx.set_route(route.clone());
    let user = take_user(&mut parts.headers, &state.user_header)?;
    ctx.set_user(user.clone());
    Ok((route, user))
}

/// Phase 3: which credentials the request uses, checked for binding and placement before any secret is read;
/// then whether the destination may be reached at all (and whether private addresses may).
fn plan_credentials(
    state: &ProxyState,
    target: &Target,
    route: Option<&RouteRuntime>,
    parts: &http::request::Parts,
    ctx: &mut RequestCtx,
) -> Result<(Plan, Reach), ProxyError> {
    let plain_http = target.scheme == Scheme::Http;
    let plan = state.credentials.plan(route.map(|r| &r.route), plain_http, parts)?;
    ctx.set_credentials(state.credentials.names(&plan));
    let reach = match (route, state.unmatched.reach(state.unmatched_allow_private)) {
        (Some(route), _) => Reach::allowing_private(route.route.allow_private),
        (None, Some(reach)) => reach,
        (None, None) => {
            return Err(ProxyError::NoRoute {
                host: target.authority(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
            })
        }
    };
    Ok((plan, reach))
}

/// Phase 4: rate limits, then the in-flight cap, whose permit is held until the response body is done.
async fn admission(
    state: &ProxyState,
    route: Option<&RouteRuntime>,
    user: Option<&str>,
    ctx: &mut RequestCtx,
) -> Result<Option<OwnedSemaphorePermit>, ProxyError> {
    let rate = route.and_then(|r| r.rate.as_ref());
    if let Err(limited) = crate::ratelimit::admit(rate, state.agent_rate.as_ref(), user) {
        ctx.rate_limited(limited.scope);
        return Err(ProxyError::RateLimited {
            scope: limited.scope.as_str(),
            retry_after: limited.retry_after,
        });
    }
    match route.and_then(|r| r.concurrency.as_ref().map(|c| (r, c))) {
        Some((route, cap)) => Ok(Some(cap.acquire(route.name()).await?)),
        None => Ok(None),
    }
}

/// Phase 5: the body as the policy sees it (when a policy runs) and as it will be sent (streamed, or in memory
/// for retries), checked by the canary where it is in memory.
async fn prepare_body(
    state: &ProxyState,
    parts: &http::request::Parts,
    body: AgentBody,
    retry: Option<&RetryPolicy>,
    hold: Option<u64>,
    canary: Option<&Scrubber>,
) -> Result<(Outgoing, Option<input::Body>), ProxyError> {
    let unreadable = || ProxyError::BadRequest("the request body could not be read");
    let (body, seen) = match &state.policy {
        Some(gate) => {
            let (body, seen) = super::body::peek(body, &parts.headers, gate.body_limit)
                .await
                .map_err(|_| unreadable())?;
            (body, Some(seen))
        }
        None => (Outgoing::from(body), None),
    };
    // Kept in memory for replays, for a signature that covers the payload (SigV4 without a hash header) and
    // for placeholders in bodies (`hold`).
    let limit = retry.map(|p| p.max_body).into_iter().chain(hold).max();
    let body = match limit {
        Some(limit) => body
            .buffered_up_to(&parts.headers, limit)
            .await
            .map_err(|_| unreadable())?,
        None => body,
    };
    if let Some(bytes) = body.bytes() {
        super::scrubbing::canary(state, canary, parts, Some(bytes))?;
    }
    Ok((body, seen))
}

/// Phase 6: the policy's decision. In shadow mode a denial is recorded and the request goes on.
fn authorize(
    state: &ProxyState,
    target: &Target,
    route: Option<&RouteRuntime>,
    parts: &http::request::Parts,
    seen: input::Body,
    user: Option<&str>,
    ctx: &mut RequestCtx,
) -> Result<(), ProxyError> {
    let Some(gate) = &state.policy else { return Ok(()) };
    if matches!(seen, input::Body::DuplicateKey) {
        return Err(ProxyError::AmbiguousJson);
    }
    let entrypoint = route
        .and_then(|r| r.route.policy.as_deref())
        .unwrap_or(&gate.entrypoint);
    let mut span = ctx.span("keyward.policy", SpanKind::Internal, Vec::new());
    let has_placeholder = |b: &[u8]| state.credentials.has_placeholder(b);
    let context = input::Context {
        agent: &state.agent,
        user,
        route: ctx.route(),
        credentials: ctx.credentials(),
        now: chrono::Utc::now().with_timezone(&gate.timezone),
        has_placeholder: &has_placeholder,
    };
    let request = input::Request {
        scheme: target.scheme.as_str(),
        host: &target.host,
        port: target.port,
        parts,
        body: seen,
    };
    let input = regorus::Value::from(input::build(&context, request));
    let decision = gate.policies.decide(entrypoint, input);
    ctx.decide(&decision, gate.policies.mode());
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
    Ok(())
}

/// Phase 7: the real values written (each one returned with its placeholder, for the scrubber), then the
/// headers and URI as the upstream must see them.
async fn prepare_upstream<'a>(
    state: &'a ProxyState,
    target: &Target,
    parts: &mut http::request::Parts,
    plan: Plan,
    refs: &[SecretRef],
    body: Option<Bytes>,
    ctx: &mut RequestCtx,
) -> Result<(Vec<(Secret, &'a str)>, Option<Bytes>), ProxyError> {
    let mut span = ctx.span("keyward.secrets", SpanKind::Internal, Vec::new());
    state.secrets.prepare(refs).await;
    let written = state
        .credentials
        .write(&plan, parts, &*state.secrets)
        .and_then(|mut written| {
            let swapped = match &body {
                Some(bytes) => state
                    .credentials
                    .write_body(&plan, bytes, &*state.secrets, &mut written)?,
                None => None,
            };
            Ok((written, swapped))
        });
    let (written, swapped) = match written {
        Ok(done) => done,
        Err(e) => {
            let e = ProxyError::from(e);
            span.fail(e.classify().1);
            return Err(e);
        }
    };
    if let Some(bytes) = &swapped {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
    }
    drop(span);
    strip_request_hop_by_hop(&mut parts.headers);
    parts.headers.remove(HOST);
    parts.uri = upstream_uri(target, &parts.uri)?;
    parts.version = Version::HTTP_11;
    let mut written = written;
    let signed = swapped.as_deref().or(body.as_deref());
    written.extend(state.credentials.late(&plan, parts, signed, &*state.secrets)?);
    Ok((written, swapped))
}

/// Phase 9: the response head cleaned of what the upstream must not pass on, and the body scrubbed as it
/// streams, holding the route's in-flight permit until it is done.
async fn respond(
    state: &ProxyState,
    route: Option<&RouteRuntime>,
    response: Response<Incoming>,
    permit: Option<OwnedSemaphorePermit>,
    written: &[(Secret, &str)],
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = response.into_parts();
    // A custom reason phrase is the upstream's free text (`401 Invalid key Bearer sk-…`): never passed on.
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    let scrubbed = route.filter(|r| r.scrubbed);
    // Decided from every Content-Encoding value before hop-by-hop stripping, which could remove them.
    let encoding = scrubbed
        .map(|_| super::scrubbing::Encoding::of(&parts.headers))
        .transpose()?;
    strip_hop_by_hop(&mut parts.headers);
    let limits = route.map_or(&UNROUTED, |r| &r.limits);
    let body = Tracked::new(body, limits.idle, permit).boxed_unsync();
    let scrubber = match (scrubbed, encoding) {
        (Some(route), Some(encoding)) => super::scrubbing::for_route(state, route, written)
            .await
            .map(|scrubber| (route, scrubber, encoding)),
        _ => None,
    };
    let body = match scrubber {
        Some((route, scrubber, encoding)) => super::scrubbing::response(
            scrubber,
            encoding,
            &mut parts.headers,
            body,
            state.metrics.clone(),
            route.name().to_string(),
        )?,
        None => body,
    };
    Ok(Response::from_parts(parts, body))
}

/// The limits of a request no route matched (absolute-form http to an unmatched host, when tunnelled): none.
static UNROUTED: RouteLimits = RouteLimits {
    connect: None,
    tls: None,
    response_headers: None,
    idle: None,
    concurrency: None,
    retry: None,
};

/// Sending one request upstream under a route's limits, with its retries and its 401 replay.
struct Exchange<'a> {
    state: &'a ProxyState,
    target: &'a Target,
    /// The secrets the request uses, re-read after a 401.
    refs: &'a [SecretRef],
    opts: ConnectOptions,
    limits: &'a RouteLimits,
    /// Set only when the request may be repeated (idempotent) under the route's policy.
    retry: Option<&'a RetryPolicy>,
}

impl<'a> Exchange<'a> {
    /// Phase 8: sends with the route's retries. When the upstream answers 401 and a secret the request used
    /// has changed since it was read (the rotation race), the new values are written by
    /// [`prepare_upstream`], as for the first send, and the request is replayed once.
    async fn run(
        &self,
        parts: &http::request::Parts,
        body: Outgoing,
        replay: Option<(http::request::Parts, Plan, Bytes)>,
        written: &mut Vec<(Secret, &'a str)>,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (first, bytes) = body.into_parts();
        let first = super::body::counted(first, ctx.bytes_in.clone());
        let response = self.send(parts, first, bytes, ctx).await?;
        if let (StatusCode::UNAUTHORIZED, Some((mut parts, plan, original))) = (response.status(), replay) {
            if rotated(self.state, self.refs).await {
                let (again, swapped) = prepare_upstream(
                    self.state,
                    self.target,
                    &mut parts,
                    plan,
                    self.refs,
                    Some(original.clone()),
                    ctx,
                )
                .await?;
                written.extend(again);
                ctx.retried();
                tracing::info!(request_id = %ctx.id, "upstream rejected the credential and a rotated value was found; retrying once");
                return self.once(&parts, full(swapped.unwrap_or(original)), ctx).await;
            }
        }
        Ok(response)
    }

    /// One attempt, bounded by the time-to-response-headers limit, in its own client span whose context the
    /// upstream receives as `traceparent`.
    async fn once(
        &self,
        parts: &http::request::Parts,
        body: Body,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut parts = parts.clone();
        let mut span = ctx.span(
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
        ctx.upstream_answered(started.elapsed());
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
            ctx.retried();
        }
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// The rotation race: the cached value went stale between a rotation and the next refresh. Re-reads every
/// secret the request used; true when any of them changed.
async fn rotated(state: &ProxyState, refs: &[SecretRef]) -> bool {
    let mut changed = false;
    for r in refs {
        changed |= state.secrets.reread(r).await;
    }
    changed
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
