//! Hardening, tested by trying to break it: smuggling and malformed requests, slow and numerous clients,
//! cloud-metadata SSRF, and shutdown with a request in flight.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::routes;
use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::proxy::Proxy;

const LIMITS: &str =
    "limits: { max_connections: 8, header_read_timeout: 1s, max_header_bytes: 16384, max_headers: 20 }\n";

/// Writes `raw` to the proxy on a fresh connection and returns the status code it answers (0 if it just closes).
fn raw_status(proxy: &Proxy, raw: &[u8]) -> u16 {
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_and_malformed_requests_get_4xx_and_reach_nothing() {
    let echo = Echo::http().await;
    let plain = "routes:\n  - name: plain\n    hosts: [\"localhost:*\"]\n    allow_private: true\n";
    let proxy = Proxy::spawn(&format!("{LIMITS}{plain}")).await;
    let target = format!("http://localhost:{}/x", echo.port());
    let host = format!("localhost:{}", echo.port());
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    // CL + TE: hyper follows RFC 9112 §6.1: chunked wins, Content-Length is dropped, and the connection is
    // closed after the response, so the smuggled request behind the empty chunked body is never read.
    let smuggle = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://{host}/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let answer = tokio::task::block_in_place(|| {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(smuggle.as_bytes()).unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one response, then the connection closed: {answer}"
    );
    let got = echo.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].path.as_str(), got[0].body_len),
        ("/x", 0),
        "forwarded with the chunked reading only"
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "two Content-Lengths",
            format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc")
                .into_bytes(),
            400,
        ),
        (
            "control byte in a header",
            [
                format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Bad: a").as_bytes(),
                b"\x01",
                b"b\r\n\r\n",
            ]
            .concat(),
            400,
        ),
        (
            "oversized header",
            format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n",
                "a".repeat(40_000)
            )
            .into_bytes(),
            431,
        ),
        (
            "too many headers",
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{many}\r\n").into_bytes(),
            431,
        ),
    ];
    for (name, raw, expected) in cases {
        let status = tokio::task::block_in_place(|| raw_status(&proxy, &raw));
        assert_eq!(status, expected, "{name}");
    }
    assert_eq!(
        echo.requests().len(),
        1,
        "no malformed request was forwarded: {:?}",
        echo.requests()
    );
    // The same listener still serves a well-formed request.
    assert_eq!(curl(&proxy, &[&target]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_is_cut_off_and_connections_are_capped() {
    let proxy = Proxy::spawn(&format!("{LIMITS}{}", routes())).await;
    tokio::task::block_in_place(|| {
        // Slowloris: half a request, then nothing. The header read timeout (1 s) closes the connection.
        let mut slow = TcpStream::connect(proxy.addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        slow.write_all(b"GET http://localhost/ HTTP/1.1\r\nHost: local")
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 256];
        let _ = slow.read(&mut buf);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "closed after the header read timeout"
        );

        // Eight idle connections fill the cap; the ninth is closed at once.
        let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(proxy.addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200)); // let the accept loop take all eight (no observable signal)
        let mut ninth = TcpStream::connect(proxy.addr).unwrap();
        ninth.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let started = Instant::now();
        let n = ninth.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the ninth connection is closed");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "at once, not by a timeout"
        );
        drop(held);
    });
    proxy
        .wait_for_log("connection limit reached", Duration::from_secs(5))
        .await;
}

/// The transparent listener is no way around `limits.max_connections`: both listeners share one cap.
#[tokio::test(flavor = "multi_thread")]
async fn the_connection_cap_covers_the_transparent_listener_too() {
    let proxy = Proxy::spawn(&format!(
        "limits: {{ max_connections: 2, header_read_timeout: 5s }}\ntransparent: {{ listen: \"127.0.0.1:0\" }}\n{}",
        routes()
    ))
    .await;
    let line = proxy.wait_for_log("transparent listener", Duration::from_secs(5)).await;
    let addr: std::net::SocketAddr = serde_json::from_str::<serde_json::Value>(&line).unwrap()["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    tokio::task::block_in_place(|| {
        let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(proxy.addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200)); // let the accept loop take both (no observable signal)
        let mut third = TcpStream::connect(addr).unwrap();
        third.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        assert_eq!(third.read(&mut buf).unwrap_or(0), 0, "closed");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "at once: the cap is shared"
        );
        drop(held);
    });
    proxy
        .wait_for_log("connection limit reached", Duration::from_secs(5))
        .await;
    assert!(
        !proxy.logs().contains("transparent listener: no original destination"),
        "turned away by the cap, not served by the transparent listener"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_metadata_addresses_are_refused() {
    let proxy = Proxy::spawn(
        "resolve:\n  api.keyward.test: [169.254.169.254]\nroutes:\n  - name: meta\n    hosts: [\"api.keyward.test\", \"169.254.169.254\"]\n",
    )
    .await;
    for url in [
        "https://api.keyward.test/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        let started = Instant::now();
        let reply = curl(&proxy, &[url]).await;
        assert_eq!(reply.status, 403, "{url}: {reply:?}");
        assert_eq!(reply.json()["error"], "private_destination");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "refused before any connection attempt"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_the_request_in_flight_then_exits_zero() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/slow?ms=1500", echo.port());
    let slow = {
        let (proxy_url, ca) = (proxy.url(), proxy.ca_cert());
        tokio::spawn(async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sS", "--max-time", "20", "-x", &proxy_url, "--cacert"])
                .arg(ca)
                .args(["-w", "\n%{http_code}", &url])
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    crate::support::eventually(
        "the slow request to reach the upstream",
        Duration::from_secs(10),
        || !echo.requests().is_empty(),
    )
    .await;
    proxy.terminate();
    proxy
        .wait_for_log("draining in-flight requests", Duration::from_secs(5))
        .await;
    assert!(
        TcpStream::connect(proxy.addr).is_err(),
        "no new connections while draining"
    );
    assert_eq!(slow.await.unwrap(), "slow\n200", "the in-flight request completed");
    assert_eq!(proxy.exit_code(Duration::from_secs(10)).await, Some(0));
}
