//! `keyward controller` against the strict Kubernetes API stand-in (kube-rs speaking to it through a
//! kubeconfig): sidecars get intermediates by projected token and mint leaves that curl and requests trust;
//! every refusal signs nothing; renewal before expiry; the fleet kill switch reaching two sidecars within
//! 2 s and surviving a controller restart.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::reload::{authorization_seen, route, stream_finishes};
use crate::routes;
use crate::support::apiserver::{root_ca, ApiServer, Controller, AGENTS_NS, OTHER_NS};
use crate::support::clients::{curl, node, python, stream_lines};
use crate::support::echo::Echo;
use crate::support::eventually;
use crate::support::pki::pki;
use crate::support::proxy::{binary, config_yaml, workdir, Proxy};

/// A sidecar of agent `test-agent` in namespace `agents` using `controller`; its trust bundle is written where
/// the test clients look for the CA (`ca/ca.crt`).
async fn sidecar(api: &ApiServer, controller: &Controller, name: &str) -> Proxy {
    sidecar_with(api, controller, name, &[]).await
}

async fn sidecar_with(api: &ApiServer, controller: &Controller, name: &str, extra: &[&str]) -> Proxy {
    let token = api.token(AGENTS_NS, "bot", "keyward", 600);
    let token_file = api.token_file(name, &token);
    let dir = workdir(&config_yaml(routes()));
    std::fs::create_dir_all(dir.path().join("ca")).unwrap();
    let bundle = dir.path().join("ca/ca.crt");
    let ca = pki().ca_path.display().to_string();
    let mut args = vec![
        "--controller",
        &controller.url,
        "--controller-ca",
        &ca,
        "--controller-token",
        token_file.to_str().unwrap(),
        "--trust-bundle",
        bundle.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proxy::spawn_in_with_args(dir, &args).await
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    serde_json::json!({ "csr": csr }).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_gets_an_intermediate_and_curl_and_requests_trust_its_leaves() {
    let api = ApiServer::start();
    let controller = Controller::spawn(&api, &[]).await;
    let echo = Echo::https().await;
    let proxy = sidecar(&api, &controller, "token-a").await;
    let bundle = std::fs::read_to_string(proxy.ca_cert()).unwrap();
    assert!(
        bundle.contains(api.root_cert().trim()),
        "the bundle holds the root from the controller's Secret"
    );
    assert!(
        !proxy.path("ca/ca.key").exists(),
        "no CA key on the sidecar's disk: its intermediate key lives in memory"
    );
    let url = format!("https://localhost:{}/v1/models", echo.port());
    let reply = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-openai", &url]).await;
    assert_eq!(
        reply.status, 200,
        "curl trusts a leaf under the fresh intermediate: {reply:?}"
    );
    let reply = python(
        &proxy,
        "requests",
        "GET",
        &url,
        &[("Authorization", "Bearer kw-placeholder-openai")],
        false,
    )
    .await;
    assert_eq!(reply.status, 200, "requests too: {reply:?}");
    let (status, error) = node(&proxy, &url, &["Authorization: Bearer kw-placeholder-openai"]).await;
    assert_eq!(status, 200, "and Node, with NODE_EXTRA_CA_CERTS: {error}");
    let text = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&pki().ca_path)
        .arg(format!("{}/metrics", controller.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("keyward_controller_certificates_total{result=\"issued\",reason=\"ok\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_signs_nothing_and_never_logs_the_token() {
    let api = ApiServer::start();
    let controller = Controller::spawn(&api, &[]).await;
    let good = api.token(AGENTS_NS, "bot", "keyward", 600);
    let wrong_audience = api.token(AGENTS_NS, "bot", "https://kubernetes.default.svc.cluster.local", 600);
    let not_enrolled = api.token(OTHER_NS, "bot", "keyward", 600);
    let expiring = api.token(AGENTS_NS, "bot", "keyward", 1);
    let cases: [(&str, Option<&str>, String, u16, &str); 5] = [
        ("no token", None, csr(), 401, "token_refused"),
        ("unknown token", Some("not-a-real-token"), csr(), 401, "token_refused"),
        (
            "the agent's ordinary token (API audience)",
            Some(&wrong_audience),
            csr(),
            401,
            "token_refused",
        ),
        (
            "a namespace that is not enrolled",
            Some(&not_enrolled),
            csr(),
            403,
            "namespace_not_enrolled",
        ),
        (
            "a malformed CSR",
            Some(&good),
            r#"{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}"#.into(),
            400,
            "bad_csr",
        ),
    ];
    for (what, token, body, status, code) in &cases {
        let (got, answer) = controller.call("POST", "/v1/certificate", *token, Some(body));
        assert_eq!(
            (got, answer["error"].as_str()),
            (*status, Some(*code)),
            "{what}: {answer}"
        );
        assert!(answer.get("certificate").is_none(), "{what}: nothing signed");
    }
    // An expired token: the stand-in, like the API server, stops accepting it (no leeway here).
    eventually("the 1 s token to expire", Duration::from_secs(5), || {
        controller
            .call("POST", "/v1/certificate", Some(&expiring), Some(&csr()))
            .0
            == 401
    })
    .await;
    let (status, answer) = controller.call("POST", "/v1/certificate", Some(&good), Some(&csr()));
    assert_eq!(status, 200, "the good token still works: {answer}");
    let logs = controller.logs();
    for token in [&good, &wrong_audience, &not_enrolled, &expiring] {
        assert!(!logs.contains(token.as_str()), "a token reached the controller's log");
    }
    assert!(logs.contains("certificate refused"), "refusals are logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_intermediate_is_renewed_before_it_expires() {
    let api = ApiServer::start();
    // 6 s: renewal at 4 s leaves 2 s of margin on a loaded 2-core machine.
    let controller = Controller::spawn(&api, &["--intermediate-lifetime", "6s"]).await;
    let echo = Echo::https().await;
    let proxy = sidecar(&api, &controller, "token-r").await;
    let url = format!("https://localhost:{}/v1/models", echo.port());
    let started = Instant::now();
    proxy
        .wait_for_log("intermediate certificate renewed", Duration::from_secs(10))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "renewed before the first one expired"
    );
    // Past the first intermediate's expiry: new handshakes get leaves under the renewed one.
    eventually("7 s past the start", Duration::from_secs(12), || {
        started.elapsed() > Duration::from_secs(7)
    })
    .await;
    let reply = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-openai", &url]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(proxy.metric_sum("keyward_certificate_renewals_total", &[("result", "ok")]) >= 1.0);
    let (status, _) = proxy.admin_get("/readyz");
    assert_eq!(status, 200);
}

/// `keyward block|unblock|blocked` against the controller.
fn fleet(controller: &Controller, args: &[&str]) -> String {
    let out = std::process::Command::new(binary())
        .args(args)
        .args(["--controller", &controller.url, "--controller-ca"])
        .arg(&pki().ca_path)
        .arg("--api-token-file")
        .arg(&controller.api_token_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_through(proxy: &Proxy, url: &str) -> u16 {
    status_trusting(proxy, &proxy.ca_cert(), url).parse().unwrap_or(0)
}

/// The status code curl printed for `url` through the proxy, trusting only `ca` (`000`: no answer).
fn status_trusting(proxy: &Proxy, ca: &Path, url: &str) -> String {
    curl_write_out(proxy, ca, url, "%{http_code}")
}

/// What curl's `--write-out` `format` printed for `url` through the proxy, trusting only `ca`.
fn curl_write_out(proxy: &Proxy, ca: &Path, url: &str, format: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            format,
            "-m",
            "5",
            "-x",
            &proxy.url(),
            "--cacert",
        ])
        .arg(ca)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_block_reaches_two_sidecars_within_2_s_and_survives_a_controller_restart() {
    let api = ApiServer::start();
    let controller = Controller::spawn(&api, &[]).await;
    let echo = Echo::https().await;
    let a = sidecar(&api, &controller, "token-1").await;
    let b = sidecar(&api, &controller, "token-2").await;
    let url = format!("https://localhost:{}/v1/models", echo.port());
    assert_eq!((status_through(&a, &url), status_through(&b, &url)), (200, 200));

    let (status, _) = controller.call("POST", "/v1/agents/test-agent/block", Some("wrong-token"), None);
    assert_eq!(status, 401, "the block API needs the API token");

    fleet(&controller, &["block", "--agent", "test-agent"]);
    let issued = Instant::now();
    eventually("both sidecars refusing", Duration::from_secs(2), || {
        status_through(&a, &url) == 403 && status_through(&b, &url) == 403
    })
    .await;
    let took = issued.elapsed();
    fleet(&controller, &["unblock", "--agent", "test-agent"]);
    eventually("both sidecars serving again", Duration::from_secs(2), || {
        status_through(&a, &url) == 200 && status_through(&b, &url) == 200
    })
    .await;
    assert!(
        controller.logs().contains("fleet kill switch changed"),
        "calls are audited"
    );

    // The set lives in a ConfigMap: a new controller finds it, and so do the sidecars following it.
    fleet(&controller, &["block", "--agent", "test-agent"]);
    controller.kill();
    let restarted = Controller::spawn(&api, &[]).await;
    let blocked: serde_json::Value = serde_json::from_str(&fleet(&restarted, &["blocked"])).unwrap();
    assert_eq!(blocked["agents"], serde_json::json!(["test-agent"]), "{blocked}");
    let cm = api.call("GET", "/api/v1/namespaces/keyward/configmaps/keyward-blocked", None);
    assert_eq!(cm["data"]["agents"], "test-agent\n", "kubectl-editable: {cm}");
    println!("fleet block reached two sidecars in {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_served_configuration_changes_live_during_a_stream_and_a_broken_one_is_refused() {
    let api = ApiServer::start();
    api.put_config(
        "agent-config",
        &[("keyward.yaml", &config_yaml(&route("Bearer {secret}")))],
    );
    let controller = Controller::spawn(&api, &[]).await;
    let echo = Echo::https().await;
    let proxy = sidecar_with(&api, &controller, "token-c", &["--controller-config", "agent-config"]).await;
    assert_eq!(
        authorization_seen(&proxy, &echo).await,
        "Bearer sk-REALSECRET-openai-5a1f7c"
    );

    // A stream on the first version: event 1 is in, event 2 waits for the gate.
    let (_stream, mut lines) = stream_lines(&proxy, &format!("https://localhost:{}/sse?events=2", echo.port()));
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("data: event 1"));

    api.put_config(
        "agent-config",
        &[("keyward.yaml", &config_yaml(&route("Token {secret}")))],
    );
    proxy
        .wait_for_log("configuration reloaded", Duration::from_secs(10))
        .await;
    assert_eq!(
        authorization_seen(&proxy, &echo).await,
        "Token sk-REALSECRET-openai-5a1f7c"
    );
    echo.release_gate();
    stream_finishes(&mut lines).await;

    // A broken version: refused, shown in /readyz, and the running one keeps serving.
    let broken = config_yaml(&route("Token {secret}")).replace("openai_key", "no_such_secret");
    api.put_config("agent-config", &[("keyward.yaml", &broken)]);
    let admin = proxy.admin;
    eventually(
        "/readyz to show the refused configuration",
        Duration::from_secs(10),
        || {
            crate::support::proxy::admin_get(admin, "/readyz")
                .1
                .contains("no_such_secret")
        },
    )
    .await;
    assert_eq!(
        authorization_seen(&proxy, &echo).await,
        "Token sk-REALSECRET-openai-5a1f7c"
    );
    assert_eq!(proxy.metric("keyward_config_last_reload_ok"), 0.0);
    let (status, answer) = controller.call("GET", "/v1/configs/agent-config", None, None);
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("token_refused")),
        "configs are not public"
    );
}

/// The certificates curl was served for `url` through the sidecar (`%{certs}`: the leaf and the intermediate,
/// each with its issuer).
fn served_chain(proxy: &Proxy, url: &str) -> String {
    curl_write_out(proxy, &proxy.ca_cert(), url, "%{certs}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_rotation_keeps_both_roots_in_the_bundle_while_the_old_one_is_in_use() {
    let api = ApiServer::start();
    let controller = Controller::spawn(&api, &["--intermediate-lifetime", "3s", "--root-refresh", "200ms"]).await;
    let echo = Echo::https().await;
    let proxy = sidecar(&api, &controller, "token-rot").await;
    let url = format!("https://localhost:{}/v1/models", echo.port());
    let (old_cert, old_key) = (api.root_cert(), api.root_key());
    let (new_cert, new_key) = root_ca();
    let both = format!("{}\n{}", old_cert.trim(), new_cert.trim());

    // Phase 1: still signing with the old root, the bundle announces the new one too.
    api.put_root(&old_cert, &old_key, &both);
    eventually(
        "the sidecar's bundle to hold both roots",
        Duration::from_secs(10),
        || {
            let bundle = std::fs::read_to_string(proxy.ca_cert()).unwrap_or_default();
            bundle.contains(old_cert.trim()) && bundle.contains(new_cert.trim())
        },
    )
    .await;
    assert_eq!(status_through(&proxy, &url), 200);
    assert!(
        served_chain(&proxy, &url).contains("Keyward test root"),
        "the intermediate chains to a test root"
    );

    // Phase 2: signing with the new root; agents holding the two-root bundle keep trusting every leaf.
    let renewed = proxy.metric_sum("keyward_certificate_renewals_total", &[("result", "ok")]);
    api.put_root(&new_cert, &new_key, &both);
    eventually("a renewal under the new root", Duration::from_secs(10), || {
        proxy.metric_sum("keyward_certificate_renewals_total", &[("result", "ok")]) >= renewed + 2.0
    })
    .await;
    assert_eq!(
        status_through(&proxy, &url),
        200,
        "a leaf under the new root, trusted through the bundle"
    );
    let old_only = proxy.path("old-root.pem");
    std::fs::write(&old_only, &old_cert).unwrap();
    assert_eq!(
        status_trusting(&proxy, &old_only, &url),
        "000",
        "an agent that trusts only the old root refuses the new chain: the bundle is what carries the rotation"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_controller_gone_a_sidecar_turns_not_ready_at_expiry_instead_of_serving_an_expired_chain() {
    let api = ApiServer::start();
    let controller = Controller::spawn(&api, &["--intermediate-lifetime", "3s"]).await;
    let echo = Echo::https().await;
    let proxy = sidecar(&api, &controller, "token-gone").await;
    let url = format!("https://localhost:{}/v1/models", echo.port());
    assert_eq!(status_through(&proxy, &url), 200);
    controller.kill();
    let admin = proxy.admin;
    eventually(
        "/readyz 503 once the intermediate expired",
        Duration::from_secs(10),
        || crate::support::proxy::admin_get(admin, "/readyz").0 == 503,
    )
    .await;
    let (_, ready) = proxy.admin_get("/readyz");
    assert!(ready.contains("expired"), "{ready}");
    assert!(proxy.metric_sum("keyward_certificate_renewals_total", &[("result", "error")]) >= 1.0);
    assert!(
        proxy.logs().contains("renewing the intermediate certificate failed"),
        "renewal failures are logged"
    );
}
