//! A hostile upstream: its only job is to hand the real secret it received back to the agent, in every place a
//! response can carry it. It serves HTTPS on two ports: one that speaks HTTP/1.1 only and writes every response
//! byte itself (custom reason phrases, repeated or odd headers, interim responses, chunk boundaries and trailers
//! exactly where the test wants them), and one that speaks HTTP/2 only (hyper), for what h2 can carry (headers,
//! trailers, data frames).
//!
//! What to answer is the test's: a script maps what the upstream received ([`Seen`]) to a [`Reply`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The protocol the upstream answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Up {
    /// HTTP/1.1, written byte by byte.
    H1,
    /// HTTP/2 (hyper).
    H2,
}

/// What the upstream received: the credentials Keyward wrote into the request.
#[derive(Clone)]
pub struct Seen {
    pub up: Up,
    /// The path without the query.
    pub path: String,
    /// The `Authorization` value (`Bearer <real secret>`).
    pub authorization: String,
    /// The `OpenAI-Organization` value (a real secret injected on every request).
    pub organization: String,
    /// The value of the query parameter `key`, exactly as it arrived (percent-encoded).
    pub key: String,
}

/// Real secret values in assertion messages would end up in the test output: masked.
impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mask = super::masked;
        f.debug_struct("Seen")
            .field("up", &self.up)
            .field("path", &self.path)
            .field("authorization", &mask(&self.authorization))
            .field("organization", &mask(&self.organization))
            .field("key", &mask(&self.key))
            .finish()
    }
}

/// How an HTTP/1.1 body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, one chunk per entry of [`Reply::chunks`], then the trailers.
    Chunked,
    /// Neither: the body ends when the connection closes.
    Close,
}

/// One response, as the upstream writes it.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// HTTP/1.1 only.
    pub reason: String,
    /// HTTP/1.1 only: complete interim response heads (`HTTP/1.1 103 ...\r\n...\r\n\r\n`) written first.
    pub interim: Vec<String>,
    /// In order, repeats allowed. Over HTTP/2, connection-specific ones (`Connection`, `Transfer-Encoding`) are
    /// not sent.
    pub headers: Vec<(String, String)>,
    /// Body pieces: HTTP/1.1 chunks or HTTP/2 data frames, written back to back with no pause.
    pub chunks: Vec<Vec<u8>>,
    pub framing: Framing,
    /// HTTP/1.1 chunked only: written after every chunk size (`1a;<extension>`).
    pub chunk_extension: Option<String>,
    pub trailers: Vec<(String, String)>,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            reason: http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Whatever")
                .to_string(),
            interim: Vec::new(),
            headers: Vec::new(),
            chunks: Vec::new(),
            framing: Framing::Length,
            chunk_extension: None,
            trailers: Vec::new(),
        }
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    pub fn interim(mut self, head: impl Into<String>) -> Self {
        self.interim.push(head.into());
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The whole body in one piece.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.chunks = vec![body.into()];
        self
    }

    /// The body in these pieces, chunked over HTTP/1.1.
    pub fn chunks(mut self, chunks: Vec<Vec<u8>>) -> Self {
        self.chunks = chunks;
        self.framing = Framing::Chunked;
        self
    }

    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    pub fn chunk_extension(mut self, extension: impl Into<String>) -> Self {
        self.chunk_extension = Some(extension.into());
        self.framing = Framing::Chunked;
        self
    }

    /// A trailer field (the body is chunked over HTTP/1.1).
    pub fn trailer(mut self, name: &str, value: impl Into<String>) -> Self {
        self.trailers.push((name.to_string(), value.into()));
        self.framing = Framing::Chunked;
        self
    }

    /// The response as HTTP/1.1 bytes, in the pieces they are written in.
    fn h1_pieces(&self) -> Vec<Vec<u8>> {
        let mut head: String = self.interim.concat();
        head.push_str(&format!("HTTP/1.1 {} {}\r\n", self.status, self.reason));
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let has = |name: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !has("connection") {
            // One response per connection: nothing is left in keyward's pool to race a close.
            head.push_str("Connection: close\r\n");
        }
        // No body, so no framing, for 1xx, 204 and 304.
        let bodiless = self.status < 200 || self.status == 204 || self.status == 304;
        match self.framing {
            _ if bodiless => {}
            Framing::Length => {
                let len: usize = self.chunks.iter().map(Vec::len).sum();
                head.push_str(&format!("Content-Length: {len}\r\n"));
            }
            Framing::Chunked => {
                if !has("transfer-encoding") {
                    head.push_str("Transfer-Encoding: chunked\r\n");
                }
                if !self.trailers.is_empty() && !has("trailer") {
                    let names: Vec<&str> = self.trailers.iter().map(|(k, _)| k.as_str()).collect();
                    head.push_str(&format!("Trailer: {}\r\n", names.join(", ")));
                }
            }
            Framing::Close => {}
        }
        head.push_str("\r\n");
        let mut pieces = vec![head.into_bytes()];
        match self.framing {
            Framing::Length | Framing::Close => pieces.extend(self.chunks.iter().cloned()),
            Framing::Chunked => {
                for chunk in self.chunks.iter().filter(|c| !c.is_empty()) {
                    let extension = self.chunk_extension.as_ref().map_or(String::new(), |e| format!(";{e}"));
                    let mut piece = format!("{:x}{extension}\r\n", chunk.len()).into_bytes();
                    piece.extend_from_slice(chunk);
                    piece.extend_from_slice(b"\r\n");
                    pieces.push(piece);
                }
                let mut last = String::from("0\r\n");
                for (k, v) in &self.trailers {
                    last.push_str(&format!("{k}: {v}\r\n"));
                }
                last.push_str("\r\n");
                pieces.push(last.into_bytes());
            }
        }
        pieces
    }

    fn h2_response(&self) -> http::Response<Frames> {
        let mut response = http::Response::builder().status(self.status);
        for (k, v) in &self.headers {
            let name = k.to_ascii_lowercase();
            if ["connection", "transfer-encoding", "keep-alive", "upgrade", "trailer"].contains(&name.as_str()) {
                continue;
            }
            response = response.header(name, v);
        }
        let mut frames: VecDeque<Frame<Bytes>> = self
            .chunks
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| Frame::data(Bytes::from(c.clone())))
            .collect();
        if !self.trailers.is_empty() {
            let mut map = http::HeaderMap::new();
            for (k, v) in &self.trailers {
                map.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            frames.push_back(Frame::trailers(map));
        }
        response.body(Frames(frames)).unwrap()
    }
}

/// A body that yields its frames back to back.
pub struct Frames(VecDeque<Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// Maps what the upstream received to what it answers.
pub type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct Hostile {
    /// HTTPS, HTTP/1.1 only (ALPN `http/1.1`), raw responses.
    pub h1: SocketAddr,
    /// HTTPS, HTTP/2 only (ALPN `h2`).
    pub h2: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Hostile {
    pub async fn start(script: Script) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h1, t1) = listen(Up::H1, script.clone(), seen.clone()).await;
        let (h2, t2) = listen(Up::H2, script, seen.clone()).await;
        Self {
            h1,
            h2,
            seen,
            tasks: vec![t1, t2],
        }
    }

    pub fn port(&self, up: Up) -> u16 {
        match up {
            Up::H1 => self.h1.port(),
            Up::H2 => self.h2.port(),
        }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn listen(up: Up, script: Script, seen: Arc<Mutex<Vec<Seen>>>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = (*super::pki::pki().server).clone();
    config.alpn_protocols = vec![match up {
        Up::H1 => b"http/1.1".to_vec(),
        Up::H2 => b"h2".to_vec(),
    }];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, script, seen) = (acceptor.clone(), script.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                match up {
                    Up::H1 => serve_h1(tls, &script, &seen).await,
                    Up::H2 => serve_h2(tls, script, seen).await,
                }
            });
        }
    });
    (addr, task)
}

/// The value of query parameter `name`, as it appears in the request target.
fn query_value(target: &str, name: &str) -> String {
    target
        .split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("")
        .to_string()
}

/// One request, one raw response, then the connection closes.
async fn serve_h1<S>(mut tls: S, script: &Script, seen: &Mutex<Vec<Seen>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("/").to_string();
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    // A request body (none is expected) is read so the answer is not a reset.
    let length: usize = header("content-length").parse().unwrap_or(0);
    let mut body_read = buf.len() - head_end - 4;
    while body_read < length {
        let mut chunk = [0u8; 4096];
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body_read += n,
        }
    }
    let request = Seen {
        up: Up::H1,
        path: target.split('?').next().unwrap_or("/").to_string(),
        authorization: header("authorization"),
        organization: header("openai-organization"),
        key: query_value(&target, "key"),
    };
    seen.lock().unwrap().push(request.clone());
    for piece in script(&request).h1_pieces() {
        if tls.write_all(&piece).await.is_err() || tls.flush().await.is_err() {
            return;
        }
    }
    let _ = tls.shutdown().await;
}

async fn serve_h2<S>(tls: S, script: Script, seen: Arc<Mutex<Vec<Seen>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (script, seen) = (script.clone(), seen.clone());
        async move {
            let value = |name: &str| {
                req.headers()
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default()
            };
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
            let request = Seen {
                up: Up::H2,
                path: req.uri().path().to_string(),
                authorization: value("authorization"),
                organization: value("openai-organization"),
                key: query_value(&target, "key"),
            };
            seen.lock().unwrap().push(request.clone());
            Ok::<_, Infallible>(script(&request).h2_response())
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `data` in the zlib format (what HTTP calls `deflate`).
pub fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `data` as raw deflate (no zlib header), which some servers send as `deflate`.
pub fn raw_deflate(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
