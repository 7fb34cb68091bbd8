//! The Vault backend against a real OpenBao server: token and AppRole auth, KV v2 and v1, rotation within the
//! refresh interval, zero Vault calls per request, and the outage rules (cached values serve up to
//! `max_stale`, uncached ones fail fast with 503, recovery when Vault returns).

use std::time::{Duration, Instant};

use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::openbao::{OpenBao, ROOT_TOKEN};
use crate::support::proxy::{config_with_secrets, workdir, Proxy};
use crate::support::MARKER;

const V1: &str = "sk-REALSECRET-vault-v1-0a1b";
const V2: &str = "sk-REALSECRET-vault-v2-2c3d";
const KV1: &str = "kv1-REALSECRET-77e1";

/// Routes on the echo upstream whose credentials come from Vault: `kw-vault-kv2` from KV v2 `agents/bot`,
/// `kw-vault-pinned` from its version 1, `kw-vault-kv1` from KV v1 `kv1/agents/bot`, `kw-vault-later` from a
/// path seeded only by some tests.
const ROUTES: &str = r#"
routes:
  - name: echo
    hosts: ["localhost:*"]
    allow_private: true
    credentials:
      - name: openai
        placeholder: kw-vault-kv2
        vault: { mount: secret, path: agents/bot, key: openai }
        header: Authorization
        format: "Bearer {secret}"
      - name: legacy
        placeholder: kw-vault-kv1
        vault: { kv: 1, mount: kv1, path: agents/bot, key: token }
        header: X-Legacy-Key
      - name: pinned
        placeholder: kw-vault-pinned
        vault: { path: agents/bot, key: openai, version: 1 }
        header: X-Pinned-Key
      - name: later
        placeholder: kw-vault-later
        vault: { path: agents/later, key: token }
        header: X-Later-Key
"#;

/// Seeds every secret `ROUTES` reads, the optional `agents/later` included.
fn seed_all(bao: &OpenBao, openai: &str) {
    seed(bao, openai);
    bao.cli(&["kv", "put", "-mount=secret", "agents/later", "token=x-REALSECRET-later"]);
}

/// Installs deploy/vault/keyward-policy.hcl as policy `keyward`: the tests use the policy we ship.
fn install_policy(bao: &OpenBao) {
    let policy =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/vault/keyward-policy.hcl")).unwrap();
    bao.cli_stdin(&["policy", "write", "keyward", "-"], &policy);
}

fn seed(bao: &OpenBao, openai: &str) {
    bao.cli(&["kv", "put", "-mount=secret", "agents/bot", &format!("openai={openai}")]);
    if !bao.cli(&["secrets", "list"]).contains("kv1/") {
        bao.cli(&["secrets", "enable", "-path=kv1", "-version=1", "kv"]);
    }
    bao.cli(&["kv", "put", "kv1/agents/bot", &format!("token={KV1}")]);
}

/// A proxy whose Vault settings are `vault_lines` (indented under `secrets.vault:`), token auth from a file.
async fn proxy(bao: &OpenBao, vault_lines: &str, wait_ready: bool) -> Proxy {
    let secrets = format!(
        "  vault:\n    address: {}\n    auth: {{ token: {{ file: vault-token }} }}\n    refresh_jitter: 0s\n{vault_lines}",
        bao.address()
    );
    let dir = workdir(&config_with_secrets(&secrets, ROUTES));
    std::fs::write(dir.path().join("vault-token"), ROOT_TOKEN).unwrap();
    if wait_ready {
        Proxy::spawn_in(dir).await
    } else {
        Proxy::spawn_unready(dir).await
    }
}

async fn call(proxy: &Proxy, echo: &Echo, placeholder_header: &str) -> (u16, serde_json::Value) {
    let reply = curl(
        proxy,
        &[
            "-H",
            placeholder_header,
            &format!("https://localhost:{}/v1", echo.port()),
        ],
    )
    .await;
    let body = serde_json::from_str(&reply.body).unwrap_or(serde_json::Value::Null);
    (reply.status, body)
}

fn vault_calls(proxy: &Proxy) -> f64 {
    let (_, text) = proxy.admin_get("/metrics");
    text.lines()
        .filter(|l| l.starts_with("keyward_vault_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn kv2_and_kv1_secrets_are_swapped_in_with_no_vault_call_per_request() {
    let bao = OpenBao::start().await;
    seed_all(&bao, V1);
    let echo = Echo::https().await;
    let proxy = proxy(&bao, "    refresh_interval: 1h\n", true).await;
    let before = vault_calls(&proxy);
    assert!(before >= 2.0, "start-up looked up the token and read the secrets");
    for _ in 0..10 {
        let (status, _) = call(&proxy, &echo, "Authorization: Bearer kw-vault-kv2").await;
        assert_eq!(status, 200);
    }
    let (status, _) = call(&proxy, &echo, "X-Legacy-Key: kw-vault-kv1").await;
    assert_eq!(status, 200);
    assert_eq!(vault_calls(&proxy), before, "zero Vault calls per proxied request");
    let got = echo.requests();
    assert_eq!(got[0].header("authorization").unwrap(), format!("Bearer {V1}"));
    assert_eq!(got[10].header("x-legacy-key").unwrap(), KV1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_rotated_in_vault_is_used_within_the_refresh_interval() {
    let bao = OpenBao::start().await;
    seed_all(&bao, V1);
    let echo = Echo::https().await;
    let proxy = proxy(&bao, "    refresh_interval: 300ms\n    max_stale: 1h\n", true).await;
    assert_eq!(call(&proxy, &echo, "Authorization: kw-vault-kv2").await.0, 200);
    bao.cli(&["kv", "put", "-mount=secret", "agents/bot", &format!("openai={V2}")]);
    let rotated_at = Instant::now();
    proxy
        .wait_for_log("secret value rotated in Vault", Duration::from_secs(10))
        .await;
    assert!(
        rotated_at.elapsed() < Duration::from_secs(3),
        "picked up within a few refresh intervals"
    );
    assert_eq!(call(&proxy, &echo, "Authorization: kw-vault-kv2").await.0, 200);
    assert_eq!(
        echo.requests().last().unwrap().header("authorization").unwrap(),
        format!("Bearer {V2}")
    );
    assert_eq!(call(&proxy, &echo, "X-Pinned-Key: kw-vault-pinned").await.0, 200);
    assert_eq!(
        echo.requests().last().unwrap().header("x-pinned-key").unwrap(),
        V1,
        "a pinned version does not move"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outage_serves_cached_secrets_fails_fast_for_uncached_and_recovers() {
    let mut bao = OpenBao::start().await;
    seed(&bao, V1);
    let echo = Echo::https().await;
    let proxy = proxy(&bao, "    refresh_interval: 300ms\n    max_stale: 1h\n", false).await;
    // `agents/later` does not exist yet: not ready, and its credential fails at once.
    crate::support::eventually("kv2 secret cached", Duration::from_secs(10), || {
        proxy.admin_get("/readyz").1.contains("agents/later")
    })
    .await;
    assert_eq!(proxy.admin_get("/readyz").0, 503);
    assert_eq!(call(&proxy, &echo, "Authorization: kw-vault-kv2").await.0, 200);
    let started = Instant::now();
    let (status, body) = call(&proxy, &echo, "X-Later-Key: kw-vault-later").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "secret_unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("later"),
        "the error names the credential: {body}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast, no hang");

    bao.stop();
    proxy
        .wait_for_log("Vault refresh failed", Duration::from_secs(10))
        .await;
    assert_eq!(
        call(&proxy, &echo, "Authorization: kw-vault-kv2").await.0,
        200,
        "cached value keeps serving"
    );
    let started = Instant::now();
    assert_eq!(call(&proxy, &echo, "X-Later-Key: kw-vault-later").await.0, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "uncached fails fast while Vault is down"
    );

    bao.restart().await;
    seed_all(&bao, V2);
    crate::support::eventually("ready after Vault returns", Duration::from_secs(15), || {
        proxy.admin_get("/readyz").0 == 200
    })
    .await;
    assert_eq!(call(&proxy, &echo, "X-Later-Key: kw-vault-later").await.0, 200);
    assert_eq!(call(&proxy, &echo, "Authorization: kw-vault-kv2").await.0, 200);
    assert_eq!(
        echo.requests().last().unwrap().header("authorization").unwrap(),
        format!("Bearer {V2}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_stale_cached_secrets_fail_fast_too() {
    let mut bao = OpenBao::start().await;
    seed_all(&bao, V1);
    let echo = Echo::https().await;
    let proxy = proxy(&bao, "    refresh_interval: 200ms\n    max_stale: 1s\n", true).await;
    assert_eq!(call(&proxy, &echo, "Authorization: kw-vault-kv2").await.0, 200);
    bao.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = call(&proxy, &echo, "Authorization: kw-vault-kv2").await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "the cached value was served past max_stale");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body["message"].as_str().unwrap().contains("max_stale"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn approle_login_renews_and_logs_in_again_when_the_token_runs_out() {
    let bao = OpenBao::start().await;
    seed_all(&bao, V1);
    install_policy(&bao);
    bao.cli(&["auth", "enable", "approle"]);
    // Short tokens: renewed at 2/3 of the 3 s TTL, and unable to outlive 5 s, which forces new logins.
    bao.cli(&[
        "write",
        "auth/approle/role/keyward",
        "token_policies=keyward",
        "token_ttl=3s",
        "token_max_ttl=5s",
    ]);
    let role_id = bao.cli(&["read", "-field=role_id", "auth/approle/role/keyward/role-id"]);
    let secret_id = bao.cli(&["write", "-f", "-field=secret_id", "auth/approle/role/keyward/secret-id"]);

    let secrets = format!(
        "  vault:\n    address: {}\n    auth: {{ approle: {{ role_id: {role_id}, secret_id_file: approle-secret-id }} }}\n    refresh_interval: 300ms\n    refresh_jitter: 0s\n",
        bao.address()
    );
    let dir = workdir(&config_with_secrets(&secrets, ROUTES));
    std::fs::write(dir.path().join("approle-secret-id"), &secret_id).unwrap();
    let proxy = Proxy::spawn_in(dir).await;
    let echo = Echo::https().await;
    assert_eq!(call(&proxy, &echo, "Authorization: kw-vault-kv2").await.0, 200);
    crate::support::eventually("a renewal and a second login", Duration::from_secs(20), || {
        proxy.metric("keyward_vault_requests_total{op=\"renew\",result=\"ok\"}") >= 1.0
            && proxy.metric("keyward_vault_requests_total{op=\"login\",result=\"ok\"}") >= 2.0
    })
    .await;
    assert_eq!(call(&proxy, &echo, "Authorization: kw-vault-kv2").await.0, 200);
    assert_eq!(proxy.admin_get("/readyz").0, 200);
    let logs = proxy.logs();
    assert!(
        !logs.contains(&secret_id) && !logs.contains(&role_id),
        "AppRole credentials never reach the log"
    );
}

/// A service-account token for `agents/keyward`, unsigned: OpenBao reads its claims, and the TokenReview
/// stand-in (not the signature) decides that it is valid.
const SA_JWT: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50Iiwia3ViZXJuZXRlcy5pby9zZXJ2aWNlYWNjb3VudC9uYW1lc3BhY2UiOiJhZ2VudHMiLCJrdWJlcm5ldGVzLmlvL3NlcnZpY2VhY2NvdW50L3NlY3JldC5uYW1lIjoia2V5d2FyZC10b2tlbiIsImt1YmVybmV0ZXMuaW8vc2VydmljZWFjY291bnQvc2VydmljZS1hY2NvdW50Lm5hbWUiOiJrZXl3YXJkIiwia3ViZXJuZXRlcy5pby9zZXJ2aWNlYWNjb3VudC9zZXJ2aWNlLWFjY291bnQudWlkIjoiNWYxYy11aWQiLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YWdlbnRzOmtleXdhcmQifQ.dGVzdC1zaWduYXR1cmU";

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_auth_through_a_token_review_stand_in() {
    let bao = OpenBao::start().await;
    seed_all(&bao, V1);
    install_policy(&bao);
    // The same HTTPS server plays the Kubernetes API (TokenReview) and, later, the agent's upstream.
    let api = Echo::https().await;
    let ca = std::fs::read_to_string(&crate::support::pki::pki().ca_path).unwrap();
    bao.cli(&["auth", "enable", "kubernetes"]);
    bao.cli_stdin(
        &[
            "write",
            "auth/kubernetes/config",
            &format!("kubernetes_host=https://127.0.0.1:{}", api.port()),
            "kubernetes_ca_cert=-",
            "token_reviewer_jwt=reviewer-token",
            "disable_local_ca_jwt=true",
        ],
        &ca,
    );
    bao.cli(&[
        "write",
        "auth/kubernetes/role/keyward",
        "bound_service_account_names=keyward",
        "bound_service_account_namespaces=agents",
        "token_policies=keyward",
        "token_ttl=1h",
    ]);
    let secrets = format!(
        "  vault:\n    address: {}\n    auth: {{ kubernetes: {{ role: keyward, jwt_path: sa-token }} }}\n",
        bao.address()
    );
    let dir = workdir(&config_with_secrets(&secrets, ROUTES));
    std::fs::write(dir.path().join("sa-token"), SA_JWT).unwrap();
    let proxy = Proxy::spawn_in(dir).await;
    let review = api.requests();
    assert_eq!(review.len(), 1, "OpenBao asked the TokenReview API once");
    assert_eq!(review[0].path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(review[0].header("authorization"), Some("Bearer reviewer-token"));
    assert_eq!(call(&proxy, &api, "Authorization: kw-vault-kv2").await.0, 200);
    assert_eq!(
        api.requests()[1].header("authorization").unwrap(),
        format!("Bearer {V1}")
    );
    assert_eq!(
        proxy.metric("keyward_vault_requests_total{op=\"login\",result=\"ok\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_401_after_rotation_rereads_vault_and_retries_once() {
    let bao = OpenBao::start().await;
    seed_all(&bao, V1);
    let echo = Echo::https().await;
    let proxy = proxy(&bao, "    refresh_interval: 1h\n", true).await;
    let url = format!("https://localhost:{}/guarded", echo.port());
    let auth = "Authorization: kw-vault-kv2";

    // Rotated in Vault and at the provider; Keyward's cache (refreshed hourly) still holds V1.
    bao.cli(&["kv", "put", "-mount=secret", "agents/bot", &format!("openai={V2}")]);
    echo.accept_only(&format!("Bearer {V2}"));
    let reads = proxy.metric("keyward_vault_requests_total{op=\"read\",result=\"ok\"}");
    let reply = curl(&proxy, &["-D", "/dev/stderr", "-H", auth, &url]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // The upstream echoes the value it accepted, read from Vault mid-request: scrubbed all the same.
    assert!(!reply.body.contains(MARKER) && !reply.stderr.contains(MARKER));
    assert_eq!(reply.json()["you_sent"], "Bearer kw-vault-kv2");
    let seen: Vec<String> = echo
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(
        seen,
        [format!("Bearer {V1}"), format!("Bearer {V2}")],
        "one retry, with the rotated value"
    );
    assert_eq!(
        proxy.metric("keyward_vault_requests_total{op=\"read\",result=\"ok\"}"),
        reads + 1.0,
        "one re-read"
    );

    // A 401 that no rotation explains goes back to the agent after the re-read, without a retry.
    echo.accept_only("Bearer something-else");
    let reply = curl(&proxy, &["-H", auth, &url]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(echo.requests().len(), 3);

    // A streamed body cannot be replayed: no retry even though the value rotated again.
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "agents/bot",
        "openai=sk-REALSECRET-vault-v3",
    ]);
    echo.accept_only("Bearer sk-REALSECRET-vault-v3");
    let reply = curl(
        &proxy,
        &[
            "-H",
            auth,
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "streamed",
            &url,
        ],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(echo.requests().len(), 4);
    proxy.wait_for_log("retrying once", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vault_down_at_start_means_not_ready_with_a_reason_and_fast_503s() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secrets = format!(
        "  vault:\n    address: http://127.0.0.1:{closed}\n    auth: {{ token: {{ file: vault-token }} }}\n    request_timeout: 1s\n"
    );
    let dir = workdir(&config_with_secrets(&secrets, ROUTES));
    std::fs::write(dir.path().join("vault-token"), ROOT_TOKEN).unwrap();
    let proxy = Proxy::spawn_unready(dir).await;
    crate::support::eventually("a refresh failure to be recorded", Duration::from_secs(10), || {
        proxy.admin_get("/readyz").1.contains("token lookup failed")
    })
    .await;
    let (status, reason) = proxy.admin_get("/readyz");
    assert_eq!(status, 503);
    assert!(reason.contains("waiting for Vault secret"), "{reason}");
    let echo = Echo::https().await;
    let started = Instant::now();
    let (status, body) = call(&proxy, &echo, "Authorization: kw-vault-kv2").await;
    assert_eq!(status, 503);
    assert!(
        body["message"].as_str().unwrap().contains("openai")
            || body["message"].as_str().unwrap().contains("agents/bot"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast");
    assert!(echo.requests().is_empty());
}
