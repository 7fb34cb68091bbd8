//! Real clients driven through the proxy the way an agent would: curl with `-x`, and Python `requests` and
//! `httpx` configured only by the standard `HTTPS_PROXY` / CA-bundle environment variables.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::proxy::Proxy;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub http_version: String,
    /// Status of the proxy's answer to CONNECT (0 when none was sent).
    pub connect_status: u16,
    /// Bytes of response body curl received (also when written to `-o /dev/null`).
    pub downloaded: u64,
    pub stderr: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

const LIMIT: Duration = Duration::from_secs(60);

/// curl through the proxy, trusting the proxy's CA; extra args go before the URL (which callers include).
pub async fn curl(proxy: &Proxy, args: &[&str]) -> Reply {
    curl_with_ca(proxy, &proxy.ca_cert(), args).await
}

pub async fn curl_with_ca(proxy: &Proxy, ca: &Path, args: &[&str]) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{http_version} %{http_connect} %{size_download}",
        "-x",
    ])
    .arg(proxy.url())
    .arg("--cacert")
    .arg(ca)
    .args(args)
    .env_remove("HTTPS_PROXY")
    .env_remove("https_proxy");
    let out = run(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut fields = last.split(' ');
    Reply {
        status: fields.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: fields.next().unwrap_or("").to_string(),
        connect_status: fields.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        downloaded: fields.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `requests` or `httpx` (tests/clients/client.py) with only environment configuration.
pub async fn python(proxy: &Proxy, lib: &str, method: &str, url: &str, headers: &[(&str, &str)], http2: bool) -> Reply {
    python_with(proxy, lib, method, url, headers, http2, Payload::None).await
}

/// A request body for [`python_with`].
pub enum Payload<'a> {
    None,
    Json(&'a serde_json::Value),
    /// This many bytes (`x`), sent as `application/octet-stream`.
    Bytes(u64),
}

/// As [`python`], with a request body.
pub async fn python_with(
    proxy: &Proxy,
    lib: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    http2: bool,
    payload: Payload<'_>,
) -> Reply {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["--lib", lib, "--method", method, "--url", url]);
    for (k, v) in headers {
        cmd.arg("--header").arg(format!("{k}: {v}"));
    }
    if http2 {
        cmd.arg("--http2");
    }
    match payload {
        Payload::None => {}
        Payload::Json(body) => {
            cmd.arg("--json").arg(body.to_string());
        }
        Payload::Bytes(n) => {
            cmd.arg("--bytes").arg(n.to_string());
        }
    }
    let ca = proxy.ca_cert();
    cmd.env("HTTPS_PROXY", proxy.url())
        .env("HTTP_PROXY", proxy.url())
        .env("NO_PROXY", "")
        .env("no_proxy", "")
        .env("SSL_CERT_FILE", &ca)
        .env("REQUESTS_CA_BUNDLE", &ca);
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{lib} client failed: {stderr}"));
    Reply {
        status: v["status"].as_u64().unwrap() as u16,
        body: v["body"].as_str().unwrap().to_string(),
        http_version: v["http_version"].as_str().unwrap().to_string(),
        connect_status: 0,
        downloaded: 0,
        stderr,
    }
}

async fn run(mut cmd: Command) -> std::process::Output {
    cmd.kill_on_drop(true);
    tokio::time::timeout(LIMIT, cmd.output())
        .await
        .expect("client finished in time")
        .expect("client runs")
}

/// Node (tests/clients/connect.mjs): CONNECT through the proxy, then TLS trusting Node's default CAs plus
/// `NODE_EXTRA_CA_CERTS` = the proxy's CA file. Returns the status (0 when TLS or the tunnel failed) and the
/// error, if any.
pub async fn node(proxy: &Proxy, url: &str, headers: &[&str]) -> (u16, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/connect.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .arg(proxy.url())
        .arg(url)
        .args(headers)
        .env("NODE_EXTRA_CA_CERTS", proxy.ca_cert());
    let out = run(cmd).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("node failed: {}", String::from_utf8_lossy(&out.stderr)));
    (
        v["status"].as_u64().unwrap_or(0) as u16,
        v["error"].as_str().unwrap_or("").to_string(),
    )
}

/// A streaming request through the proxy with the openai placeholder (`curl -N`), read line by line: the
/// caller reads the events as they come and decides when the upstream may go on.
pub fn stream_lines(
    proxy: &Proxy,
    url: &str,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut child = Command::new("curl")
        .args(["-sSN", "--max-time", "30", "-x", &proxy.url(), "--cacert"])
        .arg(proxy.ca_cert())
        .args(["-H", "Authorization: Bearer kw-placeholder-openai", url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}
