//! The trust bundle the sidecar writes at start for the agent's containers: the system roots plus Keyward's
//! CA, so an agent pointed at it (`SSL_CERT_FILE` and friends) trusts intercepted hosts and keeps trusting
//! everything else.

use std::path::Path;

use base64::Engine as _;

use super::TlsError;

/// Writes the bundle atomically (temporary file, then rename): the system roots, then `ca` (PEM: Keyward's
/// CA, or the roots a controller named). Returns how many system roots it holds.
pub fn write(path: &Path, ca: &str) -> Result<usize, TlsError> {
    let mut out = String::new();
    let roots = rustls_native_certs::load_native_certs().certs;
    for cert in &roots {
        out.push_str(&pem(cert.as_ref()));
    }
    out.push_str(ca.trim_end());
    out.push('\n');
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    std::fs::write(&tmp, out).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    Ok(roots.len())
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
