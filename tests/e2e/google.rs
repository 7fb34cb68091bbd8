//! Google service accounts: the JSON key (a secret) signs a JWT, exchanged at the key's `token_uri` for an
//! access token (RFC 7523), cached and written as `Authorization: Bearer`. The token endpoint
//! (`tests/clients/google_token.py`) verifies the JWT's RS256 signature with the key's public half and checks
//! issuer, audience, lifetime and scope, as Google's does; its self-check proves google-auth's own client
//! gets a token from it with the same kind of key file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::support::clients::curl;
use crate::support::pki::pki;
use crate::support::proxy::{config_yaml, workdir, Proxy};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/google_token.py")
}

/// The token endpoint and "Vertex" API, and a key file whose `token_uri` points at it.
struct Google {
    _child: Child,
    events: Lines<BufReader<ChildStdout>>,
    port: u16,
    key_json: String,
    _dir: tempfile::TempDir,
}

impl Google {
    async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        // The public key must exist before the server reads it (on each token request, after keygen below).
        let mut child = tokio::process::Command::new("python3")
            .arg(script())
            .arg("serve")
            .arg("--cert")
            .arg(&pki().leaf_cert_path)
            .arg("--key")
            .arg(&pki().leaf_key_path)
            .arg("--public-key")
            .arg(keys.join("sa-public.pem"))
            .args(["--scope", SCOPE])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut events = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready: serde_json::Value = serde_json::from_str(&events.next_line().await.unwrap().unwrap()).unwrap();
        let port = ready["port"].as_u64().unwrap() as u16;
        let out = std::process::Command::new("python3")
            .arg(script())
            .arg("keygen")
            .arg(&keys)
            .args(["--token-uri", &format!("https://api.keyward.test:{port}/token")])
            .args(["--comment", "REALSECRET test service-account key"])
            .output()
            .unwrap();
        assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
        let key_json = std::fs::read_to_string(keys.join("sa.json")).unwrap();
        Self {
            _child: child,
            events,
            port,
            key_json,
            _dir: dir,
        }
    }

    async fn next_event(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.events.next_line())
            .await
            .expect("an event from the token endpoint within 10 s")
            .unwrap()
            .unwrap();
        serde_json::from_str(&line).unwrap()
    }

    fn proxy_dir(&self) -> tempfile::TempDir {
        let routes = r#"
resolve:
  api.keyward.test: [127.0.0.1]
routes:
  - name: vertex
    hosts: ["api.keyward.test:*"]
    allow_private: true
    credentials:
      - name: vertex
        placeholder: kw-placeholder-vertex
        google_service_account:
          key: { secret: google_sa_key }
          scopes: ["https://www.googleapis.com/auth/cloud-platform"]
          allow_private: true
"#;
        let dir = workdir(&config_yaml(routes));
        let base = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
        std::fs::write(
            dir.path().join("secrets.yaml"),
            format!("{base}google_sa_key: {}\n", serde_json::json!(self.key_json)),
        )
        .unwrap();
        dir
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_key_becomes_a_cached_access_token_toward_the_api() {
    let mut google = Google::start(&[]).await;
    let proxy = Proxy::spawn_in(google.proxy_dir()).await;
    let url = format!(
        "https://api.keyward.test:{}/api/v1/projects/p/locations/us/models",
        google.port
    );
    for _ in 0..3 {
        let reply = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-vertex", &url]).await;
        assert_eq!(reply.status, 200, "{}", crate::support::masked(&format!("{reply:?}")));
    }
    let token = google.next_event().await;
    assert_eq!(token["event"], "token");
    assert_eq!(token["ok"], true, "the endpoint accepted the JWT: {token}");
    for _ in 0..3 {
        let api = google.next_event().await;
        assert_eq!(api["event"], "api", "one token request for three calls: {api}");
        assert_eq!(api["status"], 200);
        assert_eq!(api["token_n"], 1);
    }
    // The access token never reaches a log.
    assert!(!proxy.logs().contains("ya29."), "no access token in Keyward's logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_token_endpoint_is_a_clear_503_then_recovers() {
    let mut google = Google::start(&["--fail-first", "1"]).await;
    let proxy = Proxy::spawn_in(google.proxy_dir()).await;
    let url = format!("https://api.keyward.test:{}/api/x", google.port);
    let reply = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-vertex", &url]).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.json()["error"], "secret_unavailable");
    assert!(
        reply.json()["message"].as_str().unwrap().contains("vertex"),
        "{reply:?}"
    );
    assert_eq!(google.next_event().await["status"], 503);
    let mut status = 0;
    crate::support::eventually("a token after the backoff", Duration::from_secs(5), || {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
                &proxy.url(),
                "--cacert",
            ])
            .arg(proxy.ca_cert())
            .args(["-H", "Authorization: Bearer kw-placeholder-vertex", &url])
            .output()
            .unwrap();
        status = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
        status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_cannot_sign_is_refused_without_quoting_it() {
    let google = Google::start(&[]).await;
    let dir = google.proxy_dir();
    let key = serde_json::json!({ "client_email": "a@b", "private_key": "REALSECRET not a key", "token_uri": "https://x/token" });
    // A JSON string literal is a YAML scalar.
    std::fs::write(
        dir.path().join("secrets.yaml"),
        format!("google_sa_key: {}\n", serde_json::json!(key.to_string())),
    )
    .unwrap();
    let proxy = Proxy::spawn_in(dir).await;
    let reply = curl(
        &proxy,
        &[
            "-H",
            "Authorization: Bearer kw-placeholder-vertex",
            "https://api.keyward.test:1/x",
        ],
    )
    .await;
    assert_eq!(reply.status, 503, "{}", crate::support::masked(&format!("{reply:?}")));
    assert!(
        reply.json()["message"].as_str().unwrap().contains("PKCS#8"),
        "{}",
        reply.json()
    );
    assert!(!reply.body.contains("REALSECRET"));
}
