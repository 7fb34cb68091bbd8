//! Regression tests for the second security round (issue 14), each driven from outside like the red team did:
//! the real binary, curl, raw sockets and a TLS client, against a hostile or misbehaving upstream. Every test
//! asserts something the proxy got wrong before the fix.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::oauth2::client_credentials_routes;
use crate::routes;
use crate::support::clients::{curl, Reply};
use crate::support::echo::Echo;
use crate::support::proxy::{binary, config_yaml, workdir, Proxy};
use crate::support::{eventually, masked, secret, MARKER};

/// Resident memory is read in KiB.
const MIB_IN_KIB: u64 = 1024;
/// Most body bytes a cut-off bomb may deliver to the agent (it holds 2 GiB).
const BOMB_DELIVERED_MAX: u64 = 64 << 20;

/// Runs futures concurrently on the current task and returns their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// [`curl`] with owned arguments, for building many requests at once.
async fn curl_args(proxy: &Proxy, args: Vec<String>) -> Reply {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(proxy, &args).await
}

/// The `error` code of a JSON refusal ("-" when the body is not one).
fn code(reply: &Reply) -> String {
    serde_json::from_str::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into())
}

/// (status, error code): what assertion messages print, never a body that could hold a secret.
fn outcome(reply: &Reply) -> (u16, String) {
    (reply.status, code(reply))
}

/// A raw answer read off a socket: status (0 when the peer closed without one), error code from
/// `x-keyward-error`, and the head and body as text.
struct RawReply {
    status: u16,
    code: String,
    text: String,
}

/// Reads one HTTP/1.1 response (head, then a `Content-Length` body) within `limit`.
async fn read_reply<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> RawReply {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(limit, read).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let code = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-keyward-error")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    RawReply { status, code, text }
}

/// `CONNECT target` on a fresh connection to the proxy: its answer and the connection (a tunnel on 200).
async fn connect_raw(proxy: &Proxy, target: &str) -> (RawReply, tokio::net::TcpStream) {
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // A refused connection may be closed before the request is written: the reply then reads status 0.
    let _ = stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes())
        .await;
    let reply = read_reply(&mut stream, Duration::from_secs(5)).await;
    (reply, stream)
}

/// A TLS client that trusts only the proxy's CA, offering `alpn`.
fn tls_client(proxy: &Proxy, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(proxy.ca_cert()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An intercepted tunnel to `host:port` with TLS done (the proxy's leaf verified), offering `alpn`.
pub(crate) async fn tls_tunnel(
    proxy: &Proxy,
    host: &str,
    port: u16,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let (reply, tcp) = connect_raw(proxy, &format!("{host}:{port}")).await;
    assert_eq!(reply.status, 200, "CONNECT: {}", reply.text);
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let tls = tls_client(proxy, alpn)
        .connect(name, tcp)
        .await
        .expect("TLS with the proxy's leaf");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
    tls
}

/// curl through the proxy writing the body to /dev/null: (status, bytes received, curl's exit code).
async fn curl_discard(proxy: &Proxy, url: &str) -> (u16, u64, i32) {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
        ])
        .args(["-x", &proxy.url(), "--cacert"])
        .arg(proxy.ca_cert())
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split(' ');
    let status = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let size = fields.next().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    (status, size, out.status.code().unwrap_or(-1))
}

/// Samples the proxy's resident memory every 5 ms on a thread until dropped; `peak()` is the highest seen.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    fn watch(pid: u32) -> Self {
        let (peak, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = crate::support::rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- Item 7: decompression bomb ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_bomb_is_inflated_only_as_read_and_cut_off_with_flat_memory() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    crate::support::echo::bomb_bytes(); // built before the baseline, outside the proxy anyway
    let warm = curl(&proxy, &[&format!("https://localhost:{}/warm", echo.port())]).await;
    assert_eq!(warm.status, 200, "{warm:?}");
    let bomb = format!("https://localhost:{}/gzip-bomb", echo.port());
    let baseline = proxy.rss_kib();
    let rss = RssPeak::watch(proxy.pid());

    let (status, size, exit) = curl_discard(&proxy, &bomb).await;
    assert!(
        size < BOMB_DELIVERED_MAX,
        "one bomb: {size} bytes reached the agent (status {status}, curl exit {exit})"
    );
    assert_ne!(exit, 0, "the bomb is cut off with an error, not delivered whole");
    let why = proxy
        .wait_for_log("response body cut off", Duration::from_secs(5))
        .await;
    assert!(why.contains("256:1"), "the log says why: {why}");
    let one = rss.peak().saturating_sub(baseline);
    assert!(
        one <= 16 * MIB_IN_KIB,
        "one bomb grew the proxy by {} MiB",
        one / MIB_IN_KIB
    );

    let eight = join_all((0..8).map(|_| curl_discard(&proxy, &bomb)).collect()).await;
    for (status, size, exit) in &eight {
        assert!(
            *size < BOMB_DELIVERED_MAX && *exit != 0,
            "eight bombs: status {status}, {size} bytes, curl exit {exit}"
        );
    }
    let grown = rss.peak().saturating_sub(baseline);
    assert!(
        grown <= 16 * MIB_IN_KIB,
        "eight bombs at once grew the proxy by {} MiB",
        grown / MIB_IN_KIB
    );
    // The proxy is still healthy afterwards.
    assert_eq!(
        curl(&proxy, &[&format!("https://localhost:{}/after", echo.port())])
            .await
            .status,
        200
    );
}

// ---- Item 8: max_connections caps tunnels for their whole life -----------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn connect_tunnels_hold_their_connection_slot_and_are_counted() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&format!(
        "limits: {{ max_connections: 8 }}\nupstream: {{ agent_tls_handshake_timeout: 60s }}\nunmatched: tunnel\nunmatched_allow_private: true\n{}",
        routes()
    ))
    .await;
    // Even attempts are intercepted (a route names localhost), odd ones spliced (no route names 127.0.0.1).
    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..50 {
        let host = if i % 2 == 0 { "localhost" } else { "127.0.0.1" };
        let (reply, stream) = connect_raw(&proxy, &format!("{host}:{}", echo.port())).await;
        match reply.status {
            200 => open.push(stream),
            0 => refused += 1,
            other => panic!("CONNECT {i} answered {other}: {}", reply.text),
        }
    }
    assert_eq!(
        (open.len(), refused),
        (8, 42),
        "only max_connections tunnels are admitted, the rest closed"
    );
    assert_eq!(
        proxy.metric("keyward_open_connections"),
        8.0,
        "the gauge counts open tunnels"
    );
    drop(open);
    eventually("every tunnel slot released", Duration::from_secs(10), || {
        proxy.metric("keyward_open_connections") == 0.0
    })
    .await;
    let (again, _tunnel) = connect_raw(&proxy, &format!("localhost:{}", echo.port())).await;
    assert_eq!(again.status, 200, "slots are free again: {}", again.text);
}

// ---- Item 9: HTTP/2 inside tunnels is cut when stuck in a header block -------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn h2_stuck_in_a_header_block_is_closed_within_the_header_timeout() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&format!("limits: {{ header_read_timeout: 1s }}\n{}", routes())).await;
    let stuck = |_| async {
        let mut tls = tls_tunnel(&proxy, "localhost", echo.port(), b"h2").await;
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // An empty SETTINGS, then HEADERS on stream 1 with END_STREAM but not END_HEADERS: a CONTINUATION
        // must follow, and never does.
        out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let block = [0x82, 0x87, 0x84]; // :method GET, :scheme https, :path /
        out.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x1, 0, 0, 0, 1]);
        out.extend_from_slice(&block);
        tls.write_all(&out).await.unwrap();
        tls.flush().await.unwrap();
        let started = Instant::now();
        // Read (and never answer) what the server sends, its PINGs included, until it closes.
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
        closed.ok().map(|_| started.elapsed())
    };
    let closed = join_all((0..10).map(stuck).collect()).await;
    for (i, after) in closed.iter().enumerate() {
        match after {
            Some(after) => assert!(
                *after < Duration::from_secs(5),
                "connection {i} closed only after {after:?}"
            ),
            None => panic!("connection {i} still open after 10 s"),
        }
    }
}

/// A well-behaved HTTP/2 client answers the keep-alive pings; its pooled connection must still not hold a place
/// under `max_connections` for good once it has nothing in flight.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_h2_connection_that_answers_pings_is_closed_after_the_idle_timeout() {
    use http_body_util::BodyExt;
    let echo = Echo::https().await;
    let limits = "limits: { header_read_timeout: 1s, idle_connection_timeout: 2s }\n";
    let proxy = Proxy::spawn(&format!("{limits}{}", routes())).await;
    let tls = tls_tunnel(&proxy, "localhost", echo.port(), b"h2").await;
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .handshake(io)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("https://localhost:{}/v1/a", echo.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let idle_from = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    let after = idle_from.elapsed();
    assert!(closed.is_ok(), "the idle connection was still open after 10 s");
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(5),
        "closed {after:?} after its last request (idle timeout 2 s, pings every 1 s)"
    );
}

// ---- Item 10: an admin-listener flood does not starve the probes --------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_promptly_through_a_flood_of_half_open_admin_connections() {
    let proxy = Proxy::spawn(routes()).await;
    let admin = proxy.admin;
    tokio::task::block_in_place(|| {
        let half_open = |n: usize| -> Vec<TcpStream> {
            (0..n)
                .filter_map(|_| {
                    let mut s = TcpStream::connect(admin).ok()?;
                    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n");
                    Some(s)
                })
                .collect()
        };
        let mut flood = half_open(200);
        for round in 0..5 {
            flood.extend(half_open(40));
            let started = Instant::now();
            let mut probe = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).expect("probe connects");
            probe.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            probe
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            let read = probe.read_to_string(&mut answer);
            assert!(
                read.is_ok() && answer.starts_with("HTTP/1.1 200"),
                "probe {round} with {} half-open connections: {read:?} {answer:?}",
                flood.len()
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "probe {round} took {:?}",
                started.elapsed()
            );
        }
        // The half-open connections themselves do not live on: each is evicted or times out (2 s).
        let last = flood.last_mut().unwrap();
        last.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 512];
        let _ = last.read(&mut buf);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a half-open admin connection lived {:?}",
            started.elapsed()
        );
    });
}

// ---- Item 11: port-less hosts mean the default port; own listeners are never an upstream -------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_route_without_a_port_does_not_reach_other_ports() {
    let echo = Echo::http().await;
    let proxy = Proxy::spawn(
        r#"
routes:
  - name: loopback
    hosts: ["127.0.0.1"]
    allow_private: true
    allow_plain_http: true
    credentials:
      - placeholder: kw-placeholder-loop
        secret: openai_key
        header: Authorization
        format: "Bearer {secret}"
"#,
    )
    .await;
    let url = format!("http://127.0.0.1:{}/collect", echo.port());
    let with = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-loop", &url]).await;
    assert_eq!(
        outcome(&with),
        (403, "placeholder_not_bound".into()),
        "the agent's listener on another port is not the route"
    );
    let without = curl(&proxy, &[&url]).await;
    assert_eq!(outcome(&without), (403, "no_route".into()));
    assert!(echo.requests().is_empty(), "{:?}", echo.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn keywards_own_listeners_are_refused_as_upstreams_whatever_the_routes_say() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(
        r#"
routes:
  - name: anything-local
    hosts: ["127.0.0.1:*", "localhost:*"]
    allow_private: true
    allow_plain_http: true
"#,
    )
    .await;
    let (admin, own) = (proxy.admin.port(), proxy.addr.port());
    let cases = [
        ("GET", format!("http://127.0.0.1:{admin}/healthz")),
        ("GET", format!("http://127.0.0.1:{admin}/metrics")),
        ("GET", format!("http://localhost:{admin}/readyz")),
        ("POST", format!("http://127.0.0.1:{admin}/block")),
        ("POST", format!("http://127.0.0.1:{admin}/unblock")),
        ("GET", format!("https://127.0.0.1:{admin}/healthz")),
        ("GET", format!("http://127.0.0.1:{own}/")),
        ("GET", format!("https://localhost:{own}/")),
    ];
    let replies = join_all(
        cases
            .iter()
            .map(|(method, url)| curl_args(&proxy, vec!["-X".into(), method.to_string(), url.clone()]))
            .collect(),
    )
    .await;
    for ((method, url), reply) in cases.iter().zip(&replies) {
        assert_eq!(outcome(reply), (403, "own_listener".into()), "{method} {url}");
    }
    let (_, blocked) = proxy.admin_get("/blocked");
    let blocked: serde_json::Value = serde_json::from_str(&blocked).unwrap();
    assert_eq!(
        blocked["blocked"]["all"], false,
        "the kill switch was not driven through the proxy"
    );
    // Everything else still flows.
    let ok = curl(&proxy, &[&format!("https://localhost:{}/fine", echo.port())]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
}

// ---- Item 12: mutating admin endpoints always need a token -----------------------------------------------------

/// A raw admin request with an optional bearer token: its status.
fn admin_raw(proxy: &Proxy, method: &str, path: &str, token: Option<&str>) -> u16 {
    let mut s = TcpStream::connect_timeout(&proxy.admin, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_configured_admin_token_one_is_generated_and_required_for_mutations() {
    use std::os::unix::fs::PermissionsExt;
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let file = proxy.path("ca/admin.token");
    let mode = std::fs::metadata(&file)
        .expect("ca/admin.token written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    let token = proxy.admin_token().unwrap();
    assert!(token.trim().len() >= 32, "a long random token");
    let logged = proxy
        .wait_for_log("generated one for the admin API", Duration::from_secs(5))
        .await;
    assert!(
        logged.contains(&file.display().to_string()),
        "the log names the file: {logged}"
    );
    assert!(!proxy.logs().contains(token.trim()), "the token itself is never logged");

    let refused = tokio::task::block_in_place(|| {
        let mut refused = Vec::new();
        for (method, path) in [
            ("POST", "/block"),
            ("POST", "/unblock"),
            ("POST", "/reload"),
            ("POST", "/agents/test-agent/block"),
            ("GET", "/blocked"),
            ("GET", "/config"),
        ] {
            for token in [
                None,
                Some("0000000000000000000000000000000000000000000000000000000000000000"),
            ] {
                refused.push((method, path, token.is_some(), admin_raw(&proxy, method, path, token)));
            }
        }
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(admin_raw(&proxy, "GET", path, None), 200, "{path} stays open");
        }
        refused
    });
    for (method, path, wrong_token, status) in refused {
        assert_eq!(status, 401, "{method} {path} (wrong token: {wrong_token})");
    }
    let url = format!("https://localhost:{}/v1", echo.port());
    assert_eq!(curl(&proxy, &[&url]).await.status, 200, "nothing was blocked");

    // `keyward admin` finds the generated token next to the CA. The file names the real admin port (the
    // proxy's own configuration says port 0).
    let yaml = std::fs::read_to_string(proxy.path("keyward.yaml"))
        .unwrap()
        .replace("admin: 127.0.0.1:0", &format!("admin: {}", proxy.admin));
    let cli_config = proxy.path("keyward-cli.yaml");
    std::fs::write(&cli_config, yaml).unwrap();
    let admin_cli = |command: &'static str| {
        let cli_config = cli_config.clone();
        async move {
            let out = tokio::process::Command::new(binary())
                .arg("admin")
                .arg("--config")
                .arg(&cli_config)
                .arg(command)
                .kill_on_drop(true)
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "keyward admin {command}: {stdout} {stderr}");
            stdout
        }
    };
    admin_cli("block").await;
    let blocked: serde_json::Value = serde_json::from_str(admin_cli("blocked").await.trim()).unwrap();
    assert_eq!(blocked["blocked"]["all"], true, "{blocked}");
    let reply = curl(&proxy, &[&url]).await;
    assert_eq!(outcome(&reply), (403, "agent_blocked".into()));
    // The blocked agent cannot lift its own block.
    let lifted = tokio::task::block_in_place(|| admin_raw(&proxy, "POST", "/unblock", None));
    assert_eq!(lifted, 401);
    let reply = curl(&proxy, &[&url]).await;
    assert_eq!(outcome(&reply), (403, "agent_blocked".into()), "still blocked");
    admin_cli("unblock").await;
    assert_eq!(curl(&proxy, &[&url]).await.status, 200, "unblocked");
    admin_cli("reload").await;
}

// ---- Item 13: placeholders only where their credential is configured -----------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_placeholder_outside_its_configured_header_or_query_key_is_refused() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let base = format!("https://localhost:{}", echo.port());
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "X-Title header",
            vec![
                "-H".into(),
                "X-Title: kw-placeholder-openai".into(),
                format!("{base}/v1/chat"),
            ],
        ),
        (
            "User-Agent",
            vec!["-A".into(), "kw-placeholder-openai".into(), format!("{base}/v1/chat")],
        ),
        (
            "Cookie",
            vec![
                "-H".into(),
                "Cookie: theme=dark; session=kw-placeholder-openai".into(),
                format!("{base}/v1/chat"),
            ],
        ),
        (
            "?text=",
            vec![format!(
                "{base}/api/chat.postMessage?channel=general&text=kw-placeholder-openai"
            )],
        ),
        (
            "path segment",
            vec![format!("{base}/v1/kw-placeholder-openai/messages")],
        ),
        (
            "query credential in Authorization",
            vec![
                "-H".into(),
                "Authorization: Bearer kw-placeholder-maps".into(),
                format!("{base}/maps"),
            ],
        ),
        (
            "query credential under another key",
            vec![format!("{base}/maps?q=kw-placeholder-maps")],
        ),
    ];
    let replies = join_all(cases.iter().map(|(_, args)| curl_args(&proxy, args.clone())).collect()).await;
    for ((name, _), reply) in cases.iter().zip(&replies) {
        assert_eq!(outcome(reply), (403, "placeholder_misplaced".into()), "{name}");
    }
    assert!(echo.requests().is_empty(), "nothing forwarded: {:?}", echo.requests());
    assert_eq!(
        proxy.metric_sum("keyward_exfiltration_attempts_total", &[]),
        cases.len() as f64,
        "each one counted as an exfiltration attempt"
    );
    proxy
        .wait_for_log(
            "placeholder outside its credential's configured",
            Duration::from_secs(5),
        )
        .await;
    // In their configured places, the same placeholders work.
    let header = curl(
        &proxy,
        &[
            "-H",
            "Authorization: Bearer kw-placeholder-openai",
            &format!("{base}/v1/chat"),
        ],
    )
    .await;
    let query = curl(&proxy, &[&format!("{base}/maps?key=kw-placeholder-maps")]).await;
    assert_eq!((header.status, query.status), (200, 200), "{header:?} {query:?}");
}

// ---- Item 14: dot segments in every spelling -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn dot_segment_spellings_cannot_escape_a_path_limited_route() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(
        r#"
resolve:
  other.keyward.test: [127.0.0.1]
routes:
  - name: safe
    hosts: ["localhost:*"]
    paths: ["/v1/safe"]
    allow_private: true
    credentials:
      - placeholder: kw-placeholder-openai
        secret: openai_key
        header: Authorization
        format: "Bearer {secret}"
  - name: open
    hosts: ["other.keyward.test:*"]
    allow_private: true
    credentials:
      - placeholder: kw-placeholder-github
        secret: github_token
        header: Authorization
        format: "token {secret}"
"#,
    )
    .await;
    let port = echo.port();
    let safe = |path: &str| {
        (
            "Authorization: Bearer kw-placeholder-openai",
            format!("https://localhost:{port}/v1/safe/{path}"),
        )
    };
    let open = |path: &str| {
        (
            "Authorization: Bearer kw-placeholder-github",
            format!("https://other.keyward.test:{port}/v1/safe/{path}"),
        )
    };
    let everywhere = [
        "..;/admin",
        ".;/..;/admin",
        "%2e%2e/admin",
        "%2E%2e;x=1/admin",
        "../admin",
    ];
    let path_routes = ["..%2fadmin", "%2e%2e%2fadmin", "..%5cadmin", "%252e%252e/admin"];
    let mut cases: Vec<(&str, String)> = Vec::new();
    for path in everywhere {
        cases.push(safe(path));
        cases.push(open(path));
    }
    for path in path_routes {
        cases.push(safe(path));
    }
    let replies = join_all(
        cases
            .iter()
            .map(|(auth, url)| {
                curl_args(
                    &proxy,
                    vec!["--path-as-is".into(), "-H".into(), auth.to_string(), url.clone()],
                )
            })
            .collect(),
    )
    .await;
    for ((_, url), reply) in cases.iter().zip(&replies) {
        assert_eq!(outcome(reply), (400, "bad_request".into()), "{url}");
    }
    assert!(echo.requests().is_empty(), "nothing forwarded: {:?}", echo.requests());
    let (auth, url) = safe("ok");
    let ok = curl(&proxy, &["--path-as-is", "-H", auth, &url]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(echo.requests().len(), 1);
}

// ---- Item 16: a real secret in the URL path -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_real_secret_in_the_path_is_refused_and_redacted_from_audit_and_span() {
    let collector = crate::support::otlp::Collector::grpc().await;
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&format!(
        "{}telemetry:\n  traces:\n    endpoint: {}\n    protocol: grpc\n    flush_interval: 100ms\n",
        routes(),
        collector.url()
    ))
    .await;
    let raw = secret("openai_key");
    let encoded: String = secret("maps_key").replace(' ', "%20").replace('&', "%26");
    for path in [format!("/v1/files/{raw}/content"), format!("/v1/{encoded}")] {
        let url = format!("https://localhost:{}{path}", echo.port());
        let reply = curl(&proxy, &["--path-as-is", &url]).await;
        assert_eq!(outcome(&reply), (403, "secret_in_request".into()));
        assert!(!reply.body.contains(MARKER), "the refusal does not repeat the secret");
    }
    assert!(echo.requests().is_empty(), "nothing forwarded: {:?}", echo.requests());
    eventually("two audit lines", Duration::from_secs(5), || {
        proxy.audit_lines().len() == 2
    })
    .await;
    for line in proxy.audit_lines() {
        let text = line.to_string();
        assert!(!text.contains(MARKER), "the audit line carries no secret");
        assert_eq!(
            line["path"],
            "[redacted: the path carried a real secret]",
            "{}",
            masked(&text)
        );
        assert_eq!(line["status"], 403);
    }
    let spans = collector
        .wait_for("the two requests' server spans", |spans| {
            spans.iter().filter(|s| s.kind == crate::support::otlp::SERVER).count() == 2
        })
        .await;
    for span in &spans {
        assert!(
            span.attributes.values().all(|v| !v.contains(MARKER)),
            "span {} carries no secret",
            span.name
        );
        if span.kind == crate::support::otlp::SERVER {
            assert_eq!(
                span.attr("url.path"),
                Some("[redacted: the path carried a real secret]")
            );
        }
    }
}

// ---- Item 17: IPv6 forms that embed a private IPv4 ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_forms_embedding_loopback_are_private_destinations_in_tunnel_mode() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn("unmatched: tunnel\n").await;
    let port = echo.port();
    for host in [
        "[::127.0.0.1]",
        "[::ffff:0:127.0.0.1]",
        "[::ffff:127.0.0.1]",
        "[2002:7f00:1::]",
    ] {
        let (reply, _) = connect_raw(&proxy, &format!("{host}:{port}")).await;
        assert_eq!(
            (reply.status, reply.code.as_str()),
            (403, "private_destination"),
            "CONNECT {host}:{port}: {}",
            reply.text
        );
    }
    assert!(echo.requests().is_empty());
}

// ---- Item 18: duplicate JSON keys under a body-reading policy ----------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_json_body_with_a_repeated_key_is_refused_when_the_policy_reads_bodies() {
    let echo = Echo::https().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/sales");
    let proxy = Proxy::spawn(&format!(
        "{}policy:\n  dir: \"{}\"\n  poll_interval: 100ms\n",
        routes(),
        dir.display()
    ))
    .await;
    let url = format!(
        "https://localhost:{}/services/data/v60.0/sobjects/Opportunity",
        echo.port()
    );
    let post = |body: &'static str| {
        let (proxy, url) = (&proxy, url.clone());
        async move {
            curl(
                proxy,
                &[
                    "-H",
                    "Authorization: Bearer kw-placeholder-openai",
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    body,
                    &url,
                ],
            )
            .await
        }
    };
    for body in [
        r#"{"Name":"Acme","Amount":250000,"Amount":1,"Industry":"Technology"}"#,
        r#"{"Name":"Acme","Amount":1,"Industry":"Technology","Industry":"Retail"}"#,
        r#"{"Name":"Acme","Amount":1,"Industry":"Technology","Meta":{"a":1,"a":2}}"#,
    ] {
        assert_eq!(outcome(&post(body).await), (400, "ambiguous_json".into()), "{body}");
    }
    assert!(echo.requests().is_empty(), "nothing forwarded: {:?}", echo.requests());
    let ok = post(r#"{"Name":"Acme","Amount":1,"Industry":"Technology"}"#).await;
    assert_eq!(ok.status, 200, "{ok:?}");
}

// ---- Item 19: CONNECT inside an intercepted tunnel ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn connect_inside_an_intercepted_tunnel_is_refused() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let port = echo.port();
    let mut tls = tls_tunnel(&proxy, "localhost", port, b"http/1.1").await;
    tls.write_all(
        format!(
            "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\nAuthorization: Bearer kw-placeholder-openai\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let reply = read_reply(&mut tls, Duration::from_secs(5)).await;
    assert_eq!(
        (reply.status, reply.code.as_str()),
        (405, "nested_connect"),
        "{}",
        masked(&reply.text)
    );
    assert!(echo.requests().is_empty(), "nothing forwarded: {:?}", echo.requests());
}

// ---- Items 6, 21, 22, 23: OAuth2 token endpoints that misbehave ----------------------------------------------

async fn crm_call(proxy: &Proxy, echo: &Echo) -> Reply {
    let url = format!("https://localhost:{}/v1/accounts", echo.port());
    curl(proxy, &["-H", "Authorization: Bearer kw-placeholder-crm", &url]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_expires_in_neither_panics_nor_refetches() {
    // The integer overflowed the clock (a panic per request, no caching); the float form is the same value.
    let one = |expires_in: serde_json::Value| async move {
        let echo = Echo::https().await;
        echo.token_expires_in(expires_in.clone());
        let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
        let first = join_all((0..5).map(|_| crm_call(&proxy, &echo)).collect()).await;
        for reply in first.iter() {
            assert_eq!(reply.status, 200, "expires_in {expires_in}: {reply:?}");
        }
        for _ in 0..3 {
            assert_eq!(crm_call(&proxy, &echo).await.status, 200, "expires_in {expires_in}");
        }
        assert_eq!(
            echo.token_requests().len(),
            1,
            "expires_in {expires_in}: one token for every request"
        );
        assert!(!proxy.logs().contains("panicked"), "expires_in {expires_in}: no panic");
    };
    join_all(vec![one(json!(10_000_000_000_000_000_000u64)), one(json!(1e19))]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expires_in_zero_means_at_most_one_token_request_per_second() {
    let echo = Echo::https().await;
    echo.token_expires_in(json!(0));
    let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
    let started = Instant::now();
    for _ in 0..20 {
        let reply = crm_call(&proxy, &echo).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let elapsed = started.elapsed();
    let tokens = echo.token_requests().len() as u64;
    assert!(
        tokens <= elapsed.as_secs() + 2,
        "{tokens} token requests for 20 requests in {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_negative_expires_in_is_an_expired_token() {
    let echo = Echo::https().await;
    echo.token_expires_in(json!(-5));
    let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
    let reply = crm_call(&proxy, &echo).await;
    assert_eq!(outcome(&reply), (503, "secret_unavailable".into()));
    assert!(
        echo.requests().iter().all(|r| r.path == "/oauth/token"),
        "the expired token was not used"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_endpoint_that_never_answers_fails_requests_in_bounded_time() {
    let echo = Echo::https().await;
    echo.token_endpoint_stalls(true);
    let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
    let started = Instant::now();
    let replies = join_all((0..3).map(|_| crm_call(&proxy, &echo)).collect()).await;
    for reply in &replies {
        assert_eq!(
            outcome(reply),
            (503, "secret_unavailable".into()),
            "after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(13),
        "requests waited {:?} for a token endpoint that never answers",
        started.elapsed()
    );
    assert_eq!(echo.token_requests().len(), 1, "the requests shared one token request");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_due_but_valid_token_keeps_serving_while_its_refresh_hangs() {
    let echo = Echo::https().await;
    // Tokens live 32 s and are due for refresh 30 s before expiry: due after 2 s, valid for 30 s more.
    echo.token_lifetime(32);
    let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
    assert_eq!(crm_call(&proxy, &echo).await.status, 200);
    echo.token_endpoint_stalls(true);
    tokio::time::sleep(Duration::from_millis(2200)).await; // until the token is due (no signal to wait on)
    let started = Instant::now();
    let reply = crm_call(&proxy, &echo).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "served in {:?} while the refresh hangs",
        started.elapsed()
    );
    let calls: Vec<_> = echo
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/accounts")
        .collect();
    assert_eq!(calls.len(), 2);
    let sent = calls[1].header("authorization").map(str::to_string);
    assert!(
        sent.as_deref() == Some("Bearer at-REALSECRET-1"),
        "the valid token was used"
    );
    eventually("the background refresh", Duration::from_secs(5), || {
        echo.token_requests().len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_errors_echoing_credentials_or_newlines_reach_neither_agent_nor_log() {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        secret("oauth_client_id"),
        secret("oauth_client_secret")
    ));
    let forged = "2026-01-01T00:00:00.000000Z  INFO keyward::admin: kill switch lifted";
    let errors = [
        json!({"error": basic}),
        json!({"error": format!("invalid_client\n{forged}")}),
        json!({"error": "invalid_client", "error_description": format!("bad {basic}\n{forged}")}),
    ];
    let run = |error: serde_json::Value| {
        let basic = basic.clone();
        async move {
            let echo = Echo::https().await;
            echo.token_endpoint_answers(Some((401, error)));
            let proxy =
                Proxy::spawn_with_env(&client_credentials_routes(&echo), &[("KEYWARD_LOG_FORMAT", "human")]).await;
            let reply = crm_call(&proxy, &echo).await;
            assert_eq!(outcome(&reply), (503, "secret_unavailable".into()));
            proxy
                .wait_for_log("OAuth2 token refresh failed", Duration::from_secs(5))
                .await;
            let logs = proxy.logs();
            for (place, text) in [("503 body", reply.body.as_str()), ("log", logs.as_str())] {
                assert!(!text.contains(&basic), "the Basic credentials reached the {place}");
                assert!(!text.contains(MARKER), "the client secret reached the {place}");
                assert!(
                    !text.contains("kill switch lifted"),
                    "the endpoint's text reached the {place}: {}",
                    masked(text)
                );
            }
            assert!(
                logs.lines().all(|l| !l.starts_with("2026-01-01T00:00:00")),
                "a forged log line"
            );
        }
    };
    join_all(errors.into_iter().map(run).collect()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_access_token_is_refused_without_freezing_the_proxy() {
    let echo = Echo::https().await;
    // 60 KB: within the token response limit (64 KiB), far over the 16 KiB secret limit.
    let token = format!("at-{MARKER}-{}", "x".repeat(60_000));
    echo.token_endpoint_answers(Some((
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
    )));
    let proxy = Proxy::spawn(&client_credentials_routes(&echo)).await;
    let admin = proxy.admin;
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = crate::support::proxy::admin_get_opt(admin, "/healthz").is_some_and(|(s, _)| s == 200);
                slowest = slowest.max(if ok { started.elapsed() } else { Duration::MAX });
                std::thread::sleep(Duration::from_millis(50));
            }
            slowest
        })
    };
    let started = Instant::now();
    let replies = join_all((0..3).map(|_| crm_call(&proxy, &echo)).collect()).await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let slowest = tokio::task::spawn_blocking(move || probe.join().unwrap())
        .await
        .unwrap();
    for reply in &replies {
        assert_eq!(outcome(reply), (503, "secret_unavailable".into()));
    }
    assert!(elapsed < Duration::from_secs(5), "the requests took {elapsed:?}");
    assert!(slowest < Duration::from_secs(1), "/healthz took {slowest:?} at worst");
}

// ---- Item 23: a secret over the size limit is refused at start -------------------------------------------------

/// `keyward <cmd> --config F`, killed after `limit`: (exited successfully, stderr); `None` when still running.
async fn keyward_cmd(cmd: &str, config: &std::path::Path, limit: Duration) -> (Option<bool>, String) {
    let child = tokio::process::Command::new(binary())
        .args([cmd, "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.unwrap();
            (
                Some(out.status.success()),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => (None, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_over_16_kib_is_refused_at_start_with_its_name() {
    let dir = workdir(&config_yaml(&format!(
        "{}  - name: big\n    hosts: [big.example]\n    credentials:\n      - placeholder: kw-placeholder-big\n        secret: huge_key\n        header: X-Api-Key\n",
        routes()
    )));
    let huge = format!("{MARKER}{}", "k".repeat(64 * 1024));
    let mut secrets = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
    secrets.push_str(&format!("huge_key: \"{huge}\"\n"));
    std::fs::write(dir.path().join("secrets.yaml"), secrets).unwrap();
    let config = dir.path().join("keyward.yaml");
    let (check, run) = tokio::join!(
        keyward_cmd("check", &config, Duration::from_secs(20)),
        keyward_cmd("run", &config, Duration::from_secs(20)),
    );
    for (cmd, (ok, stderr)) in [("check", check), ("run", run)] {
        assert_eq!(ok, Some(false), "`{cmd}` accepted a 64 KiB secret");
        assert!(
            stderr.contains("huge_key") && stderr.contains("16384"),
            "`{cmd}` names the secret and the limit: {}",
            masked(&stderr)
        );
        assert!(!stderr.contains(MARKER), "`{cmd}` does not print the value");
    }
}

// ---- Item 24: CONNECT targets are validated ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_to_a_63_kb_host_is_refused_and_memory_stays_flat() {
    let proxy = Proxy::spawn(routes()).await;
    let long = "a".repeat(63 * 1024);
    let (reply, _) = connect_raw(&proxy, &format!("{long}:443")).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    // At the limits: a 253-byte name is a valid target, a 254-byte one is not.
    let label = "b".repeat(62);
    let name_253 = format!("{label}.{label}.{label}.{label}.k");
    assert_eq!(name_253.len(), 253);
    assert_eq!(connect_raw(&proxy, &format!("{name_253}:443")).await.0.status, 200);
    assert_eq!(connect_raw(&proxy, &format!("{name_253}k:443")).await.0.status, 400);

    let baseline = proxy.rss_kib();
    let rss = RssPeak::watch(proxy.pid());
    let addr = proxy.addr;
    let request = Arc::new(format!("CONNECT {long}:443 HTTP/1.1\r\n\r\n"));
    let workers: Vec<_> = (0..10)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for _ in 0..50 {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    s.write_all(request.as_bytes()).unwrap();
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).unwrap_or(0);
                    statuses.push(String::from_utf8_lossy(&buf[..n]).get(9..12).unwrap_or("").to_string());
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<String> =
        tokio::task::spawn_blocking(move || workers.into_iter().flat_map(|w| w.join().unwrap()).collect())
            .await
            .unwrap();
    assert_eq!(statuses.len(), 500);
    assert!(statuses.iter().all(|s| s == "400"), "{:?}", &statuses[..10]);
    let grown = rss.peak().saturating_sub(baseline);
    assert!(
        grown <= 16 * MIB_IN_KIB,
        "500 long CONNECTs grew the proxy by {} MiB",
        grown / MIB_IN_KIB
    );
}

// ---- Item 25: user ids are bounded -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_user_id_over_256_bytes_is_refused() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/v1", echo.port());
    let long = format!("X-Keyward-User: {}", "u".repeat(257));
    let refused = curl(&proxy, &["-H", &long, &url]).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(echo.requests().is_empty(), "nothing forwarded");
    let fits = format!("X-Keyward-User: {}", "u".repeat(256));
    let ok = curl(&proxy, &["-H", &fits, &url]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
}

// ---- Item 26: rate limits apply before the policy ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_is_checked_before_the_policy_runs() {
    let echo = Echo::https().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/readonly");
    let proxy = Proxy::spawn(&format!(
        r#"
policy:
  dir: "{}"
routes:
  - name: limited
    hosts: ["localhost:*"]
    allow_private: true
    rate_limit: {{ per_hour: 1 }}
    credentials:
      - placeholder: kw-placeholder-openai
        secret: openai_key
        header: Authorization
        format: "Bearer {{secret}}"
"#,
        dir.display()
    ))
    .await;
    let url = format!("https://localhost:{}/v1/items", echo.port());
    // Writes, which the read-only policy denies: before the fix every one was evaluated and none limited.
    let replies = join_all(
        (0..20)
            .map(|_| {
                let args = ["-X", "POST", "-H", "Authorization: Bearer kw-placeholder-openai", &url];
                curl_args(&proxy, args.iter().map(|a| a.to_string()).collect())
            })
            .collect(),
    )
    .await;
    let mut outcomes: Vec<(u16, String)> = replies.iter().map(outcome).collect();
    outcomes.sort();
    let denied = outcomes.iter().filter(|o| **o == (403, "policy_denied".into())).count();
    let limited = outcomes.iter().filter(|o| **o == (429, "rate_limited".into())).count();
    assert_eq!((denied, limited), (1, 19), "{outcomes:?}");
    assert_eq!(
        proxy.metric_sum("keyward_policy_decisions_total", &[]),
        1.0,
        "the policy ran once"
    );
    assert!(echo.requests().is_empty());
}

// ---- Item 29: token_url over plain http only to loopback ------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_http_token_url_is_refused_unless_it_is_loopback() {
    let config = |token_url: &str| {
        config_yaml(&format!(
            r#"
routes:
  - name: crm
    hosts: [crm.example]
    credentials:
      - name: crm
        placeholder: kw-placeholder-crm
        header: Authorization
        format: "Bearer {{secret}}"
        oauth2:
          token_url: {token_url}
          grant: client_credentials
          client_id: {{ secret: oauth_client_id }}
          client_secret: {{ secret: oauth_client_secret }}
"#
        ))
    };
    let remote = workdir(&config("http://example.com/token"));
    let remote_config = remote.path().join("keyward.yaml");
    let loopback = workdir(&config("http://127.0.0.1:9/token"));
    let loopback_config = loopback.path().join("keyward.yaml");
    let (check, run, local) = tokio::join!(
        keyward_cmd("check", &remote_config, Duration::from_secs(20)),
        keyward_cmd("run", &remote_config, Duration::from_secs(20)),
        keyward_cmd("check", &loopback_config, Duration::from_secs(20)),
    );
    for (cmd, (ok, stderr)) in [("check", check), ("run", run)] {
        assert_eq!(
            ok,
            Some(false),
            "`{cmd}` accepted an http:// token_url to a remote host"
        );
        assert!(stderr.contains("token_url"), "`{cmd}` names the field: {stderr}");
    }
    assert_eq!(local.0, Some(true), "http:// to loopback is allowed: {}", local.1);
}
