//! The agent's request body, and how the end of an exchange waits for it.
//!
//! An exchange can be over before the agent has sent its whole body, and HTTP/2 clients disagree on what the
//! proxy should do then:
//! - Refused early (a denial, a 429): dropping the body at once resets the stream before the JSON refusal is out,
//!   and clients such as curl report the reset instead. So the rest of a small body is read in the background.
//! - Answered early: an upstream may answer before reading the body (nginx's `return 200` does, then discards
//!   it). curl 7.88 stops sending once the response has ended and spins at full CPU; httpx, told to stop with
//!   RST_STREAM(NO_ERROR) as RFC 9113 §8.1 allows, waits for flow-control window until its timeout. What every
//!   client handles is a response that ends after the upload does. So over HTTP/2 the response's end waits while
//!   the agent keeps sending (a stalled agent is given up on after [`UPLOAD_IDLE`]).
//!
//! Once an HTTP/2 response has ended, the body is let go at once, and HTTP/2 tells the agent to stop sending.
//! An HTTP/1 body keeps flowing to its end (see `Shared::h2`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

/// Unread body left when a request is refused early is read and discarded, up to this much and this long.
const DISCARD_LIMIT: usize = 64 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(1);

/// How long the end of an HTTP/2 response waits for an agent that has stopped sending its body.
const UPLOAD_IDLE: Duration = Duration::from_secs(2);

/// What both sides of one exchange know of the agent's request body.
#[derive(Clone)]
pub struct Upload(Arc<Shared>);

struct Shared {
    /// The body has ended, failed, or been given up on.
    done: CancellationToken,
    /// The agent has the whole response (or is gone).
    answered: CancellationToken,
    received: AtomicU64,
    /// HTTP/2: the response's end waits for the body, and the body is let go once the response has ended.
    /// HTTP/1 has no way to tell the agent to stop sending short of closing the connection under its upload, so
    /// there the body keeps flowing to its end.
    h2: bool,
}

impl Upload {
    fn finish(&self) {
        self.0.done.cancel();
    }
}

/// The agent's request body on its way upstream.
pub struct AgentBody {
    inner: Option<Incoming>,
    upload: Upload,
    answered: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl AgentBody {
    pub fn new(body: Incoming, h2: bool) -> (Self, Upload) {
        let upload = Upload(Arc::new(Shared {
            done: CancellationToken::new(),
            answered: CancellationToken::new(),
            received: AtomicU64::new(0),
            h2,
        }));
        if body.is_end_stream() {
            upload.finish();
        }
        let body = Self {
            inner: Some(body),
            upload: upload.clone(),
            answered: None,
        };
        (body, upload)
    }
}

impl HttpBody for AgentBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(body) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let shared = &this.upload.0;
        if !(shared.h2 && shared.answered.is_cancelled()) {
            let polled = Pin::new(&mut *body).poll_frame(cx);
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, Bytes::len);
                    shared.received.fetch_add(n as u64, Ordering::Relaxed);
                    if body.is_end_stream() {
                        shared.done.cancel();
                    }
                    return polled;
                }
                Poll::Ready(_) => {
                    shared.done.cancel();
                    return polled;
                }
                Poll::Pending if !shared.h2 => return Poll::Pending,
                Poll::Pending => {}
            }
            let token = shared.answered.clone();
            let answered = this.answered.get_or_insert_with(|| Box::pin(token.cancelled_owned()));
            if answered.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        this.inner = None;
        this.upload.finish();
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(HttpBody::size_hint).unwrap_or_default()
    }
}

impl Drop for AgentBody {
    fn drop(&mut self) {
        let unfinished = self.inner.take().filter(|b| !b.is_end_stream());
        let runtime = tokio::runtime::Handle::try_current();
        let (Some(mut body), Ok(runtime)) = (unfinished, runtime) else {
            self.upload.finish();
            return;
        };
        if self.upload.0.answered.is_cancelled() {
            self.upload.finish();
            return;
        }
        let upload = self.upload.clone();
        runtime.spawn(async move {
            let answered = upload.0.answered.clone();
            let mut read = 0;
            let discard = async {
                while read <= DISCARD_LIMIT {
                    match body.frame().await {
                        Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                        _ => return,
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::timeout(DISCARD_TIME, discard) => {}
                _ = answered.cancelled() => {}
            }
            // Let the response end first, so that letting the body go tells the agent "no error", not "cancel".
            upload.finish();
            let _ = tokio::time::timeout(DISCARD_TIME, answered.cancelled()).await;
        });
    }
}

/// The response side: marks the exchange answered when dropped and, over HTTP/2, holds the end of the response
/// while the agent is still sending its body.
pub struct Tail {
    upload: Upload,
    wait: bool,
    done: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    idle: Option<Pin<Box<Sleep>>>,
    seen: u64,
    _answered: DropGuard,
}

impl Tail {
    pub fn new(upload: Upload) -> Self {
        let answered = upload.0.answered.clone().drop_guard();
        Self {
            wait: upload.0.h2,
            upload,
            done: None,
            idle: None,
            seen: 0,
            _answered: answered,
        }
    }

    /// Whether the response may end now.
    pub fn may_end(&self) -> bool {
        !self.wait || self.upload.0.done.is_cancelled()
    }

    /// Ready when the upload is done, or the agent has sent nothing for [`UPLOAD_IDLE`].
    pub fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.may_end() {
            return Poll::Ready(());
        }
        let token = self.upload.0.done.clone();
        let done = self.done.get_or_insert_with(|| Box::pin(token.cancelled_owned()));
        if done.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        loop {
            let idle = self
                .idle
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(UPLOAD_IDLE)));
            if idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let received = self.upload.0.received.load(Ordering::Relaxed);
            if received == self.seen {
                self.wait = false;
                return Poll::Ready(());
            }
            self.seen = received;
            idle.as_mut().reset(tokio::time::Instant::now() + UPLOAD_IDLE);
        }
    }
}
