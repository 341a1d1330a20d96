//! Abuse throttles: request-rate limits per client address and growing
//! back-off after failed sign-ins, per email and per address.
//!
//! Counters live in memory (checked on every auth request) and are written
//! to the store every few seconds and at shutdown, so they survive restarts;
//! a crash loses at most one flush interval of counts.
//!
//! Lock-out trade-off: per-email back-off would let an attacker keep a victim
//! out by failing on purpose. A browser that has signed in successfully as an
//! email carries a "known device" cookie (an HMAC of the email under a server
//! secret); it is exempt from that email's back-off, though not from the
//! per-address limits. So the victim's own browser keeps working while
//! unknown devices, including the attacker's, stay throttled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::store::{Store, StoreError, ThrottleRecord, UnixMillis};
use crate::sync;

/// Keys kept in memory at most; beyond that the least recently used half
/// is dropped (limits then restart for those keys).
const MAX_KEYS: usize = 200_000;
/// Failures older than this no longer count.
const FAILURE_MEMORY_MS: u64 = 24 * 3600 * 1000;

/// A request-rate limit: at most `max` per `window`.
// Every limit is per client address, and the names say so where they are
// used (`Rate::SignInPerIp`); clippy only noticed once the module became
// private.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    SendOtpPerIp,
    VerifyPerIp,
    SignInPerIp,
    /// password/forgot and email/change: counted apart from send-otp, with
    /// the same limit (`send_otp_per_ip_per_hour`).
    AccountMailPerIp,
    /// password/reset and email/verify: counted apart from sign-up verify,
    /// with the same limit (`verify_per_ip_per_hour`).
    AccountCodePerIp,
    /// Starting an OIDC sign-in (it stores state): the sign-in budget.
    OAuthConnectPerIp,
    /// `[signup] refusal_notice` mails: one a day per address.
    RefusalNoticePerEmail,
}

/// A failure counter with back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failures {
    SignInPerEmail,
    SignInPerIp,
}

struct Entry {
    record: ThrottleRecord,
    dirty: bool,
}

pub struct Throttle {
    limits: LimitsConfig,
    store: Arc<dyn Store>,
    entries: Mutex<HashMap<String, Entry>>,
    /// Keys removed since the last flush, to delete from the store.
    removed: Mutex<Vec<String>>,
    /// Several instances share the store: count there, at once (see
    /// [`Throttle::update`]).
    shared: bool,
    /// Windows and back-off are measured on this (see `crate::clock`).
    clock: Clock,
}

impl Throttle {
    /// Loads the persisted counters.
    pub fn load(
        limits: LimitsConfig,
        store: Arc<dyn Store>,
        clock: Clock,
    ) -> Result<Throttle, StoreError> {
        let now = clock.now_millis();
        let entries = store
            .load_throttles()?
            .into_iter()
            .filter(|(_, r)| !is_stale(r, now))
            .map(|(k, record)| {
                (
                    k,
                    Entry {
                        record,
                        dirty: false,
                    },
                )
            })
            .collect();
        Ok(Throttle {
            limits,
            shared: store.shares_counters(),
            store,
            entries: Mutex::new(entries),
            removed: Mutex::new(Vec::new()),
            clock,
        })
    }

    fn rate_params(&self, rate: Rate) -> (&'static str, u32, u64) {
        match rate {
            Rate::SendOtpPerIp => (
                "send-otp:ip",
                self.limits.send_otp_per_ip_per_hour,
                3_600_000,
            ),
            Rate::VerifyPerIp => ("verify:ip", self.limits.verify_per_ip_per_hour, 3_600_000),
            Rate::SignInPerIp => ("signin:ip", self.limits.signin_per_ip_per_minute, 60_000),
            Rate::AccountMailPerIp => (
                "account-mail:ip",
                self.limits.send_otp_per_ip_per_hour,
                3_600_000,
            ),
            Rate::AccountCodePerIp => (
                "account-code:ip",
                self.limits.verify_per_ip_per_hour,
                3_600_000,
            ),
            Rate::OAuthConnectPerIp => (
                "oauth-connect:ip",
                self.limits.signin_per_ip_per_minute,
                60_000,
            ),
            Rate::RefusalNoticePerEmail => ("refusal-notice:email", 1, 86_400_000),
        }
    }

    fn failure_params(&self, kind: Failures) -> (&'static str, u32) {
        match kind {
            Failures::SignInPerEmail => {
                ("signin-fail:email", self.limits.signin_failures_per_email)
            }
            Failures::SignInPerIp => ("signin-fail:ip", self.limits.signin_failures_per_ip),
        }
    }

    /// Counts one request against `rate` for `subject`; `Err(retry_after)`
    /// once the window's allowance is used up.
    pub fn hit(&self, rate: Rate, subject: &str) -> Result<(), Duration> {
        let (prefix, max, window) = self.rate_params(rate);
        let now = self.clock.now_millis();
        self.update(format!("{prefix}:{subject}"), now, |r| {
            if now.saturating_sub(r.window_start) >= window {
                r.window_start = now;
                r.count = 0;
            }
            if r.count >= max {
                return Err(ms(r.window_start + window - now));
            }
            r.count += 1;
            Ok(())
        })
    }

    /// `Err(retry_after)` while `subject` is backing off after failures.
    pub fn check_backoff(&self, kind: Failures, subject: &str) -> Result<(), Duration> {
        let (prefix, _) = self.failure_params(kind);
        let now = self.clock.now_millis();
        let key = format!("{prefix}:{subject}");
        if self.shared {
            match self.store.throttle_record(&key) {
                Ok(Some(r)) if r.blocked_until > now => return Err(ms(r.blocked_until - now)),
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "shared throttle unreadable; using this instance's counters")
                }
            }
        }
        let entries = sync::lock(&self.entries);
        match entries.get(&key) {
            Some(e) if e.record.blocked_until > now => Err(ms(e.record.blocked_until - now)),
            _ => Ok(()),
        }
    }

    /// Records a failure; past the threshold each one doubles the back-off,
    /// up to `max_backoff`.
    pub fn record_failure(&self, kind: Failures, subject: &str) {
        let (prefix, threshold) = self.failure_params(kind);
        let now = self.clock.now_millis();
        let max = self.limits.max_backoff.as_millis() as u64;
        let first = self.limits.first_backoff.as_millis() as u64;
        self.update(format!("{prefix}:{subject}"), now, |r| {
            if now.saturating_sub(r.updated) > FAILURE_MEMORY_MS {
                r.failures = 0;
            }
            r.failures = r.failures.saturating_add(1);
            if r.failures >= threshold {
                let steps = (r.failures - threshold).min(30);
                let backoff = first.saturating_mul(1 << steps).min(max);
                r.blocked_until = now + backoff;
            }
        });
    }

    /// Clears a failure counter after a success.
    pub fn clear_failures(&self, kind: Failures, subject: &str) {
        let (prefix, _) = self.failure_params(kind);
        let key = format!("{prefix}:{subject}");
        let removed = sync::lock(&self.entries).remove(&key).is_some();
        if self.shared {
            let gone = [(key.clone(), None)];
            match self.store.save_throttles(&gone) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "shared throttle not cleared; retrying at the next flush")
                }
            }
            sync::lock(&self.removed).push(key);
        } else if removed {
            sync::lock(&self.removed).push(key);
        }
    }

    /// Applies `f` to the record under `key`: in the store at once when
    /// counters are shared by several instances (falling back to this
    /// instance's memory while the database is unreachable), else in memory.
    fn update<T>(
        &self,
        key: String,
        now: UnixMillis,
        mut f: impl FnMut(&mut ThrottleRecord) -> T,
    ) -> T {
        if self.shared {
            let mut outcome = None;
            let stored = self.store.update_throttle(&key, &mut |r| {
                outcome = Some(f(r));
                r.updated = now;
            });
            match (stored, outcome) {
                (Ok(record), Some(t)) => {
                    // Keep a copy so a database outage starts from here.
                    sync::lock(&self.entries).insert(
                        key,
                        Entry {
                            record,
                            dirty: false,
                        },
                    );
                    return t;
                }
                (Err(e), _) => {
                    tracing::warn!(error = %e, "shared throttle not updated; using this instance's counters")
                }
                (Ok(_), None) => {}
            }
        }
        match self.with_entry(key, now, |r| Ok::<T, std::convert::Infallible>(f(r))) {
            Ok(t) => t,
            Err(never) => match never {},
        }
    }

    fn with_entry<T, E>(
        &self,
        key: String,
        now: UnixMillis,
        f: impl FnOnce(&mut ThrottleRecord) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut entries = sync::lock(&self.entries);
        if entries.len() >= MAX_KEYS && !entries.contains_key(&key) {
            evict(&mut entries, now);
        }
        let entry = entries.entry(key).or_insert(Entry {
            record: ThrottleRecord::default(),
            dirty: true,
        });
        let result = f(&mut entry.record);
        entry.record.updated = now;
        entry.dirty = true;
        result
    }

    /// Writes changed counters to the store and forgets stale ones.
    pub fn flush(&self) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        let cleared: Vec<String> = sync::lock(&self.removed).drain(..).collect();
        let mut stale = Vec::new();
        let mut changed = Vec::new();
        {
            let mut entries = sync::lock(&self.entries);
            entries.retain(|k, e| {
                if is_stale(&e.record, now) {
                    stale.push(k.clone());
                    return false;
                }
                if e.dirty {
                    changed.push((k.clone(), e.record));
                    e.dirty = false;
                }
                true
            });
        }
        if self.shared {
            return self.flush_shared(cleared, stale, changed, now);
        }
        let changes: Vec<(String, Option<ThrottleRecord>)> = cleared
            .into_iter()
            .chain(stale)
            .map(|k| (k, None))
            .chain(changed.into_iter().map(|(k, r)| (k, Some(r))))
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        self.store.save_throttles(&changes)
    }

    /// The shared store holds what every instance counted; this instance's
    /// entries are copies, or counts made while the store was unreachable.
    /// So: clears (after a success) are written as they are; a key whose
    /// copy here went stale is deleted only if the stored record is stale
    /// too (another instance may still be counting it); counts made during
    /// an outage are merged into the stored record (the stricter of both),
    /// never written over it. A failed merge stays dirty for the next flush.
    fn flush_shared(
        &self,
        cleared: Vec<String>,
        stale: Vec<String>,
        changed: Vec<(String, ThrottleRecord)>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut first_error = None;
        let mut gone: Vec<(String, Option<ThrottleRecord>)> =
            cleared.iter().map(|k| (k.clone(), None)).collect();
        for key in stale {
            if let Ok(Some(stored)) = self.store.throttle_record(&key)
                && is_stale(&stored, now)
            {
                gone.push((key, None));
            }
        }
        if !gone.is_empty()
            && let Err(err) = self.store.save_throttles(&gone)
        {
            // Clears are retried at the next flush; stale keys come back
            // here when their copies are loaded again.
            sync::lock(&self.removed).extend(cleared);
            first_error = Some(err);
        }
        for (key, local) in changed {
            match self
                .store
                .update_throttle(&key, &mut |shared| merge_stricter(shared, &local))
            {
                Ok(merged) => {
                    if let Some(e) = sync::lock(&self.entries).get_mut(&key) {
                        // Unless a newer local change came in meanwhile.
                        if !e.dirty {
                            e.record = merged;
                        }
                    }
                }
                Err(err) => {
                    if let Some(e) = sync::lock(&self.entries).get_mut(&key) {
                        e.dirty = true;
                    }
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Folds `local` into `shared`, keeping the stricter of both: the later
/// counting window (the larger count within the same one), the larger
/// failure count and the later block.
fn merge_stricter(shared: &mut ThrottleRecord, local: &ThrottleRecord) {
    if local.window_start > shared.window_start {
        shared.window_start = local.window_start;
        shared.count = local.count;
    } else if local.window_start == shared.window_start {
        shared.count = shared.count.max(local.count);
    }
    shared.failures = shared.failures.max(local.failures);
    shared.blocked_until = shared.blocked_until.max(local.blocked_until);
    shared.updated = shared.updated.max(local.updated);
}

/// A record that no longer limits anything.
fn is_stale(r: &ThrottleRecord, now: UnixMillis) -> bool {
    r.blocked_until <= now && now.saturating_sub(r.updated) > FAILURE_MEMORY_MS
}

fn evict(entries: &mut HashMap<String, Entry>, now: UnixMillis) {
    entries.retain(|_, e| !is_stale(&e.record, now) || e.record.blocked_until > now);
    if entries.len() < MAX_KEYS {
        return;
    }
    let mut ages: Vec<UnixMillis> = entries.values().map(|e| e.record.updated).collect();
    let (_, median, _) = ages.select_nth_unstable(entries.len() / 2);
    let cutoff = *median;
    entries.retain(|_, e| e.record.updated > cutoff || e.record.blocked_until > now);
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            send_otp_per_ip_per_hour: 2,
            verify_per_ip_per_hour: 2,
            signin_per_ip_per_minute: 2,
            signin_failures_per_email: 3,
            signin_failures_per_ip: 10,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_queued_hashes: 4,
        }
    }

    fn throttle(dir: &tempfile::TempDir) -> Throttle {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("t.redb")).unwrap());
        Throttle::load(limits(), store, Clock::System).unwrap()
    }

    #[test]
    fn rates_limit_per_subject() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(&dir);
        assert!(t.hit(Rate::SignInPerIp, "1.2.3.4").is_ok());
        assert!(t.hit(Rate::SignInPerIp, "1.2.3.4").is_ok());
        let retry = t.hit(Rate::SignInPerIp, "1.2.3.4").unwrap_err();
        assert!(retry <= Duration::from_secs(60) && retry > Duration::from_secs(55));
        assert!(t.hit(Rate::SignInPerIp, "5.6.7.8").is_ok());
        assert!(t.hit(Rate::VerifyPerIp, "1.2.3.4").is_ok());
    }

    #[test]
    fn failures_back_off_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(&dir);
        let kind = Failures::SignInPerEmail;
        t.record_failure(kind, "a@x.io");
        t.record_failure(kind, "a@x.io");
        assert!(t.check_backoff(kind, "a@x.io").is_ok());
        t.record_failure(kind, "a@x.io");
        let first = t.check_backoff(kind, "a@x.io").unwrap_err();
        t.record_failure(kind, "a@x.io");
        let second = t.check_backoff(kind, "a@x.io").unwrap_err();
        assert!(second > first, "{first:?} then {second:?}");
        for _ in 0..40 {
            t.record_failure(kind, "a@x.io");
        }
        assert!(t.check_backoff(kind, "a@x.io").unwrap_err() <= Duration::from_secs(60));
        t.clear_failures(kind, "a@x.io");
        assert!(t.check_backoff(kind, "a@x.io").is_ok());
    }

    #[test]
    fn counters_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        {
            let t = throttle(&dir);
            for _ in 0..5 {
                t.record_failure(Failures::SignInPerEmail, "b@x.io");
            }
            t.hit(Rate::SendOtpPerIp, "9.9.9.9").unwrap();
            t.hit(Rate::SendOtpPerIp, "9.9.9.9").unwrap();
            t.flush().unwrap();
        }
        let t = throttle(&dir);
        assert!(t.check_backoff(Failures::SignInPerEmail, "b@x.io").is_err());
        assert!(t.hit(Rate::SendOtpPerIp, "9.9.9.9").is_err());
    }

    fn throttle_on(dir: &tempfile::TempDir, limits: LimitsConfig, clock: Clock) -> Throttle {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("t.redb")).unwrap());
        Throttle::load(limits, store, clock).unwrap()
    }

    #[test]
    fn a_rate_window_reopens_when_its_time_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual();
        let t = throttle_on(&dir, limits(), clock);
        t.hit(Rate::SignInPerIp, "1.2.3.4").unwrap();
        t.hit(Rate::SignInPerIp, "1.2.3.4").unwrap();
        // 50 s into the minute: still closed, for the rest of the minute.
        clock.advance(Duration::from_secs(50));
        let retry = t.hit(Rate::SignInPerIp, "1.2.3.4").unwrap_err();
        assert!(retry <= Duration::from_secs(10), "{retry:?}");
        // Past the minute: open again, with a fresh count.
        clock.advance(Duration::from_secs(11));
        t.hit(Rate::SignInPerIp, "1.2.3.4").unwrap();
        t.hit(Rate::SignInPerIp, "1.2.3.4").unwrap();
        assert!(t.hit(Rate::SignInPerIp, "1.2.3.4").is_err());
    }

    #[test]
    fn a_back_off_ends_when_its_time_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual();
        let limits = LimitsConfig {
            first_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(3600),
            ..limits()
        };
        let t = throttle_on(&dir, limits, clock);
        let kind = Failures::SignInPerEmail;
        for _ in 0..3 {
            t.record_failure(kind, "a@x.io");
        }
        let wait = t.check_backoff(kind, "a@x.io").unwrap_err();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        // Short of it: still blocked; past it: allowed.
        clock.advance(Duration::from_secs(20));
        assert!(t.check_backoff(kind, "a@x.io").is_err());
        clock.advance(Duration::from_secs(11));
        assert!(t.check_backoff(kind, "a@x.io").is_ok());
        // The failures are remembered: the next one blocks again, longer.
        t.record_failure(kind, "a@x.io");
        assert!(t.check_backoff(kind, "a@x.io").unwrap_err() > wait);
        // A day later they are forgotten: one failure blocks nothing.
        clock.advance(Duration::from_secs(25 * 3600));
        t.record_failure(kind, "a@x.io");
        assert!(t.check_backoff(kind, "a@x.io").is_ok());
    }

    fn record(window_start: u64, count: u32, failures: u32, blocked_until: u64) -> ThrottleRecord {
        ThrottleRecord {
            window_start,
            count,
            failures,
            blocked_until,
            updated: window_start,
        }
    }

    #[test]
    fn counts_made_during_an_outage_never_lower_the_shared_ones() {
        // Other instances counted more meanwhile: their counts stay.
        let mut shared = record(1000, 7, 6, 9000);
        merge_stricter(&mut shared, &record(1000, 3, 2, 5000));
        assert_eq!(shared, record(1000, 7, 6, 9000));
        // This instance counted more: its counts win.
        let mut shared = record(1000, 2, 1, 0);
        merge_stricter(&mut shared, &record(1000, 4, 5, 8000));
        assert_eq!(shared, record(1000, 4, 5, 8000));
        // A later window replaces an earlier one, in either direction.
        let mut shared = record(1000, 9, 0, 0);
        merge_stricter(&mut shared, &record(2000, 1, 0, 0));
        assert_eq!((shared.window_start, shared.count), (2000, 1));
        let mut shared = record(2000, 1, 0, 0);
        merge_stricter(&mut shared, &record(1000, 9, 0, 0));
        assert_eq!((shared.window_start, shared.count), (2000, 1));
    }
}
