//! Runs the real `keyward` binary from inline YAML on port 0, waits until it is ready, and on drop stops it and
//! checks that nothing it logged contains a real secret.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{pki::pki, MARKER, SECRETS};

pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Mutex<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The parts of the configuration every test shares; `extra` (routes, resolve, unmatched...) is appended.
pub fn config_yaml(extra: &str) -> String {
    config_with_secrets("", extra)
}

/// As [`config_yaml`], with `secrets` lines (indented two spaces, e.g. a `vault:` block) added to `secrets:`.
pub fn config_with_secrets(secrets: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nagent:\n  id: test-agent\n  labels: {{team: sales}}\nca:\n  cert: ca/ca.crt\n  key: ca/ca.key\n\
         upstream_tls:\n  extra_roots: [\"{}\"]\nsecrets:\n  file: secrets.yaml\n  poll_interval: 100ms\n{secrets}{extra}",
        pki().ca_path.display()
    )
}

/// A fresh directory holding `keyward.yaml` and `secrets.yaml`.
pub fn workdir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keyward.yaml"), config).unwrap();
    let secrets: String = SECRETS
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", serde_json::json!(v)))
        .collect();
    std::fs::write(dir.path().join("secrets.yaml"), secrets).unwrap();
    dir
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_keyward")
}

impl Proxy {
    pub async fn spawn(extra: &str) -> Self {
        Self::spawn_in(workdir(&config_yaml(extra))).await
    }

    pub async fn spawn_in(dir: tempfile::TempDir) -> Self {
        Self::start(dir, true, &[]).await
    }

    /// As [`Proxy::spawn`], with extra arguments to `keyward run`.
    pub async fn spawn_with_args(extra: &str, args: &[&str]) -> Self {
        Self::start(workdir(&config_yaml(extra)), true, args).await
    }

    /// Starts the proxy in `dir` without waiting for `/readyz` (for a backend that is not ready yet).
    pub async fn spawn_unready(dir: tempfile::TempDir) -> Self {
        Self::start(dir, false, &[]).await
    }

    async fn start(dir: tempfile::TempDir, wait_ready: bool, args: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .args(["--log-format", "json", "run", "--config"])
            .arg(dir.path().join("keyward.yaml"))
            .args(args)
            .env("KEYWARD_LOG", "info,keyward=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyward binary runs");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let (sink, path) = (log.clone(), log_file());
        let reader = std::thread::spawn(move || {
            let mut file = std::fs::File::create(path).unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut proxy = Self {
            addr: ([0, 0, 0, 0], 0).into(),
            admin: ([0, 0, 0, 0], 0).into(),
            dir,
            child: Mutex::new(child),
            log,
            reader: Some(reader),
        };
        let listening = proxy.wait_for_log("keyward listening", Duration::from_secs(20)).await;
        let fields: serde_json::Value = serde_json::from_str(&listening).unwrap();
        proxy.addr = fields["proxy_addr"].as_str().unwrap().parse().unwrap();
        proxy.admin = fields["admin_addr"].as_str().unwrap().parse().unwrap();
        let admin = proxy.admin;
        if wait_ready {
            super::eventually("/readyz 200", Duration::from_secs(10), || {
                admin_request(admin, "GET", "/readyz").is_ok_and(|(status, _)| status == 200)
            })
            .await;
        }
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca/ca.crt")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sends SIGTERM, as Kubernetes does at pod shutdown.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub async fn exit_code(&self, limit: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.lock().unwrap().try_wait() {
                return status.code();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "keyward did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    pub fn rss_kib(&self) -> u64 {
        super::rss_kib(self.pid()).expect("proxy is running")
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The first log line containing `needle`, waiting for it up to `limit`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(line) = self.logs().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            let exited = self.child.lock().unwrap().try_wait();
            if let Ok(Some(status)) = exited {
                panic!(
                    "keyward exited with {status} before logging {needle:?}:\n{}",
                    self.logs()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line {needle:?} within {limit:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET on the admin listener; returns status and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        admin_get(self.admin, path)
    }

    /// POST (empty body) on the admin listener; returns status and body.
    pub fn admin_post(&self, path: &str) -> (u16, String) {
        admin_request(self.admin, "POST", path).expect("admin endpoint answers")
    }

    /// The value of one Prometheus sample, 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if !std::thread::panicking() {
            let logs = self.logs();
            assert!(!logs.contains(MARKER), "a real secret reached keyward's log output");
            for (_, value) in SECRETS {
                assert!(!logs.contains(value), "a real secret reached keyward's log output");
            }
        }
    }
}

fn log_file() -> PathBuf {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("keyward-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = std::thread::current().name().unwrap_or("test").replace("::", "-");
    dir.join(format!("{name}-{}-{seq}.log", std::process::id()))
}

pub fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin_request(addr, "GET", path).expect("admin endpoint answers")
}

/// GET that tolerates a server that is not (yet) listening.
pub fn admin_get_opt(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    admin_request(addr, "GET", path).ok()
}

/// A minimal blocking HTTP/1.1 request without a body, enough for the admin endpoints.
fn admin_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
