//! The strict Kubernetes API stand-in (`tests/k8s/apiserver.py`, real JSON on real paths) and
//! `keyward controller` processes talking to it through kube-rs, with a kubeconfig as a platform team has.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pki::pki;
use super::proxy::{binary, copy_lines, log_file};

pub const ADMIN_TOKEN: &str = "stand-in-admin-token";
pub const API_TOKEN: &str = "controller-api-token-for-tests";

/// The controller's namespace, an enrolled agent namespace and one that is not.
pub const CONTROLLER_NS: &str = "keyward";
pub const AGENTS_NS: &str = "agents";
pub const OTHER_NS: &str = "other";

pub struct ApiServer {
    pub url: String,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl ApiServer {
    /// Starts the stand-in with the three namespaces, service account `bot` in each agent namespace and the
    /// root CA Secret (a CA that may sign intermediates).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (root_cert, root_key) = root_ca();
        std::fs::write(dir.path().join("root.crt"), &root_cert).unwrap();
        std::fs::write(dir.path().join("root.key"), &root_key).unwrap();
        let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
        let seed = serde_json::json!({
            "namespaces": [
                {"name": CONTROLLER_NS},
                {"name": AGENTS_NS, "labels": {"keyward.dev/enabled": "true"}},
                {"name": OTHER_NS},
            ],
            "objects": [
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot", "namespace": AGENTS_NS}},
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot", "namespace": OTHER_NS}},
                {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                 "metadata": {"name": "keyward-ca", "namespace": CONTROLLER_NS},
                 "data": {"tls.crt": b64(&root_cert), "tls.key": b64(&root_key)}},
            ],
        });
        std::fs::write(dir.path().join("seed.json"), seed.to_string()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8s/apiserver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "--port",
                "0",
                "--admin-token",
                ADMIN_TOKEN,
                "--min-token-expiration",
                "1",
                "--token-leeway",
                "0",
            ])
            .arg("--tls-cert")
            .arg(&pki().leaf_cert_path)
            .arg("--tls-key")
            .arg(&pki().leaf_key_path)
            .arg("--seed")
            .arg(dir.path().join("seed.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the stand-in");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = serde_json::from_str::<serde_json::Value>(&first).expect("the stand-in's ready line")["url"]
            .as_str()
            .unwrap()
            .replace("127.0.0.1", "localhost");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
             certificate-authority: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\nusers:\n- name: test\n  \
             user:\n    token: {ADMIN_TOKEN}\n",
            pki().ca_path.display()
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        Self { url, child, dir }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The root CA certificate (PEM) every sidecar's trust bundle must hold.
    pub fn root_cert(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("root.crt")).unwrap()
    }

    /// One call to the stand-in as cluster admin (curl, so the test speaks plain HTTP to it).
    pub fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let content_type = match method {
            "PATCH" => "Content-Type: application/merge-patch+json",
            _ => "Content-Type: application/json",
        };
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        ])
        .args(["-H", content_type, "--cacert"])
        .arg(&pki().ca_path);
        if let Some(body) = body {
            cmd.args(["-d", &body.to_string()]);
        }
        let out = cmd.arg(format!("{}{path}", self.url)).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// A projected service-account token, minted by the TokenRequest API.
    pub fn token(&self, namespace: &str, service_account: &str, audience: &str, seconds: u64) -> String {
        let request = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": seconds},
        });
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token");
        let answer = self.call("POST", &path, Some(request));
        answer["status"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_string()
    }

    /// Creates or replaces the served proxy configuration `name` (a labelled ConfigMap in the controller's
    /// namespace) with `keyward.yaml` and extra files.
    pub fn put_config(&self, name: &str, files: &[(&str, &str)]) {
        let data: serde_json::Map<String, serde_json::Value> = files
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        let path = format!("/api/v1/namespaces/{CONTROLLER_NS}/configmaps");
        let existing = self.call("GET", &format!("{path}/{name}"), None);
        let answer = if existing["kind"] == "ConfigMap" {
            self.call(
                "PATCH",
                &format!("{path}/{name}"),
                Some(serde_json::json!({ "data": data })),
            )
        } else {
            let cm = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "labels": {"keyward.dev/proxy-config": "true"}},
                "data": data,
            });
            self.call("POST", &path, Some(cm))
        };
        assert_eq!(answer["kind"], "ConfigMap", "{answer}");
    }

    /// Replaces the root CA Secret: the signing root, and the bundle every agent must trust.
    pub fn put_root(&self, cert: &str, key: &str, bundle: &str) {
        let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
        let patch = serde_json::json!({ "data": {
            "tls.crt": b64(cert), "tls.key": b64(key), "ca-bundle.crt": b64(bundle),
        }});
        let answer = self.call(
            "PATCH",
            &format!("/api/v1/namespaces/{CONTROLLER_NS}/secrets/keyward-ca"),
            Some(patch),
        );
        assert_eq!(answer["kind"], "Secret", "{answer}");
    }

    /// The current root key (PEM), as seeded.
    pub fn root_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("root.key")).unwrap()
    }

    /// Writes a token to a file in the stand-in's directory, as the kubelet projects it.
    pub fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, token).unwrap();
        path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new root CA that may sign intermediates: `(certificate PEM, key PEM)`.
pub fn root_ca() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Keyward test root");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A `keyward controller` process.
pub struct Controller {
    child: Mutex<Child>,
    pub url: String,
    log: Arc<Mutex<String>>,
    _readers: Vec<std::thread::JoinHandle<()>>,
    pub api_token_file: PathBuf,
}

impl Controller {
    pub async fn spawn(api: &ApiServer, extra: &[&str]) -> Self {
        let api_token_file = api.token_file("api-token", API_TOKEN);
        let mut child = Command::new(binary())
            .args([
                "--log-format",
                "json",
                "controller",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
            ])
            .arg(&pki().leaf_cert_path)
            .arg("--tls-key")
            .arg(&pki().leaf_key_path)
            .args([
                "--namespace",
                CONTROLLER_NS,
                "--namespace-selector",
                "keyward.dev/enabled=true",
            ])
            .arg("--api-token-file")
            .arg(&api_token_file)
            .args(extra)
            .env("KUBECONFIG", api.kubeconfig())
            .env("KEYWARD_LOG", "info,keyward=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyward binary runs");
        let log = Arc::new(Mutex::new(String::new()));
        let readers = vec![copy_lines(child.stderr.take().unwrap(), log_file(), log.clone())];
        let mut controller = Self {
            child: Mutex::new(child),
            url: String::new(),
            log,
            _readers: readers,
            api_token_file,
        };
        let line = controller
            .wait_for_log("keyward controller listening", Duration::from_secs(20))
            .await;
        let addr = serde_json::from_str::<serde_json::Value>(&line).unwrap()["addr"]
            .as_str()
            .unwrap()
            .replace("127.0.0.1", "localhost");
        controller.url = format!("https://{addr}");
        let url = controller.url.clone();
        super::eventually("controller /readyz 200", Duration::from_secs(20), || {
            curl_status(&url, "/readyz", None, "GET", None).0 == 200
        })
        .await;
        controller
    }

    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(line) = self.log.lock().unwrap().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} in the controller log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `(status, body)` of one call with an optional bearer token and JSON body.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, serde_json::Value) {
        let (status, text) = curl_status(&self.url, path, token, method, body);
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

fn curl_status(base: &str, path: &str, token: Option<&str>, method: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "10", "-X", method, "-w", "\n%{http_code}", "--cacert"])
        .arg(&pki().ca_path);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", body]);
    }
    let out = cmd.arg(format!("{base}{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
