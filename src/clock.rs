//! The clock every expiry decision reads: sessions (idle, absolute, the
//! cache), sign-up and account codes, pending MFA sign-ins, passkey
//! challenges, OIDC states, invitations, throttle windows and back-off,
//! the store sweeper's cut-off and the outbox's due times.
//!
//! A leaf: it imports nothing from the crate.
//!
//! Two kinds, chosen once at start-up:
//! - [`Clock::System`], what `gatehouse serve` always uses: the wall clock,
//!   read directly (one `SystemTime::now()`, no lock, no virtual call; the
//!   session check reads it on every proxied request).
//! - [`Clock::Manual`], for tests: the wall clock plus an offset that only
//!   grows ([`Clock::advance`]). Time keeps flowing at its real rate, so
//!   tokio timers and the clock never disagree about the direction of time,
//!   and a test can jump past an expiry instead of sleeping through it.
//!
//! How tests get one: there is no way to select the manual clock from the
//! command line, the environment or the configuration — the binary has no
//! code path that builds one. Only a caller linking the library can, through
//! the `#[doc(hidden)]` `gatehouse::serve_with_clock` that the integration
//! harness uses to run the server in-process (`tests/common`, `InProcess`).
//! So a production deployment has nothing to attack here.
//!
//! Not on this clock, deliberately: tokio timers (hyper's header-read
//! timeout, upstream and connect timeouts, connection keep-alive and
//! first-request deadlines, the sweeper's and flushers' intervals, the
//! outbox worker's pauses), the upstream pool's idle limit, body-rate
//! limits and request durations. They measure socket activity of real
//! connections, move with tokio's own clock, and their tests use real short
//! timeouts; none of them decides whether a credential is still valid.
//! Nor are: certificate renewal (`acme`, against a real CA's notion of
//! time), the OIDC provider's metadata and key cache (refresh pacing),
//! timestamps in log lines and mail texts, and the CLI when it opens a
//! stopped server's store (`store::now_millis`, the wall clock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (the unit the store keeps).
pub type UnixMillis = u64;

/// Where "now" comes from. `Copy`: handed by value to blocking tasks.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    /// The wall clock.
    #[default]
    System,
    /// The wall clock plus a test-controlled offset in milliseconds.
    Manual(&'static ManualOffset),
}

/// The offset of a manual clock. Leaked on creation (a few bytes per test
/// server) so that [`Clock`] stays `Copy`.
#[derive(Debug, Default)]
pub struct ManualOffset(AtomicU64);

impl Clock {
    /// A new manual clock, starting at the wall clock (offset 0).
    pub fn manual() -> Clock {
        Clock::Manual(Box::leak(Box::default()))
    }

    /// Moves a manual clock forward by `by`; the system clock ignores it
    /// (it cannot be moved), which the return value says.
    pub fn advance(&self, by: Duration) -> bool {
        match self {
            Clock::System => false,
            Clock::Manual(offset) => {
                let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
                offset.0.fetch_add(ms, Ordering::Relaxed);
                true
            }
        }
    }

    /// How far a manual clock has been moved ahead of the wall clock.
    fn offset(&self) -> Duration {
        match self {
            Clock::System => Duration::ZERO,
            Clock::Manual(offset) => Duration::from_millis(offset.0.load(Ordering::Relaxed)),
        }
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Manual(_) => SystemTime::now() + self.offset(),
        }
    }

    /// The current time in milliseconds since the epoch (0 before it).
    #[inline]
    pub fn now_millis(&self) -> UnixMillis {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// The current time in whole seconds since the epoch.
    pub fn now_secs(&self) -> u64 {
        self.now_millis() / 1000
    }

    /// A monotonic instant, moved by the same offset, for caches and
    /// limits that compare `Instant`s.
    pub fn instant(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(_) => Instant::now() + self.offset(),
        }
    }

    /// How long ago `earlier` (from [`Clock::instant`]) was.
    pub fn since(&self, earlier: Instant) -> Duration {
        self.instant().saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_the_wall_clock_and_cannot_be_moved() {
        let clock = Clock::System;
        let before = SystemTime::now();
        assert!(!clock.advance(Duration::from_secs(3600)));
        let read = clock.now();
        assert!(read >= before && read <= SystemTime::now());
    }

    #[test]
    fn a_manual_clock_jumps_forward_and_keeps_flowing() {
        let clock = Clock::manual();
        let copy = clock;
        let start = clock.now_millis();
        let instant = clock.instant();
        assert!(clock.advance(Duration::from_secs(90)));
        // Every copy sees the jump: they share one offset.
        let later = copy.now_millis();
        assert!(later >= start + 90_000, "{start} then {later}");
        assert!(later < start + 95_000, "{start} then {later}");
        assert!(copy.since(instant) >= Duration::from_secs(90));
        assert_eq!(copy.now_secs(), copy.now_millis() / 1000);
    }

    #[test]
    fn separate_manual_clocks_are_independent() {
        let (a, b) = (Clock::manual(), Clock::manual());
        a.advance(Duration::from_secs(600));
        assert!(a.now_millis() >= b.now_millis() + 599_000);
    }
}
