//! `tracing` set-up: human-readable or one JSON object per line, level from `KEYWARD_LOG` (or `RUST_LOG`).

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Level caps that no configuration can lift. The Vault client stack records request arguments and bodies
/// (tokens, AppRole secret ids, secret values) in its spans and events; h2 and hyper at debug/trace print
/// frames that can hold the real credential headers Keyward writes.
const CAPPED: &[&str] = &[
    "vaultrs=off",
    "rustify=off",
    "reqwest=off",
    "h2=info",
    "hyper=info",
    "hyper_util=info",
];

pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_env("KEYWARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in CAPPED {
        filter = filter.add_directive(directive.parse().expect("static directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.log_internal_errors(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .log_internal_errors(false)
            .init(),
    }
}
