//! Raw YAML values → runtime types. Every check that can be made without I/O is made here, and each failure
//! names the field it is about (`routes[0].credentials[1].header`).

use std::collections::HashSet;
use std::path::Path;

use http::{HeaderName, Method};

use super::raw::{Inject, PolicyMode, RawConfig, RawCredential, RawPolicy, RawRoute};
use super::{Config, FieldError, PolicyConfig};
use crate::credentials::{CredentialSpec, Format};
use crate::policy::Mode;
use crate::route::{normalize_host, HostPattern, Route};

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

pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, FieldError> {
    let listen = raw
        .listen
        .parse()
        .map_err(|_| FieldError::new("listen", "expected ip:port, e.g. 127.0.0.1:3128"))?;
    let admin = raw
        .admin
        .parse()
        .map_err(|_| FieldError::new("admin", "expected ip:port, e.g. 127.0.0.1:9901"))?;
    let agent_id = std::env::var("KEYWARD_AGENT_ID")
        .ok()
        .or(raw.agent.id)
        .unwrap_or_else(|| "default".into());
    if agent_id.is_empty() {
        return Err(FieldError::new("agent.id", "must not be empty"));
    }
    let user_header = HeaderName::try_from(raw.agent.user_header.as_str())
        .map_err(|_| FieldError::new("agent.user_header", "not a valid header name"))?;
    let policy = raw.policy.map(|p| policy(p, base)).transpose()?;
    let secrets_file = raw
        .secrets
        .file
        .map(|f| base.join(f))
        .ok_or_else(|| FieldError::new("secrets.file", "a secrets backend is required"))?;
    if raw.secrets.poll_interval.is_zero() {
        return Err(FieldError::new("secrets.poll_interval", "must be greater than zero"));
    }
    let mut routes = Vec::new();
    let mut credentials = Vec::new();
    let mut credential_fields = Vec::new();
    let mut names = HashSet::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let at = format!("routes[{i}]");
        if !names.insert(r.name.clone()) {
            return Err(FieldError::new(
                format!("{at}.name"),
                format!("route name `{}` is used twice", r.name),
            ));
        }
        for (j, c) in r.credentials.iter().enumerate() {
            let field = format!("{at}.credentials[{j}]");
            credentials.push(credential(c, &r.name, &field)?);
            credential_fields.push(field);
        }
        if r.policy.is_some() && policy.is_none() {
            return Err(FieldError::new(
                format!("{at}.policy"),
                "names an entry point but no `policy:` is configured",
            ));
        }
        routes.push(route(r, &at)?);
    }
    check_placeholders(&credentials, &credential_fields)?;
    Ok(Config {
        path: Default::default(),
        text: String::new(),
        listen,
        admin,
        agent_id,
        agent_labels: raw.agent.labels,
        user_header,
        policy,
        ca_cert: base.join(raw.ca.cert),
        ca_key: base.join(raw.ca.key),
        extra_roots: raw.upstream_tls.extra_roots.into_iter().map(|p| base.join(p)).collect(),
        upstream: raw.upstream,
        secrets_file,
        secrets_poll_interval: raw.secrets.poll_interval,
        unmatched: raw.unmatched,
        unmatched_allow_private: raw.unmatched_allow_private,
        resolve: raw
            .resolve
            .into_iter()
            .map(|(h, ips)| (normalize_host(&h), ips))
            .collect(),
        routes,
        credentials,
        credential_fields,
    })
}

fn route(r: RawRoute, at: &str) -> Result<Route, FieldError> {
    if r.name.trim().is_empty() {
        return Err(FieldError::new(format!("{at}.name"), "must not be empty"));
    }
    if r.hosts.is_empty() {
        return Err(FieldError::new(format!("{at}.hosts"), "needs at least one host"));
    }
    let hosts = r
        .hosts
        .iter()
        .enumerate()
        .map(|(k, h)| HostPattern::parse(h).map_err(|m| FieldError::new(format!("{at}.hosts[{k}]"), m)))
        .collect::<Result<_, _>>()?;
    for (k, p) in r.paths.iter().enumerate() {
        if !p.starts_with('/') {
            return Err(FieldError::new(
                format!("{at}.paths[{k}]"),
                "a path prefix starts with `/`",
            ));
        }
    }
    let methods = r
        .methods
        .iter()
        .enumerate()
        .map(|(k, m)| {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| FieldError::new(format!("{at}.methods[{k}]"), format!("`{m}` is not an HTTP method")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Route {
        name: r.name,
        hosts,
        paths: r.paths,
        methods,
        allow_private: r.allow_private,
        allow_plain_http: r.allow_plain_http,
        policy: r.policy.map(|p| entrypoint(&p, &format!("{at}.policy"))).transpose()?,
    })
}

fn policy(p: RawPolicy, base: &Path) -> Result<PolicyConfig, FieldError> {
    let timezone = p
        .timezone
        .parse::<chrono_tz::Tz>()
        .map_err(|_| FieldError::new("policy.timezone", format!("`{}` is not an IANA time zone", p.timezone)))?;
    if p.poll_interval.is_zero() {
        return Err(FieldError::new("policy.poll_interval", "must be greater than zero"));
    }
    Ok(PolicyConfig {
        dir: base.join(p.dir),
        entrypoint: entrypoint(&p.entrypoint, "policy.entrypoint")?,
        mode: match p.mode {
            PolicyMode::Enforce => Mode::Enforce,
            PolicyMode::Shadow => Mode::Shadow,
        },
        body_limit: p.body_limit,
        timezone,
        poll_interval: p.poll_interval,
    })
}

fn entrypoint(text: &str, field: &str) -> Result<String, FieldError> {
    let ok = text.strip_prefix("data.").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('.')
                .all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    });
    if !ok {
        return Err(FieldError::new(
            field,
            format!("`{text}` is not a rule path like data.keyward.decision"),
        ));
    }
    Ok(text.to_string())
}

fn credential(c: &RawCredential, route: &str, at: &str) -> Result<CredentialSpec, FieldError> {
    let field = |f: &str| format!("{at}.{f}");
    if c.placeholder.len() < 8 || c.placeholder.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Err(FieldError::new(
            field("placeholder"),
            "at least 8 characters, no whitespace",
        ));
    }
    if c.secret.trim().is_empty() {
        return Err(FieldError::new(field("secret"), "must name a secret"));
    }
    let header = match &c.header {
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
    if c.inject == Inject::Always && header.is_none() && c.query.is_none() {
        return Err(FieldError::new(
            field("inject"),
            "`always` needs a `header` or `query` to inject into",
        ));
    }
    let format = Format::parse(&c.format).map_err(|m| FieldError::new(field("format"), m))?;
    Ok(CredentialSpec {
        name: c.name.clone().unwrap_or_else(|| c.secret.clone()),
        route: route.to_string(),
        placeholder: c.placeholder.clone(),
        secret: c.secret.clone(),
        header,
        query: c.query.clone(),
        format,
        inject: c.inject,
    })
}

/// A placeholder must identify exactly one credential, so none may contain another.
fn check_placeholders(creds: &[CredentialSpec], fields: &[String]) -> Result<(), FieldError> {
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
