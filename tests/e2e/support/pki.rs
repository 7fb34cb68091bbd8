//! A test CA and a leaf for the echo upstreams, made once per test process.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct Pki {
    /// PEM file of the CA that signed the upstream's certificate (what `upstream_tls.extra_roots` names).
    pub ca_path: PathBuf,
    /// The server certificate and key as PEM files, for servers the tests run as separate processes.
    pub leaf_cert_path: PathBuf,
    pub leaf_key_path: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
    _dir: tempfile::TempDir,
}

/// Names the upstream certificate is valid for; tests map the `.test` ones to 127.0.0.1 with `resolve:`.
pub const UPSTREAM_NAMES: &[&str] = &["localhost", "127.0.0.1", "api.keyward.test", "other.keyward.test"];

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "keyward test upstream CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let names: Vec<String> = UPSTREAM_NAMES.iter().map(|s| s.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        let (leaf_cert_path, leaf_key_path) = (dir.path().join("leaf.crt"), dir.path().join("leaf.key"));
        std::fs::write(&leaf_cert_path, leaf.pem()).unwrap();
        std::fs::write(&leaf_key_path, leaf_key.serialize_pem()).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Pki {
            ca_path,
            leaf_cert_path,
            leaf_key_path,
            server: Arc::new(server),
            _dir: dir,
        }
    })
}
