//! The trust bundle the sidecar writes at start for the agent's containers: the system roots plus Keyward's
//! CA, so an agent pointed at it (`SSL_CERT_FILE` and friends) trusts intercepted hosts and keeps trusting
//! everything else. The same certificates also go into a PKCS#12 trust store beside it (`.p12`), for Java,
//! which reads no PEM bundle ([`crate::agent_env`] points `JAVA_TOOL_OPTIONS` at it).

use std::path::Path;

use base64::Engine as _;

use super::TlsError;

/// The PKCS#12 trust store's password. A trust store holds only public certificates; Java needs some password
/// to check the file's integrity, and agents must be able to read it, so it is fixed and documented.
pub const TRUST_STORE_PASSWORD: &str = "keyward";

/// Writes the bundle and the PKCS#12 trust store beside it (`path` with extension `p12`), each atomically
/// (temporary file, then rename): the system roots, then `ca` (PEM: Keyward's CA, or the roots a controller
/// named). Returns how many system roots they hold.
pub fn write(path: &Path, ca: &str) -> Result<usize, TlsError> {
    let mut out = String::new();
    let roots = rustls_native_certs::load_native_certs().certs;
    for cert in &roots {
        out.push_str(&pem(cert.as_ref()));
    }
    out.push_str(ca.trim_end());
    out.push('\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let store = trust_store(&out).map_err(|message| TlsError::BadFile {
        path: path.display().to_string(),
        message,
    })?;
    put(&trust_store_path(path), &store)?;
    put(path, out.as_bytes())?;
    Ok(roots.len())
}

/// Where the PKCS#12 trust store for the bundle at `bundle` goes.
pub fn trust_store_path(bundle: &Path) -> std::path::PathBuf {
    bundle.with_extension("p12")
}

fn put(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Every certificate of a PEM bundle as a trusted-certificate entry (what `keytool -importcert` writes: Java
/// accepts an entry as a trust anchor only with Oracle's trusted-key-usage attribute, which the writer adds).
fn trust_store(pem_text: &str) -> Result<Vec<u8>, String> {
    let mut store = p12_keystore::KeyStore::new();
    for (i, der) in rustls_pemfile::certs(&mut pem_text.as_bytes()).enumerate() {
        let der = der.map_err(|e| e.to_string())?;
        let cert = p12_keystore::Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
        store.add_entry(&format!("cert-{i}"), p12_keystore::KeyStoreEntry::Certificate(cert));
    }
    store.writer(TRUST_STORE_PASSWORD).write().map_err(|e| e.to_string())
}

pub(crate) fn io(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
