//! A serving certificate read from files and re-read when they change. The webhook and the controller serve
//! certificates that cert-manager or a Helm upgrade replace in place; a process that kept the old one would
//! serve a certificate the API server (or the sidecars) no longer trust, until someone restarts it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often a handshake may look at the files' modification times.
const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct FileCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<Loaded>,
    checked: Mutex<Instant>,
    check_every: Duration,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Option<(SystemTime, SystemTime)>,
}

impl FileCert {
    /// Loads the pair now; an error here names the file.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        Self::checking_every(cert, key, CHECK_EVERY)
    }

    fn checking_every(cert: &Path, key: &Path, check_every: Duration) -> Result<Self, String> {
        let loaded = read(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(loaded),
            checked: Mutex::new(Instant::now()),
            check_every,
        })
    }

    /// Re-reads the pair if either file changed since it was loaded; a pair that does not load is logged and
    /// the previous one kept (a half-written update is picked up at a later check).
    fn refresh(&self) {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.elapsed() < self.check_every {
                return;
            }
            *checked = Instant::now();
        }
        if stamp(&self.cert, &self.key) == self.current.load().stamp {
            return;
        }
        match read(&self.cert, &self.key) {
            Ok(loaded) => {
                tracing::info!(cert = %self.cert.display(), "serving certificate changed on disk: reloaded");
                self.current.store(Arc::new(loaded));
            }
            Err(e) => {
                tracing::warn!(error = %e, "serving certificate changed on disk but does not load; keeping the previous one")
            }
        }
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.current.load().key.clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((modified(cert)?, modified(key)?))
}

fn read(cert: &Path, key: &Path) -> Result<Loaded, String> {
    let stamp = stamp(cert, key);
    let err = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert).map_err(|e| err(cert, &e))?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert, &e))?;
    if certs.is_empty() {
        return Err(err(cert, &"no PEM certificate"));
    }
    let der = rustls_pemfile::private_key(&mut std::fs::read(key).map_err(|e| err(key, &e))?.as_slice())
        .map_err(|e| err(key, &e))?
        .ok_or_else(|| err(key, &"no private key"))?;
    let signing = super::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| err(key, &e))?;
    Ok(Loaded {
        key: Arc::new(CertifiedKey::new(certs, signing)),
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    }

    fn served(cert: &FileCert) -> Vec<u8> {
        cert.refresh();
        cert.current.load().key.cert[0].to_vec()
    }

    #[test]
    fn a_replaced_pair_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        pair(dir.path(), "one.example");
        let cert =
            FileCert::checking_every(&dir.path().join("tls.crt"), &dir.path().join("tls.key"), Duration::ZERO).unwrap();
        let first = served(&cert);
        // Modification times have a coarse clock on some filesystems: wait until the new files' differ.
        let before = stamp(&dir.path().join("tls.crt"), &dir.path().join("tls.key"));
        while stamp(&dir.path().join("tls.crt"), &dir.path().join("tls.key")) == before {
            pair(dir.path(), "two.example");
        }
        let second = served(&cert);
        assert_ne!(first, second, "the new certificate is served");
        std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
        assert_eq!(served(&cert), second, "a broken pair keeps the previous one");
    }
}
