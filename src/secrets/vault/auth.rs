//! Logging in to Vault and keeping the token alive: token (from an environment variable or a file), AppRole,
//! or Kubernetes service-account auth. Renewal happens at two thirds of the lease; a failed renewal, or a token
//! past its lease, leads to a fresh login.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};

/// How Keyward proves itself to Vault.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A token read from `env` (the variable's name) or `file` at every login.
    Token { env: Option<String>, file: Option<PathBuf> },
    AppRole {
        mount: String,
        role_id: String,
        secret_id_file: PathBuf,
    },
    Kubernetes {
        mount: String,
        role: String,
        jwt_path: PathBuf,
    },
}

impl Auth {
    /// The method's name, for display.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::AppRole { .. } => "approle",
            Self::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// Where Vault is and how to talk to it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub address: String,
    pub namespace: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// A logged-in client and when its token needs attention.
pub struct Session {
    pub client: VaultClient,
    lease: Lease,
}

/// When a token should be renewed and when it stops working; `None` for tokens that never expire.
struct Lease {
    renew_at: Option<Instant>,
    expires_at: Option<Instant>,
}

impl Lease {
    fn new(lease_secs: u64, renewable: bool) -> Self {
        if lease_secs == 0 {
            return Self {
                renew_at: None,
                expires_at: None,
            };
        }
        let now = Instant::now();
        let lease = Duration::from_secs(lease_secs);
        Self {
            renew_at: renewable.then(|| now + lease * 2 / 3),
            expires_at: Some(now + lease),
        }
    }
}

/// Labels for the Vault request metric: the operation and whether it succeeded.
pub type Report<'a> = &'a (dyn Fn(&'static str, bool) + Send + Sync);

impl Session {
    pub async fn login(conn: &Connection, auth: &Auth, report: Report<'_>) -> Result<Self, String> {
        let mut client = client(conn)?;
        let (token, lease, renewable) = match auth {
            Auth::Token { env, file } => {
                let token = match (env, file) {
                    (Some(var), _) => {
                        std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
                    }
                    (None, Some(path)) => read_trimmed(path)?,
                    (None, None) => return Err("token auth needs `env` or `file`".into()),
                };
                client.set_token(&token);
                let info = vaultrs::token::lookup_self(&client).await;
                report("lookup", info.is_ok());
                let info = info.map_err(|e| format!("token lookup failed: {e}"))?;
                (token, info.ttl, info.renewable.unwrap_or(false))
            }
            Auth::AppRole {
                mount,
                role_id,
                secret_id_file,
            } => {
                let secret_id = read_trimmed(secret_id_file)?;
                let info = vaultrs::auth::approle::login(&client, mount, role_id, &secret_id).await;
                report("login", info.is_ok());
                let info = info.map_err(|e| format!("AppRole login failed: {e}"))?;
                (info.client_token, info.lease_duration, info.renewable)
            }
            Auth::Kubernetes { mount, role, jwt_path } => {
                let jwt = read_trimmed(jwt_path)?;
                let info = vaultrs::auth::kubernetes::login(&client, mount, role, &jwt).await;
                report("login", info.is_ok());
                let info = info.map_err(|e| format!("Kubernetes login failed: {e}"))?;
                (info.client_token, info.lease_duration, info.renewable)
            }
        };
        client.set_token(&token);
        Ok(Self {
            client,
            lease: Lease::new(lease, renewable),
        })
    }

    /// Renews the token when due. Returns `Err` when the session must be replaced by a new login.
    pub async fn keep_alive(&mut self, report: Report<'_>) -> Result<(), String> {
        let now = Instant::now();
        if self.lease.expires_at.is_some_and(|t| now >= t) {
            return Err("the Vault token expired".into());
        }
        if self.lease.renew_at.is_none_or(|t| now < t) {
            return Ok(());
        }
        let info = vaultrs::token::renew_self(&self.client, None).await;
        report("renew", info.is_ok());
        let info = info.map_err(|e| format!("token renewal failed: {e}"))?;
        self.lease = Lease::new(info.lease_duration, info.renewable);
        tracing::debug!(lease_secs = info.lease_duration, "Vault token renewed");
        Ok(())
    }
}

fn client(conn: &Connection) -> Result<VaultClient, String> {
    let mut settings = VaultClientSettingsBuilder::default();
    settings.address(&conn.address).timeout(Some(conn.timeout)).token("");
    if let Some(ns) = &conn.namespace {
        settings.set_namespace(ns.clone());
    }
    if let Some(ca) = &conn.ca_file {
        settings.ca_certs(vec![ca.display().to_string()]);
    }
    let settings = settings.build().map_err(|e| format!("Vault client settings: {e}"))?;
    VaultClient::new(settings).map_err(|e| format!("Vault client: {e}"))
}

fn read_trimmed(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}
