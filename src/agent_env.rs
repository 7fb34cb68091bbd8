//! The environment an agent process needs so that every common runtime sends its calls through Keyward and
//! trusts Keyward's certificates, without code changes. One function, used by the webhook for injected pods
//! (and meant for `keyward exec`), so the two cannot drift.
//!
//! - Proxy: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`, each in upper and lower case. Runtimes disagree on which
//!   case wins, so each pair is one setting: when the agent already sets either form, both are left alone and
//!   the caller reports it (an annotation on injected pods).
//! - Node: `NODE_USE_ENV_PROXY=1` (Node 22.21+ and 24 honour the proxy variables with it) and
//!   `NODE_EXTRA_CA_CERTS`.
//! - Everything that reads a PEM bundle: `SSL_CERT_FILE` (OpenSSL, Go, httpx), `REQUESTS_CA_BUNDLE`,
//!   `CURL_CA_BUNDLE`, `GIT_SSL_CAINFO`, `AWS_CA_BUNDLE`, `DENO_CERT`.
//! - Java: `JAVA_TOOL_OPTIONS` with the proxy properties, `http.nonProxyHosts`, and the PKCS#12 trust store
//!   the sidecar writes beside the bundle ([`crate::tls::bundle`]).
//!
//! A variable the agent already sets is never overwritten: the agent's author wins, and the caller says so.

use std::collections::BTreeMap;

use crate::tls::bundle::TRUST_STORE_PASSWORD;

/// Where the agent's traffic and trust go.
pub struct Proxied<'a> {
    pub proxy_host: &'a str,
    pub proxy_port: u16,
    /// The PEM bundle (system roots + Keyward's CA); the PKCS#12 store is beside it with extension `p12`.
    pub bundle: &'a str,
    /// Destinations that bypass the proxy: host names, `.domain` suffixes, IP addresses and CIDRs.
    pub no_proxy: &'a [String],
    /// Placeholder variables (`OPENAI_API_KEY=kw-placeholder-openai`).
    pub placeholders: &'a BTreeMap<String, String>,
}

/// The variables to set, and the names left alone because the agent sets them (or their other-case twin).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Planned {
    pub set: Vec<(String, String)>,
    pub left_alone: Vec<String>,
}

/// Variables set in upper and lower case, each pair one setting.
const PAIRS: [(&str, &str); 3] = [
    ("HTTPS_PROXY", "https_proxy"),
    ("HTTP_PROXY", "http_proxy"),
    ("NO_PROXY", "no_proxy"),
];

/// Variables that name the PEM bundle.
const BUNDLE_VARIABLES: [&str; 7] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "DENO_CERT",
    "NODE_EXTRA_CA_CERTS",
];

/// What to set for an agent whose own environment has the variables for which `is_set` is true.
pub fn plan(p: &Proxied<'_>, is_set: impl Fn(&str) -> bool) -> Planned {
    let proxy = format!("http://{}:{}", p.proxy_host, p.proxy_port);
    let no_proxy = p.no_proxy.join(",");
    let mut wanted: Vec<(String, String)> = Vec::new();
    let mut left_alone = Vec::new();
    for (upper, lower) in PAIRS {
        if is_set(upper) || is_set(lower) {
            left_alone.extend([upper, lower].into_iter().filter(|n| is_set(n)).map(String::from));
            continue;
        }
        let value = if upper == "NO_PROXY" { &no_proxy } else { &proxy };
        wanted.push((upper.into(), value.clone()));
        wanted.push((lower.into(), value.clone()));
    }
    wanted.push(("NODE_USE_ENV_PROXY".into(), "1".into()));
    wanted.extend(BUNDLE_VARIABLES.iter().map(|n| (n.to_string(), p.bundle.to_string())));
    wanted.push(("JAVA_TOOL_OPTIONS".into(), java_options(p)));
    wanted.extend(p.placeholders.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut set = Vec::new();
    for (name, value) in wanted {
        if PAIRS.iter().any(|(u, l)| name == *u || name == *l) || !is_set(&name) {
            set.push((name, value));
        } else {
            left_alone.push(name);
        }
    }
    Planned { set, left_alone }
}

/// The JVM's proxy and trust properties. `http.nonProxyHosts` takes host patterns only (`*.svc`), so CIDRs
/// are left out of it.
fn java_options(p: &Proxied<'_>) -> String {
    let hosts: Vec<String> = p
        .no_proxy
        .iter()
        .filter(|h| !h.contains('/'))
        .map(|h| match h.strip_prefix('.') {
            Some(domain) => format!("*.{domain}"),
            None => h.clone(),
        })
        .collect();
    let store = std::path::Path::new(p.bundle).with_extension("p12");
    let (host, port) = (p.proxy_host, p.proxy_port);
    format!(
        "-Dhttps.proxyHost={host} -Dhttps.proxyPort={port} -Dhttp.proxyHost={host} -Dhttp.proxyPort={port} \
         -Dhttp.nonProxyHosts={} -Djavax.net.ssl.trustStore={} -Djavax.net.ssl.trustStoreType=PKCS12 \
         -Djavax.net.ssl.trustStorePassword={TRUST_STORE_PASSWORD}",
        hosts.join("|"),
        store.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied<'a>(no_proxy: &'a [String], placeholders: &'a BTreeMap<String, String>) -> Proxied<'a> {
        Proxied {
            proxy_host: "127.0.0.1",
            proxy_port: 3128,
            bundle: "/var/run/keyward/trust/ca-bundle.pem",
            no_proxy,
            placeholders,
        }
    }

    fn value<'a>(planned: &'a Planned, name: &str) -> Option<&'a str> {
        planned.set.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_runtime_gets_the_proxy_and_the_trust() {
        let no_proxy = vec!["localhost".to_string(), ".svc".into(), "10.96.0.0/12".into()];
        let placeholders = BTreeMap::from([("OPENAI_API_KEY".to_string(), "kw-placeholder-openai".to_string())]);
        let planned = plan(&proxied(&no_proxy, &placeholders), |_| false);
        for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
            assert_eq!(value(&planned, name), Some("http://127.0.0.1:3128"), "{name}");
        }
        assert_eq!(value(&planned, "no_proxy"), Some("localhost,.svc,10.96.0.0/12"));
        assert_eq!(value(&planned, "NODE_USE_ENV_PROXY"), Some("1"));
        assert_eq!(
            value(&planned, "AWS_CA_BUNDLE"),
            Some("/var/run/keyward/trust/ca-bundle.pem")
        );
        let java = value(&planned, "JAVA_TOOL_OPTIONS").unwrap();
        assert!(java.contains("-Dhttp.nonProxyHosts=localhost|*.svc "), "{java}");
        assert!(
            java.contains("-Djavax.net.ssl.trustStore=/var/run/keyward/trust/ca-bundle.p12"),
            "{java}"
        );
        assert_eq!(value(&planned, "OPENAI_API_KEY"), Some("kw-placeholder-openai"));
        assert!(planned.left_alone.is_empty());
    }

    #[test]
    fn a_proxy_variable_the_agent_sets_in_either_case_leaves_the_pair_alone() {
        let planned = plan(&proxied(&[], &BTreeMap::new()), |n| {
            n == "https_proxy" || n == "SSL_CERT_FILE"
        });
        assert_eq!(
            value(&planned, "HTTPS_PROXY"),
            None,
            "the other case is not set beside it"
        );
        assert_eq!(value(&planned, "https_proxy"), None);
        assert_eq!(value(&planned, "HTTP_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(value(&planned, "SSL_CERT_FILE"), None, "the agent's own wins");
        assert_eq!(
            planned.left_alone,
            vec!["https_proxy".to_string(), "SSL_CERT_FILE".to_string()]
        );
    }
}
