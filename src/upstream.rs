//! Outbound connections: a pooled hyper-util client over certificate-verified rustls, and the destination guard
//! that keeps agents off loopback, link-local (cloud metadata), private and other non-public addresses.
//!
//! The guard lives in the connector's resolver, so the address that was checked is the address connected to:
//! there is no window in which a second DNS answer could swap in a forbidden one.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy: streamed, never collected.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;
type PooledClient = Client<TimedConnector, Body>;

/// Which addresses a destination may resolve to: the destination guard's setting for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// Public addresses only: the default for every route.
    Public,
    /// Any address, private, loopback and link-local included (a route's `allow_private: true`).
    Any,
    /// Private-network addresses only (RFC 1918, 100.64/10, IPv6 ULA): in-cluster services reached by
    /// `unmatched: tunnel_private`. Never public addresses, and never loopback or link-local (cloud metadata).
    Internal,
}

impl Reach {
    /// `Any` when a route sets `allow_private`, else `Public`.
    pub fn allowing_private(allow_private: bool) -> Self {
        if allow_private {
            Self::Any
        } else {
            Self::Public
        }
    }

    pub fn admits(self, ip: IpAddr) -> bool {
        match self {
            Self::Public => is_public(ip),
            Self::Any => true,
            Self::Internal => is_internal(ip),
        }
    }
}

/// How connections for one route are made: which addresses are allowed and how long each phase may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectOptions {
    pub reach: Reach,
    pub connect: Duration,
    /// TLS handshake, after TCP is up; `None` for no limit of its own.
    pub tls: Option<Duration>,
    /// Never negotiate HTTP/2 (WebSocket upgrades).
    pub http1_only: bool,
    /// The client certificate presented, by its fingerprint ([`Upstream::identity`]): connections with
    /// different certificates (or none) never share a pool.
    pub identity: Option<Identity>,
}

/// A registered client certificate: the SHA-256 of its chain and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity([u8; 32]);

/// The part of an upstream exchange that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Tls,
    ResponseHeaders,
}

impl Phase {
    /// The name in the refusal body's `phase` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::ResponseHeaders => "response_headers",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{host} resolves only to loopback, private or link-local addresses, which need allow_private (on the route, or unmatched_allow_private)")]
    Forbidden { host: String },
    #[error(
        "{host} resolves to an address outside the private networks; unmatched: tunnel_private reaches only those"
    )]
    NotInternal { host: String },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot connect to {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("upstream request to {host} failed: {reason}")]
    Request { host: String, reason: String },
    #[error("upstream {host}: {} timed out", phase.as_str())]
    Timeout { host: String, phase: Phase },
    #[error("{path}: {message}")]
    Roots { path: String, message: String },
    #[error("{host}:{port} is one of Keyward's own listeners, which are never an upstream")]
    OwnListener { host: String, port: u16 },
    #[error("the client certificate or key of route `{route}` does not load: {reason}")]
    ClientCertificate { route: String, reason: String },
}

/// What the upstream side needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub extra_roots: Vec<PathBuf>,
    pub resolve: HashMap<String, Vec<IpAddr>>,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
}

pub struct Upstream {
    tls: Tls,
    pool_idle_timeout: Duration,
    default_connect: Duration,
    resolver: GuardedResolver,
    /// One pool per distinct [`ConnectOptions`]; routes with the same options share connections.
    clients: std::sync::RwLock<HashMap<ConnectOptions, PooledClient>>,
    /// TLS settings presenting each registered client certificate.
    identities: std::sync::RwLock<HashMap<Identity, rustls::ClientConfig>>,
    /// Keyward's own listeners (proxy, admin): a route that names their host and port must still not reach
    /// them, or the agent could lift its own kill switch through the proxy.
    own: std::sync::RwLock<Vec<SocketAddr>>,
}

impl Upstream {
    pub fn new(settings: Settings) -> Result<Self, UpstreamError> {
        Ok(Self {
            tls: client_tls(&settings.extra_roots)?,
            pool_idle_timeout: settings.pool_idle_timeout,
            default_connect: settings.connect_timeout,
            resolver: GuardedResolver {
                overrides: Arc::new(settings.resolve),
                reach: Reach::Public,
            },
            clients: std::sync::RwLock::new(HashMap::new()),
            identities: Default::default(),
            own: Default::default(),
        })
    }

    /// Registers a listener of this process, never to be dialled.
    pub fn forbid_own(&self, addr: SocketAddr) {
        self.own.write().unwrap_or_else(|e| e.into_inner()).push(addr);
    }

    /// Refuses a destination that is one of Keyward's own listeners: same port, and an address of this host.
    async fn check_own(&self, host: &str, port: u16) -> Result<(), UpstreamError> {
        let own: Vec<SocketAddr> = self.own.read().unwrap_or_else(|e| e.into_inner()).clone();
        if !own.iter().any(|a| a.port() == port) {
            return Ok(());
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ips = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self.resolver.resolve(bare, Reach::Any).await.unwrap_or_default(),
        };
        let local = |ip: &IpAddr| {
            ip.is_loopback()
                || ip.is_unspecified()
                || embedded_ipv4_of(*ip).is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
                || own.iter().any(|a| a.ip() == *ip)
                // Binding succeeds only for an address of one of this host's interfaces.
                || std::net::UdpSocket::bind(SocketAddr::new(*ip, 0)).is_ok()
        };
        if ips.iter().any(local) {
            return Err(UpstreamError::OwnListener {
                host: host.to_string(),
                port,
            });
        }
        Ok(())
    }

    /// Registers a client certificate (PEM chain and key, as read from the route's secrets) and returns its
    /// key for [`ConnectOptions::identity`]. The same value gives the same identity; a rotated one a new
    /// identity, hence a new pool and new connections.
    pub fn identity(&self, route: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity, UpstreamError> {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        hash.update(cert_pem);
        hash.update(&[0]);
        hash.update(key_pem);
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(hash.finish().as_ref());
        let identity = Identity(fingerprint);
        if self
            .identities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&identity)
        {
            return Ok(identity);
        }
        let refuse = |reason: String| UpstreamError::ClientCertificate {
            route: route.to_string(),
            reason,
        };
        let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<_, _>>()
            .map_err(|_| refuse("the certificate is not PEM".into()))?;
        if chain.is_empty() {
            return Err(refuse("no certificate in the PEM".into()));
        }
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .ok()
            .flatten()
            .ok_or_else(|| refuse("no private key in the PEM".into()))?;
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| refuse(e.to_string()))?
            .with_root_certificates(self.tls.root_store.clone())
            .with_client_auth_cert(chain, key)
            .map_err(|_| refuse("the key does not match the certificate, or is of a kind rustls cannot use".into()))?;
        self.identities
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(identity, config);
        Ok(identity)
    }

    /// Options for traffic that sets no timeouts of its own.
    pub fn defaults(&self, reach: Reach) -> ConnectOptions {
        ConnectOptions {
            reach,
            connect: self.default_connect,
            tls: None,
            http1_only: false,
            identity: None,
        }
    }

    fn client(&self, opts: ConnectOptions) -> PooledClient {
        if let Some(client) = self.clients.read().unwrap_or_else(|e| e.into_inner()).get(&opts) {
            return client.clone();
        }
        let resolver = GuardedResolver {
            overrides: self.resolver.overrides.clone(),
            reach: opts.reach,
        };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.connect));
        let tls = opts
            .identity
            .and_then(|id| {
                self.identities
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .cloned()
            })
            .unwrap_or_else(|| self.tls.config.clone());
        let protocols = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1();
        let https = if opts.http1_only {
            protocols.wrap_connector(http)
        } else {
            protocols.enable_http2().wrap_connector(http)
        };
        let connector = TimedConnector {
            inner: https,
            limit: opts.tls.map(|tls| opts.connect + tls),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        self.clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(opts)
            .or_insert(client)
            .clone()
    }

    /// Sends a request whose URI is absolute. Pooled connections are reused per scheme and authority.
    pub async fn send(
        &self,
        req: http::Request<Body>,
        opts: ConnectOptions,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let host = req.uri().host().unwrap_or_default().to_string();
        check_literal(&host, opts.reach)?;
        let https = req.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = req.uri().port_u16().unwrap_or(if https { 443 } else { 80 });
        self.check_own(&host, port).await?;
        self.client(opts)
            .request(req)
            .await
            .map_err(|e| classify(&host, opts.reach, &e))
    }

    /// A raw TCP connection for tunnelled (not intercepted) traffic, under the same destination guard: the
    /// addresses checked are the addresses dialled.
    pub async fn connect(&self, host: &str, port: u16, reach: Reach) -> Result<TcpStream, UpstreamError> {
        check_literal(host, reach)?;
        self.check_own(host, port).await?;
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .resolver
                .resolve(host, reach)
                .await
                .map_err(|e| resolve_error(host, reach, e))?,
        };
        let mut last = String::from("no address");
        for ip in addrs {
            let attempt = tokio::time::timeout(self.default_connect, TcpStream::connect(SocketAddr::new(ip, port)));
            match attempt.await {
                Ok(Ok(stream)) => {
                    // A tunnel relays the agent's writes as they come, like the pooled client (set_nodelay).
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                    return Ok(stream);
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        Err(UpstreamError::Connect {
            host: host.to_string(),
            reason: last,
        })
    }
}

/// The upstream TLS settings without a client certificate, and the roots they trust (which the settings of
/// each client certificate share).
struct Tls {
    config: rustls::ClientConfig,
    root_store: Arc<RootCertStore>,
}

fn client_tls(extra_roots: &[PathBuf]) -> Result<Tls, UpstreamError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for path in extra_roots {
        let roots_err = |message: String| UpstreamError::Roots {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| roots_err(e.to_string()))?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| roots_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(roots_err("no PEM certificate in file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| roots_err(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trusted roots: no system certificates found and no upstream_tls.extra_roots");
    }
    let root_store = Arc::new(roots);
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Roots {
            path: "upstream_tls".into(),
            message: e.to_string(),
        })?
        .with_root_certificates(root_store.clone())
        .with_no_client_auth();
    Ok(Tls { config, root_store })
}

/// Whether an agent may reach `ip` without a route that allows private destinations.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// Whether `ip` is on a private network (RFC 1918, the 100.64/10 shared space, IPv6 unique-local): where
/// cluster pod and service addresses live. Loopback and link-local (cloud metadata) are not.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => (v6.segments()[0] & 0xfe00) == 0xfc00,
        },
    }
}

/// The IPv4 address inside an IPv6 one that carries it: mapped (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`),
/// translated (`::ffff:0:a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`). Each is classified as its IPv4 address:
/// `[::127.0.0.1]` must not pass as public.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        std::net::Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(v4(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if !v6.is_loopback() && !v6.is_unspecified() => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

fn embedded_ipv4_of(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6),
        IpAddr::V4(_) => None,
    }
}

fn check_literal(host: &str, reach: Reach) -> Result<(), UpstreamError> {
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
    match literal {
        Ok(ip) if !reach.admits(ip) => Err(refused(host, reach)),
        _ => Ok(()),
    }
}

fn refused(host: &str, reach: Reach) -> UpstreamError {
    let host = host.to_string();
    match reach {
        Reach::Internal => UpstreamError::NotInternal { host },
        Reach::Public | Reach::Any => UpstreamError::Forbidden { host },
    }
}

/// Bounds connect + TLS handshake together; with TCP bounded by the connect timeout, running past this means
/// the handshake was too slow.
#[derive(Clone)]
struct TimedConnector {
    inner: Connector,
    limit: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
#[error("TLS handshake timed out")]
struct TlsTimeout;

impl tower_service::Service<http::Uri> for TimedConnector {
    type Response = <Connector as tower_service::Service<http::Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match limit {
                Some(limit) => tokio::time::timeout(limit, connecting)
                    .await
                    .map_err(|_| Box::new(TlsTimeout) as BoxError)?,
                None => connecting.await,
            }
        })
    }
}

/// Marker error from the resolver, found again in hyper's error chain to answer 403 rather than 502.
#[derive(Debug, thiserror::Error)]
#[error("destination resolves only to non-public addresses")]
struct ForbiddenDestination;

#[derive(Clone)]
struct GuardedResolver {
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
    reach: Reach,
}

impl GuardedResolver {
    /// The addresses of `host` that `reach` admits; none is an error. `Internal` admits a name only if every
    /// address is internal, so a name that also resolves publicly is never tunnelled.
    async fn resolve(&self, host: &str, reach: Reach) -> Result<Vec<IpAddr>, BoxError> {
        let found: Vec<IpAddr> = match self.overrides.get(host) {
            Some(ips) => ips.clone(),
            None => tokio::net::lookup_host((host, 0)).await?.map(|a| a.ip()).collect(),
        };
        if reach == Reach::Internal && !found.iter().all(|ip| is_internal(*ip)) {
            return Err(Box::new(ForbiddenDestination));
        }
        let allowed: Vec<IpAddr> = found.into_iter().filter(|ip| reach.admits(*ip)).collect();
        if allowed.is_empty() {
            return Err(Box::new(ForbiddenDestination));
        }
        Ok(allowed)
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let ips = this.resolve(name.as_str(), this.reach).await?;
            Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

fn resolve_error(host: &str, reach: Reach, e: BoxError) -> UpstreamError {
    if e.is::<ForbiddenDestination>() {
        refused(host, reach)
    } else {
        UpstreamError::Resolve {
            host: host.to_string(),
            reason: e.to_string(),
        }
    }
}

fn classify(host: &str, reach: Reach, error: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut reasons = Vec::new();
    while let Some(e) = source {
        if e.is::<ForbiddenDestination>() {
            return refused(host, reach);
        }
        if e.is::<TlsTimeout>() {
            return UpstreamError::Timeout {
                host: host.to_string(),
                phase: Phase::Tls,
            };
        }
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return UpstreamError::Timeout {
                host: host.to_string(),
                phase: Phase::Connect,
            };
        }
        reasons.push(e.to_string());
        source = e.source();
    }
    let reason = reasons.join(": ");
    if error.is_connect() {
        UpstreamError::Connect {
            host: host.to_string(),
            reason,
        }
    } else {
        UpstreamError::Request {
            host: host.to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "::10.0.0.1",
            "2002:7f00:1::",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::8.8.8.8", "::ffff:0:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    /// `unmatched: tunnel_private` reaches cluster networks only: never loopback, link-local (metadata),
    /// public addresses, or a private address hidden in an IPv6 form that is not a private network.
    #[test]
    fn internal_addresses() {
        for ip in [
            "10.96.0.1",
            "172.20.3.4",
            "192.168.1.1",
            "100.64.0.10",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
            assert!(Reach::Internal.admits(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "8.8.8.8",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "2606:4700::1111",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn internal_reach_refuses_a_name_with_any_address_outside_private_networks() {
        let resolver = GuardedResolver {
            overrides: Arc::new(HashMap::from([
                ("redis.test".to_string(), vec!["10.0.0.7".parse().unwrap()]),
                (
                    "mixed.test".to_string(),
                    vec!["10.0.0.7".parse().unwrap(), "8.8.8.8".parse().unwrap()],
                ),
                ("metadata.test".to_string(), vec!["169.254.169.254".parse().unwrap()]),
            ])),
            reach: Reach::Internal,
        };
        assert_eq!(
            resolver.resolve("redis.test", Reach::Internal).await.unwrap(),
            vec!["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
        for name in ["mixed.test", "metadata.test"] {
            let e = resolver.resolve(name, Reach::Internal).await.unwrap_err();
            assert!(matches!(
                resolve_error(name, Reach::Internal, e),
                UpstreamError::NotInternal { .. }
            ));
        }
    }

    #[test]
    fn literal_guard() {
        assert!(check_literal("169.254.169.254", Reach::Public).is_err());
        assert!(check_literal("[::1]", Reach::Public).is_err());
        assert!(check_literal("127.0.0.1", Reach::Any).is_ok());
        assert!(check_literal("example.com", Reach::Public).is_ok());
    }
}
