//! The Rego policy stage through the real proxy with real clients: each shipped example policy, reload,
//! shadow mode, what the policy sees of bodies and identity, and the authoring CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::routes;
use crate::support::clients::{curl, python, python_with, Payload, Reply};
use crate::support::echo::Echo;
use crate::support::proxy::{binary, Proxy};
use crate::support::secret;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies").join(name)
}

/// A writable copy of an example policy directory.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example(name)).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// A proxy with the shared routes and `policy:` settings (`extra` is added under `policy:`).
async fn proxy_with_policy(dir: &Path, extra: &str) -> Proxy {
    Proxy::spawn(&format!(
        "{}policy:\n  dir: \"{}\"\n  poll_interval: 100ms\n{extra}",
        routes(),
        dir.display()
    ))
    .await
}

fn assert_denied(reply: &Reply, reason_part: &str) {
    assert_eq!(reply.status, 403, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["error"], "policy_denied");
    assert!(body["reason"].as_str().unwrap().contains(reason_part), "{body}");
    assert_eq!(body["decision_id"], body["request_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn readonly_policy_allows_reads_and_denies_writes() {
    let echo = Echo::https().await;
    let proxy = proxy_with_policy(&example("readonly"), "").await;
    let url = format!("https://localhost:{}/v1/models", echo.port());
    let auth = [("Authorization", "Bearer kw-placeholder-openai")];
    let read = python(&proxy, "requests", "GET", &url, &auth, false).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(
        echo.requests()[0].header("authorization").unwrap(),
        format!("Bearer {}", secret("openai_key"))
    );
    let write = python(&proxy, "httpx", "POST", &url, &auth, false).await;
    assert_denied(&write, "read-only");
    assert_eq!(echo.requests().len(), 1, "the denied request reached nothing");
    assert_eq!(
        proxy.metric("keyward_policy_decisions_total{route=\"echo\",decision=\"deny\"}"),
        1.0
    );
    assert_eq!(
        proxy.metric("keyward_policy_decisions_total{route=\"echo\",decision=\"allow\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sales_policy_reads_amount_and_industry_from_the_json_body() {
    let echo = Echo::https().await;
    let proxy = proxy_with_policy(&example("sales"), "").await;
    let url = format!(
        "https://localhost:{}/services/data/v60.0/sobjects/Opportunity",
        echo.port()
    );
    let auth = [("Authorization", "Bearer kw-placeholder-openai")];
    let create = |body: serde_json::Value| {
        let (proxy, url) = (&proxy, url.clone());
        async move { python_with(proxy, "requests", "POST", &url, &auth, false, Payload::Json(&body)).await }
    };
    let ok = create(json!({"Name": "Acme demo", "Amount": 25000, "Industry": "Technology"})).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let sent = json!({"Name": "Acme demo", "Amount": 25000, "Industry": "Technology"}).to_string();
    assert!(
        echo.requests()[0].body_len >= sent.len() as u64 - 8,
        "the buffered body was replayed upstream"
    );
    assert_denied(
        &create(json!({"Amount": 250000, "Industry": "Technology"})).await,
        "amount 250000 is over 100000",
    );
    assert_denied(
        &create(json!({"Amount": 5000, "Industry": "Retail"})).await,
        "industry Retail is not Technology",
    );
    assert_eq!(echo.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn github_policy_confines_the_agent_to_one_repository() {
    let echo = Echo::https().await;
    let proxy = proxy_with_policy(&example("github"), "").await;
    let base = format!("https://localhost:{}", echo.port());
    let ok = curl(&proxy, &[&format!("{base}/repos/acme/agent-sandbox/issues?state=open")]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let comment = curl(
        &proxy,
        &[
            "-X",
            "POST",
            "--data",
            "{\"body\":\"hi\"}",
            &format!("{base}/repos/acme/agent-sandbox/issues/3/comments"),
        ],
    )
    .await;
    assert_eq!(comment.status, 200, "{comment:?}");
    assert_denied(
        &curl(&proxy, &[&format!("{base}/repos/acme/payroll/issues")]).await,
        "its repository",
    );
    assert_denied(
        &curl(
            &proxy,
            &["-X", "PUT", &format!("{base}/repos/acme/agent-sandbox/pulls/3/merge")],
        )
        .await,
        "its repository",
    );
    assert_eq!(echo.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_policy_allows_tools_by_name() {
    let echo = Echo::https().await;
    let proxy = proxy_with_policy(&example("mcp"), "").await;
    let url = format!("https://localhost:{}/mcp", echo.port());
    let call = |tool: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {"q": "x"}}})
            .to_string()
    };
    let rpc = |body: String| {
        let (proxy, url) = (&proxy, url.clone());
        async move { curl(proxy, &["-H", "Content-Type: application/json", "--data", &body, &url]).await }
    };
    assert_eq!(rpc(call("search_docs")).await.status, 200);
    assert_eq!(
        rpc(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string())
            .await
            .status,
        200
    );
    assert_denied(&rpc(call("delete_repo")).await, "delete_repo");
    assert_eq!(echo.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn business_hours_policy_uses_the_configured_time_zone() {
    let echo = Echo::https().await;
    let url = format!("https://localhost:{}/v1", echo.port());
    let open = copy_of("business-hours");
    std::fs::write(
        open.path().join("data.json"),
        r#"{"business_hours": {"days": [1,2,3,4,5,6,7], "start_hour": 0, "end_hour": 24}}"#,
    )
    .unwrap();
    let proxy = proxy_with_policy(open.path(), "  timezone: Asia/Tokyo\n").await;
    assert_eq!(curl(&proxy, &[&url]).await.status, 200);
    let closed = copy_of("business-hours");
    std::fs::write(
        closed.path().join("data.json"),
        r#"{"business_hours": {"days": [], "start_hour": 9, "end_hour": 18}}"#,
    )
    .unwrap();
    let proxy = proxy_with_policy(closed.path(), "  timezone: Asia/Tokyo\n").await;
    let denied = curl(&proxy, &[&url]).await;
    assert_denied(&denied, "outside business hours");
    assert!(denied.json()["reason"].as_str().unwrap().contains("Asia/Tokyo"));
    assert_eq!(echo.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_reload_keeps_enforcing_and_a_fixed_one_switches() {
    let echo = Echo::https().await;
    let dir = copy_of("readonly");
    let proxy = proxy_with_policy(dir.path(), "").await;
    let url = format!("https://localhost:{}/v1", echo.port());
    assert_eq!(curl(&proxy, &["-X", "POST", &url]).await.status, 403);

    std::fs::write(
        dir.path().join("keyward.rego"),
        "package keyward\nimport rego.v1\ndecision := {\"allow\": true\n",
    )
    .unwrap();
    let (status, body) = proxy.admin_post("/reload");
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("keyward.rego:"),
        "the error names the file and line: {body}"
    );
    let (status, ready) = proxy.admin_get("/readyz");
    assert_eq!(status, 200);
    assert!(
        ready.contains("keyward.rego:"),
        "/readyz shows the refused reload: {ready}"
    );
    assert_eq!(proxy.metric("keyward_policy_last_reload_ok"), 0.0);
    assert_eq!(
        curl(&proxy, &["-X", "POST", &url]).await.status,
        403,
        "old policy still enforced"
    );
    assert_eq!(curl(&proxy, &[&url]).await.status, 200);

    std::fs::write(
        dir.path().join("keyward.rego"),
        "package keyward\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"open\"}\n",
    )
    .unwrap();
    let (status, body) = proxy.admin_post("/reload");
    // The file poller (100 ms here) may have applied the fix first, and then `/reload` rightly says unchanged.
    assert_eq!(status, 200, "{body}");
    let policy = serde_json::from_str::<serde_json::Value>(&body).unwrap()["policy"].clone();
    assert!(policy == "reloaded" || policy == "unchanged", "{body}");
    assert_eq!(
        curl(&proxy, &["-X", "POST", &url]).await.status,
        200,
        "new policy in force"
    );
    assert!(!proxy.admin_get("/readyz").1.contains("keyward.rego"));

    // Edits are also picked up without the admin call: GET (allowed so far) becomes denied.
    std::fs::write(
        dir.path().join("keyward.rego"),
        "package keyward\nimport rego.v1\ndefault allow := false\n",
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while curl(&proxy, &[&url]).await.status != 403 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edited policy was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.wait_for_log("\"policy reloaded\"", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_mode_forwards_and_records_would_be_denials() {
    let echo = Echo::https().await;
    let proxy = proxy_with_policy(&example("readonly"), "  mode: shadow\n").await;
    let reply = curl(
        &proxy,
        &["-X", "POST", &format!("https://localhost:{}/v1", echo.port())],
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(echo.requests().len(), 1);
    proxy
        .wait_for_log("policy would deny (shadow mode)", Duration::from_secs(5))
        .await;
    assert_eq!(
        proxy.metric("keyward_policy_decisions_total{route=\"echo\",decision=\"shadow_deny\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_sees_small_json_bodies_and_only_the_size_of_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        r#"package keyward
import rego.v1
default decision := {"allow": false, "reason": "unexpected body view"}
decision := {"allow": true, "reason": "parsed"} if input.request.body.kind == "small"
decision := {"allow": true, "reason": "size only"} if {
    not input.request.body_parsed
    input.request.body == null
    input.request.body_size == 5000
}
decision := {"allow": true, "reason": "size unknown"} if {
    not input.request.body_parsed
    input.request.body_size == null
}
"#,
    )
    .unwrap();
    let echo = Echo::https().await;
    let proxy = proxy_with_policy(dir.path(), "  body_limit: 1000\n").await;
    let url = format!("https://localhost:{}/v1", echo.port());
    let big_json = format!("{{\"kind\":\"big\",\"pad\":\"{}\"}}", "x".repeat(5000 - 23));
    assert_eq!(big_json.len(), 5000);
    let file = dir.path().join("big.json");
    std::fs::write(&file, &big_json).unwrap();
    let at_file = format!("@{}", file.display());
    let cases: [(&[&str], u16, u64); 5] = [
        (
            &["-H", "Content-Type: application/json", "--data", "{\"kind\":\"small\"}"],
            200,
            16,
        ),
        (
            &["-H", "Content-Type: application/json", "--data-binary", &at_file],
            200,
            5000,
        ),
        (
            &["-H", "Content-Type: text/plain", "--data-binary", &at_file],
            200,
            5000,
        ),
        (
            &[
                "-H",
                "Content-Type: application/json",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &at_file,
            ],
            200,
            5000,
        ),
        (&["-H", "Content-Type: application/json", "--data", "{not json"], 403, 0),
    ];
    for (args, status, upstream_len) in cases {
        let mut all = args.to_vec();
        all.push(&url);
        let reply = curl(&proxy, &all).await;
        assert_eq!(reply.status, status, "{args:?}: {reply:?}");
        if status == 200 {
            assert_eq!(
                echo.requests().last().unwrap().body_len,
                upstream_len,
                "{args:?}: the whole body went upstream"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn user_and_agent_labels_reach_the_policy_and_the_user_header_is_stripped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package keyward\nimport rego.v1\ndefault allow := false\nallow if {\n  input.user.id == \"alice\"\n  input.agent.labels.team == \"sales\"\n  input.agent.id == \"test-agent\"\n  \"openai_key\" in input.credentials\n}\n",
    )
    .unwrap();
    let echo = Echo::https().await;
    let proxy = proxy_with_policy(dir.path(), "").await;
    let url = format!("https://localhost:{}/v1", echo.port());
    let auth = "Authorization: Bearer kw-placeholder-openai";
    assert_eq!(
        curl(&proxy, &["-H", auth, "-H", "X-Keyward-User: alice", &url])
            .await
            .status,
        200
    );
    assert!(
        echo.requests()[0].header("x-keyward-user").is_none(),
        "the user header is not forwarded"
    );
    assert_eq!(
        curl(&proxy, &["-H", auth, "-H", "X-Keyward-User: mallory", &url])
            .await
            .status,
        403
    );
    crate::support::eventually("the audit line naming alice", std::time::Duration::from_secs(5), || {
        proxy.audit_lines().iter().any(|l| l["user_id"] == "alice")
    })
    .await;
}

#[test]
fn example_policies_pass_their_rego_tests_and_a_failing_test_fails() {
    for name in ["readonly", "sales", "business-hours", "github", "mcp"] {
        let out = Command::new(binary())
            .args(["policy", "test", "--dir"])
            .arg(example(name))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(" 0 failed") && !stdout.contains(": 0 passed"),
            "{name}: {stdout}"
        );
    }
    let broken = copy_of("readonly");
    let test = broken.path().join("keyward_test.rego");
    let text = std::fs::read_to_string(&test)
        .unwrap()
        .replace("test_post_denied if not", "test_post_denied if");
    std::fs::write(&test, text).unwrap();
    let out = Command::new(binary())
        .args(["policy", "test", "--dir"])
        .arg(broken.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL data.keyward_test.test_post_denied"));
}

#[test]
fn policy_eval_prints_the_decision_and_exits_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::proxy::config_yaml(&format!("policy:\n  dir: \"{}\"\n", example("sales").display()));
    let work = crate::support::proxy::workdir(&config);
    let eval = |body: serde_json::Value| {
        let input = dir.path().join("input.json");
        let doc = json!({"request": {"method": "POST", "path": "/services/data/v60.0/sobjects/Opportunity", "body": body, "body_parsed": true}});
        std::fs::write(&input, doc.to_string()).unwrap();
        Command::new(binary())
            .args(["policy", "eval", "--config"])
            .arg(work.path().join("keyward.yaml"))
            .arg("--input")
            .arg(&input)
            .output()
            .unwrap()
    };
    let ok = eval(json!({"Amount": 10, "Industry": "Technology"}));
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&ok.stdout).unwrap()["allow"],
        true
    );
    let no = eval(json!({"Amount": 1e9, "Industry": "Technology"}));
    assert_eq!(no.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no.stdout).contains("is over 100000"));
}

#[test]
fn a_policy_that_does_not_compile_is_refused_at_start_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.rego"),
        "package keyward\nimport rego.v1\n\nallow if {\n",
    )
    .unwrap();
    let config = crate::support::proxy::config_yaml(&format!("policy:\n  dir: \"{}\"\n", dir.path().display()));
    let work = crate::support::proxy::workdir(&config);
    for cmd in ["check", "run"] {
        let out = Command::new(binary())
            .args([cmd, "--config"])
            .arg(work.path().join("keyward.yaml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}");
        assert!(stderr.contains("bad.rego:"), "{cmd}: {stderr}");
    }
}
