//! Placeholders in request bodies (`locations: [body]`): JSON and form bodies held in memory are searched,
//! checked like the head's placeholders, and swapped with each value escaped for the body's encoding.

use http::header::HeaderMap;
use percent_encoding::utf8_percent_encode;

use super::{Credentials, Plan, SwapError, QUERY_VALUE};
use crate::route::Route;
use crate::secrets::{Secret, SecretStore};

/// The largest JSON or form body searched for placeholders and swapped; larger ones are forwarded as they are.
pub const MAX_SWAPPED_BODY: u64 = 8 * 1024 * 1024;

/// The request bodies placeholders are swapped in, by their `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Json,
    Form,
}

impl BodyEncoding {
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let media = headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?
            .split(';')
            .next()?
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Some(Self::Json),
            m if m.starts_with("application/") && m.ends_with("+json") => Some(Self::Json),
            "application/x-www-form-urlencoded" => Some(Self::Form),
            _ => None,
        }
    }

    /// A value as it must be written where the placeholder stood: inside a JSON string, or as a form value.
    fn escape(self, value: &str) -> String {
        match self {
            Self::Json => {
                let quoted = serde_json::to_string(value).unwrap_or_default();
                quoted[1..quoted.len() - 1].to_string()
            }
            Self::Form => utf8_percent_encode(value, QUERY_VALUE).to_string(),
        }
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

impl Credentials {
    /// Whether any credential's placeholder may stand in a body. Then every JSON and form body, on every
    /// route, is held in memory (up to [`MAX_SWAPPED_BODY`]) and searched: swapped where the credential is
    /// bound, refused as exfiltration elsewhere.
    pub fn searches_bodies(&self) -> bool {
        self.bodies
    }

    /// Placeholders in a JSON or form body held in memory, checked as those of the head are: another route's is
    /// an exfiltration attempt, one of a credential without `body` in its `locations` is misplaced. The ones
    /// found are added to the plan. Other bodies are not searched.
    pub fn plan_body(
        &self,
        plan: &mut Plan,
        route: Option<&Route>,
        plain_http: bool,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), SwapError> {
        let Some(encoding) = BodyEncoding::of(headers) else {
            return Ok(());
        };
        let mut found: Vec<usize> = self.matcher.find_iter(body).map(|m| m.pattern().as_usize()).collect();
        found.sort_unstable();
        found.dedup();
        for &i in &found {
            let spec = &self.specs[i];
            let Some(route) = route.filter(|r| r.name == spec.route) else {
                return Err(SwapError::NotBound {
                    credential: spec.name.clone(),
                });
            };
            if !spec.kind.in_body() {
                return Err(SwapError::Misplaced {
                    credential: spec.name.clone(),
                    place: "the body".into(),
                    allowed: spec.allowed(),
                });
            }
            if plain_http && !route.allow_plain_http {
                return Err(SwapError::Plaintext {
                    credential: spec.name.clone(),
                    route: route.name.clone(),
                });
            }
        }
        if !found.is_empty() {
            plan.used.extend(&found);
            plan.used.sort_unstable();
            plan.used.dedup();
            plan.body = Some((encoding, found));
        }
        Ok(())
    }

    /// The body with each placeholder the plan found replaced by its value, escaped for the body's encoding
    /// (a JSON string's escapes, or form percent-encoding); every value written is added to `written`.
    pub fn write_body<'a>(
        &'a self,
        plan: &Plan,
        body: &[u8],
        store: &dyn SecretStore,
        written: &mut Vec<(Secret, &'a str)>,
    ) -> Result<Option<bytes::Bytes>, SwapError> {
        let Some((encoding, found)) = &plan.body else {
            return Ok(None);
        };
        let mut out = body.to_vec();
        for &i in found {
            let (rendered, secrets) = self.rendered(i, store)?;
            let value = encoding.escape(&rendered);
            let placeholder = self.specs[i].placeholder.as_str();
            out = replace_all(&out, placeholder.as_bytes(), value.as_bytes());
            written.extend(secrets.into_iter().map(|s| (s, placeholder)));
        }
        Ok(Some(out.into()))
    }
}
