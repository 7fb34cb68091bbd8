//! What Keyward tells operators: logs, Prometheus metrics, OTLP traces and the audit log. Only names, codes and
//! counts go in; the types that carry secret values have no way to be formatted into them.

pub mod audit;
mod export;
pub mod logging;
pub mod metrics;
pub mod trace;

/// What the OpenTelemetry HTTP conventions ask for `url.query`: keys kept, every value replaced by
/// `REDACTED`. Query values are where API keys and personal data travel.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) => format!("{key}=REDACTED"),
            None => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_redacted_and_keys_kept() {
        assert_eq!(
            super::redact_query("api_key=abc&q=hello%20world&flag&x="),
            "api_key=REDACTED&q=REDACTED&flag&x=REDACTED"
        );
    }
}
