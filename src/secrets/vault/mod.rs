//! The Vault backend: every configured KV secret is fetched at start and refreshed in the background, and
//! requests read only the in-memory cache, so Vault is never on a request's path.
//!
//! While Vault is unreachable, cached values keep serving until they are `max_stale` old; past that, or for a
//! secret never fetched, requests fail at once with 503 naming the credential. Failed refreshes retry with
//! exponential backoff (capped at the refresh interval) and jitter.

pub mod auth;
mod lease;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{AwsLease, KvVersion, Secret, SecretError, SecretRef, SecretStore, VaultRef};
use crate::telemetry::metrics::Metrics;
use auth::{Auth, Connection, Session};

#[derive(Debug, Clone)]
pub struct Settings {
    pub connection: Connection,
    pub auth: Auth,
    pub refresh_interval: Duration,
    /// Up to this much is added at random to each wait, so that many sidecars do not refresh in step.
    pub refresh_jitter: Duration,
    pub max_stale: Duration,
}

struct Entry {
    value: Secret,
    fetched: Instant,
}

/// The KV secrets to read: one read per (engine, mount, path, version), however many keys are used from it.
type Reads = BTreeMap<(KvVersion, String, String, Option<u64>), Vec<VaultRef>>;

pub struct VaultStore {
    settings: Settings,
    reads: Reads,
    /// The logged-in client, shared by the refresher and on-demand re-reads.
    session: tokio::sync::Mutex<Option<Session>>,
    cache: RwLock<HashMap<VaultRef, Entry>>,
    last_error: RwLock<Option<String>>,
    metrics: Arc<Metrics>,
    generation: super::Generation,
    /// Roles of the AWS secrets engine the credentials use, and their current leases.
    leases: Vec<AwsLease>,
    leased: RwLock<HashMap<AwsLease, lease::Lease>>,
    /// Replaced leases, revoked once requests signed with them have had time to finish.
    retired: std::sync::Mutex<Vec<(String, Instant)>>,
}

impl VaultStore {
    pub fn new(
        settings: Settings,
        refs: impl IntoIterator<Item = VaultRef>,
        leases: impl IntoIterator<Item = AwsLease>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut wanted: Vec<AwsLease> = leases.into_iter().collect();
        wanted.sort();
        wanted.dedup();
        let mut reads = Reads::new();
        for r in refs {
            let key = (r.kv, r.mount.clone(), r.path.clone(), r.version);
            let entry = reads.entry(key).or_default();
            if !entry.contains(&r) {
                entry.push(r);
            }
        }
        Self {
            settings,
            reads,
            session: tokio::sync::Mutex::new(None),
            cache: RwLock::new(HashMap::new()),
            last_error: RwLock::new(None),
            metrics,
            generation: Default::default(),
            leases: wanted,
            leased: RwLock::new(HashMap::new()),
            retired: Default::default(),
        }
    }

    /// Keeps the cache fresh (and the AWS leases renewed) until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        if !self.leases.is_empty() {
            let leases = self.clone();
            let task = tokio::spawn(leases.run_leases());
            // Ends with this task (the store's life), as the KV loop does.
            let _abort = AbortOnDrop(task);
            return self.run_kv().await;
        }
        self.run_kv().await
    }

    async fn run_kv(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let wait = match self.refresh().await {
                Ok(()) => {
                    backoff = Duration::from_millis(250);
                    *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = None;
                    self.settings.refresh_interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Vault refresh failed; cached secrets keep serving up to max_stale");
                    *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.settings.refresh_interval);
                    wait
                }
            };
            tokio::time::sleep(wait + jitter(self.settings.refresh_jitter)).await;
        }
    }

    /// Logs in if needed and reads every configured secret once; the error names what failed (never a value).
    pub(crate) async fn refresh(&self) -> Result<(), String> {
        let mut session = self.session.lock().await;
        let client = self.logged_in(&mut session).await?;
        let mut first_error = None;
        let mut relogin = false;
        for (read, refs) in &self.reads {
            match self.read(client, read).await {
                Ok(data) => self.store(refs, &data, &mut first_error),
                Err(e) => {
                    first_error.get_or_insert(format!("reading {}/{}: {}", read.1, read.2, describe(&e)));
                    if matches!(&e, vaultrs::error::ClientError::APIError { code: 403, .. }) {
                        // An expired or revoked token: log in afresh next time.
                        relogin = true;
                        break;
                    }
                }
            }
        }
        if relogin {
            *session = None;
        }
        if first_error.is_none() {
            self.metrics.vault_refreshed();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Reads the secret behind `r` now (an upstream rejected its value); returns whether the value changed.
    pub async fn reread(&self, r: &VaultRef) -> Result<bool, String> {
        let key = (r.kv, r.mount.clone(), r.path.clone(), r.version);
        let refs = self.reads.get(&key).ok_or("not a configured Vault secret")?;
        let mut session = self.session.lock().await;
        let client = self.logged_in(&mut session).await?;
        let before = self.cached(r);
        let data = self.read(client, &key).await.map_err(|e| describe(&e))?;
        self.store(refs, &data, &mut None);
        Ok(self.cached(r) != before)
    }

    /// Writes `value` as `r`'s key in a new version of its KV v2 secret, keeping the secret's other keys.
    pub async fn write_back(&self, r: &VaultRef, value: &str) -> Result<(), String> {
        if r.kv != KvVersion::V2 {
            return Err("write-back needs a KV v2 secret".into());
        }
        let mut session = self.session.lock().await;
        let client = self.logged_in(&mut session).await?;
        let mut data: HashMap<String, serde_json::Value> =
            vaultrs::kv2::read(client, &r.mount, &r.path).await.unwrap_or_default();
        data.insert(r.key.clone(), serde_json::Value::String(value.to_string()));
        let written = vaultrs::kv2::set(client, &r.mount, &r.path, &data).await;
        self.metrics.vault_request("write", written.is_ok());
        written.map_err(|e| format!("writing {}/{}: {}", r.mount, r.path, describe(&e)))?;
        let now = Instant::now();
        self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(
            r.clone(),
            Entry {
                value: Secret::new(value),
                fetched: now,
            },
        );
        self.generation.bump();
        Ok(())
    }

    /// The session's client, renewing or logging in first when needed.
    async fn logged_in<'s>(
        &self,
        session: &'s mut Option<Session>,
    ) -> Result<&'s vaultrs::client::VaultClient, String> {
        let report = |op: &'static str, ok: bool| self.metrics.vault_request(op, ok);
        if let Some(s) = session.as_mut() {
            if let Err(e) = s.keep_alive(&report).await {
                tracing::info!(reason = %e, "logging in to Vault again");
                *session = None;
            }
        }
        if session.is_none() {
            *session = Some(Session::login(&self.settings.connection, &self.settings.auth, &report).await?);
            tracing::info!(address = %self.settings.connection.address, "logged in to Vault");
        }
        Ok(&session.as_ref().expect("set above").client)
    }

    async fn read(
        &self,
        client: &vaultrs::client::VaultClient,
        (kv, mount, path, version): &(KvVersion, String, String, Option<u64>),
    ) -> Result<HashMap<String, serde_json::Value>, vaultrs::error::ClientError> {
        let read = match (kv, version) {
            (KvVersion::V2, None) => vaultrs::kv2::read(client, mount, path).await,
            (KvVersion::V2, Some(v)) => vaultrs::kv2::read_version(client, mount, path, *v).await,
            (KvVersion::V1, _) => vaultrs::kv1::get(client, mount, path).await,
        };
        self.metrics.vault_request("read", read.is_ok());
        read
    }

    fn cached(&self, r: &VaultRef) -> Option<Secret> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(r)
            .map(|e| e.value.clone())
    }

    fn store(&self, refs: &[VaultRef], data: &HashMap<String, serde_json::Value>, first_error: &mut Option<String>) {
        let now = Instant::now();
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for r in refs {
            let value = match data.get(&r.key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => {
                    first_error.get_or_insert(format!("{}/{} has no key `{}`", r.mount, r.path, r.key));
                    continue;
                }
            };
            if let Err(e) = super::check_length(&value) {
                first_error.get_or_insert(format!("{}/{} key `{}`: {e}", r.mount, r.path, r.key));
                continue;
            }
            let kept = cache.get(r).map(|e| e.value.clone()).filter(|v| v.expose() == value);
            if kept.is_none() && cache.contains_key(r) {
                tracing::info!(secret = %SecretRef::Vault(r.clone()), "secret value rotated in Vault");
            }
            let changed = kept.is_none();
            cache.insert(
                r.clone(),
                Entry {
                    value: kept.unwrap_or_else(|| Secret::new(value)),
                    fetched: now,
                },
            );
            if changed {
                self.generation.bump();
            }
        }
    }

    fn last_error(&self) -> String {
        self.last_error
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "not fetched yet".into())
    }
}

impl SecretStore for VaultStore {
    fn generation(&self) -> u64 {
        self.generation.get()
    }

    fn get(&self, secret: &SecretRef) -> Result<Secret, SecretError> {
        let unavailable = |reason: String| SecretError::Unavailable {
            name: secret.to_string(),
            reason,
        };
        let r = match secret {
            SecretRef::Vault(r) => r,
            SecretRef::VaultAws(lease, field) => return self.lease_value(lease, *field).map_err(unavailable),
            _ => return Err(unavailable("not a Vault secret".into())),
        };
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        match cache.get(r) {
            Some(entry) if entry.fetched.elapsed() <= self.settings.max_stale => Ok(entry.value.clone()),
            Some(entry) => Err(unavailable(format!(
                "last fetched {}s ago, over max_stale ({}s); Vault: {}",
                entry.fetched.elapsed().as_secs(),
                self.settings.max_stale.as_secs(),
                self.last_error()
            ))),
            None => Err(unavailable(format!(
                "not fetched from Vault yet ({})",
                self.last_error()
            ))),
        }
    }

    fn not_ready(&self) -> Option<String> {
        if let Some(lease) = self.missing_lease() {
            return Some(format!(
                "waiting for AWS credentials {}: {}",
                SecretRef::VaultAws(lease.clone(), super::LeaseField::All),
                self.last_error()
            ));
        }
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let missing = self.reads.values().flatten().find(|r| !cache.contains_key(*r))?;
        Some(format!(
            "waiting for Vault secret {}: {}",
            SecretRef::Vault(missing.clone()),
            self.last_error()
        ))
    }
}

/// Vault's own error messages (e.g. "permission denied") and the transport's; never a response body.
fn describe(e: &vaultrs::error::ClientError) -> String {
    match e {
        vaultrs::error::ClientError::APIError { code, errors } => format!("HTTP {code}: {}", errors.join("; ")),
        other => {
            let mut out = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                out.push_str(": ");
                out.push_str(&s.to_string());
                source = s.source();
            }
            out
        }
    }
}

/// Aborts a task when dropped: background work that must not outlive its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}
