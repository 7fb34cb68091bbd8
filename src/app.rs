//! Builds the running proxy from a validated configuration and runs its listeners until shutdown.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{Admin, Readiness};
use crate::config::{Config, ConfigError, FieldError};
use crate::credentials::Credentials;
use crate::killswitch::KillSwitch;
use crate::listener::Drain;
use crate::policy::input::Agent;
use crate::policy::{self, Policies, PolicyError};
use crate::proxy::runtime::RouteRuntime;
use crate::proxy::{Live, PolicyGate, ProxyState};
use crate::ratelimit::Limiter;
use crate::reload::Reloader;
use crate::route::RouteTable;
use crate::secrets::file::{FileStore, FileStoreError};
use crate::secrets::oauth2::OAuth2Store;
use crate::secrets::vault::VaultStore;
use crate::secrets::{SecretRef, Secrets};
use crate::telemetry::audit::AuditLog;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::Tracing;
use crate::tls::ca::Ca;
use crate::tls::leaf::LeafCache;
use crate::tls::TlsError;
use crate::upstream::{Upstream, UpstreamError};

/// Why Keyward could not start (or `check` failed).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Secrets(#[from] FileStoreError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Trace(#[from] crate::telemetry::trace::TraceError),
    #[error(transparent)]
    Audit(#[from] crate::telemetry::audit::AuditError),
    #[error("keyward controller: {0}")]
    Controller(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Validates everything `run` would load, without creating files or opening ports.
pub fn check(path: &Path) -> Result<Config, StartError> {
    let config = Config::load(path)?;
    if config.ca_cert.exists() || config.ca_key.exists() {
        Ca::load(&config.ca_cert, &config.ca_key)?;
    }
    if let Some(file) = &config.secrets_file {
        config.verify_secrets(&FileStore::load(file)?)?;
    }
    upstream(&config)?;
    policies(&config)?;
    Ok(config)
}

/// `keyward policy eval`: one decision for a hand-written input document.
pub fn eval_policy(path: &Path, input: &Path, entrypoint: Option<&str>) -> Result<policy::Decision, StartError> {
    let config = Config::load(path)?;
    let Some(policy) = &config.policy else {
        return Err(PolicyError::Load {
            path: path.display().to_string(),
            message: "no `policy:` configured".into(),
        }
        .into());
    };
    let entrypoint = entrypoint.unwrap_or(&policy.entrypoint).to_string();
    let mut settings = policy::Settings {
        dir: policy.dir.clone(),
        entrypoints: config.policy_entrypoints(),
        mode: policy.mode,
    };
    if !settings.entrypoints.contains(&entrypoint) {
        settings.entrypoints.push(entrypoint.clone());
    }
    let policies = Policies::load(settings)?;
    let load_err = |message: String| PolicyError::Load {
        path: input.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(input).map_err(|e| load_err(e.to_string()))?;
    let value = regorus::Value::from_json_str(&text).map_err(|e| load_err(e.to_string()))?;
    Ok(policies.decide(&entrypoint, value))
}

/// Compiles the configured policies, if any.
pub fn policies(config: &Config) -> Result<Option<Arc<Policies>>, PolicyError> {
    let Some(p) = &config.policy else {
        return Ok(None);
    };
    let settings = policy::Settings {
        dir: p.dir.clone(),
        entrypoints: config.policy_entrypoints(),
        mode: p.mode,
    };
    Ok(Some(Arc::new(Policies::load(settings)?)))
}

/// Files `run` writes besides the CA: the trust bundle for agents, and where a generated admin token goes.
#[derive(Default, Clone)]
pub struct RunFiles<'a> {
    pub trust_bundle: Option<&'a Path>,
    pub admin_token: Option<&'a Path>,
    /// `run --controller`: leaves are signed by an intermediate from the controller, and the fleet-wide
    /// blocked set is followed.
    pub controller: Option<&'a Arc<crate::fleet::Link>>,
    /// `run --controller-config`: the configuration's name and version, followed for changes.
    pub followed: Option<(String, String)>,
}

/// Loads the configuration, binds both listeners, builds everything and serves until `shutdown`.
pub async fn run(path: &Path, files: RunFiles<'_>, shutdown: watch::Receiver<bool>) -> Result<(), StartError> {
    crate::tls::install_default_provider();
    let config = Config::load(path)?;
    let admin = bind(config.admin).await?;
    let proxy = bind(config.listen).await?;
    let transparent = match &config.transparent {
        Some(settings) => Some((bind(settings.listen).await?, settings.clone())),
        None => None,
    };
    let mut running = build(config, files, None).await?;
    running.transparent = transparent;
    serve(running, proxy, admin, shutdown).await
}

/// Everything built from a configuration, ready to serve.
pub struct Running {
    pub live: Arc<Live>,
    admin: Arc<Admin>,
    readiness: Arc<Readiness>,
    traces: Option<Arc<Tracing>>,
    reloader: Arc<Reloader>,
    max_connections: usize,
    shutdown_grace: std::time::Duration,
    /// The transparent listener, bound by `run` when the configuration has `transparent:`.
    transparent: Option<(TcpListener, crate::proxy::transparent::Settings)>,
}

impl Running {
    /// The configuration in force now.
    pub fn state(&self) -> Arc<ProxyState> {
        self.live.load()
    }
}

/// What outlives a configuration: built once at start and handed to every configuration the process runs.
/// Changing any of it needs a restart (see [`crate::reload`]).
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub audit: AuditLog,
    pub traces: Option<Arc<Tracing>>,
    pub upstream: Arc<Upstream>,
    pub secrets: Arc<dyn crate::secrets::SecretStore>,
    /// The configured stores, when not replaced by a test store: a reload checks new secret references here.
    pub stores: Option<Arc<Secrets>>,
    pub leaves: Arc<LeafCache>,
    pub kill_switch: Arc<KillSwitch>,
    pub drain: Arc<Drain>,
    pub limits: crate::proxy::Limits,
}

/// Builds the proxy from a validated configuration: telemetry, the admin API's state, secret stores (with
/// their refresh tasks), the CA, then the configuration's own state ([`state`]). `secrets` replaces the
/// configured stores (tests count what the pipeline reads).
pub async fn build(
    config: Config,
    files: RunFiles<'_>,
    secrets: Option<Arc<dyn crate::secrets::SecretStore>>,
) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::default());
    metrics.agent(&config.agent_id);
    let audit = AuditLog::open(&config.audit, metrics.clone())?;
    let traces = match &config.traces {
        Some(settings) => {
            let started = Tracing::start(settings, metrics.clone())?;
            tracing::info!(endpoint = %settings.endpoint, protocol = ?settings.protocol, sample_ratio = settings.sample_ratio, "exporting traces over OTLP");
            Some(Arc::new(started))
        }
        None => None,
    };
    let readiness = Arc::new(Readiness::starting());
    let (token, generated) = crate::admin_token::at_start(&config)
        .map_err(|message| StartError::Config(config.error_at(FieldError::new("admin_token", message))))?;
    let upstream = Arc::new(upstream(&config)?);
    let (store, stores): (Arc<dyn crate::secrets::SecretStore>, _) = match secrets {
        Some(store) => (store, None),
        None => {
            let store = configured_secrets(&config, &metrics, &upstream)?;
            if let Some(file) = &store.file {
                tokio::spawn(file.clone().watch(config.secrets_poll_interval));
            }
            if let Some(vault) = &store.vault {
                tokio::spawn(vault.clone().run());
            }
            (store.clone(), Some(store))
        }
    };
    readiness.watch_secrets(store.clone());
    let leaves = interception(&config, &files, &metrics, &readiness).await?;
    if generated {
        let path = crate::admin_token::publish(&config, files.admin_token, &token)
            .map_err(|message| StartError::Config(config.error_at(FieldError::new("admin_token", message))))?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        tracing::info!(path = %path.display(), "no admin_token configured: generated one for the admin API (`keyward admin` reads it)");
    }
    let shared = Shared {
        leaves,
        metrics: metrics.clone(),
        audit,
        traces: traces.clone(),
        upstream,
        secrets: store,
        stores,
        kill_switch: Arc::new(KillSwitch::default()),
        drain: Arc::new(Drain::default()),
        limits: config.limits.clone(),
    };
    if let Some(link) = files.controller {
        tokio::spawn(link.clone().follow_blocked(shared.kill_switch.clone(), metrics.clone()));
    }
    let (max_connections, shutdown_grace) = (config.limits.max_connections, config.shutdown_grace);
    let state = state(&config, &shared).await?;
    let live = Arc::new(Live::new(state));
    let config_path = config.path.clone();
    let reloader = Arc::new(Reloader::new(config, shared.clone(), live.clone()));
    if let (Some(link), Some((name, etag))) = (files.controller, files.followed.clone()) {
        let followed = link
            .clone()
            .follow_config(name, etag, config_path, reloader.clone(), shared.metrics.clone());
        tokio::spawn(followed);
    }
    let admin = Arc::new(Admin {
        readiness: readiness.clone(),
        metrics,
        kill_switch: shared.kill_switch.clone(),
        reloader: reloader.clone(),
        token,
    });
    Ok(Running {
        live,
        admin,
        readiness,
        traces,
        reloader,
        max_connections,
        shutdown_grace,
        transparent: None,
    })
}

/// The CA that signs leaves: an intermediate from `keyward controller` when `run --controller` is given
/// (renewed in the background), else the CA files (created on first run). Writes the agents' trust bundle.
async fn interception(
    config: &Config,
    files: &RunFiles<'_>,
    metrics: &Arc<Metrics>,
    readiness: &Arc<Readiness>,
) -> Result<Arc<LeafCache>, StartError> {
    let minted = metrics.certificates_minted.clone();
    let written = |bundle: &Path, pem: &str| -> Result<(), StartError> {
        let roots = crate::tls::bundle::write(bundle, pem)?;
        tracing::info!(path = %bundle.display(), system_roots = roots, "trust bundle written (system roots + Keyward's CA)");
        Ok(())
    };
    let Some(link) = files.controller else {
        let (ca, created) = Ca::load_or_create(&config.ca_cert, &config.ca_key)?;
        let ca_cert = std::fs::canonicalize(&config.ca_cert).unwrap_or_else(|_| config.ca_cert.clone());
        if created {
            tracing::warn!(ca_cert = %ca_cert.display(), "created a new interception CA");
        }
        tracing::info!(ca_cert = %ca_cert.display(), "agents must trust this CA certificate");
        if let Some(bundle) = files.trust_bundle {
            let pem = std::fs::read_to_string(&ca_cert).map_err(|e| crate::tls::bundle::io(&ca_cert, e))?;
            written(bundle, &pem)?;
        }
        return Ok(Arc::new(LeafCache::new(ca, minted)?));
    };
    let issued = link.certificate().await.map_err(StartError::Controller)?;
    metrics.controller_answered();
    tracing::info!(not_after = %humantime::format_rfc3339_seconds(issued.not_after), "intermediate certificate from keyward controller");
    if let Some(bundle) = files.trust_bundle {
        written(bundle, &issued.trust_bundle)?;
    }
    let leaves = Arc::new(LeafCache::issued_by(issued.issuing, minted)?);
    tokio::spawn(link.clone().keep_certificate(
        leaves.clone(),
        issued.not_after,
        files.trust_bundle.map(Path::to_path_buf),
        readiness.clone(),
        metrics.clone(),
    ));
    Ok(leaves)
}

/// The state one configuration runs with: its routes' runtime objects, credentials, policy and rate limits,
/// over the process's [`Shared`] parts. Built at start and again by every accepted reload; in-flight requests
/// finish on the state they started with.
pub async fn state(config: &Config, shared: &Shared) -> Result<Arc<ProxyState>, StartError> {
    let metrics = &shared.metrics;
    let gate = match (&config.policy, policies(config)?) {
        (Some(p), Some(policies)) => {
            let m = metrics.clone();
            let watched = Arc::downgrade(&policies);
            tokio::spawn(Policies::watch(watched, p.poll_interval, move |ok| m.policy_reload(ok)));
            Some(PolicyGate {
                policies,
                entrypoint: p.entrypoint.clone(),
                body_limit: p.body_limit,
                timezone: p.timezone,
            })
        }
        _ => None,
    };
    let credentials = Credentials::new(config.credentials.clone());
    let mut route_limits = config.route_limits.clone();
    let mut route_rates: std::collections::HashMap<String, _> = config.route_rate_limits.iter().cloned().collect();
    let routes = config
        .routes
        .iter()
        .cloned()
        .map(|route| {
            let limits = route_limits.remove(&route.name).unwrap_or_default();
            let rate = route_rates.remove(&route.name).map(Limiter::new);
            let scrubbed = credentials.route_has_any(&route.name);
            let handles = metrics.route(&config.agent_id, Some(&route.name));
            RouteRuntime::new(route, limits, rate, scrubbed, handles)
        })
        .collect();
    let state = Arc::new(ProxyState {
        agent: Agent {
            id: config.agent_id.clone(),
            labels: config.agent_labels.clone(),
        },
        user_header: config.user_header.clone(),
        policy: gate,
        agent_rate: config.agent_rate_limit.clone().map(Limiter::new),
        upstream: shared.upstream.clone(),
        leaves: shared.leaves.clone(),
        unmatched: config.unmatched,
        unmatched_allow_private: config.unmatched_allow_private,
        agent_tls_timeout: config.agent_tls_handshake_timeout,
        routes: RouteTable::new(routes),
        credentials,
        secrets: shared.secrets.clone(),
        unrouted: metrics.route(&config.agent_id, None),
        metrics: metrics.clone(),
        tracing: shared.traces.clone(),
        audit: shared.audit.clone(),
        canary: Default::default(),
        kill_switch: shared.kill_switch.clone(),
        limits: shared.limits.clone(),
        drain: shared.drain.clone(),
    });
    let limited = state.agent_rate.is_some() || state.routes.iter().any(|r| r.rate.is_some());
    if limited {
        // Holds the state weakly: a replaced configuration's limiters go once its last request is done.
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                let routes = state.routes.iter().filter_map(|r| r.rate.as_ref());
                routes.chain(&state.agent_rate).for_each(Limiter::evict);
            }
        });
    }
    crate::proxy::scrubbing::prime(&state).await;
    Ok(state)
}

/// Serves the proxy and admin listeners until `shutdown`, then drains in-flight requests (up to the grace
/// period) and flushes the audit log and traces.
pub async fn serve(
    running: Running,
    proxy: TcpListener,
    admin: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let Running {
        live,
        admin: admin_state,
        readiness,
        traces,
        reloader,
        max_connections,
        shutdown_grace,
        transparent,
    } = running;
    let state = live.load();
    for listener in [Some(&proxy), Some(&admin), transparent.as_ref().map(|(l, _)| l)]
        .into_iter()
        .flatten()
    {
        if let Ok(addr) = listener.local_addr() {
            state.upstream.forbid_own(addr);
        }
    }
    // One cap for both agent listeners: connections on one count against the other.
    let slots = crate::listener::cap(max_connections);
    if let Some((listener, settings)) = transparent {
        tracing::info!(addr = %local(&listener), non_http = ?settings.non_http, "transparent listener (iptables REDIRECT target)");
        let live = live.clone();
        tokio::spawn(crate::listener::serve(
            listener,
            shutdown.clone(),
            slots.clone(),
            move |stream, peer, slot| {
                crate::proxy::transparent::serve(live.clone(), stream, peer, slot, settings.clone())
            },
        ));
    }
    let admin_addr = local(&admin);
    tokio::spawn(crate::admin::serve_listener(admin, shutdown.clone(), admin_state));
    tracing::info!(
        proxy_addr = %local(&proxy),
        admin_addr = %admin_addr,
        agent_id = %state.agent.id,
        "keyward listening"
    );
    started(&state, &local(&proxy), &reloader);
    readiness.set(None);
    tokio::spawn(reloader.watch(shutdown.clone()));
    let drain = state.drain.clone();
    let finished = state.clone();
    crate::listener::serve(proxy, shutdown, slots, move |stream, peer, slot| {
        crate::proxy::connect::serve(live.clone(), stream, peer, slot)
    })
    .await;
    tracing::info!(
        grace_s = shutdown_grace.as_secs(),
        "no longer accepting connections; draining in-flight requests"
    );
    let left = drain.wait(shutdown_grace).await;
    if left > 0 {
        tracing::warn!(requests = left, "shutdown grace period over; in-flight requests cut");
    }
    // Leased credentials (Vault's AWS engine) are given back, so what they created is deleted now.
    if tokio::time::timeout(std::time::Duration::from_secs(5), finished.secrets.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("revoking leased credentials took over 5 s; Vault revokes them when they expire");
    }
    finished.audit.flush();
    if let Some(traces) = traces {
        traces.shutdown(std::time::Duration::from_secs(5)).await;
    }
    tracing::info!("keyward stopped");
    Ok(())
}

/// The start-up summary: each route with its hosts and its credentials' names and sources (never a value),
/// then how to point an agent at this proxy.
fn started(state: &ProxyState, proxy_addr: &str, reloader: &Reloader) {
    for runtime in state.routes.iter() {
        let credentials: Vec<String> = state
            .credentials
            .specs()
            .iter()
            .filter(|c| c.route == runtime.name())
            .map(|c| {
                let sources: Vec<String> = c.kind.secrets().map(ToString::to_string).collect();
                format!("{} ({})", c.name, sources.join(", "))
            })
            .collect();
        let hosts: Vec<String> = runtime.route.hosts.iter().map(ToString::to_string).collect();
        tracing::info!(route = runtime.name(), hosts = %hosts.join(" "), credentials = %credentials.join(", "), "route");
    }
    let config = reloader.path().display();
    tracing::info!(
        "agents: `keyward exec --config {config} -- CMD`, or export HTTPS_PROXY=http://{proxy_addr} and point \
         SSL_CERT_FILE / REQUESTS_CA_BUNDLE / NODE_EXTRA_CA_CERTS at the CA certificate named above"
    );
}

/// The configured secret backends. Refresh tasks are started by the caller.
pub(crate) fn configured_secrets(
    config: &Config,
    metrics: &Arc<Metrics>,
    upstream: &Arc<Upstream>,
) -> Result<Arc<Secrets>, StartError> {
    let refs = config.secret_refs();
    let file = match &config.secrets_file {
        Some(path) => {
            let mut store = FileStore::load(path)?;
            config.verify_secrets(&store)?;
            let used = refs.iter().filter_map(|r| match r {
                SecretRef::File(name) => Some(name.clone()),
                _ => None,
            });
            store.require(used.collect());
            Some(Arc::new(store))
        }
        None => None,
    };
    let vault = config.vault.as_ref().map(|settings| {
        let used = refs.iter().filter_map(|r| match r {
            SecretRef::Vault(v) => Some(v.clone()),
            _ => None,
        });
        let leases = refs.iter().filter_map(|r| match r {
            SecretRef::VaultAws(lease, _) => Some(lease.clone()),
            _ => None,
        });
        Arc::new(VaultStore::new(settings.clone(), used, leases, metrics.clone()))
    });
    let oauth2 = (!config.oauth2.is_empty()).then(|| {
        Arc::new(OAuth2Store::new(
            config.oauth2.clone(),
            upstream.clone(),
            vault.clone(),
            metrics.clone(),
        ))
    });
    Ok(Arc::new(Secrets { file, vault, oauth2 }))
}

fn upstream(config: &Config) -> Result<Upstream, UpstreamError> {
    Upstream::new(config.upstream.clone())
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local(listener: &TcpListener) -> String {
    listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string())
}
