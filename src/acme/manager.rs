//! The background task that keeps a valid certificate in service: it reads
//! the stored certificate, serves it, and orders a new one when there is
//! none, it does not cover the names, or it is within `renew_before` of
//! expiry. Failures keep whatever certificate is serving, log at ERROR,
//! count in the metrics, and retry with jittered exponential back-off that
//! never comes sooner than the CA's `Retry-After`.
//!
//! Instances sharing the store directory coordinate through the order lock:
//! whoever holds it orders, the others keep re-reading the file and pick up
//! the new certificate when it lands.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use tokio::sync::watch;

use super::order::{RetryAfter, blocking, challenge_name, obtain};
use super::resolver::{AcmeResolver, certified_key_from_pem};
use super::state::{AcmeDir, ChallengeKind, Plan, StoredCert, plan, unix_seconds};
use crate::config::{AcmeConfig, show_duration};

/// How often the certificate file is re-read while nothing is due (another
/// instance may have renewed it).
const RECHECK: Duration = Duration::from_secs(60);
/// How often an instance waiting on another one's order looks again.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How often shared challenges are re-read while another instance orders.
const SHARED_CHALLENGE_POLL: Duration = Duration::from_millis(250);
/// First retry delay after a failed order; doubles per failure.
const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Longest retry delay.
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// A `Retry-After` further out than this is capped (a misbehaving CA must
/// not park renewal for weeks).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Whole-order deadline: account, order, validation, issuance.
const ORDER_DEADLINE: Duration = Duration::from_secs(300);

pub(super) struct Manager {
    pub(super) cfg: AcmeConfig,
    pub(super) dir: AcmeDir,
    pub(super) resolver: Arc<AcmeResolver>,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) ready: watch::Sender<bool>,
    /// Fingerprint of the certificate being served.
    pub(super) serving: Option<[u8; 32]>,
    /// Fingerprint of the certificate last found valid (logged once each).
    pub(super) checked: Option<[u8; 32]>,
    /// Poked on SIGHUP: re-read the certificate file, or retry a failed
    /// order, now instead of at the end of the current wait.
    pub(super) wake: Arc<tokio::sync::Notify>,
}

impl Manager {
    /// Serves `cert` if it is not already the one in service.
    pub(super) fn install(&mut self, cert: &StoredCert) {
        if self.serving == Some(cert.fingerprint) {
            return;
        }
        let first = self.serving.is_none();
        self.resolver.set_current(cert.key.clone());
        self.serving = Some(cert.fingerprint);
        crate::metrics::get()
            .tls_certificate_expiry
            .set(unix_seconds(cert.not_after));
        tracing::info!(
            domains = ?cert.names,
            expires_unix = unix_seconds(cert.not_after),
            file = %self.dir.certificate_path().display(),
            "{}",
            if first {
                "serving the ACME certificate"
            } else {
                "new ACME certificate in service for new connections"
            }
        );
        self.ready.send_replace(true);
    }

    pub(super) async fn run(mut self) {
        let retry_after = RetryAfter::default();
        let mut failures: u32 = 0;
        loop {
            // 1. What is on disk now (this instance's or another's order).
            let stored = {
                let (dir, provider) = (self.dir.clone(), self.provider.clone());
                blocking(move || dir.load_certificate(&provider)).await
            };
            let stored = match stored {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "stored ACME certificate unusable; ordering a new one");
                    None
                }
            };
            let decision = plan(
                stored.as_ref(),
                &self.cfg.domains,
                self.cfg.renew_before,
                SystemTime::now(),
            );
            if let Some(cert) = &stored
                && servable(cert, &self.cfg, SystemTime::now())
            {
                // Still valid for these names: serve it while renewing.
                self.install(cert);
            }
            let reason = match decision {
                Plan::Serve { renew_at } => {
                    failures = 0;
                    if self.checked != self.serving {
                        self.checked = self.serving;
                        tracing::info!(
                            renew_from_unix = unix_seconds(renew_at),
                            "ACME certificate valid; no order needed until renewal"
                        );
                    }
                    let wait = renew_at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .min(RECHECK);
                    self.sleep_or_wake(wait, "SIGHUP: re-reading the ACME certificate now")
                        .await;
                    continue;
                }
                Plan::Order(reason) => reason,
            };

            // 2. Order, unless another instance is already doing so.
            let lock = {
                let dir = self.dir.clone();
                blocking(move || dir.try_lock()).await
            };
            let lock = match lock {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    tracing::info!(
                        lock = %self.dir.path().join("order.lock").display(),
                        "another instance is ordering the certificate; answering its challenges and waiting for it"
                    );
                    self.answer_shared_challenges(LOCK_WAIT).await;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    self.failed(&e.to_string(), failures, None).await;
                    continue;
                }
            };
            // The previous holder may have just finished: look again.
            let fresh = {
                let (dir, provider) = (self.dir.clone(), self.provider.clone());
                blocking(move || dir.load_certificate(&provider)).await
            };
            if let Ok(Some(cert)) = &fresh
                && matches!(
                    plan(
                        Some(cert),
                        &self.cfg.domains,
                        self.cfg.renew_before,
                        SystemTime::now()
                    ),
                    Plan::Serve { .. }
                )
            {
                drop(lock);
                continue;
            }
            tracing::info!(
                reason,
                domains = ?self.cfg.domains,
                directory = %self.cfg.directory,
                challenge = challenge_name(self.cfg.challenge),
                "ordering a certificate{}",
                if self.serving.is_none() {
                    "; until it is issued, TLS handshakes (other than the CA's validation) are refused"
                } else {
                    ""
                }
            );
            let outcome = tokio::time::timeout(
                ORDER_DEADLINE,
                obtain(
                    &self.cfg,
                    &self.dir,
                    &self.resolver,
                    self.provider.clone(),
                    &retry_after,
                ),
            )
            .await;
            self.resolver.clear_challenges();
            {
                let dir = self.dir.clone();
                let _ = tokio::task::spawn_blocking(move || dir.clear_challenges()).await;
            }
            drop(lock);
            match outcome {
                Ok(Ok(cert)) => {
                    failures = 0;
                    crate::metrics::get().acme_certificates.inc();
                    tracing::info!(
                        domains = ?cert.names,
                        expires_unix = unix_seconds(cert.not_after),
                        "ACME certificate issued"
                    );
                    self.install(&cert);
                }
                Ok(Err(e)) => {
                    failures += 1;
                    self.failed(&error_chain(&e), failures, retry_after.take())
                        .await;
                }
                Err(_) => {
                    failures += 1;
                    let message = format!("no answer within {}", show_duration(ORDER_DEADLINE));
                    self.failed(&message, failures, retry_after.take()).await;
                }
            }
        }
    }

    /// For `period`, keeps the challenges another instance shares through
    /// the store directory in this instance's resolver (the CA may validate
    /// through either), then withdraws them.
    async fn answer_shared_challenges(&self, period: Duration) {
        let until = tokio::time::Instant::now() + period;
        while tokio::time::Instant::now() < until {
            let shared = {
                let dir = self.dir.clone();
                tokio::task::spawn_blocking(move || dir.read_challenges())
                    .await
                    .unwrap_or_default()
            };
            let (mut tls_alpn, mut http01) = (HashMap::new(), HashMap::new());
            for (kind, name, contents) in shared {
                match kind {
                    ChallengeKind::TlsAlpn01 => {
                        if let Some(key) = certified_key_from_pem(&contents, &self.provider) {
                            tls_alpn.insert(name, key);
                        }
                    }
                    ChallengeKind::Http01 => {
                        if let Ok(text) = String::from_utf8(contents) {
                            http01.insert(name, text);
                        }
                    }
                }
            }
            self.resolver.adopt_shared(tls_alpn, http01);
            tokio::time::sleep(SHARED_CHALLENGE_POLL).await;
        }
        self.resolver.clear_challenges();
    }

    /// Logs and counts a failed attempt, then waits before the next.
    async fn failed(&self, error: &str, failures: u32, retry_after: Option<SystemTime>) {
        crate::metrics::get().acme_failures.inc();
        let delay = retry_delay(failures, retry_after, SystemTime::now(), jitter());
        if self.serving.is_some() {
            tracing::error!(
                error,
                attempt = failures,
                retry_in_secs = delay.as_secs(),
                directory = %self.cfg.directory,
                "ACME renewal failed; the current certificate stays in service"
            );
        } else {
            tracing::error!(
                error,
                attempt = failures,
                retry_in_secs = delay.as_secs(),
                directory = %self.cfg.directory,
                "ACME order failed; no certificate yet, TLS handshakes are refused"
            );
        }
        self.sleep_or_wake(delay, "SIGHUP: retrying the ACME order now")
            .await;
    }

    /// Waits `period`, or less if SIGHUP arrives (then logs `why`).
    async fn sleep_or_wake(&self, period: Duration, why: &str) {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = self.wake.notified() => tracing::info!("{why}"),
        }
    }
}

/// The error and its sources on one line: "CA: client error (Connect):
/// tcp connect error: Connection refused" says more than the first part.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Whether `cert` may be served for `cfg` now: unexpired and naming every
/// configured domain (renewal may still be due).
pub(super) fn servable(cert: &StoredCert, cfg: &AcmeConfig, now: SystemTime) -> bool {
    cert.not_after > now && cfg.domains.iter().all(|d| cert.names.contains(d))
}

/// A factor in [0.75, 1.25) from the OS random source.
fn jitter() -> f64 {
    let n = getrandom::u32().unwrap_or(u32::MAX / 2);
    0.75 + 0.5 * (f64::from(n) / (f64::from(u32::MAX) + 1.0))
}

/// Delay before attempt `failures + 1`: exponential from [`FIRST_RETRY`],
/// capped at [`MAX_RETRY`], scaled by `jitter`, and never before the CA's
/// `Retry-After` (itself capped at [`MAX_RETRY_AFTER`]).
fn retry_delay(
    failures: u32,
    retry_after: Option<SystemTime>,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let backoff = FIRST_RETRY
        .saturating_mul(1u32 << exponent)
        .min(MAX_RETRY)
        .mul_f64(jitter);
    let asked = retry_after
        .and_then(|at| at.duration_since(now).ok())
        .unwrap_or_default()
        .min(MAX_RETRY_AFTER);
    backoff.max(asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_an_hour() {
        let now = SystemTime::now();
        let d = |n| retry_delay(n, None, now, 1.0);
        assert_eq!(d(1), Duration::from_secs(10));
        assert_eq!(d(2), Duration::from_secs(20));
        assert_eq!(d(3), Duration::from_secs(40));
        assert_eq!(d(20), Duration::from_secs(3600));
        assert_eq!(d(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_spreads_and_stays_in_range() {
        let now = SystemTime::now();
        assert_eq!(retry_delay(1, None, now, 0.75), Duration::from_millis(7500));
        let samples: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(samples.iter().all(|j| (0.75..1.25).contains(j)));
        assert!(samples.iter().any(|j| *j != samples[0]));
    }

    #[test]
    fn retry_after_is_respected_but_capped() {
        let now = SystemTime::now();
        let later = now + Duration::from_secs(900);
        assert_eq!(
            retry_delay(1, Some(later), now, 1.0),
            Duration::from_secs(900)
        );
        // A Retry-After sooner than the back-off does not shorten it.
        let soon = now + Duration::from_secs(1);
        assert_eq!(
            retry_delay(3, Some(soon), now, 1.0),
            Duration::from_secs(40)
        );
        let absurd = now + Duration::from_secs(30 * 86_400);
        assert_eq!(
            retry_delay(1, Some(absurd), now, 1.0),
            Duration::from_secs(86_400)
        );
    }
}
