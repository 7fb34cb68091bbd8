//! The audit log: one JSON object per line per request, to stdout or a file, written by its own thread so a
//! slow disk never holds a request. The field names are a contract (README "Audit log"): add, never rename.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    Stdout,
    File(PathBuf),
    Off,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub output: AuditOutput,
    pub max_queue: usize,
}

/// One request as the audit log records it. Only names, codes and counts: the query is redacted by
/// [`super::redact_query`] before it gets here, and no header or body value has a field.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    pub timestamp: String,
    pub request_id: &'a str,
    pub trace_id: Option<String>,
    pub agent_id: &'a str,
    pub user_id: Option<&'a str>,
    pub route: Option<&'a str>,
    pub method: &'a str,
    pub scheme: &'static str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub decision: Option<&'static str>,
    pub reason: Option<&'a str>,
    pub credentials: &'a [String],
    pub status: u16,
    pub outcome: &'static str,
    pub ratelimited: bool,
    pub retries: u32,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// For a WebSocket, written when it closes: messages each way and how it ended (bytes are above).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<&'a crate::proxy::websocket::Summary>,
}

#[derive(Debug, thiserror::Error)]
#[error("the audit log {path} cannot be opened: {source}")]
pub struct AuditError {
    path: String,
    source: std::io::Error,
}

/// Lines are appended to a shared buffer that a writer thread swaps out and writes every
/// [`WRITE_INTERVAL`]. Waking a thread per line cost a context switch per request on a one-core sidecar.
#[derive(Clone)]
pub struct AuditLog {
    shared: Option<Arc<Shared>>,
    metrics: Arc<Metrics>,
}

struct Shared {
    buffer: Mutex<Vec<u8>>,
    /// Bytes the buffer may hold before lines are dropped (and counted) instead of queued.
    max_bytes: usize,
    out: Mutex<Box<dyn Write + Send>>,
    /// Set while writes fail, so that an outage logs one error, not one per interval.
    failing: AtomicBool,
}

const WRITE_INTERVAL: Duration = Duration::from_millis(50);
/// A rough line size, to turn `max_queue` (lines) into a byte bound.
const LINE_BYTES: usize = 512;

impl AuditLog {
    pub fn open(settings: &AuditSettings, metrics: Arc<Metrics>) -> Result<Self, AuditError> {
        let out: Box<dyn Write + Send> = match &settings.output {
            AuditOutput::Off => return Ok(Self { shared: None, metrics }),
            AuditOutput::Stdout => Box::new(std::io::stdout()),
            AuditOutput::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
        };
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(64 * 1024)),
            max_bytes: settings.max_queue.saturating_mul(LINE_BYTES),
            out: Mutex::new(out),
            failing: AtomicBool::new(false),
        });
        let (writer, writer_metrics) = (shared.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("keyward-audit".into())
            .spawn(move || loop {
                std::thread::sleep(WRITE_INTERVAL);
                writer.write_out(&writer_metrics);
            })
            .expect("spawning the audit writer thread");
        Ok(Self {
            shared: Some(shared),
            metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    pub fn record(&self, record: &AuditRecord<'_>) {
        let Some(shared) = &self.shared else { return };
        let mut buffer = shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() >= shared.max_bytes {
            drop(buffer);
            self.metrics.audit_dropped();
            return;
        }
        serde_json::to_writer(&mut *buffer, record).expect("an audit record always serializes");
        buffer.push(b'\n');
    }

    /// Writes what is buffered now; at shutdown, so that the last requests are not lost.
    pub fn flush(&self) {
        if let Some(shared) = &self.shared {
            shared.write_out(&self.metrics);
        }
    }
}

impl Shared {
    fn write_out(&self, metrics: &Metrics) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let lines = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|e| e.into_inner()));
        if lines.is_empty() {
            return;
        }
        match out.write_all(&lines).and_then(|()| out.flush()) {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                for _ in 0..lines.iter().filter(|b| **b == b'\n').count() {
                    metrics.audit_dropped();
                }
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "writing the audit log failed; lines are being dropped");
                }
            }
        }
    }
}
