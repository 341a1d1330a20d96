//! TLS for the public listener: certificate files or a self-signed
//! certificate generated once into the data directory, turned into a rustls
//! server config (ring provider, HTTP/2 and HTTP/1.1 via ALPN, resumption).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::CertSource;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {path}: {message}")]
    Pem { path: PathBuf, message: String },
    /// The certificate file holds no certificate.
    #[error("{0} contains no certificate")]
    NoCertificate(PathBuf),
    /// The key does not fit the certificate, or another rustls refusal.
    #[error("certificate or key rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing the self-signed certificate failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Builds the server config; for `self_signed`, generates the certificate
/// into `data_dir/tls/` on first start and reuses it afterwards.
pub fn server_config(source: &CertSource, data_dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = match source {
        CertSource::Files { cert, key } => (cert.clone(), key.clone()),
        CertSource::SelfSigned => ensure_self_signed(&data_dir.join("tls"))?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_path));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
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
    write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
        .map_err(write_err(&key_path))?;
    std::fs::write(&cert_path, generated.cert.pem()).map_err(write_err(&cert_path))?;
    tracing::warn!(
        cert = %cert_path.display(),
        "generated a self-signed TLS certificate; clients will not trust it (use curl --cacert or -k for local testing)"
    );
    Ok((cert_path, key_path))
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

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
