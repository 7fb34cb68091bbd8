//! The Basic auth credential kind with real clients: curl `-u` and Python requests' `auth=` send the
//! placeholder as the password of a Basic header (base64), or as a Bearer token; the upstream receives
//! `Basic base64(username:real password)`. The same placeholder toward an unbound host is refused, base64 or
//! not, and an echoed encoded credential is scrubbed.

use base64::Engine as _;

use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::proxy::Proxy;

const ROUTES: &str = r#"
resolve:
  api.keyward.test: [127.0.0.1]
  other.keyward.test: [127.0.0.1]
routes:
  - name: jira
    hosts: ["api.keyward.test:*"]
    allow_private: true
    credentials:
      - name: jira
        placeholder: kw-placeholder-jira
        basic:
          username: bot@example.com
          password: { secret: github_token }
  - name: other
    hosts: ["other.keyward.test:*"]
    allow_private: true
"#;

fn expected() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode("bot@example.com:ghp_REALSECRET_9f8e7d");
    format!("Basic {token}")
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_and_requests_with_basic_auth_get_the_real_password_written() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(ROUTES).await;
    let url = format!("https://api.keyward.test:{}/rest/api/2/myself", echo.port());
    for args in [
        vec!["-u", "anyone:kw-placeholder-jira", url.as_str()],
        vec!["-H", "Authorization: Bearer kw-placeholder-jira", url.as_str()],
    ] {
        let reply = curl(&proxy, &args).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let seen = echo.requests().pop().unwrap();
        assert!(
            seen.header("authorization") == Some(expected().as_str()),
            "curl {args:?}: Basic with the real password"
        );
    }
    let script = "import requests, sys; r = requests.get(sys.argv[1], auth=('anyone', 'kw-placeholder-jira'), timeout=20); print(r.status_code)";
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &url])
        .env("HTTPS_PROXY", proxy.url())
        .env("REQUESTS_CA_BUNDLE", proxy.ca_cert())
        .env_remove("NO_PROXY")
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = echo.requests().pop().unwrap();
    assert!(
        seen.header("authorization") == Some(expected().as_str()),
        "requests: Basic with the real password"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_basic_encoded_placeholder_toward_another_host_is_refused_and_an_echo_is_scrubbed() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(ROUTES).await;
    let other = format!("https://other.keyward.test:{}/collect", echo.port());
    let reply = curl(&proxy, &["-u", "x:kw-placeholder-jira", &other]).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.json()["error"], "placeholder_not_bound");
    assert!(echo.requests().is_empty(), "nothing reached the upstream");
    // The echo upstream reflects the request headers in its body: the encoded real credential is scrubbed.
    let url = format!("https://api.keyward.test:{}/reflect", echo.port());
    let reply = curl(&proxy, &["-u", "anyone:kw-placeholder-jira", &url]).await;
    assert_eq!(reply.status, 200);
    let token = expected().trim_start_matches("Basic ").to_string();
    assert!(
        !reply.body.contains(&token),
        "the base64 credential was scrubbed from the response"
    );
    assert!(
        reply.body.contains("Basic kw-placeholder-jira"),
        "the echoed Authorization came back with the placeholder in its place: {}",
        reply.body
    );
    assert!(!reply.body.contains("REALSECRET"));
}
