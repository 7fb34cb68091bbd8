//! Prometheus metrics. Label values come only from configuration (route and credential names) or from fixed
//! sets (error codes), so cardinality is bounded by the config, never by traffic.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Seconds; from a cached hit (well under a millisecond) to a slow upstream.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Distinct policy denial reasons kept as label values; later ones are counted as `other`. Reasons are
/// written by policy authors and may embed request data, so they cannot be trusted to stay few.
const MAX_DENIAL_REASONS: usize = 64;
/// Longest denial reason label, in characters.
const MAX_LABEL: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    agent: Arc<str>,
    route: Arc<str>,
    method: &'static str,
    status_class: &'static str,
    decision: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    route: Arc<str>,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitedLabels {
    route: Arc<str>,
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    agent: String,
    version: &'static str,
}

/// A route's metric handles and label values, built once with its runtime object (and once for requests that
/// match no route), so a request emits its metrics without building a label string or hashing one for the
/// per-route series.
#[derive(Clone)]
pub struct RouteMetrics {
    agent: Arc<str>,
    route: Arc<str>,
    request_duration: Histogram,
    upstream_duration: Histogram,
    retries: Counter,
}

impl RouteMetrics {
    pub fn upstream_duration(&self, duration: Duration) {
        self.upstream_duration.observe(duration.as_secs_f64());
    }

    pub fn retried(&self) {
        self.retries.inc();
    }
}

/// What one finished request contributes to the request metrics.
pub struct RequestOutcome<'a> {
    pub route: &'a RouteMetrics,
    pub method: &'a http::Method,
    pub status: http::StatusCode,
    pub decision: Option<&'static str>,
    pub outcome: &'static str,
    pub duration: Duration,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: Arc<str>,
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
    request_duration: HistogramFamily,
    upstream_duration: HistogramFamily,
    denials: Family<DenialLabels, Counter>,
    denial_reasons: Mutex<HashSet<String>>,
    rate_limited: Family<LimitedLabels, Counter>,
    retries: Family<RouteLabels, Counter>,
    open_connections: Gauge,
    spans_dropped: Family<ReasonLabels, Counter>,
    transparent: Family<KindLabels, Counter>,
    audit_dropped: Counter,
    info: Family<InfoLabels, Gauge>,
    exfiltration: Family<CredentialLabels, Counter>,
    pub certificates_minted: Counter,
    policy_decisions: Family<DecisionLabels, Counter>,
    policy_reloads: Family<ResultLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    config_reload_ok: Gauge,
    certificate_renewals: Family<ResultLabels, Counter>,
    certificate_expiry: Gauge,
    controller_contact: Gauge,
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
            "Intercepted requests by agent, route, method, status class, policy decision and outcome (forwarded or error code)",
            requests.clone(),
        );
        let request_duration = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from the request to its response head being sent to the agent, by route",
            request_duration.clone(),
        );
        let upstream_duration = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time from sending upstream to the upstream's response head, per attempt, by route",
            upstream_duration.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "policy_denials",
            "Requests the policy denied, by route and reason (the first 64 distinct reasons; then `other`)",
            denials.clone(),
        );
        let rate_limited = Family::<LimitedLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by route and scope (route or agent)",
            rate_limited.clone(),
        );
        let retries = Family::<RouteLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Upstream attempts after the first (transient failures and rotated credentials), by route",
            retries.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Agent connections to the proxy listener open now",
            open_connections.clone(),
        );
        let spans_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "trace_spans_dropped",
            "Finished spans not exported: queue_full (the export queue was at its bound) or export_failed",
            spans_dropped.clone(),
        );
        let transparent = Family::<KindLabels, Counter>::default();
        registry.register(
            "transparent_connections",
            "Connections on the transparent listener by what they were: tls, http, non_http_denied, \
             non_http_tunnelled, or unknown_destination (no SO_ORIGINAL_DST: not redirected by iptables)",
            transparent.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_lines_dropped",
            "Audit lines not written because the writer's queue was full or the output failed",
            audit_dropped.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        registry.register(
            "info",
            "Always 1; labels name the agent this sidecar serves and the Keyward version (join on instance for per-agent views)",
            info.clone(),
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
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (config file changed, or POST /reload) by result: ok (applied) or error (refused)",
            config_reloads.clone(),
        );
        let config_reload_ok = Gauge::default();
        config_reload_ok.set(1);
        registry.register(
            "config_last_reload_ok",
            "1 when the last configuration reload was applied (or none happened), 0 when it was refused and the previous configuration runs",
            config_reload_ok.clone(),
        );
        let certificate_renewals = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_renewals",
            "Renewals of the intermediate certificate from keyward controller, by result (ok, error)",
            certificate_renewals.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the intermediate certificate from keyward controller expires (Unix time; 0 without a controller)",
            certificate_expiry.clone(),
        );
        let controller_contact = Gauge::default();
        registry.register(
            "controller_last_contact_timestamp_seconds",
            "When keyward controller last answered this sidecar (Unix time; 0 without a controller)",
            controller_contact.clone(),
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
            request_duration,
            upstream_duration,
            denials,
            denial_reasons: Mutex::default(),
            rate_limited,
            retries,
            open_connections,
            spans_dropped,
            transparent,
            audit_dropped,
            info,
            exfiltration,
            certificates_minted,
            policy_decisions,
            policy_reloads,
            config_reloads,
            config_reload_ok,
            certificate_renewals,
            certificate_expiry,
            controller_contact,
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
    pub fn agent(&self, agent: &str) {
        self.info
            .get_or_create(&InfoLabels {
                agent: agent.to_string(),
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
    }

    /// The handles for `route` (`None`: requests that match no route, labelled `none`).
    pub fn route(&self, agent: &str, route: Option<&str>) -> RouteMetrics {
        let route: Arc<str> = Arc::from(route.unwrap_or("none"));
        let labels = RouteLabels { route: route.clone() };
        RouteMetrics {
            agent: Arc::from(agent),
            request_duration: self.request_duration.get_or_create(&labels).clone(),
            upstream_duration: self.upstream_duration.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            route,
        }
    }

    pub fn request(&self, r: &RequestOutcome<'_>) {
        let route = &r.route.route;
        r.route.request_duration.observe(r.duration.as_secs_f64());
        if let Some(decision) = r.decision {
            self.policy_decisions
                .get_or_create(&DecisionLabels {
                    route: route.clone(),
                    decision,
                })
                .inc();
        }
        self.requests
            .get_or_create(&RequestLabels {
                agent: r.route.agent.clone(),
                route: route.clone(),
                method: method_label(r.method),
                status_class: status_class(r.status),
                decision: r.decision.unwrap_or("none"),
                outcome: r.outcome,
            })
            .inc();
    }

    /// Counts a denial by route and reason label: the policy's `code` when it gives one, else its reason cut
    /// to [`MAX_LABEL`] characters; past [`MAX_DENIAL_REASONS`] distinct labels, `other`.
    pub fn policy_denial(&self, route: &RouteMetrics, code: Option<&str>, reason: &str) {
        let label: String = code.unwrap_or(reason).chars().take(MAX_LABEL).collect();
        let reason = {
            let mut seen = self.denial_reasons.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(&label) || (seen.len() < MAX_DENIAL_REASONS && seen.insert(label.clone())) {
                label
            } else {
                "other".to_string()
            }
        };
        let route = route.route.clone();
        self.denials.get_or_create(&DenialLabels { route, reason }).inc();
    }

    pub fn rate_limited(&self, route: &RouteMetrics, scope: &'static str) {
        let route = route.route.clone();
        self.rate_limited.get_or_create(&LimitedLabels { route, scope }).inc();
    }

    /// Counts an agent connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.open_connections.clone())
    }

    pub fn spans_dropped(&self, reason: &'static str, count: usize) {
        self.spans_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(count as u64);
    }

    pub fn transparent_connection(&self, kind: &'static str) {
        self.transparent.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    pub fn exfiltration_attempt(&self, credential: &str) {
        self.exfiltration
            .get_or_create(&CredentialLabels {
                credential: credential.to_string(),
            })
            .inc();
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads.get_or_create(&ResultLabels { result }).inc();
        self.config_reload_ok.set(i64::from(ok));
    }

    pub fn certificate_renewed(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.certificate_renewals.get_or_create(&ResultLabels { result }).inc();
    }

    /// keyward controller answered (any call: certificate, configuration, blocked set).
    pub fn controller_answered(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.controller_contact
            .set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    }

    pub fn certificate_expiry(&self, not_after: std::time::SystemTime) {
        let unix = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.certificate_expiry.set(i64::try_from(unix).unwrap_or(i64::MAX));
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

/// Keeps `keyward_open_connections` up to date however a connection ends.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Standard methods by name; anything else is one value, so a client cannot mint label values.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_reasons_are_capped() {
        let m = Metrics::default();
        let r = m.route("a", Some("r"));
        for i in 0..(MAX_DENIAL_REASONS + 10) {
            m.policy_denial(&r, None, &format!("reason {i}"));
        }
        m.policy_denial(&r, None, "reason 0");
        let text = m.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("keyward_policy_denials_total{"))
            .count();
        assert_eq!(series, MAX_DENIAL_REASONS + 1, "{text}");
        assert!(text.contains("keyward_policy_denials_total{route=\"r\",reason=\"other\"} 10"));
        assert!(text.contains("keyward_policy_denials_total{route=\"r\",reason=\"reason 0\"} 2"));
    }

    #[test]
    fn a_code_labels_the_denial_and_long_reasons_are_cut() {
        let m = Metrics::default();
        let r = m.route("a", Some("r"));
        for i in 0..100 {
            m.policy_denial(
                &r,
                Some("tool_not_allowed"),
                &format!("tool {} {i}", "x".repeat(60_000)),
            );
        }
        m.policy_denial(&r, None, &"y".repeat(60_000));
        let text = m.render();
        assert!(text.contains("reason=\"tool_not_allowed\"} 100"), "{text}");
        assert!(text.contains(&format!("reason=\"{}\"}} 1", "y".repeat(64))));
        assert!(text.len() < 20_000, "{} bytes", text.len());
    }

    /// Every family with at least one series, so that the exposition names them all.
    fn exercised() -> Metrics {
        let m = Metrics::default();
        m.agent("a");
        let r = m.route("a", Some("r"));
        m.request(&RequestOutcome {
            route: &r,
            method: &http::Method::GET,
            status: http::StatusCode::OK,
            decision: Some("allow"),
            outcome: "forwarded",
            duration: Duration::from_millis(1),
        });
        r.upstream_duration(Duration::from_millis(1));
        m.policy_denial(&r, None, "no");
        m.rate_limited(&r, "route");
        r.retried();
        drop(m.connection_opened());
        m.spans_dropped("queue_full", 1);
        m.audit_dropped();
        m.exfiltration_attempt("c");
        m.certificates_minted.inc();
        m.policy_reload(true);
        m.config_reload(true);
        m.certificate_renewed(true);
        m.controller_answered();
        m.vault_request("read", true);
        m.vault_refreshed();
        m.oauth2_refresh("c", "ok");
        m.scrubbed("r", "body", 1);
        m.secret_in_request();
        m
    }

    /// The shipped Grafana dashboard and Prometheus rules may only name metrics Keyward registers.
    #[test]
    fn dashboard_and_alert_rules_name_only_registered_metrics() {
        let text = exercised().render();
        let families: HashSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
            .collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/observability");
        let mut checked = 0;
        for file in ["keyward-dashboard.json", "keyward-alerts.yaml"] {
            let source = std::fs::read_to_string(dir.join(file)).unwrap();
            let mut rest = source.as_str();
            while let Some(i) = rest.find("keyward_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let name = &tail[..end];
                let family = ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix).filter(|f| families.contains(f)))
                    .unwrap_or(name);
                assert!(
                    families.contains(family),
                    "{file} names `{name}`, which Keyward does not register"
                );
                checked += 1;
                rest = &tail[end..];
            }
        }
        assert!(checked >= 20, "the assets chart the metrics ({checked} names checked)");
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        let custom = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&custom), "other");
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
        assert_eq!(status_class(http::StatusCode::TOO_MANY_REQUESTS), "4xx");
    }
}
