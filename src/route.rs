//! Which configured route a request belongs to: (host, port, method, path) → route. Pure, no I/O.
//!
//! The host always comes from the CONNECT authority or the absolute-form URI, never from a `Host` header, so an
//! agent cannot steer credentials by spoofing headers.

use std::sync::Arc;

use http::Method;

/// Which ports a host pattern admits. A host without a port means the scheme's default port only: a pattern
/// that matched every port sent a route's secret to whatever listener the agent ran on another port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    /// 443 for https, 80 for http.
    Default,
    One(u16),
    /// `host:*`, every port, named explicitly.
    Any,
}

impl PortSpec {
    fn admits(self, port: u16, https: bool) -> bool {
        match self {
            Self::Default => port == if https { 443 } else { 80 },
            Self::One(p) => p == port,
            Self::Any => true,
        }
    }
}

/// One entry of a route's `hosts` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`, `api.example.com:8443` or `api.example.com:*`.
    Exact { host: String, port: PortSpec },
    /// `*.example.com`: one or more labels below `example.com` (stored as `.example.com`).
    Suffix { suffix: String, port: PortSpec },
}

/// As written in the config: `api.example.com`, `api.example.com:8443`, `*.example.com:*`.
impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (host, port) = match self {
            Self::Exact { host, port } => (host.clone(), port),
            Self::Suffix { suffix, port } => (format!("*{suffix}"), port),
        };
        match port {
            PortSpec::Default => write!(f, "{host}"),
            PortSpec::One(p) => write!(f, "{host}:{p}"),
            PortSpec::Any => write!(f, "{host}:*"),
        }
    }
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (text, any_port) = match text.strip_suffix(":*") {
            Some(host) => (host, true),
            None => (text, false),
        };
        let (host, port) = split_host_port(text).ok_or_else(|| format!("`{text}` is not a host or host:port"))?;
        let port = match (port, any_port) {
            (Some(_), true) => return Err(format!("`{text}:*`: a port and `*` together")),
            (Some(p), false) => PortSpec::One(p),
            (None, true) => PortSpec::Any,
            (None, false) => PortSpec::Default,
        };
        let host = normalize_host(host);
        if let Some(rest) = host.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') || !valid_dns_name(rest) {
                return Err(format!("`{text}`: a wildcard must be `*.` followed by a domain name"));
            }
            return Ok(Self::Suffix {
                suffix: format!(".{rest}"),
                port,
            });
        }
        if host.contains('*') {
            return Err(format!(
                "`{text}`: `*` is only allowed as the first label (`*.example.com`)"
            ));
        }
        if host.parse::<std::net::IpAddr>().is_err() && !valid_dns_name(&host) {
            return Err(format!("`{text}` is not a valid host name"));
        }
        Ok(Self::Exact { host, port })
    }

    /// `host` must already be normalized with [`normalize_host`]; `https` picks the default port.
    pub fn matches(&self, host: &str, port: u16, https: bool) -> bool {
        let (ok, want_port) = match self {
            Self::Exact { host: h, port } => (h == host, port),
            Self::Suffix { suffix, port } => (host.len() > suffix.len() && host.ends_with(suffix.as_str()), port),
        };
        ok && want_port.admits(port, https)
    }
}

/// A route as matching needs it; what it grants lives with the credentials.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    /// Path prefixes, matched on segment boundaries; empty means every path.
    pub paths: Vec<String>,
    /// Empty means every method.
    pub methods: Vec<Method>,
    pub allow_private: bool,
    pub allow_plain_http: bool,
    /// Policy entry point overriding the default one.
    pub policy: Option<String>,
    /// mTLS toward this route's upstream: the certificate chain and key, read like any secret.
    pub client_certificate: Option<ClientCertificate>,
}

/// Where a route's client certificate and key are read from (PEM).
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub cert: crate::secrets::SecretRef,
    pub key: crate::secrets::SecretRef,
}

impl Route {
    fn matches_host(&self, host: &str, port: u16, https: bool) -> bool {
        self.hosts.iter().any(|p| p.matches(host, port, https))
    }

    fn matches_request(&self, method: &Method, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| path_has_prefix(path, p)))
    }
}

/// Routes in configuration order, each with whatever the caller keeps alongside it (the proxy keeps its
/// per-route runtime object).
#[derive(Debug)]
pub struct RouteTable<T = Route> {
    routes: Vec<Arc<T>>,
}

impl<T: AsRef<Route>> RouteTable<T> {
    pub fn new(routes: Vec<T>) -> Self {
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// Whether any route names this destination, which decides interception at CONNECT time.
    pub fn knows_host(&self, host: &str, port: u16, https: bool) -> bool {
        self.routes.iter().any(|r| rule(r).matches_host(host, port, https))
    }

    /// The first route, in configuration order, that matches all of host, port, method and path. `path` must
    /// be normalized with [`normalize_path`].
    pub fn find(&self, host: &str, port: u16, https: bool, method: &Method, path: &str) -> Option<&Arc<T>> {
        self.routes.iter().find(|r| {
            let route = rule(r);
            route.matches_host(host, port, https) && route.matches_request(method, path)
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.routes.iter()
    }
}

/// The matching rules of a table entry.
fn rule<T: AsRef<Route>>(entry: &Arc<T>) -> &Route {
    T::as_ref(entry)
}

impl AsRef<Route> for Route {
    fn as_ref(&self) -> &Route {
        self
    }
}

/// Lower-case, without a trailing dot or IPv6 brackets: the one form every comparison uses.
pub fn normalize_host(host: &str) -> String {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Splits `host[:port]`, accepting `[v6]:port` and bare IPv6 literals.
pub fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if text.is_empty() {
        return None;
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match text.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => Some((text, None)),
        Some((h, p)) if !h.is_empty() => Some((h, Some(p.parse().ok()?))),
        Some(_) => None,
        None => Some((text, None)),
    }
}

/// `/v1` matches `/v1` and `/v1/x` but not `/v1beta`; a prefix ending in `/` is a plain prefix.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A request path as route matching sees it: unreserved characters percent-decoded (`%73afe` is `safe`).
#[derive(Debug, PartialEq, Eq)]
pub struct NormalPath {
    pub path: String,
    /// Encoded `/` or `\`, a raw `\` or double encoding (`%25xx`): servers disagree on these (Tomcat, Spring,
    /// Jetty, IIS each resolve some of them), so a route limited to `paths` refuses them.
    pub ambiguous: bool,
}

/// Why a path is refused on every route.
#[derive(Debug, PartialEq, Eq)]
pub struct DotSegment;

/// Normalizes a request path for matching. A `.` or `..` segment in any spelling (`%2e`, `..;param`, `.;`) is
/// refused outright: an upstream that resolves it would let `/allowed/../admin` escape a path-prefix route.
pub fn normalize_path(raw: &str) -> Result<NormalPath, DotSegment> {
    let bytes = raw.as_bytes();
    let mut path = String::with_capacity(raw.len());
    let mut ambiguous = raw.contains('\\');
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match escaped {
            Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                path.push(char::from(c));
                i += 3;
            }
            Some(c) => {
                ambiguous |= matches!(c, b'/' | b'\\' | b'%');
                path.push_str(&raw[i..i + 3]);
                i += 3;
            }
            None => {
                let next = raw[i..].chars().next().expect("in bounds");
                path.push(next);
                i += next.len_utf8();
            }
        }
    }
    let dot = path.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or_default();
        name == "." || name == ".."
    });
    if dot {
        return Err(DotSegment);
    }
    Ok(NormalPath { path, ambiguous })
}

/// A CONNECT target or SNI Keyward will mint a leaf for: an IP literal, or a DNS name of at most 253 bytes.
pub fn valid_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok() || valid_dns_name(host)
}

fn valid_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(hosts: &[&str], paths: &[&str], methods: &[Method]) -> Route {
        Route {
            name: "r".into(),
            hosts: hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            methods: methods.to_vec(),
            allow_private: false,
            allow_plain_http: false,
            policy: None,
            client_certificate: None,
        }
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::parse("API.Example.com.").unwrap();
        assert!(exact.matches("api.example.com", 443, true));
        assert!(exact.matches("api.example.com", 80, false));
        assert!(
            !exact.matches("api.example.com", 8443, true),
            "a bare host is the default port only"
        );
        assert!(!exact.matches("api.example.com", 443, false));
        assert!(!exact.matches("api.example.com", 4444, false));
        let with_port = HostPattern::parse("api.example.com:8443").unwrap();
        assert!(!with_port.matches("api.example.com", 443, true));
        assert!(with_port.matches("api.example.com", 8443, true));
        let any = HostPattern::parse("localhost:*").unwrap();
        assert!(any.matches("localhost", 4444, false) && any.matches("localhost", 1, true));
        assert!(HostPattern::parse("localhost:80:*").is_err());
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com", 443, true));
        assert!(wild.matches("a.b.example.com", 443, true));
        assert!(!wild.matches("example.com", 443, true));
        assert!(!wild.matches("badexample.com", 443, true));
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("bad host").is_err());
        assert!(HostPattern::parse("127.0.0.1:99999").is_err());
        assert!(HostPattern::parse("[::1]:443").unwrap().matches("::1", 443, true));
    }

    #[test]
    fn table_respects_order_paths_and_methods() {
        let table = RouteTable::new(vec![
            route(&["api.example.com"], &["/v1"], &[Method::GET]),
            route(&["*.example.com"], &[], &[]),
        ]);
        let first = |m: &Method, p: &str| table.find("api.example.com", 443, true, m, p).map(Arc::as_ptr);
        let r0 = Arc::as_ptr(&table.routes[0]);
        let r1 = Arc::as_ptr(&table.routes[1]);
        assert_eq!(first(&Method::GET, "/v1/models"), Some(r0));
        assert_eq!(first(&Method::GET, "/v1beta"), Some(r1));
        assert_eq!(first(&Method::POST, "/v1/models"), Some(r1));
        assert!(table.find("other.org", 443, true, &Method::GET, "/").is_none());
        assert!(table.knows_host("x.example.com", 443, true));
        assert!(!table.knows_host("x.example.com", 1, true));
    }

    #[test]
    fn dot_segments_in_every_spelling_are_refused() {
        for path in [
            "/v1/../admin",
            "/v1/%2E%2e/admin",
            "/./x",
            "/v1/safe/..;/admin",
            "/v1/safe/.;/..;/admin",
            "/v1/%2e%2E;x=1/admin",
            "/v1/..",
        ] {
            assert_eq!(normalize_path(path), Err(DotSegment), "{path}");
        }
        for path in ["/v1/file.txt", "/v1/..x", "/v1/x..", "/"] {
            assert!(normalize_path(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn ambiguous_encodings_are_flagged_and_unreserved_ones_decoded() {
        for path in [
            "/v1/safe/..%2fadmin",
            "/v1/safe/%2e%2e%2fadmin",
            "/v1/safe/..%5cadmin",
            "/v1/safe/..%5Cadmin",
            "/v1/safe/%252e%252e/admin",
            "/v1/safe/..\\admin",
        ] {
            assert!(normalize_path(path).unwrap().ambiguous, "{path}");
        }
        let plain = normalize_path("/v1/%73afe/%7Euser%20x").unwrap();
        assert_eq!(plain.path, "/v1/safe/~user%20x");
        assert!(!plain.ambiguous);
    }
}
