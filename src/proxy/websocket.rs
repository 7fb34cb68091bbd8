//! WebSocket: the opening handshake is a request like any other (route, binding, policy, placeholders
//! swapped in its headers and query), sent upstream as an HTTP/1.1 upgrade; after the 101 both sides are
//! relayed message by message through a WebSocket codec, so every message can be checked:
//! - upstream → agent: text, binary, ping/pong payloads and close reasons are scrubbed of real secret values,
//!   as response bodies are;
//! - agent → upstream: a message carrying a real secret trips the outbound canary: both sides are closed with
//!   1008 and nothing of it is sent.
//!
//! No extension is negotiated (`Sec-WebSocket-Extensions` is removed from the offer): a compressed
//! (permessage-deflate) message could not be scrubbed. An HTTP/2 agent may open the socket with an extended
//! CONNECT (RFC 8441); upstream it is the same HTTP/1.1 upgrade, with a key of Keyward's own. Scrubbing is per
//! message: tungstenite reassembles fragmented messages before they are looked at.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY};
use http::header::{SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::ctx::Completion;
use super::error::ProxyError;
use super::ProxyState;
use crate::listener::DrainGuard;
use crate::scrub::Scrubber;
use crate::upstream::Body;

/// How the agent opened the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET` with `Upgrade: websocket`, answered 101.
    Http1,
    /// HTTP/2 extended CONNECT with `:protocol: websocket`, answered 200.
    H2,
}

/// An agent's WebSocket opening handshake, with its side of the upgrade still pending.
pub struct Handshake {
    pub kind: Kind,
    agent: OnUpgrade,
    /// Keeps the agent's connection from being closed as idle while the socket is open.
    _active: Option<super::idle::Active>,
}

impl Handshake {
    /// The handshake, when `req` opens a WebSocket; its pending upgrade is taken out of the request.
    pub fn take(req: &mut Request<Incoming>) -> Option<Self> {
        let kind = if req.version() == Version::HTTP_2 && req.method() == Method::CONNECT {
            let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
            protocol
                .as_str()
                .eq_ignore_ascii_case("websocket")
                .then_some(Kind::H2)?
        } else if req.method() == Method::GET
            && has_token(req.headers(), UPGRADE, "websocket")
            && has_token(req.headers(), CONNECTION, "upgrade")
        {
            Kind::Http1
        } else {
            return None;
        };
        let active = req.extensions().get::<super::idle::OnConnection>().map(|c| c.0.enter());
        Some(Self {
            kind,
            agent: hyper::upgrade::on(req),
            _active: active,
        })
    }
}

fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The handshake as every later phase sees it: a `GET` (an extended CONNECT becomes one, with a key of
/// Keyward's own), without extension offers.
pub fn as_upgrade_request(kind: Kind, parts: &mut http::request::Parts) {
    parts.headers.remove(SEC_WEBSOCKET_EXTENSIONS);
    if kind == Kind::H2 {
        let mut key = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .expect("the system random source failed");
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        parts.method = Method::GET;
        parts.headers.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(&key).expect("base64 is a header value"),
        );
        parts
            .headers
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
}

/// Put back after hop-by-hop stripping, which removes them from every other request.
pub fn restore_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// The upstream's side of an accepted socket, and how the relay treats its messages.
pub struct Relay {
    upstream: OnUpgrade,
    session: Session,
}

/// What the relay needs besides the two sockets.
struct Session {
    route: String,
    /// The route's response scrubber: upstream messages are scrubbed with it.
    scrubber: Option<Arc<Scrubber>>,
    /// Every credential's values: an agent message with one closes the socket.
    canary: Option<Arc<Scrubber>>,
    /// The route's `timeouts.idle`: no message either way for this long closes the socket.
    idle: Option<Duration>,
    max_message: usize,
    /// The route's in-flight place, held for the socket's life.
    _permit: Option<OwnedSemaphorePermit>,
}

/// The upstream's 101 turned into the agent's answer (101 for HTTP/1.1, 200 for an extended CONNECT) and
/// the relay to run once both sides have upgraded. An upstream that negotiated an extension or answered with
/// a wrong accept key is refused: its frames would not be what Keyward can read.
#[allow(clippy::too_many_arguments)]
pub fn accept(
    kind: Kind,
    sent_key: Option<&HeaderValue>,
    route: String,
    mut response: Response<Incoming>,
    scrubber: Option<Arc<Scrubber>>,
    canary: Option<Arc<Scrubber>>,
    idle: Option<Duration>,
    max_message: usize,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<(Response<Body>, Relay), ProxyError> {
    let headers = response.headers();
    if headers.contains_key(SEC_WEBSOCKET_EXTENSIONS) {
        return Err(ProxyError::WebSocket(
            "the upstream negotiated a WebSocket extension nobody offered",
        ));
    }
    let accept = headers.get(SEC_WEBSOCKET_ACCEPT).cloned();
    if kind == Kind::H2
        && accept.as_ref().map(HeaderValue::as_bytes) != sent_key.map(|k| accept_key(k.as_bytes())).as_deref()
    {
        return Err(ProxyError::WebSocket(
            "the upstream's Sec-WebSocket-Accept does not match the key sent",
        ));
    }
    let protocol = headers.get(SEC_WEBSOCKET_PROTOCOL).cloned();
    let upstream = hyper::upgrade::on(&mut response);
    let mut agent = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    if kind == Kind::Http1 {
        *agent.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = agent.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Some(accept) = accept {
            h.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
    }
    if let Some(protocol) = protocol {
        agent.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let relay = Relay {
        upstream,
        session: Session {
            route,
            scrubber,
            canary,
            idle,
            max_message,
            _permit: permit,
        },
    };
    Ok((agent, relay))
}

/// `base64(SHA-1(key + GUID))` (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD
        .encode(ctx.finish())
        .into_bytes()
}

/// What the audit line and the span say about a socket when it closes.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub close_code: Option<u16>,
    /// Who or what ended it: agent, upstream, secret_in_message, blocked, idle, error.
    pub closed_by: &'static str,
    pub duration_ms: f64,
}

impl Relay {
    /// Relays until either side closes, then writes the request's record (kept open until now).
    pub async fn run(
        self,
        handshake: Handshake,
        mut completion: Completion,
        drain: DrainGuard,
        state: Arc<ProxyState>,
    ) {
        let started = Instant::now();
        let (agent, upstream) = match tokio::join!(handshake.agent, self.upstream) {
            (Ok(agent), Ok(upstream)) => (agent, upstream),
            (agent, upstream) => {
                tracing::info!(
                    agent_ok = agent.is_ok(),
                    upstream_ok = upstream.is_ok(),
                    "WebSocket upgrade did not complete"
                );
                return;
            }
        };
        // Small buffers: an open socket costs its buffers, and a thousand idle sockets must stay cheap.
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(self.session.max_message.saturating_mul(2).max(64 * 1024))
            .max_message_size(Some(self.session.max_message))
            .max_frame_size(Some(self.session.max_message));
        let agent = WebSocketStream::from_raw_socket(TokioIo::new(agent), Role::Server, Some(config)).await;
        let upstream = WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(config)).await;
        let mut summary = self.session.relay(agent, upstream, &state).await;
        summary.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(?summary, "WebSocket closed");
        completion.websocket_closed(summary);
        drop(completion);
        drop(drain);
    }
}

impl Session {
    async fn relay<A, U>(
        &self,
        mut agent: WebSocketStream<A>,
        mut upstream: WebSocketStream<U>,
        state: &ProxyState,
    ) -> Summary
    where
        A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut s = Summary::default();
        let agent_id = state.agent.id.clone();
        let (code, by) = loop {
            let idle = async {
                match self.idle {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = agent.next() => match message {
                    Some(Ok(message)) => {
                        if self.canary.as_deref().is_some_and(|c| carries(c, &message)) {
                            state.metrics.secret_in_request();
                            tracing::warn!(agent_id = %agent_id, "a WebSocket message from the agent carried a real secret value; socket closed with 1008");
                            break (CloseCode::Policy, "secret_in_message");
                        }
                        if let Message::Close(frame) = &message {
                            let code = frame.as_ref().map(|f| f.code).unwrap_or(CloseCode::Status);
                            let _ = upstream.send(message).await;
                            s.close_code = Some(code.into());
                            s.closed_by = "agent";
                            close_quietly(&mut agent, None).await;
                            close_quietly(&mut upstream, None).await;
                            return s;
                        }
                        s.count_in(&message);
                        if upstream.send(message).await.is_err() {
                            break (CloseCode::Away, "upstream");
                        }
                    }
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "WebSocket message from the agent refused");
                        break (code_for(&e), "error");
                    }
                    None => break (CloseCode::Away, "agent"),
                },
                message = upstream.next() => match message {
                    Some(Ok(message)) => {
                        let message = match &self.scrubber {
                            Some(scrubber) => scrub(scrubber, message, state, &self.route),
                            None => message,
                        };
                        if let Message::Close(frame) = &message {
                            let code = frame.as_ref().map(|f| f.code).unwrap_or(CloseCode::Status);
                            let _ = agent.send(message).await;
                            s.close_code = Some(code.into());
                            s.closed_by = "upstream";
                            close_quietly(&mut upstream, None).await;
                            close_quietly(&mut agent, None).await;
                            return s;
                        }
                        s.count_out(&message);
                        if agent.send(message).await.is_err() {
                            break (CloseCode::Away, "agent");
                        }
                    }
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "WebSocket message from the upstream refused");
                        break (code_for(&e), "error");
                    }
                    None => break (CloseCode::Away, "upstream"),
                },
                _ = state.kill_switch.blocked(&agent_id) => {
                    tracing::warn!(agent_id = %agent_id, "kill switch: WebSocket closed");
                    break (CloseCode::Policy, "blocked");
                }
                _ = idle => break (CloseCode::Away, "idle"),
            }
        };
        let reason = match by {
            "secret_in_message" => "keyward: a real secret value in a message",
            "blocked" => "keyward: agent blocked",
            "idle" => "keyward: idle timeout",
            _ => "",
        };
        let frame = || {
            Some(CloseFrame {
                code,
                reason: reason.into(),
            })
        };
        close_quietly(&mut agent, frame()).await;
        close_quietly(&mut upstream, frame()).await;
        s.close_code = Some(code.into());
        s.closed_by = by;
        s
    }
}

impl Summary {
    fn count_in(&mut self, m: &Message) {
        if let Some(n) = data_len(m) {
            self.messages_in += 1;
            self.bytes_in += n;
        }
    }

    fn count_out(&mut self, m: &Message) {
        if let Some(n) = data_len(m) {
            self.messages_out += 1;
            self.bytes_out += n;
        }
    }
}

fn data_len(m: &Message) -> Option<u64> {
    match m {
        Message::Text(t) => Some(t.len() as u64),
        Message::Binary(b) => Some(b.len() as u64),
        _ => None,
    }
}

fn code_for(e: &tokio_tungstenite::tungstenite::Error) -> CloseCode {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    match e {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => CloseCode::Size,
        Error::Protocol(_) | Error::Utf8(_) => CloseCode::Protocol,
        _ => CloseCode::Away,
    }
}

/// Sends a close (or completes the handshake the peer started) and flushes, bounded: a peer that has gone
/// away must not hold the task.
async fn close_quietly<S>(ws: &mut WebSocketStream<S>, frame: Option<CloseFrame>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(frame)).await;
}

/// Whether any part of an agent's message that reaches the upstream holds a real secret value.
fn carries(canary: &Scrubber, m: &Message) -> bool {
    match m {
        Message::Text(t) => canary.found_in(t.as_bytes()),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => canary.found_in(b),
        Message::Close(Some(f)) => canary.found_in(f.reason.as_bytes()),
        Message::Close(None) | Message::Frame(_) => false,
    }
}

/// An upstream message with every real secret value replaced by its placeholder. Control payloads are
/// limited to 125 bytes: a scrubbed one that grew past that is emptied.
fn scrub(scrubber: &Scrubber, m: Message, state: &ProxyState, route: &str) -> Message {
    let replace = |bytes: &[u8]| {
        let (out, n) = scrubber.replace_all(bytes);
        (n > 0).then_some(out)
    };
    let scrubbed = match &m {
        Message::Text(t) => {
            replace(t.as_bytes()).map(|out| Message::Text(String::from_utf8_lossy(&out).into_owned().into()))
        }
        Message::Binary(b) => replace(b).map(|out| Message::Binary(out.into())),
        Message::Ping(b) => replace(b).map(|out| Message::Ping(control(out))),
        Message::Pong(b) => replace(b).map(|out| Message::Pong(control(out))),
        Message::Close(Some(f)) => replace(f.reason.as_bytes()).map(|out| {
            let reason = String::from_utf8_lossy(&control(out)).into_owned();
            Message::Close(Some(CloseFrame {
                code: f.code,
                reason: reason.into(),
            }))
        }),
        Message::Close(None) | Message::Frame(_) => None,
    };
    match scrubbed {
        Some(clean) => {
            state.metrics.scrubbed(route, "websocket_message", 1);
            clean
        }
        None => m,
    }
}

fn control(out: Vec<u8>) -> bytes::Bytes {
    if out.len() > 123 {
        bytes::Bytes::new()
    } else {
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc_6455() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
