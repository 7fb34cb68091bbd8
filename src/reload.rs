//! Live configuration. A changed config file (polled every [`POLL`]) or `POST /reload` is validated exactly
//! as at start, then a new [`ProxyState`] replaces routes, credentials, route limits, rate limits, the
//! policy and the unmatched-host rule without dropping a connection: a request takes the state in force when
//! it starts and finishes on it, and the next request on the same connection gets the new one.
//!
//! A configuration that fails validation is refused and the running one kept; `/readyz` carries the error
//! and `keyward_config_reloads_total{result="error"}` counts it. Sections that belong to the process
//! ([`crate::config::RESTART_ONLY`]: listeners, CA, secret backends, telemetry, upstream client) keep their
//! running values until a restart; a reload that changes one says which.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::app::{Shared, StartError};
use crate::config::{Config, ConfigError, FieldError};
use crate::policy::Policies;
use crate::proxy::Live;
use crate::secrets::SecretRef;

/// How often the config file is checked for changes.
pub const POLL: Duration = Duration::from_secs(2);

pub struct Reloader {
    path: PathBuf,
    shared: Shared,
    live: Arc<Live>,
    /// The configuration in force; a reload holds the lock from reading the file to swapping the state.
    current: tokio::sync::Mutex<Config>,
    /// `GET /config`: the configuration in force, redacted.
    view: ArcSwap<serde_json::Value>,
    last_error: RwLock<Option<String>>,
    /// The last text refused and why: not tried again until the file changes.
    refused: Mutex<Option<(String, String)>>,
    /// Secrets the running stores fetch; a new configuration may not need others (see [`Reloader::reload`]).
    fetched: Mutex<Vec<SecretRef>>,
}

/// What an accepted reload did.
#[derive(Debug)]
pub enum Outcome {
    /// The file is as it was; the policy directory was re-read (its own reload reports that).
    Unchanged,
    Applied {
        restart_needed: Vec<&'static str>,
    },
}

impl Reloader {
    pub fn new(config: Config, shared: Shared, live: Arc<Live>) -> Self {
        Self {
            path: config.path.clone(),
            view: ArcSwap::from_pointee(config.redacted()),
            fetched: Mutex::new(config.secret_refs()),
            current: tokio::sync::Mutex::new(config),
            shared,
            live,
            last_error: RwLock::default(),
            refused: Mutex::default(),
        }
    }

    /// The config file this reloader follows.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn view(&self) -> Arc<serde_json::Value> {
        self.view.load_full()
    }

    /// Why the last reload was refused, while the configuration before it stays in force.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The policies in force, if a policy is configured.
    pub fn policies(&self) -> Option<Arc<Policies>> {
        self.live.load().policy.as_ref().map(|gate| gate.policies.clone())
    }

    /// Recompiles the policy directory of the configuration in force (a changed Rego file with an unchanged
    /// config file); the outcome is logged and counted.
    pub async fn reload_policies(&self) -> Option<Result<bool, crate::policy::PolicyError>> {
        let policies = self.policies()?;
        let result = tokio::task::spawn_blocking(move || policies.reload()).await.ok()?;
        self.shared.metrics.policy_reload(result.is_ok());
        match &result {
            Ok(changed) => tracing::info!(changed, "policy reloaded"),
            Err(e) => tracing::error!(error = %e, "policy reload refused; the previous policy stays in force"),
        }
        Some(result)
    }

    /// Reads the config file and applies it if it changed. The outcome is logged and counted once per text:
    /// a text already refused is answered with its refusal again, not re-tried (so the file poll and
    /// `POST /reload` never count one broken file twice).
    pub async fn reload(&self) -> Result<Outcome, String> {
        let mut current = self.current.lock().await;
        let read = std::fs::read_to_string(&self.path).map_err(|source| ConfigError::Read {
            path: self.path.display().to_string(),
            source,
        });
        let text = match read {
            Ok(text) if text == current.text() => return Ok(Outcome::Unchanged),
            Ok(text) => text,
            Err(e) => {
                // An unreadable file (deleted, a permission change) is reported once, not at every poll.
                let message = e.to_string();
                if self.last_error().as_deref() == Some(message.as_str()) {
                    return Err(message);
                }
                return Err(self.refused(None, message));
            }
        };
        if let Some((seen, message)) = &*self.refused.lock().unwrap_or_else(|e| e.into_inner()) {
            if *seen == text {
                return Err(message.clone());
            }
        }
        match self.apply(&mut current, text.clone()).await {
            Ok(restart_needed) => {
                *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = None;
                *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.shared.metrics.config_reload(true);
                if restart_needed.is_empty() {
                    tracing::info!(path = %self.path.display(), "configuration reloaded");
                } else {
                    tracing::warn!(path = %self.path.display(), restart_needed = ?restart_needed,
                        "configuration reloaded; these sections keep their running values until a restart");
                }
                Ok(Outcome::Applied { restart_needed })
            }
            Err(e) => Err(self.refused(Some(text), e.to_string())),
        }
    }

    /// Records, logs and counts a refusal; returns its message.
    fn refused(&self, text: Option<String>, message: String) -> String {
        *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
        if let Some(text) = text {
            *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some((text, message.clone()));
        }
        self.shared.metrics.config_reload(false);
        tracing::error!(error = %message, "configuration reload refused; the running configuration stays in force");
        message
    }

    /// Validates `text` as at start and swaps in the state it describes; returns the restart-only sections
    /// it changed.
    async fn apply(&self, current: &mut Config, text: String) -> Result<Vec<&'static str>, StartError> {
        let config = Config::parse(&self.path, text)?;
        self.check_secrets(&config)?;
        let restart_needed = current.restart_only_changes(&config);
        let state = crate::app::state(&config, &self.shared).await?;
        self.live.replace(state);
        self.view.store(Arc::new(config.redacted()));
        *current = config;
        Ok(restart_needed)
    }

    /// Secrets from the secrets file may be new (the file is read whole); a Vault or OAuth2 secret the running
    /// stores do not fetch needs a restart, so a configuration that adds one is refused.
    fn check_secrets(&self, config: &Config) -> Result<(), StartError> {
        let Some(stores) = &self.shared.stores else {
            return Ok(());
        };
        if let Some(file) = &stores.file {
            config.verify_secrets(file)?;
        }
        let fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        let new = config
            .secret_refs()
            .into_iter()
            .find(|r| !matches!(r, SecretRef::File(_)) && !fetched.contains(r));
        match new {
            None => Ok(()),
            Some(r) => Err(config
                .error_at(FieldError::new(
                    "credentials",
                    format!("secret {r} is not fetched by the running proxy: adding a Vault or OAuth2 secret needs a restart"),
                ))
                .into()),
        }
    }

    /// Polls the config file until shutdown (`reload` skips a text already applied or refused).
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            // Refusals are logged, counted and kept for /readyz by `reload`.
            let _ = self.reload().await;
        }
    }
}
