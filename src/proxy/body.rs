//! Reading just enough of a request body for the policy to see it, without giving up streaming.
//!
//! A JSON body within the limit is collected, parsed, and replayed upstream from memory. Anything larger, or
//! not JSON, is forwarded as a stream; if it turned out larger only while reading, the bytes already read are
//! sent first and the rest follows from the agent's connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::ctx::Completion;
use super::upload::{AgentBody, Tail};
use crate::listener::DrainGuard;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::policy::input::Body as PolicyBody;
use crate::upstream::{Body, BoxError};

/// A request body on its way upstream: in memory (so it can be sent again) or streamed from the agent.
pub enum Outgoing {
    Buffered(Bytes),
    Streaming(Body),
}

impl From<AgentBody> for Outgoing {
    /// An empty body counts as buffered: a GET can always be replayed.
    fn from(body: AgentBody) -> Self {
        if body.is_end_stream() {
            Self::Buffered(Bytes::new())
        } else {
            Self::Streaming(body.map_err(BoxError::from).boxed_unsync())
        }
    }
}

impl Outgoing {
    /// Keeps the body in memory when it fits in `limit` bytes, so that it can be replayed; a larger one keeps
    /// streaming (what was read so far goes first).
    pub async fn buffered_up_to(self, headers: &HeaderMap, limit: u64) -> Result<Self, BoxError> {
        let Self::Streaming(body) = self else { return Ok(self) };
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Ok(Self::Streaming(body));
        }
        Ok(match read_up_to(body, limit).await? {
            Ok(bytes) => Self::Buffered(bytes),
            Err(prefixed) => Self::Streaming(prefixed.boxed_unsync()),
        })
    }

    /// The body, when it is in memory.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Buffered(bytes) => Some(bytes),
            Self::Streaming(_) => None,
        }
    }

    /// The body, when it is in memory, as a shared handle (no copy).
    pub fn shared(&self) -> Option<Bytes> {
        match self {
            Self::Buffered(bytes) => Some(bytes.clone()),
            Self::Streaming(_) => None,
        }
    }

    /// The body to send now, and the same bytes again for a second attempt when they are in memory.
    pub fn into_parts(self) -> (Body, Option<Bytes>) {
        match self {
            Self::Buffered(bytes) => (
                Full::new(bytes.clone()).map_err(|never| match never {}).boxed_unsync(),
                Some(bytes),
            ),
            Self::Streaming(body) => (body, None),
        }
    }
}

/// Returns the body to forward and what the policy may see of it.
pub async fn peek(body: AgentBody, headers: &HeaderMap, limit: u64) -> Result<(Outgoing, PolicyBody), hyper::Error> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"));
    if !is_json || declared.is_some_and(|n| n > limit) || body.is_end_stream() {
        let size = if body.is_end_stream() { Some(0) } else { declared };
        return Ok((Outgoing::from(body), PolicyBody::Unparsed { size }));
    }
    let bytes = match read_up_to(body, limit).await? {
        Ok(bytes) => bytes,
        Err(prefixed) => {
            return Ok((
                Outgoing::Streaming(prefixed.map_err(Into::into).boxed_unsync()),
                PolicyBody::Unparsed { size: declared },
            ))
        }
    };
    let seen = PolicyBody::parse(&bytes);
    Ok((Outgoing::Buffered(bytes), seen))
}

/// The whole body if it ends within `limit` bytes; otherwise what was read so far, chained to the rest.
async fn read_up_to<B>(mut body: B, limit: u64) -> Result<Result<Bytes, Prefixed<B>>, B::Error>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            read.extend_from_slice(data);
        }
        if read.len() as u64 > limit {
            return Ok(Err(Prefixed {
                prefix: Some(read.freeze()),
                rest: body,
            }));
        }
    }
    Ok(Ok(read.freeze()))
}

/// Bytes already read, then the rest of the agent's body.
struct Prefixed<B> {
    prefix: Option<Bytes>,
    rest: B,
}

impl<B> HttpBody for Prefixed<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        // Raise the upper bound first: `set_lower` panics if it would pass the upper bound.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + extra);
        }
        hint.set_lower(hint.lower() + extra);
        hint
    }
}

/// The upstream's response body on its way to the agent: enforces the route's idle limit between chunks (so a
/// stalled stream ends while a chatty SSE stream runs for as long as it likes), and holds the route's
/// concurrency slot until the body is done.
pub struct Tracked {
    inner: Incoming,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    _slot: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream idle for over {0:?} between body chunks")]
struct IdleTimeout(Duration);

impl Tracked {
    pub fn new(inner: Incoming, idle: Option<Duration>, slot: Option<OwnedSemaphorePermit>) -> Self {
        let idle = idle.map(|d| (d, Box::pin(tokio::time::sleep(d))));
        Self {
            inner,
            idle,
            _slot: slot,
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some((limit, timer)) = self.idle.as_mut() {
                    timer.as_mut().reset(tokio::time::Instant::now() + *limit);
                }
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                let Some((limit, timer)) = self.idle.as_mut() else {
                    return Poll::Pending;
                };
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                tracing::info!(
                    idle_ms = limit.as_millis() as u64,
                    "upstream response stalled; closing it"
                );
                Poll::Ready(Some(Err(Box::new(IdleTimeout(*limit)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body on its way to the agent. It keeps the request counted as in flight, counts the bytes,
/// and when done or dropped finishes the request's record (audit line, span end).
pub struct Held {
    inner: Body,
    inner_ended: bool,
    // Declared before the drain guard, so the record is written before shutdown can see the request done.
    completion: Completion,
    _drain: DrainGuard,
    tail: Tail,
}

impl Held {
    pub fn new(inner: Body, drain: DrainGuard, completion: Completion, tail: Tail) -> Self {
        Self {
            inner,
            inner_ended: false,
            _drain: drain,
            completion,
            tail,
        }
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.inner_ended {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(None) => self.inner_ended = true,
                polled => {
                    if let Poll::Ready(Some(Ok(frame))) = &polled {
                        if let Some(data) = frame.data_ref() {
                            self.completion.bytes_out += data.len() as u64;
                        }
                    }
                    return polled;
                }
            }
        }
        self.tail.poll_end(cx).map(|()| None)
    }

    fn is_end_stream(&self) -> bool {
        (self.inner_ended || self.inner.is_end_stream()) && self.tail.may_end()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts the data bytes of `body` into `total` as they pass.
pub fn counted(body: Body, total: Arc<AtomicU64>) -> Body {
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            total.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    })
    .boxed_unsync()
}
