//! Faults on either side: an upstream that breaks off mid-response, and agents that hang up mid-stream, a
//! thousand times over, without leaking connections, tasks or memory.

use std::time::Duration;

use crate::routes;
use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::proxy::Proxy;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_reset_mid_response_reaches_the_agent_as_an_error_and_nothing_breaks() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let broken = curl(
        &proxy,
        &["--http1.1", &format!("https://localhost:{}/truncate", echo.port())],
    )
    .await;
    // Whether the head reached the agent before the upstream broke off is a race; either way the agent must
    // see a failed transfer, never a clean, short response.
    assert!(
        broken.stderr.contains("curl:"),
        "the agent sees the transfer fail: {}",
        broken.stderr
    );
    assert!(broken.body.len() < 100_000);
    assert_eq!(
        curl(&proxy, &[&format!("https://localhost:{}/v1", echo.port())])
            .await
            .status,
        200,
        "next request fine"
    );
    assert_eq!(proxy.admin_get("/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_agents_hanging_up_mid_stream_leak_nothing() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/sse?events=2", echo.port());
    // Each transfer gets event 1, then waits on a gate that never opens, until curl gives up at 1 s.
    let round = |n: usize| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-s",
            "--max-time",
            "1",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            "100",
        ])
        .args(["-x", &proxy.url(), "--cacert"])
        .arg(proxy.ca_cert());
        for _ in 0..n {
            cmd.args(["-o", "/dev/null", &url]);
        }
        cmd
    };
    let run = |mut cmd: std::process::Command| tokio::task::spawn_blocking(move || cmd.output().unwrap());
    run(round(100)).await.unwrap();
    // Warm: TLS sessions, pools and allocator arenas exist now.
    tokio::time::sleep(Duration::from_millis(500)).await; // let closed sockets be reaped before measuring
    let (fds_before, rss_before) = (open_fds(proxy.pid()), proxy.rss_kib());
    for _ in 0..10 {
        run(round(100)).await.unwrap();
    }
    let streams = echo.requests().iter().filter(|r| r.path.starts_with("/sse")).count();
    assert_eq!(streams, 1100, "every transfer reached the upstream");
    crate::support::eventually("connections of gone agents to close", Duration::from_secs(10), || {
        open_fds(proxy.pid()) <= fds_before + 5
    })
    .await;
    let rss_after = proxy.rss_kib();
    eprintln!(
        "fds {fds_before} -> {}, rss {rss_before} -> {rss_after} KiB over 1000 hang-ups",
        open_fds(proxy.pid())
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert_eq!(
        curl(&proxy, &[&format!("https://localhost:{}/v1", echo.port())])
            .await
            .status,
        200
    );
}
