//! The delivery worker: takes due messages from the store's outbox, renders
//! and sends them one at a time, and records the outcome durably.
//!
//! Lifecycle of a message: queued by send-otp (same transaction as the code)
//! → attempted → on acceptance removed at once ("sent"); on a temporary
//! failure (connect error, timeout, 4xx) rescheduled with exponential
//! backoff and jitter ("retry"); on a permanent failure (5xx, TLS or AUTH
//! refused) removed ("failed"); past its deadline removed unsent
//! ("expired"). A newer send-otp for the same email drops the unsent one in
//! the store. The queue lives in redb, so a restart resumes it.
//!
//! At most once per acceptance: the message is removed in a durable commit
//! right after the server's 250 to DATA. Only a crash (or power loss) in the
//! instant between that 250 and the commit can send it again after restart;
//! the `Message-ID` stays the same, so receivers that deduplicate see one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::templates::{Composer, Content};
use super::{Transport, TransportError};
use crate::clock::Clock;
use crate::config::{MailConfig, MailTransport};
use crate::store::run_blocking;
use crate::store::{MailKind, QueuedMail, Store, StoreError};

/// Messages taken from the store per round.
const BATCH: usize = 32;
/// Longest sleep when nothing is scheduled (a wake-up comes with new mail).
const IDLE: Duration = Duration::from_secs(60);
/// Pause after the store itself failed, so a broken disk is not hammered.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Delivery counters, for the operations' metrics endpoint.
#[derive(Debug, Default)]
pub struct MailStats {
    /// Messages queued since start.
    pub queued: AtomicU64,
    /// Messages in the outbox now (as of the worker's last look, plus new ones).
    pub depth: AtomicU64,
    /// Messages accepted by the transport.
    pub sent: AtomicU64,
    /// Attempts that failed temporarily and were rescheduled.
    pub retried: AtomicU64,
    /// Messages given up after a failed attempt (permanent error or deadline).
    pub failed: AtomicU64,
    /// Messages dropped unsent: superseded by a newer code, or expired.
    pub dropped: AtomicU64,
}

/// A plain copy of [`MailStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailStatsSnapshot {
    pub queued: u64,
    pub depth: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub dropped: u64,
}

impl MailStats {
    pub fn snapshot(&self) -> MailStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MailStatsSnapshot {
            queued: get(&self.queued),
            depth: get(&self.depth),
            sent: get(&self.sent),
            retried: get(&self.retried),
            failed: get(&self.failed),
            dropped: get(&self.dropped),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The handle request handlers hold: queue deadline, counters, and the
/// worker's doorbell.
pub struct Outbox {
    pub stats: Arc<MailStats>,
    deadline: Duration,
    wake: Notify,
}

impl Outbox {
    pub fn new(deadline: Duration) -> Outbox {
        Outbox {
            stats: Arc::new(MailStats::default()),
            deadline,
            wake: Notify::new(),
        }
    }

    /// How long a queued message may wait for delivery.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Call after a message was committed to the outbox: counts it and wakes
    /// the worker at once. `superseded`: an older unsent mail was dropped.
    pub fn queued(&self, superseded: bool) {
        MailStats::bump(&self.stats.queued);
        if superseded {
            MailStats::bump(&self.stats.dropped);
        } else {
            MailStats::bump(&self.stats.depth);
        }
        self.wake.notify_one();
    }
}

/// The running worker; [`Worker::stop`] lets the current attempt finish.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    grace: Duration,
}

impl Worker {
    /// Stops after the attempt in progress (bounded by the SMTP timeouts).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(self.grace, &mut task).await.is_err() {
            // The message stays queued; it is retried after the restart.
            tracing::warn!("mail worker did not stop in time; abandoning the attempt in progress");
            task.abort();
        }
    }
}

/// Exponential backoff with jitter between temporary failures.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// Delay before attempt `failures + 1`: initial × 2^(failures−1), capped,
    /// then a random point in its upper half so queued messages spread out.
    fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let full = self.initial.saturating_mul(1 << exp).min(self.max);
        let mut b = [0u8; 8];
        crate::random::random_bytes(&mut b);
        let fraction = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
        full.mul_f64(0.5 + fraction / 2.0)
    }
}

/// Starts the worker task.
pub fn spawn_worker(
    outbox: Arc<Outbox>,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    composer: Composer,
    cfg: &MailConfig,
    clock: Clock,
) -> Worker {
    let (stop, stop_rx) = watch::channel(false);
    // An SMTP attempt is bounded by its connect timeout plus a few commands.
    let grace = match &cfg.transport {
        MailTransport::Smtp(s) => s.timeout.saturating_mul(3),
        MailTransport::File(_) | MailTransport::Log => Duration::from_secs(5),
    };
    let delivery = Delivery {
        outbox,
        store,
        transport,
        composer,
        backoff: Backoff {
            initial: cfg.retry_initial,
            max: cfg.retry_max,
        },
        clock,
    };
    let task = tokio::spawn(delivery.run(stop_rx));
    Worker { stop, task, grace }
}

struct Delivery {
    outbox: Arc<Outbox>,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    composer: Composer,
    backoff: Backoff,
    /// Due times and deadlines are on this; the pauses between batches are
    /// tokio sleeps (see `crate::clock`).
    clock: Clock,
}

impl Delivery {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let store = self.store.clone();
            let now = self.clock.now_millis();
            let pause = match run_blocking(move || store.outbox_due(now, BATCH)).await {
                Ok(batch) => {
                    self.outbox
                        .stats
                        .depth
                        .store(batch.depth, Ordering::Relaxed);
                    if !batch.due.is_empty() {
                        for mail in batch.due {
                            if *stop.borrow() {
                                return;
                            }
                            self.attempt(mail).await;
                        }
                        continue;
                    }
                    batch.next_due.map_or(IDLE, |at| {
                        Duration::from_millis(at.saturating_sub(self.clock.now_millis())).min(IDLE)
                    })
                }
                Err(e) => {
                    tracing::error!(error = %e, "mail outbox could not be read");
                    STORE_RETRY
                }
            };
            tokio::select! {
                _ = self.outbox.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One delivery attempt of `mail`, with its outcome recorded and logged.
    /// Logs name the outbox id and Message-ID, never the code.
    async fn attempt(&self, mail: QueuedMail) {
        let stats = &self.outbox.stats;
        // The batch may be seconds old: a newer code may have replaced this
        // mail meanwhile. Re-read it right before the dialogue, so only a
        // send-otp arriving during the dialogue itself can still overlap.
        let store = self.store.clone();
        let (id, now) = (mail.id, self.clock.now_millis());
        let mail = match run_blocking(move || store.outbox_get(id, now)).await {
            Ok(Some(fresh)) => fresh,
            Ok(None) => return,
            Err(e) => return log_store_error(id, &e),
        };
        let attempt = mail.attempts + 1;
        if self.clock.now_millis() >= mail.deadline {
            self.remove(id).await;
            MailStats::bump(&stats.dropped);
            tracing::warn!(
                outbox_id = id,
                attempt,
                outcome = "expired",
                "mail dropped unsent: its deadline passed"
            );
            return;
        }
        let content = match &mail.kind {
            MailKind::SignupCode { code, ttl_ms } => Content::SignupCode {
                code: code.clone(),
                ttl: Duration::from_millis(*ttl_ms),
            },
            MailKind::AccountExists => Content::AccountExists,
            MailKind::ResetCode { code, ttl_ms } => Content::ResetCode {
                code: code.clone(),
                ttl: Duration::from_millis(*ttl_ms),
            },
            MailKind::EmailChangeCode { code, ttl_ms } => Content::EmailChangeCode {
                code: code.clone(),
                ttl: Duration::from_millis(*ttl_ms),
            },
            MailKind::PasswordChanged => Content::PasswordChanged { at: mail.queued_at },
            MailKind::EmailChanging { new_email } => Content::EmailChanging {
                new_email: new_email.clone(),
            },
            MailKind::EmailInUse => Content::EmailInUse,
            MailKind::NewSignIn { at, ip, user_agent } => Content::NewSignIn {
                at: *at,
                ip: ip.clone(),
                user_agent: user_agent.clone(),
            },
            MailKind::SignupRefused => Content::SignupRefused,
            MailKind::Invited { expires_at } => Content::Invited {
                expires_at: *expires_at,
            },
            MailKind::SecondFactor { event } => Content::SecondFactor {
                at: mail.queued_at,
                event: *event,
            },
        };
        let rendered = match self
            .composer
            .render(&mail.to, &mail.message_token, &content)
        {
            Ok(r) => r,
            Err(e) => {
                self.remove(id).await;
                MailStats::bump(&stats.failed);
                tracing::error!(outbox_id = id, outcome = "failed", error = %e, "mail could not be rendered");
                return;
            }
        };
        let message_id = rendered.message_id.clone();
        match self.transport.deliver(&rendered).await {
            Ok(()) => {
                // Durable at once: from here on a retry would be a duplicate.
                self.remove(id).await;
                MailStats::bump(&stats.sent);
                if !self.transport.prints_instead_of_sending() {
                    tracing::info!(outbox_id = id, %message_id, attempt, outcome = "sent", "mail accepted");
                }
            }
            Err(e) if e.is_permanent() => {
                self.remove(id).await;
                MailStats::bump(&stats.failed);
                tracing::warn!(outbox_id = id, %message_id, attempt, outcome = "failed", error = %e, "mail refused permanently; not retrying");
            }
            Err(e) => self.retry_or_give_up(&mail, &message_id, e).await,
        }
    }

    async fn retry_or_give_up(&self, mail: &QueuedMail, message_id: &str, e: TransportError) {
        let stats = &self.outbox.stats;
        let (id, attempt) = (mail.id, mail.attempts + 1);
        let delay = self.backoff.delay(attempt);
        let next = self
            .clock
            .now_millis()
            .saturating_add(delay.as_millis() as u64);
        if next >= mail.deadline {
            self.remove(id).await;
            MailStats::bump(&stats.failed);
            tracing::warn!(outbox_id = id, %message_id, attempt, outcome = "expired", error = %e, "mail given up: no retry fits before its deadline");
            return;
        }
        let store = self.store.clone();
        match run_blocking(move || store.outbox_reschedule(id, attempt, next)).await {
            Ok(_) => {
                MailStats::bump(&stats.retried);
                tracing::warn!(outbox_id = id, %message_id, attempt, outcome = "retry", retry_in_ms = delay.as_millis() as u64, error = %e, "mail delivery failed temporarily");
            }
            Err(store_error) => log_store_error(id, &store_error),
        }
    }

    async fn remove(&self, id: u64) {
        let store = self.store.clone();
        if let Err(e) = run_blocking(move || store.outbox_remove(id)).await {
            log_store_error(id, &e);
        }
        let _ = self
            .outbox
            .stats
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1));
    }
}

fn log_store_error(id: u64, e: &StoreError) {
    // The message stays queued and will be attempted again.
    tracing::error!(outbox_id = id, error = %e, "mail outbox could not be updated");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        for _ in 0..50 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4));
            let d20 = b.delay(20);
            assert!(d20 >= Duration::from_secs(5) && d20 <= Duration::from_secs(10));
        }
    }

    #[test]
    fn queued_counts_and_superseded_mail_is_dropped() {
        let outbox = Outbox::new(Duration::from_secs(300));
        outbox.queued(false);
        outbox.queued(true);
        let s = outbox.stats.snapshot();
        assert_eq!((s.queued, s.depth, s.dropped), (2, 1, 1));
    }
}
