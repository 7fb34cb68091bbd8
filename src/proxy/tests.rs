//! In-process tests of the pipeline: the proxy built by `app::build` from a configuration, served on port-0
//! listeners in this process, with a secret store that counts reads and a plain-HTTP upstream that records
//! what it got. They check each phase's refusals and the order the phases run in: nothing refused reads a
//! secret, a misplaced placeholder never reaches the policy, a rate-limited request never reaches the store.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::app::{build, serve, RunFiles};
use crate::config::Config;
use crate::secrets::{Secret, SecretError, SecretRef, SecretStore};

const SECRET: &str = "sk-REALSECRET-inprocess-7f3a";

/// A store with one secret that counts every read, and can rotate it.
#[derive(Default)]
struct Counting {
    reads: AtomicUsize,
    rotated: Mutex<Option<&'static str>>,
    generation: crate::secrets::Generation,
}

impl Counting {
    fn rotate(&self, value: &'static str) {
        *self.rotated.lock().unwrap() = Some(value);
        self.generation.bump();
    }
}

impl SecretStore for Counting {
    fn get(&self, _: &SecretRef) -> Result<Secret, SecretError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(Secret::new(self.rotated.lock().unwrap().unwrap_or(SECRET)))
    }
    fn not_ready(&self) -> Option<String> {
        None
    }
    fn generation(&self) -> u64 {
        self.generation.get()
    }
}

/// An upstream that records each request's `authorization` header and echoes it in the body.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .unwrap_or_default();
                    record.lock().unwrap().push(auth.clone());
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(auth)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Running {
    proxy: SocketAddr,
    store: Arc<Counting>,
    /// Reads made while building (the scrubbers are built from the values before serving).
    built_reads: usize,
    state: Arc<super::ProxyState>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// The proxy from `routes` (YAML), with a policy that denies `/deny` and whatever carries the real secret.
async fn proxy(routes: &str) -> Running {
    crate::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("p.rego"),
        "package keyward\nimport rego.v1\n\
         default decision := {\"allow\": true}\n\
         decision := {\"allow\": false, \"reason\": \"denied path\", \"code\": \"deny\"} if input.request.path == \"/deny\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("secrets.yaml"), "s: unused-by-these-tests\n").unwrap();
    let yaml = format!(
        "ca: {{cert: ca/ca.crt, key: ca/ca.key}}\nsecrets: {{file: secrets.yaml}}\npolicy: {{dir: policies}}\n\
         telemetry: {{audit: {{output: \"off\"}}}}\n{routes}"
    );
    let path = dir.path().join("keyward.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let config = Config::parse(&path, yaml).unwrap();
    let store = Arc::new(Counting::default());
    let running = build(config, RunFiles::default(), Some(store.clone())).await.unwrap();
    let state = running.state();
    let built_reads = store.reads.load(Ordering::SeqCst);
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = proxy_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(running, proxy_listener, admin_listener, stopped));
    Running {
        proxy,
        store,
        built_reads,
        state,
        _dir: dir,
        _stop: stop,
    }
}

impl Running {
    /// Secret reads since the proxy started serving.
    fn reads(&self) -> usize {
        self.store.reads.load(Ordering::SeqCst) - self.built_reads
    }
}

fn routes(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "routes:\n  - name: api\n    hosts: [\"127.0.0.1:{}\"]\n    allow_private: true\n    allow_plain_http: true\n{extra}    credentials:\n      - name: key\n        placeholder: kw-placeholder-inproc\n        secret: s\n        header: Authorization\n        format: \"Bearer {{secret}}\"\n",
        upstream.port()
    )
}

/// An absolute-form HTTP/1.1 request through the proxy; the status and the body.
async fn send(proxy: SocketAddr, upstream: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = format!("GET http://{upstream}{path} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(proxy).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let status = reply.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    })
    .await
    .unwrap()
}

const PLACEHOLDER: (&str, &str) = ("Authorization", "Bearer kw-placeholder-inproc");

fn policy_decisions(state: &super::ProxyState) -> usize {
    let text = state.metrics.render();
    text.lines()
        .filter(|l| l.starts_with("keyward_policy_decisions_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as usize
}

#[tokio::test]
async fn a_forwarded_request_reads_the_secret_once_and_gets_its_echo_scrubbed() {
    let (up, seen) = upstream().await;
    let p = proxy(&routes(up, "")).await;
    let (status, body) = send(p.proxy, up, "/v1", &[PLACEHOLDER]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Bearer kw-placeholder-inproc"), "{body}");
    assert!(!body.contains("REALSECRET"));
    assert_eq!(seen.lock().unwrap().as_slice(), [format!("Bearer {SECRET}")]);
    assert_eq!(p.reads(), 1, "one read: the value written");
    assert_eq!(policy_decisions(&p.state), 1);
}

#[tokio::test]
async fn after_a_rotation_the_new_value_is_scrubbed_and_canaried() {
    const ROTATED: &str = "sk-REALSECRET-rotated-91ce";
    let (up, seen) = upstream().await;
    let p = proxy(&routes(up, "")).await;
    assert_eq!(send(p.proxy, up, "/v1", &[PLACEHOLDER]).await.0, 200);
    p.store.rotate(ROTATED);
    let (status, body) = send(p.proxy, up, "/v1", &[PLACEHOLDER]).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("Bearer kw-placeholder-inproc") && !body.contains("REALSECRET"),
        "{body}"
    );
    assert_eq!(seen.lock().unwrap().last().unwrap(), &format!("Bearer {ROTATED}"));
    let (status, body) = send(p.proxy, up, "/v1", &[("X-Leak", ROTATED)]).await;
    assert_eq!((status, body.contains("secret_in_request")), (403, true), "{body}");
}

#[tokio::test]
async fn a_misplaced_placeholder_is_refused_before_the_policy_and_reads_no_secret() {
    let (up, seen) = upstream().await;
    let p = proxy(&routes(up, "")).await;
    let (status, body) = send(p.proxy, up, "/v1", &[("X-Title", "kw-placeholder-inproc")]).await;
    assert_eq!(status, 403);
    assert!(body.contains("placeholder_misplaced"), "{body}");
    assert_eq!(policy_decisions(&p.state), 0, "the policy never ran");
    assert_eq!(p.reads(), 0, "no secret was read");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_request_the_policy_denies_reads_no_secret() {
    let (up, seen) = upstream().await;
    let p = proxy(&routes(up, "")).await;
    let (status, body) = send(p.proxy, up, "/deny", &[PLACEHOLDER]).await;
    assert_eq!(status, 403);
    assert!(body.contains("policy_denied"), "{body}");
    assert_eq!(policy_decisions(&p.state), 1);
    assert_eq!(p.reads(), 0, "the policy runs before any secret is read");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_rate_limited_request_reaches_neither_the_policy_nor_the_store() {
    let (up, seen) = upstream().await;
    let p = proxy(&routes(up, "    rate_limit: { per_hour: 1 }\n")).await;
    assert_eq!(send(p.proxy, up, "/v1", &[PLACEHOLDER]).await.0, 200);
    let (reads, decisions) = (p.reads(), policy_decisions(&p.state));
    let (status, body) = send(p.proxy, up, "/v1", &[PLACEHOLDER]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(p.reads(), reads, "no secret was read");
    assert_eq!(policy_decisions(&p.state), decisions, "the policy did not run");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn early_refusals_read_nothing_and_forward_nothing() {
    let (up, seen) = upstream().await;
    let p = proxy(&routes(up, "    paths: [\"/v1\"]\n")).await;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case] = &[
        ("/v1/../admin", &[PLACEHOLDER], 400, "bad_request"),
        ("/v1/..%2fadmin", &[PLACEHOLDER], 400, "bad_request"),
        ("/v2", &[], 403, "no_route"),
        ("/v1", &[("X-Leak", SECRET)], 403, "secret_in_request"),
        ("/v1", &[(SECRET, "1")], 403, "secret_in_request"),
        ("/v1/kw-placeholder-inproc", &[], 403, "placeholder_misplaced"),
        ("/v2/kw-placeholder-inproc", &[], 403, "placeholder_not_bound"),
    ];
    for (path, headers, status, code) in cases {
        let (got, body) = send(p.proxy, up, path, headers).await;
        assert_eq!((got, body.contains(code)), (*status, true), "{path}: {body}");
    }
    p.state.kill_switch.block(None);
    let (status, body) = send(p.proxy, up, "/v1", &[PLACEHOLDER]).await;
    assert_eq!((status, body.contains("agent_blocked")), (403, true), "{body}");
    assert_eq!(p.reads(), 0);
    assert_eq!(policy_decisions(&p.state), 0);
    assert!(seen.lock().unwrap().is_empty());
}
