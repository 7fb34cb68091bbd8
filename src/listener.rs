//! Accept loops and draining. The server entry takes an already-bound listener and a shutdown signal, so tests
//! and `run` alike can bind port 0 and stop the server cleanly. A connection cap turns floods away at accept,
//! and the drain counter lets SIGTERM wait for in-flight requests instead of cutting them.

use std::future::Future;
use std::net::SocketAddr;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

/// A connection's place under the cap. The handler keeps it for as long as the connection lives in any form:
/// a CONNECT tunnel outlives the first-hop connection that opened it, and released its place early.
pub type Slot = tokio::sync::OwnedSemaphorePermit;

/// Places for `max_connections` open connections; listeners that share one share the cap, so a second
/// listener is not a way around it.
pub fn cap(max_connections: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max_connections))
}

/// Accepts until `shutdown` flips to true, handing each connection and its [`Slot`] to `handler` on its own
/// task. With every place of `slots` taken, new connections are closed at once.
pub async fn serve<H, F>(listener: TcpListener, mut shutdown: watch::Receiver<bool>, slots: Arc<Semaphore>, handler: H)
where
    H: Fn(TcpStream, SocketAddr, Slot) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    // Streamed responses (SSE) are written as they come: small writes must not wait for the
                    // agent's delayed ACK (Nagle), which measured 40 ms on the first event.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                    tokio::spawn(handler(stream, peer, slot));
                }
                Err(_) => {
                    tracing::warn!(%peer, "connection limit reached (limits.max_connections); connection closed");
                    drop(stream);
                }
            },
            Err(e) => {
                // Out of file descriptors and similar: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Requests in flight, so that shutdown can wait for them.
#[derive(Default)]
pub struct Drain {
    active: AtomicUsize,
    idle: Notify,
}

/// One request in flight; dropped when its response body is done.
pub struct DrainGuard(Arc<Drain>);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    pub fn enter(self: &Arc<Self>) -> DrainGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        DrainGuard(self.clone())
    }

    /// Waits until no request is in flight, or `grace` has passed; returns how many were still running.
    pub async fn wait(&self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.idle.notified();
            let active = self.active.load(Ordering::Acquire);
            if active == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.active.load(Ordering::Acquire);
            }
        }
    }
}
