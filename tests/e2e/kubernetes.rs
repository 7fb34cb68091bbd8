//! The admission webhook over real TLS with a real client, and the trust bundle the sidecar writes for agents.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::routes;
use crate::support::clients::curl_with_ca;
use crate::support::echo::Echo;
use crate::support::pki::pki;
use crate::support::proxy::{binary, Proxy};

/// `keyward webhook` on a free port with the test PKI's certificate; killed on drop.
struct Webhook {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_webhook() -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.yaml");
    // The controller's CA is read from a file here (as with cert-manager), and written inline into pods.
    std::fs::write(
        &settings,
        format!(
            "image: keyward:test\ncontroller_url: https://keyward-controller.keyward.svc:443\ncontroller_ca_file: {}\nenv:\n  OPENAI_API_KEY: kw-placeholder-openai\n",
            pki().ca_path.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .args([
            "--log-format",
            "json",
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
        ])
        .arg(&pki().leaf_cert_path)
        .arg("--tls-key")
        .arg(&pki().leaf_key_path)
        .arg("--settings")
        .arg(&settings)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let line = lines
        .find(|l| l.contains("keyward webhook listening"))
        .expect("webhook starts");
    // Keep draining its log; a test process should not depend on how the webhook copes with a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let addr: std::net::SocketAddr = serde_json::from_str::<Value>(&line).unwrap()["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    Webhook {
        child,
        port: addr.port(),
        _dir: dir,
    }
}

/// POSTs `body` to /mutate over TLS with curl; (status, body).
fn mutate(hook: &Webhook, body: &[u8]) -> (u16, String) {
    mutate_with(hook, body, &[])
}

fn mutate_with(hook: &Webhook, body: &[u8], curl_args: &[&str]) -> (u16, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&pki().ca_path)
        .args(curl_args)
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.path().display()))
        .args([
            "-w",
            "\n%{http_code}",
            &format!("https://localhost:{}/mutate", hook.port),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let detail = if body.is_empty() {
        String::from_utf8_lossy(&out.stderr).into_owned()
    } else {
        body.to_string()
    };
    (status.parse().unwrap(), detail)
}

fn review(annotations: Value) -> Vec<u8> {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "operation": "CREATE",
            "object": { "metadata": { "name": "agent", "annotations": annotations }, "spec": { "containers": [{ "name": "app", "image": "agent:1" }] } },
        },
    })
    .to_string()
    .into_bytes()
}

#[test]
fn the_webhook_patches_annotated_pods_over_tls_and_survives_bad_input() {
    let hook = start_webhook();
    let (status, body) = mutate(&hook, &review(json!({ "keyward.dev/inject": "true" })));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().unwrap())
        .unwrap();
    let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
    let sidecar = &ops
        .iter()
        .find(|op| op["path"] == "/spec/initContainers" && op["value"][0]["name"] == "keyward")
        .expect("the sidecar is added")["value"][0];
    let ca_env = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "KEYWARD_CONTROLLER_CA_PEM")
        .expect("the controller's CA");
    assert_eq!(
        ca_env["value"].as_str(),
        Some(std::fs::read_to_string(&pki().ca_path).unwrap().as_str()),
        "controller_ca_file is read at start and written inline"
    );
    let text = String::from_utf8_lossy(&patch);
    for key in ["\"secret\"", "secretName", "secretKeyRef", "configMap"] {
        assert!(
            !text.contains(key),
            "no Secret or ConfigMap is named in the patch: {key}"
        );
    }

    let (status, body) = mutate(&hook, &review(json!({})));
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["response"]
            .get("patch")
            .is_none(),
        "not annotated: no patch"
    );

    let (status, body) = mutate(
        &hook,
        &review(json!({ "keyward.dev/inject": "true", "keyward.dev/memory": "lots" })),
    );
    assert_eq!(status, 200);
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        refused["response"]["allowed"], false,
        "a bad annotation value refuses the pod"
    );
    assert_eq!(refused["response"]["status"]["code"], 400);
    assert!(
        refused["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("keyward.dev/memory: `lots` is not a Kubernetes quantity"),
        "{refused}"
    );
    assert!(refused["response"].get("patch").is_none());

    assert_eq!(mutate(&hook, b"{not json").0, 400, "malformed JSON");
    assert_eq!(mutate(&hook, br#"{"kind":"AdmissionReview"}"#).0, 400, "no request");
    // Over HTTP/1.1 curl asks `Expect: 100-continue` for a large body, so the refusal arrives before it is sent.
    let (status, body) = mutate_with(&hook, &vec![b' '; 3 * 1024 * 1024], &["--http1.1"]);
    assert_eq!(status, 413, "oversized: {body}");
    assert_eq!(
        mutate(&hook, &review(json!({ "keyward.dev/inject": "true" }))).0,
        200,
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trust_bundle_works_for_curl_and_python_and_keeps_system_roots() {
    let echo = Echo::https().await;
    let bundle_dir = tempfile::tempdir().unwrap();
    let bundle = bundle_dir.path().join("trust/ca-bundle.pem");
    let proxy = Proxy::spawn_with_args(routes(), &["--trust-bundle", bundle.to_str().unwrap()]).await;
    let text = std::fs::read_to_string(&bundle).unwrap();
    let certs = text.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certs > 10, "system roots are included ({certs} certificates)");
    assert!(
        text.contains(std::fs::read_to_string(proxy.ca_cert()).unwrap().trim()),
        "and Keyward's CA"
    );
    let url = format!("https://localhost:{}/v1", echo.port());
    assert_eq!(
        curl_with_ca(&proxy, &bundle, &[&url]).await.status,
        200,
        "curl trusts the bundle"
    );
    let script = "import requests, sys; print(requests.get(sys.argv[1], timeout=20).status_code)";
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &url])
        .env("HTTPS_PROXY", proxy.url())
        .env("NO_PROXY", "")
        .env("REQUESTS_CA_BUNDLE", &bundle)
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
