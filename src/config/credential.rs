//! Credentials of the config: each entry's kind (swap or Basic) and secret sources, checked against the
//! configured backends, and placeholders that must not overlap. Split from `validate` so that adding a kind
//! touches this file only.

use http::HeaderName;

use super::raw::{
    RawBasic, RawCredential, RawLocation, RawOAuth2, RawSecretSource, RawSigV4, RawUsername, RawVaultRef,
};
use super::FieldError;
use crate::credentials::{Basic, CredentialSpec, Format, Inject, Kind, SigV4, Swap, Username};
use crate::secrets::{oauth2, KvVersion, SecretRef, VaultRef};

/// Headers a credential may not target: hop-by-hop ones are stripped before forwarding, and `host` decides
/// the destination.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Which secret backends are configured, so a credential naming a missing one is refused at load.
#[derive(Clone, Copy)]
pub(super) struct Backends {
    pub(super) file: bool,
    pub(super) vault: bool,
}

/// `client_certificate:` of a route: both halves read like secrets.
pub(super) fn client_certificate(
    c: &super::raw::RawClientCertificate,
    at: &str,
    backends: Backends,
) -> Result<crate::route::ClientCertificate, FieldError> {
    let src = |s: &RawSecretSource, name: &str| source(&s.secret, &s.vault, &|f| format!("{at}.{name}.{f}"), backends);
    Ok(crate::route::ClientCertificate {
        cert: src(&c.cert, "cert")?,
        key: src(&c.key, "key")?,
    })
}

/// A file secret name or a Vault key, whichever of the two is set (`at` is the field holding them).
fn source(
    secret: &Option<String>,
    vault: &Option<RawVaultRef>,
    at: &dyn Fn(&str) -> String,
    backends: Backends,
) -> Result<SecretRef, FieldError> {
    match (secret, vault) {
        (Some(name), None) => {
            if name.trim().is_empty() {
                return Err(FieldError::new(at("secret"), "must name a secret"));
            }
            if !backends.file {
                return Err(FieldError::new(
                    at("secret"),
                    "names a file secret but `secrets.file` is not configured",
                ));
            }
            Ok(SecretRef::File(name.clone()))
        }
        (None, Some(v)) => Ok(SecretRef::Vault(vault_ref(v, &at("vault"), backends)?)),
        _ => Err(FieldError::new(
            at("secret"),
            "set exactly one of `secret` (a file secret) or `vault`",
        )),
    }
}

fn vault_ref(v: &RawVaultRef, at: &str, backends: Backends) -> Result<VaultRef, FieldError> {
    if !backends.vault {
        return Err(FieldError::new(at, "`secrets.vault` is not configured"));
    }
    let kv = match (v.kv, v.version) {
        (2, _) => KvVersion::V2,
        (1, None) => KvVersion::V1,
        (1, Some(_)) => return Err(FieldError::new(format!("{at}.version"), "KV v1 has no versions")),
        _ => return Err(FieldError::new(format!("{at}.kv"), "1 or 2")),
    };
    if v.path.trim_matches('/').is_empty() || v.key.is_empty() {
        return Err(FieldError::new(at, "`path` and `key` must not be empty"));
    }
    Ok(VaultRef {
        kv,
        mount: v.mount.trim_matches('/').to_string(),
        path: v.path.trim_matches('/').to_string(),
        key: v.key.clone(),
        version: v.version,
    })
}

fn oauth2_spec(name: &str, o: &RawOAuth2, at: &str, backends: Backends) -> Result<oauth2::Spec, FieldError> {
    let field = |f: &str| format!("{at}.{f}");
    let token_url: http::Uri = o
        .token_url
        .parse()
        .map_err(|_| FieldError::new(field("token_url"), "not a URL"))?;
    let loopback = token_url.host().is_some_and(|h| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    let ok = match token_url.scheme_str() {
        Some("https") => token_url.host().is_some(),
        Some("http") => loopback,
        _ => false,
    };
    if !ok {
        return Err(FieldError::new(
            field("token_url"),
            "expected an https:// URL (http:// only to a loopback address): client secrets travel to it",
        ));
    }
    let grant = match o.grant.as_str() {
        "client_credentials" => oauth2::Grant::ClientCredentials,
        "refresh_token" => oauth2::Grant::RefreshToken,
        other => {
            return Err(FieldError::new(
                field("grant"),
                format!("`{other}`: use client_credentials or refresh_token"),
            ))
        }
    };
    let client_auth = match o.client_auth.as_str() {
        "basic" => oauth2::ClientAuth::Basic,
        "body" => oauth2::ClientAuth::Body,
        other => {
            return Err(FieldError::new(
                field("client_auth"),
                format!("`{other}`: use basic or body"),
            ))
        }
    };
    let refresh_token = match (grant, &o.refresh_token) {
        (oauth2::Grant::RefreshToken, Some(v)) => {
            let r = vault_ref(v, &field("refresh_token"), backends)?;
            if r.kv != KvVersion::V2 || r.version.is_some() {
                return Err(FieldError::new(
                    field("refresh_token"),
                    "must be an unpinned KV v2 key, so rotations can be written back",
                ));
            }
            Some(r)
        }
        (oauth2::Grant::RefreshToken, None) => {
            return Err(FieldError::new(
                field("refresh_token"),
                "the refresh_token grant needs a Vault key for the token",
            ))
        }
        (oauth2::Grant::ClientCredentials | oauth2::Grant::JwtBearer, Some(_)) => {
            return Err(FieldError::new(field("refresh_token"), "only for grant: refresh_token"))
        }
        (oauth2::Grant::ClientCredentials | oauth2::Grant::JwtBearer, None) => None,
    };
    let source_at = |which: &'static str| move |f: &str| format!("{at}.{which}.{f}");
    Ok(oauth2::Spec {
        name: name.to_string(),
        token_url: Some(token_url),
        grant,
        client_id: source(
            &o.client_id.secret,
            &o.client_id.vault,
            &source_at("client_id"),
            backends,
        )?,
        client_secret: o
            .client_secret
            .as_ref()
            .map(|s| source(&s.secret, &s.vault, &source_at("client_secret"), backends))
            .transpose()?,
        refresh_token,
        scopes: o.scopes.clone(),
        client_auth,
        refresh_before: o.refresh_before,
        allow_private: o.allow_private,
    })
}

pub(super) fn credential(
    c: &RawCredential,
    route: &str,
    at: &str,
    backends: Backends,
) -> Result<(CredentialSpec, Option<oauth2::Spec>), FieldError> {
    let field = |f: &str| format!("{at}.{f}");
    if c.placeholder.len() < 8 || c.placeholder.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Err(FieldError::new(
            field("placeholder"),
            "at least 8 characters, no whitespace",
        ));
    }
    if let Some(basic) = &c.basic {
        return basic_credential(c, basic, route, &field, backends).map(|spec| (spec, None));
    }
    if let Some(sigv4) = &c.aws_sigv4 {
        return sigv4_credential(c, sigv4, route, &field, backends).map(|spec| (spec, None));
    }
    let (secret, oauth) = match (&c.oauth2, &c.google_service_account) {
        (None, Some(g)) if c.secret.is_none() && c.vault.is_none() => {
            let name = c
                .name
                .clone()
                .ok_or_else(|| FieldError::new(field("name"), "a google_service_account credential needs a name"))?;
            let at = field("google_service_account");
            if g.scopes.is_empty() {
                return Err(FieldError::new(format!("{at}.scopes"), "at least one OAuth scope"));
            }
            let spec = oauth2::Spec {
                name: name.clone(),
                token_url: None,
                grant: oauth2::Grant::JwtBearer,
                client_id: source(&g.key.secret, &g.key.vault, &|f| format!("{at}.key.{f}"), backends)?,
                client_secret: None,
                refresh_token: None,
                scopes: g.scopes.clone(),
                client_auth: oauth2::ClientAuth::Body,
                refresh_before: g.refresh_before,
                allow_private: g.allow_private,
            };
            (SecretRef::OAuth2(name), Some(spec))
        }
        (Some(o), None) if c.secret.is_none() && c.vault.is_none() => {
            let name = c
                .name
                .clone()
                .ok_or_else(|| FieldError::new(field("name"), "an OAuth2 credential needs a name"))?;
            let spec = oauth2_spec(&name, o, &field("oauth2"), backends)?;
            (SecretRef::OAuth2(name), Some(spec))
        }
        (None, None) => (source(&c.secret, &c.vault, &field, backends)?, None),
        _ => {
            return Err(FieldError::new(
                field("oauth2"),
                "set only one of `secret`, `vault`, `oauth2` or `google_service_account`",
            ))
        }
    };
    // A Google access token is a Bearer token: that is where it goes unless the credential says otherwise.
    let google = c.google_service_account.is_some();
    let (header_name, format_text) = match (&c.header, google) {
        (None, true) if c.query.is_none() => (Some("Authorization".to_string()), "Bearer {secret}".to_string()),
        _ => (c.header.clone(), c.format.clone()),
    };
    let header = match &header_name {
        None => None,
        Some(h) => {
            let name = HeaderName::try_from(h.as_str())
                .map_err(|_| FieldError::new(field("header"), format!("`{h}` is not a valid header name")))?;
            if FORBIDDEN_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("proxy-") {
                return Err(FieldError::new(
                    field("header"),
                    format!("`{h}` cannot carry a credential"),
                ));
            }
            Some(name)
        }
    };
    if c.query.as_ref().is_some_and(|q| q.is_empty()) {
        return Err(FieldError::new(field("query"), "must not be empty"));
    }
    let valid_env = |v: &str| {
        !v.is_empty()
            && !v.starts_with(|ch: char| ch.is_ascii_digit())
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if let Some(env) = c.env.as_deref().filter(|v| !valid_env(v)) {
        return Err(FieldError::new(
            field("env"),
            format!("`{env}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"),
        ));
    }
    if let Some(locations) = &c.locations {
        let listed = |l: RawLocation| locations.contains(&l);
        for (location, name, set) in [
            (RawLocation::Header, "header", header.is_some()),
            (RawLocation::Query, "query", c.query.is_some()),
        ] {
            if listed(location) != set {
                let message = if set {
                    format!("`{name}` is set but `locations` does not list it")
                } else {
                    format!("`locations` lists {name} but no `{name}` is configured")
                };
                return Err(FieldError::new(field("locations"), message));
            }
        }
    }
    if c.inject == Inject::Always && header.is_none() && c.query.is_none() {
        return Err(FieldError::new(
            field("inject"),
            "`always` needs a `header` or `query` to inject into",
        ));
    }
    let format = Format::parse(&format_text).map_err(|m| FieldError::new(field("format"), m))?;
    let spec = CredentialSpec {
        name: c.name.clone().unwrap_or_else(|| match &secret {
            SecretRef::File(name) | SecretRef::OAuth2(name) => name.clone(),
            SecretRef::Vault(v) => format!("{}#{}", v.path, v.key),
            SecretRef::VaultAws(..) => secret.to_string(),
        }),
        route: route.to_string(),
        placeholder: c.placeholder.clone(),
        kind: Kind::Swap(Swap {
            secret,
            header,
            query: c.query.clone(),
            path: c.locations.as_ref().is_some_and(|l| l.contains(&RawLocation::Path)),
            body: c.locations.as_ref().is_some_and(|l| l.contains(&RawLocation::Body)),
            format,
            inject: c.inject,
        }),
        env: c.env.clone(),
    };
    Ok((spec, oauth))
}

/// The fields a kind with a block of its own (`basic`, `aws_sigv4`) takes from that block: set beside it,
/// they are refused as ambiguous.
fn refuse_beside(c: &RawCredential, kind: &str, field: &dyn Fn(&str) -> String) -> Result<(), FieldError> {
    let beside = [
        ("secret", c.secret.is_some()),
        ("vault", c.vault.is_some()),
        ("oauth2", c.oauth2.is_some()),
        ("header", c.header.is_some()),
        ("query", c.query.is_some()),
        ("format", c.format != "{secret}"),
        ("locations", c.locations.is_some()),
        ("basic", c.basic.is_some() && kind != "basic"),
        ("inject", c.inject != Inject::OnPlaceholder && kind == "aws_sigv4"),
    ];
    match beside.iter().find(|(_, set)| *set) {
        Some((name, _)) => Err(FieldError::new(
            field(name),
            format!("a `{kind}` credential takes its values from `{kind}:` and writes `Authorization` itself"),
        )),
        None => Ok(()),
    }
}

/// `aws_sigv4:`: the real access key id, secret access key and optional session token. The placeholder is the
/// access key id agents sign with (AWS SDKs check its shape: 16 to 128 letters and digits).
fn sigv4_credential(
    c: &RawCredential,
    sigv4: &RawSigV4,
    route: &str,
    field: &dyn Fn(&str) -> String,
    backends: Backends,
) -> Result<CredentialSpec, FieldError> {
    refuse_beside(c, "aws_sigv4", field)?;
    if !(16..=128).contains(&c.placeholder.len()) || !c.placeholder.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FieldError::new(
            field("placeholder"),
            "an access key id: 16 to 128 letters and digits (e.g. AKIAKEYWARDPLACEHLDR)",
        ));
    }
    let at = |f: &str| field(&format!("aws_sigv4.{f}"));
    let src = |s: &RawSecretSource, name: &str| source(&s.secret, &s.vault, &|f| at(&format!("{name}.{f}")), backends);
    let keys =
        match (&sigv4.access_key_id, &sigv4.secret_access_key, &sigv4.vault_aws) {
            (Some(id), Some(secret), None) => SigV4::Static {
                access_key_id: src(id, "access_key_id")?,
                secret_access_key: src(secret, "secret_access_key")?,
                session_token: sigv4
                    .session_token
                    .as_ref()
                    .map(|s| src(s, "session_token"))
                    .transpose()?,
            },
            (None, None, Some(v)) if sigv4.session_token.is_none() => {
                if !backends.vault {
                    return Err(FieldError::new(at("vault_aws"), "`secrets.vault` is not configured"));
                }
                if v.role.trim().is_empty() || v.mount.trim_matches('/').is_empty() {
                    return Err(FieldError::new(at("vault_aws"), "`mount` and `role` must not be empty"));
                }
                SigV4::leased(crate::secrets::AwsLease {
                    mount: v.mount.trim_matches('/').to_string(),
                    role: v.role.clone(),
                    sts: v.sts,
                })
            }
            _ => return Err(FieldError::new(
                at("access_key_id"),
                "set `access_key_id` and `secret_access_key` (and optionally `session_token`), or `vault_aws` alone",
            )),
        };
    Ok(CredentialSpec {
        name: c
            .name
            .clone()
            .unwrap_or_else(|| keys.secrets().next().map(ToString::to_string).unwrap_or_default()),
        route: route.to_string(),
        placeholder: c.placeholder.clone(),
        kind: Kind::SigV4(keys),
        env: c.env.clone(),
    })
}

/// `basic:`: the username (literal or a secret) and the password; the header is `Authorization`, and a
/// `secret`/`vault`/`oauth2`, `header`, `query` or `format` beside it is refused as ambiguous.
fn basic_credential(
    c: &RawCredential,
    basic: &RawBasic,
    route: &str,
    field: &dyn Fn(&str) -> String,
    backends: Backends,
) -> Result<CredentialSpec, FieldError> {
    refuse_beside(c, "basic", field)?;
    let at = |f: &str| field(&format!("basic.{f}"));
    let password = source(
        &basic.password.secret,
        &basic.password.vault,
        &|f| at(&format!("password.{f}")),
        backends,
    )?;
    let username = match &basic.username {
        RawUsername::Literal(name) if name.contains(':') || name.is_empty() => {
            return Err(FieldError::new(at("username"), "must be non-empty and contain no `:`"))
        }
        RawUsername::Literal(name) => Username::Literal(name.clone()),
        RawUsername::Secret(s) => Username::Secret(source(
            &s.secret,
            &s.vault,
            &|f| at(&format!("username.{f}")),
            backends,
        )?),
    };
    let name = c.name.clone().unwrap_or_else(|| password.to_string());
    Ok(CredentialSpec {
        name,
        route: route.to_string(),
        placeholder: c.placeholder.clone(),
        kind: Kind::Basic(Basic {
            username,
            password,
            inject: c.inject,
        }),
        env: c.env.clone(),
    })
}

/// A placeholder must identify exactly one credential, so none may contain another.
pub(super) fn check_placeholders(creds: &[CredentialSpec], fields: &[String]) -> Result<(), FieldError> {
    for (i, a) in creds.iter().enumerate() {
        for (j, b) in creds.iter().enumerate().skip(i + 1) {
            if a.placeholder.contains(&b.placeholder) || b.placeholder.contains(&a.placeholder) {
                return Err(FieldError::new(
                    format!("{}.placeholder", fields[j]),
                    format!("placeholder overlaps the placeholder of credential `{}`", a.name),
                ));
            }
        }
    }
    Ok(())
}
