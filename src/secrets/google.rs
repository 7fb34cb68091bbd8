//! Google service accounts: the JSON key (read like any secret) signs a JWT that the key's `token_uri`
//! exchanges for an access token (RFC 7523, the JWT-bearer grant, what google-auth does). The exchange and
//! the cache are the OAuth2 machinery's ([`super::oauth2`]); this module only turns a key into an assertion.

use base64::Engine as _;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

/// The `aud` Google's token endpoint checks, whatever the key's `token_uri` (google-auth, the Java and .NET
/// libraries all send this one).
const AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// Longest assertion lifetime Google accepts.
const LIFETIME_SECS: u64 = 3600;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The fields of a service-account key file that are used.
#[derive(serde::Deserialize)]
struct Key {
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: String,
}

/// Why a key cannot be used. Never quotes the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the service-account key is not a JSON key file with client_email, private_key and token_uri")]
    Shape,
    #[error("the service-account key's private_key is not a PKCS#8 RSA key")]
    PrivateKey,
    #[error("the service-account key's token_uri must be an https:// URL (http:// only to a loopback address)")]
    TokenUri,
}

/// The key's `token_uri` and a signed assertion for `scopes`, valid for an hour from now.
pub fn assertion(key_json: &str, scopes: &[String]) -> Result<(http::Uri, String), KeyError> {
    let key: Key = serde_json::from_str(key_json).map_err(|_| KeyError::Shape)?;
    let token_uri: http::Uri = key.token_uri.parse().map_err(|_| KeyError::TokenUri)?;
    let loopback = token_uri.host().is_some_and(|h| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    match token_uri.scheme_str() {
        Some("https") if token_uri.host().is_some() => {}
        Some("http") if loopback => {}
        _ => return Err(KeyError::TokenUri),
    }
    let der = match rustls_pemfile::private_key(&mut key.private_key.as_bytes()) {
        Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(der))) => der,
        _ => return Err(KeyError::PrivateKey),
    };
    let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|_| KeyError::PrivateKey)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
    if let Some(kid) = &key.private_key_id {
        header["kid"] = kid.clone().into();
    }
    let claims = serde_json::json!({
        "iss": key.client_email,
        "scope": scopes.join(" "),
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + LIFETIME_SECS,
    });
    let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let signing_input = format!("{}.{}", b64(&header), b64(&claims));
    let mut signature = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| KeyError::PrivateKey)?;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature);
    Ok((token_uri, format!("{signing_input}.{signature}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_cannot_sign_are_refused_without_quoting_them() {
        assert!(matches!(assertion("not json", &[]), Err(KeyError::Shape)));
        let key = |pem: &str, uri: &str| {
            serde_json::json!({ "client_email": "a@b", "private_key": pem, "token_uri": uri }).to_string()
        };
        let e = assertion(&key("REALSECRET not a key", "https://t/token"), &[]).unwrap_err();
        assert!(matches!(e, KeyError::PrivateKey) && !e.to_string().contains("REALSECRET"));
        assert!(matches!(
            assertion(&key("x", "http://example.com/token"), &[]),
            Err(KeyError::TokenUri)
        ));
    }
}
