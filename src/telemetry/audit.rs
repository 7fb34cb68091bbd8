//! The audit log: one JSON object per line per request, to stdout or a file, written by its own thread so a
//! slow disk never holds a request. The field names are a contract (README "Audit log"): add, never rename.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

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
}

#[derive(Debug, thiserror::Error)]
#[error("the audit log {path} cannot be opened: {source}")]
pub struct AuditError {
    path: String,
    source: std::io::Error,
}

pub struct AuditLog {
    lines: Option<SyncSender<String>>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    pub fn open(settings: &AuditSettings, metrics: Arc<Metrics>) -> Result<Self, AuditError> {
        let out: Box<dyn Write + Send> = match &settings.output {
            AuditOutput::Off => return Ok(Self { lines: None, metrics }),
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
        let (lines, rx) = sync_channel(settings.max_queue);
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("keyward-audit".into())
            .spawn(move || write_lines(rx, out, &writer_metrics))
            .expect("spawning the audit writer thread");
        Ok(Self {
            lines: Some(lines),
            metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    pub fn record(&self, record: &AuditRecord<'_>) {
        let Some(lines) = &self.lines else { return };
        let mut line = serde_json::to_string(record).expect("an audit record always serializes");
        line.push('\n');
        match lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.metrics.audit_dropped(),
        }
    }
}

/// Writes lines as they come and flushes whenever the queue runs dry, so a burst costs one flush.
fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>, metrics: &Metrics) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut written = 0usize;
        let mut result = out.write_all(first.as_bytes());
        written += 1;
        while let (Ok(()), Ok(line)) = (&result, rx.try_recv()) {
            result = out.write_all(line.as_bytes());
            written += 1;
        }
        let result = result.and_then(|()| out.flush());
        match result {
            Ok(()) => failing = false,
            Err(e) => {
                for _ in 0..written {
                    metrics.audit_dropped();
                }
                if !failing {
                    tracing::error!(error = %e, "writing the audit log failed; lines are being dropped");
                }
                failing = true;
            }
        }
    }
}
