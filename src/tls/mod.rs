//! TLS toward the agent: the interception CA, per-host leaf certificates, and the handshake that checks SNI
//! against the CONNECT target.

pub mod accept;
pub mod bundle;
pub mod ca;
pub mod leaf;
pub mod serving;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// One crypto provider for every TLS context in the process, named explicitly so that a dependency enabling
/// another rustls backend cannot make provider selection ambiguous at run time.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes the same provider the process default, for libraries that build TLS clients without taking one
/// (reqwest under the Vault client). Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    BadFile { path: String, message: String },
    #[error("certificate generation failed: {0}")]
    Mint(String),
    #[error("TLS handshake with the agent failed: {0}")]
    Handshake(std::io::Error),
    #[error("TLS handshake with the agent timed out")]
    HandshakeTimeout,
    #[error("SNI `{sni}` does not match the CONNECT target `{target}`")]
    SniMismatch { sni: String, target: String },
}
