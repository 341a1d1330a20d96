//! Connecting to PostgreSQL (driver configuration, optional rustls with the
//! ring provider) and classifying the driver's errors. A leaf of the
//! PostgreSQL backend: the store, its schema migrations and the revocation
//! listener all connect through it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::StoreError;
use crate::config::PostgresConfig;

/// A driver error, classified so `?` gets it right: no answer from the
/// server (connection refused, closed, admin shutdown, too many
/// connections) is "unavailable" (503, retry later); an error the server
/// answered with is a database error.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        let unavailable = match e.code() {
            None => true,
            Some(code) => {
                let c = code.code();
                c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
            }
        };
        if unavailable {
            // The driver's own message ("error connecting to server") hides
            // the cause (refused, timed out, TLS) in its source.
            match std::error::Error::source(&e) {
                Some(cause) => StoreError::Unavailable(format!("{e}: {cause}").into()),
                None => StoreError::Unavailable(Box::new(e)),
            }
        } else {
            StoreError::Postgres(e)
        }
    }
}

/// Builds the driver configuration (with TLS when `ca_file` is set).
pub(super) fn connector(
    config: &PostgresConfig,
) -> Result<(tokio_postgres::Config, Connector), StoreError> {
    let pg_config: tokio_postgres::Config = config
        .url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Setup(format!("store.url: {e}")))?;
    let mut pg_config = pg_config;
    pg_config.connect_timeout(Duration::from_secs(5));
    let connector = match &config.ca_file {
        Some(path) => Connector::Tls(tls_connector(path)?),
        None => Connector::Plain,
    };
    Ok((pg_config, connector))
}

/// Plain TCP, or rustls (ring) verifying the server against `ca_file` and
/// the host name (verify-full).
#[derive(Clone)]
pub(super) enum Connector {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

fn tls_connector(path: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let setup = |msg: String| StoreError::Setup(format!("store.ca_file {}: {msg}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| setup(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| setup(e.to_string()))?;
        roots.add(cert).map_err(|e| setup(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(setup("holds no certificate".into()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| setup(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}
