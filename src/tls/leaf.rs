//! Leaf certificates for intercepted hosts: minted with one shared ECDSA P-256 key, cached per host as a
//! ready `ServerConfig`, and minted once per host even when many connections arrive together.
//!
//! One key for every leaf keeps minting to a single signature; caching the whole `ServerConfig` (sharing one
//! session cache and ticketer) lets agents resume TLS sessions, which is most of the cost of a new connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use quick_cache::sync::Cache;
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::ServerConfig;

use super::ca::Ca;
use super::TlsError;

/// Hosts kept; past it the least recently used leaf is dropped and re-minted on demand.
const CAPACITY: usize = 4096;
/// Memory the cached leaves may take, estimated per leaf from its certificate and host name; a count alone
/// let 63 KB host names take 714 MB. (Hosts are also checked to be DNS names or IP literals before minting.)
/// Every leaf weighs at least [`LEAF_OVERHEAD`], so this also keeps the count within [`CAPACITY`].
const BYTES: u64 = CAPACITY as u64 * LEAF_OVERHEAD;
/// Estimated memory of one cached leaf beyond its certificate: the `ServerConfig` and its allocations.
const LEAF_OVERHEAD: u64 = 2048;
/// Validity of a leaf; clients see a short-lived certificate.
const LEAF_VALIDITY: time::Duration = time::Duration::days(7);
/// A cached leaf older than this is re-minted, well before it expires.
const REMINT_AFTER: Duration = Duration::from_secs(24 * 3600);

struct Leaf {
    config: Arc<ServerConfig>,
    minted: Instant,
    /// Which issuer signed it ([`LeafCache::replace_issuer`] moves this on): a leaf minted under a replaced
    /// issuer is re-minted, even one that a handshake in flight during the replacement put in the cache.
    issuer: u64,
    /// Estimated bytes held, for the cache's weight.
    size: u64,
}

#[derive(Clone)]
struct LeafWeight;

impl quick_cache::Weighter<String, Arc<Leaf>> for LeafWeight {
    fn weight(&self, host: &String, leaf: &Arc<Leaf>) -> u64 {
        host.len() as u64 + leaf.size
    }
}

/// What signs leaves: a CA, and the certificates served after each leaf (the intermediate a controller
/// issued; empty for a root the agents trust directly).
pub struct Issuing {
    pub ca: Ca,
    pub chain: Vec<CertificateDer<'static>>,
}

pub struct LeafCache {
    /// The issuer and its generation.
    issuing: ArcSwap<(u64, Issuing)>,
    key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    cache: Cache<String, Arc<Leaf>, LeafWeight>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
    minted: Counter,
}

impl LeafCache {
    /// `minted` counts certificates signed (the `keyward_certificates_minted_total` metric).
    pub fn new(ca: Ca, minted: Counter) -> Result<Self, TlsError> {
        Self::issued_by(Issuing { ca, chain: Vec::new() }, minted)
    }

    pub fn issued_by(issuing: Issuing, minted: Counter) -> Result<Self, TlsError> {
        let mint_err = |e: &dyn std::fmt::Display| TlsError::Mint(e.to_string());
        let key = KeyPair::generate().map_err(|e| mint_err(&e))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = super::provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| mint_err(&e))?;
        Ok(Self {
            issuing: ArcSwap::from_pointee((0, issuing)),
            key,
            signing_key,
            cache: Cache::with_weighter(CAPACITY, BYTES, LeafWeight),
            sessions: ServerSessionMemoryCache::new(CAPACITY),
            ticketer: rustls::crypto::ring::Ticketer::new().map_err(|e| mint_err(&e))?,
            minted,
        })
    }

    /// Signs new leaves with `issuing` from now on; leaves cached under the previous one are dropped, so
    /// the next handshake for each host mints one under the new issuer.
    pub fn replace_issuer(&self, issuing: Issuing) {
        let generation = self.issuing.load().0 + 1;
        self.issuing.store(Arc::new((generation, issuing)));
        self.cache.clear();
    }

    /// The TLS configuration presenting a certificate for `host` (already normalized).
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        if let Some(leaf) = self.cache.get(host) {
            if leaf.minted.elapsed() < REMINT_AFTER && leaf.issuer == self.issuing.load().0 {
                return Ok(leaf.config.clone());
            }
            self.cache.remove(host);
        }
        let leaf = self
            .cache
            .get_or_insert_async(host, async { self.mint(host).map(Arc::new) })
            .await?;
        Ok(leaf.config.clone())
    }

    fn mint(&self, host: &str) -> Result<Leaf, TlsError> {
        let err = |e: rcgen::Error| TlsError::Mint(e.to_string());
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_VALIDITY;
        params.serial_number = Some(serial());
        let current = self.issuing.load();
        let (generation, issuing) = (current.0, &current.1);
        let cert = params.signed_by(&self.key, &issuing.ca.issuer).map_err(err)?;
        let size = LEAF_OVERHEAD + cert.der().len() as u64;
        let mut chain = vec![cert.der().clone()];
        chain.extend(issuing.chain.iter().cloned());
        let certified = CertifiedKey::new(chain, self.signing_key.clone());
        let mut config = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mint(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = self.sessions.clone();
        config.ticketer = self.ticketer.clone();
        self.minted.inc();
        tracing::debug!(host, "minted leaf certificate");
        Ok(Leaf {
            config: Arc::new(config),
            minted: Instant::now(),
            issuer: generation,
            size,
        })
    }
}

/// Serial numbers must be unique per issuer; 16 random-enough bytes from time and a counter suffice here.
fn serial() -> rcgen::SerialNumber {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&nanos.to_be_bytes());
    bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (LeafCache, Counter, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        let (ca, _) = Ca::load_or_create(&cert, &key).unwrap();
        let minted = Counter::default();
        (LeafCache::new(ca, minted.clone()).unwrap(), minted, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_handshakes_for_one_host_mint_once() {
        let (leaves, minted, _dir) = cache();
        let leaves = Arc::new(leaves);
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let leaves = leaves.clone();
                tokio::spawn(async move { leaves.server_config("api.example.com").await.unwrap() })
            })
            .collect();
        let mut configs = Vec::new();
        for t in tasks {
            configs.push(t.await.unwrap());
        }
        assert_eq!(minted.get(), 1);
        assert!(
            configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])),
            "every handshake shares one config"
        );
        leaves.server_config("127.0.0.1").await.unwrap();
        assert_eq!(minted.get(), 2, "IP literal targets get their own leaf");
    }

    #[tokio::test]
    async fn cache_stays_bounded() {
        let (leaves, minted, _dir) = cache();
        for i in 0..(CAPACITY + 100) {
            leaves.server_config(&format!("h{i}.example.com")).await.unwrap();
        }
        assert!(leaves.cache.len() <= CAPACITY, "{} entries", leaves.cache.len());
        assert_eq!(minted.get(), (CAPACITY + 100) as u64);
    }

    #[tokio::test]
    async fn cache_is_bounded_by_bytes() {
        let (leaves, _, _dir) = cache();
        let label = "a".repeat(63);
        for i in 0..2000 {
            let host = format!("{i}.{label}.{label}.{label}.example");
            leaves.server_config(&host).await.unwrap();
        }
        assert!(leaves.cache.weight() <= BYTES, "{} bytes", leaves.cache.weight());
    }
}
