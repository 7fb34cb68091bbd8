//! The transparent listener: connections an iptables REDIRECT sent here (`keyward iptables install`) from
//! clients that never heard of a proxy. The original destination comes from `SO_ORIGINAL_DST`; the first
//! bytes, peeked and not consumed, say what the connection is:
//! - TLS with SNI: handled as `CONNECT <SNI>:<original port>` would be (intercepted with a leaf for the SNI,
//!   or spliced when `unmatched` lets an unnamed host through);
//! - HTTP/1.x: each request goes to its `Host`, on the original port;
//! - anything else (including TLS without SNI): `non_http` decides: closed, or spliced to the original
//!   address under the destination guard.
//!
//! TLS and HTTP upstreams are dialled by name, resolved by Keyward, never at the original address: an agent
//! cannot pair a trusted name with an address of its choosing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::server::Acceptor;
use tokio::net::TcpStream;

use super::connect::{intercept_tunnel, serve_requests, splice, unmatched_tunnel, Held, TLS_HANDSHAKE};
use super::error::ProxyError;
use super::{Live, ProxyState, Scheme, Target, Unmatched};
use crate::listener::Slot;
use crate::route::{normalize_host, split_host_port, valid_host};
use crate::upstream::Reach;

/// `transparent:` in the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub non_http: NonHttp,
}

/// Connections on the transparent listener that are neither TLS with SNI nor HTTP/1.x.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NonHttp {
    /// Closed, logged and counted.
    #[default]
    Deny,
    /// Spliced to the original destination address, if the destination guard allows it: under
    /// `unmatched: tunnel_private` private-network addresses only; otherwise public addresses, and private
    /// ones with `unmatched_allow_private`. No credential, policy or audit applies.
    Tunnel,
}

/// The most bytes looked at before deciding: a ClientHello fits in one TLS record (16 KiB).
const MAX_PEEK: usize = 16 * 1024 + 5;

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
enum First {
    Tls { sni: Option<String> },
    Http,
    Other,
}

/// Serves one redirected connection until it closes.
pub async fn serve(live: Arc<Live>, stream: TcpStream, peer: SocketAddr, slot: Slot, settings: Settings) {
    let state = live.load();
    let held = Held::new(slot, &state);
    let original = match original_destination(&stream) {
        Ok(addr) => addr,
        Err(e) => {
            state.metrics.transparent_connection("unknown_destination");
            tracing::info!(%peer, error = %e, "transparent listener: no original destination (not redirected); closed");
            return;
        }
    };
    let first = match tokio::time::timeout(state.limits.header_read_timeout, sniff(&stream)).await {
        Ok(Ok(first)) => first,
        // Silent (a protocol where the server speaks first) or failing: not something Keyward can route.
        Ok(Err(_)) | Err(_) => First::Other,
    };
    match first {
        First::Tls { sni: Some(sni) } if valid_host(&normalize_host(&sni)) => {
            state.metrics.transparent_connection("tls");
            let target = Target {
                scheme: Scheme::Https,
                host: normalize_host(&sni),
                port: original.port(),
            };
            match unmatched_tunnel(&state, &target).await {
                Ok(Some(upstream)) => splice(stream, upstream).await,
                Ok(None) => intercept_tunnel(live, state, target, stream).await,
                Err(e) => tracing::info!(host = %target.host, error = %e, "transparent TLS connection refused"),
            }
            drop(held);
        }
        First::Http => {
            state.metrics.transparent_connection("http");
            let port = original.port();
            let label = format!("{original} (plain HTTP)");
            serve_requests(live, state, TokioIo::new(stream), &label, move |req| {
                host_target(req, port)
            })
            .await;
            drop(held);
        }
        First::Tls { .. } | First::Other => non_http(&state, stream, original, settings.non_http).await,
    }
}

/// The destination of a plain-HTTP request on the transparent path: its `Host`, on the port the agent dialled.
fn host_target(req: &Request<Incoming>, port: u16) -> Result<Arc<Target>, ProxyError> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .ok_or(ProxyError::BadRequest("a request without Host cannot be routed"))?;
    let (name, _) = split_host_port(host).ok_or(ProxyError::BadRequest("the Host header is not host[:port]"))?;
    let name = normalize_host(name);
    if !valid_host(&name) {
        return Err(ProxyError::BadRequest("the Host header is not host[:port]"));
    }
    Ok(Arc::new(Target {
        scheme: Scheme::Http,
        host: name,
        port,
    }))
}

async fn non_http(state: &ProxyState, stream: TcpStream, original: SocketAddr, mode: NonHttp) {
    match mode {
        NonHttp::Deny => {
            state.metrics.transparent_connection("non_http_denied");
            tracing::info!(destination = %original, "transparent listener: not TLS with SNI nor HTTP/1.x; closed (transparent.non_http: deny)");
        }
        NonHttp::Tunnel => {
            let reach = match state.unmatched {
                Unmatched::TunnelPrivate => Reach::Internal,
                Unmatched::Deny | Unmatched::Tunnel => Reach::allowing_private(state.unmatched_allow_private),
            };
            match state
                .upstream
                .connect(&original.ip().to_string(), original.port(), reach)
                .await
            {
                Ok(upstream) => {
                    state.metrics.transparent_connection("non_http_tunnelled");
                    tracing::info!(destination = %original, "transparent listener: tunnelling a non-HTTP connection");
                    splice(stream, upstream).await;
                }
                Err(e) => {
                    state.metrics.transparent_connection("non_http_denied");
                    tracing::info!(destination = %original, error = %e, "transparent listener: non-HTTP tunnel refused");
                }
            }
        }
    }
}

/// Where the agent meant to connect before iptables redirected it.
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let addr = if stream.local_addr()?.is_ipv6() {
        socket.original_dst_v6()?
    } else {
        socket.original_dst_v4()?
    };
    addr.as_socket()
        .ok_or_else(|| std::io::Error::other("SO_ORIGINAL_DST gave no IP address"))
}

/// Peeks at the connection's first bytes until they say what it is. Peeking returns at once while earlier
/// bytes are unread, so a partial ClientHello or request line is re-read after a short pause; the caller
/// bounds the whole wait.
async fn sniff(stream: &TcpStream) -> std::io::Result<First> {
    let mut buf = vec![0u8; MAX_PEEK];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(First::Other);
        }
        if let Some(first) = classify(&buf[..n]) {
            return Ok(first);
        }
        if n == buf.len() {
            return Ok(First::Other);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `None` while the bytes so far could still become a ClientHello or a request line.
fn classify(bytes: &[u8]) -> Option<First> {
    match bytes.first()? {
        &TLS_HANDSHAKE => client_hello_sni(bytes),
        b'A'..=b'Z' => request_line(bytes),
        _ => Some(First::Other),
    }
}

/// Reads a ClientHello from a copy of the bytes with rustls' own parser; the connection's bytes stay unread
/// for the real handshake (or for a splice).
fn client_hello_sni(bytes: &[u8]) -> Option<First> {
    let mut acceptor = Acceptor::default();
    if acceptor.read_tls(&mut &bytes[..]).is_err() {
        return Some(First::Other);
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Some(First::Tls {
            sni: accepted.client_hello().server_name().map(str::to_string),
        }),
        Ok(None) => None,
        Err(_) => Some(First::Other),
    }
}

/// `METHOD SP target SP HTTP/1.x` as the first line.
fn request_line(bytes: &[u8]) -> Option<First> {
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        let plausible = bytes.iter().all(|&b| b.is_ascii_graphic() || b == b' ');
        return (!plausible).then_some(First::Other);
    };
    let line = std::str::from_utf8(&bytes[..end]).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let is_http = matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(method), Some(target), Some("HTTP/1.1" | "HTTP/1.0"), None)
            if !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()) && !target.is_empty()
    );
    Some(if is_http { First::Http } else { First::Other })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: a\r\n"), Some(First::Http));
        assert_eq!(classify(b"POST /v1/x HTTP/1.0\n"), Some(First::Http));
        assert_eq!(classify(b"GET / HT"), None, "more bytes may make it HTTP");
        assert_eq!(classify(b"GET / HTTP/2.0\r\n"), Some(First::Other));
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), Some(First::Other));
        assert_eq!(classify(b"\x00\x00\x00\x08"), Some(First::Other));
        assert_eq!(classify(b"GET /\x01"), Some(First::Other));
    }

    #[test]
    fn client_hellos() {
        let hello = |name: Option<&str>| {
            crate::tls::install_default_provider();
            let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            let server = match name {
                Some(n) => rustls::pki_types::ServerName::try_from(n.to_string()).unwrap(),
                None => {
                    rustls::pki_types::ServerName::IpAddress("10.0.0.1".parse::<std::net::IpAddr>().unwrap().into())
                }
            };
            let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
            let mut out = Vec::new();
            conn.write_tls(&mut out).unwrap();
            out
        };
        let with_sni = hello(Some("api.openai.com"));
        assert_eq!(
            classify(&with_sni),
            Some(First::Tls {
                sni: Some("api.openai.com".into())
            })
        );
        assert_eq!(classify(&with_sni[..20]), None, "a partial ClientHello waits for more");
        assert_eq!(classify(&hello(None)), Some(First::Tls { sni: None }));
    }
}
