//! The span export queue. Ending a span only tries to put it on a bounded channel: when the collector is
//! slow or down, spans past the bound are dropped and counted, and requests never wait on telemetry.
//! A task drains the channel in batches, every `flush_interval` or as soon as a full batch waits.
//! The queue is bounded by count and by estimated bytes ([`MAX_QUEUE_BYTES`]): spans carry paths and user ids,
//! and a count alone let large ones hold hundreds of megabytes behind a slow collector.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot, Notify};

use super::metrics::Metrics;

/// Estimated bytes of spans waiting in the queue, past which new spans are dropped.
pub const MAX_QUEUE_BYTES: usize = 16 * 1024 * 1024;

enum Message {
    /// A span and its estimated size.
    Span(Box<SpanData>, usize),
    Flush(oneshot::Sender<()>),
}

/// Memory a span takes, roughly: its fixed part and the text of its attributes and events.
fn estimate(span: &SpanData) -> usize {
    let attributes: usize = span
        .attributes
        .iter()
        .map(|kv| kv.key.as_str().len() + kv.value.as_str().len() + 32)
        .sum();
    let events: usize = span.events.iter().map(|e| e.name.len() + 64).sum();
    512 + span.name.len() + attributes + events
}

/// The queue's bounds and pace (from the trace settings).
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub max_queue: usize,
    pub max_batch: usize,
    pub flush_interval: Duration,
}

pub struct QueueProcessor {
    queue: mpsc::Sender<Message>,
    /// Wakes the export task early when a full batch is waiting. Waking it per span cost a task switch per
    /// span, several per request.
    batch_ready: Arc<Notify>,
    max_queue: usize,
    max_batch: usize,
    metrics: Arc<Metrics>,
    queued_bytes: Arc<AtomicUsize>,
}

/// Asks the export task to send what it holds.
pub struct Flusher {
    queue: mpsc::Sender<Message>,
    wake: Arc<Notify>,
}

impl QueueProcessor {
    pub fn spawn<E>(
        mut exporter: E,
        resource: &Resource,
        settings: QueueSettings,
        metrics: Arc<Metrics>,
    ) -> (Self, Flusher)
    where
        E: SpanExporter + 'static,
    {
        exporter.set_resource(resource);
        let (queue, rx) = mpsc::channel(settings.max_queue);
        let batch_ready = Arc::new(Notify::new());
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let batcher = Batcher {
            exporter,
            max_batch: settings.max_batch,
            metrics: metrics.clone(),
            last_warning: None,
            queued_bytes: queued_bytes.clone(),
        };
        tokio::spawn(batcher.run(rx, batch_ready.clone(), settings.flush_interval));
        let processor = Self {
            queue: queue.clone(),
            batch_ready: batch_ready.clone(),
            max_queue: settings.max_queue,
            max_batch: settings.max_batch,
            metrics,
            queued_bytes,
        };
        let flusher = Flusher {
            queue,
            wake: batch_ready,
        };
        (processor, flusher)
    }
}

impl std::fmt::Debug for QueueProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueProcessor")
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let size = estimate(&span);
        let room = self.queued_bytes.load(Ordering::Relaxed) + size <= MAX_QUEUE_BYTES;
        if room && self.queue.try_send(Message::Span(Box::new(span), size)).is_ok() {
            self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        } else {
            self.metrics.spans_dropped("queue_full", 1);
        }
        if self.max_queue - self.queue.capacity() >= self.max_batch {
            self.batch_ready.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Flusher {
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        let sent = tokio::time::timeout(timeout, async {
            self.queue.send(Message::Flush(done)).await.ok()?;
            self.wake.notify_one();
            wait.await.ok()
        })
        .await;
        if !matches!(sent, Ok(Some(()))) {
            tracing::warn!("queued spans were not all exported before shutdown");
        }
    }
}

struct Batcher<E> {
    exporter: E,
    max_batch: usize,
    metrics: Arc<Metrics>,
    last_warning: Option<Instant>,
    queued_bytes: Arc<AtomicUsize>,
}

impl<E: SpanExporter> Batcher<E> {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>, wake: Arc<Notify>, interval: Duration) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wake.notified() => {}
            }
            loop {
                match rx.try_recv() {
                    Ok(Message::Span(span, size)) => {
                        self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                        batch.push(*span);
                        if batch.len() >= self.max_batch {
                            self.export(&mut batch).await;
                        }
                    }
                    Ok(Message::Flush(done)) => {
                        self.export(&mut batch).await;
                        let _ = done.send(());
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.export(&mut batch).await;
                        return;
                    }
                }
            }
            self.export(&mut batch).await;
        }
    }

    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(self.max_batch));
        let count = spans.len();
        if let Err(e) = self.exporter.export(spans).await {
            self.metrics.spans_dropped("export_failed", count);
            // A collector outage would otherwise print a line per batch.
            if self.last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                self.last_warning = Some(Instant::now());
                tracing::warn!(error = %e, spans = count, "span export failed; spans dropped (counted in keyward_trace_spans_dropped_total)");
            }
        }
    }
}
