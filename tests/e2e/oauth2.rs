//! OAuth2 credentials through the proxy against a fake token endpoint: client_credentials caching, single
//! flight under 100 concurrent requests, refresh-token rotation written back to a real OpenBao, and backoff
//! with a clear 503 while the provider is down.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::openbao::{OpenBao, ROOT_TOKEN};
use crate::support::proxy::{config_with_secrets, workdir, Proxy};
use crate::support::{secret, MARKER};

/// One route on the echo upstream with an OAuth2 credential `crm` against the echo's token endpoint;
/// `grant` holds the grant-specific `oauth2:` lines (indented ten spaces).
fn oauth_routes(echo: &Echo, grant: &str) -> String {
    format!(
        r#"
routes:
  - name: echo
    hosts: ["localhost:*"]
    allow_private: true
    credentials:
      - name: crm
        placeholder: kw-placeholder-crm
        header: Authorization
        format: "Bearer {{secret}}"
        oauth2:
          token_url: https://localhost:{port}/oauth/token
          refresh_before: 30s
          allow_private: true
{grant}"#,
        port = echo.port()
    )
}

/// The `crm` credential with the client_credentials grant (client id and secret from the secrets file).
pub fn client_credentials_routes(echo: &Echo) -> String {
    oauth_routes(
        echo,
        "          grant: client_credentials\n          client_id: { secret: oauth_client_id }\n          client_secret: { secret: oauth_client_secret }\n          scopes: [api, read]\n",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_token_is_fetched_once_and_cached() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
    let url = format!("https://localhost:{}/v1/accounts", echo.port());
    for _ in 0..5 {
        let reply = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-crm", &url]).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let tokens = echo.token_requests();
    assert_eq!(tokens.len(), 1, "one token for five requests");
    assert_eq!(tokens[0].method, "POST");
    assert!(tokens[0].body.contains("grant_type=client_credentials") && tokens[0].body.contains("scope=api%20read"));
    let basic = tokens[0].header("authorization").unwrap();
    assert!(basic.starts_with("Basic "), "client_secret_basic by default");
    assert!(
        !tokens[0].body.contains(secret("oauth_client_secret")),
        "the client secret is not in the body"
    );
    let calls: Vec<_> = echo
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/accounts")
        .collect();
    assert!(calls
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer at-REALSECRET-1")));
    assert_eq!(
        proxy.metric("keyward_oauth2_refreshes_total{credential=\"crm\",result=\"ok\"}"),
        1.0
    );
}

/// The first requests wait for the token the proxy fetches for them: their responses must be scrubbed of that
/// token too (the scrubber is built from the values written into each request), and ask for identity.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_requests_get_the_fetched_token_scrubbed_from_an_echo() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
    let url = format!("https://localhost:{}/reflect", echo.port());
    let proxy = std::sync::Arc::new(proxy);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..7 {
        let (proxy, url) = (proxy.clone(), url.clone());
        set.spawn(async move {
            let auth = "Authorization: Bearer kw-placeholder-crm";
            curl(&proxy, &["-D", "/dev/stderr", "-H", auth, &url]).await
        });
    }
    let replies = set.join_all().await;
    for reply in replies {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(
            !reply.body.contains(MARKER) && !reply.stderr.contains(MARKER),
            "the fetched token leaked"
        );
        assert_eq!(reply.json()["you_sent"], "Bearer kw-placeholder-crm");
    }
    assert_eq!(echo.token_requests().len(), 1);
    let reflected: Vec<_> = echo.requests().into_iter().filter(|r| r.path == "/reflect").collect();
    assert_eq!(reflected.len(), 7);
    assert!(reflected
        .iter()
        .all(|r| r.header("accept-encoding") == Some("identity")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_requests_cause_exactly_one_refresh() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
    let url = format!("https://localhost:{}/v1/burst", echo.port());
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "100",
    ])
    .args(["-x", &proxy.url(), "--cacert"])
    .arg(proxy.ca_cert())
    .args(["-H", "Authorization: Bearer kw-placeholder-crm", "-w", "%{http_code}\n"]);
    for _ in 0..100 {
        cmd.args(["-o", "/dev/null", &url]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().filter(|c| *c == "200").count(), 100, "{codes}");
    assert_eq!(
        echo.token_requests().len(),
        1,
        "single flight: one refresh for 100 concurrent requests"
    );
    let burst: Vec<_> = echo.requests().into_iter().filter(|r| r.path == "/v1/burst").collect();
    assert_eq!(burst.len(), 100);
    assert!(burst
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer at-REALSECRET-1")));
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_down_backs_off_with_a_clear_503_then_recovers() {
    let echo = Echo::https().await;
    echo.token_endpoint_failing(true);
    let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
    let url = format!("https://localhost:{}/v1/accounts", echo.port());
    let args = ["-H", "Authorization: Bearer kw-placeholder-crm", url.as_str()];
    let call = || curl(&proxy, &args);
    let reply = call().await;
    assert_eq!(reply.status, 503, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["error"], "secret_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("crm") && message.contains("token endpoint") && message.contains("HTTP 503"),
        "{message}"
    );
    let started = Instant::now();
    assert_eq!(call().await.status, 503);
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast");
    assert_eq!(
        echo.token_requests().len(),
        1,
        "no new attempt inside the backoff window"
    );
    assert_eq!(
        proxy.metric("keyward_oauth2_refreshes_total{credential=\"crm\",result=\"http_5xx\"}"),
        1.0
    );

    echo.token_endpoint_failing(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while call().await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "never recovered after the provider came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        echo.requests().last().unwrap().header("authorization"),
        Some("Bearer at-REALSECRET-1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_refresh_tokens_are_written_back_to_vault_before_use() {
    let bao = OpenBao::start().await;
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "oauth/crm",
        "client_id=keyward-agent",
        "client_secret=cs-REALSECRET-vault",
        "refresh_token=rt-REALSECRET-0",
    ]);
    let echo = Echo::https().await;
    // Tokens live 1 s (the shortest Keyward caches one): a request after that refreshes and rotates.
    echo.token_lifetime(1);
    let routes = oauth_routes(
        &echo,
        "          grant: refresh_token\n          client_auth: body\n          client_id: { vault: { path: oauth/crm, key: client_id } }\n          client_secret: { vault: { path: oauth/crm, key: client_secret } }\n          refresh_token: { path: oauth/crm, key: refresh_token }\n",
    );
    let secrets = format!(
        "  vault:\n    address: {}\n    auth: {{ token: {{ file: vault-token }} }}\n    refresh_interval: 1h\n",
        bao.address()
    );
    let dir = workdir(&config_with_secrets(&secrets, &routes));
    std::fs::write(dir.path().join("vault-token"), ROOT_TOKEN).unwrap();
    let proxy = Proxy::spawn_in(dir).await;
    let url = format!("https://localhost:{}/v1/accounts", echo.port());
    for round in 1..=2 {
        let reply = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-crm", &url]).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let token_call = echo.token_requests().pop().unwrap();
        assert!(
            token_call
                .body
                .contains(&format!("refresh_token=rt-REALSECRET-{}", round - 1)),
            "round {round} used the latest refresh token"
        );
        assert!(
            token_call.body.contains("client_id=keyward-agent"),
            "client_secret_post"
        );
        assert_eq!(
            echo.requests().last().unwrap().header("authorization"),
            Some(format!("Bearer at-REALSECRET-{round}").as_str())
        );
        let stored = bao.cli(&["kv", "get", "-mount=secret", "-field=refresh_token", "oauth/crm"]);
        assert!(
            stored == format!("rt-REALSECRET-{round}"),
            "round {round}: the rotated refresh token is in OpenBao"
        );
        let version = bao.cli(&["kv", "metadata", "get", "-mount=secret", "-format=json", "oauth/crm"]);
        let version: serde_json::Value = serde_json::from_str(&version).unwrap();
        assert_eq!(
            version["data"]["current_version"],
            round + 1,
            "written as a new version"
        );
        // The token expires after its 1 s life; only then does the next request fetch another.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let kept = bao.cli(&["kv", "get", "-mount=secret", "-field=client_id", "oauth/crm"]);
        assert_eq!(kept, "keyward-agent", "the secret's other keys are kept");
    }
}
