//! Prometheus metrics. Label values come only from configuration (route and credential names) or from fixed
//! sets (error codes), so cardinality is bounded by the config, never by traffic.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaultLabels {
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    credential: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScrubLabels {
    route: String,
    location: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    exfiltration: Family<CredentialLabels, Counter>,
    pub certificates_minted: Counter,
    policy_decisions: Family<DecisionLabels, Counter>,
    policy_reloads: Family<ResultLabels, Counter>,
    policy_reload_ok: Gauge,
    vault_requests: Family<VaultLabels, Counter>,
    vault_last_success: Gauge,
    oauth2_refreshes: Family<RefreshLabels, Counter>,
    scrubbed: Family<ScrubLabels, Counter>,
    secret_in_request: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keyward");
        let requests = Family::<RequestLabels, Counter>::default();
        let exfiltration = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "requests",
            "Intercepted requests by route and outcome (forwarded or error code)",
            requests.clone(),
        );
        registry.register(
            "exfiltration_attempts",
            "Placeholders sent toward destinations their credential is not bound to",
            exfiltration.clone(),
        );
        let certificates_minted = Counter::default();
        registry.register(
            "certificates_minted",
            "Leaf certificates signed for intercepted hosts",
            certificates_minted.clone(),
        );
        let policy_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "policy_decisions",
            "Policy decisions by route: allow, deny, shadow_deny (forwarded) or error (denied, fail closed)",
            policy_decisions.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads by result (success or failure)",
            policy_reloads.clone(),
        );
        let policy_reload_ok = Gauge::default();
        policy_reload_ok.set(1);
        registry.register(
            "policy_last_reload_ok",
            "1 when the last policy (re)load compiled, 0 when it was refused and the previous policy runs",
            policy_reload_ok.clone(),
        );
        let vault_requests = Family::<VaultLabels, Counter>::default();
        registry.register(
            "vault_requests",
            "Requests to Vault by operation (login, lookup, renew, read) and result; none happen per proxied request",
            vault_requests.clone(),
        );
        let vault_last_success = Gauge::default();
        registry.register(
            "vault_last_refresh_success_timestamp_seconds",
            "Unix time of the last refresh that read every Vault secret (cache age = now - this)",
            vault_last_success.clone(),
        );
        let oauth2_refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "oauth2_refreshes",
            "OAuth2 token refreshes by credential and result: ok, or the failure reason (connect, http_4xx, http_5xx, invalid_response, secret_unavailable, write_back)",
            oauth2_refreshes.clone(),
        );
        let scrubbed = Family::<ScrubLabels, Counter>::default();
        registry.register(
            "scrubbed_secrets",
            "Real secret values found in upstream responses and replaced by placeholders, by route and location",
            scrubbed.clone(),
        );
        let secret_in_request = Counter::default();
        registry.register(
            "secret_in_request",
            "Requests refused because the agent sent a real secret value (outbound canary)",
            secret_in_request.clone(),
        );
        Self {
            registry,
            requests,
            exfiltration,
            certificates_minted,
            policy_decisions,
            policy_reloads,
            policy_reload_ok,
            vault_requests,
            vault_last_success,
            oauth2_refreshes,
            scrubbed,
            secret_in_request,
        }
    }
}

impl Metrics {
    pub fn request(&self, route: Option<&str>, outcome: &'static str) {
        let route = route.unwrap_or("none").to_string();
        self.requests.get_or_create(&RequestLabels { route, outcome }).inc();
    }

    pub fn exfiltration_attempt(&self, credential: &str) {
        self.exfiltration
            .get_or_create(&CredentialLabels {
                credential: credential.to_string(),
            })
            .inc();
    }

    pub fn policy_decision(&self, route: Option<&str>, decision: &'static str) {
        let route = route.unwrap_or("none").to_string();
        self.policy_decisions
            .get_or_create(&DecisionLabels { route, decision })
            .inc();
    }

    pub fn policy_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.policy_reloads.get_or_create(&ResultLabels { result }).inc();
        self.policy_reload_ok.set(i64::from(ok));
    }

    pub fn vault_request(&self, op: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.vault_requests.get_or_create(&VaultLabels { op, result }).inc();
    }

    pub fn vault_refreshed(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.vault_last_success.set(now as i64);
    }

    pub fn oauth2_refresh(&self, credential: &str, result: &'static str) {
        self.oauth2_refreshes
            .get_or_create(&RefreshLabels {
                credential: credential.to_string(),
                result,
            })
            .inc();
    }

    pub fn scrubbed(&self, route: &str, location: &'static str, count: usize) {
        self.scrubbed
            .get_or_create(&ScrubLabels {
                route: route.to_string(),
                location,
            })
            .inc_by(count as u64);
    }

    pub fn secret_in_request(&self) {
        self.secret_in_request.inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
