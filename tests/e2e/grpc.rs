//! gRPC through an intercepted tunnel with a real client and server (grpcio, which honours `https_proxy`):
//! unary and bidirectional streaming calls, and a non-OK status carried in HTTP/2 trailers, with the
//! placeholder in the call's metadata swapped for the real secret.

use std::path::Path;

use crate::support::pki::pki;
use crate::support::proxy::Proxy;

const ROUTE: &str = r#"
resolve:
  api.keyward.test: [127.0.0.1]
routes:
  - name: grpc
    hosts: ["api.keyward.test:*"]
    allow_private: true
    credentials:
      - placeholder: kw-placeholder-grpc
        secret: openai_key
        header: authorization
        format: "Bearer {secret}"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn grpc_unary_streaming_and_trailers_go_through_with_the_secret_swapped() {
    let proxy = Proxy::spawn(ROUTE).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpc_check.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg("--cert")
        .arg(&pki().leaf_cert_path)
        .arg("--key")
        .arg(&pki().leaf_key_path)
        .arg("--ca")
        .arg(proxy.ca_cert())
        .args(["--host", "api.keyward.test", "--placeholder", "kw-placeholder-grpc"])
        .env("https_proxy", proxy.url())
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_grpc_proxy")
        .output()
        .await
        .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("grpc client failed: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(result.get("error").is_none(), "{}", result["error"]);
    assert_eq!(result["unary"], "pong:ping");
    assert_eq!(result["stream"], serde_json::json!(["echo:1", "echo:2", "echo:3"]));
    assert_eq!(
        result["fails"],
        serde_json::json!(["NOT_FOUND", "no such thing"]),
        "the status and message travel in the trailers"
    );
    let seen = result["seen"].as_array().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|a| a == "Bearer sk-REALSECRET-openai-5a1f7c"),
        "the upstream got the real secret in the metadata (values masked here)"
    );
}
