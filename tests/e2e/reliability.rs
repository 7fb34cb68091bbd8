//! Reliable action: rate limits through the proxy with real clients.

use std::time::Duration;

use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::proxy::Proxy;

/// The routes of `routes()` with `rate_limit` lines added to the echo route, and `agent_limit` at the top.
fn limited(route_limit: &str, agent_limit: &str) -> String {
    let routes = crate::routes().replace(
        "    hosts: [\"localhost\"]\n    allow_private: true\n",
        &format!("    hosts: [\"localhost\"]\n    allow_private: true\n    rate_limit: {route_limit}\n"),
    );
    format!("{routes}{agent_limit}")
}

/// Status and `Retry-After` of one GET through the proxy (headers are dumped to stderr by `-D`).
async fn get(proxy: &Proxy, url: &str, user: &str) -> (u16, Option<u64>) {
    let user = format!("X-Keyward-User: {user}");
    let reply = curl(proxy, &["-D", "/dev/stderr", "-H", &user, url]).await;
    let retry_after = reply.stderr.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("retry-after:")
            .map(|v| v.trim().parse().unwrap())
    });
    if reply.status == 429 {
        assert_eq!(reply.json()["error"], "rate_limited");
    }
    (reply.status, retry_after)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_over_the_limit_gets_429_with_retry_after_and_passes_after_waiting() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&limited("{ per_second: 1, burst: 2 }", "")).await;
    let url = format!("https://localhost:{}/v1", echo.port());
    assert_eq!(get(&proxy, &url, "a").await.0, 200);
    assert_eq!(get(&proxy, &url, "a").await.0, 200);
    let (status, retry_after) = get(&proxy, &url, "a").await;
    assert_eq!(status, 429);
    assert_eq!(retry_after, Some(1), "one token per second: retry in 1 s");
    assert_eq!(echo.requests().len(), 2, "nothing forwarded when limited");
    // Waiting what Retry-After says is exactly what an agent should do.
    tokio::time::sleep(Duration::from_secs(retry_after.unwrap())).await;
    assert_eq!(get(&proxy, &url, "a").await.0, 200);
    assert_eq!(
        proxy.metric("keyward_requests_total{route=\"echo\",outcome=\"rate_limited\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_have_independent_buckets_when_per_user() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&limited("{ per_minute: 1, burst: 1, per_user: true }", "")).await;
    let url = format!("https://localhost:{}/v1", echo.port());
    assert_eq!(get(&proxy, &url, "alice").await.0, 200);
    let (status, retry_after) = get(&proxy, &url, "alice").await;
    assert_eq!(status, 429);
    assert!(retry_after.is_some_and(|s| (55..=60).contains(&s)), "{retry_after:?}");
    assert_eq!(get(&proxy, &url, "bob").await.0, 200, "bob is not limited by alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_wide_limit_spans_routes() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&limited(
        "{ per_minute: 100 }",
        "rate_limit: { per_minute: 2, burst: 2 }\n",
    ))
    .await;
    let echo_url = format!("https://localhost:{}/v1", echo.port());
    let github_url = format!("https://api.keyward.test:{}/repos/a", echo.port());
    assert_eq!(get(&proxy, &echo_url, "a").await.0, 200);
    assert_eq!(get(&proxy, &github_url, "a").await.0, 200);
    let reply = curl(&proxy, &[&echo_url]).await;
    assert_eq!(reply.status, 429);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("agent rate limit"),
        "{}",
        reply.body
    );
}
