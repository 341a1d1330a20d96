//! Process signals. Handlers are installed eagerly — before the listener is
//! announced — so a signal sent right after start-up is never met by the
//! default action (which would kill the process without a drain).

use std::sync::Arc;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::tls::ReloadableCert;

/// SIGTERM and SIGINT, installed.
pub struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    pub fn install() -> std::io::Result<Shutdown> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// Installs the SIGHUP handler and returns the task that serves it (the
/// caller spawns it with the other background tasks). Each SIGHUP re-reads the certificate and
/// key; a pair that fails to load is logged and the current one is kept.
/// Without TLS there is nothing to reload, and the signal is only logged.
pub fn reload_on_hangup(
    cert: Option<Arc<ReloadableCert>>,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hup.recv().await.is_some() {
            let Some(cert) = cert.clone() else {
                tracing::info!("SIGHUP received; no TLS certificate to reload");
                continue;
            };
            crate::ops::systemd::reloading(false);
            let path = cert.cert_path().display().to_string();
            let outcome = tokio::task::spawn_blocking(move || cert.reload()).await;
            match outcome {
                Ok(Ok(())) => tracing::info!(cert = %path, "SIGHUP: TLS certificate reloaded"),
                Ok(Err(e)) => tracing::error!(
                    cert = %path,
                    error = %e,
                    "SIGHUP: new TLS certificate rejected; keeping the current one"
                ),
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
            }
            crate::ops::systemd::reloading(true);
        }
    })
}
