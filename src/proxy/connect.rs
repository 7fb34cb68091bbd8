//! The first hop from the agent: `CONNECT host:port` (intercepted, or tunnelled when unmatched hosts are set
//! to `tunnel`) and absolute-form `http://` requests. Anything else is answered with a 400 that says how to
//! use a proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::idle::{Counted, Idle, OnConnection};
use super::rewind::Rewind;
use super::{pipeline, Live, ProxyState, Scheme, Target};
use crate::listener::Slot;
use crate::route::{normalize_host, split_host_port, valid_host};
use crate::telemetry::metrics::ConnectionGuard;
use crate::upstream::{Body, UpstreamError};

/// The first byte of a TLS record carrying a handshake message (the ClientHello).
pub(super) const TLS_HANDSHAKE: u8 = 0x16;

/// What an agent connection holds for as long as it lives, tunnels it opened included: its place under
/// `limits.max_connections` and its count in `keyward_open_connections`.
pub(super) struct Held {
    _slot: Slot,
    _open: ConnectionGuard,
}

impl Held {
    pub(super) fn new(slot: Slot, state: &ProxyState) -> Arc<Self> {
        Arc::new(Self {
            _slot: slot,
            _open: state.metrics.connection_opened(),
        })
    }
}

/// Serves one agent connection until it closes. Each request (each CONNECT, and each request inside an
/// intercepted tunnel) runs on the configuration in force when it arrives.
pub async fn serve(live: Arc<Live>, stream: TcpStream, peer: SocketAddr, slot: Slot) {
    let state = live.load();
    let held = Held::new(slot, &state);
    let limits = state.limits.clone();
    let service = service_fn(move |req| {
        let (live, held) = (live.clone(), held.clone());
        async move { Ok::<_, Infallible>(first_hop(live, req, held).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "agent connection ended with an error");
    }
}

async fn first_hop(live: Arc<Live>, req: Request<Incoming>, held: Arc<Held>) -> Response<Body> {
    let state = live.load();
    if req.method() == Method::CONNECT {
        return connect(live, state, req, held).await;
    }
    match absolute_http_target(req.uri()) {
        Some(target) => pipeline::handle(state, Arc::new(target), req).await,
        None => refuse(ProxyError::BadRequest(
            "keyward is a proxy: send CONNECT host:port, or a request with an absolute http:// URI",
        )),
    }
}

async fn connect(live: Arc<Live>, state: Arc<ProxyState>, req: Request<Incoming>, held: Arc<Held>) -> Response<Body> {
    let Some(target) = connect_target(req.uri()) else {
        return refuse(ProxyError::BadRequest(
            "CONNECT needs a host:port target whose host is a DNS name (at most 253 bytes) or an IP literal",
        ));
    };
    let tunnelled = match unmatched_tunnel(&state, &target).await {
        Ok(tunnelled) => tunnelled,
        Err(e) => return refuse(e),
    };
    if let Some(upstream) = tunnelled {
        tracing::info!(host = %target.host, port = target.port, "tunnelling unmatched host without interception");
        tokio::spawn(async move {
            let _held = held;
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => splice(TokioIo::new(upgraded), upstream).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
    } else {
        tokio::spawn(async move {
            let _held = held;
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => intercept_tunnel(live, state, target, TokioIo::new(upgraded)).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
    }
    Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync())
}

/// The upstream stream when `target` is a host no route names and `unmatched` lets it be reached (spliced,
/// not intercepted); `None` when it is to be intercepted. `tunnel_private` decides by the addresses the name
/// resolves to, and the stream dialled is the one checked.
pub(super) async fn unmatched_tunnel(state: &ProxyState, target: &Target) -> Result<Option<TcpStream>, ProxyError> {
    match state.unmatched.reach(state.unmatched_allow_private) {
        Some(reach) if !state.routes.knows_host(&target.host, target.port, true) => {
            match state.upstream.connect(&target.host, target.port, reach).await {
                Ok(stream) => Ok(Some(stream)),
                Err(UpstreamError::NotInternal { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
        _ => Ok(None),
    }
}

/// Terminates the agent's TLS with a leaf for the target and serves HTTP/1.1 or HTTP/2 inside it. A tunnel
/// whose first byte is not a TLS handshake carries plain HTTP (Node sends `http://` URLs through CONNECT):
/// its requests are served as `http://` requests to the target. The connection's limits and kill switch come
/// from `state` (the process's; a reload does not change them).
pub(super) async fn intercept_tunnel<IO>(live: Arc<Live>, state: Arc<ProxyState>, target: Target, mut io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(state.agent_tls_timeout, io.read(&mut first)).await;
    if !matches!(read, Ok(Ok(1))) {
        tracing::debug!(host = %target.host, "tunnel closed or silent before its first byte");
        return;
    }
    let io = Rewind::new(Bytes::copy_from_slice(&first), io);
    if first[0] != TLS_HANDSHAKE {
        let label = format!("{} (plain HTTP in CONNECT)", target.host);
        let target = Arc::new(Target {
            scheme: Scheme::Http,
            ..target
        });
        serve_requests(live, state, TokioIo::new(io), &label, move |_| Ok(target.clone())).await;
        return;
    }
    let tls = match crate::tls::accept::accept(io, &target.host, &state.leaves, state.agent_tls_timeout).await {
        Ok(tls) => tls,
        Err(e) => {
            tracing::info!(host = %target.host, error = %e, "agent TLS handshake refused");
            return;
        }
    };
    let label = target.host.clone();
    let target = Arc::new(target);
    serve_requests(live, state, TokioIo::new(tls), &label, move |_| Ok(target.clone())).await;
}

/// Serves HTTP/1.1 or HTTP/2 requests from an agent connection Keyward terminates, each sent through the
/// pipeline toward `target_of(request)` (fixed for a tunnel; the `Host` of each request on the transparent
/// plain-HTTP path). Closed by the kill switch or after `limits.idle_connection_timeout` without a request.
pub(super) async fn serve_requests<IO, F>(live: Arc<Live>, state: Arc<ProxyState>, io: IO, label: &str, target_of: F)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(&Request<Incoming>) -> Result<Arc<Target>, ProxyError> + Send + Sync + 'static,
{
    let target_of = Arc::new(target_of);
    let idle = Idle::new();
    let requests = idle.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(OnConnection(requests.clone()));
        let (state, target, active) = (live.load(), target_of(&req), requests.enter());
        async move {
            let response = match target {
                Ok(target) => pipeline::handle(state, target, req).await,
                Err(e) => refuse(e),
            };
            Ok::<_, Infallible>(response.map(|body| Counted::wrap(body, active)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let limits = &state.limits;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    // HTTP/2 has no header-read timeout of its own: a keep-alive ping that must be answered within the same
    // time cuts a connection stuck in a header block (HEADERS without END_HEADERS) or gone silent.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout)
        // WebSocket over HTTP/2 (RFC 8441): agents may open sockets with an extended CONNECT.
        .enable_connect_protocol();
    let kill_switch = state.kill_switch.clone();
    tokio::select! {
        served = builder.serve_connection_with_upgrades(io, service) => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "intercepted connection ended with an error");
            }
        }
        _ = kill_switch.blocked(&state.agent.id) => {
            tracing::warn!(host = %label, "kill switch: intercepted connection closed");
        }
        _ = idle.expired(limits.idle_connection_timeout) => {
            tracing::debug!(host = %label, "idle intercepted connection closed");
        }
    }
}

pub(super) async fn splice<IO>(mut agent: IO, mut upstream: TcpStream)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional(&mut agent, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}

/// The target of `CONNECT host:port`: a DNS name or an IP literal, since a leaf is minted for it.
fn connect_target(uri: &http::Uri) -> Option<Target> {
    let authority = uri.authority()?;
    let (host, port) = split_host_port(authority.as_str())?;
    let host = normalize_host(host);
    valid_host(&host).then_some(Target {
        scheme: Scheme::Https,
        host,
        port: port?,
    })
}

fn absolute_http_target(uri: &http::Uri) -> Option<Target> {
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let authority = uri.authority()?;
    let (host, port) = split_host_port(authority.as_str())?;
    let host = normalize_host(host);
    valid_host(&host).then_some(Target {
        scheme: Scheme::Http,
        host,
        port: port.unwrap_or(80),
    })
}

/// First-hop refusals are not requests to a destination yet, so they are logged here, not by the pipeline.
pub(super) fn refuse(error: ProxyError) -> Response<Body> {
    let (status, code) = error.classify();
    tracing::info!(status = status.as_u16(), code, error = %error, "proxy request refused");
    error.response("-")
}
