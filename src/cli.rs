//! Command-line interface: `run`, `exec`, `doctor`, `controller`, `block`/`unblock`/`blocked`, `check`, `admin`, `ca init`,
//! `policy`, `webhook`, `version`.

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
        /// `keyward controller` URL: leaves are signed by an intermediate it issues (the `ca:` files are not
        /// used), and its fleet-wide blocked set is followed.
        #[arg(long, env = "KEYWARD_CONTROLLER_URL")]
        controller: Option<String>,
        /// The CA the controller's serving certificate chains to (a file).
        #[arg(long, env = "KEYWARD_CONTROLLER_CA", requires = "controller")]
        controller_ca: Option<PathBuf>,
        /// The same CA as PEM text (the webhook writes it into the pod spec: it is public).
        #[arg(
            long,
            env = "KEYWARD_CONTROLLER_CA_PEM",
            requires = "controller",
            conflicts_with = "controller_ca"
        )]
        controller_ca_pem: Option<String>,
        /// Fetch the proxy configuration of this name from the controller, write it at `--config` (Rego files
        /// into `policies/` beside it) and follow its changes live.
        #[arg(long, env = "KEYWARD_CONTROLLER_CONFIG", requires = "controller")]
        controller_config: Option<String>,
        /// The projected service-account token (audience `keyward`) the sidecar authenticates with.
        #[arg(
            long,
            env = "KEYWARD_CONTROLLER_TOKEN",
            default_value = "/var/run/secrets/keyward/controller/token"
        )]
        controller_token: PathBuf,
    },
    /// Run the in-cluster controller: intermediate certificates for sidecars, the fleet-wide kill switch and
    /// (with `--webhook-settings`) the admission webhook.
    Controller(ControllerArgs),
    /// Run CMD behind Keyward: Keyward in-process on free loopback ports (or `--proxy`), CMD with the proxy and
    /// trust environment every common runtime needs and each credential's `env` variable set to its
    /// placeholder. Exits with CMD's exit code.
    Exec {
        #[arg(long, short, env = "KEYWARD_CONFIG")]
        config: Option<PathBuf>,
        /// A running Keyward (`http://127.0.0.1:3128`) instead of one in-process; needs `--ca`.
        #[arg(long)]
        proxy: Option<String>,
        /// The running Keyward's CA certificate.
        #[arg(long, requires = "proxy")]
        ca: Option<PathBuf>,
        /// Replace a placeholder variable already set in the caller's environment.
        #[arg(long)]
        override_env: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Check the setup and say what is wrong: config, CA, secret sources, admin token, and each runtime on PATH
    /// through Keyward. Exits 1 when any check fails.
    Doctor {
        #[arg(long, short, env = "KEYWARD_CONFIG")]
        config: PathBuf,
        /// One JSON array of rows (check, ok, detail, fix) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Block one agent (`--agent`) or all on every sidecar, through the controller.
    Block {
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        controller: ControllerApi,
    },
    /// Lift a fleet-wide block on one agent (`--agent`) or all.
    Unblock {
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        controller: ControllerApi,
    },
    /// The fleet-wide blocked set.
    Blocked {
        #[command(flatten)]
        controller: ControllerApi,
    },
    /// Run the Kubernetes mutating admission webhook that injects the sidecar.
    Webhook {
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        tls_cert: PathBuf,
        #[arg(long)]
        tls_key: PathBuf,
        /// Injector settings (YAML): image, controller URL and CA, default configuration name, token
        /// audiences, placeholder env, resources.
        #[arg(long)]
        settings: PathBuf,
    },
    /// Validate a configuration (and the files it names) without starting; exits non-zero on any problem.
    Check {
        #[arg(long, short, env = "KEYWARD_CONFIG")]
        config: PathBuf,
    },
    /// Print the JSON Schema (draft-07) of the configuration file, generated from the types `check` parses
    /// (for editors' YAML validation; the chart's values.schema.json embeds its route part).
    Schema,
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
    /// Write or remove the iptables rules that redirect outbound TCP to the transparent listener (needs
    /// NET_ADMIN; in Kubernetes, the init container `keyward.dev/capture: transparent` adds runs it).
    Iptables {
        #[command(subcommand)]
        command: IptablesCommand,
    },
    /// Work with Rego policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the version.
    Version,
}

/// `keyward controller`'s flags.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: std::net::SocketAddr,
    #[arg(long)]
    pub tls_cert: PathBuf,
    #[arg(long)]
    pub tls_key: PathBuf,
    /// The controller's own namespace, where the CA Secret and the ConfigMaps live.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Secret holding the root CA (`tls.crt`, `tls.key`, optional `ca-bundle.crt`).
    #[arg(long, default_value = "keyward-ca")]
    pub ca_secret: String,
    /// ConfigMap holding the fleet-wide blocked set.
    #[arg(long, default_value = "keyward-blocked")]
    pub blocked_configmap: String,
    /// Audience sidecars' projected tokens must carry.
    #[arg(long, default_value = "keyward")]
    pub audience: String,
    /// `key=value` label an agent namespace must carry (repeatable; all must match).
    #[arg(long = "namespace-selector", value_name = "KEY=VALUE")]
    pub namespace_selector: Vec<String>,
    /// Lifetime of the intermediate certificates issued to sidecars.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub intermediate_lifetime: std::time::Duration,
    /// How often the root CA Secret is re-read (a rotation takes effect within this).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub root_refresh: std::time::Duration,
    /// File holding the bearer token of the block API.
    #[arg(long, env = "KEYWARD_CONTROLLER_API_TOKEN_FILE")]
    pub api_token_file: PathBuf,
    /// Also serve the admission webhook (`POST /mutate`) with these injector settings.
    #[arg(long)]
    pub webhook_settings: Option<PathBuf>,
}

impl ControllerArgs {
    /// The controller's settings: the selector parsed, the API token and the webhook settings read.
    pub fn settings(self) -> Result<crate::controller::Settings, String> {
        let namespace_selector = self
            .namespace_selector
            .iter()
            .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect::<Option<_>>()
            .ok_or("--namespace-selector takes KEY=VALUE")?;
        let token = std::fs::read_to_string(&self.api_token_file)
            .map_err(|e| format!("{}: {e}", self.api_token_file.display()))?;
        let webhook = match &self.webhook_settings {
            Some(path) => Some(crate::webhook::load_settings(path).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(crate::controller::Settings {
            listen: self.listen,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            namespace: self.namespace,
            ca_secret: self.ca_secret,
            blocked_configmap: self.blocked_configmap,
            audience: self.audience,
            namespace_selector,
            intermediate_lifetime: self.intermediate_lifetime,
            root_refresh: self.root_refresh,
            api_token: crate::secrets::Secret::new(token.trim().to_string()),
            webhook,
        })
    }
}

/// How `keyward block|unblock|blocked` reach the controller's API.
#[derive(Debug, clap::Args)]
pub struct ControllerApi {
    #[arg(long, env = "KEYWARD_CONTROLLER_URL")]
    pub controller: String,
    #[arg(long, env = "KEYWARD_CONTROLLER_CA")]
    pub controller_ca: PathBuf,
    /// File holding the controller's API token.
    #[arg(long, env = "KEYWARD_CONTROLLER_API_TOKEN_FILE")]
    pub api_token_file: PathBuf,
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
pub enum IptablesCommand {
    /// Redirect every TCP connection except the proxy uid's, loopback and DNS to the transparent listener.
    /// Replaces an earlier install.
    Install {
        #[command(flatten)]
        options: crate::iptables::Options,
        /// Print the rules instead of applying them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove exactly what `install` added. Succeeds when nothing is installed.
    Uninstall {
        #[arg(long, default_value = "iptables")]
        iptables: String,
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
