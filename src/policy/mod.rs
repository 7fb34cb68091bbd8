//! Rego policy on every intercepted request, evaluated in-process with regorus.
//!
//! Policies are compiled once per entry point, then to a VM program (see `eval`), so nothing is parsed or built
//! from source per request. A reload compiles the whole directory afresh and swaps it in only if everything compiles, so a
//! broken edit never replaces a working policy.

mod eval;
pub mod input;
mod load;
pub mod test;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use regorus::Value;

pub use load::PolicySet;

/// The documented default entry point; `data.keyward.allow` (a bare boolean) is accepted in its place.
pub const DEFAULT_ENTRYPOINT: &str = "data.keyward.decision";
pub const FALLBACK_ENTRYPOINT: &str = "data.keyward.allow";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Denials are enforced.
    Enforce,
    /// Denials are recorded but the request is forwarded.
    Shadow,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("{0}")]
    Compile(String),
    #[error("no rule for entry point `{entrypoint}` (nor `{FALLBACK_ENTRYPOINT}`) in {dir}")]
    NoEntrypoint { entrypoint: String, dir: String },
}

/// The outcome of one evaluation. A policy that errs or answers nothing usable denies (fail closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    pub reason: String,
    /// A short identifier for the reason (`tool_not_allowed`), when the policy gives one: it labels the
    /// denial metric, where the free-text reason (which may quote the agent's input) must not.
    pub code: Option<String>,
    /// True when the deny comes from a failed evaluation rather than from the policy's own rules.
    pub error: bool,
}

impl Decision {
    fn from_value(value: &Value) -> Self {
        let deny = |reason: &str| Self {
            allow: false,
            reason: reason.into(),
            code: Some("policy_error".into()),
            error: true,
        };
        match value {
            Value::Bool(allow) => Self {
                allow: *allow,
                reason: default_reason(*allow),
                code: None,
                error: false,
            },
            Value::Object(fields) => {
                let allow = match fields.get(&Value::from("allow")) {
                    Some(Value::Bool(b)) => *b,
                    _ => return deny("policy_error: the decision object has no boolean `allow`"),
                };
                let reason = match fields.get(&Value::from("reason")) {
                    Some(Value::String(r)) => r.to_string(),
                    _ => default_reason(allow),
                };
                let code = match fields.get(&Value::from("code")) {
                    Some(Value::String(c))
                        if !c.is_empty()
                            && c.len() <= 40
                            && c.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) =>
                    {
                        Some(c.to_string())
                    }
                    _ => None,
                };
                Self {
                    allow,
                    reason,
                    code,
                    error: false,
                }
            }
            Value::Undefined => deny("policy_error: the policy produced no decision (undefined)"),
            _ => deny("policy_error: the decision is neither a boolean nor an object"),
        }
    }
}

fn default_reason(allow: bool) -> String {
    if allow { "allowed by policy" } else { "denied by policy" }.into()
}

pub struct Settings {
    pub dir: PathBuf,
    /// Every entry point in use: the default one plus those routes name.
    pub entrypoints: Vec<String>,
    pub mode: Mode,
}

/// The running policy set, its reload state, and the settings needed to reload it.
pub struct Policies {
    current: ArcSwap<PolicySet>,
    settings: Settings,
    last_error: RwLock<Option<String>>,
}

impl Policies {
    pub fn load(settings: Settings) -> Result<Self, PolicyError> {
        let set = PolicySet::load(&settings.dir, &settings.entrypoints)?;
        Ok(Self {
            current: ArcSwap::from_pointee(set),
            settings,
            last_error: RwLock::new(None),
        })
    }

    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// Evaluates `entrypoint` for `input`.
    pub fn decide(&self, entrypoint: &str, input: Value) -> Decision {
        match self.current.load().eval(entrypoint, input) {
            Ok(value) => Decision::from_value(&value),
            Err(e) => Decision {
                allow: false,
                code: Some("policy_error".into()),
                reason: format!("policy_error: evaluation failed: {e}"),
                error: true,
            },
        }
    }

    /// Recompiles the directory. Returns whether the policy changed; on error the running set stays and the
    /// error is kept for `/readyz`.
    pub fn reload(&self) -> Result<bool, PolicyError> {
        let result = PolicySet::load(&self.settings.dir, &self.settings.entrypoints);
        let mut last_error = self.last_error.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(set) => {
                *last_error = None;
                let changed = set.fingerprint() != self.current.load().fingerprint();
                if changed {
                    self.current.store(Arc::new(set));
                }
                Ok(changed)
            }
            Err(e) => {
                *last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The error of the last failed reload, if the last reload failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Polls the policy directory and reloads on change, logging the outcome. Holds the policies weakly and
    /// stops once they are gone (a configuration reload replaced them and its last request finished).
    pub async fn watch(policies: std::sync::Weak<Self>, every: Duration, on_result: impl Fn(bool) + Send + 'static) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let Some(mut seen) = policies.upgrade().map(|p| load::dir_fingerprint(&p.settings.dir)) else {
            return;
        };
        loop {
            tick.tick().await;
            let Some(this) = policies.upgrade() else { return };
            let now = load::dir_fingerprint(&this.settings.dir);
            if now == seen {
                continue;
            }
            seen = now;
            let dir = this.settings.dir.clone();
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Ok(changed)) => {
                    if changed {
                        tracing::info!(dir = %dir.display(), "policy reloaded");
                    }
                    on_result(true);
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "policy reload refused; the previous policy stays in force");
                    on_result(false);
                }
                Err(e) => tracing::error!(error = %e, "policy reload task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dir: &std::path::Path, files: &[(&str, &str)]) -> Policies {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Policies::load(Settings {
            dir: dir.into(),
            entrypoints: vec![DEFAULT_ENTRYPOINT.into()],
            mode: Mode::Enforce,
        })
        .unwrap()
    }

    fn input(method: &str) -> Value {
        Value::from(serde_json::json!({ "request": { "method": method } }))
    }

    #[test]
    fn decision_object_bool_fallback_and_undefined() {
        let dir = tempfile::tempdir().unwrap();
        let p = set(
            dir.path(),
            &[("p.rego", "package keyward\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"read\"} if input.request.method == \"GET\"\n")],
        );
        assert_eq!(
            p.decide(DEFAULT_ENTRYPOINT, input("GET")),
            Decision {
                allow: true,
                reason: "read".into(),
                code: None,
                error: false
            }
        );
        let undefined = p.decide(DEFAULT_ENTRYPOINT, input("POST"));
        assert!(!undefined.allow && undefined.error, "{undefined:?}");

        let dir = tempfile::tempdir().unwrap();
        let p = set(
            dir.path(),
            &[(
                "p.rego",
                "package keyward\nimport rego.v1\ndefault allow := false\nallow if input.request.method == \"GET\"\n",
            )],
        );
        assert!(p.decide(DEFAULT_ENTRYPOINT, input("GET")).allow, "bare allow accepted");
        assert!(!p.decide(DEFAULT_ENTRYPOINT, input("DELETE")).allow);
    }

    #[test]
    fn broken_reload_keeps_the_running_policy_and_reports_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = set(
            dir.path(),
            &[("p.rego", "package keyward\nimport rego.v1\ndefault allow := false\n")],
        );
        std::fs::write(
            dir.path().join("p.rego"),
            "package keyward\nimport rego.v1\nallow if {\n  input.x ==\n}\n",
        )
        .unwrap();
        let err = p.reload().unwrap_err().to_string();
        assert!(err.contains("p.rego:") && err.contains(":5:"), "{err}");
        assert_eq!(p.last_error().as_deref(), Some(err.as_str()));
        assert!(
            !p.decide(DEFAULT_ENTRYPOINT, input("GET")).allow,
            "old policy still answers"
        );
        std::fs::write(
            dir.path().join("p.rego"),
            "package keyward\nimport rego.v1\nallow := true\n",
        )
        .unwrap();
        assert!(p.reload().unwrap());
        assert!(p.last_error().is_none());
        assert!(p.decide(DEFAULT_ENTRYPOINT, input("GET")).allow);
    }

    #[test]
    fn data_files_become_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = set(
            dir.path(),
            &[
                ("tools.yaml", "allowed_tools: [search]\n"),
                (
                    "p.rego",
                    "package keyward\nimport rego.v1\nallow if input.tool in data.allowed_tools\n",
                ),
            ],
        );
        let v = |t: &str| Value::from(serde_json::json!({ "tool": t }));
        assert!(p.decide(DEFAULT_ENTRYPOINT, v("search")).allow);
        assert!(!p.decide(DEFAULT_ENTRYPOINT, v("delete")).allow);
    }
}
