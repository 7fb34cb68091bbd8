//! Dynamic AWS credentials from Vault's AWS secrets engine: each configured role is read once
//! (`<mount>/creds/<role>` creates an IAM user and key; `<mount>/sts/<role>` returns temporary credentials),
//! renewed at two-thirds of its lease, read again when the lease cannot be renewed (the old one is revoked a
//! little later, once requests signed with it have gone), served until the lease expires while Vault is
//! unreachable, and revoked at shutdown, so the engine deletes what it created.
//!
//! The lease API is plain HTTP on the session's client (vaultrs' typed AWS calls drop the lease id).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::VaultStore;
use crate::secrets::{AwsLease, LeaseField, Secret};

/// How long a replaced lease stays valid for requests already signed with it.
const REVOKE_GRACE: Duration = Duration::from_secs(30);
/// Bounds on the wait between two looks at the leases.
const MIN_WAIT: Duration = Duration::from_millis(200);
const RETRY: Duration = Duration::from_secs(2);

/// One lease and what it holds.
pub(super) struct Lease {
    access_key: Secret,
    secret_key: Secret,
    security_token: Option<Secret>,
    id: String,
    renewable: bool,
    /// What the lease was granted when read: a renewal granting much less means it nears its maximum.
    granted: Duration,
    renew_at: Instant,
    expires_at: Instant,
}

impl Lease {
    fn due(&self, now: Instant) -> bool {
        now >= self.renew_at
    }
}

/// When to renew a lease of `duration`: at two-thirds of it.
fn renew_at(now: Instant, duration: Duration) -> Instant {
    now + duration.mul_f64(2.0 / 3.0)
}

impl VaultStore {
    /// Acquires, renews and replaces leases until the task is dropped.
    pub(super) async fn run_leases(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            let mut next = now + self.settings.refresh_interval;
            for lease in &self.leases {
                let due = self
                    .leased
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(lease)
                    .map(|l| (l.due(now), l.renew_at));
                let wait_until = match due {
                    Some((false, at)) => at,
                    Some((true, _)) | None => match self.maintain(lease).await {
                        Ok(at) => at,
                        Err(e) => {
                            tracing::warn!(lease = %crate::secrets::SecretRef::VaultAws(lease.clone(), LeaseField::All), error = %e,
                                "Vault AWS lease not renewed or acquired; the current one serves until it expires");
                            *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = Some(e);
                            Instant::now() + RETRY
                        }
                    },
                };
                next = next.min(wait_until);
            }
            if let Some(at) = self.revoke_retired().await {
                next = next.min(at);
            }
            tokio::time::sleep_until(next.max(Instant::now() + MIN_WAIT).into()).await;
        }
    }

    /// Renews the lease of `lease` if it can, else reads a new one (revoking the old one after a grace
    /// period); returns when to look again.
    async fn maintain(&self, lease: &AwsLease) -> Result<Instant, String> {
        let mut session = self.session.lock().await;
        let client = self.logged_in(&mut session).await?;
        let current = self
            .leased
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(lease)
            .map(|l| (l.id.clone(), l.renewable, l.granted));
        if let Some((id, true, granted)) = &current {
            match renew(client, id).await {
                // A renewal granting less than the lease's term means the lease reaches its maximum: new
                // credentials are read now, while the old ones still work, rather than after they stop.
                Ok(duration) if duration < *granted => {
                    self.metrics.vault_request("renew", true);
                    tracing::info!(
                        lease_s = duration.as_secs(),
                        "Vault AWS lease near its maximum; reading new credentials"
                    );
                }
                Ok(duration) => {
                    self.metrics.vault_request("renew", true);
                    let now = Instant::now();
                    let mut leased = self.leased.write().unwrap_or_else(|e| e.into_inner());
                    let l = leased.get_mut(lease).expect("read above");
                    l.renew_at = renew_at(now, duration);
                    l.expires_at = now + duration;
                    tracing::debug!(lease_s = duration.as_secs(), "Vault AWS lease renewed");
                    return Ok(l.renew_at);
                }
                Err(e) => {
                    self.metrics.vault_request("renew", false);
                    tracing::info!(error = %e, "Vault AWS lease not renewable any more; reading new credentials");
                }
            }
        }
        let fresh = acquire(client, lease).await;
        self.metrics.vault_request("read", fresh.is_ok());
        let fresh = fresh?;
        let at = fresh.renew_at;
        self.leased
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(lease.clone(), fresh);
        self.generation.bump();
        tracing::info!(lease = %crate::secrets::SecretRef::VaultAws(lease.clone(), LeaseField::All), "new AWS credentials from Vault");
        if let Some((old, ..)) = current {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((old, Instant::now() + REVOKE_GRACE));
        }
        Ok(at)
    }

    /// Revokes replaced leases whose grace period is over; returns when the next one is due.
    async fn revoke_retired(&self) -> Option<Instant> {
        let now = Instant::now();
        let due: Vec<String> = {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            let (due, kept) = retired.drain(..).partition(|(_, at)| *at <= now);
            *retired = kept;
            due.into_iter().map(|(id, _)| id).collect()
        };
        if !due.is_empty() {
            let mut session = self.session.lock().await;
            if let Ok(client) = self.logged_in(&mut session).await {
                for id in due {
                    if let Err(e) = revoke(client, &id).await {
                        tracing::warn!(error = %e, "revoking a replaced Vault AWS lease failed; Vault revokes it when it expires");
                    }
                }
            }
        }
        let retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.iter().map(|(_, at)| *at).min()
    }

    /// Revokes every lease held, replaced ones included (at shutdown): the engine deletes the IAM users and
    /// keys it made.
    pub async fn revoke_leases(&self) {
        let mut ids: Vec<String> = self
            .leased
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, l)| l.id)
            .collect();
        ids.extend(
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
                .map(|(id, _)| id),
        );
        if ids.is_empty() {
            return;
        }
        let mut session = self.session.lock().await;
        let client = match self.logged_in(&mut session).await {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(error = %e, "cannot revoke Vault AWS leases at shutdown; Vault revokes them when they expire");
                return;
            }
        };
        for id in ids {
            match revoke(client, &id).await {
                Ok(()) => tracing::info!("Vault AWS lease revoked at shutdown"),
                Err(e) => {
                    tracing::warn!(error = %e, "revoking a Vault AWS lease failed; Vault revokes it when it expires")
                }
            }
        }
    }

    /// A field of the current lease, while it is valid.
    pub(super) fn lease_value(&self, lease: &AwsLease, field: LeaseField) -> Result<Secret, String> {
        let leased = self.leased.read().unwrap_or_else(|e| e.into_inner());
        let l = leased
            .get(lease)
            .ok_or_else(|| format!("no credentials from Vault yet ({})", self.last_error()))?;
        if Instant::now() >= l.expires_at {
            return Err(format!("the lease expired and was not renewed ({})", self.last_error()));
        }
        match field {
            LeaseField::AccessKey => Ok(l.access_key.clone()),
            LeaseField::SecretKey => Ok(l.secret_key.clone()),
            LeaseField::SecurityToken => l
                .security_token
                .clone()
                .ok_or_else(|| "the lease has no security token".into()),
            LeaseField::All => Ok(Secret::new(
                serde_json::json!({
                    "access_key": l.access_key.expose(),
                    "secret_key": l.secret_key.expose(),
                    "security_token": l.security_token.as_ref().map(Secret::expose),
                })
                .to_string(),
            )),
        }
    }

    /// Leases not acquired yet, for `/readyz`.
    pub(super) fn missing_lease(&self) -> Option<&AwsLease> {
        let leased = self.leased.read().unwrap_or_else(|e| e.into_inner());
        self.leases.iter().find(|l| !leased.contains_key(*l))
    }
}

/// `GET <mount>/creds/<role>` (or `sts`): a new lease.
async fn acquire(client: &vaultrs::client::VaultClient, lease: &AwsLease) -> Result<Lease, String> {
    let kind = if lease.sts { "sts" } else { "creds" };
    let path = format!("{}/{kind}/{}", lease.mount, lease.role);
    let body = call(client, http::Method::GET, &path, None).await?;
    let field = |name: &str| body["data"][name].as_str().filter(|v| !v.is_empty()).map(Secret::new);
    let (Some(access_key), Some(secret_key)) = (field("access_key"), field("secret_key")) else {
        return Err(format!("{path}: the answer has no access_key and secret_key"));
    };
    let duration = Duration::from_secs(body["lease_duration"].as_u64().unwrap_or(0).max(1));
    let now = Instant::now();
    Ok(Lease {
        access_key,
        secret_key,
        security_token: field("security_token"),
        id: body["lease_id"].as_str().unwrap_or_default().to_string(),
        renewable: body["renewable"].as_bool().unwrap_or(false),
        granted: duration,
        renew_at: renew_at(now, duration),
        expires_at: now + duration,
    })
}

/// `PUT sys/leases/renew`: the lease's new duration.
async fn renew(client: &vaultrs::client::VaultClient, id: &str) -> Result<Duration, String> {
    let body = call(
        client,
        http::Method::PUT,
        "sys/leases/renew",
        Some(serde_json::json!({ "lease_id": id })),
    )
    .await?;
    match body["lease_duration"].as_u64() {
        Some(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err("the renewal granted no time".into()),
    }
}

async fn revoke(client: &vaultrs::client::VaultClient, id: &str) -> Result<(), String> {
    call(
        client,
        http::Method::PUT,
        "sys/leases/revoke",
        Some(serde_json::json!({ "lease_id": id })),
    )
    .await
    .map(|_| ())
}

/// One Vault API call with the session's token; the answer's JSON (empty for 204). Errors name the path and
/// Vault's own error messages, never a value.
async fn call(
    client: &vaultrs::client::VaultClient,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    use vaultrs::client::Client as _;
    let url = format!("{}/v1/{path}", client.http().base.trim_end_matches('/'));
    let mut request = client
        .http()
        .http
        .request(method, url)
        .header("X-Vault-Token", client.settings().token.as_str());
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{path}: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let errors: Vec<&str> = json["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str())
            .collect();
        return Err(format!("{path}: HTTP {}: {}", status.as_u16(), errors.join("; ")));
    }
    Ok(json)
}
