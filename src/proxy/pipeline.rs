//! The ordered stages of one intercepted request. This is the only module that knows the order:
//! destination integrity → route → credential swap (binding check) → destination guard + forward → response.

use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, Scheme as UriScheme, Uri};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::headers::strip_hop_by_hop;
use super::{ProxyState, Scheme, Target};
use crate::config::Unmatched;
use crate::route::{has_dot_segment, normalize_host, split_host_port};
use crate::upstream::Body;

/// Runs the stages and turns any failure into its JSON response; never fails itself.
pub async fn handle(
    state: Arc<ProxyState>,
    target: Arc<Target>,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut ctx = RequestCtx::start(&target, req.method(), req.uri().path());
    let response = match forward(&state, &target, req, &mut ctx).await {
        Ok(response) => response,
        Err(error) => {
            ctx.fail(&error, &state.metrics);
            error.response(&ctx.id)
        }
    };
    ctx.finish(response.status(), &state.agent_id, &state.metrics);
    response
}

async fn forward(
    state: &ProxyState,
    target: &Target,
    req: Request<Incoming>,
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, ProxyError> {
    check_host(target, &req)?;
    let (mut parts, body) = req.into_parts();
    if has_dot_segment(parts.uri.path()) {
        return Err(ProxyError::BadRequest(
            "dot segments (`.` or `..`) are not allowed in the path",
        ));
    }
    let route = state
        .routes
        .find(&target.host, target.port, &parts.method, parts.uri.path());
    ctx.route = route.map(|r| r.name.clone());
    let plain_http = target.scheme == Scheme::Http;
    ctx.credentials =
        state
            .credentials
            .apply(route.map(|r| &**r), plain_http, &mut parts, &*state.secrets)?;
    let allow_private = match route {
        Some(route) => route.allow_private,
        None if state.unmatched == Unmatched::Tunnel => state.unmatched_allow_private,
        None => {
            return Err(ProxyError::NoRoute {
                host: target.authority(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
            })
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(HOST);
    parts.uri = upstream_uri(target, &parts.uri)?;
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
    let response = state.upstream.send(upstream_req, allow_private).await?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(Into::into).boxed_unsync(),
    ))
}

/// The `Host` header and the HTTP/2 `:authority` must name the CONNECT target; a port, when given, must match.
fn check_host<B>(target: &Target, req: &Request<B>) -> Result<(), ProxyError> {
    let header = req
        .headers()
        .get(HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let authority = req.uri().authority().map(Authority::as_str);
    for claimed in [header, authority].into_iter().flatten() {
        let ok = split_host_port(claimed).is_some_and(|(host, port)| {
            normalize_host(host) == target.host && port.is_none_or(|p| p == target.port)
        });
        if !ok {
            return Err(ProxyError::HostMismatch {
                header: claimed.to_string(),
                target: target.authority(),
            });
        }
    }
    Ok(())
}

fn upstream_uri(target: &Target, uri: &Uri) -> Result<Uri, ProxyError> {
    let scheme = match target.scheme {
        Scheme::Http => UriScheme::HTTP,
        Scheme::Https => UriScheme::HTTPS,
    };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Uri::builder()
        .scheme(scheme)
        .authority(target.authority())
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::BadRequest("the request target is not a valid URI"))
}
