//! The interception CA: created once (`keyward ca init`, or on first run), loaded at start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::TlsError;

/// How long a generated CA is valid. Agents trust it by file, so a long life avoids surprise outages;
/// rotation is by replacing the files.
const CA_VALIDITY_DAYS: i64 = 3650;

pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let bad = |path: &Path, message: &str| TlsError::BadFile {
            path: path.display().to_string(),
            message: message.into(),
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|_| bad(key_path, "not a PEM private key"))?;
        let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| bad(cert_path, "no PEM certificate"))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| bad(cert_path, &format!("not a usable CA certificate: {e}")))?;
        Ok(Self { issuer })
    }

    /// Writes a new ECDSA P-256 CA: certificate world-readable (agents must trust it), key mode 0600.
    pub fn create(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
        let key = KeyPair::generate().map_err(|e| TlsError::Mint(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Keyward");
        dn.push(DnType::CommonName, format!("Keyward interception CA {}", short_id()));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key).map_err(|e| TlsError::Mint(e.to_string()))?;
        write(cert_path, cert.pem().as_bytes(), 0o644)?;
        write(key_path, key.serialize_pem().as_bytes(), 0o600)
    }

    /// Loads the CA, creating it first when neither file exists. Returns whether it was created.
    pub fn load_or_create(cert_path: &Path, key_path: &Path) -> Result<(Self, bool), TlsError> {
        let created = match (cert_path.exists(), key_path.exists()) {
            (false, false) => {
                Self::create(cert_path, key_path)?;
                true
            }
            (true, true) => false,
            (has_cert, _) => {
                let missing = if has_cert { key_path } else { cert_path };
                return Err(TlsError::BadFile {
                    path: missing.display().to_string(),
                    message: "missing while its CA pair exists; restore it or remove both to create a new CA".into(),
                });
            }
        };
        Ok((Self::load(cert_path, key_path)?, created))
    }
}

fn short_id() -> String {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!("{:08x}", (nanos as u64 ^ u64::from(std::process::id())) as u32)
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_then_load_and_refuse_half_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca/ca.crt"), dir.path().join("ca/ca.key"));
        let (_, created) = Ca::load_or_create(&cert, &key).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let (_, created) = Ca::load_or_create(&cert, &key).unwrap();
        assert!(!created);
        std::fs::remove_file(&key).unwrap();
        let err = Ca::load_or_create(&cert, &key).err().unwrap().to_string();
        assert!(err.contains("ca.key"), "{err}");
    }
}
