//! Reading just enough of a request body for the policy to see it, without giving up streaming.
//!
//! A JSON body within the limit is collected, parsed, and replayed upstream from memory. Anything larger, or
//! not JSON, is forwarded as a stream; if it turned out larger only while reading, the bytes already read are
//! sent first and the rest follows from the agent's connection.

use std::pin::Pin;
use std::task::{Context, Poll};

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

impl From<Incoming> for Outgoing {
    /// An empty body counts as buffered: a GET can always be replayed.
    fn from(body: Incoming) -> Self {
        if body.is_end_stream() {
            Self::Buffered(Bytes::new())
        } else {
            Self::Streaming(body.map_err(BoxError::from).boxed_unsync())
        }
    }
}

impl Outgoing {
    pub fn replayable(&self) -> bool {
        matches!(self, Self::Buffered(_))
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
pub async fn peek(body: Incoming, headers: &HeaderMap, limit: u64) -> Result<(Outgoing, PolicyBody), hyper::Error> {
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
    let mut body = body;
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            read.extend_from_slice(data);
        }
        if read.len() as u64 > limit {
            let forward = Prefixed {
                prefix: Some(read.freeze()),
                rest: body,
            };
            return Ok((
                Outgoing::Streaming(forward.boxed_unsync()),
                PolicyBody::Unparsed { size: declared },
            ));
        }
    }
    let bytes = read.freeze();
    let seen = match serde_json::from_slice(&bytes) {
        Ok(value) => PolicyBody::Json(value),
        Err(_) => PolicyBody::Unparsed {
            size: Some(bytes.len() as u64),
        },
    };
    Ok((Outgoing::Buffered(bytes), seen))
}

/// Bytes already read, then the rest of the agent's body.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Incoming,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx).map_err(BoxError::from)
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
