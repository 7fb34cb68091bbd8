//! Placeholder ↔ secret: finds placeholders in a request, checks that the destination is the one the credential
//! is bound to, and writes the real value in the credential's format.
//!
//! A placeholder is bound to the route that declares it. Seen on a request that matched another route (or no
//! route), it is an exfiltration attempt and the request is refused before anything is fetched or forwarded.

use aho_corasick::{AhoCorasick, MatchKind};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

mod body;
mod kinds;
mod sigv4;

pub use body::{BodyEncoding, MAX_SWAPPED_BODY};
use kinds::basic_decoded;
pub use kinds::{Basic, Format, Inject, Kind, Swap, Username};
pub use sigv4::{SigV4, MAX_HASHED_BODY};

use crate::route::Route;
use crate::secrets::{Secret, SecretError, SecretRef, SecretStore};

/// Everything outside RFC 3986 unreserved characters is encoded in query values we write.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// Everything but RFC 3986 unreserved characters is encoded in a rewritten path segment.
const PATH_SEGMENT: &AsciiSet = QUERY_VALUE;

/// One configured credential: its placeholder, the route it is bound to, and what kind of credential it is.
#[derive(Debug, Clone)]
pub struct CredentialSpec {
    /// Shown in logs and errors; defaults to the secret's name.
    pub name: String,
    /// Name of the route the credential is bound to.
    pub route: String,
    pub placeholder: String,
    pub kind: Kind,
    /// The environment variable that carries the placeholder to the agent (`keyward exec`).
    pub env: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("a placeholder of credential `{credential}` was sent to a destination it is not bound to")]
    NotBound { credential: String },
    #[error("a placeholder of credential `{credential}` was found in {place}; it is only swapped in {allowed}")]
    Misplaced {
        credential: String,
        place: String,
        allowed: String,
    },
    #[error("one value carries placeholders of more than one credential")]
    Ambiguous,
    #[error("credential `{credential}` would be sent over plain http; route `{route}` does not allow_plain_http")]
    Plaintext { credential: String, route: String },
    #[error("credential `{credential}`: {source}")]
    Secret { credential: String, source: SecretError },
    #[error("credential `{0}`: the secret does not form a valid header value")]
    InvalidValue(String),
    #[error("credential `{credential}`: {reason}")]
    Unsignable { credential: String, reason: &'static str },
}

/// Every form in which a secret Keyward wrote into a request is likely to come back: the raw value (which the
/// formatted value contains); percent-encoded as Keyward writes query values, and with `+` for space as form
/// encoders (Go's `url.Values`, Python's `urlencode`) re-encode it; and JSON-escaped as serde does, as Go does
/// (`&<>` as `\u0026`…) and as PHP does (`/` as `\/`), because error bodies quote what they received. The
/// scrubber ignores ASCII case, so upper- and lower-case hex escapes are one form.
pub fn forms(secret: &str) -> Vec<Vec<u8>> {
    let encoded = utf8_percent_encode(secret, QUERY_VALUE).to_string();
    let plus = encoded.replace("%20", "+");
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json
        .get(1..json.len().saturating_sub(1))
        .unwrap_or_default()
        .to_string();
    let go = json
        .replace('&', "\\u0026")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e");
    let php = json.replace('/', "\\/");
    let mut out: Vec<Vec<u8>> = Vec::new();
    for form in [secret.to_string(), encoded, plus, json, go, php] {
        if !out.iter().any(|f| f.eq_ignore_ascii_case(form.as_bytes())) {
            out.push(form.into_bytes());
        }
    }
    out
}

/// All credentials of the configuration, with one automaton that finds any placeholder in one pass.
#[derive(Debug)]
pub struct Credentials {
    specs: Vec<CredentialSpec>,
    matcher: AhoCorasick,
    /// Some credential's placeholder may stand in a body (decided once: asked on every request).
    bodies: bool,
}

impl Credentials {
    pub fn specs(&self) -> &[CredentialSpec] {
        &self.specs
    }

    pub fn new(specs: Vec<CredentialSpec>) -> Self {
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(specs.iter().map(|s| s.placeholder.as_bytes()))
            .expect("placeholders are validated non-empty and few");
        let bodies = specs.iter().any(|s| s.kind.in_body());
        Self { specs, matcher, bodies }
    }

    /// Finds placeholders in the path, headers and query and checks them, without touching a secret: a
    /// placeholder of another route's credential is an exfiltration attempt ([`SwapError::NotBound`]); one of
    /// this route's credentials anywhere but its configured header or query key is refused
    /// ([`SwapError::Misplaced`]), so the agent cannot choose where the real secret lands. The plan also lists
    /// the `inject: always` credentials of the route.
    pub fn plan(
        &self,
        route: Option<&Route>,
        plain_http: bool,
        parts: &http::request::Parts,
    ) -> Result<Plan, SwapError> {
        let mut found: Vec<(usize, Place)> = Vec::new();
        let path = percent_decode_str(parts.uri.path()).decode_utf8_lossy();
        if let Some(i) = self.find(path.as_bytes())? {
            found.push((i, Place::Path));
        }
        for (name, value) in parts.headers.iter() {
            let decoded = basic_decoded(value.as_bytes());
            let plain = self.find(value.as_bytes())?;
            if let Some(i) = plain.or(decoded.as_deref().map(|d| self.find(d)).transpose()?.flatten()) {
                found.push((i, Place::Header(name.clone())));
            }
        }
        let mut query = self.scan_query(parts.uri.query().unwrap_or(""), &mut found)?;
        let route = match route {
            Some(r) => r,
            None if found.is_empty() => return Ok(Plan::default()),
            None => {
                return Err(SwapError::NotBound {
                    credential: self.specs[found[0].0].name.clone(),
                })
            }
        };
        if let Some((i, _)) = found.iter().find(|(i, _)| self.specs[*i].route != route.name) {
            return Err(SwapError::NotBound {
                credential: self.specs[*i].name.clone(),
            });
        }
        let mut used: Vec<usize> = Vec::new();
        let mut headers = Vec::new();
        let mut path = None;
        for (i, place) in found {
            let spec = &self.specs[i];
            match place {
                Place::Path if spec.kind.in_path() => path = Some(i),
                Place::Header(name) if spec.kind.header() == Some(&name) => headers.push((name, i)),
                Place::Query(key) if spec.kind.query() == Some(key.as_str()) => {}
                place => {
                    return Err(SwapError::Misplaced {
                        credential: spec.name.clone(),
                        place: place.describe(),
                        allowed: spec.allowed(),
                    })
                }
            }
            used.push(i);
        }
        for (i, spec) in self.specs.iter().enumerate() {
            if spec.route == route.name && spec.kind.inject() == Inject::Always && !used.contains(&i) {
                let missing_header = spec.kind.header().filter(|h| !parts.headers.contains_key(*h));
                let missing_query = spec.kind.query().filter(|q| !query.iter().any(|(k, _)| k == q));
                if let Some(header) = missing_header {
                    headers.push((header.clone(), i));
                }
                if let Some(key) = missing_query {
                    query.push((key.to_string(), QueryValue::Credential(i)));
                }
                let (missing_header, missing_query) = (missing_header.is_some(), missing_query.is_some());
                if missing_header || missing_query {
                    used.push(i);
                }
            }
        }
        if plain_http && !route.allow_plain_http {
            if let Some(&i) = used.first() {
                return Err(SwapError::Plaintext {
                    credential: self.specs[i].name.clone(),
                    route: route.name.clone(),
                });
            }
        }
        used.sort_unstable();
        used.dedup();
        // A signing kind writes nothing where its placeholder was: the late phase signs the whole request.
        headers.retain(|(_, i)| !self.specs[*i].kind.signs());
        headers.sort_unstable_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
        headers.dedup();
        let rewrite_query = query.iter().any(|(_, v)| matches!(v, QueryValue::Credential(_)));
        Ok(Plan {
            headers,
            query: rewrite_query.then_some(query),
            path,
            body: None,
            used,
        })
    }

    /// Names of the credentials a plan writes, for the request's record and the policy input.
    pub fn names(&self, plan: &Plan) -> Vec<String> {
        plan.used.iter().map(|&i| self.specs[i].name.clone()).collect()
    }

    /// Every (secret, placeholder) of a route, or of all routes with `None`.
    pub fn placeholders<'a>(&'a self, route: Option<&'a str>) -> impl Iterator<Item = (&'a SecretRef, &'a str)> + 'a {
        self.specs
            .iter()
            .filter(move |s| route.is_none_or(|r| s.route == r))
            .flat_map(|s| s.kind.secrets().map(|secret| (secret, s.placeholder.as_str())))
    }

    /// Whether the route declares any credential: its responses are scrubbed.
    pub fn route_has_any(&self, route: &str) -> bool {
        self.specs.iter().any(|s| s.route == route)
    }

    /// Whether the plan writes any credential at all.
    pub fn uses_any(&self, plan: &Plan) -> bool {
        !plan.used.is_empty()
    }

    /// The secrets a plan writes.
    pub fn secrets(&self, plan: &Plan) -> Vec<SecretRef> {
        plan.used
            .iter()
            .flat_map(|&i| self.specs[i].kind.secrets().cloned())
            .collect()
    }

    /// The early credential phase: writes the real values a plan calls for into the places it found, and
    /// returns each value written with its placeholder, so the response can be scrubbed of exactly these.
    /// Nothing is changed unless every secret is available.
    pub fn write(
        &self,
        plan: &Plan,
        parts: &mut http::request::Parts,
        store: &dyn SecretStore,
    ) -> Result<Vec<(Secret, &str)>, SwapError> {
        let mut written = Vec::new();
        let mut values = Vec::new();
        for (name, i) in &plan.headers {
            let (value, secrets) = self.header_value(*i, store)?;
            values.push((name.clone(), *i, value));
            let placeholder = self.specs[*i].placeholder.as_str();
            written.extend(secrets.into_iter().map(|s| (s, placeholder)));
        }
        let mut uri = match plan.path {
            Some(i) => Some(self.rebuild_path(&parts.uri, i, store, &mut written)?),
            None => None,
        };
        if let Some(query) = &plan.query {
            let base = uri.as_ref().unwrap_or(&parts.uri);
            uri = Some(self.rebuild_uri(base, query, store, &mut written)?);
        }
        for (name, i, value) in values {
            self.replace_header(&mut parts.headers, name, i, value);
        }
        if let Some(uri) = uri {
            parts.uri = uri;
        }
        Ok(written)
    }

    /// The late credential phase, on the request as it leaves Keyward (after hop-by-hop stripping and the
    /// final URI): where a signing kind signs. A swap has nothing left to do. Returns what it wrote.
    pub fn late(
        &self,
        plan: &Plan,
        parts: &mut http::request::Parts,
        body: Option<&[u8]>,
        store: &dyn SecretStore,
    ) -> Result<Vec<(Secret, &str)>, SwapError> {
        let mut written = Vec::new();
        for &i in &plan.used {
            let spec = &self.specs[i];
            let values = spec.kind.late(&spec.name, parts, body, |secret| {
                store.get(secret).map_err(|source| SwapError::Secret {
                    credential: spec.name.clone(),
                    source,
                })
            })?;
            written.extend(values.into_iter().map(|s| (s, spec.placeholder.as_str())));
        }
        Ok(written)
    }

    /// Whether the late phase needs the request body in memory (a SigV4 payload hash).
    pub fn needs_body(&self, plan: &Plan, parts: &http::request::Parts) -> bool {
        plan.used
            .iter()
            .any(|&i| self.specs[i].kind.signs() && SigV4::needs_body(parts))
    }

    /// Whether `bytes` contain any configured placeholder.
    pub fn has_placeholder(&self, bytes: &[u8]) -> bool {
        self.matcher.is_match(bytes)
    }

    /// The values of `name` that carry credential `i`'s placeholder become `value`; other values of the same
    /// header are kept. Without any (an injected credential), `value` is added.
    fn replace_header(&self, headers: &mut HeaderMap, name: HeaderName, i: usize, value: HeaderValue) {
        let placeholder = self.specs[i].placeholder.as_bytes();
        let holds = |bytes: &[u8]| bytes.windows(placeholder.len()).any(|w| w == placeholder);
        let carries = |v: &HeaderValue| holds(v.as_bytes()) || basic_decoded(v.as_bytes()).is_some_and(|d| holds(&d));
        let old: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        if !old.iter().any(carries) {
            headers.append(name, value);
            return;
        }
        headers.remove(&name);
        for v in old {
            headers.append(&name, if carries(&v) { value.clone() } else { v });
        }
    }

    /// The credential whose placeholder occurs in `bytes`; two different ones in one value is an error.
    fn find(&self, bytes: &[u8]) -> Result<Option<usize>, SwapError> {
        let mut found = None;
        for m in self.matcher.find_iter(bytes) {
            let i = m.pattern().as_usize();
            match found {
                Some(prev) if prev != i => return Err(SwapError::Ambiguous),
                _ => found = Some(i),
            }
        }
        Ok(found)
    }

    fn scan_query(&self, query: &str, found: &mut Vec<(usize, Place)>) -> Result<Vec<(String, QueryValue)>, SwapError> {
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            let key_decoded = percent_decode_str(&key.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            if let Some(i) = self.find(key_decoded.as_bytes())? {
                found.push((i, Place::QueryKey));
            }
            match self.find(decoded.as_bytes())? {
                // A signing kind's placeholder (a presigned URL's key id) stays: the late phase signs anew.
                Some(i) if !self.specs[i].kind.signs() => {
                    found.push((i, Place::Query(key_decoded.clone())));
                    pairs.push((key_decoded, QueryValue::Credential(i)));
                }
                Some(i) => {
                    found.push((i, Place::Query(key_decoded.clone())));
                    pairs.push((key_decoded, QueryValue::Raw(pair.to_string())));
                }
                None => pairs.push((key_decoded, QueryValue::Raw(pair.to_string()))),
            }
        }
        Ok(pairs)
    }

    /// Credential `i`'s value as its kind renders it from the store, and every secret value it wrote.
    fn rendered(&self, i: usize, store: &dyn SecretStore) -> Result<(String, Vec<Secret>), SwapError> {
        let spec = &self.specs[i];
        spec.kind.render(|secret| {
            store.get(secret).map_err(|source| SwapError::Secret {
                credential: spec.name.clone(),
                source,
            })
        })
    }

    fn header_value(&self, i: usize, store: &dyn SecretStore) -> Result<(HeaderValue, Vec<Secret>), SwapError> {
        let (rendered, secrets) = self.rendered(i, store)?;
        let mut value =
            HeaderValue::try_from(rendered).map_err(|_| SwapError::InvalidValue(self.specs[i].name.clone()))?;
        value.set_sensitive(true);
        Ok((value, secrets))
    }

    /// The path with credential `i`'s placeholder (found percent-decoded) replaced by its value, each
    /// segment percent-encoded again; the query is kept as it was.
    fn rebuild_path<'a>(
        &'a self,
        uri: &Uri,
        i: usize,
        store: &dyn SecretStore,
        written: &mut Vec<(Secret, &'a str)>,
    ) -> Result<Uri, SwapError> {
        let (rendered, secrets) = self.rendered(i, store)?;
        let placeholder = self.specs[i].placeholder.as_str();
        let segments: Vec<String> = uri
            .path()
            .split('/')
            .map(|segment| {
                let decoded = percent_decode_str(segment).decode_utf8_lossy();
                if decoded.contains(placeholder) {
                    utf8_percent_encode(&decoded.replace(placeholder, &rendered), PATH_SEGMENT).to_string()
                } else {
                    segment.to_string()
                }
            })
            .collect();
        written.extend(secrets.into_iter().map(|s| (s, placeholder)));
        let mut text = segments.join("/");
        if let Some(query) = uri.query() {
            text.push('?');
            text.push_str(query);
        }
        let pq = PathAndQuery::try_from(text).map_err(|_| SwapError::InvalidValue("path".into()))?;
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).map_err(|_| SwapError::InvalidValue("path".into()))
    }

    fn rebuild_uri<'a>(
        &'a self,
        uri: &Uri,
        query: &[(String, QueryValue)],
        store: &dyn SecretStore,
        written: &mut Vec<(Secret, &'a str)>,
    ) -> Result<Uri, SwapError> {
        let mut out = String::from(uri.path());
        for (n, (key, value)) in query.iter().enumerate() {
            out.push(if n == 0 { '?' } else { '&' });
            match value {
                QueryValue::Raw(pair) => out.push_str(pair),
                QueryValue::Credential(i) => {
                    let (rendered, secrets) = self.rendered(*i, store)?;
                    out.push_str(&utf8_percent_encode(key, QUERY_VALUE).to_string());
                    out.push('=');
                    out.push_str(&utf8_percent_encode(&rendered, QUERY_VALUE).to_string());
                    let placeholder = self.specs[*i].placeholder.as_str();
                    written.extend(secrets.into_iter().map(|s| (s, placeholder)));
                }
            }
        }
        let pq = PathAndQuery::try_from(out).map_err(|_| SwapError::InvalidValue("query".into()))?;
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).map_err(|_| SwapError::InvalidValue("query".into()))
    }
}

impl CredentialSpec {
    /// Where this credential's placeholder may appear, for the refusal message.
    fn allowed(&self) -> String {
        let mut places = Vec::new();
        if let Some(h) = self.kind.header() {
            places.push(format!("header `{h}`"));
        }
        if let Some(q) = self.kind.query() {
            places.push(format!("query key `{q}`"));
        }
        if self.kind.in_path() {
            places.push("the path".into());
        }
        if self.kind.in_body() {
            places.push("a JSON or form body".into());
        }
        if places.is_empty() {
            "no location".into()
        } else {
            places.join(" and ")
        }
    }
}

/// Where a placeholder was found in a request.
enum Place {
    Path,
    Header(HeaderName),
    Query(String),
    QueryKey,
}

impl Place {
    fn describe(self) -> String {
        match self {
            Self::Path => "the path".into(),
            Self::Header(name) => format!("header `{name}`"),
            Self::Query(key) => format!("query key `{key}`"),
            Self::QueryKey => "a query key".into(),
        }
    }
}

/// A query pair kept byte-for-byte, or one whose value becomes a credential.
#[derive(Debug, Clone)]
enum QueryValue {
    Raw(String),
    Credential(usize),
}

/// What the credential stage will write: decided before any secret is read.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    headers: Vec<(HeaderName, usize)>,
    /// The whole rebuilt query, when any of it carries a credential.
    query: Option<Vec<(String, QueryValue)>>,
    /// The credential whose placeholder stands in the path, when its `locations` allow it.
    path: Option<usize>,
    /// The credentials whose placeholders stand in the body, and how it is encoded.
    body: Option<(BodyEncoding, Vec<usize>)>,
    used: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::HostPattern;
    use std::collections::HashMap;

    struct MapStore(HashMap<&'static str, &'static str>);
    impl SecretStore for MapStore {
        fn get(&self, secret: &SecretRef) -> Result<Secret, SecretError> {
            let name = secret.to_string();
            self.0
                .get(name.as_str())
                .map(|v| Secret::new(*v))
                .ok_or(SecretError::Missing(name))
        }
        fn not_ready(&self) -> Option<String> {
            None
        }
        fn generation(&self) -> u64 {
            0
        }
    }

    fn spec(
        name: &str,
        route: &str,
        placeholder: &str,
        header: Option<&str>,
        query: Option<&str>,
        format: &str,
        inject: Inject,
    ) -> CredentialSpec {
        CredentialSpec {
            name: name.into(),
            route: route.into(),
            placeholder: placeholder.into(),
            kind: Kind::Swap(Swap {
                secret: SecretRef::File(name.into()),
                header: header.map(|h| HeaderName::try_from(h).unwrap()),
                query: query.map(Into::into),
                path: false,
                body: false,
                format: Format::parse(format).unwrap(),
                inject,
            }),
            env: None,
        }
    }

    fn route(name: &str, plain: bool) -> Route {
        Route {
            name: name.into(),
            hosts: vec![HostPattern::parse("x.test").unwrap()],
            paths: vec![],
            methods: vec![],
            allow_private: false,
            allow_plain_http: plain,
            policy: None,
            client_certificate: None,
        }
    }

    impl Credentials {
        fn apply(
            &self,
            route: Option<&Route>,
            plain: bool,
            parts: &mut http::request::Parts,
            store: &dyn SecretStore,
        ) -> Result<Vec<String>, SwapError> {
            let plan = self.plan(route, plain, parts)?;
            let names = self.names(&plan);
            self.write(&plan, parts, store)?;
            Ok(names)
        }
    }

    fn fixture() -> (Credentials, MapStore) {
        let creds = Credentials::new(vec![
            spec(
                "openai",
                "ai",
                "kw-openai",
                Some("authorization"),
                None,
                "Bearer {secret}",
                Inject::OnPlaceholder,
            ),
            spec(
                "org",
                "ai",
                "kw-org",
                Some("openai-organization"),
                None,
                "{secret}",
                Inject::Always,
            ),
            spec(
                "maps",
                "maps",
                "kw-maps",
                None,
                Some("key"),
                "{secret}",
                Inject::OnPlaceholder,
            ),
        ]);
        let store = MapStore(HashMap::from([("openai", "sk-1"), ("org", "org-9"), ("maps", "m k&1")]));
        (creds, store)
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_placeholder_becomes_formatted_secret_and_always_injects() {
        let (creds, store) = fixture();
        for sent in ["Bearer kw-openai", "kw-openai"] {
            let mut p = parts("https://x.test/v1", &[("authorization", sent)]);
            let used = creds.apply(Some(&route("ai", false)), false, &mut p, &store).unwrap();
            assert_eq!(p.headers["authorization"], "Bearer sk-1");
            assert!(p.headers["authorization"].is_sensitive());
            assert_eq!(p.headers["openai-organization"], "org-9");
            assert_eq!(used, vec!["openai", "org"]);
        }
    }

    #[test]
    fn query_placeholder_is_replaced_and_encoded_others_untouched() {
        let (creds, store) = fixture();
        let mut p = parts("https://x.test/geo?a=%20b&key=kw-maps&z", &[]);
        creds.apply(Some(&route("maps", false)), false, &mut p, &store).unwrap();
        assert_eq!(p.uri.to_string(), "https://x.test/geo?a=%20b&key=m%20k%261&z");
    }

    #[test]
    fn placeholder_to_other_route_or_no_route_is_not_bound() {
        let (creds, store) = fixture();
        let mut p = parts("https://x.test/?key=kw-maps", &[]);
        let err = creds
            .apply(Some(&route("ai", false)), false, &mut p, &store)
            .unwrap_err();
        assert!(matches!(err, SwapError::NotBound { ref credential } if credential == "maps"));
        let mut p = parts("https://x.test/", &[("x-key", "kw-openai")]);
        assert!(matches!(
            creds.apply(None, false, &mut p, &store),
            Err(SwapError::NotBound { .. })
        ));
        assert_eq!(p.headers["x-key"], "kw-openai", "refused requests are left untouched");
    }

    #[test]
    fn plaintext_and_ambiguity_are_refused() {
        let (creds, store) = fixture();
        let mut p = parts("http://x.test/", &[("authorization", "kw-openai")]);
        assert!(matches!(
            creds.apply(Some(&route("ai", false)), true, &mut p, &store),
            Err(SwapError::Plaintext { .. })
        ));
        assert!(creds.apply(Some(&route("ai", true)), true, &mut p, &store).is_ok());
        let mut p = parts("https://x.test/", &[("authorization", "kw-openai kw-org")]);
        assert!(matches!(
            creds.apply(Some(&route("ai", false)), false, &mut p, &store),
            Err(SwapError::Ambiguous)
        ));
    }

    #[test]
    fn missing_secret_names_the_credential_only() {
        let (creds, _) = fixture();
        let empty = MapStore(HashMap::new());
        let mut p = parts("https://x.test/", &[("authorization", "kw-openai")]);
        let err = creds
            .apply(Some(&route("ai", false)), false, &mut p, &empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("openai"), "{err}");
    }

    #[test]
    fn a_placeholder_outside_its_configured_location_is_refused() {
        let (creds, store) = fixture();
        for (uri, headers) in [
            ("https://x.test/v1", vec![("x-title", "kw-openai")]),
            ("https://x.test/v1", vec![("user-agent", "agent kw-openai")]),
            ("https://x.test/v1", vec![("cookie", "a=1; s=kw-openai")]),
            ("https://x.test/v1?text=kw-openai", vec![]),
            ("https://x.test/v1?kw-openai=1", vec![]),
            ("https://x.test/kw-openai/v1", vec![]),
            ("https://x.test/%6bw-openai/v1", vec![]),
        ] {
            let mut p = parts(uri, &headers);
            let before = p.clone();
            let err = creds
                .apply(Some(&route("ai", false)), false, &mut p, &store)
                .unwrap_err();
            assert!(
                matches!(err, SwapError::Misplaced { ref credential, .. } if credential == "openai"),
                "{uri} {headers:?}: {err}"
            );
            assert_eq!((p.uri, p.headers), (before.uri, before.headers), "nothing written");
        }
    }

    #[test]
    fn only_the_value_carrying_the_placeholder_is_replaced() {
        let (creds, store) = fixture();
        let mut p = parts(
            "https://x.test/v1",
            &[("authorization", "Basic other"), ("authorization", "Bearer kw-openai")],
        );
        let written = {
            let plan = creds.plan(Some(&route("ai", false)), false, &p).unwrap();
            creds.write(&plan, &mut p, &store).unwrap()
        };
        let values: Vec<_> = p.headers.get_all("authorization").iter().collect();
        assert_eq!(values, ["Basic other", "Bearer sk-1"]);
        let placeholders: Vec<&str> = written.iter().map(|(_, ph)| *ph).collect();
        assert_eq!(placeholders, ["kw-openai", "kw-org"]);
    }

    #[test]
    fn forms_cover_what_keyward_writes() {
        let all: Vec<String> = forms("a/b+c=d\"e")
            .into_iter()
            .map(|f| String::from_utf8(f).unwrap())
            .collect();
        assert_eq!(
            all,
            ["a/b+c=d\"e", "a%2Fb%2Bc%3Dd%22e", "a/b+c=d\\\"e", "a\\/b+c=d\\\"e"]
        );
        let spaced: Vec<String> = forms("key S&<x")
            .into_iter()
            .map(|f| String::from_utf8(f).unwrap())
            .collect();
        assert_eq!(
            spaced,
            ["key S&<x", "key%20S%26%3Cx", "key+S%26%3Cx", "key S\\u0026\\u003cx"]
        );
        assert_eq!(forms("plain-value_1").len(), 1);
    }

    #[test]
    fn format_needs_exactly_one_secret() {
        assert!(Format::parse("Bearer").is_err());
        assert!(Format::parse("{secret}{secret}").is_err());
    }
}
