//! `keyward exec -- CMD [ARGS…]`: runs an agent behind Keyward, the way `op run` or `aws-vault exec` run a
//! program with secrets, except that the program only ever gets placeholders.
//!
//! Keyward starts in-process on free loopback ports (or `--proxy` names a running one and `--ca` its CA), the
//! trust bundle and the Java trust store are written to a private temporary directory, and CMD runs with the
//! environment of [`crate::agent_env`] (the same plan the webhook injects) plus each credential's `env`
//! variable set to its placeholder. The child is never started with a half-set environment: any error before
//! it starts ends exec with a message and exit code 1. Signals are forwarded to the child; exec exits with the
//! child's code (128 + the signal number when a signal ended it), after Keyward has drained, and prints one
//! summary line on stderr.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::app::{self, RunFiles};
use crate::config::Config;
use crate::telemetry::audit::AuditOutput;
use crate::telemetry::metrics::Metrics;

/// What `keyward exec` was asked to do.
pub struct Options {
    pub config: Option<PathBuf>,
    pub proxy: Option<String>,
    pub ca: Option<PathBuf>,
    pub override_env: bool,
    pub command: Vec<String>,
}

/// Destinations the child reaches directly: loopback only, so everything else goes through Keyward.
const NO_PROXY: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Runs the child behind Keyward; the exit code to leave with.
pub async fn run(options: Options) -> Result<i32, String> {
    crate::tls::install_default_provider();
    let scratch = Scratch::new()?;
    let bundle = scratch.0.join("ca-bundle.pem");
    let (proxy, placeholders, keyward) = match (&options.proxy, &options.config) {
        (Some(url), config) => {
            let ca = options
                .ca
                .as_deref()
                .ok_or("--proxy needs --ca (the running Keyward's CA certificate)")?;
            let pem = std::fs::read_to_string(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            crate::tls::bundle::write(&bundle, &pem).map_err(|e| e.to_string())?;
            let placeholders = match config {
                Some(path) => Config::load(path).map_err(|e| e.to_string())?.placeholder_env(),
                None => BTreeMap::new(),
            };
            (proxy_address(url)?, placeholders, None)
        }
        (None, Some(path)) => {
            let started = Embedded::start(path, &bundle).await?;
            (started.proxy, started.placeholders.clone(), Some(started))
        }
        (None, None) => return Err("give --config (Keyward runs in-process) or --proxy with --ca".into()),
    };
    let plan = crate::agent_env::plan(
        &crate::agent_env::Proxied {
            proxy_host: &proxy.ip().to_string(),
            proxy_port: proxy.port(),
            bundle: bundle.to_str().ok_or("the temporary directory's path is not UTF-8")?,
            no_proxy: &NO_PROXY.map(String::from),
            placeholders: &placeholders,
        },
        // Proxy and trust variables are exec's to set; a placeholder variable the caller set is kept
        // unless --override-env.
        |name| placeholders.contains_key(name) && !options.override_env && std::env::var_os(name).is_some(),
    );
    for name in &plan.left_alone {
        eprintln!("keyward exec: {name} is already set in your environment and was kept (--override-env replaces it)");
    }
    if options.override_env {
        for name in placeholders.keys().filter(|n| std::env::var_os(n).is_some()) {
            eprintln!("keyward exec: {name} replaced by its placeholder (--override-env)");
        }
    }
    let code = child(&options.command, &plan.set).await;
    if let Some(keyward) = keyward {
        keyward.stop().await;
    }
    code
}

/// Runs the command with `env` added, forwarding SIGTERM, SIGINT, SIGHUP and SIGQUIT to it.
async fn child(command: &[String], env: &[(String, String)]) -> Result<i32, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let (program, args) = command.split_first().ok_or("no command given after --")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    let kinds = [
        (SignalKind::terminate(), nix::sys::signal::Signal::SIGTERM),
        (SignalKind::interrupt(), nix::sys::signal::Signal::SIGINT),
        (SignalKind::hangup(), nix::sys::signal::Signal::SIGHUP),
        (SignalKind::quit(), nix::sys::signal::Signal::SIGQUIT),
    ];
    let mut streams = Vec::new();
    for (kind, sig) in kinds {
        streams.push((signal(kind).map_err(|e| e.to_string())?, sig));
    }
    let forward = async {
        loop {
            let received = futures_util::future::select_all(
                streams
                    .iter_mut()
                    .map(|(stream, sig)| Box::pin(async move { stream.recv().await.map(|_| *sig) })),
            )
            .await
            .0;
            if let (Some(sig), Some(pid)) = (received, pid) {
                let _ = nix::sys::signal::kill(pid, sig);
            }
        }
    };
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| e.to_string())?,
        never = forward => never,
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn proxy_address(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
    rest.parse()
        .map_err(|_| format!("--proxy {url}: expected http://IP:PORT of a running Keyward"))
}

/// Keyward running in this process for the child.
struct Embedded {
    proxy: SocketAddr,
    placeholders: BTreeMap<String, String>,
    metrics: std::sync::Arc<Metrics>,
    audit: String,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), app::StartError>>,
}

impl Embedded {
    /// Loads `path` with both listeners on free loopback ports; the audit log goes to a file beside the CA
    /// (the child's stdout stays the child's), unless it is off or already a file.
    async fn start(path: &Path, bundle: &Path) -> Result<Self, String> {
        let mut config = Config::load(path).map_err(|e| e.to_string())?;
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.admin = SocketAddr::from(([127, 0, 0, 1], 0));
        if matches!(config.audit.output, AuditOutput::Stdout) {
            let dir = config.ca_cert.parent().unwrap_or(Path::new(".")).to_path_buf();
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            config.audit.output = AuditOutput::File(dir.join("exec-audit.jsonl"));
        }
        let audit = match &config.audit.output {
            AuditOutput::File(file) => file.display().to_string(),
            _ => "off".into(),
        };
        let placeholders = config.placeholder_env();
        let bind = |addr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))
        };
        let proxy_listener = bind(config.listen).await?;
        let admin_listener = bind(config.admin).await?;
        let proxy = proxy_listener.local_addr().map_err(|e| e.to_string())?;
        let files = RunFiles {
            trust_bundle: Some(bundle),
            ..RunFiles::default()
        };
        let running = app::build(config, files, None).await.map_err(|e| e.to_string())?;
        let metrics = running.state().metrics.clone();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(app::serve(running, proxy_listener, admin_listener, stopped));
        Ok(Self {
            proxy,
            placeholders,
            metrics,
            audit,
            stop,
            server,
        })
    }

    /// Drains and stops Keyward, then prints the summary line.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        eprintln!(
            "keyward exec: {}; audit log: {}",
            summary(&self.metrics.render()),
            self.audit
        );
    }
}

/// `N requests, M refused (code ×n, …), K exfiltration attempts`, from the metrics exposition.
fn summary(exposition: &str) -> String {
    let mut requests = 0u64;
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut exfiltration = 0u64;
    for line in exposition.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        // Counters: whole numbers, written as integers or floats.
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        if series.starts_with("keyward_requests_total{") {
            requests += value;
            let outcome = series
                .split("outcome=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("");
            if outcome != "forwarded" && value > 0 {
                *refused.entry(outcome.to_string()).or_default() += value;
            }
        } else if series.starts_with("keyward_exfiltration_attempts_total{") {
            exfiltration += value;
        }
    }
    let total: u64 = refused.values().sum();
    let codes: Vec<String> = refused.iter().map(|(code, n)| format!("{code} ×{n}")).collect();
    let codes = if codes.is_empty() {
        String::new()
    } else {
        format!(" ({})", codes.join(", "))
    };
    format!("{requests} requests, {total} refused{codes}, {exfiltration} exfiltration attempts")
}

/// A private temporary directory for the trust bundle, removed when exec ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("keyward-exec-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_requests_refusals_by_code_and_exfiltration() {
        let exposition = "\
keyward_requests_total{agent=\"a\",route=\"r\",method=\"GET\",status_class=\"2xx\",decision=\"none\",outcome=\"forwarded\"} 3
keyward_requests_total{agent=\"a\",route=\"none\",method=\"GET\",status_class=\"4xx\",decision=\"none\",outcome=\"no_route\"} 2
keyward_requests_total{agent=\"a\",route=\"r\",method=\"POST\",status_class=\"4xx\",decision=\"deny\",outcome=\"policy_denied\"} 1
keyward_exfiltration_attempts_total{credential=\"c\"} 1
";
        assert_eq!(
            summary(exposition),
            "6 requests, 3 refused (no_route ×2, policy_denied ×1), 1 exfiltration attempts"
        );
    }
}
