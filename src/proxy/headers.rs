//! Hop-by-hop header removal (RFC 9110 §7.6.1), applied to requests and responses alike.

use http::header::{HeaderMap, HeaderName, CONNECTION};

const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Drops `Connection` and what it names, the fixed hop-by-hop set, and every `Proxy-*` header (which carry
/// credentials meant for this proxy, never for the upstream).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    headers.remove(CONNECTION);
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// As [`strip_hop_by_hop`] for a request going upstream, keeping `TE: trailers` when the agent sent it: it
/// says the client accepts trailers, gRPC servers refuse a call without it, and HTTP/2 allows exactly this
/// one value (RFC 9113 §8.2.2). Nothing else of `TE` is passed on.
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap) {
    let trailers = headers
        .get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_trailers_alone_survives_on_requests() {
        let mut h = HeaderMap::new();
        h.insert("te", "trailers, deflate".parse().unwrap());
        strip_request_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = HeaderMap::new();
        h.insert("te", "deflate".parse().unwrap());
        strip_request_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn strips_listed_named_and_proxy_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "5"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-foo", "1"),
            ("transfer-encoding", "chunked"),
            ("authorization", "Bearer x"),
            ("content-type", "text/plain"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "content-type"]);
    }
}
