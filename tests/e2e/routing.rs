//! Destination integrity: placeholders only go where they are bound, the route comes from the CONNECT target,
//! unmatched hosts are denied or tunnelled, and private addresses need an explicit opt-in.

use std::time::Duration;

use crate::routes;
use crate::support::clients::{curl, curl_with_ca};
use crate::support::echo::Echo;
use crate::support::pki::pki;
use crate::support::proxy::Proxy;

#[tokio::test(flavor = "multi_thread")]
async fn placeholder_toward_an_unbound_host_is_refused_logged_and_counted() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    // No route at all for other.keyward.test, and a route (github) that does not own this credential.
    for (host, path) in [("other.keyward.test", "/upload"), ("api.keyward.test", "/repos/x")] {
        let url = format!("https://{host}:{}{path}", echo.port());
        let reply = curl(&proxy, &["-H", "Authorization: Bearer kw-placeholder-openai", &url]).await;
        assert_eq!(reply.status, 403, "{reply:?}");
        assert_eq!(reply.json()["error"], "placeholder_not_bound");
    }
    assert!(echo.requests().is_empty(), "nothing was forwarded");
    assert_eq!(
        proxy.metric("keyward_exfiltration_attempts_total{credential=\"openai_key\"}"),
        2.0
    );
    let line = proxy
        .wait_for_log("exfiltration attempt", std::time::Duration::from_secs(5))
        .await;
    assert!(
        line.contains("openai_key") && line.contains("other.keyward.test"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_host_header_is_refused_over_http1_and_http2() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let url = format!("https://localhost:{}/repos/x", echo.port());
    for version in ["--http1.1", "--http2"] {
        let spoof = format!("Host: api.keyward.test:{}", echo.port());
        let reply = curl(
            &proxy,
            &[
                version,
                "-H",
                &spoof,
                "-H",
                "Authorization: kw-placeholder-github",
                &url,
            ],
        )
        .await;
        assert_eq!(reply.status, 403, "{version}: {reply:?}");
        assert_eq!(reply.json()["error"], "host_mismatch");
    }
    assert!(echo.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_host_is_denied_by_default() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let reply = curl(&proxy, &[&format!("https://other.keyward.test:{}/", echo.port())]).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.json()["error"], "no_route");
    assert!(reply.json()["message"].as_str().unwrap().contains("other.keyward.test"));
    assert!(echo.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn path_and_method_limits_select_the_route() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(routes()).await;
    let base = format!("https://api.keyward.test:{}", echo.port());
    let ok = curl(
        &proxy,
        &[
            "-H",
            "Authorization: kw-placeholder-github",
            &format!("{base}/repos/a/b"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        echo.requests()[0].header("authorization"),
        Some(format!("token {}", crate::support::secret("github_token")).as_str())
    );
    for (method, path) in [("POST", "/repos/a"), ("GET", "/user"), ("GET", "/repos/../admin")] {
        let reply = curl(&proxy, &["--path-as-is", "-X", method, &format!("{base}{path}")]).await;
        let code = reply.json()["error"].clone();
        assert!(reply.status == 403 || reply.status == 400, "{method} {path}: {reply:?}");
        assert!(code == "no_route" || code == "bad_request", "{method} {path}: {code}");
    }
    assert_eq!(echo.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_host_is_tunnelled_without_interception_in_tunnel_mode() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(&format!(
        "{}unmatched: tunnel\nunmatched_allow_private: true\n",
        routes()
    ))
    .await;
    let url = format!("https://other.keyward.test:{}/through", echo.port());
    // Trusting only the upstream's own CA works: the agent sees the real certificate, not a minted one.
    let reply = curl_with_ca(&proxy, &pki().ca_path, &[&url]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(echo.requests()[0].path, "/through");
    // Trusting only Keyward's CA fails for the same reason.
    let reply = curl(&proxy, &[&url]).await;
    assert_eq!(reply.status, 0, "{reply:?}");
    assert!(
        reply.stderr.contains("SSL") || reply.stderr.contains("certificate"),
        "{}",
        reply.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn private_destinations_need_allow_private() {
    let echo = Echo::https().await;
    let extra = r#"
resolve:
  api.keyward.test: [127.0.0.1]
routes:
  - name: by-name
    hosts: ["api.keyward.test:*"]
  - name: by-ip
    hosts: ["127.0.0.1:*"]
"#;
    let proxy = Proxy::spawn(extra).await;
    for host in ["api.keyward.test", "127.0.0.1"] {
        let reply = curl(&proxy, &[&format!("https://{host}:{}/", echo.port())]).await;
        assert_eq!(reply.status, 403, "{host}: {reply:?}");
        assert_eq!(reply.json()["error"], "private_destination");
    }
    let tunnel = Proxy::spawn("unmatched: tunnel\n").await;
    let reply = curl_with_ca(
        &tunnel,
        &pki().ca_path,
        &[&format!("https://localhost:{}/", echo.port())],
    )
    .await;
    assert_eq!(reply.connect_status, 403, "tunnels obey the guard too: {reply:?}");
    assert!(echo.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_http_requests_and_plaintext_credentials() {
    let echo = Echo::http().await;
    let extra = |plain: bool| {
        format!(
            "routes:\n  - name: plain\n    hosts: [\"localhost:*\"]\n    allow_private: true\n    allow_plain_http: {plain}\n    credentials:\n      - placeholder: kw-placeholder-openai\n        secret: openai_key\n        header: Authorization\n        format: \"Bearer {{secret}}\"\n"
        )
    };
    let url = format!("http://localhost:{}/plain", echo.port());
    let strict = Proxy::spawn(&extra(false)).await;
    let reply = curl(&strict, &["-H", "Authorization: kw-placeholder-openai", &url]).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.json()["error"], "plaintext_credential");
    assert!(echo.requests().is_empty());
    let reply = curl(&strict, &[&url]).await;
    assert_eq!(reply.status, 200, "no credential involved: {reply:?}");

    let allowed = Proxy::spawn(&extra(true)).await;
    let reply = curl(&allowed, &["-H", "Authorization: kw-placeholder-openai", &url]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let got = echo.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].header("authorization").unwrap(),
        format!("Bearer {}", crate::support::secret("openai_key"))
    );
}

/// `unmatched: tunnel_private`: an unmatched name whose addresses are all on private networks is tunnelled
/// (never intercepted: a 502 when the dial fails, a spliced tunnel where something answers); a public name, loopback and cloud metadata are intercepted and refused
/// with `no_route` as under `deny`, and a placeholder sent there is counted as exfiltration. Plain-HTTP
/// absolute-form requests follow the same rule. (Bytes flowing through such a tunnel are covered in the
/// network-namespace capture test, which can give an interface a private address.)
#[tokio::test(flavor = "multi_thread")]
async fn tunnel_private_reaches_private_networks_only() {
    let extra = r#"
unmatched: tunnel_private
upstream: { connect_timeout: 1s }
resolve:
  redis.agents.svc.test: [10.255.255.1]
  public.keyward.test: [93.184.216.34]
  metadata.keyward.test: [169.254.169.254]
  loop.keyward.test: [127.0.0.1]
  mixed.keyward.test: [10.255.255.1, 93.184.216.34]
routes:
  - name: github
    hosts: ["api.keyward.test:*"]
    credentials:
      - placeholder: kw-placeholder-github
        secret: github_token
        header: Authorization
        format: "token {secret}"
"#;
    let proxy = Proxy::spawn(extra).await;
    // Where the machine routes 10.0.0.0/8 somewhere (a sandbox's egress gateway), the tunnel opens; where it
    // does not, the dial fails with 502. Either way it is not intercepted.
    let reply = curl(&proxy, &["https://redis.agents.svc.test:6379/"]).await;
    match reply.connect_status {
        502 => {}
        200 => {
            proxy
                .wait_for_log("tunnelling unmatched host without interception", Duration::from_secs(5))
                .await;
        }
        _ => panic!("a private destination is tunnelled: {reply:?}"),
    }
    for host in [
        "public.keyward.test",
        "metadata.keyward.test",
        "loop.keyward.test",
        "mixed.keyward.test",
    ] {
        let reply = curl(
            &proxy,
            &[
                "-H",
                "Authorization: Bearer kw-placeholder-github",
                &format!("https://{host}/"),
            ],
        )
        .await;
        assert_eq!(reply.status, 403, "{host}: {reply:?}");
        assert_eq!(reply.json()["error"], "placeholder_not_bound", "{host}");
        let reply = curl(&proxy, &[&format!("https://{host}/")]).await;
        assert_eq!(reply.json()["error"], "no_route", "{host}: {reply:?}");
        let reply = curl(&proxy, &[&format!("http://{host}/")]).await;
        assert_eq!(reply.status, 403, "{host} over plain HTTP: {reply:?}");
        assert_eq!(reply.json()["error"], "no_route", "{host} over plain HTTP");
    }
    let reply = curl(&proxy, &["http://redis.agents.svc.test:6379/"]).await;
    assert_ne!(
        reply.status, 403,
        "plain HTTP to a private name is forwarded: {reply:?}"
    );
}

/// Node's env proxy (and curl's `--proxytunnel`) send `http://` URLs through CONNECT too: a tunnel whose first
/// byte is not a TLS handshake carries plain HTTP, served as an `http://` request to the CONNECT target, under
/// the same rules (`allow_plain_http` for credentials).
#[tokio::test(flavor = "multi_thread")]
async fn plain_http_inside_a_connect_tunnel_is_served_as_http() {
    let echo = Echo::http().await;
    let extra = |plain: bool| {
        format!(
            "routes:\n  - name: plain\n    hosts: [\"localhost:*\"]\n    allow_private: true\n    allow_plain_http: {plain}\n    credentials:\n      - placeholder: kw-placeholder-openai\n        secret: openai_key\n        header: Authorization\n        format: \"Bearer {{secret}}\"\n"
        )
    };
    let url = format!("http://localhost:{}/tunnelled", echo.port());
    let allowed = Proxy::spawn(&extra(true)).await;
    let reply = curl(&allowed, &["-p", "-H", "Authorization: kw-placeholder-openai", &url]).await;
    assert_eq!(reply.connect_status, 200, "{reply:?}");
    assert_eq!(reply.status, 200, "{reply:?}");
    let got = echo.requests();
    assert_eq!(got[0].path, "/tunnelled");
    assert_eq!(
        got[0].header("authorization").unwrap(),
        format!("Bearer {}", crate::support::secret("openai_key"))
    );
    let strict = Proxy::spawn(&extra(false)).await;
    let reply = curl(&strict, &["-p", "-H", "Authorization: kw-placeholder-openai", &url]).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.json()["error"], "plaintext_credential");
    let reply = curl(&strict, &["-p", &format!("http://other.keyward.test:{}/", echo.port())]).await;
    assert_eq!(reply.json()["error"], "no_route", "{reply:?}");
    assert_eq!(echo.requests().len(), 1);
}
