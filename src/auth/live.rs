//! Live connections opened with a session — proxied WebSockets and
//! streaming responses — and ending them when that session ends.
//!
//! Each live connection registers a cancellation token under its session
//! (token hash and user). `Sessions::forget` / `forget_user`, the one place
//! every revocation passes through (logout, logout-all, sign-in rotation,
//! operator revoke / disable / delete / set-password), cancel them; a
//! periodic check (see `Sessions::end_expired_live`) cancels those whose
//! session reached its idle or absolute expiry. The connection's own task
//! notices the cancellation and closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::store::TokenHash;

struct Entry {
    session: TokenHash,
    user_id: u64,
    cancel: CancellationToken,
}

/// The registry of live connections, keyed by an id of their own.
#[derive(Default)]
pub struct LiveConnections {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

/// A registered live connection; dropping it unregisters.
pub struct LiveGuard {
    id: u64,
    registry: Arc<LiveConnections>,
    cancel: CancellationToken,
}

impl LiveGuard {
    /// Cancelled when the session ends.
    pub fn ended(&self) -> &CancellationToken {
        &self.cancel
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        crate::sync::lock(&self.entries)
    }

    /// Registers a connection opened with session `session` of `user_id`.
    pub fn register(self: &Arc<Self>, session: TokenHash, user_id: u64) -> LiveGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        self.lock().insert(
            id,
            Entry {
                session,
                user_id,
                cancel: cancel.clone(),
            },
        );
        LiveGuard {
            id,
            registry: self.clone(),
            cancel,
        }
    }

    /// Ends every live connection of one session; returns how many.
    pub fn end_session(&self, session: &TokenHash) -> usize {
        self.end_where(|e| e.session == *session)
    }

    /// Ends every live connection of one user; returns how many.
    pub fn end_user(&self, user_id: u64) -> usize {
        self.end_where(|e| e.user_id == user_id)
    }

    fn end_where(&self, doomed: impl Fn(&Entry) -> bool) -> usize {
        let entries = self.lock();
        let mut ended = 0;
        for entry in entries.values().filter(|e| doomed(e)) {
            if !entry.cancel.is_cancelled() {
                entry.cancel.cancel();
                ended += 1;
            }
        }
        if ended > 0 {
            crate::metrics::get()
                .live_connections_ended
                .inc_by(ended as u64);
        }
        ended
    }

    /// The distinct sessions that have live connections.
    pub fn sessions(&self) -> Vec<TokenHash> {
        let mut hashes: Vec<TokenHash> = self
            .lock()
            .values()
            .filter(|e| !e.cancel.is_cancelled())
            .map(|e| e.session)
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        hashes
    }

    /// Live connections registered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_a_session_or_user_cancels_only_theirs() {
        let live = Arc::new(LiveConnections::default());
        let a = live.register([1; 32], 7);
        let b = live.register([2; 32], 7);
        let c = live.register([3; 32], 8);
        assert_eq!(live.sessions().len(), 3);
        assert_eq!(live.end_session(&[1; 32]), 1);
        assert!(a.ended().is_cancelled());
        assert!(!b.ended().is_cancelled() && !c.ended().is_cancelled());
        assert_eq!(live.end_user(7), 1);
        assert!(b.ended().is_cancelled());
        assert!(!c.ended().is_cancelled());
        drop((a, b));
        assert_eq!(live.len(), 1);
        drop(c);
        assert!(live.is_empty());
    }
}
