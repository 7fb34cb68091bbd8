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
    /// What keyward printed on stdout: the audit log, by default.
    stdout: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
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
        Self::start(dir, true, &[], &[]).await
    }

    /// As [`Proxy::spawn`], with extra arguments to `keyward run`.
    /// As [`Proxy::spawn_in`], with more `run` arguments.
    pub async fn spawn_in_with_args(dir: tempfile::TempDir, args: &[&str]) -> Self {
        Self::start(dir, true, args, &[]).await
    }

    pub async fn spawn_with_args(extra: &str, args: &[&str]) -> Self {
        Self::start(workdir(&config_yaml(extra)), true, args, &[]).await
    }

    /// As [`Proxy::spawn`], with extra environment variables. `KEYWARD_LOG_FORMAT=human` among them selects the
    /// human log format (JSON otherwise).
    pub async fn spawn_with_env(extra: &str, env: &[(&str, &str)]) -> Self {
        Self::start(workdir(&config_yaml(extra)), true, &[], env).await
    }

    /// Starts the proxy in `dir` without waiting for `/readyz` (for a backend that is not ready yet).
    pub async fn spawn_unready(dir: tempfile::TempDir) -> Self {
        Self::start(dir, false, &[], &[]).await
    }

    async fn start(dir: tempfile::TempDir, wait_ready: bool, args: &[&str], env: &[(&str, &str)]) -> Self {
        let human = env.contains(&("KEYWARD_LOG_FORMAT", "human"));
        let format: &[&str] = if human { &[] } else { &["--log-format", "json"] };
        let mut child = Command::new(binary())
            .args(format)
            .args(["run", "--config"])
            .arg(dir.path().join("keyward.yaml"))
            .args(args)
            .env("KEYWARD_LOG", "info,keyward=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyward binary runs");
        let (log, stdout) = (Arc::default(), Arc::default());
        let path = log_file();
        let readers = vec![
            copy_lines(child.stderr.take().unwrap(), path.clone(), Arc::clone(&log)),
            copy_lines(
                child.stdout.take().unwrap(),
                path.with_extension("stdout.log"),
                Arc::clone(&stdout),
            ),
        ];
        let mut proxy = Self {
            addr: ([0, 0, 0, 0], 0).into(),
            admin: ([0, 0, 0, 0], 0).into(),
            dir,
            child: Mutex::new(child),
            log,
            stdout,
            readers,
        };
        let listening = proxy.wait_for_log("keyward listening", Duration::from_secs(20)).await;
        let field = |name: &str| -> SocketAddr {
            let value = match serde_json::from_str::<serde_json::Value>(&listening) {
                Ok(fields) => fields[name].as_str().unwrap().to_string(),
                // Human format: `... keyward listening proxy_addr=127.0.0.1:41234 admin_addr=...`, possibly
                // coloured (ANSI escapes removed first).
                Err(_) => strip_ansi(&listening)
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or_else(|| panic!("no {name} in {listening}"))
                    .to_string(),
            };
            value.parse().unwrap()
        };
        proxy.addr = field("proxy_addr");
        proxy.admin = field("admin_addr");
        let admin = proxy.admin;
        if wait_ready {
            super::eventually("/readyz 200", Duration::from_secs(10), || {
                admin_request(admin, "GET", "/readyz", None).is_ok_and(|(status, _)| status == 200)
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

    /// The audit lines printed so far on stdout, each parsed as JSON (a line that is not JSON fails the test).
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        let out = self.stdout.lock().unwrap().clone();
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
            .collect()
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

    /// GET on the admin listener with the admin token; returns status and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        admin_request(self.admin, "GET", path, self.admin_token().as_deref()).expect("admin endpoint answers")
    }

    /// POST (empty body) on the admin listener with the admin token; returns status and body.
    pub fn admin_post(&self, path: &str) -> (u16, String) {
        admin_request(self.admin, "POST", path, self.admin_token().as_deref()).expect("admin endpoint answers")
    }

    /// The admin token keyward generated at start (none when the configuration sets one).
    pub fn admin_token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("ca/admin.token")).ok()
    }

    /// The sum of the samples of `name` whose labels include every `(label, value)` of `labels`.
    pub fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (_, text) = self.admin_get("/metrics");
        text.lines()
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let rest = series.strip_prefix(name)?;
                let wanted = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                (rest.is_empty() || rest.starts_with('{')).then_some(())?;
                wanted.then(|| value.parse::<f64>().ok())?
            })
            .sum()
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
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if !std::thread::panicking() {
            let logs = self.logs() + &self.stdout.lock().unwrap();
            assert!(
                !logs.to_ascii_lowercase().contains(&MARKER.to_ascii_lowercase()),
                "a real secret reached keyward's log output"
            );
            for (_, value) in SECRETS {
                assert!(!logs.contains(value), "a real secret reached keyward's log output");
            }
        }
    }
}

/// `text` without ANSI SGR sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Copies a child's output, line by line, into a buffer the test reads and a file the test command greps.
pub(crate) fn copy_lines(
    from: impl std::io::Read + Send + 'static,
    path: PathBuf,
    sink: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(path).unwrap();
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    })
}

pub(crate) fn log_file() -> PathBuf {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("keyward-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = std::thread::current().name().unwrap_or("test").replace("::", "-");
    dir.join(format!("{name}-{}-{seq}.log", std::process::id()))
}

pub fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin_request(addr, "GET", path, None).expect("admin endpoint answers")
}

/// GET that tolerates a server that is not (yet) listening.
pub fn admin_get_opt(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    admin_request(addr, "GET", path, None).ok()
}

/// A minimal blocking HTTP/1.1 request without a body, enough for the admin endpoints.
fn admin_request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
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
