//! Persistent state behind one small trait: users, sessions (keyed by token
//! hash), pending sign-up codes, the send-rate window and the mail outbox,
//! and (see `account`) password-reset and email-change codes.
//!
//! Every method is one atomic, durable change (or one consistent read), so a
//! second backend only has to honour the same contract. Methods block: async
//! callers run writes on the blocking pool (see [`crate::auth`]).

mod access;
mod account;
mod backup;
mod blocking;
mod ids;
mod mfa;
mod migrate;
mod pg_access;
mod pg_conn;
mod pg_mfa;
mod pg_oidc;
mod pg_revocations;
mod pg_schema;
mod postgres;
mod redb_access;
mod redb_account;
mod redb_mfa;
mod redb_oidc;
mod redb_outbox;
mod redb_snapshot;
mod redb_store;
mod redb_tables;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use access::{AccessStore, Invite};
pub use account::{
    AccountCode, AccountCodeCheck, CodePurpose, EmailChangeMails, EmailChanged, Notice,
    PendingCodes, Traces,
};
pub use backup::restore;
pub use blocking::run_blocking;
pub use mfa::{
    ChallengePurpose, MfaChallenge, MfaChange, MfaEvent, MfaRecord, MfaStore, MfaUpdated,
    PasskeyRecord, TotpFactor,
};
pub use migrate::{MigrateCounts, migrate};
pub use pg_revocations::{RevocationSink, Revoked};
pub use postgres::PostgresStore;
pub use redb_oidc::NO_PASSWORD;
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
    Task(#[source] tokio::task::JoinError),
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
    /// PostgreSQL answered a statement with an error.
    #[error("postgresql: {0}")]
    Postgres(#[source] tokio_postgres::Error),
    /// The database cannot be reached right now (down, restarting, pool
    /// exhausted); the request may be retried later (503).
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database connection could not be set up (URL, CA file, runtime).
    #[error("{0}")]
    Setup(String),
    /// `backup` on a PostgreSQL store: the database has its own tools.
    #[error(
        "the store is PostgreSQL: back it up with its own tools (pg_dump, or continuous archiving), not gatehouse backup"
    )]
    BackupUnsupported,
}

impl StoreError {
    /// Whether the failure is the database being out of reach (answer 503
    /// with `Retry-After`) rather than a fault (500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
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
    /// Client address the session was opened from. Absent in records
    /// written before it was kept (they still decode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `User-Agent` of the request that opened the session (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// Where a new session comes from: kept on the session so its owner and the
/// operator can tell sessions apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOrigin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A sign-up code waiting to be verified; only its salted hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingOtp {
    pub salt: [u8; 16],
    pub code_hash: [u8; 32],
    pub expires_at: UnixMillis,
    pub attempts: u32,
}

/// What a queued mail says. It is rendered only when it is delivered, so the
/// code lives here in clear: the store file is the trust boundary, and the
/// entry is deleted once the mail is accepted, expired or given up.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum MailKind {
    /// The sign-up code and its lifetime.
    SignupCode { code: String, ttl_ms: u64 },
    /// "Someone tried to sign up with your address; you have an account."
    AccountExists,
    /// A password-reset code and its lifetime.
    ResetCode { code: String, ttl_ms: u64 },
    /// An email-change code, sent to the new address.
    EmailChangeCode { code: String, ttl_ms: u64 },
    /// "Your password was changed."
    PasswordChanged,
    /// To the old address: "your email is being changed to `new_email`".
    EmailChanging { new_email: String },
    /// To an address that has an account: someone asked to move another
    /// account to it; nothing changed.
    EmailInUse,
    /// A sign-in from a browser without the known-device mark.
    NewSignIn {
        at: UnixMillis,
        ip: String,
        user_agent: Option<String>,
    },
    /// `gatehouse invite create`: this address may sign up until `expires_at`.
    Invited { expires_at: UnixMillis },
    /// `[signup] refusal_notice`: sign-up is not open to this address.
    SignupRefused,
    /// A second factor was added, removed or used (see [`MfaEvent`]).
    SecondFactor { event: MfaEvent },
}

impl std::fmt::Debug for MailKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MailKind::SignupCode { ttl_ms, .. } => f
                .debug_struct("SignupCode")
                .field("code", &"<redacted>")
                .field("ttl_ms", ttl_ms)
                .finish(),
            MailKind::ResetCode { ttl_ms, .. } => f
                .debug_struct("ResetCode")
                .field("code", &"<redacted>")
                .field("ttl_ms", ttl_ms)
                .finish(),
            MailKind::EmailChangeCode { ttl_ms, .. } => f
                .debug_struct("EmailChangeCode")
                .field("code", &"<redacted>")
                .field("ttl_ms", ttl_ms)
                .finish(),
            MailKind::AccountExists => f.write_str("AccountExists"),
            MailKind::PasswordChanged => f.write_str("PasswordChanged"),
            MailKind::EmailChanging { .. } => f.write_str("EmailChanging"),
            MailKind::EmailInUse => f.write_str("EmailInUse"),
            MailKind::NewSignIn { at, .. } => f.debug_struct("NewSignIn").field("at", at).finish(),
            MailKind::SignupRefused => f.write_str("SignupRefused"),
            MailKind::Invited { expires_at } => f
                .debug_struct("Invited")
                .field("expires_at", expires_at)
                .finish(),
            MailKind::SecondFactor { event } => f
                .debug_struct("SecondFactor")
                .field("event", event)
                .finish(),
        }
    }
}

/// One message in the durable outbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuedMail {
    /// Outbox id, increasing; names the message in logs.
    pub id: u64,
    /// Normalised recipient address.
    pub to: String,
    pub kind: MailKind,
    /// Random, stable across retries: the left part of the `Message-ID`.
    pub message_token: String,
    pub queued_at: UnixMillis,
    /// Past this the message is dropped unsent.
    pub deadline: UnixMillis,
    /// Delivery attempts that failed temporarily so far.
    pub attempts: u32,
    pub next_attempt_at: UnixMillis,
}

impl QueuedMail {
    /// A message queued at `now` under the new outbox `id`: due at once,
    /// not tried yet (both backends queue through this).
    fn queued(
        id: u64,
        to: &str,
        kind: MailKind,
        message_token: String,
        now: UnixMillis,
        deadline: UnixMillis,
    ) -> QueuedMail {
        QueuedMail {
            id,
            to: to.to_string(),
            kind,
            message_token,
            queued_at: now,
            deadline,
            attempts: 0,
            next_attempt_at: now,
        }
    }
}

/// The mail queued together with a send-otp request: the code mail, or the
/// account notice when the store finds the email has an account.
#[derive(Clone)]
pub struct OtpMail {
    pub code: String,
    pub ttl_ms: u64,
    pub deadline: UnixMillis,
    pub message_token: String,
}

impl OtpMail {
    /// What is queued: the code mail, or the account notice when the
    /// email already has an account (the code is then never sent).
    fn kind(&self, account_exists: bool) -> MailKind {
        if account_exists {
            MailKind::AccountExists
        } else {
            MailKind::SignupCode {
                code: self.code.clone(),
                ttl_ms: self.ttl_ms,
            }
        }
    }
}

/// Due outbox messages, and when the next one falls due.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxBatch {
    /// Messages whose next attempt is due, earliest first.
    pub due: Vec<QueuedMail>,
    /// Earliest `next_attempt_at` of the messages not in `due`.
    pub next_due: Option<UnixMillis>,
    /// Messages in the outbox (due or not).
    pub depth: u64,
}

/// The answer to a send-otp request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Recorded; the pending code was replaced and mail `queued` was put in
    /// the outbox. `superseded` is whether an older unsent mail to this
    /// email was dropped for it. `account_exists` decided the mail's kind.
    Accepted {
        account_exists: bool,
        queued: u64,
        superseded: bool,
    },
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

/// Persisted state of one throttle key (see `auth::throttle`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ThrottleRecord {
    /// Start of the current counting window.
    pub window_start: UnixMillis,
    /// Requests counted in the current window.
    pub count: u32,
    /// Consecutive failures (for back-off).
    pub failures: u32,
    /// No attempts are accepted before this time.
    pub blocked_until: UnixMillis,
    /// Last change; old records are forgotten.
    pub updated: UnixMillis,
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

impl SendLimit {
    /// Counts a send at `now` among the earlier `sends` of a rolling
    /// window (dropping those that left it), or, when the window is full,
    /// counts nothing and answers how long until its oldest send leaves
    /// (ms, at least 1). Both backends keep `sends` per key this way.
    fn admit(self, sends: &mut Vec<UnixMillis>, now: UnixMillis) -> Option<u64> {
        let window_start = now.saturating_sub(self.window_ms);
        sends.retain(|&t| t > window_start);
        sends.sort_unstable();
        if sends.len() >= self.max as usize {
            let oldest_relevant = sends[sends.len() - self.max as usize];
            let retry = (oldest_relevant + self.window_ms).saturating_sub(now);
            return Some(retry.max(1));
        }
        sends.push(now);
        None
    }
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

/// The storage contract: one trait per concern ([`UserStore`],
/// [`SessionStore`], [`CodeStore`], [`OutboxStore`], [`CounterStore`],
/// [`AccountStore`], [`OidcStore`]), so a backend can be written one part
/// at a time; `Store` is the umbrella callers hold (`Arc<dyn Store>`) and
/// adds what concerns the whole store. Emails passed in are already
/// normalised.
pub trait Store:
    OidcStore
    + AccessStore
    + MfaStore
    + UserStore
    + SessionStore
    + CodeStore
    + OutboxStore
    + CounterStore
    + AccountStore
    + Send
    + Sync
    + 'static
{
    /// Removes expired sessions and codes.
    fn sweep(&self, now: UnixMillis, expiry: SessionExpiry) -> Result<SweepCounts, StoreError>;

    /// A named 32-byte server secret, created from the OS CSPRNG on first use.
    fn server_secret(&self, name: &str) -> Result<[u8; 32], StoreError>;

    /// Writes a consistent snapshot of the whole store to `dest`, which must
    /// not exist yet. Concurrent writers are not blocked.
    fn backup_to(&self, dest: &Path) -> Result<BackupCounts, StoreError>;

    /// Makes every earlier (non-durable) commit durable; called on shutdown.
    fn flush(&self) -> Result<(), StoreError>;

    // --- Several instances on one database --------------------------------

    /// Starts telling `sink` about sessions ended by any instance (a shared
    /// database announces them); called once at start-up. The embedded
    /// store has one process, which forgets its own sessions directly.
    fn watch_revocations(&self, _sink: RevocationSink) {}

    /// Whether the database is reachable and revocations are being heard;
    /// `/readyz` and the session cache consult it.
    fn is_available(&self) -> bool {
        true
    }
}

/// Accounts: lookup and the operator's user management.
pub trait UserStore: Send + Sync + 'static {
    fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;

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
}

/// Sessions: the records behind session cookies.
pub trait SessionStore: Send + Sync + 'static {
    fn insert_session(&self, token: &TokenHash, session: &Session) -> Result<(), StoreError>;

    fn session(&self, token: &TokenHash) -> Result<Option<Session>, StoreError>;

    /// Records later uses of sessions, in one transaction: each session's
    /// `last_seen` moves forward to the time given (never back; a session
    /// that is gone is skipped). Not required to be durable at once: losing
    /// it only shortens the sessions.
    fn touch_sessions(&self, touches: &[(TokenHash, UnixMillis)]) -> Result<(), StoreError>;

    /// Deletes one session; `false` if it did not exist.
    fn delete_session(&self, token: &TokenHash) -> Result<bool, StoreError>;

    /// Deletes every session of a user; returns the deleted token hashes.
    fn delete_user_sessions(&self, user_id: u64) -> Result<Vec<TokenHash>, StoreError>;

    /// Stored sessions (expired ones not yet swept included), optionally of
    /// one user, with their token hashes.
    fn list_sessions(&self, user_id: Option<u64>) -> Result<Vec<(TokenHash, Session)>, StoreError>;

    /// Number of stored sessions (cheap: read from table metadata).
    fn count_sessions(&self) -> Result<u64, StoreError>;
}

/// Sign-up codes: sending (with the send window), checking, and the
/// account creation that consumes one.
pub trait CodeStore: Send + Sync + 'static {
    /// Counts a send-otp request against `limit` and, if allowed, stores
    /// `otp` as the email's only pending code (replacing an older one) —
    /// unless the email already has an account, in which case no code is kept.
    /// In the same transaction the mail is queued in the outbox (the code
    /// mail, or the account notice), replacing the email's unsent mail.
    fn record_otp_send(
        &self,
        email: &str,
        now: UnixMillis,
        limit: SendLimit,
        otp: PendingOtp,
        mail: OtpMail,
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
        origin: &SessionOrigin,
    ) -> Result<AccountCreation, StoreError>;
}

/// The mail outbox, as the delivery worker sees it (mail is queued
/// inside the changes that cause it).
pub trait OutboxStore: Send + Sync + 'static {
    /// Up to `max` outbox messages due at `now`, earliest first.
    fn outbox_due(&self, now: UnixMillis, max: usize) -> Result<OutboxBatch, StoreError>;

    /// The queued message `id`, if it is still queued.
    /// `now` starts a renewed lease (PostgreSQL).
    fn outbox_get(&self, id: u64, now: UnixMillis) -> Result<Option<QueuedMail>, StoreError>;

    /// Records a failed attempt: `attempts` so far, next try at `next_attempt_at`.
    /// `false` if the message is gone (superseded meanwhile).
    fn outbox_reschedule(
        &self,
        id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// Removes a message (delivered, expired or given up); `false` if it was
    /// already gone.
    fn outbox_remove(&self, id: u64) -> Result<bool, StoreError>;
}

/// Throttle counters: flushed from memory now and then, or counted in
/// the store when several instances share it.
pub trait CounterStore: Send + Sync + 'static {
    /// All persisted throttle records.
    fn load_throttles(&self) -> Result<Vec<(String, ThrottleRecord)>, StoreError>;

    /// Writes changed throttle records durably; `None` deletes the key.
    fn save_throttles(
        &self,
        changes: &[(String, Option<ThrottleRecord>)],
    ) -> Result<(), StoreError>;

    /// Whether throttle counters must be counted in the store (several
    /// instances share it) rather than in memory and flushed now and then.
    fn shares_counters(&self) -> bool {
        false
    }

    /// One throttle record, read now (shared counters only).
    fn throttle_record(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError> {
        Ok(self
            .load_throttles()?
            .into_iter()
            .find_map(|(k, r)| (k == key).then_some(r)))
    }

    /// Applies `change` to the throttle record `key` (a default record if
    /// there is none) atomically and stores the result (shared counters
    /// only; `change` may run more than once if a transaction is retried).
    fn update_throttle(
        &self,
        key: &str,
        change: &mut dyn FnMut(&mut ThrottleRecord),
    ) -> Result<ThrottleRecord, StoreError> {
        let mut record = self.throttle_record(key)?.unwrap_or_default();
        change(&mut record);
        self.save_throttles(&[(key.to_string(), Some(record))])?;
        Ok(record)
    }
}

/// Account self-service: reset, password and email changes, own
/// sessions, deletion, notices (see `store::account`).
pub trait AccountStore: Send + Sync + 'static {
    // --- Account self-service: reset, password and email changes, own ----
    // --- sessions, deletion, notices (see `store::account`) --------------

    /// Counts a forgotten-password request for `email` against `limit`
    /// (known and unknown emails alike) and stores `code` as the address's
    /// only pending reset code. For an address without a usable account the
    /// code is a decoy (never mailed, never completes) so that wrong guesses
    /// are counted the same way; otherwise the code mail is queued in the
    /// same transaction.
    fn request_password_reset(
        &self,
        email: &str,
        now: UnixMillis,
        limit: SendLimit,
        code: PendingOtp,
        mail: OtpMail,
    ) -> Result<SendOutcome, StoreError>;

    /// Checks a submitted code of `purpose` for `subject` (email for a
    /// reset, user id for an email change) with the constant-time `matches`,
    /// counting wrong attempts and voiding the code after `max_attempts`.
    fn check_account_code(
        &self,
        purpose: CodePurpose,
        subject: &str,
        now: UnixMillis,
        max_attempts: u32,
        matches: &dyn Fn(&PendingOtp) -> bool,
    ) -> Result<AccountCodeCheck, StoreError>;

    /// Consumes the verified reset `code` for `email`, sets the password
    /// hash, ends every session of the account, opens `session` under
    /// `token` and queues `notice`, in one transaction. `None` if the code
    /// was used or replaced meanwhile, or it is a decoy.
    fn complete_password_reset(
        &self,
        email: &str,
        code: &AccountCode,
        password_hash: &str,
        token: &TokenHash,
        session: &Session,
        notice: Notice,
    ) -> Result<Option<UserChange>, StoreError>;

    /// Replaces the password of `user_id` if its hash is still
    /// `expected_hash` (of two concurrent changes one wins), ends every
    /// session of the account, opens `session` under `token` and queues
    /// `notice`. `None` if the account or its old hash is gone.
    fn change_password(
        &self,
        user_id: u64,
        expected_hash: &str,
        new_hash: &str,
        token: &TokenHash,
        session: &Session,
        notice: Notice,
    ) -> Result<Option<UserChange>, StoreError>;

    /// Counts an email-change request against `limit` (per account and per
    /// new address) and stores `code` as the account's only pending change.
    /// Queues the code mail to `new_email` — or, when that address has an
    /// account, the in-use notice to its owner instead — and the notice to
    /// the current address.
    fn request_email_change(
        &self,
        user_id: u64,
        new_email: &str,
        now: UnixMillis,
        limit: SendLimit,
        code: PendingOtp,
        mails: EmailChangeMails,
    ) -> Result<SendOutcome, StoreError>;

    /// Consumes the verified email-change `code`, moves the account to its
    /// new address and ends every session but `keep`. `None` if the code
    /// was used or replaced meanwhile, or the address was taken since.
    fn complete_email_change(
        &self,
        user_id: u64,
        code: &AccountCode,
        keep: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<EmailChanged>, StoreError>;

    /// The sessions of one user (expired ones not yet swept included), read
    /// through the per-user index.
    fn user_sessions(&self, user_id: u64) -> Result<Vec<(TokenHash, Session)>, StoreError>;

    /// Deletes the account with every session, pending code, queued mail
    /// and send-rate window that names it. `None` if unknown.
    fn delete_account(&self, user_id: u64) -> Result<Option<UserChange>, StoreError>;

    /// Queues a notice to `to`. Unlike code mails it never replaces another
    /// unsent message.
    fn queue_notice(&self, to: &str, now: UnixMillis, notice: Notice) -> Result<u64, StoreError>;

    /// Which account codes are pending for `user` (never the codes).
    /// Codes still live at `now`.
    fn pending_codes(&self, user: &User, now: UnixMillis) -> Result<PendingCodes, StoreError>;

    /// What the store still holds that names `email` (or its account).
    fn traces(&self, email: &str) -> Result<Traces, StoreError>;
}

/// Opens the configured backend: the redb file or the PostgreSQL database
/// (migrating its schema). Blocking.
pub fn open(config: &crate::config::StoreConfig) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    use crate::config::StoreBackend;
    Ok(match &config.backend {
        StoreBackend::Redb => std::sync::Arc::new(RedbStore::open(&config.path)?),
        StoreBackend::Postgres(pg) => std::sync::Arc::new(PostgresStore::open(pg)?),
    })
}

/// The first 16 hex digits of a session's token hash: the public handle the
/// CLI shows and accepts. It names a session without revealing the token or
/// the stored hash (64 of 256 bits; collisions are handled by refusing).
pub fn session_handle(hash: &TokenHash) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The wall clock as stored, for code outside the running server (the CLI
/// on a stopped server's store, the bench seeder). The server's own
/// decisions read its injected [`crate::clock::Clock`] instead.
pub fn now_millis() -> UnixMillis {
    crate::clock::Clock::System.now_millis()
}

// --- OpenID Connect (see `crate::oidc`) -----------------------------------

/// A sign-in started at `/api/v1/oauth/{name}/connect`, waiting for the
/// provider's callback. Stored under the SHA-256 of its `state`; taken
/// (deleted) on first use.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OidcState {
    /// The `[[oidc]]` name the sign-in was started for.
    pub provider: String,
    /// Expected `nonce` claim of the ID token.
    pub nonce: String,
    /// PKCE code verifier (S256), sent with the code exchange.
    pub pkce_verifier: String,
    /// SHA-256 of the browser-binding cookie's value.
    pub binding_hash: TokenHash,
    /// A same-origin path to land on instead of the configured ones.
    pub callback_path: Option<String>,
    pub expires_at: UnixMillis,
}

impl std::fmt::Debug for OidcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcState")
            .field("provider", &self.provider)
            .field("callback_path", &self.callback_path)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An account's link to a provider's subject.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub user_id: u64,
    /// The `[[oidc]]` name it was linked through.
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// The provider's email at the time of linking (for the operator).
    pub email: String,
    pub linked_at: UnixMillis,
}

/// What the provider vouched for in a verified ID token.
#[derive(Debug, Clone)]
pub struct OidcClaims {
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// Normalised email, if the token carried one.
    pub email: Option<String>,
    pub email_verified: bool,
}

/// How an OIDC sign-in was matched to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcLink {
    /// The identity was linked before.
    Existing(User),
    /// First sign-in: linked to the account with the same verified email.
    Linked(User),
    /// First sign-in: a new account (without a password) was created.
    Created(User),
    /// Not linked, and the email is missing or not verified.
    Unverified,
    /// Not linked, no account has the email, and creating one is off.
    NoAccount,
    /// The account is disabled.
    Disabled,
}

/// The OIDC half of the storage contract.
pub trait OidcStore: Send + Sync + 'static {
    /// Stores a started sign-in unless `max_pending` unexpired ones exist
    /// already (expired ones are dropped first). `false` when full.
    fn oidc_state_insert(
        &self,
        key: &TokenHash,
        state: &OidcState,
        now: UnixMillis,
        max_pending: u64,
    ) -> Result<bool, StoreError>;

    /// Removes and returns a started sign-in (expired or not): every state
    /// is usable once.
    fn oidc_state_take(&self, key: &TokenHash) -> Result<Option<OidcState>, StoreError>;

    /// Finds the account for verified claims by (issuer, subject); else, if
    /// the email is verified, links the account with that email, or creates
    /// one (with no usable password) when `create` — all in one transaction.
    fn oidc_sign_in(
        &self,
        claims: &OidcClaims,
        create: bool,
        now: UnixMillis,
    ) -> Result<OidcLink, StoreError>;

    /// The identities linked to a user.
    fn identities_of(&self, user_id: u64) -> Result<Vec<Identity>, StoreError>;

    /// Removes the user's links through `provider`; returns how many.
    fn unlink_identity(&self, user_id: u64, provider: &str) -> Result<usize, StoreError>;

    /// Removes expired started sign-ins; returns how many.
    fn oidc_sweep(&self, now: UnixMillis) -> Result<usize, StoreError>;
}

/// Every storage trait, for code that calls them on a concrete store
/// (`use crate::store::traits::*`); holders of `Arc<dyn Store>` need none.
pub mod traits {
    pub use super::{
        AccountStore, CodeStore, CounterStore, OidcStore, OutboxStore, SessionStore, Store,
        UserStore,
    };
}
