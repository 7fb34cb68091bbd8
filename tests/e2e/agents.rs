//! Real agent clients through the proxy: the upstream receives the real secret, the agent never does.

use crate::routes;
use crate::support::clients::{curl, python};
use crate::support::echo::Echo;
use crate::support::proxy::Proxy;
use crate::support::{secret, MARKER};

fn assert_swapped(echo: &Echo) {
    let got = echo.requests();
    assert_eq!(got.len(), 1, "exactly one request reached the upstream: {got:?}");
    let auth = got[0].header("authorization").unwrap();
    assert_eq!(
        auth,
        format!("Bearer {}", secret("openai_key")),
        "placeholder replaced by the real secret"
    );
    assert_eq!(
        got[0].header("openai-organization"),
        Some(secret("org_id")),
        "inject: always added the header"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_http1_gets_the_secret_swapped_in() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/v1/chat", echo.port());
    let reply = curl(
        &proxy,
        &["--http1.1", "-H", "Authorization: Bearer kw-placeholder-openai", &url],
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.http_version, "1.1");
    assert!(!reply.body.contains(MARKER) && !reply.stderr.contains(MARKER));
    assert_swapped(&echo);
    assert_eq!(
        echo.requests()[0].version,
        "HTTP/2.0",
        "upstream connection negotiated h2 by ALPN"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_http2_to_the_proxy_and_a_bare_placeholder() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/v1/chat", echo.port());
    let reply = curl(&proxy, &["--http2", "-H", "Authorization: kw-placeholder-openai", &url]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.http_version, "2", "agent side negotiated h2");
    assert!(!reply.body.contains(MARKER));
    assert_swapped(&echo);
}

#[tokio::test(flavor = "multi_thread")]
async fn python_requests_with_environment_only() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/v1/models", echo.port());
    let reply = python(
        &proxy,
        "requests",
        "GET",
        &url,
        &[("Authorization", "Bearer kw-placeholder-openai")],
        false,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(!reply.body.contains(MARKER));
    assert_eq!(reply.json()["path"], "/v1/models");
    assert_swapped(&echo);
}

#[tokio::test(flavor = "multi_thread")]
async fn python_httpx_http1_and_http2() {
    for http2 in [false, true] {
        let echo = Echo::https().await;
        let proxy = Proxy::spawn(routes()).await;
        let url = format!("https://localhost:{}/v1/models", echo.port());
        let reply = python(
            &proxy,
            "httpx",
            "POST",
            &url,
            &[("Authorization", "Bearer kw-placeholder-openai")],
            http2,
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.http_version, if http2 { "HTTP/2" } else { "HTTP/1.1" });
        assert!(!reply.body.contains(MARKER));
        assert_swapped(&echo);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn query_placeholder_is_replaced_and_encoded() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/geo?q=a%20b&key=kw-placeholder-maps", echo.port());
    let reply = curl(&proxy, &[&url]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let got = &echo.requests()[0];
    assert_eq!(got.path, "/geo?q=a%20b&key=key%20REALSECRET%26maps%3D33");
    assert!(
        !reply.body.contains(MARKER),
        "the echoed path must not come back: the echo returns it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_and_proxy_headers_are_not_forwarded() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/", echo.port());
    let reply = curl(
        &proxy,
        // HTTP/1.1: over h2 curl itself would drop the connection-specific headers.
        &[
            "--http1.1",
            "-H",
            "Connection: keep-alive, x-hop",
            "-H",
            "X-Hop: 1",
            "-H",
            "Proxy-Authorization: Basic Zm9vOmJhcg==",
            "-H",
            "Keep-Alive: 5",
            "-H",
            "X-Kept: yes",
            &url,
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let got = &echo.requests()[0];
    for gone in ["x-hop", "proxy-authorization", "keep-alive", "connection"] {
        assert!(got.header(gone).is_none(), "{gone} was forwarded: {got:?}");
    }
    assert_eq!(got.header("x-kept"), Some("yes"));
}
