//! Client certificates: a route's `client_certificate` is presented on its upstream TLS connections. The
//! upstream here requires a certificate from its own client CA and records the common name it saw.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::clients::curl;
use crate::support::pki::pki;
use crate::support::proxy::{config_yaml, workdir, Proxy};

/// A client CA and certificates it signed, by common name: (certificate PEM, key PEM).
struct ClientPki {
    ca: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl ClientPki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "keyward test client CA");
        let ca = params.self_signed(&key).unwrap().der().clone();
        Self {
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// The key PEM starts with a comment line carrying the secret marker (PEM readers skip text before the
    /// block), so the suite's final grep would find a leaked key.
    fn client(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            cert.pem(),
            format!("REALSECRET test client key {name}\n{}", key.serialize_pem()),
        )
    }
}

/// An HTTPS upstream that requires a client certificate signed by `ca`; returns its port and the common
/// names of the certificates its connections presented, one entry per connection.
async fn mtls_upstream(ca: CertificateDer<'static>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let leaf = std::fs::read(&pki().leaf_cert_path).unwrap();
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut leaf.as_slice())
        .map(Result::unwrap)
        .collect();
    let key = std::fs::read(&pki().leaf_key_path).unwrap();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key.as_slice()).unwrap().unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|der| {
                        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
                        let cn = cert.subject().iter_common_name().next().unwrap();
                        cn.as_str().unwrap().to_string()
                    })
                    .unwrap_or_default();
                record.lock().unwrap().push(cn.clone());
                let service = service_fn(move |_req| {
                    let body = format!("hello {cn}");
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
                            body,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, seen)
}

fn secrets(cert: &str, key: &str) -> String {
    format!(
        "client_cert: {}\nclient_key: {}\n",
        serde_json::json!(cert),
        serde_json::json!(key)
    )
}

const ROUTES: &str = r#"
resolve:
  api.keyward.test: [127.0.0.1]
  other.keyward.test: [127.0.0.1]
routes:
  - name: bank
    hosts: ["api.keyward.test:*"]
    allow_private: true
    client_certificate:
      cert: { secret: client_cert }
      key: { secret: client_key }
  - name: plain
    hosts: ["other.keyward.test:*"]
    allow_private: true
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_routes_client_certificate_is_presented_and_a_rotated_one_is_used_by_new_connections() {
    let clients = ClientPki::new();
    let (port, seen) = mtls_upstream(clients.ca.clone()).await;
    let (cert_a, key_a) = clients.client("agent-a");
    let dir = workdir(&config_yaml(ROUTES));
    let base = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        format!("{base}{}", secrets(&cert_a, &key_a)),
    )
    .unwrap();
    let proxy = Proxy::spawn_in(dir).await;

    let reply = curl(&proxy, &[&format!("https://api.keyward.test:{port}/")]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "hello agent-a");

    // Another route toward the same server presents nothing: the handshake fails, and the agent gets a 502.
    let reply = curl(&proxy, &[&format!("https://other.keyward.test:{port}/")]).await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["agent-a"],
        "the other route's handshake never completed"
    );

    // Rotation: the new value is read from the store, and the next request opens a new connection with it.
    let (cert_b, key_b) = clients.client("agent-b");
    let tmp = proxy.path("secrets.yaml.tmp");
    std::fs::write(&tmp, format!("{base}{}", secrets(&cert_b, &key_b))).unwrap();
    std::fs::rename(tmp, proxy.path("secrets.yaml")).unwrap();
    let mut body = String::new();
    crate::support::eventually("the rotated certificate in use", Duration::from_secs(5), || {
        let url = format!("https://api.keyward.test:{port}/");
        body = std::process::Command::new("curl")
            .args(["-sS", "-x", &proxy.url(), "--cacert"])
            .arg(proxy.ca_cert())
            .arg(&url)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        body == "hello agent-b"
    })
    .await;
    assert!(seen.lock().unwrap().contains(&"agent-b".to_string()));
    assert!(
        !proxy.logs().contains("BEGIN PRIVATE KEY"),
        "the key never reaches a log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_does_not_load_is_a_clear_502() {
    let dir = workdir(&config_yaml(ROUTES));
    let base = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
    std::fs::write(
        dir.path().join("secrets.yaml"),
        format!("{base}{}", secrets("not a certificate", "REALSECRET not a key")),
    )
    .unwrap();
    let proxy = Proxy::spawn_in(dir).await;
    let reply = curl(&proxy, &["https://api.keyward.test:1/"]).await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.json()["error"], "invalid_client_certificate");
    assert!(!reply.body.contains("REALSECRET"));
}
