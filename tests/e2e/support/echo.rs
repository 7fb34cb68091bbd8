//! The upstream that stands in for the internet: HTTPS (HTTP/1.1 and h2 by ALPN) or plain HTTP on 127.0.0.1.
//!
//! It records every request it receives (method, path, version, headers, body size) for tests to inspect, and
//! answers with header *names* and the path without its query only: reflecting values would hand the real secret back to the agent, which is
//! what the proxy must never let happen.
//!
//! Paths: `/apis/authentication.k8s.io/v1/tokenreviews` answers as the Kubernetes TokenReview API would for a
//! valid service-account token; `/oauth/token` is a fake OAuth2 token
//! endpoint; `/reflect` echoes the credential back
//! (see [`reflect`]); `/guarded` answers 401 unless the
//! credential is the one set with `accept_only`, and otherwise reflects it as `/reflect` does; `/sse?events=N` sends one event, waits for `release_gate`, then sends the rest (with `&every_ms=M`, one
//! event every M ms); `/stall` answers only after `release_gate`; `/slow?ms=M` after M ms; `/truncate` breaks off mid-body;
//! `/flaky?key=K&fail=N[&status=S][&retry_after=R]` fails the first N requests of key K with S (503); `/bytes?n=N` streams
//! N bytes; `/gzip-bomb` streams a 2 MB gzip of 2 GiB of zeros (see [`gzip_bomb`]); anything else counts the request body as it streams (uploads of any size) and gets a JSON
//! summary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// The body as text when it is small (form posts, JSON); empty for large bodies.
    pub body: String,
}

/// Assertion messages print requests; real secret values in them are masked so test output stays clean too.
impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mask = super::masked;
        let headers: Vec<(String, String)> = self.headers.iter().map(|(k, v)| (k.clone(), mask(v))).collect();
        f.debug_struct("Received")
            .field("method", &self.method)
            .field("path", &mask(&self.path))
            .field("version", &self.version)
            .field("headers", &headers)
            .field("body_len", &self.body_len)
            .field("body", &mask(&self.body))
            .finish()
    }
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

struct State {
    received: Mutex<Vec<Received>>,
    gate: watch::Sender<bool>,
    /// The `authorization` value `/guarded` accepts.
    accepted: Mutex<Option<String>>,
    oauth: Mutex<OAuth>,
    /// Requests seen per `key` by `/flaky`.
    flaky: Mutex<std::collections::HashMap<String, u64>>,
}

/// The fake OAuth2 token endpoint's behaviour and the tokens it issued.
struct OAuth {
    issued: u64,
    /// `expires_in` as sent: any JSON value (`1e19`, `-5`...).
    expires_in: serde_json::Value,
    failing: bool,
    /// A fixed answer (status, JSON body) instead of numbered tokens.
    answer: Option<(u16, serde_json::Value)>,
    /// Accept token requests and never answer them.
    stall: bool,
}

pub struct Echo {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub async fn https() -> Self {
        Self::start(true).await
    }

    pub async fn http() -> Self {
        Self::start(false).await
    }

    async fn start(tls: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            received: Mutex::new(Vec::new()),
            gate: watch::channel(false).0,
            accepted: Mutex::new(None),
            oauth: Mutex::new(OAuth {
                issued: 0,
                expires_in: 3600.into(),
                failing: false,
                answer: None,
                stall: false,
            }),
            flaky: Mutex::new(std::collections::HashMap::new()),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(super::pki::pki().server.clone());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (st, acceptor) = (st.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if tls {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    } else {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// From now on `/guarded` answers 401 unless `authorization` is exactly `value`.
    pub fn accept_only(&self, value: &str) {
        *self.state.accepted.lock().unwrap() = Some(value.to_string());
    }

    /// Lifetime (`expires_in`) of the access tokens `/oauth/token` issues from now on.
    pub fn token_lifetime(&self, seconds: u64) {
        self.state.oauth.lock().unwrap().expires_in = seconds.into();
    }

    /// `expires_in` of the tokens issued from now on, as any JSON value (`1e19`, `0`, `-5`, `"120"`...).
    pub fn token_expires_in(&self, value: serde_json::Value) {
        self.state.oauth.lock().unwrap().expires_in = value;
    }

    /// From now on `/oauth/token` answers `status` with `body` (`None`: numbered tokens again).
    pub fn token_endpoint_answers(&self, answer: Option<(u16, serde_json::Value)>) {
        self.state.oauth.lock().unwrap().answer = answer;
    }

    /// While true, `/oauth/token` reads the request, records it, and never answers.
    pub fn token_endpoint_stalls(&self, stall: bool) {
        self.state.oauth.lock().unwrap().stall = stall;
    }

    /// While true, `/oauth/token` answers 503.
    pub fn token_endpoint_failing(&self, failing: bool) {
        self.state.oauth.lock().unwrap().failing = failing;
    }

    /// Requests received by the token endpoint.
    pub fn token_requests(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/oauth/token")
            .collect()
    }

    pub fn release_gate(&self) {
        self.state.gate.send_replace(true);
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/early" {
        // Answers before reading the body, then reads and discards it, as nginx does with `return 200`.
        let mut body = body;
        tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
        return Response::new(Full::new(Bytes::from_static(b"stored")).boxed_unsync());
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut body_len = 0u64;
    let mut small = Vec::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_len += d.len() as u64;
                    if small.len() < 64 * 1024 {
                        small.extend_from_slice(d);
                    }
                }
            }
            Err(_) => break,
        }
    }
    let body_text = if body_len <= 64 * 1024 {
        String::from_utf8_lossy(&small).into_owned()
    } else {
        String::new()
    };
    let received = Received {
        method: parts.method.to_string(),
        path: path.clone(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body_len,
        body: body_text,
    };
    let header_names: Vec<String> = received.headers.iter().map(|(k, _)| k.clone()).collect();
    let authorized = {
        let accepted = state.accepted.lock().unwrap();
        accepted.is_none() || accepted.as_deref() == received.header("authorization")
    };
    state.received.lock().unwrap().push(received);
    let query = |key: &str| -> Option<u64> {
        parts
            .uri
            .query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    match parts.uri.path() {
        "/apis/authentication.k8s.io/v1/tokenreviews" => token_review(),
        "/oauth/token" => {
            if state.oauth.lock().unwrap().stall {
                std::future::pending::<()>().await;
            }
            let form = state.received.lock().unwrap().last().unwrap().body.clone();
            oauth_token(&state, &form)
        }
        "/gzip-bomb" => gzip_bomb(),
        "/guarded" if !authorized => Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"error":"invalid credential"}"#)).boxed_unsync())
            .unwrap(),
        "/reflect" | "/guarded" => reflect(
            parts.uri.query().unwrap_or(""),
            header_value(&parts.headers, "authorization"),
        ),
        "/sse" => sse(state, query("events").unwrap_or(3), query("every_ms")),
        "/stall" => {
            let _ = state.gate.subscribe().wait_for(|open| *open).await;
            Response::new(Full::new(Bytes::from_static(b"late")).boxed_unsync())
        }
        "/slow" => {
            tokio::time::sleep(std::time::Duration::from_millis(query("ms").unwrap_or(0))).await;
            Response::new(Full::new(Bytes::from_static(b"slow")).boxed_unsync())
        }
        "/flaky" => {
            let key = parts
                .uri
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("key="))
                .unwrap_or("")
                .to_string();
            let seen = {
                let mut flaky = state.flaky.lock().unwrap();
                let n = flaky.entry(key).or_insert(0);
                *n += 1;
                *n
            };
            if seen <= query("fail").unwrap_or(0) {
                let mut failure = Response::builder().status(query("status").unwrap_or(503) as u16);
                if let Some(secs) = query("retry_after") {
                    failure = failure.header("retry-after", secs);
                }
                failure
                    .body(Full::new(Bytes::from_static(b"try again")).boxed_unsync())
                    .unwrap()
            } else {
                Response::new(Full::new(Bytes::from(format!("ok after {seen} attempts"))).boxed_unsync())
            }
        }
        "/bytes" => bytes(query("n").unwrap_or(0)),
        "/truncate" => {
            // Promises 100 000 bytes, sends 1 000, then drops the connection.
            let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from(vec![b'x'; 1000])).await;
                drop(tx); // the body ends short of its Content-Length: the server must break the connection
            });
            Response::builder()
                .header("content-length", 100_000)
                .body(body.boxed_unsync())
                .unwrap()
        }
        _ => {
            let summary = serde_json::json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "header_names": header_names,
                "body_len": body_len,
            });
            Response::builder()
                .header("content-type", "application/json")
                .header("x-echo", "1")
                .body(Full::new(Bytes::from(summary.to_string())).boxed_unsync())
                .unwrap()
        }
    }
}

fn header_value(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// A careless upstream that hands the credential it received straight back: in a header and in the body,
/// optionally split across two chunks at byte `split`, as SSE events (`sse`), gzip-compressed whatever the
/// client asked for (`gzip`), or labelled with an encoding nobody can undo here (`encoding=br`).
fn reflect(query: &str, auth: String) -> Response<Body> {
    let has = |flag: &str| {
        query
            .split('&')
            .any(|kv| kv == flag || kv.starts_with(&format!("{flag}=")))
    };
    let split = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("split=")?.parse::<usize>().ok());
    let mut response = Response::builder().header("x-echo-auth", &auth);
    let mut body = if has("sse") {
        response = response.header("content-type", "text/event-stream");
        format!("data: {{\"token\": \"{auth}\"}}\n\ndata: done\n\n").into_bytes()
    } else {
        response = response.header("content-type", "application/json");
        serde_json::json!({ "you_sent": auth }).to_string().into_bytes()
    };
    if has("gzip") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&body).unwrap();
        body = gz.finish().unwrap();
        response = response.header("content-encoding", "gzip");
    }
    if has("encoding") {
        response = response.header("content-encoding", "br");
    }
    let (mut tx, channel) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    tokio::spawn(async move {
        let cut = split.unwrap_or(body.len()).min(body.len());
        let _ = tx.send_data(Bytes::copy_from_slice(&body[..cut])).await;
        if cut < body.len() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let _ = tx.send_data(Bytes::copy_from_slice(&body[cut..])).await;
        }
    });
    response.body(channel.boxed_unsync()).unwrap()
}

/// A fake OAuth2 token endpoint: numbered access tokens; for the refresh_token grant, a rotated refresh token
/// with every answer.
fn oauth_token(state: &State, form: &str) -> Response<Body> {
    let mut oauth = state.oauth.lock().unwrap();
    let json = |status: u16, v: serde_json::Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
            .unwrap()
    };
    if oauth.failing {
        return json(503, serde_json::json!({"error": "temporarily_unavailable"}));
    }
    if let Some((status, body)) = &oauth.answer {
        return json(*status, body.clone());
    }
    oauth.issued += 1;
    let n = oauth.issued;
    let mut answer = serde_json::json!({
        "access_token": format!("at-REALSECRET-{n}"),
        "token_type": "Bearer",
        "expires_in": oauth.expires_in.clone(),
    });
    if form.contains("grant_type=refresh_token") {
        answer["refresh_token"] = format!("rt-REALSECRET-{n}").into();
    }
    json(200, answer)
}

/// A Kubernetes TokenReview API stand-in: every token is the `keyward` service account of namespace `agents`
/// (the test JWT carries the same identity; the reviewer's credential is checked by the test afterwards).
fn token_review() -> Response<Body> {
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "status": {
            "authenticated": true,
            "user": {
                "username": "system:serviceaccount:agents:keyward",
                "uid": "5f1c-uid",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:agents"],
            },
        },
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review.to_string())).boxed_unsync())
        .unwrap()
}

/// Without `every_ms`, event 2 waits for the gate; with it, events come at that interval.
fn sse(state: Arc<State>, events: u64, every_ms: Option<u64>) -> Response<Body> {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    let mut gate = state.gate.subscribe();
    tokio::spawn(async move {
        for i in 1..=events {
            match every_ms {
                Some(ms) if i > 1 => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
                None if i == 2 => {
                    let _ = gate.wait_for(|open| *open).await;
                }
                _ => {}
            }
            if tx.send_data(Bytes::from(format!("data: event {i}\n\n"))).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body.boxed_unsync())
        .unwrap()
}

fn bytes(n: u64) -> Response<Body> {
    const CHUNK: usize = 64 * 1024;
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let mut left = n;
        while left > 0 {
            let take = left.min(CHUNK as u64) as usize;
            if tx.send_data(chunk.slice(..take)).await.is_err() {
                return;
            }
            left -= take as u64;
        }
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", n)
        .body(body.boxed_unsync())
        .unwrap()
}

/// Decompressed size of [`gzip_bomb`]: 2 GiB of zeros.
pub const BOMB_SIZE: u64 = 2 << 30;

/// A hostile upstream's decompression bomb, sent as `Content-Encoding: gzip` whatever the client asked for,
/// in 64 KiB chunks with backpressure.
fn gzip_bomb() -> Response<Body> {
    let bomb = bomb_bytes();
    let length = bomb.len();
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    tokio::spawn(async move {
        for at in (0..bomb.len()).step_by(64 * 1024) {
            let chunk = bomb.slice(at..(at + 64 * 1024).min(bomb.len()));
            if tx.send_data(chunk).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "gzip")
        .header("content-length", length)
        .body(body.boxed_unsync())
        .unwrap()
}

/// One valid gzip member holding [`BOMB_SIZE`] zeros, about 2 MB, made once per test process. Compressing
/// 2 GiB would take minutes in a debug build; instead each 1 MiB of zeros is deflated after a full flush,
/// which resets the compressor, so every block after the first is the same bytes and is repeated.
pub fn bomb_bytes() -> Bytes {
    static BOMB: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        use flate2::{Compress, Compression, Crc, FlushCompress};
        const MIB: usize = 1 << 20;
        let zeros = vec![0u8; MIB];
        let mut deflate = Compress::new(Compression::best(), false);
        let mut block = |input: &[u8], flush: FlushCompress| {
            let mut out = Vec::with_capacity(64 * 1024);
            let before = deflate.total_in();
            deflate.compress_vec(input, &mut out, flush).unwrap();
            assert_eq!(deflate.total_in() - before, input.len() as u64, "all input taken");
            assert!(out.len() < out.capacity(), "block fits its buffer");
            out
        };
        let first = block(&zeros, FlushCompress::Full);
        let second = block(&zeros, FlushCompress::Full);
        assert_eq!(
            second,
            block(&zeros, FlushCompress::Full),
            "a full flush makes blocks repeat"
        );
        let end = block(&[], FlushCompress::Finish);
        let blocks = (BOMB_SIZE as usize) / MIB;
        let mut check = Crc::new();
        check.update(&zeros);
        assert_eq!(crc32_of_zeros(MIB as u64), check.sum());
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        out.extend_from_slice(&first);
        for _ in 1..blocks {
            out.extend_from_slice(&second);
        }
        out.extend_from_slice(&end);
        out.extend_from_slice(&crc32_of_zeros(BOMB_SIZE).to_le_bytes());
        out.extend_from_slice(&(BOMB_SIZE as u32).to_le_bytes());
        Bytes::from(out)
    })
    .clone()
}

/// CRC-32 (the gzip one) of `n` zero bytes, in O(log n): appending a zero byte is a linear map of the CRC
/// register, raised to the power `n` by squaring.
fn crc32_of_zeros(n: u64) -> u32 {
    type Matrix = [u32; 32];
    let apply = |m: &Matrix, v: u32| (0..32).filter(|i| v >> i & 1 == 1).fold(0, |acc, i| acc ^ m[i]);
    let mut byte: Matrix = [0; 32];
    for (i, column) in byte.iter_mut().enumerate() {
        let mut s = 1u32 << i;
        for _ in 0..8 {
            s = if s & 1 == 1 { (s >> 1) ^ 0xEDB8_8320 } else { s >> 1 };
        }
        *column = s;
    }
    let mut state = !0u32;
    let mut n = n;
    while n > 0 {
        if n & 1 == 1 {
            state = apply(&byte, state);
        }
        let square: Matrix = std::array::from_fn(|i| apply(&byte, byte[i]));
        byte = square;
        n >>= 1;
    }
    !state
}
