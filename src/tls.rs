//! TLS for the public listener: certificate files or a self-signed
//! certificate generated once into the data directory, turned into a rustls
//! server config (ring provider, HTTP/2 and HTTP/1.1 via ALPN, resumption).
//!
//! The certificate is served through [`ReloadableCert`], so SIGHUP can swap
//! it for new handshakes while established connections keep the one they
//! negotiated; a new pair that fails to load leaves the old one in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::CertSource;
use crate::sync;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {path}: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0} contains no certificate")]
    NoCertificate(PathBuf),
    /// The key does not fit the certificate, or another rustls refusal.
    #[error("certificate or key rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// `[tls.acme]` certificates come from `crate::acme`, not from files.
    #[error("certificates for [tls.acme] are managed by the ACME module")]
    AcmeManaged,
    /// Writing the self-signed certificate failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads and checks what start-up would serve, without generating or
/// writing anything (for `gatehouse check-config`): the certificate and key
/// files, or an already generated self-signed pair.
pub fn check(source: &CertSource, data_dir: &Path) -> Result<(), TlsError> {
    let (cert_path, key_path) = match source {
        CertSource::Files { cert, key } => (cert.clone(), key.clone()),
        CertSource::SelfSigned => {
            let dir = data_dir.join("tls");
            let pair = (
                dir.join("self-signed-cert.pem"),
                dir.join("self-signed-key.pem"),
            );
            if !(pair.0.exists() && pair.1.exists()) {
                // Generated on first start.
                return Ok(());
            }
            pair
        }
        // Checked by `crate::acme::check`.
        CertSource::Acme(_) => return Ok(()),
    };
    let provider = rustls::crypto::ring::default_provider();
    load_certified_key(&cert_path, &key_path, &provider).map(|_| ())
}

/// Builds the server config and the handle that swaps the certificate in
/// place (see [`ReloadableCert::reload`]); for `self_signed`, generates the
/// certificate into `data_dir/tls/` on first start and reuses it afterwards.
pub fn reloadable_server_config(
    source: &CertSource,
    data_dir: &Path,
) -> Result<(Arc<ServerConfig>, Arc<ReloadableCert>), TlsError> {
    let (cert_path, key_path) = match source {
        CertSource::Files { cert, key } => (cert.clone(), key.clone()),
        CertSource::SelfSigned => ensure_self_signed(&data_dir.join("tls"))?,
        CertSource::Acme(_) => return Err(TlsError::AcmeManaged),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let current = load_certified_key(&cert_path, &key_path, &provider)?;
    let resolver = Arc::new(ReloadableCert {
        cert_path,
        key_path,
        provider: provider.clone(),
        current: RwLock::new(Arc::new(current)),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our cipher-suite order (ring's: AES-256-GCM first) wins over the
    // client's, so a client cannot steer the handshake to its weakest choice.
    config.ignore_client_order = true;
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok((Arc::new(config), resolver))
}

/// The certificate handed to new handshakes, replaceable while serving.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Re-reads the certificate and key files. On success new handshakes get
    /// the new pair; on failure (unreadable, empty, key not matching) the
    /// current pair stays and the error says why. Blocking file I/O.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        *sync::write(&self.current) = Arc::new(fresh);
        Ok(())
    }

    /// The certificate file being served, for log lines.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(sync::read(&self.current).clone())
    }
}

/// Reads a PEM certificate chain and key and checks that they belong together.
fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Pem {
            path: cert_path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Pem {
        path: key_path.to_path_buf(),
        source,
    })?;
    Ok(CertifiedKey::from_der(certs, key, provider)?)
}

fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("self-signed-cert.pem");
    let key_path = dir.join("self-signed-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    crate::private_file::write_atomically(
        &key_path,
        generated.signing_key.serialize_pem().as_bytes(),
    )
    .map_err(write_err(&key_path))?;
    std::fs::write(&cert_path, generated.cert.pem()).map_err(write_err(&cert_path))?;
    tracing::warn!(
        cert = %cert_path.display(),
        "generated a self-signed TLS certificate; clients will not trust it (use curl --cacert or -k for local testing)"
    );
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_config(source: &CertSource, dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
        reloadable_server_config(source, dir).map(|(config, _)| config)
    }

    #[test]
    fn self_signed_is_generated_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        server_config(&CertSource::SelfSigned, dir.path()).unwrap();
        let cert = dir.path().join("tls/self-signed-cert.pem");
        let first = std::fs::read(&cert).unwrap();
        server_config(&CertSource::SelfSigned, dir.path()).unwrap();
        assert_eq!(first, std::fs::read(&cert).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls/self-signed-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }

    #[test]
    fn reload_swaps_a_good_pair_and_keeps_the_old_one_on_a_bad_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ensure_self_signed(dir.path()).unwrap();
        let files = CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        };
        let (_, handle) = reloadable_server_config(&files, dir.path()).unwrap();
        let served = |h: &ReloadableCert| h.current.read().unwrap().cert[0].clone();
        let first = served(&handle);

        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, other.cert.pem()).unwrap();
        // Certificate replaced but key not yet: the pair does not match.
        let e = handle.reload().unwrap_err();
        assert!(e.to_string().contains("rejected"), "{e}");
        assert_eq!(served(&handle), first);

        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        handle.reload().unwrap();
        assert_ne!(served(&handle), first);

        std::fs::write(&cert, "not pem").unwrap();
        assert!(handle.reload().is_err());
        assert_eq!(served(&handle).as_ref(), other.cert.der().as_ref());
    }

    #[test]
    fn missing_files_are_reported_by_path() {
        let e = server_config(
            &CertSource::Files {
                cert: "/nonexistent/c.pem".into(),
                key: "/nonexistent/k.pem".into(),
            },
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/c.pem"), "{e}");
    }
}
