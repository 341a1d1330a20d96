//! The certificate the TLS listener hands out under ACME, and the challenge
//! answers published while an order is validated.
//!
//! - Normal handshakes get the current certificate; before the first one is
//!   issued there is none and the handshake fails (the manager logs what it
//!   is waiting for). Swapping it affects new handshakes only: established
//!   connections keep what they negotiated.
//! - Handshakes offering only the `acme-tls/1` protocol (RFC 8737) get the
//!   validation certificate for their SNI name, if an order published one.
//! - HTTP-01 key authorisations by token, for the plain-HTTP listener.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Most challenges published at once (one per name of an order).
const MAX_CHALLENGES: usize = 128;

/// Served certificate and published challenges, shared by the TLS
/// listener, the HTTP-01 listener and the ACME manager.
#[derive(Debug, Default)]
pub struct AcmeResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    http01: RwLock<HashMap<String, String>>,
}

impl AcmeResolver {
    /// Serves `key` to new handshakes from now on.
    pub fn set_current(&self, key: Arc<CertifiedKey>) {
        *crate::sync::write(&self.current) = Some(key);
    }

    /// Publishes a TLS-ALPN-01 validation certificate for `name`.
    pub fn publish_tls_alpn(&self, name: &str, key: Arc<CertifiedKey>) {
        let mut map = crate::sync::write(&self.tls_alpn);
        if map.len() < MAX_CHALLENGES {
            map.insert(name.to_ascii_lowercase(), key);
        }
    }

    /// Publishes an HTTP-01 key authorisation for `token`.
    pub fn publish_http01(&self, token: &str, key_authorization: &str) {
        let mut map = crate::sync::write(&self.http01);
        if map.len() < MAX_CHALLENGES {
            map.insert(token.to_string(), key_authorization.to_string());
        }
    }

    /// The key authorisation for an HTTP-01 `token`, if published.
    pub fn http01_answer(&self, token: &str) -> Option<String> {
        crate::sync::read(&self.http01).get(token).cloned()
    }

    /// Replaces the published challenges with another instance's (shared
    /// through the store directory while it orders).
    pub fn adopt_shared(
        &self,
        tls_alpn: HashMap<String, Arc<CertifiedKey>>,
        http01: HashMap<String, String>,
    ) {
        *crate::sync::write(&self.tls_alpn) = tls_alpn;
        *crate::sync::write(&self.http01) = http01;
    }

    /// Withdraws every published challenge (the order is over).
    pub fn clear_challenges(&self) {
        crate::sync::write(&self.tls_alpn).clear();
        crate::sync::write(&self.http01).clear();
    }
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if validation {
            let name = hello.server_name()?.to_ascii_lowercase();
            let found = crate::sync::read(&self.tls_alpn).get(&name).cloned();
            if found.is_none() {
                tracing::debug!(name, "acme-tls/1 handshake for a name with no challenge");
            }
            return found;
        }
        let current = crate::sync::read(&self.current).clone();
        if current.is_none() {
            tracing::debug!(
                name = hello.server_name().unwrap_or("-"),
                "TLS handshake refused: no ACME certificate issued yet"
            );
        }
        current
    }
}

/// A TLS-ALPN-01 validation certificate (RFC 8737 §3): self-signed for
/// `name`, carrying the SHA-256 digest of the key authorisation in the
/// critical acmeIdentifier extension. Returned loaded, and as PEM (chain
/// and key) for the other instances.
pub fn tls_alpn_certificate(
    name: &str,
    key_authorization_digest: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(Arc<CertifiedKey>, String), super::AcmeError> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(
            key_authorization_digest,
        ));
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let loaded = certified_key_from_pem(pem.as_bytes(), provider)
        .ok_or_else(|| super::AcmeError::Order("validation certificate does not load".into()))?;
    Ok((loaded, pem))
}

/// A validation certificate and key from one PEM blob (as shared by
/// another instance). Not `CertifiedKey::from_der`: its key check parses
/// the certificate with webpki, which refuses the critical acmeIdentifier
/// extension.
pub fn certified_key_from_pem(
    pem: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Option<Arc<CertifiedKey>> {
    use rustls_pki_types::pem::PemObject;
    let cert = rustls_pki_types::CertificateDer::from_pem_slice(pem).ok()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem).ok()?;
    let signing_key = provider.key_provider.load_private_key(key).ok()?;
    Some(Arc::new(CertifiedKey::new(vec![cert], signing_key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_certificates_carry_the_critical_acme_identifier() {
        let provider = rustls::crypto::ring::default_provider();
        let digest = [7u8; 32];
        let (key, pem) = tls_alpn_certificate("app.example.com", &digest, &provider).unwrap();
        assert!(certified_key_from_pem(pem.as_bytes(), &provider).is_some());
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING holding the 32-byte digest.
        assert_eq!(&ext.value[2..], &digest);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
    }
}
