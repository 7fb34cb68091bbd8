//! WebSocket through an intercepted tunnel, with real clients (Python `websockets`, Node `ws` behind
//! `https-proxy-agent`) and a real upstream (`websockets` over TLS) that records what it was sent.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::pki::pki;
use crate::support::proxy::Proxy;
use crate::support::secret;

fn route(extra: &str) -> String {
    format!(
        r#"
resolve:
  api.keyward.test: [127.0.0.1]
  other.keyward.test: [127.0.0.1]
routes:
  - name: realtime
    hosts: ["api.keyward.test:*"]
    allow_private: true
{extra}    credentials:
      - placeholder: kw-placeholder-ws
        secret: openai_key
        header: Authorization
        format: "Bearer {{secret}}"
  - name: other
    hosts: ["other.keyward.test:*"]
    allow_private: true
"#
    )
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ws_check.py")
}

fn check(proxy: &Proxy, scenario: &str, extra: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("python3");
    c.arg(script())
        .arg(scenario)
        .arg("--cert")
        .arg(&pki().leaf_cert_path)
        .arg("--key")
        .arg(&pki().leaf_key_path)
        .arg("--ca")
        .arg(proxy.ca_cert())
        .args(["--placeholder", "kw-placeholder-ws"])
        .args(extra)
        .env("WS_REAL_SECRET", secret("openai_key"))
        .env("HTTPS_PROXY", proxy.url())
        .env("https_proxy", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    c
}

async fn run(proxy: &Proxy, scenario: &str, extra: &[&str]) -> serde_json::Value {
    let out = check(proxy, scenario, extra).output().await.unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "ws_check.py {scenario} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_handshake_swaps_the_secret_relays_messages_and_scrubs_what_comes_back() {
    let proxy = Proxy::spawn(&route("")).await;
    let result = run(&proxy, "roundtrip", &[]).await;
    assert_eq!(
        result["echoes"],
        serde_json::json!(["echo:hello-0", "echo:hello-1", "echo:hello-2"]),
        "{result}"
    );
    let seen = &result["upstream"][0];
    assert_eq!(
        seen["authorization_real"], true,
        "the handshake carried the real secret: {result}"
    );
    assert_eq!(seen["placeholder_seen"], false);
    assert_eq!(
        seen["extensions_offered"], false,
        "no compression offered: compressed frames can't be scrubbed"
    );
    assert_eq!(
        result["secret_echo_scrubbed"], true,
        "an echoed secret is scrubbed: {result}"
    );
    assert_eq!(result["secret_echo_has_placeholder"], true);
    assert_eq!(
        result["close_code"], 4000,
        "the upstream's close code reaches the agent"
    );
    assert_eq!(result["close_reason_scrubbed"], true, "a close reason is scrubbed too");
    let mut found = None;
    crate::support::eventually("the WebSocket's audit line", Duration::from_secs(5), || {
        found = proxy.audit_lines().into_iter().find(|l| l.get("websocket").is_some());
        found.is_some()
    })
    .await;
    let line = found.unwrap();
    assert_eq!(line["route"], "realtime");
    assert_eq!(line["status"], 101);
    let ws = &line["websocket"];
    assert_eq!(ws["messages_in"], 5, "{line}");
    assert_eq!(ws["messages_out"], 4, "{line}");
    assert_eq!(ws["close_code"], 4000);
    assert_eq!(ws["closed_by"], "upstream");
    assert!(line["bytes_in"].as_u64().unwrap() > 0 && line["bytes_out"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_secret_in_an_agent_message_closes_the_socket_with_1008_and_never_reaches_the_upstream() {
    let proxy = Proxy::spawn(&route("")).await;
    let result = run(&proxy, "leak", &[]).await;
    assert_eq!(result["closed"], true, "{result}");
    assert_eq!(result["close_code"], 1008, "{result}");
    assert_eq!(result["upstream"][0]["secret_in_message"], false, "{result}");
    assert_eq!(result["upstream"][0]["messages"], 0, "{result}");
    assert_eq!(proxy.metric("keyward_secret_in_request_total"), 1.0);
}

/// Memory stays bounded: a message over `limits.max_websocket_message` closes the socket with 1009 and is
/// not relayed.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_size_limit_closes_the_socket_with_1009() {
    let proxy = Proxy::spawn(&format!("limits: {{ max_websocket_message: 65536 }}\n{}", route(""))).await;
    let result = run(&proxy, "big", &["--size", "200000"]).await;
    assert_eq!(result["closed"], true, "{result}");
    assert_eq!(result["close_code"], 1009, "{result}");
    assert_eq!(result["upstream"][0]["messages"], 0, "{result}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_placeholder_handshake_toward_an_unbound_host_is_refused_before_any_upgrade() {
    let proxy = Proxy::spawn(&route("")).await;
    let result = run(&proxy, "refused", &[]).await;
    assert_eq!(result["status"], 403, "{result}");
    assert_eq!(result["error"], "placeholder_not_bound");
    assert_eq!(result["upstream_connections"], 0, "nothing reached the upstream");
}

/// A route's `timeouts.idle` bounds silence on a socket: pings count as traffic, so a pinged socket
/// outlives it, and a silent one is closed with 1001.
#[tokio::test(flavor = "multi_thread")]
async fn the_routes_idle_timeout_closes_a_silent_socket_and_spares_a_pinged_one() {
    let proxy = Proxy::spawn(&route("    timeouts: { idle: 1s }\n")).await;
    let (pinged, silent) = tokio::join!(
        run(&proxy, "idle", &["--quiet", "2.5", "--ping-every", "0.3"]),
        run(&proxy, "idle", &["--quiet", "2.5"]),
    );
    assert_eq!(pinged["closed"], false, "{pinged}");
    assert_eq!(pinged["answer"], "echo:after-quiet");
    assert_eq!(silent["closed"], true, "{silent}");
    assert_eq!(silent["close_code"], 1001, "{silent}");
}

/// Without `timeouts.idle`, a socket may stay quiet longer than `limits.idle_connection_timeout` (which is
/// about connections between requests, not about an upgraded one).
#[tokio::test(flavor = "multi_thread")]
async fn without_an_idle_timeout_a_quiet_socket_stays_open() {
    let proxy = Proxy::spawn(&format!("limits: {{ idle_connection_timeout: 1s }}\n{}", route(""))).await;
    let result = run(&proxy, "idle", &["--quiet", "2"]).await;
    assert_eq!(result["closed"], false, "{result}");
    assert_eq!(result["answer"], "echo:after-quiet");
}

/// `ws_check.py serve`: the upstream alone, for clients other than the script's own.
struct Upstream {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    port: u16,
}

impl Upstream {
    async fn serve() -> Self {
        let mut child = tokio::process::Command::new("python3")
            .arg(script())
            .arg("serve")
            .arg("--cert")
            .arg(&pki().leaf_cert_path)
            .arg("--key")
            .arg(&pki().leaf_key_path)
            .env("WS_REAL_SECRET", secret("openai_key"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready: serde_json::Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        let port = ready["port"].as_u64().unwrap() as u16;
        Self { child, lines, port }
    }

    /// Stops the upstream and returns what it recorded of the (one) connection it had.
    async fn connection_record(&mut self) -> serde_json::Value {
        self.child.stdin.take().unwrap().shutdown().await.unwrap();
        serde_json::from_str(&self.lines.next_line().await.unwrap().unwrap()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_ws_through_https_proxy_agent() {
    let node_modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node-ws/node_modules");
    assert!(
        node_modules.join("ws").exists(),
        "npm install --prefix target/node-ws ws@8.23.0 https-proxy-agent@7.0.6 (scripts/test does)"
    );
    let proxy = Proxy::spawn(&route("")).await;
    let mut server = Upstream::serve().await;
    let url = format!("wss://api.keyward.test:{}/socket", server.port);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ws_client.cjs");
    let out = tokio::process::Command::new("node")
        .arg(client)
        .arg(&url)
        .env("NODE_PATH", &node_modules)
        .env("HTTPS_PROXY", proxy.url())
        .env("NODE_EXTRA_CA_CERTS", proxy.ca_cert())
        .env("PLACEHOLDER", "kw-placeholder-ws")
        .output()
        .await
        .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("ws_client.cjs failed: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        result["echoes"],
        serde_json::json!(["echo:a", "echo:b", "echo:c"]),
        "{result}"
    );
    assert_eq!(result["secretEchoHasPlaceholder"], true, "{result}");
    let seen = server.connection_record().await;
    assert_eq!(seen["authorization_real"], true, "{seen}");
    assert_eq!(seen["messages"], 4);
}

/// 1,000 open sockets through one proxy: their cost is measured and bounded (README quotes the figure).
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_open_websockets_cost_bounded_memory() {
    let proxy = Proxy::spawn(&format!("limits: {{ max_connections: 4096 }}\n{}", route(""))).await;
    let before = proxy.rss_kib();
    let mut many = check(&proxy, "many", &["--count", "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(many.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("1,000 sockets opened within 120 s")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));
    let open = proxy.rss_kib();
    let per_socket = (open.saturating_sub(before)) as f64 / 1000.0;
    println!("1,000 open WebSockets: RSS {before} KiB -> {open} KiB ({per_socket:.1} KiB per socket)");
    many.stdin.take().unwrap().shutdown().await.unwrap();
    let result: serde_json::Value =
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap_or_default()).unwrap();
    assert_eq!(result["open"], 1000, "{result}");
    assert_eq!(result["answered"], 1000, "{result}");
    assert!(
        per_socket < 100.0,
        "each open socket (agent TLS, upstream TLS, two codecs) costs under 100 KiB: {per_socket:.1} KiB"
    );
}

/// RFC 8441: an HTTP/2 agent opens the socket with an extended CONNECT (`:protocol: websocket`) inside the
/// intercepted tunnel; Keyward answers 200 and talks HTTP/1.1 upgrade to the upstream. The open socket
/// counts as a request in flight: its HTTP/2 connection is not closed as idle while the socket is quiet.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_over_http2_extended_connect() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let proxy = Proxy::spawn(&format!("limits: {{ idle_connection_timeout: 1s }}\n{}", route(""))).await;
    let mut server = Upstream::serve().await;
    let port = server.port;
    let authority = format!("api.keyward.test:{port}");
    let tls = crate::hardening::tls_tunnel(&proxy, "api.keyward.test", port, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::connect(format!("https://{authority}/socket"))
        .header("authorization", "Bearer kw-placeholder-ws")
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    sender.ready().await.unwrap();
    let mut response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.headers());
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    // Quiet for longer than the connection idle timeout (the scenario, not a wait for readiness).
    tokio::time::sleep(Duration::from_millis(1600)).await;
    ws.send(Message::text("over-h2")).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "echo:over-h2");
    ws.send(Message::text("say-secret")).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "echo:kw-placeholder-ws", "scrubbed");
    ws.close(None).await.unwrap();
    let seen = server.connection_record().await;
    assert_eq!(seen["authorization_real"], true, "{seen}");
    assert_eq!(seen["messages"], 2);
}
