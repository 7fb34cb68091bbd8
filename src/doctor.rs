//! `keyward doctor`: one row per check, ✅ or ❌ with the fix, exit 1 on any ❌ (`--json` for CI).
//!
//! The checks: the config loads and passes `keyward check`; the CA files exist with a private key; every
//! credential's source answers (the secrets file has the names; Vault logs in and reads, by name only); the
//! admin API has a token; and for each runtime found on PATH (curl, Python with requests and httpx, Node,
//! Java), a real request through Keyward, with `keyward exec`'s environment, to an HTTPS endpoint doctor
//! serves itself under a name only Keyward resolves. A runtime that ignores the proxy fails to resolve that
//! name; one that ignores the trust settings refuses Keyward's certificate; each is named with its fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;

/// One row of the report.
#[derive(Debug, Serialize)]
pub struct Row {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Row {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The name doctor's own endpoint goes by: only the Keyward it starts resolves it.
const PROBE_HOST: &str = "doctor.keyward.invalid";
/// How long one runtime's request may take.
const RUNTIME_LIMIT: Duration = Duration::from_secs(20);

/// Runs every check for the configuration at `path`.
pub async fn run(path: &Path) -> Vec<Row> {
    crate::tls::install_default_provider();
    let mut rows = Vec::new();
    let config = match crate::app::check(path) {
        Ok(config) => {
            rows.push(Row::ok(
                "config",
                format!(
                    "{} loads and passes `keyward check` ({} routes, {} credentials)",
                    path.display(),
                    config.routes.len(),
                    config.credentials.len()
                ),
            ));
            config
        }
        Err(e) => {
            rows.push(Row::fail(
                "config",
                e.to_string(),
                "fix the file, line and field named, then `keyward check --config FILE`",
            ));
            return rows;
        }
    };
    let ca = ca_row(&config);
    let has_ca = ca.ok;
    rows.push(ca);
    rows.extend(secret_rows(&config).await);
    rows.push(admin_row(&config));
    if has_ca {
        match runtime_rows(&config).await {
            Ok(found) => rows.extend(found),
            Err(e) => rows.push(Row::fail(
                "runtimes",
                e,
                "see the error; `keyward run` must be able to start",
            )),
        }
    } else {
        rows.push(Row::fail(
            "runtimes",
            "not checked: there is no CA to trust yet",
            "create the CA first (see the ca row)",
        ));
    }
    rows
}

fn ca_row(config: &Config) -> Row {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = (&config.ca_cert, &config.ca_key);
    if !cert.exists() || !key.exists() {
        return Row::fail(
            "ca",
            format!("no CA at {} / {}", cert.display(), key.display()),
            "run `keyward run` once (it creates the CA) or `keyward ca init --out DIR` and point `ca:` at it",
        );
    }
    match std::fs::metadata(key).map(|m| m.permissions().mode() & 0o077) {
        Ok(0) => Row::ok(
            "ca",
            format!("{} (key {} readable by its owner only)", cert.display(), key.display()),
        ),
        Ok(_) => Row::fail(
            "ca",
            format!("the CA key {} is readable by other users", key.display()),
            format!("chmod 600 {}", key.display()),
        ),
        Err(e) => Row::fail(
            "ca",
            format!("{}: {e}", key.display()),
            "check the path and its permissions",
        ),
    }
}

async fn secret_rows(config: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(file) = &config.secrets_file {
        let names = config
            .secret_refs()
            .iter()
            .filter(|r| matches!(r, crate::secrets::SecretRef::File(_)))
            .count();
        rows.push(Row::ok(
            "secrets file",
            format!("{} holds the {names} names the credentials use", file.display()),
        ));
    }
    let metrics = Arc::new(crate::telemetry::metrics::Metrics::default());
    let upstream = match crate::upstream::Upstream::new(config.upstream.clone()) {
        Ok(upstream) => Arc::new(upstream),
        Err(e) => return vec![Row::fail("upstream TLS", e.to_string(), "fix `upstream_tls`")],
    };
    let stores = match crate::app::configured_secrets(config, &metrics, &upstream) {
        Ok(stores) => stores,
        Err(e) => return vec![Row::fail("secrets", e.to_string(), "fix `secrets:`")],
    };
    if let (Some(vault), Some(settings)) = (&stores.vault, &config.vault) {
        let checked = tokio::time::timeout(Duration::from_secs(10), vault.refresh()).await;
        rows.push(match checked {
            Ok(Ok(())) => Row::ok(
                "vault",
                format!(
                    "{}: logged in and read every configured secret",
                    settings.connection.address
                ),
            ),
            Ok(Err(e)) => Row::fail(
                "vault",
                format!("{}: {e}", settings.connection.address),
                "check the address, the auth method's credentials and the Vault policy's paths",
            ),
            Err(_) => Row::fail(
                "vault",
                format!("{}: no answer within 10 s", settings.connection.address),
                "check the address and the network path to Vault",
            ),
        });
    }
    rows
}

fn admin_row(config: &Config) -> Row {
    if config.admin_token.is_some() {
        return Row::ok("admin token", "configured (`admin_token:`)");
    }
    let generated = crate::admin_token::generated_path(config, None);
    if generated.exists() {
        Row::ok("admin token", format!("generated at {}", generated.display()))
    } else {
        Row::fail(
            "admin token",
            format!("none yet at {}", generated.display()),
            "`keyward run` generates one at first start, or set `admin_token: { file: … }`",
        )
    }
}

/// A runtime found on PATH, and how to make one request with it.
struct Runtime {
    name: String,
    command: Vec<String>,
    /// What to suggest when it ignores the proxy.
    proxy_fix: &'static str,
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn version(program: &Path, flag: &str) -> String {
    std::process::Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The Java agent doctor runs (Java 11+ runs a single source file directly).
const JAVA_AGENT: &str = r#"
public class Agent {
    public static void main(String[] args) throws Exception {
        var response = java.net.http.HttpClient.newHttpClient().send(
            java.net.http.HttpRequest.newBuilder(java.net.URI.create(args[0])).build(),
            java.net.http.HttpResponse.BodyHandlers.ofString());
        System.out.println(response.statusCode());
    }
}
"#;

fn runtimes(scratch: &Path, url: &str) -> Vec<Runtime> {
    let mut found = Vec::new();
    if let Some(curl) = which("curl") {
        found.push(Runtime {
            name: version(&curl, "--version")
                .split(' ')
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            command: vec![
                curl.display().to_string(),
                "-sS".into(),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code}".into(),
                url.into(),
            ],
            proxy_fix: "set HTTPS_PROXY",
        });
    }
    if let Some(python) = which("python3") {
        for lib in ["requests", "httpx"] {
            let has = std::process::Command::new(&python)
                .args(["-c", &format!("import {lib}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if has {
                found.push(Runtime {
                    name: format!("python {lib}"),
                    command: vec![
                        python.display().to_string(),
                        "-c".into(),
                        format!("import sys, {lib}; print({lib}.get(sys.argv[1], timeout=15).status_code)"),
                        url.into(),
                    ],
                    proxy_fix: "set HTTPS_PROXY",
                });
            }
        }
    }
    if let Some(node) = which("node") {
        found.push(Runtime {
            name: format!("node {}", version(&node, "--version")),
            command: vec![
                node.display().to_string(),
                "-e".into(),
                "fetch(process.argv[1]).then(r => console.log(r.status), e => console.log('0 ' + (e.cause ?? e)))".into(),
                url.into(),
            ],
            proxy_fix: "needs Node ≥ 22.21 for NODE_USE_ENV_PROXY; use transparent capture or a proxy agent (undici's EnvHttpProxyAgent)",
        });
    }
    if let Some(java) = which("java") {
        let source = scratch.join("Agent.java");
        if std::fs::write(&source, JAVA_AGENT).is_ok() {
            found.push(Runtime {
                name: format!("java {}", version(&java, "-version").split('"').nth(1).unwrap_or("")),
                command: vec![java.display().to_string(), source.display().to_string(), url.into()],
                proxy_fix: "JAVA_TOOL_OPTIONS must reach the JVM (a launcher that clears it loses the proxy)",
            });
        }
    }
    found
}

/// Starts a Keyward with the configuration's CA and one route to doctor's own endpoint, then runs each
/// runtime through it with `keyward exec`'s environment.
async fn runtime_rows(config: &Config) -> Result<Vec<Row>, String> {
    let scratch = std::env::temp_dir().join(format!("keyward-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let result = probe(config, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn probe(config: &Config, scratch: &Path) -> Result<Vec<Row>, String> {
    let endpoint = Endpoint::start(scratch).await?;
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    std::fs::write(scratch.join("secrets.yaml"), "{}\n").map_err(|e| e.to_string())?;
    let text = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nca: {{ cert: {:?}, key: {:?} }}\nupstream_tls: {{ extra_roots: [{:?}] }}\n\
         secrets: {{ file: secrets.yaml }}\ntelemetry: {{ audit: {{ output: \"off\" }} }}\nresolve: {{ {PROBE_HOST}: [127.0.0.1] }}\n\
         routes:\n  - name: doctor\n    hosts: [\"{PROBE_HOST}:*\"]\n    allow_private: true\n",
        absolute(&config.ca_cert),
        absolute(&config.ca_key),
        endpoint.ca.display()
    );
    let file = scratch.join("keyward.yaml");
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    let probe_config = Config::load(&file).map_err(|e| e.to_string())?;
    let bundle = scratch.join("ca-bundle.pem");
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let proxy = proxy_listener.local_addr().map_err(|e| e.to_string())?;
    let files = crate::app::RunFiles {
        trust_bundle: Some(&bundle),
        ..Default::default()
    };
    let running = crate::app::build(probe_config, files, None)
        .await
        .map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(crate::app::serve(running, proxy_listener, admin_listener, stopped));
    let env = crate::agent_env::plan(
        &crate::agent_env::Proxied {
            proxy_host: "127.0.0.1",
            proxy_port: proxy.port(),
            bundle: &bundle.display().to_string(),
            no_proxy: &["localhost".to_string(), "127.0.0.1".into(), "::1".into()],
            placeholders: &Default::default(),
        },
        |_| false,
    )
    .set;
    let url = format!("https://{PROBE_HOST}:{}/", endpoint.addr.port());
    let mut rows = Vec::new();
    for runtime in runtimes(scratch, &url) {
        rows.push(try_runtime(&runtime, &env).await);
    }
    let _ = stop.send(true);
    let _ = server.await;
    if rows.is_empty() {
        rows.push(Row::ok("runtimes", "none of curl, python3, node, java found on PATH"));
    }
    Ok(rows)
}

async fn try_runtime(runtime: &Runtime, env: &[(String, String)]) -> Row {
    let (program, args) = runtime.command.split_first().expect("a command");
    let run = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .output();
    let check = format!("runtime: {}", runtime.name);
    let output = match tokio::time::timeout(RUNTIME_LIMIT, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Row::fail(check, format!("could not run: {e}"), "check the installation"),
        Err(_) => return Row::fail(check, "no answer within 20 s", "check the runtime's proxy settings"),
    };
    let text = format!(
        "{} {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if String::from_utf8_lossy(&output.stdout).trim() == "200" {
        return Row::ok(check, "goes through Keyward and trusts its CA");
    }
    let lower = text.to_ascii_lowercase();
    let unresolved = [
        "enotfound",
        "could not resolve",
        "name or service not known",
        "getaddrinfo",
        "unknownhost",
        "nodename nor servname",
        "name resolution",
    ];
    let untrusted = ["certificate", "ssl", "pkix", "tls"];
    if unresolved.iter().any(|s| lower.contains(s)) {
        Row::fail(
            check,
            "ignores HTTPS_PROXY: it went straight to the network",
            runtime.proxy_fix,
        )
    } else if untrusted.iter().any(|s| lower.contains(s)) {
        Row::fail(
            check,
            "goes through Keyward but does not trust its CA",
            "point the runtime's trust setting at the bundle (`keyward exec` sets them all)",
        )
    } else {
        let first = text.trim().lines().next().unwrap_or("").to_string();
        Row::fail(
            check,
            format!("failed: {first}"),
            "run it under `keyward exec` and read its error",
        )
    }
}

/// Doctor's own HTTPS endpoint: a certificate for [`PROBE_HOST`] from a throwaway CA that only the probing
/// Keyward trusts, answering 200 to everything.
struct Endpoint {
    addr: SocketAddr,
    ca: PathBuf,
    _task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn start(scratch: &Path) -> Result<Self, String> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_cert = ca_params.self_signed(&ca_key).map_err(e)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().map_err(e)?;
        let leaf = CertificateParams::new(vec![PROBE_HOST.to_string()])
            .map_err(e)?
            .signed_by(&leaf_key, &issuer)
            .map_err(e)?;
        let ca = scratch.join("endpoint-ca.crt");
        std::fs::write(&ca, ca_cert.pem()).map_err(|e| e.to_string())?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .map_err(|e| e.to_string())?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"keyward doctor\n"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, ca, _task: task })
    }
}

/// The table for a terminal: one row per check, the fix under each failure.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.check.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for row in rows {
        let mark = if row.ok { "✅" } else { "❌" };
        out.push_str(&format!("{mark} {:width$}  {}\n", row.check, row.detail));
        if let Some(fix) = &row.fix {
            out.push_str(&format!("   {:width$}  fix: {fix}\n", ""));
        }
    }
    out
}
