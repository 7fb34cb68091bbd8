//! AWS SigV4 re-signing against moto with IAM authentication on (`tests/clients/aws_check.py`): boto3
//! clients holding only the placeholder access key id call STS, S3 (single PUT, multipart, with and without
//! SDK checksums) and DynamoDB through Keyward, which must sign each request again with the real key for
//! moto to accept it; a presigned URL is re-signed in its query; the same calls toward a host the credential
//! is not bound to are refused before anything reaches moto.

use std::path::Path;

use crate::support::pki::pki;
use crate::support::proxy::Proxy;
use crate::support::secret;

const ROUTES: &str = r#"
resolve: { api.keyward.test: [127.0.0.1], other.keyward.test: [127.0.0.1] }
routes:
  - name: aws
    hosts: ["api.keyward.test:*"]
    allow_private: true
    credentials:
      - name: aws
        placeholder: AKIAKEYWARDPLACEHLDR
        aws_sigv4:
          access_key_id: { secret: aws_access_key_id }
          secret_access_key: { secret: aws_secret_access_key }
  - name: other
    hosts: ["other.keyward.test:*"]
    allow_private: true
"#;

async fn aws_check(proxy: &Proxy, mode: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aws_check.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(mode)
        .arg("--cert")
        .arg(&pki().leaf_cert_path)
        .arg("--key")
        .arg(&pki().leaf_key_path)
        .arg("--ca")
        .arg(proxy.ca_cert())
        .args(["--real-key-id", secret("aws_access_key_id")])
        .env("AWS_REAL_SECRET", secret("aws_secret_access_key"))
        .env("https_proxy", proxy.url())
        .env("HTTPS_PROXY", proxy.url())
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "aws_check.py {mode} failed: {}",
            crate::support::masked(&String::from_utf8_lossy(&out.stderr))
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_with_a_placeholder_key_works_against_moto_only_through_keyward_re_signing() {
    let proxy = Proxy::spawn(ROUTES).await;
    let result = aws_check(&proxy, "proxied").await;
    let failed: Vec<_> = result["calls"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, call)| call["ok"] != true)
        .map(|(name, call)| format!("{name}: {} {}", call["code"], call["error"]))
        .collect();
    assert!(
        failed.is_empty(),
        "calls failed: {failed:#?}\nproblems: {}\nwhat moto saw: {:#}",
        result["problems"],
        result["upstream"]
    );
    assert_eq!(
        result["calls"]["sts.get_caller_identity"]["arn"],
        result["expected_arn"]
    );
    let counts = &result["counts"];
    assert_eq!(
        counts["upstream_real"], counts["upstream_requests"],
        "every request moto saw carried the real key: {counts}"
    );
    assert_eq!(counts["upstream_placeholder"], 0);
    assert_eq!(counts["upstream_payload_hash_mismatch"], 0);
    assert_eq!(result["passed"], true, "{}", result["problems"]);
    assert_eq!(
        result["presigned"]["ok"], true,
        "presigned URL: {}",
        result["presigned"]
    );
    let streamed = &result["content_sha256"]["s3_default"]["PutObject"];
    assert_eq!(
        streamed[0], "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "boto3's default upload went through: {streamed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_placeholder_key_toward_an_unbound_host_is_refused_before_moto_sees_anything() {
    let proxy = Proxy::spawn(ROUTES).await;
    let result = aws_check(&proxy, "unbound").await;
    assert_eq!(result["passed"], true, "{}", result["problems"]);
    assert_eq!(result["counts"]["upstream_requests"], 0);
    assert!(result["calls"]
        .as_object()
        .unwrap()
        .values()
        .all(|call| call["code"] == "placeholder_not_bound"));
    assert!(proxy.metric_sum("keyward_exfiltration_attempts_total", &[("credential", "aws")]) > 0.0);
}

/// The real access key id in an agent's request is a secret it should never have: the canary refuses it.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_access_key_id_from_the_agent_trips_the_canary() {
    let proxy = Proxy::spawn(ROUTES).await;
    let auth = format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={}/20261129/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00",
        secret("aws_access_key_id")
    );
    let reply = crate::support::clients::curl(&proxy, &["-H", &auth, "https://api.keyward.test:1/"]).await;
    assert_eq!(reply.status, 403, "{}", crate::support::masked(&format!("{reply:?}")));
    assert_eq!(reply.json()["error"], "secret_in_request");
}

/// The `vault` mode of aws_check.py: moto plus Vault's AWS engine in front of a real OpenBao (OpenBao ships no
/// AWS engine; the harness answers the engine's paths as the plugin does, and passes everything else to
/// OpenBao), answering `call`, `keys` and `leases` commands on stdin.
struct AwsVault {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ready: serde_json::Value,
}

impl AwsVault {
    /// With leases of `ttl` seconds, renewable up to `max` seconds.
    async fn start(bao: &crate::support::openbao::OpenBao, keyward_ca: &Path, ttl: u32, max: u32) -> Self {
        use tokio::io::AsyncBufReadExt;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aws_check.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .arg("vault")
            .arg("--cert")
            .arg(&pki().leaf_cert_path)
            .arg("--key")
            .arg(&pki().leaf_key_path)
            .arg("--ca")
            .arg(keyward_ca)
            .args(["--real-key-id", secret("aws_access_key_id")])
            .args([
                "--vault-addr",
                &bao.address(),
                "--vault-token",
                crate::support::openbao::ROOT_TOKEN,
            ])
            .args(["--lease-ttl", &ttl.to_string(), "--lease-max", &max.to_string()])
            .env("AWS_REAL_SECRET", secret("aws_secret_access_key"))
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("aws_check.py vault ready within 30 s")
            .unwrap()
            .unwrap();
        let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
        assert!(ready.get("harness_error").is_none(), "{ready}");
        Self {
            _child: child,
            stdin,
            lines,
            ready,
        }
    }

    async fn ask(&mut self, command: &str) -> serde_json::Value {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(format!("{command}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(std::time::Duration::from_secs(40), self.lines.next_line())
            .await
            .expect("an answer within 40 s")
            .unwrap()
            .unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

const LEASED_ROUTES: &str = r#"
resolve: { api.keyward.test: [127.0.0.1] }
routes:
  - name: aws
    hosts: ["api.keyward.test:*"]
    allow_private: true
    credentials:
      - name: aws
        placeholder: AKIAKEYWARDPLACEHLDR
        aws_sigv4:
          vault_aws: { mount: aws, role: agent }
"#;

/// The engine (in front of `bao`) and a proxy whose AWS credential is leased from it.
async fn leased_setup(bao: &crate::support::openbao::OpenBao, ttl: u32, max: u32) -> (AwsVault, Proxy) {
    let dir = crate::support::proxy::workdir("");
    let aws = AwsVault::start(bao, &dir.path().join("ca/ca.crt"), ttl, max).await;
    let vault = format!(
        "  vault:\n    address: {}\n    auth: {{ token: {{ file: vault-token }} }}\n    refresh_jitter: 0s\n",
        aws.ready["vault_addr"].as_str().unwrap()
    );
    std::fs::write(
        dir.path().join("keyward.yaml"),
        crate::support::proxy::config_with_secrets(&vault, LEASED_ROUTES),
    )
    .unwrap();
    std::fs::write(dir.path().join("vault-token"), crate::support::openbao::ROOT_TOKEN).unwrap();
    (aws, Proxy::spawn_in(dir).await)
}

/// Dynamic credentials: Keyward leases an IAM user's key from Vault's AWS engine, signs with it (moto sees
/// the dynamic user, never the root key), renews the 3 s lease before it ends, and revokes it at shutdown,
/// which deletes the user.
#[tokio::test(flavor = "multi_thread")]
async fn dynamic_credentials_from_vaults_aws_engine_are_used_renewed_and_revoked_at_shutdown() {
    let bao = crate::support::openbao::OpenBao::start().await;
    let (mut aws, proxy) = leased_setup(&bao, 3, 60).await;
    let call_through = format!("call {}", proxy.url());

    let call = aws.ask(&call_through).await;
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(call["credential"], "dynamic", "signed with the leased key: {call}");
    assert!(call["arn"].as_str().unwrap().contains(":user/vault-"), "{call}");

    // Past the first lease's 3 s: renewed (at two-thirds), not replaced; still the same user.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let leases = loop {
        let leases = aws.ask("leases").await;
        let renewed = leases["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["renewals"].as_u64() >= Some(2));
        if renewed || tokio::time::Instant::now() > deadline {
            break leases;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let active: Vec<_> = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "one lease, kept alive: {leases}");
    assert!(
        active[0]["renewals"].as_u64().unwrap() >= 2,
        "renewed twice, past its first 3 s: {leases}"
    );
    let again = aws.ask(&call_through).await;
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["arn"], call["arn"], "the same leased user after the renewal");

    // Shutdown revokes: the engine deletes the user.
    let leased_user = |keys: &serde_json::Value| {
        keys["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"].as_str().unwrap().starts_with("vault-"))
    };
    assert!(
        leased_user(&aws.ask("keys").await),
        "the leased user exists while Keyward runs"
    );
    proxy.terminate();
    assert_eq!(proxy.exit_code(std::time::Duration::from_secs(10)).await, Some(0));
    let leases = aws.ask("leases").await;
    let all = leases["leases"].as_array().unwrap();
    assert!(
        !all.is_empty() && all.iter().all(|l| l["revoked_by"] == "request"),
        "every lease revoked by Keyward at shutdown, none left to expire: {leases}"
    );
    assert!(!leased_user(&aws.ask("keys").await), "the leased user is gone");
}

/// Near its maximum a lease's renewals grant less than its term: Keyward reads new credentials while the old
/// ones still work, so calls keep succeeding with a new user; the current lease is revoked at shutdown.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_near_its_maximum_is_replaced_before_it_ends() {
    let bao = crate::support::openbao::OpenBao::start().await;
    let (mut aws, proxy) = leased_setup(&bao, 2, 4).await;
    let call_through = format!("call {}", proxy.url());
    let first = aws.ask(&call_through).await;
    assert_eq!(first["ok"], true, "{first}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(12);
    let replaced = loop {
        let call = aws.ask(&call_through).await;
        assert_eq!(call["ok"], true, "every call succeeds across the replacement: {call}");
        if call["arn"] != first["arn"] || tokio::time::Instant::now() > deadline {
            break call;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_ne!(
        replaced["arn"], first["arn"],
        "a new leased user before the 4 s maximum ran out"
    );
    proxy.terminate();
    assert_eq!(proxy.exit_code(std::time::Duration::from_secs(10)).await, Some(0));
    let leases = aws.ask("leases").await;
    let all = leases["leases"].as_array().unwrap();
    let (old, new) = (&all[0], &all[all.len() - 1]);
    assert!(all.len() >= 2, "{leases}");
    assert!(
        new["issued_at"].as_f64() < old["ended_at"].as_f64(),
        "the new lease was read before the old one ended: {leases}"
    );
    assert_eq!(
        new["revoked_by"], "request",
        "the current lease revoked by Keyward at shutdown: {leases}"
    );
}

/// A hostile (or merely verbose) upstream: S3's `SignatureDoesNotMatch` body quotes the access key id, and
/// this one also echoes the `Authorization` it got and the secret key. The agent sees the placeholder in
/// every one of them, in the body and in a header.
#[tokio::test(flavor = "multi_thread")]
async fn re_signed_keys_echoed_by_the_upstream_never_reach_the_agent() {
    use crate::support::hostile::{Hostile, Reply, Seen, Up};
    let hostile = Hostile::start(std::sync::Arc::new(|seen: &Seen| {
        let body = format!(
            "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>{}</AWSAccessKeyId><Sent>{}</Sent><Key>{}</Key></Error>",
            secret("aws_access_key_id"),
            seen.authorization,
            secret("aws_secret_access_key")
        );
        Reply::new(403)
            .header("x-echo-authorization", seen.authorization.clone())
            .body(body)
    }))
    .await;
    let routes = r#"
routes:
  - name: aws
    hosts: ["localhost:*"]
    allow_private: true
    credentials:
      - name: aws
        placeholder: AKIAKEYWARDPLACEHLDR
        aws_sigv4:
          access_key_id: { secret: aws_access_key_id }
          secret_access_key: { secret: aws_secret_access_key }
"#;
    let proxy = Proxy::spawn(routes).await;
    let url = format!("https://localhost:{}/bucket/key", hostile.port(Up::H1));
    let reply = crate::support::clients::curl(
        &proxy,
        &[
            "-i",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            "AKIAKEYWARDPLACEHLDR:kw-fake-secret",
            &url,
        ],
    )
    .await;
    assert_eq!(reply.status, 403, "{}", crate::support::masked(&format!("{reply:?}")));
    let seen = hostile.seen();
    assert!(
        seen[0]
            .authorization
            .contains(&format!("Credential={}/", secret("aws_access_key_id"))),
        "the upstream got the real key's signature"
    );
    let text = reply.body.to_ascii_lowercase();
    assert!(
        !text.contains("realsecret"),
        "no real key id or secret reaches the agent"
    );
    assert!(
        reply
            .body
            .contains("<AWSAccessKeyId>AKIAKEYWARDPLACEHLDR</AWSAccessKeyId>"),
        "scrubbed to the placeholder"
    );
}
