//! Reliable action: rate limits through the proxy with real clients.

use std::time::Duration;

use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::proxy::Proxy;

/// The routes of `routes()` with `rate_limit` lines added to the echo route, and `agent_limit` at the top.
fn limited(route_limit: &str, agent_limit: &str) -> String {
    let routes = crate::routes().replace(
        "    hosts: [\"localhost:*\"]\n    allow_private: true\n",
        &format!("    hosts: [\"localhost:*\"]\n    allow_private: true\n    rate_limit: {route_limit}\n"),
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
        proxy.metric_sum(
            "keyward_requests_total",
            &[("route", "echo"), ("outcome", "rate_limited")]
        ),
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

/// The echo route of `routes()` with extra route lines (timeouts, concurrency, retry).
fn echo_route_with(lines: &str) -> String {
    crate::routes().replace(
        "    hosts: [\"localhost:*\"]\n    allow_private: true\n",
        &format!("    hosts: [\"localhost:*\"]\n    allow_private: true\n{lines}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upstream_gets_a_504_naming_the_phase() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&echo_route_with("    timeouts: { response_headers: 500ms }\n")).await;
    let started = std::time::Instant::now();
    let reply = curl(&proxy, &[&format!("https://localhost:{}/stall", echo.port())]).await;
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(reply.json()["error"], "upstream_timeout");
    assert_eq!(reply.json()["phase"], "response_headers");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_handshake_that_never_comes_times_out_as_tls() {
    // A TCP server that accepts and then says nothing: the upstream TLS handshake stalls.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let proxy = Proxy::spawn(&echo_route_with("    timeouts: { connect: 1s, tls: 400ms }\n")).await;
    let reply = curl(&proxy, &[&format!("https://localhost:{port}/")]).await;
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(reply.json()["phase"], "tls");
    held.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_ends_a_stalled_body_but_not_a_steady_sse_stream() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&echo_route_with("    timeouts: { idle: 1s }\n")).await;
    // Events every 250 ms for 2 s: longer than the idle limit, never idle that long.
    let steady = curl(
        &proxy,
        &[
            "-N",
            &format!("https://localhost:{}/sse?events=9&every_ms=250", echo.port()),
        ],
    )
    .await;
    assert_eq!(steady.status, 200, "{steady:?}");
    assert_eq!(
        steady.body.matches("data: event").count(),
        9,
        "the whole stream arrived: {}",
        steady.body
    );
    assert!(steady.stderr.is_empty(), "{}", steady.stderr);
    // One event, then silence (the gate is never opened): cut after the idle limit.
    let started = std::time::Instant::now();
    let stalled = curl(
        &proxy,
        &["-N", &format!("https://localhost:{}/sse?events=3", echo.port())],
    )
    .await;
    assert!(stalled.body.contains("data: event 1") && !stalled.body.contains("event 2"));
    assert!(
        stalled.stderr.contains("curl:"),
        "the transfer ended in error: {stalled:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    proxy
        .wait_for_log("upstream response stalled", Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_concurrency_cap_a_request_waits_then_gets_503() {
    use tokio::io::AsyncBufReadExt;
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&echo_route_with(
        "    concurrency: { max_in_flight: 1, queue_timeout: 500ms }\n",
    ))
    .await;
    // The first request holds the only slot: its response body stays open until the gate opens.
    let mut holder = tokio::process::Command::new("curl")
        .args(["-sSN", "--max-time", "30", "-x", &proxy.url(), "--cacert"])
        .arg(proxy.ca_cert())
        .arg(format!("https://localhost:{}/sse?events=2", echo.port()))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(holder.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("data: event 1"));
    let started = std::time::Instant::now();
    let second = curl(&proxy, &[&format!("https://localhost:{}/v1", echo.port())]).await;
    assert_eq!(second.status, 503, "{second:?}");
    assert_eq!(second.json()["error"], "concurrency_limited");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "it waited for the queue time first"
    );
    echo.release_gate();
    assert!(holder.wait().await.unwrap().success());
    assert_eq!(
        curl(&proxy, &[&format!("https://localhost:{}/v1", echo.port())])
            .await
            .status,
        200,
        "the slot is free again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_for_idempotent_requests_only() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&echo_route_with(
        "    retry: { attempts: 3, base_delay: 50ms, max_delay: 200ms, deadline: 10s, max_retry_after: 2s }\n",
    ))
    .await;
    let base = format!("https://localhost:{}", echo.port());
    let hits = |key: &str| {
        echo.requests()
            .iter()
            .filter(|r| r.path.contains(&format!("key={key}")))
            .count()
    };

    let get = curl(&proxy, &[&format!("{base}/flaky?key=g&fail=2")]).await;
    assert_eq!((get.status, get.body.as_str()), (200, "ok after 3 attempts"));
    assert_eq!(hits("g"), 3);

    let post = curl(
        &proxy,
        &["-X", "POST", "--data", "x", &format!("{base}/flaky?key=p&fail=1")],
    )
    .await;
    assert_eq!(post.status, 503, "a POST without Idempotency-Key is not retried");
    assert_eq!(hits("p"), 1);

    let keyed = curl(
        &proxy,
        &[
            "-X",
            "POST",
            "-H",
            "Idempotency-Key: 42",
            "--data",
            "x",
            &format!("{base}/flaky?key=k&fail=1"),
        ],
    )
    .await;
    assert_eq!(keyed.status, 200, "{keyed:?}");
    assert_eq!(hits("k"), 2);
    assert_eq!(
        echo.requests()
            .iter()
            .filter(|r| r.path.contains("key=k"))
            .map(|r| r.body_len)
            .collect::<Vec<_>>(),
        [1, 1],
        "the body was replayed"
    );

    let started = std::time::Instant::now();
    let honoured = curl(
        &proxy,
        &[&format!("{base}/flaky?key=r&fail=1&status=429&retry_after=1")],
    )
    .await;
    assert_eq!(honoured.status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the upstream's Retry-After was honoured"
    );
    let too_long = curl(
        &proxy,
        &[&format!("{base}/flaky?key=t&fail=1&status=429&retry_after=30")],
    )
    .await;
    assert_eq!(
        too_long.status, 429,
        "a Retry-After over the cap goes back to the agent"
    );
    assert_eq!(hits("t"), 1);

    let server_error = curl(&proxy, &[&format!("{base}/flaky?key=e&fail=1&status=500")]).await;
    assert_eq!(server_error.status, 500, "500 is not transient");
    assert_eq!(hits("e"), 1);
    crate::support::eventually("an audit line counting two retries", Duration::from_secs(5), || {
        proxy.audit_lines().iter().any(|l| l["retries"] == 2)
    })
    .await;
    assert!(proxy.metric_sum("keyward_upstream_retries_total", &[("route", "echo")]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_failures_are_retried_until_the_attempts_run_out() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = Proxy::spawn(&echo_route_with("    retry: { attempts: 3, base_delay: 20ms }\n")).await;
    let reply = curl(&proxy, &[&format!("https://localhost:{closed}/")]).await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.json()["error"], "upstream_connect_failed");
    assert_eq!(proxy.logs().matches("retrying the upstream request").count(), 2);
}
