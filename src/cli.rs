//! Command-line interface: `run`, `check`, `admin`, `ca init`, `policy`, `webhook`, `version`.

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
        /// Where to write the admin token generated when the configuration sets no `admin_token` (mode 0600);
        /// default: `admin.token` next to the CA certificate.
        #[arg(long, env = "KEYWARD_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
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
    /// Call the running proxy's admin API (kill switch, reload) with its admin token: the configured one, or
    /// the one `keyward run` generated next to the CA certificate.
    Admin {
        #[arg(long, short, env = "KEYWARD_CONFIG")]
        config: PathBuf,
        /// Where `keyward run` wrote its generated token (its own `--admin-token-file`).
        #[arg(long, env = "KEYWARD_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        #[command(subcommand)]
        command: AdminCommand,
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
pub enum AdminCommand {
    /// Block one agent (`--agent`) or all: requests get 403 and open intercepted connections are closed.
    Block {
        #[arg(long)]
        agent: Option<String>,
    },
    /// Lift a block on one agent (`--agent`) or all.
    Unblock {
        #[arg(long)]
        agent: Option<String>,
    },
    /// List the blocked agents.
    Blocked,
    /// Recompile the policies now; a broken policy is refused and the running one kept.
    Reload,
}

impl AdminCommand {
    /// The admin API request this command makes.
    pub fn request(&self) -> (&'static str, String) {
        let kill = |action: &str, agent: &Option<String>| match agent {
            Some(agent) => format!("/agents/{agent}/{action}"),
            None => format!("/{action}"),
        };
        match self {
            Self::Block { agent } => ("POST", kill("block", agent)),
            Self::Unblock { agent } => ("POST", kill("unblock", agent)),
            Self::Blocked => ("GET", "/blocked".into()),
            Self::Reload => ("POST", "/reload".into()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new ECDSA P-256 CA as DIR/ca.crt and DIR/ca.key (mode 0600); refuses to overwrite.
    Init {
        #[arg(long)]
        out: PathBuf,
    },
}
