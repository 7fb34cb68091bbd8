//! The admin API with a real client: the kill switch (including open connections), the admin token, and
//! the redacted configuration.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::routes;
use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::proxy::{config_yaml, workdir, Proxy};
use crate::support::MARKER;

const TOKEN: &str = "admin-token-for-tests-0123456789";

/// curl against the admin listener: (status, body).
async fn admin(proxy: &Proxy, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.arg(format!("http://{}{path}", proxy.admin)).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_switch_refuses_new_requests_and_cuts_open_connections() {
    let echo = Echo::https().await;
    let dir = workdir(&config_yaml(&format!(
        "admin_token: {{ file: admin-token }}\n{}",
        routes()
    )));
    std::fs::write(dir.path().join("admin-token"), TOKEN).unwrap();
    let proxy = Proxy::spawn_in(dir).await;
    let url = format!("https://localhost:{}/v1", echo.port());

    assert_eq!(
        admin(&proxy, "GET", "/blocked", None).await.0,
        401,
        "the admin token is required"
    );
    assert_eq!(
        admin(&proxy, "GET", "/blocked", Some("wrong-token-wrong-token"))
            .await
            .0,
        401
    );
    assert_eq!(admin(&proxy, "GET", "/healthz", None).await.0, 200, "probes stay open");

    // An open, intercepted stream: event 1 has arrived, event 2 waits for a gate that never opens.
    let mut stream = tokio::process::Command::new("curl")
        .args(["-sSN", "--max-time", "30", "-x", &proxy.url(), "--cacert"])
        .arg(proxy.ca_cert())
        .arg(format!("https://localhost:{}/sse?events=2", echo.port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(stream.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("data: event 1"));

    let (status, body) = admin(&proxy, "POST", "/agents/test-agent/block", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"test-agent\""), "{body}");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.wait()).await;
    assert!(ended.is_ok(), "the open connection was closed by the block");
    let refused = curl(&proxy, &[&url]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "agent_blocked");

    assert_eq!(
        admin(&proxy, "POST", "/agents/test-agent/unblock", Some(TOKEN)).await.0,
        200
    );
    assert_eq!(curl(&proxy, &[&url]).await.status, 200);
    assert_eq!(admin(&proxy, "POST", "/block", Some(TOKEN)).await.0, 200);
    assert_eq!(curl(&proxy, &[&url]).await.status, 403, "block all");
    assert_eq!(admin(&proxy, "POST", "/unblock", Some(TOKEN)).await.0, 200);
    assert_eq!(curl(&proxy, &[&url]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_endpoint_shows_structure_and_no_secret() {
    let proxy = Proxy::spawn(routes()).await;
    assert_eq!(
        admin(&proxy, "GET", "/config", None).await.0,
        401,
        "the generated token is required"
    );
    let (status, body) = admin(&proxy, "GET", "/config", proxy.admin_token().as_deref()).await;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["agent"]["id"], "test-agent");
    assert_eq!(
        config["routes"][0]["credentials"][0]["placeholder"],
        "kw-placeholder-openai"
    );
    assert_eq!(config["routes"][0]["credentials"][0]["source"]["file"], "openai_key");
    assert!(!body.contains(MARKER), "no secret value in /config");
}
