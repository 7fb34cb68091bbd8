//! Real secrets never reach the agent, even from an upstream that echoes them, and an agent that somehow
//! holds a real secret cannot send it anywhere.

use crate::routes;
use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::proxy::Proxy;
use crate::support::{secret, MARKER};

const AUTH: &str = "Authorization: Bearer kw-placeholder-openai";

#[tokio::test(flavor = "multi_thread")]
async fn echoed_secrets_in_headers_and_bodies_become_placeholders() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/reflect", echo.port());
    let reply = curl(&proxy, &["-D", "/dev/stderr", "-H", AUTH, &url]).await;
    assert_eq!(reply.status, 200);
    assert!(
        !reply.body.contains(MARKER) && !reply.stderr.contains(MARKER),
        "nothing real reached the agent"
    );
    assert_eq!(reply.json()["you_sent"], "Bearer kw-placeholder-openai");
    assert!(
        reply
            .stderr
            .to_ascii_lowercase()
            .contains("x-echo-auth: bearer kw-placeholder-openai"),
        "{}",
        reply.stderr
    );
    assert_eq!(
        echo.requests()[0].header("authorization").unwrap(),
        format!("Bearer {}", secret("openai_key")),
        "the upstream did get the real one"
    );
    assert_eq!(
        echo.requests()[0].header("accept-encoding"),
        Some("identity"),
        "scrubbed routes ask for identity"
    );
    assert!(proxy.metric("keyward_scrubbed_secrets_total{route=\"echo\",location=\"header\"}") >= 1.0);
    assert!(proxy.metric("keyward_scrubbed_secrets_total{route=\"echo\",location=\"body\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_split_across_chunks_or_inside_sse_events_is_still_caught() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    // `{"you_sent":"Bearer sk-REALSECRET-...`: the secret starts at byte 20; cut inside it at several places.
    for split in [21, 25, 30, 40, 46] {
        let url = format!("https://localhost:{}/reflect?split={split}", echo.port());
        let reply = curl(&proxy, &["-H", AUTH, &url]).await;
        assert!(!reply.body.contains(MARKER), "split at {split}");
        assert_eq!(
            reply.json()["you_sent"],
            "Bearer kw-placeholder-openai",
            "split at {split}"
        );
    }
    let url = format!("https://localhost:{}/reflect?sse&split=30", echo.port());
    let reply = curl(&proxy, &["-N", "-H", AUTH, &url]).await;
    assert!(!reply.body.contains(MARKER));
    assert!(
        reply
            .body
            .contains("data: {\"token\": \"Bearer kw-placeholder-openai\"}"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("data: done"));
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_echoes_are_decoded_and_scrubbed_and_unknown_encodings_refused() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/reflect?gzip", echo.port());
    let reply = curl(&proxy, &["--compressed", "-D", "/dev/stderr", "-H", AUTH, &url]).await;
    assert_eq!(reply.status, 200);
    assert!(!reply.body.contains(MARKER));
    assert_eq!(reply.json()["you_sent"], "Bearer kw-placeholder-openai");
    assert!(
        !reply.stderr.to_ascii_lowercase().contains("content-encoding"),
        "delivered decoded"
    );
    let reply = curl(
        &proxy,
        &[
            "-H",
            AUTH,
            &format!("https://localhost:{}/reflect?encoding=br", echo.port()),
        ],
    )
    .await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"], "unscrubbable_encoding");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_carrying_a_real_secret_is_refused_and_counted() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/v1", echo.port());
    let leaked = format!("X-Stolen: {}", secret("github_token"));
    let reply = curl(&proxy, &["-H", &leaked, &url]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"], "secret_in_request");
    let query = format!("{url}?k={}", secret("openai_key"));
    assert_eq!(curl(&proxy, &[&query]).await.status, 403);
    assert!(echo.requests().is_empty(), "nothing was forwarded");
    assert_eq!(proxy.metric("keyward_secret_in_request_total"), 2.0);
}
