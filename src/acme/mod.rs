//! Automatic HTTPS: certificates ordered and renewed over ACME (RFC 8555)
//! for `[tls.acme]`, with `instant-acme` speaking the protocol.
//!
//! - `state`: the files in `<store dir>/acme/` and the serve-or-order rule;
//! - `resolver`: the rustls certificate resolver (current certificate,
//!   TLS-ALPN-01 validation certificates, HTTP-01 answers);
//! - `order`: one order against the CA; `manager`: the background loop;
//! - `http01`: the plain-HTTP listener (challenges, 308 to HTTPS).
//!
//! [`prepare`] runs before the listener opens (it serves a stored
//! certificate at once); [`Acme::spawn`] starts the background work once
//! the TLS listener is bound, so TLS-ALPN-01 validation can reach it.

mod http01;
mod manager;
mod order;
mod resolver;
mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::AcmeConfig;
pub use resolver::ACME_TLS_ALPN;
pub use state::AcmeDir;

/// Why ACME could not be set up or an order failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA answered with an error, or could not be reached.
    #[error("CA: {0}")]
    Acme(#[from] instant_acme::Error),
    /// The order did not come through (validation failed, no usable
    /// challenge, an unexpected state).
    #[error("order: {0}")]
    Order(String),
    /// A file in the ACME directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored or downloaded certificate is unusable.
    #[error("{path}: {message}")]
    BadCertificate { path: PathBuf, message: String },
    /// `tls.acme.ca_file` (or the system roots) cannot be used.
    #[error("tls.acme.ca_file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    /// Generating a key, CSR or validation certificate failed.
    #[error("generating a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused a configuration or key.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The plain-HTTP listener could not be bound.
    #[error("cannot listen on tls.acme.http_listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// ACME set up, background work not started yet.
pub struct Acme {
    manager: manager::Manager,
    server_config: Arc<ServerConfig>,
    http_listener: Option<TcpListener>,
}

/// What `serve` would refuse before talking to the CA: CA trust that
/// cannot be set up (`ca_file` unreadable or empty, no system roots). A
/// stored certificate that does not load is not fatal (a new one is
/// ordered). Used by `crate::preflight`.
pub fn check(cfg: &AcmeConfig) -> Result<(), AcmeError> {
    order::check_trust(cfg, Arc::new(rustls::crypto::ring::default_provider()))
}

/// Builds the TLS configuration, serves a stored certificate that is still
/// valid for the configured names right away, and binds `http_listen`.
pub async fn prepare(cfg: &AcmeConfig, data_dir: &Path) -> Result<Acme, AcmeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    order::check_trust(cfg, provider.clone())?;
    let dir = AcmeDir::new(data_dir);
    let resolver = Arc::new(resolver::AcmeResolver::default());
    let (ready, _) = watch::channel(false);
    let mut manager = manager::Manager {
        cfg: cfg.clone(),
        dir: dir.clone(),
        resolver: resolver.clone(),
        provider: provider.clone(),
        ready,
        serving: None,
        checked: None,
        wake: Arc::default(),
    };
    let stored = {
        let (dir, provider) = (dir.clone(), provider.clone());
        order::blocking(move || dir.load_certificate(&provider)).await
    };
    match stored {
        Ok(Some(cert)) if manager::servable(&cert, cfg, SystemTime::now()) => {
            tracing::info!(
                file = %dir.certificate_path().display(),
                "reusing the stored ACME certificate"
            );
            manager.install(&cert);
        }
        Ok(_) => {}
        // Logged and replaced by the manager's first order.
        Err(e) => tracing::warn!(error = %e, "stored ACME certificate unusable"),
    }
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if cfg.challenge == crate::config::AcmeChallenge::TlsAlpn01 {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    let http_listener = match cfg.http_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| AcmeError::Bind { addr, source })?,
        ),
        None => None,
    };
    Ok(Acme {
        manager,
        server_config: Arc::new(config),
        http_listener,
    })
}

impl Acme {
    /// The rustls configuration for the public listener.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }

    /// Turns `true` once a certificate is in service (and stays so: a
    /// failed renewal keeps the working certificate).
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.manager.ready.subscribe()
    }

    /// Starts the manager and the plain-HTTP listener in `tasks` (they stop
    /// with that group). Call once the TLS
    /// listener is bound; `https_port` is where redirects point.
    pub fn spawn(self, https_port: u16, tasks: &mut crate::tasks::Background) {
        if let Some(listener) = self.http_listener {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(
                    "ACME plain-HTTP listener on http://{addr} (challenges, 308 to HTTPS)"
                );
            }
            let target = http01::RedirectTarget {
                domains: self.manager.cfg.domains.clone(),
                https_port,
            };
            tasks.spawn(http01::serve(
                listener,
                self.manager.resolver.clone(),
                target,
            ));
        }
        // SIGHUP (systemctl reload) cuts the manager's current wait short.
        // The general SIGHUP handler (`ops::signals`) has no file
        // certificate to reload under ACME; this one listens alongside it.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                let wake = self.manager.wake.clone();
                tasks.spawn(async move {
                    while hup.recv().await.is_some() {
                        wake.notify_one();
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "no SIGHUP handler for ACME"),
        }
        tasks.spawn(self.manager.run());
    }
}
