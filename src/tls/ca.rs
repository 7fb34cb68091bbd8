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
        let key = key_pair(&key_pem)
            .ok_or_else(|| bad(key_path, "not a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 P-256)"))?;
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
        let mut params = leaf_signer(format!("Keyward interception CA {}", short_id()));
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

/// A CA that signs leaves and no other CA (path length 0), named `common_name` in organization Keyward: the
/// interception CA, and each sidecar's intermediate that the controller signs.
pub fn leaf_signer(common_name: String) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Keyward");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The CA key in any of the PEM forms CA tooling writes: PKCS#8, PKCS#1 RSA (openssl's traditional format
/// and Helm's `genCA`) or SEC1 EC. ring signs from PKCS#8 only, so the other two are wrapped into it. The
/// controller loads the root CA of its Secret with it too.
pub(crate) fn key_pair(pem: &str) -> Option<KeyPair> {
    use rustls::pki_types::PrivateKeyDer;
    // AlgorithmIdentifier DER: rsaEncryption + NULL; id-ecPublicKey + prime256v1.
    const RSA: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    const P256: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x03, 0x01, 0x07,
    ];
    let pkcs8 = match rustls_pemfile::private_key(&mut pem.as_bytes()).ok()?? {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(k) => pkcs8_wrap(RSA, k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => pkcs8_wrap(P256, k.secret_sec1_der()),
        _ => return None,
    };
    KeyPair::try_from(pkcs8.as_slice()).ok()
}

/// `PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, privateKey OCTET STRING }` (RFC 5208).
fn pkcs8_wrap(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
    let inner = [&[0x02, 0x01, 0x00][..], algorithm, &tlv(0x04, key)].concat();
    tlv(0x30, &inner)
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
    fn keys_from_openssl_and_helm_formats_load_and_sign() {
        for dir in ["ca-rsa-pkcs1", "ca-ec-sec1"] {
            let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(dir);
            let ca = Ca::load(&base.join("ca.crt"), &base.join("ca.key")).unwrap_or_else(|e| panic!("{dir}: {e}"));
            let leaf_key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec!["a.test".to_string()]).unwrap();
            assert!(params.signed_by(&leaf_key, &ca.issuer).is_ok(), "{dir} signs leaves");
        }
    }

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
