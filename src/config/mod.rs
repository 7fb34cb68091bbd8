//! Configuration: the YAML contract (`raw`), its validation into runtime types (`validate`), and errors that
//! name the file, line and field.

mod credential;
mod locate;
pub mod raw;
mod schema;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::credentials::CredentialSpec;
use crate::route::Route;
use crate::secrets::file::FileStore;
use crate::secrets::SecretRef;

pub use crate::proxy::runtime::RouteLimits;
pub use crate::proxy::Unmatched;
pub use schema::config_schema;

/// A validated configuration; building one is the only way bad input is turned away.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    text: String,
    pub listen: SocketAddr,
    /// The listener for iptables-redirected connections, when configured.
    pub transparent: Option<crate::proxy::transparent::Settings>,
    pub admin: SocketAddr,
    pub admin_token: Option<TokenSource>,
    pub agent_id: String,
    pub agent_labels: std::collections::BTreeMap<String, String>,
    pub user_header: http::HeaderName,
    pub policy: Option<PolicyConfig>,
    pub agent_rate_limit: Option<crate::ratelimit::Limit>,
    pub route_rate_limits: Vec<(String, crate::ratelimit::Limit)>,
    pub route_limits: HashMap<String, RouteLimits>,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The upstream client's roots, DNS overrides and timeouts.
    pub upstream: crate::upstream::Settings,
    /// Limit on the agent's TLS handshake inside a CONNECT.
    pub agent_tls_handshake_timeout: Duration,
    pub limits: crate::proxy::Limits,
    pub shutdown_grace: Duration,
    pub secrets_file: Option<PathBuf>,
    pub vault: Option<crate::secrets::vault::Settings>,
    pub secrets_poll_interval: Duration,
    pub unmatched: Unmatched,
    pub unmatched_allow_private: bool,
    pub routes: Vec<Route>,
    pub credentials: Vec<CredentialSpec>,
    pub oauth2: Vec<crate::secrets::oauth2::Spec>,
    /// Field path of each credential, in the same order, for errors found after loading.
    credential_fields: Vec<String>,
    pub traces: Option<crate::telemetry::trace::TraceSettings>,
    pub audit: crate::telemetry::audit::AuditSettings,
}

/// Top-level sections that belong to the process rather than to one configuration: listeners, the admin
/// token, the CA, the upstream client, connection limits, secret backends, name overrides and telemetry. A
/// live reload keeps their running values (see [`crate::reload`]).
pub const RESTART_ONLY: &[&str] = &[
    "listen",
    "transparent",
    "admin",
    "admin_token",
    "ca",
    "upstream_tls",
    "upstream",
    "limits",
    "shutdown_grace",
    "secrets",
    "resolve",
    "telemetry",
];

/// Where a token is read from at start.
#[derive(Debug, Clone)]
pub enum TokenSource {
    Env(String),
    File(PathBuf),
}

impl TokenSource {
    pub fn read(&self) -> Result<crate::secrets::Secret, String> {
        let value = match self {
            Self::Env(var) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
            Self::File(path) => std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        };
        let value = value.trim().to_string();
        if value.len() < 16 {
            return Err("the admin token must be at least 16 characters".into());
        }
        Ok(crate::secrets::Secret::new(value))
    }
}

/// `policy:` after validation.
#[derive(Debug)]
pub struct PolicyConfig {
    pub dir: PathBuf,
    pub entrypoint: String,
    pub mode: crate::policy::Mode,
    pub body_limit: u64,
    pub timezone: chrono_tz::Tz,
    pub poll_interval: Duration,
}

impl Config {
    /// The configuration as `/config` shows it: structure, names, hosts and placeholders, secret sources by
    /// reference only. No secret value is ever part of `Config`, and tokens' sources are not shown either.
    pub fn redacted(&self) -> serde_json::Value {
        use serde_json::json;
        let source = |r: &SecretRef| match r {
            SecretRef::File(name) => json!({ "file": name }),
            SecretRef::Vault(v) => {
                json!({ "vault": { "mount": v.mount, "path": v.path, "key": v.key, "version": v.version } })
            }
            SecretRef::OAuth2(name) => json!({ "oauth2": name }),
            SecretRef::VaultAws(lease, _) => {
                json!({ "vault_aws": { "mount": lease.mount, "role": lease.role, "sts": lease.sts } })
            }
        };
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|r| {
                let credentials: Vec<_> = self
                    .credentials
                    .iter()
                    .filter(|c| c.route == r.name)
                    .map(|c| {
                        json!({
                            "name": c.name,
                            "placeholder": c.placeholder,
                            "header": c.kind.header().map(|h| h.as_str()),
                            "query": c.kind.query(),
                            // The secret the credential writes (a Basic password; its username, if read from a
                            // secret, follows in `also`).
                            "source": c.kind.secrets().next().map(source),
                            "also": c.kind.secrets().skip(1).map(source).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({
                    "name": r.name,
                    "hosts": r.hosts.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>(),
                    "paths": r.paths,
                    "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    "allow_private": r.allow_private,
                    "policy": r.policy,
                    "credentials": credentials,
                })
            })
            .collect();
        json!({
            "file": self.path.display().to_string(),
            "listen": self.listen.to_string(),
            "transparent": self.transparent.as_ref().map(|t| json!({ "listen": t.listen.to_string(), "non_http": format!("{:?}", t.non_http) })),
            "admin": self.admin.to_string(),
            "admin_token": self.admin_token.is_some(),
            "agent": { "id": self.agent_id, "labels": self.agent_labels },
            "secrets": {
                "file": self.secrets_file.as_ref().map(|p| p.display().to_string()),
                "vault": self.vault.as_ref().map(|v| json!({ "address": v.connection.address, "auth": v.auth.method() })),
            },
            "policy": self.policy.as_ref().map(|p| json!({ "dir": p.dir.display().to_string(), "entrypoint": p.entrypoint, "mode": format!("{:?}", p.mode) })),
            "unmatched": format!("{:?}", self.unmatched),
            "routes": routes,
        })
    }

    /// Every policy entry point in use: the default and the routes' own.
    pub fn policy_entrypoints(&self) -> Vec<String> {
        let mut all: Vec<String> = self.policy.iter().map(|p| p.entrypoint.clone()).collect();
        for r in &self.routes {
            if let Some(e) = &r.policy {
                if !all.contains(e) {
                    all.push(e.clone());
                }
            }
        }
        all
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(Located),
}

/// `file:line:column: field: message`, the form editors and CI annotations understand.
#[derive(Debug)]
pub struct Located {
    pub file: String,
    pub at: Option<(usize, usize)>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A problem with one field, before it is placed in the file.
#[derive(Debug)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The environment variables a configuration reads: `KEYWARD_AGENT_ID` and the OpenTelemetry exporter's
/// standard ones. [`Config::load`] takes them from the process, so validation itself is a pure function.
#[derive(Debug, Default, Clone)]
pub struct Environment(HashMap<String, String>);

impl Environment {
    const NAMES: &'static [&'static str] = &[
        "KEYWARD_AGENT_ID",
        "OTEL_SDK_DISABLED",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ];

    /// The variables as this process has them.
    pub fn from_process() -> Self {
        Self::from_pairs(
            Self::NAMES
                .iter()
                .filter_map(|n| Some((n.to_string(), std::env::var(n).ok()?))),
        )
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// A variable's value, unless it is unset or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(path, text)
    }

    /// Parses and validates configuration text with this process's environment; `path` names it in errors
    /// and anchors relative paths.
    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        Self::parse_in(path, text, &Environment::from_process())
    }

    /// As [`Config::parse`], with the environment given.
    pub fn parse_in(path: &Path, text: String, env: &Environment) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = crate::yaml::parse(&text).map_err(|e| {
            ConfigError::Invalid(Located {
                file: path.display().to_string(),
                at: (e.line > 0).then_some((e.line, e.column)),
                field: String::new(),
                message: e.message,
            })
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        match validate::validate(raw, base, env) {
            Ok(mut config) => {
                config.path = path.to_path_buf();
                config.text = text;
                Ok(config)
            }
            Err(e) => Err(locate(path, &text, e)),
        }
    }

    /// Every secret the configuration reads: credentials' own, and OAuth2 client ids, secrets and refresh
    /// tokens.
    pub fn secret_refs(&self) -> Vec<SecretRef> {
        let mut refs: Vec<SecretRef> = self
            .credentials
            .iter()
            .flat_map(|c| c.kind.secrets().cloned())
            .collect();
        for o in &self.oauth2 {
            refs.push(o.client_id.clone());
            refs.extend(o.client_secret.clone());
            refs.extend(o.refresh_token.clone().map(SecretRef::Vault));
        }
        refs.sort();
        refs.dedup();
        refs
    }

    /// Places a problem found at start (outside validation) at its field in this file.
    /// `env` variable → placeholder, for every credential that names one (`keyward exec` sets them).
    pub fn placeholder_env(&self) -> std::collections::BTreeMap<String, String> {
        self.credentials
            .iter()
            .filter_map(|c| Some((c.env.clone()?, c.placeholder.clone())))
            .collect()
    }

    /// The file's text as loaded.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The [`RESTART_ONLY`] sections that differ in `new`, compared as parsed YAML (so comments and layout
    /// do not count).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let parse = |text: &str| serde_yaml::from_str::<serde_yaml::Value>(text).unwrap_or_default();
        let (old, new) = (parse(&self.text), parse(&new.text));
        RESTART_ONLY
            .iter()
            .copied()
            .filter(|key| old.get(key) != new.get(key))
            .collect()
    }

    pub fn error_at(&self, error: FieldError) -> ConfigError {
        locate(&self.path, &self.text, error)
    }

    /// Every file secret a credential reads (directly or for OAuth2) must exist in the file; the error points
    /// at the first credential that names a missing one. (Vault secrets are checked when fetched.)
    pub fn verify_secrets(&self, file: &FileStore) -> Result<(), ConfigError> {
        for (spec, field) in self.credentials.iter().zip(&self.credential_fields) {
            let names: Vec<&String> = spec
                .kind
                .secrets()
                .flat_map(|secret| match secret {
                    SecretRef::File(name) => vec![name],
                    SecretRef::OAuth2(name) => self
                        .oauth2
                        .iter()
                        .filter(|o| &o.name == name)
                        .flat_map(|o| [Some(&o.client_id), o.client_secret.as_ref()])
                        .flatten()
                        .filter_map(|r| match r {
                            SecretRef::File(n) => Some(n),
                            _ => None,
                        })
                        .collect(),
                    SecretRef::Vault(_) | SecretRef::VaultAws(..) => Vec::new(),
                })
                .collect();
            if let Some(name) = names.into_iter().find(|n| !file.contains(n)) {
                let path = self.secrets_file.as_deref().unwrap_or(Path::new("?"));
                let message = format!("no secret named `{name}` in {}", path.display());
                return Err(locate(
                    &self.path,
                    &self.text,
                    FieldError::new(format!("{field}.secret"), message),
                ));
            }
        }
        Ok(())
    }
}

fn locate(path: &Path, text: &str, error: FieldError) -> ConfigError {
    ConfigError::Invalid(Located {
        file: path.display().to_string(),
        at: locate::Locator::new(text).find(&error.field),
        field: error.field,
        message: error.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_an_input_of_validation() {
        let text = "ca: {cert: c, key: k}\nsecrets: {file: s}\nagent: {id: from-file}\n";
        let path = Path::new("/etc/keyward/keyward.yaml");
        let bare = Config::parse_in(path, text.into(), &Environment::default()).unwrap();
        assert_eq!(bare.agent_id, "from-file");
        assert!(bare.traces.is_none());
        let env = Environment::from_pairs([
            ("KEYWARD_AGENT_ID".to_string(), "from-env".to_string()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
                "http://127.0.0.1:4317".to_string(),
            ),
        ]);
        let set = Config::parse_in(path, text.into(), &env).unwrap();
        assert_eq!(set.agent_id, "from-env");
        assert!(set.traces.is_some());
        let blank = Environment::from_pairs([("KEYWARD_AGENT_ID".to_string(), " ".to_string())]);
        assert_eq!(
            Config::parse_in(path, text.into(), &blank).unwrap().agent_id,
            "from-file"
        );
    }
}
