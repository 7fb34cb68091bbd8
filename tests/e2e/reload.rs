//! Live configuration through the real binary: a changed config file replaces routes and credentials while
//! a stream keeps running; a broken one is refused with its file, line and field while the running one keeps
//! serving; sections that need a restart are reported, not applied.

use std::time::Duration;

use crate::support::clients::{curl, stream_lines};
use crate::support::echo::Echo;
use crate::support::proxy::{config_yaml, Proxy};

/// A route whose credential writes `format` (shared with the controller tests).
pub fn route(format: &str) -> String {
    format!(
        "routes:\n  - name: echo\n    hosts: [\"localhost:*\"]\n    allow_private: true\n    credentials:\n      \
         - placeholder: kw-placeholder-openai\n        secret: openai_key\n        header: Authorization\n        \
         format: \"{format}\"\n"
    )
}

fn rewrite(proxy: &Proxy, extra: &str) {
    std::fs::write(proxy.path("keyward.yaml"), config_yaml(extra)).unwrap();
}

/// Reads the rest of an `/sse?events=2` stream whose gate was released: event 2 arrives.
pub async fn stream_finishes(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) {
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l == "data: event 2"),
        "the stream kept running to its end: {rest:?}"
    );
}

/// The `Authorization` the upstream got for a request with the placeholder.
pub async fn authorization_seen(proxy: &Proxy, echo: &Echo) -> String {
    let url = format!("https://localhost:{}/v1/models", echo.port());
    let reply = curl(proxy, &["-H", "Authorization: Bearer kw-placeholder-openai", &url]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let last = echo.requests().pop().unwrap();
    last.header("authorization").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_change_applies_live_while_a_stream_keeps_running() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&route("Bearer {secret}")).await;
    assert_eq!(
        authorization_seen(&proxy, &echo).await,
        "Bearer sk-REALSECRET-openai-5a1f7c"
    );

    // A stream on the old configuration: event 1 has arrived, event 2 waits for the gate.
    let (mut stream, mut lines) = stream_lines(&proxy, &format!("https://localhost:{}/sse?events=2", echo.port()));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("data: event 1"));

    rewrite(&proxy, &route("Token {secret}"));
    let (status, body) = proxy.admin_post("/reload");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["config"], "reloaded");
    assert_eq!(body["restart_needed"], serde_json::json!([]));
    assert_eq!(
        authorization_seen(&proxy, &echo).await,
        "Token sk-REALSECRET-openai-5a1f7c",
        "the next request runs on the new configuration"
    );
    let (_, config) = proxy.admin_get("/config");
    assert!(
        config.contains("Token {secret}") || config.contains("kw-placeholder-openai"),
        "{config}"
    );

    echo.release_gate();
    stream_finishes(&mut lines).await;
    assert!(stream.wait().await.unwrap().success());
    assert_eq!(
        proxy.metric_sum("keyward_config_reloads_total", &[("result", "ok")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_config_is_refused_and_the_running_one_keeps_serving_until_a_good_one_arrives() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&route("Bearer {secret}")).await;

    // An unknown secret name: the file parses, validation against the secrets file refuses it.
    rewrite(
        &proxy,
        &route("Bearer {secret}").replace("openai_key", "no_such_secret"),
    );
    let (status, body) = proxy.admin_post("/reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("config_reload_failed"), "{body}");
    assert!(
        body.contains("keyward.yaml") && body.contains("no_such_secret"),
        "names the file and secret: {body}"
    );
    let (status, ready) = proxy.admin_get("/readyz");
    assert_eq!(status, 200, "a refused reload does not make the proxy unready: {ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert!(
        ready["config_error"].as_str().unwrap().contains("no_such_secret"),
        "{ready}"
    );
    assert_eq!(proxy.metric("keyward_config_last_reload_ok"), 0.0);
    assert_eq!(
        authorization_seen(&proxy, &echo).await,
        "Bearer sk-REALSECRET-openai-5a1f7c",
        "the running configuration still serves"
    );

    // A syntax error: refused with its line.
    std::fs::write(proxy.path("keyward.yaml"), "routes: [\n").unwrap();
    let (status, body) = proxy.admin_post("/reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("keyward.yaml:"), "names the file and line: {body}");

    // A good one, picked up by the file poll without any call.
    rewrite(&proxy, &route("Token {secret}"));
    proxy
        .wait_for_log("configuration reloaded", Duration::from_secs(10))
        .await;
    assert_eq!(
        authorization_seen(&proxy, &echo).await,
        "Token sk-REALSECRET-openai-5a1f7c"
    );
    let (_, ready) = proxy.admin_get("/readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert!(ready["config_error"].is_null(), "{ready}");
    assert_eq!(proxy.metric("keyward_config_last_reload_ok"), 1.0);
    assert_eq!(
        proxy.metric_sum("keyward_config_reloads_total", &[("result", "error")]),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_route_refuses_the_next_request_and_a_restart_only_section_is_reported() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&route("Bearer {secret}")).await;
    assert_eq!(
        authorization_seen(&proxy, &echo).await,
        "Bearer sk-REALSECRET-openai-5a1f7c"
    );

    rewrite(&proxy, "limits: { max_connections: 7 }\nroutes: []\n");
    let (status, body) = proxy.admin_post("/reload");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["restart_needed"], serde_json::json!(["limits"]), "{body}");
    let url = format!("https://localhost:{}/v1/models", echo.port());
    let reply = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-openai", &url]).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.json()["error"], "no_route");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_config_file_is_reported_once_and_the_running_one_keeps_serving() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&route("Bearer {secret}")).await;
    std::fs::remove_file(proxy.path("keyward.yaml")).unwrap();
    let admin = proxy.admin;
    crate::support::eventually("/readyz to report the unreadable file", Duration::from_secs(10), || {
        crate::support::proxy::admin_get(admin, "/readyz")
            .1
            .contains("keyward.yaml")
    })
    .await;
    // Two more polls (every 2 s) find the same error and do not count it again.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        proxy.metric_sum("keyward_config_reloads_total", &[("result", "error")]),
        1.0
    );
    assert_eq!(
        authorization_seen(&proxy, &echo).await,
        "Bearer sk-REALSECRET-openai-5a1f7c",
        "the running configuration still serves"
    );
    rewrite(&proxy, &route("Token {secret}"));
    proxy
        .wait_for_log("configuration reloaded", Duration::from_secs(10))
        .await;
}
