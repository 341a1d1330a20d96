//! Persistent state behind one small trait: users, sessions (keyed by token
//! hash), pending sign-up codes and the send-rate window.
//!
//! Every method is one atomic, durable change (or one consistent read), so a
//! second backend only has to honour the same contract. Methods block: async
//! callers run writes on the blocking pool (see [`crate::auth`]).

mod backup;
mod redb_store;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use backup::restore;
pub use redb_store::RedbStore;

/// Milliseconds since the Unix epoch; all stored times use it.
pub type UnixMillis = u64;

/// SHA-256 of a session token; the token itself is never stored.
pub type TokenHash = [u8; 32];

/// What can go wrong below the store interface.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database engine failed (I/O, corruption, lock).
    #[error("database: {0}")]
    Database(#[from] redb::Error),
    /// Another process holds the database file.
    #[error("the store {0} is already open in another process (is gatehouse already running?)")]
    Locked(String),
    /// A stored record could not be decoded.
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The file was written by a newer schema than this binary knows.
    #[error("the store has schema version {found}; this gatehouse understands up to {supported}")]
    NewerSchema { found: u64, supported: u64 },
    /// A blocking store task did not complete.
    #[error("store task failed: {0}")]
    Task(String),
    /// A backup or restore file could not be written or read.
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The store holds a table the backup does not know how to copy; a
    /// backup without it would silently lose data.
    #[error("table `{0}` is not covered by the backup; refusing to write an incomplete copy")]
    UnknownTable(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: u64,
    pub email: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub created_at: UnixMillis,
    /// Disabled by an operator: cannot sign in, holds no sessions.
    #[serde(default)]
    pub disabled: bool,
}

/// The result of an operator's change to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    /// The user as stored after the change (before it, for a deletion).
    pub user: User,
    /// Sessions the change ended; the caller drops them from any cache.
    pub ended_sessions: Vec<TokenHash>,
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCounts {
    pub users: u64,
    pub sessions: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub user_id: u64,
    pub email: String,
    pub created_at: UnixMillis,
    /// Last use as persisted; the in-memory value may be newer (see sessions).
    pub last_seen: UnixMillis,
}

/// A sign-up code waiting to be verified; only its salted hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingOtp {
    pub salt: [u8; 16],
    pub code_hash: [u8; 32],
    pub expires_at: UnixMillis,
    pub attempts: u32,
}

/// The answer to a send-otp request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Recorded; the pending code was replaced. `account_exists` decides the mail.
    Accepted { account_exists: bool },
    /// Over the rolling-window limit; try again after this many milliseconds.
    Limited { retry_after_ms: u64 },
}

/// The verdict on one submitted sign-up code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtpCheck {
    /// No code is pending for this email (never sent, used, or superseded).
    Missing,
    /// The code's lifetime is over; it has been removed.
    Expired,
    /// Too many wrong codes were tried; the code is void.
    Exhausted,
    /// Wrong code; the attempt was counted.
    Wrong,
    /// Right code; it stays pending until [`Store::create_account`] consumes it.
    Valid(PendingOtp),
}

/// The result of turning a verified code into an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCreation {
    Created(User),
    /// The code was consumed or replaced in the meantime.
    CodeGone,
    /// An account for this email exists already.
    EmailTaken,
}

/// What the background sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepCounts {
    pub sessions: usize,
    pub otps: usize,
}

/// Limits applied to send-otp per email.
#[derive(Debug, Clone, Copy)]
pub struct SendLimit {
    pub max: u32,
    pub window_ms: u64,
}

/// Expiry rules for sessions, used by the sweep.
#[derive(Debug, Clone, Copy)]
pub struct SessionExpiry {
    pub idle_ms: u64,
    pub absolute_ms: u64,
}

impl SessionExpiry {
    pub fn is_expired(&self, session: &Session, last_seen: UnixMillis, now: UnixMillis) -> bool {
        now >= session.created_at.saturating_add(self.absolute_ms)
            || now >= last_seen.saturating_add(self.idle_ms)
    }
}

/// The storage contract. Emails passed in are already normalised.
pub trait Store: Send + Sync + 'static {
    /// Counts a send-otp request against `limit` and, if allowed, stores
    /// `otp` as the email's only pending code (replacing an older one) —
    /// unless the email already has an account, in which case no code is kept.
    fn record_otp_send(
        &self,
        email: &str,
        now: UnixMillis,
        limit: SendLimit,
        otp: PendingOtp,
    ) -> Result<SendOutcome, StoreError>;

    /// Checks a submitted code with `matches` (a constant-time comparison),
    /// counting wrong attempts and voiding the code after `max_attempts`.
    fn check_otp(
        &self,
        email: &str,
        now: UnixMillis,
        max_attempts: u32,
        matches: &dyn Fn(&PendingOtp) -> bool,
    ) -> Result<OtpCheck, StoreError>;

    /// Atomically consumes the verified code `otp`, creates the account and
    /// its first session. Of two concurrent calls with one code, one wins.
    fn create_account(
        &self,
        email: &str,
        otp: &PendingOtp,
        password_hash: &str,
        now: UnixMillis,
        session_token: &TokenHash,
    ) -> Result<AccountCreation, StoreError>;

    fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;

    fn insert_session(&self, token: &TokenHash, session: &Session) -> Result<(), StoreError>;

    fn session(&self, token: &TokenHash) -> Result<Option<Session>, StoreError>;

    /// Records a later use of a session. Not required to be durable at once:
    /// losing it only shortens the session.
    fn touch_session(&self, token: &TokenHash, last_seen: UnixMillis) -> Result<(), StoreError>;

    /// Deletes one session; `false` if it did not exist.
    fn delete_session(&self, token: &TokenHash) -> Result<bool, StoreError>;

    /// Removes expired sessions and codes.
    fn sweep(&self, now: UnixMillis, expiry: SessionExpiry) -> Result<SweepCounts, StoreError>;

    // --- Operator commands (admin socket and CLI) -------------------------

    /// Every user, ordered by id.
    fn list_users(&self) -> Result<Vec<User>, StoreError>;

    /// Creates an account directly (no code). `None` if the email is taken.
    fn add_user(
        &self,
        email: &str,
        password_hash: &str,
        now: UnixMillis,
    ) -> Result<Option<User>, StoreError>;

    /// Deletes the account and every session it holds. `None` if unknown.
    fn delete_user(&self, email: &str) -> Result<Option<UserChange>, StoreError>;

    /// Disables or re-enables an account; disabling ends every session it
    /// holds in the same transaction. `None` if unknown.
    fn set_user_disabled(
        &self,
        email: &str,
        disabled: bool,
    ) -> Result<Option<UserChange>, StoreError>;

    /// Replaces the password hash and ends every session of the account (a
    /// reset usually follows a compromise). `None` if unknown.
    fn set_password_hash(
        &self,
        email: &str,
        password_hash: &str,
    ) -> Result<Option<UserChange>, StoreError>;

    /// Stored sessions (expired ones not yet swept included), optionally of
    /// one user, with their token hashes.
    fn list_sessions(&self, user_id: Option<u64>) -> Result<Vec<(TokenHash, Session)>, StoreError>;

    /// Ends every session of one user; returns what was removed.
    fn delete_user_sessions(&self, user_id: u64) -> Result<Vec<TokenHash>, StoreError>;

    /// Number of stored sessions (cheap: read from table metadata).
    fn count_sessions(&self) -> Result<u64, StoreError>;

    /// Writes a consistent snapshot of the whole store to `dest`, which must
    /// not exist yet. Concurrent writers are not blocked.
    fn backup_to(&self, dest: &Path) -> Result<BackupCounts, StoreError>;

    /// Makes every earlier (non-durable) commit durable; called on shutdown.
    fn flush(&self) -> Result<(), StoreError>;
}

/// The first 16 hex digits of a session's token hash: the public handle the
/// CLI shows and accepts. It names a session without revealing the token or
/// the stored hash (64 of 256 bits; collisions are handled by refusing).
pub fn session_handle(hash: &TokenHash) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The current time as stored.
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
