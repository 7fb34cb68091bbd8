//! Raw YAML values → runtime types. Every check that can be made without I/O is made here, and each failure
//! names the field it is about (`routes[0].credentials[1].header`).

use std::collections::HashSet;
use std::path::Path;

use http::{HeaderName, Method};

use super::credential::{check_placeholders, client_certificate, credential, Backends};
use super::raw::{
    PolicyMode, RawAudit, RawConfig, RawPolicy, RawRateLimit, RawRoute, RawTokenAuth, RawTraces, RawVault,
};
use super::{Config, Environment, FieldError, PolicyConfig, RouteLimits, TokenSource};
use crate::policy::Mode;
use crate::ratelimit;
use crate::route::{normalize_host, HostPattern, Route};
use crate::secrets::{oauth2, vault};
use crate::telemetry::audit::{AuditOutput, AuditSettings};
use crate::telemetry::trace::{OtlpProtocol, TraceSettings};
use std::num::NonZeroU32;
use std::time::Duration;

/// A pure function of the parsed text, where relative paths start (`base`) and the environment's values.
pub fn validate(raw: RawConfig, base: &Path, env: &Environment) -> Result<Config, FieldError> {
    let listen = raw
        .listen
        .parse()
        .map_err(|_| FieldError::new("listen", "expected ip:port, e.g. 127.0.0.1:3128"))?;
    let admin = raw
        .admin
        .parse()
        .map_err(|_| FieldError::new("admin", "expected ip:port, e.g. 127.0.0.1:9901"))?;
    let transparent = raw
        .transparent
        .map(|t| {
            let listen = t
                .listen
                .parse()
                .map_err(|_| FieldError::new("transparent.listen", "expected ip:port, e.g. 127.0.0.1:15001"))?;
            Ok::<_, FieldError>(crate::proxy::transparent::Settings {
                listen,
                non_http: t.non_http,
            })
        })
        .transpose()?;
    let agent_id = env
        .get("KEYWARD_AGENT_ID")
        .map(str::to_string)
        .or(raw.agent.id)
        .unwrap_or_else(|| "default".into());
    if agent_id.is_empty() {
        return Err(FieldError::new("agent.id", "must not be empty"));
    }
    let admin_token = match raw.admin_token {
        None => None,
        Some(RawTokenAuth {
            env: Some(var),
            file: None,
        }) => Some(TokenSource::Env(var)),
        Some(RawTokenAuth {
            env: None,
            file: Some(file),
        }) => Some(TokenSource::File(base.join(file))),
        Some(_) => return Err(FieldError::new("admin_token", "set exactly one of `env` or `file`")),
    };
    if raw.limits.max_connections == 0
        || raw.limits.max_headers == 0
        || raw.limits.header_read_timeout.is_zero()
        || raw.limits.idle_connection_timeout.is_zero()
    {
        return Err(FieldError::new(
            "limits",
            "max_connections, max_headers and header_read_timeout must be above zero",
        ));
    }
    if raw.limits.max_header_bytes < 8192 {
        return Err(FieldError::new("limits.max_header_bytes", "at least 8192"));
    }
    let user_header = HeaderName::try_from(raw.agent.user_header.as_str())
        .map_err(|_| FieldError::new("agent.user_header", "not a valid header name"))?;
    let policy = raw.policy.map(|p| policy(p, base)).transpose()?;
    let agent_rate_limit = raw
        .rate_limit
        .as_ref()
        .map(|l| rate_limit(l, "rate_limit"))
        .transpose()?;
    let mut route_rate_limits = Vec::new();
    let mut route_limits = std::collections::HashMap::new();
    let secrets_file = raw.secrets.file.map(|f| base.join(f));
    let vault = raw.secrets.vault.map(|v| vault(v, base)).transpose()?;
    if secrets_file.is_none() && vault.is_none() {
        return Err(FieldError::new(
            "secrets",
            "configure a backend: `file`, `vault`, or both",
        ));
    }
    let backends = Backends {
        file: secrets_file.is_some(),
        vault: vault.is_some(),
    };
    if raw.secrets.poll_interval.is_zero() {
        return Err(FieldError::new("secrets.poll_interval", "must be greater than zero"));
    }
    let mut routes = Vec::new();
    let mut credentials = Vec::new();
    let mut credential_fields = Vec::new();
    let mut oauth2 = Vec::new();
    let mut names = HashSet::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let at = format!("routes[{i}]");
        if !names.insert(r.name.clone()) {
            return Err(FieldError::new(
                format!("{at}.name"),
                format!("route name `{}` is used twice", r.name),
            ));
        }
        let client_certificate = r
            .client_certificate
            .as_ref()
            .map(|c| client_certificate(c, &format!("{at}.client_certificate"), backends))
            .transpose()?;
        for (j, c) in r.credentials.iter().enumerate() {
            let field = format!("{at}.credentials[{j}]");
            let (spec, oauth) = credential(c, &r.name, &field, backends)?;
            if let Some(o) = oauth {
                if oauth2.iter().any(|x: &oauth2::Spec| x.name == o.name) {
                    return Err(FieldError::new(
                        format!("{field}.name"),
                        format!("OAuth2 credential `{}` is defined twice", o.name),
                    ));
                }
                oauth2.push(o);
            }
            credentials.push(spec);
            credential_fields.push(field);
        }
        if r.policy.is_some() && policy.is_none() {
            return Err(FieldError::new(
                format!("{at}.policy"),
                "names an entry point but no `policy:` is configured",
            ));
        }
        route_limits.insert(r.name.clone(), limits(&r, &at)?);
        if let Some(l) = &r.rate_limit {
            route_rate_limits.push((r.name.clone(), rate_limit(l, &format!("{at}.rate_limit"))?));
        }
        routes.push(Route {
            client_certificate,
            ..route(r, &at)?
        });
    }
    check_placeholders(&credentials, &credential_fields)?;
    let traces = traces(raw.telemetry.traces, env)?;
    let audit = audit(raw.telemetry.audit, base)?;
    Ok(Config {
        path: Default::default(),
        text: String::new(),
        listen,
        transparent,
        admin,
        admin_token,
        agent_id,
        agent_labels: raw.agent.labels,
        user_header,
        policy,
        agent_rate_limit,
        route_rate_limits,
        route_limits,
        ca_cert: base.join(raw.ca.cert),
        ca_key: base.join(raw.ca.key),
        upstream: crate::upstream::Settings {
            extra_roots: raw.upstream_tls.extra_roots.into_iter().map(|p| base.join(p)).collect(),
            resolve: raw
                .resolve
                .into_iter()
                .map(|(h, ips)| (normalize_host(&h), ips))
                .collect(),
            connect_timeout: raw.upstream.connect_timeout,
            pool_idle_timeout: raw.upstream.pool_idle_timeout,
        },
        agent_tls_handshake_timeout: raw.upstream.agent_tls_handshake_timeout,
        limits: crate::proxy::Limits {
            max_connections: raw.limits.max_connections,
            header_read_timeout: raw.limits.header_read_timeout,
            max_header_bytes: raw.limits.max_header_bytes,
            max_headers: raw.limits.max_headers,
            max_concurrent_streams: raw.limits.max_concurrent_streams,
            idle_connection_timeout: raw.limits.idle_connection_timeout,
            max_websocket_message: raw.limits.max_websocket_message,
        },
        shutdown_grace: raw.shutdown_grace,
        secrets_file,
        vault,
        secrets_poll_interval: raw.secrets.poll_interval,
        unmatched: raw.unmatched,
        unmatched_allow_private: raw.unmatched_allow_private,
        routes,
        credentials,
        oauth2,
        credential_fields,
        traces,
        audit,
    })
}

/// Tracing is on when configured, or when the standard OTLP endpoint variables are set (then with defaults);
/// `OTEL_SDK_DISABLED=true` turns it off either way.
fn traces(raw: Option<RawTraces>, vars: &Environment) -> Result<Option<TraceSettings>, FieldError> {
    let env = |name: &str| vars.get(name).map(str::to_string);
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let env_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let raw = match raw {
        Some(raw) => raw,
        None if env_endpoint.is_some() => RawTraces::default(),
        None => return Ok(None),
    };
    let (protocol_field, protocol) = match raw.protocol {
        Some(p) => ("telemetry.traces.protocol", p),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .unwrap_or_else(|| "grpc".into()),
        ),
    };
    let protocol = match protocol.as_str() {
        "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        other => {
            return Err(FieldError::new(
                protocol_field,
                format!("`{other}` is not supported: use `grpc` or `http/protobuf`"),
            ))
        }
    };
    let endpoint = raw.endpoint.or(env_endpoint).ok_or_else(|| {
        FieldError::new(
            "telemetry.traces.endpoint",
            "set it, or OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://127.0.0.1:4317",
        )
    })?;
    let uri: http::Uri = endpoint
        .parse()
        .ok()
        .filter(|u: &http::Uri| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .ok_or_else(|| FieldError::new("telemetry.traces.endpoint", "expected an http:// or https:// URL"))?;
    let endpoint = match protocol {
        // The collector's HTTP receiver listens on /v1/traces; a bare base URL means that path.
        OtlpProtocol::HttpProtobuf if uri.path() == "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        _ => endpoint,
    };
    if !(0.0..=1.0).contains(&raw.sample_ratio) {
        return Err(FieldError::new("telemetry.traces.sample_ratio", "between 0.0 and 1.0"));
    }
    if raw.max_queue == 0 || raw.max_batch == 0 || raw.flush_interval.is_zero() || raw.export_timeout.is_zero() {
        return Err(FieldError::new(
            "telemetry.traces",
            "max_queue, max_batch, flush_interval and export_timeout must be above zero",
        ));
    }
    Ok(Some(TraceSettings {
        endpoint,
        protocol,
        sample_ratio: raw.sample_ratio,
        max_queue: raw.max_queue,
        max_batch: raw.max_batch,
        flush_interval: raw.flush_interval,
        export_timeout: raw.export_timeout,
        service_name: raw.service_name,
        child_spans: raw.child_spans,
    }))
}

fn audit(raw: RawAudit, base: &Path) -> Result<AuditSettings, FieldError> {
    if raw.max_queue == 0 {
        return Err(FieldError::new("telemetry.audit.max_queue", "must be above zero"));
    }
    let output = match raw.output.as_str() {
        "" => {
            return Err(FieldError::new(
                "telemetry.audit.output",
                "`stdout`, `off` or a file path",
            ))
        }
        "stdout" => AuditOutput::Stdout,
        "off" => AuditOutput::Off,
        path => AuditOutput::File(base.join(path)),
    };
    Ok(AuditSettings {
        output,
        max_queue: raw.max_queue,
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
        client_certificate: None,
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

fn limits(r: &RawRoute, at: &str) -> Result<RouteLimits, FieldError> {
    let t = &r.timeouts;
    for (name, d) in [
        ("connect", t.connect),
        ("tls", t.tls),
        ("response_headers", t.response_headers),
        ("idle", t.idle),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            return Err(FieldError::new(
                format!("{at}.timeouts.{name}"),
                "must be greater than zero",
            ));
        }
    }
    let concurrency = match &r.concurrency {
        Some(c) if c.max_in_flight == 0 => {
            return Err(FieldError::new(
                format!("{at}.concurrency.max_in_flight"),
                "must be at least 1",
            ))
        }
        Some(c) => Some((c.max_in_flight, c.queue_timeout)),
        None => None,
    };
    let retry = match &r.retry {
        Some(x) if x.attempts == 0 => {
            return Err(FieldError::new(
                format!("{at}.retry.attempts"),
                "at least 1 (the first attempt)",
            ))
        }
        Some(x) => Some(crate::retry::RetryPolicy {
            attempts: x.attempts,
            base_delay: x.base_delay,
            max_delay: x.max_delay,
            deadline: x.deadline,
            max_body: x.max_body,
            max_retry_after: x.max_retry_after,
        }),
        None => None,
    };
    Ok(RouteLimits {
        connect: t.connect,
        tls: t.tls,
        response_headers: t.response_headers,
        idle: t.idle,
        concurrency,
        retry,
    })
}

fn rate_limit(l: &RawRateLimit, at: &str) -> Result<ratelimit::Limit, FieldError> {
    let (rate, per) = match (l.per_second, l.per_minute, l.per_hour) {
        (Some(n), None, None) => (n, Duration::from_secs(1)),
        (None, Some(n), None) => (n, Duration::from_secs(60)),
        (None, None, Some(n)) => (n, Duration::from_secs(3600)),
        _ => {
            return Err(FieldError::new(
                at,
                "set exactly one of per_second, per_minute or per_hour",
            ))
        }
    };
    let rate = NonZeroU32::new(rate).ok_or_else(|| FieldError::new(at, "the rate must be at least 1"))?;
    let burst = match l.burst {
        None => rate,
        Some(b) => NonZeroU32::new(b).ok_or_else(|| FieldError::new(format!("{at}.burst"), "must be at least 1"))?,
    };
    if l.max_keys == 0 {
        return Err(FieldError::new(format!("{at}.max_keys"), "must be at least 1"));
    }
    Ok(ratelimit::Limit {
        rate,
        per,
        burst,
        per_user: l.per_user,
        max_keys: l.max_keys,
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

fn vault(v: RawVault, base: &Path) -> Result<vault::Settings, FieldError> {
    let uri: http::Uri = v
        .address
        .parse()
        .map_err(|_| FieldError::new("secrets.vault.address", "not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(FieldError::new("secrets.vault.address", "expected http(s)://host:port"));
    }
    for (field, d) in [
        ("refresh_interval", v.refresh_interval),
        ("max_stale", v.max_stale),
        ("request_timeout", v.request_timeout),
    ] {
        if d.is_zero() {
            return Err(FieldError::new(
                format!("secrets.vault.{field}"),
                "must be greater than zero",
            ));
        }
    }
    if v.max_stale < v.refresh_interval {
        return Err(FieldError::new(
            "secrets.vault.max_stale",
            "must be at least refresh_interval",
        ));
    }
    let auth = match (v.auth.token, v.auth.approle, v.auth.kubernetes) {
        (Some(t), None, None) => {
            if t.env.is_some() == t.file.is_some() {
                return Err(FieldError::new(
                    "secrets.vault.auth.token",
                    "set exactly one of `env` or `file`",
                ));
            }
            vault::auth::Auth::Token {
                env: t.env,
                file: t.file.map(|f| base.join(f)),
            }
        }
        (None, Some(a), None) => vault::auth::Auth::AppRole {
            mount: a.mount,
            role_id: a.role_id,
            secret_id_file: base.join(a.secret_id_file),
        },
        (None, None, Some(k)) => vault::auth::Auth::Kubernetes {
            mount: k.mount,
            role: k.role,
            jwt_path: base.join(k.jwt_path),
        },
        _ => {
            return Err(FieldError::new(
                "secrets.vault.auth",
                "set exactly one of `token`, `approle` or `kubernetes`",
            ))
        }
    };
    Ok(vault::Settings {
        connection: vault::auth::Connection {
            address: v.address,
            namespace: v.namespace,
            ca_file: v.ca_file.map(|f| base.join(f)),
            timeout: v.request_timeout,
        },
        auth,
        refresh_interval: v.refresh_interval,
        refresh_jitter: v.refresh_jitter,
        max_stale: v.max_stale,
    })
}
