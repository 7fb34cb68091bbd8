//! Which configured route a request belongs to: (host, port, method, path) → route. Pure, no I/O.
//!
//! The host always comes from the CONNECT authority or the absolute-form URI, never from a `Host` header, so an
//! agent cannot steer credentials by spoofing headers.

use std::sync::Arc;

use http::Method;

/// One entry of a route's `hosts` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com` or `api.example.com:8443`.
    Exact { host: String, port: Option<u16> },
    /// `*.example.com`: one or more labels below `example.com` (stored as `.example.com`).
    Suffix { suffix: String, port: Option<u16> },
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (host, port) = split_host_port(text).ok_or_else(|| format!("`{text}` is not a host or host:port"))?;
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

    /// `host` must already be normalized with [`normalize_host`].
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let (ok, want_port) = match self {
            Self::Exact { host: h, port } => (h == host, port),
            Self::Suffix { suffix, port } => (host.len() > suffix.len() && host.ends_with(suffix.as_str()), port),
        };
        ok && want_port.is_none_or(|p| p == port)
    }
}

/// A route as matching needs it; what it grants lives with the credentials.
#[derive(Debug)]
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
}

impl Route {
    fn matches_host(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|p| p.matches(host, port))
    }

    fn matches_request(&self, method: &Method, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| path_has_prefix(path, p)))
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// Whether any route names this destination, which decides interception at CONNECT time.
    pub fn knows_host(&self, host: &str, port: u16) -> bool {
        self.routes.iter().any(|r| r.matches_host(host, port))
    }

    /// The first route, in configuration order, that matches all of host, port, method and path.
    pub fn find(&self, host: &str, port: u16, method: &Method, path: &str) -> Option<&Arc<Route>> {
        self.routes
            .iter()
            .find(|r| r.matches_host(host, port) && r.matches_request(method, path))
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

/// True when the path has `.`/`..` segments, raw or percent-encoded; upstreams may resolve them, which would
/// let `/allowed/../admin` escape a path-prefix route.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    })
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
        }
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::parse("API.Example.com.").unwrap();
        assert!(exact.matches("api.example.com", 443));
        assert!(exact.matches("api.example.com", 8443));
        let with_port = HostPattern::parse("api.example.com:8443").unwrap();
        assert!(!with_port.matches("api.example.com", 443));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com", 443));
        assert!(wild.matches("a.b.example.com", 443));
        assert!(!wild.matches("example.com", 443));
        assert!(!wild.matches("badexample.com", 443));
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("bad host").is_err());
        assert!(HostPattern::parse("127.0.0.1:99999").is_err());
        assert!(HostPattern::parse("[::1]:443").unwrap().matches("::1", 443));
    }

    #[test]
    fn table_respects_order_paths_and_methods() {
        let table = RouteTable::new(vec![
            route(&["api.example.com"], &["/v1"], &[Method::GET]),
            route(&["*.example.com"], &[], &[]),
        ]);
        let first = |m: &Method, p: &str| table.find("api.example.com", 443, m, p).map(Arc::as_ptr);
        let r0 = Arc::as_ptr(&table.routes[0]);
        let r1 = Arc::as_ptr(&table.routes[1]);
        assert_eq!(first(&Method::GET, "/v1/models"), Some(r0));
        assert_eq!(first(&Method::GET, "/v1beta"), Some(r1));
        assert_eq!(first(&Method::POST, "/v1/models"), Some(r1));
        assert!(table.find("other.org", 443, &Method::GET, "/").is_none());
        assert!(table.knows_host("x.example.com", 1));
    }

    #[test]
    fn dot_segments_detected() {
        assert!(has_dot_segment("/v1/../admin"));
        assert!(has_dot_segment("/v1/%2E%2e/admin"));
        assert!(has_dot_segment("/./x"));
        assert!(!has_dot_segment("/v1/file.txt"));
        assert!(!has_dot_segment("/v1/..x"));
    }
}
