//! Test support: an in-code PKI, an echo upstream that records what it received, a helper that runs the real
//! `keyward` binary on port 0 from inline YAML, and real clients (curl, Python requests/httpx).

#![allow(dead_code)]

pub mod apiserver;
pub mod clients;
pub mod echo;
pub mod hostile;
pub mod openbao;
pub mod otlp;
pub mod pki;
pub mod proxy;

/// Every real secret used by the suite carries this marker, so that the test command can grep all output
/// for it; placeholders, names and anything else a test prints must not.
pub const MARKER: &str = "REALSECRET";

/// The secrets file every spawned proxy starts with.
pub const SECRETS: &[(&str, &str)] = &[
    ("openai_key", "sk-REALSECRET-openai-5a1f7c"),
    ("org_id", "org-REALSECRET-81b2"),
    ("maps_key", "key REALSECRET&maps=33"),
    ("github_token", "ghp_REALSECRET_9f8e7d"),
    ("oauth_client_id", "keyward-agent"),
    ("oauth_client_secret", "cs-REALSECRET-42"),
    // AWS: moto takes any 20 upper-case letters and digits as an access key id.
    ("aws_access_key_id", "AKIAREALSECRETKEY001"),
    ("aws_secret_access_key", "REALSECRET/aws+secret-key-0123456789abcd"),
];

/// Text fit for an assertion message: anything holding a real secret (the marker, in any case) is masked.
pub fn masked(text: &str) -> String {
    if text.to_ascii_lowercase().contains(&MARKER.to_ascii_lowercase()) {
        "<real secret>".to_string()
    } else {
        text.to_string()
    }
}

pub fn secret(name: &str) -> &'static str {
    SECRETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .expect("known test secret")
}

/// Bounded wait for a condition that another process or task will make true.
pub async fn eventually<F: FnMut() -> bool>(what: &str, limit: std::time::Duration, mut check: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().trim_end_matches(" kB").parse().ok())
}
