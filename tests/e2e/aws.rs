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
