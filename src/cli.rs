//! Command-line interface: `run`, `check`, `ca init`, `version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    about = "Egress proxy that swaps agents' placeholder tokens for real secrets",
    version
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        #[arg(long, short, env = "KEYWARD_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration (and the files it names) without starting; exits non-zero on any problem.
    Check {
        #[arg(long, short, env = "KEYWARD_CONFIG")]
        config: PathBuf,
    },
    /// Manage the interception CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new ECDSA P-256 CA as DIR/ca.crt and DIR/ca.key (mode 0600); refuses to overwrite.
    Init {
        #[arg(long)]
        out: PathBuf,
    },
}
