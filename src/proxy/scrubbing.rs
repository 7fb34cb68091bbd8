//! Applying the scrubber to a response on its way to the agent, and the outbound canary on requests.
//!
//! What a response can carry back is every header (values split over several lines included), the trailers
//! and the body in whatever encoding the upstream claims. The reason phrase is dropped by the pipeline. Each
//! channel is scrubbed of every form Keyward writes a secret in ([`crate::credentials::forms`]); a body in an
//! encoding that cannot be scrubbed is refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};
use http_body::{Body as HttpBody, Frame};

use super::error::ProxyError;
use super::inflate::Inflate;
use super::runtime::RouteRuntime;
use super::ProxyState;
use crate::scrub::{Scrubber, Stream, RELEASE_AFTER};
use crate::secrets::Secret;
use crate::telemetry::metrics::Metrics;
use crate::upstream::{Body, BoxError};

/// One scope's scrubber (a route's, or the canary's for every credential), rebuilt only when the store's
/// values change ([`SecretStore::generation`](crate::secrets::SecretStore::generation)): between changes a
/// request reads no secret value for it at all. A build runs on the blocking pool: it grows with the secrets'
/// length and must never stall the proxy's workers. `app::build` fills every slot before serving.
#[derive(Default)]
pub struct ScrubberSlot {
    built: RwLock<Option<Arc<Built>>>,
}

/// A scrubber and the values it was built from, as of one generation of the store.
struct Built {
    generation: u64,
    pairs: Vec<(Secret, Arc<str>)>,
    scrubber: Option<Arc<Scrubber>>,
}

impl ScrubberSlot {
    async fn get(&self, generation: u64, pairs: impl FnOnce() -> Vec<(Secret, Arc<str>)>) -> Arc<Built> {
        let cached = self.built.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(built) = cached.filter(|b| b.generation == generation) {
            return built;
        }
        let pairs = pairs();
        let built = Arc::new(Built {
            generation,
            scrubber: build(pairs.clone()).await,
            pairs,
        });
        *self.built.write().unwrap_or_else(|e| e.into_inner()) = Some(built.clone());
        built
    }
}

/// A scrubber for every form of every value, replaced by its placeholder; built on the blocking pool.
async fn build(pairs: Vec<(Secret, Arc<str>)>) -> Option<Arc<Scrubber>> {
    let build = move || {
        let patterns = pairs.iter().flat_map(|(secret, placeholder)| {
            let replacement: Arc<[u8]> = Arc::from(placeholder.as_bytes());
            crate::credentials::forms(secret.expose())
                .into_iter()
                .map(move |form| (form, replacement.clone()))
        });
        Scrubber::new(patterns.collect::<Vec<_>>()).map(Arc::new)
    };
    tokio::task::spawn_blocking(build).await.ok().flatten()
}

/// Fills the canary's and every route's slot from the current values, so requests find them built.
pub async fn prime(state: &ProxyState) {
    canary_scrubber(state).await;
    for route in state.routes.iter() {
        for_route(state, route, &[]).await;
    }
}

/// The scrubber for a route's responses: every current value of the route's credentials, and every value
/// written into this request (fetched or re-read mid-request, they may be newer than what the store held when
/// the slot was built, or already replaced again): then a scrubber is built for this response alone.
pub async fn for_route(state: &ProxyState, route: &RouteRuntime, written: &[(Secret, &str)]) -> Option<Arc<Scrubber>> {
    let generation = state.secrets.generation();
    let built = route
        .scrubber
        .get(generation, || current(state, Some(route.name())))
        .await;
    let extra: Vec<(Secret, Arc<str>)> = written
        .iter()
        .filter(|(secret, _)| !built.pairs.iter().any(|(known, _)| known == secret))
        .map(|(secret, placeholder)| (secret.clone(), Arc::from(*placeholder)))
        .collect();
    if extra.is_empty() {
        return built.scrubber.clone();
    }
    build(built.pairs.iter().cloned().chain(extra).collect()).await
}

fn current(state: &ProxyState, route: Option<&str>) -> Vec<(Secret, Arc<str>)> {
    state
        .credentials
        .placeholders(route)
        .filter_map(|(secret, placeholder)| Some((state.secrets.get(secret).ok()?, Arc::from(placeholder))))
        .collect()
}

/// The scrubber of every credential's current values, for the outbound canary.
pub async fn canary_scrubber(state: &ProxyState) -> Option<Arc<Scrubber>> {
    let generation = state.secrets.generation();
    let built = state.canary.get(generation, || current(state, None)).await;
    built.scrubber.clone()
}

/// Whether `text` (a path or query) carries a real secret, raw or percent-encoded.
pub fn in_url_part(scrubber: &Scrubber, text: &str) -> bool {
    scrubber.found_in(text.as_bytes())
        || scrubber.found_in(
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .as_bytes(),
        )
}

/// The outbound canary: a request that already carries a real secret (the agent learned one somehow) is
/// refused before anything is written or sent. The head (path, headers, query) is checked first thing, so
/// no error message or record quotes it; the body when it is in memory.
pub fn canary(
    state: &ProxyState,
    scrubber: Option<&Scrubber>,
    parts: &http::request::Parts,
    body: Option<&[u8]>,
) -> Result<(), ProxyError> {
    let Some(scrubber) = scrubber else {
        return Ok(());
    };
    let place = if in_url_part(scrubber, parts.uri.path()) {
        "the path"
    } else if parts
        .headers
        .iter()
        .any(|(name, value)| scrubber.found_in(name.as_str().as_bytes()) || scrubber.found_in(value.as_bytes()))
    {
        "a header"
    } else if parts.uri.query().is_some_and(|q| in_url_part(scrubber, q)) {
        "the query"
    } else if body.is_some_and(|b| scrubber.found_in(b)) {
        "the body"
    } else {
        return Ok(());
    };
    state.metrics.secret_in_request();
    Err(ProxyError::SecretInRequest { place })
}

/// How a response body is encoded, decided from every `Content-Encoding` value before hop-by-hop stripping
/// (which a `Connection: Content-Encoding` would otherwise turn into an unscrubbed gzip body).
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    /// Only identity, gzip and deflate can be scrubbed; stacked or unknown encodings are refused, and so is a
    /// transfer coding other than chunked (the client undoes only chunked, and `Transfer-Encoding` is
    /// stripped as hop-by-hop: a `gzip, chunked` body would pass unlabelled and unscrubbed).
    pub fn of(headers: &HeaderMap) -> Result<Self, ProxyError> {
        let codings = |name| -> Result<Vec<String>, ProxyError> {
            let mut out = Vec::new();
            for value in headers.get_all(name) {
                let text = value.to_str().map_err(|_| ProxyError::Unscrubbable)?;
                out.extend(
                    text.split(',')
                        .map(|c| c.trim().to_ascii_lowercase())
                        .filter(|c| !c.is_empty() && c != "identity"),
                );
            }
            Ok(out)
        };
        if codings(TRANSFER_ENCODING)?.iter().any(|c| c != "chunked") {
            return Err(ProxyError::Unscrubbable);
        }
        match codings(CONTENT_ENCODING)?.as_slice() {
            [] => Ok(Self::Identity),
            [one] if one == "gzip" || one == "x-gzip" => Ok(Self::Gzip),
            [one] if one == "deflate" => Ok(Self::Deflate),
            _ => Err(ProxyError::Unscrubbable),
        }
    }
}

/// Rewrites echoed secrets in `headers`. A header whose name spells a secret, or a secret split over lines of
/// one header (which a client joins), cannot be rewritten and is refused.
pub fn scrub_headers(scrubber: &Scrubber, headers: &mut HeaderMap) -> Result<usize, ProxyError> {
    if headers.keys().any(|name| scrubber.found_in(name.as_str().as_bytes())) {
        return Err(ProxyError::SplitSecret);
    }
    let mut found = 0;
    for value in headers.values_mut() {
        if scrubber.found_in(value.as_bytes()) {
            let (clean, n) = scrubber.replace_all(value.as_bytes());
            found += n;
            *value = HeaderValue::from_bytes(&clean).unwrap_or_else(|_| HeaderValue::from_static("<scrubbed>"));
        }
    }
    // Checked after each line is scrubbed: a line holding a whole secret must not hide a split beside it.
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        if let (Some(_), Some(_)) = (values.next(), values.next()) {
            let joined: Vec<u8> = headers
                .get_all(name)
                .iter()
                .flat_map(|v| v.as_bytes().to_vec())
                .collect();
            if scrubber.found_in(&joined) {
                return Err(ProxyError::SplitSecret);
            }
        }
    }
    Ok(found)
}

/// Rewrites echoed secrets in response headers and sets up the body (and trailers) to be scrubbed as they
/// stream. Compressed bodies are decoded first, as fast as the agent reads them.
pub fn response(
    scrubber: Arc<Scrubber>,
    encoding: Encoding,
    headers: &mut HeaderMap,
    body: Body,
    metrics: Arc<Metrics>,
    route: String,
) -> Result<Body, ProxyError> {
    let found = scrub_headers(&scrubber, headers)?;
    if found > 0 {
        metrics.scrubbed(&route, "header", found);
    }
    let decoder = match encoding {
        Encoding::Identity => None,
        Encoding::Gzip => Some(Inflate::gzip()),
        Encoding::Deflate => Some(Inflate::zlib()),
    };
    if decoder.is_some() {
        headers.remove(CONTENT_ENCODING);
    }
    headers.remove(CONTENT_LENGTH);
    Ok(http_body_util::BodyExt::boxed_unsync(Scrubbed {
        empty: body.is_end_stream(),
        inner: body,
        decoder,
        scrubber: scrubber.clone(),
        stream: Stream::new(scrubber),
        release: None,
        metrics,
        route,
        ended: false,
        trailers: None,
    }))
}

struct Scrubbed {
    inner: Body,
    decoder: Option<Inflate>,
    scrubber: Arc<Scrubber>,
    stream: Stream,
    /// Armed while bytes are held back and the upstream is quiet.
    release: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<Metrics>,
    route: String,
    ended: bool,
    /// Scrubbed trailers, sent after the last held-back bytes.
    trailers: Option<HeaderMap>,
    /// The upstream's body had ended with its head (HEADERS with END_STREAM, or no content): nothing, not
    /// even trailers, can follow.
    empty: bool,
}

impl Scrubbed {
    fn count(&self, n: usize) {
        if n > 0 {
            self.metrics.scrubbed(&self.route, "body", n);
        }
    }

    fn push(&mut self, plain: &[u8]) -> Option<Bytes> {
        let (out, n) = self.stream.push(plain);
        self.count(n);
        self.release = None;
        (!out.is_empty()).then_some(out)
    }

    fn flush(&mut self) -> Option<Bytes> {
        let (out, n) = self.stream.flush();
        self.count(n);
        self.release = None;
        (!out.is_empty()).then_some(out)
    }

    fn scrub_trailers(&mut self, mut trailers: HeaderMap) -> HeaderMap {
        match scrub_headers(&self.scrubber, &mut trailers) {
            Ok(n) => {
                if n > 0 {
                    self.metrics.scrubbed(&self.route, "trailer", n);
                }
                trailers
            }
            Err(_) => HeaderMap::new(),
        }
    }
}

/// A compressed body that cannot be decoded (corrupt, truncated, or a decompression bomb) ends the response
/// in error, and says why in the log (the agent sees a broken transfer, after what was already sent).
fn cut_off(route: &str, error: std::io::Error) -> BoxError {
    tracing::warn!(route, error = %error, "response body cut off");
    BoxError::from(error)
}

impl HttpBody for Scrubbed {
    type Data = Bytes;
    type Error = BoxError;

    /// An answer whose body had ended with its head (a gRPC trailers-only response, a 204) ends with its head
    /// here too, as the upstream sent it; a gRPC client reads a DATA frame after it as a broken stream.
    fn is_end_stream(&self) -> bool {
        self.empty
    }

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(decoder) = this.decoder.as_mut().filter(|d| d.has_input()) {
                let plain = decoder.step().map_err(|e| cut_off(&this.route, e))?;
                if let Some(out) = this.push(&plain) {
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                continue;
            }
            if this.ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    if !this.stream.holding() {
                        return Poll::Pending;
                    }
                    let release = this
                        .release
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(RELEASE_AFTER)));
                    if release.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if let Some(out) = this.flush() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.decoder.as_mut() {
                        Some(decoder) => decoder.feed(data),
                        None => {
                            if let Some(out) = this.push(&data) {
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                        }
                    },
                    Err(frame) => {
                        // Trailers end the body: what is held goes out first, the trailers on the next poll.
                        if let Ok(trailers) = frame.into_trailers() {
                            if let Some(decoder) = &this.decoder {
                                decoder.finish().map_err(|e| cut_off(&this.route, e))?;
                            }
                            this.ended = true;
                            this.trailers = Some(this.scrub_trailers(trailers));
                            if let Some(out) = this.flush() {
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                        }
                    }
                },
                Poll::Ready(None) => {
                    if let Some(decoder) = &this.decoder {
                        decoder.finish().map_err(|e| cut_off(&this.route, e))?;
                    }
                    this.ended = true;
                    if let Some(out) = this.flush() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}
