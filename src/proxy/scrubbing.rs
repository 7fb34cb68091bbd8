//! Applying the scrubber to a response on its way to the agent, and the outbound canary on requests.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderMap, HeaderValue};
use http_body::{Body as HttpBody, Frame};

use super::error::ProxyError;
use super::ProxyState;
use crate::scrub::{Scrubber, Stream};
use crate::telemetry::metrics::Metrics;
use crate::upstream::{Body, BoxError};

/// The scrubber for `scope` (a route name, or `*` for every credential) built from current secret values.
pub fn scrubber(state: &ProxyState, route: Option<&str>) -> Option<Arc<Scrubber>> {
    let pairs: Vec<(String, String)> = state
        .credentials
        .placeholders(route)
        .filter_map(|(secret, placeholder)| {
            Some((
                state.secrets.get(secret).ok()?.expose().to_string(),
                placeholder.to_string(),
            ))
        })
        .collect();
    if pairs.is_empty() {
        return None;
    }
    state.scrubbers.get(route.unwrap_or("*"), pairs)
}

/// The outbound canary: a request that already carries a real secret (the agent learned one somehow) is
/// refused before anything is written or sent. Checks headers, the query, and the body when it is in memory.
pub fn canary(state: &ProxyState, parts: &http::request::Parts, body: Option<&[u8]>) -> Result<(), ProxyError> {
    let Some(scrubber) = scrubber(state, None) else {
        return Ok(());
    };
    let in_headers = parts.headers.values().any(|v| scrubber.found_in(v.as_bytes()));
    let in_query = parts.uri.query().is_some_and(|q| {
        scrubber.found_in(q.as_bytes())
            || scrubber.found_in(percent_encoding::percent_decode_str(q).decode_utf8_lossy().as_bytes())
    });
    let in_body = body.is_some_and(|b| scrubber.found_in(b));
    if in_headers || in_query || in_body {
        let place = if in_headers {
            "a header"
        } else if in_query {
            "the query"
        } else {
            "the body"
        };
        state.metrics.secret_in_request();
        return Err(ProxyError::SecretInRequest { place });
    }
    Ok(())
}

/// Rewrites echoed secrets in response headers and sets up the body to be scrubbed as it streams.
/// Compressed bodies (gzip, deflate) are decoded first; any other encoding cannot be scrubbed and is refused.
pub fn response(
    scrubber: Arc<Scrubber>,
    headers: &mut HeaderMap,
    body: Body,
    metrics: Arc<Metrics>,
    route: String,
) -> Result<Body, ProxyError> {
    let mut found = 0;
    for value in headers.values_mut() {
        if scrubber.found_in(value.as_bytes()) {
            let (clean, n) = scrubber.replace_all(value.as_bytes());
            found += n;
            *value = HeaderValue::from_bytes(&clean).unwrap_or_else(|_| HeaderValue::from_static("<scrubbed>"));
        }
    }
    if found > 0 {
        metrics.scrubbed(&route, "header", found);
    }
    let decoder = match headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => None,
        Some(e) if e == "identity" => None,
        Some(e) if e == "gzip" || e == "x-gzip" => Some(Decoder::Gzip(flate2::write::GzDecoder::new(Vec::new()))),
        Some(e) if e == "deflate" => Some(Decoder::Deflate(flate2::write::ZlibDecoder::new(Vec::new()))),
        Some(e) => return Err(ProxyError::Unscrubbable { encoding: e }),
    };
    if decoder.is_some() {
        headers.remove(CONTENT_ENCODING);
    }
    headers.remove(CONTENT_LENGTH);
    Ok(http_body_util::BodyExt::boxed_unsync(Scrubbed {
        inner: body,
        decoder,
        stream: Stream::new(scrubber),
        metrics,
        route,
        done: false,
    }))
}

enum Decoder {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
}

impl Decoder {
    fn feed(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        use std::io::Write;
        match self {
            Self::Gzip(d) => {
                d.write_all(data)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Self::Deflate(d) => {
                d.write_all(data)?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }

    fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Gzip(d) => d.try_finish().map(|()| std::mem::take(d.get_mut())),
            Self::Deflate(d) => d.try_finish().map(|()| std::mem::take(d.get_mut())),
        }
    }
}

struct Scrubbed {
    inner: Body,
    decoder: Option<Decoder>,
    stream: Stream,
    metrics: Arc<Metrics>,
    route: String,
    done: bool,
}

impl Scrubbed {
    fn emit(&mut self, plain: &[u8]) -> Bytes {
        let (out, n) = self.stream.push(plain);
        if n > 0 {
            self.metrics.scrubbed(&self.route, "body", n);
        }
        out
    }
}

impl HttpBody for Scrubbed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let plain = match self.decoder.as_mut() {
                        Some(d) => d.feed(&data).map_err(BoxError::from)?,
                        None => data.to_vec(),
                    };
                    let out = self.emit(&plain);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let rest = match self.decoder.as_mut() {
                        Some(d) => d.finish().map_err(BoxError::from)?,
                        None => Vec::new(),
                    };
                    let mut out = self.emit(&rest).to_vec();
                    out.extend_from_slice(&self.stream.finish());
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}
