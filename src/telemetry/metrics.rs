//! Prometheus metrics. Label values come only from configuration (route and credential names) or from fixed
//! sets (error codes), so cardinality is bounded by the config, never by traffic.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    outcome: &'static str,
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
        Self {
            registry,
            requests,
            exfiltration,
            certificates_minted,
        }
    }
}

impl Metrics {
    pub fn request(&self, route: Option<&str>, outcome: &'static str) {
        let route = route.unwrap_or("none").to_string();
        self.requests
            .get_or_create(&RequestLabels { route, outcome })
            .inc();
    }

    pub fn exfiltration_attempt(&self, credential: &str) {
        self.exfiltration
            .get_or_create(&CredentialLabels {
                credential: credential.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
