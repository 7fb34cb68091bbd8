//! Placeholders in the path, opted in per credential (`locations: [path]`, Telegram's `/bot<token>/`): the
//! placeholder is found percent-decoded and replaced, re-encoded; without the opt-in it is refused as
//! misplaced, and toward another host it is an exfiltration attempt.

use crate::support::clients::curl;
use crate::support::echo::Echo;
use crate::support::proxy::Proxy;

const ROUTES: &str = r#"
resolve:
  api.keyward.test: [127.0.0.1]
  other.keyward.test: [127.0.0.1]
routes:
  - name: telegram
    hosts: ["api.keyward.test:*"]
    allow_private: true
    credentials:
      - name: telegram
        placeholder: kw-placeholder-telegram
        secret: github_token
        locations: [path]
      - name: header_only
        placeholder: kw-placeholder-header
        secret: openai_key
        header: Authorization
  - name: other
    hosts: ["other.keyward.test:*"]
    allow_private: true
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_path_placeholder_is_swapped_when_opted_in_and_refused_elsewhere() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(ROUTES).await;
    let base = format!("https://api.keyward.test:{}", echo.port());
    for path in [
        "/botkw-placeholder-telegram/getMe?x=1",
        "/bot%6Bw-placeholder-telegram/getMe?x=1",
    ] {
        let reply = curl(&proxy, &[&format!("{base}{path}")]).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        let seen = echo.requests().pop().unwrap();
        assert!(
            seen.path == "/botghp_REALSECRET_9f8e7d/getMe?x=1",
            "{path}: the upstream got the real token in the path"
        );
    }
    let misplaced = curl(&proxy, &[&format!("{base}/botkw-placeholder-header/getMe")]).await;
    assert_eq!(misplaced.status, 403);
    assert_eq!(misplaced.json()["error"], "placeholder_misplaced", "no opt-in, no path");
    let other = format!(
        "https://other.keyward.test:{}/botkw-placeholder-telegram/x",
        echo.port()
    );
    let stolen = curl(&proxy, &[&other]).await;
    assert_eq!(stolen.status, 403);
    assert_eq!(stolen.json()["error"], "placeholder_not_bound");
    for line in proxy.audit_lines() {
        assert!(
            !line.to_string().contains("REALSECRET"),
            "the audit line records the path as sent: {line}"
        );
    }
}
