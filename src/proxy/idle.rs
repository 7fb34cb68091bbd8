//! Idle intercepted connections are closed. HTTP/2 keeps a silent connection alive with pings (which the
//! agent's client answers), and an agent's connection pool would otherwise hold the connection, and its place
//! under `limits.max_connections`, for good. A connection is idle while no request is in flight on it; a
//! request counts until its response body is done.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use crate::upstream::{Body, BoxError};

/// One connection's requests in flight and when the last one ended.
pub struct Idle {
    started: Instant,
    active: AtomicUsize,
    /// Milliseconds from `started` to the end of the last request (or the connection's start).
    last_ms: AtomicU64,
}

impl Idle {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Counts a request as in flight until the returned guard is dropped (with its response body).
    pub fn enter(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `limit`.
    pub async fn expired(&self, limit: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
            let due = last + limit;
            if self.active.load(Ordering::Acquire) == 0 && Instant::now() >= due {
                return;
            }
            // While a request is in flight, look again a whole period later.
            tokio::time::sleep_until(due.max(Instant::now() + limit / 4)).await;
        }
    }
}

/// In a request's extensions: the connection it arrived on, so that what outlives the response (a WebSocket
/// over HTTP/2 shares its connection with other streams) can count itself in flight there.
#[derive(Clone)]
pub struct OnConnection(pub Arc<Idle>);

/// A request in flight on its connection.
pub struct Active(Arc<Idle>);

impl Drop for Active {
    fn drop(&mut self) {
        let idle = &self.0;
        let now = idle.started.elapsed().as_millis() as u64;
        idle.last_ms.store(now, Ordering::Release);
        idle.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
pub struct Counted {
    inner: Body,
    _active: Active,
}

impl Counted {
    pub fn wrap(inner: Body, active: Active) -> Body {
        http_body_util::BodyExt::boxed_unsync(Self { inner, _active: active })
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_only_after_the_last_request_ends() {
        let limit = Duration::from_millis(200);
        let idle = Idle::new();
        let active = idle.enter();
        let expired = tokio::time::timeout(Duration::from_millis(600), idle.expired(limit));
        assert!(expired.await.is_err(), "a request in flight keeps the connection");
        drop(active);
        let started = Instant::now();
        idle.expired(limit).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(1),
            "{took:?}"
        );
    }
}
