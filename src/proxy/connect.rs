//! The first hop from the agent: `CONNECT host:port` (intercepted, or tunnelled when unmatched hosts are set
//! to `tunnel`) and absolute-form `http://` requests. Anything else is answered with a 400 that says how to
//! use a proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::{pipeline, ProxyState, Scheme, Target};
use crate::config::Unmatched;
use crate::route::{normalize_host, split_host_port};
use crate::upstream::Body;

/// Serves one agent connection until it closes.
pub async fn serve(state: Arc<ProxyState>, stream: TcpStream, peer: SocketAddr) {
    let _open = state.metrics.connection_opened();
    let state_limits = state.limits.clone();
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(first_hop(state, req).await) }
    });
    let limits = state_limits;
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

async fn first_hop(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(state, req).await;
    }
    match absolute_http_target(req.uri()) {
        Some(target) => pipeline::handle(state, Arc::new(target), req).await,
        None => refuse(ProxyError::BadRequest(
            "keyward is a proxy: send CONNECT host:port, or a request with an absolute http:// URI",
        )),
    }
}

async fn connect(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<Body> {
    let Some(target) = connect_target(req.uri()) else {
        return refuse(ProxyError::BadRequest("CONNECT needs a host:port target"));
    };
    let intercept = state.unmatched == Unmatched::Deny || state.routes.knows_host(&target.host, target.port);
    if intercept {
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => intercept_tunnel(state, target, TokioIo::new(upgraded)).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
    } else {
        let upstream = match state
            .upstream
            .connect(&target.host, target.port, state.unmatched_allow_private)
            .await
        {
            Ok(stream) => stream,
            Err(e) => return refuse(e.into()),
        };
        tracing::info!(host = %target.host, port = target.port, "tunnelling unmatched host without interception");
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => splice(TokioIo::new(upgraded), upstream).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
    }
    Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync())
}

/// Terminates the agent's TLS with a leaf for the target and serves HTTP/1.1 or HTTP/2 inside it.
async fn intercept_tunnel<IO>(state: Arc<ProxyState>, target: Target, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tls = match crate::tls::accept::accept(io, &target.host, &state.leaves, state.agent_tls_timeout).await {
        Ok(tls) => tls,
        Err(e) => {
            tracing::info!(host = %target.host, error = %e, "agent TLS handshake refused");
            return;
        }
    };
    let target_host = target.host.clone();
    let target = Arc::new(target);
    let state_for_kill = state.clone();
    let service = service_fn(move |req| {
        let (state, target) = (state.clone(), target.clone());
        async move { Ok::<_, Infallible>(pipeline::handle(state, target, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let limits = &state_for_kill.limits;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    let kill_switch = state_for_kill.kill_switch.clone();
    tokio::select! {
        served = builder.serve_connection(TokioIo::new(tls), service) => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "intercepted connection ended with an error");
            }
        }
        _ = kill_switch.blocked(&state_for_kill.agent.id) => {
            tracing::warn!(host = %target_host, "kill switch: intercepted connection closed");
        }
    }
}

async fn splice<IO>(mut agent: IO, mut upstream: TcpStream)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional(&mut agent, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}

fn connect_target(uri: &http::Uri) -> Option<Target> {
    let authority = uri.authority()?;
    let (host, port) = split_host_port(authority.as_str())?;
    Some(Target {
        scheme: Scheme::Https,
        host: normalize_host(host),
        port: port?,
    })
}

fn absolute_http_target(uri: &http::Uri) -> Option<Target> {
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let authority = uri.authority()?;
    let (host, port) = split_host_port(authority.as_str())?;
    Some(Target {
        scheme: Scheme::Http,
        host: normalize_host(host),
        port: port.unwrap_or(80),
    })
}

/// First-hop refusals are not requests to a destination yet, so they are logged here, not by the pipeline.
fn refuse(error: ProxyError) -> Response<Body> {
    let (status, code) = error.classify();
    tracing::info!(status = status.as_u16(), code, error = %error, "proxy request refused");
    error.response("-")
}
