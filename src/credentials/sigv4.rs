//! AWS Signature Version 4, re-signed: the agent signs with the placeholder as its access key id (and any
//! secret), and Keyward signs the request again, as it leaves, with the real keys, for the region and service
//! of the agent's credential scope. The agent's signature is worthless (its secret is not the real one), so
//! everything it signed is dropped and signed anew over the headers and URI as they go upstream.
//!
//! Payload hash: the agent's `X-Amz-Content-Sha256` is kept when it is a hash, `UNSIGNED-PAYLOAD` or
//! `STREAMING-UNSIGNED-PAYLOAD-TRAILER` (the body is forwarded unchanged, so the agent's hash still holds).
//! Signed `aws-chunked` streaming (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD…`) carries a signature per chunk made
//! with the agent's secret: refused with 400, not re-signed. Without the header (every service but S3),
//! the body is hashed, which needs it in memory: the pipeline holds up to [`MAX_HASHED_BODY`] for it.
//!
//! Presigned URLs (`X-Amz-Credential` in the query) are re-signed the same way, in the query, for the
//! expiry the agent asked for.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::uri::{PathAndQuery, Uri};
use percent_encoding::percent_decode_str;

use super::SwapError;
use crate::secrets::{LeaseField, Secret, SecretRef};

/// The largest body hashed for a service that needs the payload hash in the signature.
pub const MAX_HASHED_BODY: u64 = 16 * 1024 * 1024;

const CONTENT_SHA256: &str = "x-amz-content-sha256";
/// Query parameters of a presigned request that the new signature replaces.
const PRESIGN_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

#[derive(Debug, Clone)]
pub enum SigV4 {
    /// Keys read like any secret.
    Static {
        access_key_id: SecretRef,
        secret_access_key: SecretRef,
        session_token: Option<SecretRef>,
    },
    /// A lease of Vault's AWS secrets engine: the three fields together (`all`) when signing, one by one
    /// (`fields`) for the scrubbers and the canary.
    Leased { all: SecretRef, fields: [SecretRef; 3] },
}

impl SigV4 {
    pub fn leased(lease: crate::secrets::AwsLease) -> Self {
        let field = |f| SecretRef::VaultAws(lease.clone(), f);
        Self::Leased {
            all: field(LeaseField::All),
            fields: [
                field(LeaseField::AccessKey),
                field(LeaseField::SecretKey),
                field(LeaseField::SecurityToken),
            ],
        }
    }
}

/// Where the agent's signature was, and what it was for.
struct Agent {
    region: String,
    service: String,
    /// `Some(seconds)` for a presigned URL.
    presigned: Option<u64>,
}

impl SigV4 {
    /// Every secret the credential reads (a lease's fields one by one, for the scrubbers and the canary).
    pub fn secrets(&self) -> Box<dyn Iterator<Item = &SecretRef> + '_> {
        match self {
            Self::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Box::new(
                [Some(access_key_id), Some(secret_access_key), session_token.as_ref()]
                    .into_iter()
                    .flatten(),
            ),
            Self::Leased { fields, .. } => Box::new(fields.iter()),
        }
    }

    /// The access key id, secret and session token to sign with, from one source.
    fn keys(
        &self,
        read: impl Fn(&SecretRef) -> Result<Secret, SwapError>,
        invalid: impl Fn() -> SwapError,
    ) -> Result<(Secret, Secret, Option<Secret>), SwapError> {
        match self {
            Self::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Ok((
                read(access_key_id)?,
                read(secret_access_key)?,
                session_token.as_ref().map(&read).transpose()?,
            )),
            Self::Leased { all, .. } => {
                let all = read(all)?;
                let json: serde_json::Value = serde_json::from_str(all.expose()).map_err(|_| invalid())?;
                let field = |name: &str| json[name].as_str().map(Secret::new);
                Ok((
                    field("access_key").ok_or_else(&invalid)?,
                    field("secret_key").ok_or_else(&invalid)?,
                    field("security_token"),
                ))
            }
        }
    }

    /// Whether signing `parts` needs the body's hash: no `X-Amz-Content-Sha256` and not presigned.
    pub fn needs_body(parts: &http::request::Parts) -> bool {
        !parts.headers.contains_key(CONTENT_SHA256) && !query_has(&parts.uri, "X-Amz-Credential")
    }

    /// Signs `parts` with the real keys (`read` reads them); returns every value written, for scrubbing.
    pub fn sign(
        &self,
        credential: &str,
        parts: &mut http::request::Parts,
        body: Option<&[u8]>,
        read: impl Fn(&SecretRef) -> Result<Secret, SwapError>,
    ) -> Result<Vec<Secret>, SwapError> {
        let refuse = |reason: &'static str| SwapError::Unsignable {
            credential: credential.to_string(),
            reason,
        };
        let agent = agent_signature(parts).ok_or(refuse(
            "the placeholder is not the access key id of an AWS4-HMAC-SHA256 signature",
        ))?;
        let claimed = parts
            .headers
            .get(CONTENT_SHA256)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| refuse("x-amz-content-sha256 is not text"))
            })
            .transpose()?;
        for name in [
            AUTHORIZATION.as_str(),
            "x-amz-date",
            "x-amz-security-token",
            CONTENT_SHA256,
        ] {
            parts.headers.remove(name);
        }
        let payload = match claimed.as_deref() {
            _ if agent.presigned.is_some() => SignableBody::UnsignedPayload,
            Some("UNSIGNED-PAYLOAD") => SignableBody::UnsignedPayload,
            Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER") => SignableBody::StreamingUnsignedPayloadTrailer,
            Some(s) if s.starts_with("STREAMING-") => {
                return Err(refuse(
                    "signed aws-chunked uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) carry a signature per chunk \
                     and cannot be re-signed: turn chunk signing off in the SDK (unsigned payload over HTTPS)",
                ))
            }
            Some(hash) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                SignableBody::Precomputed(hash.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(refuse(
                    "x-amz-content-sha256 is neither a SHA-256 hash nor a known payload mode",
                ))
            }
            None => SignableBody::Bytes(body.ok_or(refuse(
                "the body must be hashed for this service and is larger than 16 MiB (or streamed)",
            ))?),
        };
        let uri = match agent.presigned {
            Some(_) => without_presign_params(&parts.uri)?,
            None => parts.uri.clone(),
        };
        let (key_id, secret, token) = self.keys(read, || SwapError::InvalidValue(credential.to_string()))?;
        let identity = Credentials::new(
            key_id.expose(),
            secret.expose(),
            token.as_ref().map(|t| t.expose().to_string()),
            None,
            "keyward",
        )
        .into();
        let mut settings = SigningSettings::default();
        // `Expect: 100-continue` is answered hop by hop and may not reach the upstream as sent: never signed.
        settings
            .excluded_headers
            .get_or_insert_with(Vec::new)
            .push("expect".into());
        if matches!(
            agent.service.as_str(),
            "s3" | "s3express" | "s3-object-lambda" | "s3-outposts"
        ) {
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        }
        settings.payload_checksum_kind = match (&claimed, agent.presigned) {
            (Some(_), None) => PayloadChecksumKind::XAmzSha256,
            _ => PayloadChecksumKind::NoHeader,
        };
        if let Some(seconds) = agent.presigned {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(Duration::from_secs(seconds));
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&agent.region)
            .name(&agent.service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|_| refuse("the signing parameters are incomplete"))?
            .into();
        let uri_text = uri.to_string();
        let headers: Vec<(&str, &str)> = parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        let method = parts.method.as_str().to_string();
        let signable = SignableRequest::new(&method, uri_text.as_str(), headers.into_iter(), payload)
            .map_err(|_| refuse("the request cannot be signed (a header is not text)"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|_| refuse("the request cannot be signed"))?
            .into_parts();
        for (name, value) in instructions.headers() {
            let mut value =
                HeaderValue::try_from(value).map_err(|_| refuse("a signed header is not a header value"))?;
            value.set_sensitive(true);
            let name = HeaderName::try_from(name).map_err(|_| refuse("a signed header name is invalid"))?;
            parts.headers.insert(name, value);
        }
        parts.uri = with_params(&uri, instructions.params())?;
        let mut written = vec![key_id, secret];
        written.extend(token);
        Ok(written)
    }
}

/// Region, service and (for a presigned URL) the expiry from the agent's `Authorization` header or
/// `X-Amz-Credential` query parameter: `<key id>/<date>/<region>/<service>/aws4_request`.
fn agent_signature(parts: &http::request::Parts) -> Option<Agent> {
    let scope = |credential: &str| {
        let mut fields = credential.trim().split('/');
        let (_key, _date, region, service, terminator) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        (terminator == "aws4_request" && !region.is_empty() && !service.is_empty())
            .then(|| (region.to_string(), service.to_string()))
    };
    if let Some(auth) = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ")?;
        let credential = rest
            .split(',')
            .find_map(|field| field.trim().strip_prefix("Credential="))?;
        let (region, service) = scope(credential)?;
        return Some(Agent {
            region,
            service,
            presigned: None,
        });
    }
    let credential = query_value(&parts.uri, "X-Amz-Credential")?;
    let (region, service) = scope(&credential)?;
    let expires = query_value(&parts.uri, "X-Amz-Expires")
        .and_then(|e| e.parse().ok())
        .unwrap_or(900);
    Some(Agent {
        region,
        service,
        presigned: Some(expires),
    })
}

fn query_pairs(uri: &Uri) -> impl Iterator<Item = (String, &str)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode_str(key).decode_utf8_lossy().into_owned(), value)
        })
}

fn query_has(uri: &Uri, key: &str) -> bool {
    query_pairs(uri).any(|(k, _)| k == key)
}

fn query_value(uri: &Uri, key: &str) -> Option<String> {
    query_pairs(uri)
        .find(|(k, _)| k == key)
        .map(|(_, v)| percent_decode_str(v).decode_utf8_lossy().into_owned())
}

fn without_presign_params(uri: &Uri) -> Result<Uri, SwapError> {
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let key = p.split_once('=').map_or(*p, |(k, _)| k);
            !PRESIGN_PARAMS.contains(&percent_decode_str(key).decode_utf8_lossy().as_ref())
        })
        .collect();
    with_query(uri, &kept.join("&"))
}

/// `uri` with the signer's query parameters appended (percent-encoded as the signer expects them sent).
fn with_params(uri: &Uri, params: &[(&str, std::borrow::Cow<'static, str>)]) -> Result<Uri, SwapError> {
    if params.is_empty() {
        return Ok(uri.clone());
    }
    let mut query = uri.query().unwrap_or("").to_string();
    for (key, value) in params {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(key);
        query.push('=');
        query.push_str(&percent_encoding::utf8_percent_encode(value, QUERY).to_string());
    }
    with_query(uri, &query)
}

/// RFC 3986 unreserved characters stay; everything else is encoded, as SigV4's canonical query does.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn with_query(uri: &Uri, query: &str) -> Result<Uri, SwapError> {
    let text = if query.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{query}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(text).map_err(|_| SwapError::InvalidValue("query".into()))?);
    Uri::from_parts(parts).map_err(|_| SwapError::InvalidValue("query".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>, uri: &str, sha: Option<&str>) -> http::request::Parts {
        let mut req = http::Request::put(uri);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(s) = sha {
            req = req.header(CONTENT_SHA256, s);
        }
        req = req.header("x-amz-date", "20261129T000000Z");
        req.body(()).unwrap().into_parts().0
    }

    fn sigv4() -> SigV4 {
        SigV4::Static {
            access_key_id: SecretRef::File("id".into()),
            secret_access_key: SecretRef::File("key".into()),
            session_token: None,
        }
    }

    fn read(r: &SecretRef) -> Result<Secret, SwapError> {
        Ok(Secret::new(match r.to_string().as_str() {
            s if s.contains("id") => "AKIAREALKEYIDFORTEST".into(),
            _ => "REALSECRET/secret-access-key-for-the-unit-test".to_string(),
        }))
    }

    const AGENT: &str = "AWS4-HMAC-SHA256 Credential=AKIAKEYWARDPLACEHLDR/20261129/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";

    #[test]
    fn the_agents_signature_is_replaced_by_one_with_the_real_key_for_the_same_scope() {
        let mut p = parts(
            Some(AGENT),
            "https://s3.eu-west-1.amazonaws.com/bucket/key",
            Some("UNSIGNED-PAYLOAD"),
        );
        let written = sigv4().sign("aws", &mut p, None, read).unwrap();
        let auth = p.headers.get(AUTHORIZATION).unwrap().to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAREALKEYIDFORTEST/"),
            "{auth}"
        );
        assert!(auth.contains("/eu-west-1/s3/aws4_request"), "{auth}");
        assert!(!auth.contains("PLACEHLDR"));
        assert_eq!(p.headers.get(CONTENT_SHA256).unwrap(), "UNSIGNED-PAYLOAD");
        assert_ne!(p.headers.get("x-amz-date").unwrap(), "20261129T000000Z", "signed now");
        assert_eq!(written.len(), 2);
    }

    #[test]
    fn signed_chunked_uploads_and_missing_bodies_are_refused() {
        let mut p = parts(
            Some(AGENT),
            "https://s3.amazonaws.com/b/k",
            Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        );
        assert!(matches!(
            sigv4().sign("aws", &mut p, None, read),
            Err(SwapError::Unsignable { .. })
        ));
        let dynamo = AGENT.replace("/s3/", "/dynamodb/");
        let mut p = parts(Some(&dynamo), "https://dynamodb.eu-west-1.amazonaws.com/", None);
        assert!(SigV4::needs_body(&p));
        assert!(matches!(
            sigv4().sign("aws", &mut p, None, read),
            Err(SwapError::Unsignable { .. })
        ));
        let mut p = parts(Some(&dynamo), "https://dynamodb.eu-west-1.amazonaws.com/", None);
        sigv4().sign("aws", &mut p, Some(b"{}"), read).unwrap();
        assert!(
            p.headers.get(CONTENT_SHA256).is_none(),
            "not added where the agent had none"
        );
    }

    #[test]
    fn a_presigned_url_is_signed_again_in_the_query() {
        let uri = "https://s3.amazonaws.com/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAKEYWARDPLACEHLDR%2F20261129%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261129T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=00&versionId=3";
        let mut p = parts(None, uri, None);
        sigv4().sign("aws", &mut p, None, read).unwrap();
        let query = p.uri.query().unwrap();
        assert!(query.starts_with("versionId=3&"), "{query}");
        assert!(query.contains("X-Amz-Credential=AKIAREALKEYIDFORTEST%2F"), "{query}");
        assert!(query.contains("X-Amz-Expires=300"), "{query}");
        assert!(
            !query.contains("PLACEHLDR") && !query.contains("Signature=00"),
            "{query}"
        );
        assert!(p.headers.get(AUTHORIZATION).is_none());
    }
}
