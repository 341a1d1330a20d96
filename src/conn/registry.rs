//! Every open client connection, for three decisions: whether a new one
//! may be served (global and per-address caps), which one makes room when
//! the server is full (the connection idle the longest), and when a drain
//! is over (none left).
//!
//! The per-address count uses the TCP peer address only: `X-Forwarded-For`
//! is an HTTP-level claim and plays no part here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// Why a connection is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address already holds `max_connections_per_ip` connections, all
    /// of them busy.
    PerAddress,
}

/// The address connections are counted under: IPv4 as is (IPv4-mapped IPv6
/// too), IPv6 by its /64, since one client usually holds a whole /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match crate::net::canonical_ip(ip) {
        IpAddr::V6(v6) => IpAddr::V6(crate::net::network_64(v6).network()),
        v4 => v4,
    }
}

/// What the registry knows about one connection, shared with its task.
#[derive(Debug)]
pub struct ConnState {
    /// Requests whose response has not been sent completely.
    in_flight: AtomicUsize,
    /// Whether any request arrived yet.
    seen_request: AtomicBool,
    /// Milliseconds since the registry's epoch at which the connection last
    /// became idle (accepted, or its last response finished).
    idle_since_ms: AtomicU64,
    /// Set when the connection must close (evicted or shutting down).
    closing: AtomicBool,
    close: Notify,
    epoch: Instant,
    /// The registry's "there may be room now" signal.
    room: Arc<Notify>,
}

impl ConnState {
    fn new(epoch: Instant, room: Arc<Notify>) -> ConnState {
        ConnState {
            in_flight: AtomicUsize::new(0),
            seen_request: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(millis_since(epoch)),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            epoch,
            room,
        }
    }

    /// A request's head arrived; it is in flight until the guard drops.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.seen_request.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    pub fn seen_request(&self) -> bool {
        self.seen_request.load(Ordering::Relaxed)
    }

    /// When the connection became idle, if it is idle now.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Relaxed);
        Some(self.epoch + std::time::Duration::from_millis(ms))
    }

    /// Asks the connection's task to close it gracefully (only the registry
    /// does this, under its lock, so its live counts stay right).
    fn ask_to_close(&self) {
        self.closing.store(true, Ordering::Release);
        self.close.notify_one();
    }

    /// Whether the connection has been asked to close.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// A future that resolves when the connection is asked to close (see
    /// [`ConnState::is_closing`]: the flag is set before the signal).
    pub fn close_signal(&self) -> tokio::sync::futures::Notified<'_> {
        self.close.notified()
    }

    /// Resolves once the connection has been asked to close.
    pub async fn close_requested(&self) {
        loop {
            let notified = self.close.notified();
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Keeps a request counted as in flight until its response is sent (the
/// guard travels with the response body).
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        state
            .idle_since_ms
            .store(millis_since(state.epoch), Ordering::Relaxed);
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Idle now: a connection waiting at the cap may evict it.
            state.room.notify_waiters();
        }
    }
}

/// Connections asked to close are still in `conns` until they go, but no
/// longer count against the caps (they leave within `CLOSE_GRACE` unless a
/// response is still being sent).
#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, (IpAddr, Arc<ConnState>)>,
    /// Connections not asked to close, in all and per address.
    live: usize,
    live_per_address: HashMap<IpAddr, usize>,
    draining: bool,
}

impl Inner {
    /// Asks a connection to close and stops counting it.
    fn close(&mut self, key: IpAddr, state: &ConnState) {
        if state.closing.load(Ordering::Relaxed) {
            return;
        }
        state.ask_to_close();
        self.uncount(key);
    }

    fn uncount(&mut self, key: IpAddr) {
        self.live -= 1;
        if let Some(n) = self.live_per_address.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.live_per_address.remove(&key);
            }
        }
    }

    /// Asks the connection idle the longest (among those from `only`, if
    /// given) to close; `false` if every candidate is busy.
    fn evict_longest_idle(&mut self, only: Option<IpAddr>) -> bool {
        let victim = self
            .conns
            .values()
            .filter(|(key, s)| only.is_none_or(|o| o == *key) && !s.closing.load(Ordering::Relaxed))
            .filter_map(|(key, s)| s.idle_since().map(|t| (t, *key, s.clone())))
            .min_by_key(|(t, _, _)| *t);
        match victim {
            Some((_, key, state)) => {
                tracing::debug!(
                    per_address = only.is_some(),
                    "at a connection cap: closing the longest-idle connection"
                );
                self.close(key, &state);
                true
            }
            None => false,
        }
    }
}

/// The open connections and the caps that apply to them.
#[derive(Debug)]
pub struct Registry {
    max_total: usize,
    max_per_address: usize,
    epoch: Instant,
    inner: Mutex<Inner>,
    /// Signalled whenever a connection leaves or becomes idle.
    room: Arc<Notify>,
}

impl Registry {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max_total,
            max_per_address,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
            room: Arc::new(Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection from `ip`. At its address's cap, that
    /// address's longest-idle connection is closed to make room, or, if all
    /// are busy, the new one is refused. At the global cap, the longest-idle
    /// connection of any address is closed to make room; when none is idle,
    /// this waits until one leaves.
    pub async fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = address_key(ip);
        loop {
            let room = self.room.notified();
            {
                let mut inner = self.lock();
                let from_address = inner.live_per_address.get(&key).copied().unwrap_or(0);
                if from_address >= self.max_per_address && !inner.evict_longest_idle(Some(key)) {
                    return Err(Refused::PerAddress);
                }
                if inner.live < self.max_total || inner.evict_longest_idle(None) {
                    return Ok(self.register(&mut inner, key));
                }
            }
            room.await;
        }
    }

    fn register(self: &Arc<Self>, inner: &mut Inner, key: IpAddr) -> Slot {
        let id = inner.next_id;
        inner.next_id += 1;
        let state = Arc::new(ConnState::new(self.epoch, self.room.clone()));
        inner.conns.insert(id, (key, state.clone()));
        inner.live += 1;
        *inner.live_per_address.entry(key).or_insert(0) += 1;
        if inner.draining {
            inner.close(key, &state);
        }
        Slot {
            registry: self.clone(),
            id,
            state,
        }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.lock().conns.len()
    }

    /// Asks every connection to close gracefully (new ones too) and waits
    /// until all have gone.
    pub async fn drain(&self) {
        loop {
            let room = self.room.notified();
            {
                let mut inner = self.lock();
                inner.draining = true;
                if inner.conns.is_empty() {
                    return;
                }
                let all: Vec<_> = inner.conns.values().cloned().collect();
                for (key, state) in all {
                    inner.close(key, &state);
                }
            }
            room.await;
        }
    }
}

/// A registered connection; leaving the registry when dropped.
#[derive(Debug)]
pub struct Slot {
    registry: Arc<Registry>,
    id: u64,
    state: Arc<ConnState>,
}

impl Slot {
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut inner = self.registry.lock();
            if let Some((key, state)) = inner.conns.remove(&self.id)
                && !state.closing.load(Ordering::Relaxed)
            {
                inner.uncount(key);
            }
        }
        self.registry.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn per_address_cap_counts_the_socket_address_and_ipv6_by_64() {
        let r = Registry::new(100, 2);
        let a = r.admit(ip("10.0.0.1")).await.unwrap();
        let _busy_a = a.state().request_started();
        let b = r.admit(ip("10.0.0.1")).await.unwrap();
        let busy_b = b.state().request_started();
        let refused = r.admit(ip("10.0.0.1")).await.unwrap_err();
        assert_eq!(refused, Refused::PerAddress);
        assert!(r.admit(ip("10.0.0.2")).await.is_ok(), "another address");
        // An idle one of its own makes room for the address's new one.
        drop(busy_b);
        let _c = r.admit(ip("10.0.0.1")).await.unwrap();
        assert!(b.state().closing.load(Ordering::Relaxed));
        assert!(!a.state().closing.load(Ordering::Relaxed));

        let c = r.admit(ip("2001:db8::1")).await.unwrap();
        let _busy_c = c.state().request_started();
        let d = r.admit(ip("2001:db8::2")).await.unwrap();
        let _busy_d = d.state().request_started();
        assert!(r.admit(ip("2001:db8::3")).await.is_err(), "same /64");
        assert!(r.admit(ip("2001:db8:0:1::1")).await.is_ok(), "other /64");
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let r = Registry::new(2, 10);
        let old = r.admit(ip("10.0.0.1")).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let busy = r.admit(ip("10.0.0.1")).await.unwrap();
        let request = busy.state().request_started();
        let new = r.admit(ip("10.0.0.2")).await.unwrap();
        let _also_busy = new.state().request_started();
        assert!(old.state().closing.load(Ordering::Relaxed));
        assert!(!busy.state().closing.load(Ordering::Relaxed), "busy stays");
        // Full of busy (or closing) connections: the next one waits.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            r.admit(ip("10.0.0.3")),
        )
        .await;
        assert!(waiting.is_err());
        // The one being closed leaving makes no room (it was not counted);
        // a busy one finishing does (it becomes the longest idle).
        drop(old);
        drop(request);
        let _third = r.admit(ip("10.0.0.3")).await.unwrap();
        assert!(busy.state().closing.load(Ordering::Relaxed));
    }
}
