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
    #[arg(long, global = true, env = "KEYWARD_LOG_FORMAT", value_enum, default_value = "human")]
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
        /// Write the system roots plus Keyward's CA to this file at start (for agents' SSL_CERT_FILE etc.).
        #[arg(long, env = "KEYWARD_TRUST_BUNDLE")]
        trust_bundle: Option<PathBuf>,
    },
    /// Run the Kubernetes mutating admission webhook that injects the sidecar.
    Webhook {
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        tls_cert: PathBuf,
        #[arg(long)]
        tls_key: PathBuf,
        /// Injector settings (YAML): image, CA secret, default config, placeholder env, resources.
        #[arg(long)]
        settings: PathBuf,
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
    /// Work with Rego policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Evaluate the configured policies for one input document and print the decision.
    /// Exit status: 0 allowed, 2 denied, 1 the policy or input could not be loaded.
    Eval {
        #[arg(long, short, env = "KEYWARD_CONFIG")]
        config: PathBuf,
        /// A JSON input document, shaped like the one Keyward builds (see the README).
        #[arg(long)]
        input: PathBuf,
        /// Entry point to evaluate instead of `policy.entrypoint`.
        #[arg(long)]
        entrypoint: Option<String>,
    },
    /// Run the `test_*` rules of a policy directory's `*_test.rego` files; exits non-zero if any fails.
    Test {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new ECDSA P-256 CA as DIR/ca.crt and DIR/ca.key (mode 0600); refuses to overwrite.
    Init {
        #[arg(long)]
        out: PathBuf,
    },
}
