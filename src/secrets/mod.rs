//! Real secret values and the stores that hold them.
//!
//! A store answers lookups from memory only: backends load and refresh in the background, so a proxied request
//! never waits on a file read or a network call to get its secret.

pub mod file;
pub mod google;
pub mod oauth2;
pub mod vault;

use std::fmt;
use std::sync::Arc;

/// A real secret. `Debug` and `Display` print `***` so that a secret passed to a log macro, an error or a panic
/// message by mistake still does not leak; the value is reachable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The real value. Call it only where the value is written into an outbound request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a credential's value lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretRef {
    /// A name in the secrets file.
    File(String),
    /// A key of a Vault KV secret.
    Vault(VaultRef),
    /// The current access token of the named OAuth2 credential.
    OAuth2(String),
    /// A field of the current lease of Vault's AWS secrets engine.
    VaultAws(AwsLease, LeaseField),
}

/// Dynamic AWS credentials: `<mount>/creds/<role>` (or `<mount>/sts/<role>`) of Vault's AWS secrets engine,
/// leased, renewed and revoked by the Vault store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsLease {
    pub mount: String,
    pub role: String,
    pub sts: bool,
}

/// Which part of an AWS lease a reference reads. `All` is the three together (JSON), as a signer must use
/// them: from one lease, never a mix across a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseField {
    AccessKey,
    SecretKey,
    SecurityToken,
    All,
}

/// `mount`/`path`, field `key`, in a KV v1 or v2 engine (v2 optionally pinned to a version).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultRef {
    pub kv: KvVersion,
    pub mount: String,
    pub path: String,
    pub key: String,
    pub version: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KvVersion {
    V1,
    V2,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(name) => write!(f, "{name}"),
            Self::OAuth2(name) => write!(f, "oauth2:{name}"),
            Self::Vault(v) => {
                write!(f, "vault:{}/{}#{}", v.mount, v.path, v.key)?;
                match v.version {
                    Some(version) => write!(f, "@{version}"),
                    None => Ok(()),
                }
            }
            Self::VaultAws(lease, field) => write!(
                f,
                "vault:{}/{}/{}#{}",
                lease.mount,
                if lease.sts { "sts" } else { "creds" },
                lease.role,
                match field {
                    LeaseField::AccessKey => "access_key",
                    LeaseField::SecretKey => "secret_key",
                    LeaseField::SecurityToken => "security_token",
                    LeaseField::All => "*",
                }
            ),
        }
    }
}

/// Why a secret could not be produced. Messages name the secret, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{0}` is not in the secrets store")]
    Missing(String),
    #[error("secret `{name}` is unavailable: {reason}")]
    Unavailable { name: String, reason: String },
}

/// Where credentials get their real values from.
pub trait SecretStore: Send + Sync {
    /// The current value of a secret, from memory: backends refresh in the background.
    fn get(&self, secret: &SecretRef) -> Result<Secret, SecretError>;

    /// Why the store cannot serve every configured secret yet, for `/readyz`; `None` when it can.
    fn not_ready(&self) -> Option<String>;

    /// Grows whenever a value the store serves changes (a file reload, a Vault rotation, a new OAuth2 token).
    /// Whoever derives something from the values (the scrubbers) rebuilds it when this moves, and reads no
    /// value otherwise. Read it before the values: a value stored before its bump is then never missed.
    fn generation(&self) -> u64;

    /// Fetches a secret from its backend now, because an upstream just rejected the cached value; resolves
    /// to whether the value changed. Only this rare path ever reaches a backend for a request.
    fn reread<'a>(&'a self, _secret: &'a SecretRef) -> BoxFuture<'a, bool> {
        Box::pin(async { false })
    }

    /// Makes sure values that are fetched on demand (OAuth2 access tokens) are fresh before `get`. Failures
    /// are not returned here: `get` reports them, naming the credential.
    fn prepare<'a>(&'a self, _secrets: &'a [SecretRef]) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// At shutdown: gives back what the store holds on lease (Vault AWS credentials are revoked).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Longest secret value accepted. Values are matched in every response on their route, and an IdP can hand
/// out a 64 KB token; past this size a value is refused with an error naming it.
pub const MAX_SECRET_LEN: usize = 16 * 1024;

/// Refuses a value longer than [`MAX_SECRET_LEN`]; the message gives the length only.
pub fn check_length(value: &str) -> Result<(), String> {
    if value.len() > MAX_SECRET_LEN {
        return Err(format!(
            "the value is {} bytes, over the {MAX_SECRET_LEN}-byte limit for secrets",
            value.len()
        ));
    }
    Ok(())
}

/// A store's change counter, for [`SecretStore::generation`].
#[derive(Debug, Default)]
pub struct Generation(std::sync::atomic::AtomicU64);

impl Generation {
    /// Call after the new value is in place.
    pub fn bump(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The configured backends behind one store: references are routed to the backend they name.
#[derive(Clone)]
pub struct Secrets {
    pub file: Option<Arc<file::FileStore>>,
    pub vault: Option<Arc<vault::VaultStore>>,
    pub oauth2: Option<Arc<oauth2::OAuth2Store>>,
}

impl SecretStore for Secrets {
    fn get(&self, secret: &SecretRef) -> Result<Secret, SecretError> {
        let missing = || SecretError::Unavailable {
            name: secret.to_string(),
            reason: "no backend configured".into(),
        };
        match secret {
            SecretRef::File(_) => self.file.as_ref().ok_or_else(missing)?.get(secret),
            SecretRef::Vault(_) | SecretRef::VaultAws(..) => self.vault.as_ref().ok_or_else(missing)?.get(secret),
            SecretRef::OAuth2(_) => self.oauth2.as_ref().ok_or_else(missing)?.get(secret),
        }
    }

    fn not_ready(&self) -> Option<String> {
        self.vault.as_ref().and_then(|v| v.not_ready())
    }

    fn generation(&self) -> u64 {
        let file = self.file.as_ref().map_or(0, |f| f.generation());
        let vault = self.vault.as_ref().map_or(0, |v| v.generation());
        let oauth2 = self.oauth2.as_ref().map_or(0, |o| o.generation());
        file + vault + oauth2
    }

    fn reread<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let result = match (secret, &self.vault, &self.file) {
                (SecretRef::Vault(r), Some(vault), _) => vault.reread(r).await,
                (SecretRef::File(_), _, Some(file)) => {
                    let file = file.clone();
                    tokio::task::spawn_blocking(move || file.refresh().map_err(|e| e.to_string()))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                }
                _ => Ok(false),
            };
            result.unwrap_or_else(|e| {
                tracing::warn!(secret = %secret, error = %e, "re-reading a rejected secret failed");
                false
            })
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(vault) = &self.vault {
                vault.revoke_leases().await;
            }
        })
    }

    fn prepare<'a>(&'a self, secrets: &'a [SecretRef]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(oauth2) = &self.oauth2 else { return };
            let mut base: Option<Arc<dyn SecretStore>> = None;
            for secret in secrets {
                if let SecretRef::OAuth2(name) = secret {
                    if oauth2.is_fresh(name) {
                        continue;
                    }
                    let base = base.get_or_insert_with(|| Arc::new(self.clone()));
                    oauth2.ensure_fresh(name, base).await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("sk-real-value");
        assert_eq!(format!("{s} {s:?} {:?}", Some(s.clone())), "*** *** Some(***)");
        assert_eq!(s.expose(), "sk-real-value");
    }
}
