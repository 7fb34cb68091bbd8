//! `tracing` set-up: human-readable or one JSON object per line, level from `KEYWARD_LOG` (or `RUST_LOG`).
//!
//! Two rules hold whatever the filter says. Level caps on crates that can print secrets are a separate filter
//! that every event must also pass (as a directive in the same filter, `h2::proto=trace` was more specific
//! than `h2=info` and won). In the human format, control characters inside an event are escaped, so text
//! from an upstream or an agent cannot forge a log line.

use std::io::Write;

use clap::ValueEnum;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Level caps that no configuration can lift. The Vault client stack records request arguments and bodies
/// (tokens, AppRole secret ids, secret values) in its spans and events; h2 and hyper at debug/trace print
/// frames that can hold the real credential headers Keyward writes.
fn caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("vaultrs", LevelFilter::OFF)
        .with_target("rustify", LevelFilter::OFF)
        .with_target("reqwest", LevelFilter::OFF)
        .with_target("h2", LevelFilter::INFO)
        .with_target("hyper", LevelFilter::INFO)
        .with_target("hyper_util", LevelFilter::INFO)
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KEYWARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = filter.and(caps());
    let layer = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Escaped)
            .log_internal_errors(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(filter)).init();
}

/// Stderr, with control characters escaped inside each event (the formatter writes one event per call).
struct Escaped;

impl<'a> MakeWriter<'a> for Escaped {
    type Writer = EscapedWriter;
    fn make_writer(&'a self) -> EscapedWriter {
        EscapedWriter
    }
}

struct EscapedWriter;

impl Write for EscapedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write_all(&escape_controls(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Every control character but a final newline (and tab) as a visible escape.
fn escape_controls(buf: &[u8]) -> Vec<u8> {
    let (body, newline) = match buf.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (buf, false),
    };
    let mut out = Vec::with_capacity(buf.len());
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    if newline {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_inside_an_event_cannot_start_a_forged_line() {
        let out = escape_controls(b"WARN error=x\n2026-01-01 INFO forged\x1b[31m\r\n");
        assert_eq!(out, b"WARN error=x\\n2026-01-01 INFO forged\\x1b[31m\\r\n");
    }

    #[test]
    fn caps_hold_against_more_specific_directives() {
        let caps = caps();
        assert!(!caps.would_enable("h2::proto", &tracing::Level::TRACE));
        assert!(!caps.would_enable("hyper::proto::h1", &tracing::Level::DEBUG));
        assert!(!caps.would_enable("vaultrs::api", &tracing::Level::ERROR));
        assert!(caps.would_enable("keyward::proxy", &tracing::Level::TRACE));
    }
}
