//! Signing a sidecar's intermediate CA certificate from its CSR. Nothing the CSR asks for is copied but its
//! public key (whose possession the CSR's signature proves): the name, constraints, usages and lifetime are
//! the controller's.

use std::time::Duration;

use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair};

/// Who the certificate is for, from the token review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the CSR is not a valid, self-signed PKCS#10 request: {0}")]
    BadCsr(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Signs an intermediate CA (CA:true, path length 0, key usage certificate signing) for `identity`, valid
/// from an hour ago (clock skew) for `lifetime`. Returns the certificate as PEM.
pub fn intermediate(
    csr_pem: &str,
    identity: &Identity,
    lifetime: Duration,
    root: &Issuer<'_, KeyPair>,
) -> Result<(String, time::OffsetDateTime), IssueError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| IssueError::BadCsr(e.to_string()))?;
    let who = identity.pod.as_deref().unwrap_or(&identity.service_account);
    let mut params = crate::tls::ca::leaf_signer(format!("Keyward sidecar {}/{who}", identity.namespace));
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::try_from(lifetime).map_err(|e| IssueError::Sign(e.to_string()))?;
    params.not_after = not_after;
    let signed = CertificateSigningRequestParams {
        params,
        public_key: csr.public_key,
    }
    .signed_by(root)
    .map_err(|e| IssueError::Sign(e.to_string()))?;
    Ok((signed.pem(), not_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyUsagePurpose};

    fn root() -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        Issuer::new(params, key)
    }

    #[test]
    fn the_csr_contributes_only_its_key() {
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let who = Identity {
            namespace: "agents".into(),
            service_account: "bot".into(),
            pod: Some("bot-1".into()),
        };
        let (pem, _) = intermediate(&csr, &who, Duration::from_secs(3600), &root()).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let constraints = cert.basic_constraints().unwrap().unwrap().value;
        assert!(constraints.ca);
        assert_eq!(
            constraints.path_len_constraint,
            Some(0),
            "it can sign leaves, not other CAs"
        );
        assert!(
            cert.subject_alternative_name().unwrap().is_none(),
            "no name from the CSR"
        );
        assert_eq!(
            cert.public_key().raw,
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );
    }

    #[test]
    fn a_malformed_csr_is_refused() {
        let who = Identity {
            namespace: "agents".into(),
            service_account: "bot".into(),
            pod: None,
        };
        let err = intermediate("not a csr", &who, Duration::from_secs(60), &root()).unwrap_err();
        assert!(matches!(err, IssueError::BadCsr(_)), "{err}");
    }
}
