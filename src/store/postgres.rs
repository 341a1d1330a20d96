//! The PostgreSQL implementation of [`Store`], for several instances on one
//! database.
//!
//! Every writing method is one SERIALIZABLE transaction, retried on a
//! serialization conflict: PostgreSQL then guarantees the outcome of some
//! serial order, which is exactly what redb's single writer gives, so the
//! read-check-write logic mirrors the redb store (two verifies of one code
//! create one account; send windows and code attempts count across
//! instances). The outbox is leased instead: `outbox_due` claims due
//! messages with `FOR UPDATE SKIP LOCKED` and pushes their next attempt
//! one lease (`[store] lease`, 60 s by default) ahead, so each worker gets
//! different mail and a dead instance's mail is picked up again once its
//! lease runs out.
//!
//! The trait is blocking; the async driver runs on a small runtime owned by
//! the store, and callers (blocking-pool threads) wait on it.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{IsolationLevel, Row, Transaction};

use super::ids::IdCounter;
use super::pg_conn::{Connector, connector};
use super::pg_revocations::{RevocationFeed, RevocationSink};
use super::{
    AccountCode, AccountCodeCheck, AccountCreation, BackupCounts, CodePurpose, EmailChangeMails,
    EmailChanged, MailKind, Notice, OtpCheck, OtpMail, OutboxBatch, PendingCodes, PendingOtp,
    QueuedMail, SendLimit, SendOutcome, Session, SessionExpiry, SessionOrigin, Store, StoreError,
    SweepCounts, ThrottleRecord, TokenHash, Traces, UnixMillis, User, UserChange,
};
use super::{AccountStore, CodeStore, CounterStore, OutboxStore, SessionStore, UserStore};
use crate::config::PostgresConfig;

/// Serialization conflicts retried per call before giving up.
const MAX_TRIES: u32 = 20;
/// How long a request waits for a connection before answering 503.
const POOL_WAIT: Duration = Duration::from_secs(2);
/// Revocation records older than this are pruned by the sweep.
const REVOCATION_KEEP: &str = "1 hour";

fn is_conflict(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(e) => e.code().is_some_and(|c| {
            // serialization_failure, deadlock_detected, unique_violation (a
            // concurrent insert of the same key: the retry sees it).
            matches!(c.code(), "40001" | "40P01" | "23505")
        }),
        _ => false,
    }
}

pub struct PostgresStore {
    pool: Pool,
    /// Runs the driver; `Option` so `Drop` can shut it down from any context.
    runtime: Option<tokio::runtime::Runtime>,
    config: PostgresConfig,
    /// State of the revocation listener, once started.
    feed: Arc<RevocationFeed>,
    /// Names this process's outbox leases (random per start).
    instance: String,
}

impl PostgresStore {
    /// How long a claimed outbox message stays invisible to other workers:
    /// longer than one SMTP dialogue (checked with the config), short enough
    /// that a dead instance's mail goes out soon after.
    fn lease_ms(&self) -> u64 {
        self.config.lease.as_millis() as u64
    }
}

/// Polls `fut` on this thread, parking between polls until its waker
/// fires (see [`PostgresStore::block`]).
fn poll_until_ready<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PostgresStore {
    /// Connects, applies pending migrations under the advisory lock and
    /// refuses a newer schema.
    pub fn open(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gatehouse-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Setup(format!("database runtime: {e}")))?;
        let (pg_config, connector) = connector(config)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match connector {
            Connector::Plain => {
                Manager::from_config(pg_config, tokio_postgres::NoTls, manager_config)
            }
            Connector::Tls(tls) => Manager::from_config(pg_config, tls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Setup(format!("database pool: {e}")))?;
        let store = PostgresStore {
            pool,
            runtime: Some(runtime),
            config: config.clone(),
            feed: Arc::new(RevocationFeed::default()),
            instance: {
                let mut id = [0u8; 12];
                crate::random::random_bytes(&mut id);
                crate::random::base64url(&id)
            },
        };
        store.block(async {
            let mut client = store.client().await?;
            super::pg_schema::migrate(&mut client).await
        })?;
        Ok(store)
    }

    /// Connects and reads the schema version without changing anything
    /// (for `check-config`): `(found, supported)`.
    pub fn check(config: &PostgresConfig) -> Result<(i64, i64), StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Setup(format!("database runtime: {e}")))?;
        let (pg_config, connector) = connector(config)?;
        runtime.block_on(async {
            let client = super::pg_revocations::connect(&pg_config, &connector).await?;
            let found = super::pg_schema::version(&client).await?;
            Ok((found, super::pg_schema::SCHEMA_VERSION))
        })
    }

    pub(super) fn runtime_handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .handle()
            .clone()
    }

    /// Runs `fut` on the store's runtime and waits for it. Safe from a
    /// blocking-pool thread, a plain thread, (briefly) a worker thread of a
    /// multi-threaded runtime, or the thread of a current-thread runtime
    /// (`[server] workers = 1`), where tokio forbids both `block_on` and
    /// `block_in_place`: there the future is polled on this thread inside
    /// the store runtime's context, whose own threads drive its I/O and
    /// timers.
    fn block<F: Future>(&self, fut: F) -> F::Output {
        let handle = self.runtime_handle();
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(fut))
            }
            Ok(_) => {
                let _context = handle.enter();
                poll_until_ready(fut)
            }
            Err(_) => handle.block_on(fut),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            // Keep the driver's cause (refused, TLS: "invalid peer
            // certificate: UnknownIssuer") in the message an operator sees.
            deadpool_postgres::PoolError::Backend(e) => match std::error::Error::source(&e) {
                Some(cause) => StoreError::Unavailable(format!("{e}: {cause}").into()),
                None => StoreError::Unavailable(Box::new(e)),
            },
            other => StoreError::Unavailable(Box::new(other)),
        })
    }

    /// Runs `body` in one SERIALIZABLE transaction, committing when it
    /// returns `Ok` and retrying on a serialization conflict.
    pub(super) fn serial<T>(
        &self,
        body: impl AsyncFn(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.block(async {
            let mut tries = 0;
            loop {
                let mut object = self.client().await?;
                let client: &mut tokio_postgres::Client = &mut object;
                let tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .start()
                    .await?;
                let outcome = match body(&tx).await {
                    Ok(v) => tx.commit().await.map(|()| v).map_err(StoreError::from),
                    Err(e) => Err(e),
                };
                match outcome {
                    Err(e) if is_conflict(&e) && tries < MAX_TRIES => tries += 1,
                    other => return other,
                }
            }
        })
    }

    /// One read (or single-statement write) outside a transaction.
    pub(super) fn read<T>(
        &self,
        body: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.block(async {
            let object = self.client().await?;
            body(&object).await
        })
    }
}

// --- Row codecs ------------------------------------------------------------

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    Ok(serde_json::from_str(text)?)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(value)?)
}

const USER_COLUMNS: &str = "id, email, password_hash, created_at, disabled";
const SESSION_COLUMNS: &str = "token, user_id, email, created_at, last_seen, ip, user_agent";

fn user_of(row: &Row) -> User {
    User {
        id: row.get::<_, i64>(0) as u64,
        email: row.get(1),
        password_hash: row.get(2),
        created_at: row.get::<_, i64>(3) as u64,
        disabled: row.get(4),
    }
}

fn session_of(row: &Row) -> Option<(TokenHash, Session)> {
    let token: Vec<u8> = row.get(0);
    let hash = TokenHash::try_from(token.as_slice()).ok()?;
    Some((
        hash,
        Session {
            user_id: row.get::<_, i64>(1) as u64,
            email: row.get(2),
            created_at: row.get::<_, i64>(3) as u64,
            last_seen: row.get::<_, i64>(4) as u64,
            ip: row.get(5),
            user_agent: row.get(6),
        },
    ))
}

fn mail_of(row: &Row) -> Result<QueuedMail, StoreError> {
    // Columns: record, next_attempt_at (the column wins: leases move it).
    let mut mail: QueuedMail = decode(row.get::<_, &str>(0))?;
    mail.next_attempt_at = row.get::<_, i64>(1) as u64;
    Ok(mail)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// --- Helpers inside a transaction -------------------------------------------

async fn user_by_email_in(tx: &Transaction<'_>, email: &str) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM gh_users WHERE email = $1");
    Ok(tx.query_opt(&sql, &[&email]).await?.as_ref().map(user_of))
}

pub(super) async fn user_by_id_in(
    tx: &Transaction<'_>,
    id: u64,
) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM gh_users WHERE id = $1");
    Ok(tx.query_opt(&sql, &[&i(id)]).await?.as_ref().map(user_of))
}

async fn put_user_in(tx: &Transaction<'_>, user: &User) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE gh_users SET email = $2, password_hash = $3, disabled = $4 WHERE id = $1",
        &[
            &i(user.id),
            &user.email,
            &user.password_hash,
            &user.disabled,
        ],
    )
    .await?;
    Ok(())
}

/// Takes the next id of `counter` from its sequence (a rolled-back
/// transaction leaves a gap, never a reused id).
async fn next_id_in(tx: &Transaction<'_>, counter: IdCounter) -> Result<i64, StoreError> {
    let sql = format!("SELECT nextval('{}')", counter.sequence());
    Ok(tx.query_one(&sql, &[]).await?.get(0))
}

pub(super) async fn insert_user_in(
    tx: &Transaction<'_>,
    email: &str,
    password_hash: &str,
    now: UnixMillis,
) -> Result<User, StoreError> {
    let id = next_id_in(tx, IdCounter::User).await?;
    tx.execute(
        "INSERT INTO gh_users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        &[&id, &email, &password_hash, &i(now)],
    )
    .await?;
    Ok(User {
        id: id as u64,
        email: email.to_string(),
        password_hash: password_hash.to_string(),
        created_at: now,
        disabled: false,
    })
}

/// Opens a session unless the account is gone or disabled (re-checked in the
/// same transaction, as in redb).
async fn insert_session_in(
    tx: &Transaction<'_>,
    token: &TokenHash,
    session: &Session,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO gh_sessions (token, user_id, email, created_at, last_seen, ip, user_agent) \
         SELECT $1, $2, $3, $4, $5, $6, $7 FROM gh_users WHERE id = $2 AND NOT disabled \
         ON CONFLICT (token) DO UPDATE SET user_id = EXCLUDED.user_id, email = EXCLUDED.email, \
         created_at = EXCLUDED.created_at, last_seen = EXCLUDED.last_seen, ip = EXCLUDED.ip, \
         user_agent = EXCLUDED.user_agent",
        &[
            &token.as_slice(),
            &i(session.user_id),
            &session.email,
            &i(session.created_at),
            &i(session.last_seen),
            &session.ip,
            &session.user_agent,
        ],
    )
    .await?;
    Ok(())
}

async fn delete_user_sessions_in(
    tx: &Transaction<'_>,
    user_id: u64,
) -> Result<Vec<TokenHash>, StoreError> {
    let rows = tx
        .query(
            "DELETE FROM gh_sessions WHERE user_id = $1 RETURNING token",
            &[&i(user_id)],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| TokenHash::try_from(r.get::<_, &[u8]>(0)).ok())
        .collect())
}

/// Counts one send under `key` in the rolling window; `Some(retry_after_ms)`
/// (and nothing counted) when the window is full.
async fn count_send_in(
    tx: &Transaction<'_>,
    key: &str,
    now: UnixMillis,
    limit: SendLimit,
) -> Result<Option<u64>, StoreError> {
    let mut sends: Vec<UnixMillis> = match tx
        .query_opt("SELECT sends FROM gh_otp_sends WHERE key = $1", &[&key])
        .await?
    {
        Some(row) => decode(row.get::<_, &str>(0))?,
        None => Vec::new(),
    };
    if let Some(retry) = limit.admit(&mut sends, now) {
        return Ok(Some(retry));
    }
    tx.execute(
        "INSERT INTO gh_otp_sends (key, sends) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET sends = EXCLUDED.sends",
        &[&key, &encode(&sends)?],
    )
    .await?;
    Ok(None)
}

/// Queues a message; with `slot`, it replaces the email's unsent sign-up
/// mail. Returns the id and whether an older one was dropped.
async fn queue_in(
    tx: &Transaction<'_>,
    to: &str,
    slot: Option<&str>,
    now: UnixMillis,
    kind: MailKind,
    deadline: UnixMillis,
    message_token: String,
) -> Result<(u64, bool), StoreError> {
    let superseded = match slot {
        Some(s) => {
            tx.execute("DELETE FROM gh_outbox WHERE slot = $1", &[&s])
                .await?
                > 0
        }
        None => false,
    };
    let id = next_id_in(tx, IdCounter::Outbox).await?;
    let entry = QueuedMail::queued(id as u64, to, kind, message_token, now, deadline);
    tx.execute(
        "INSERT INTO gh_outbox (id, to_addr, slot, next_attempt_at, record) \
         VALUES ($1, $2, $3, $4, $5)",
        &[&id, &to, &slot, &i(now), &encode(&entry)?],
    )
    .await?;
    Ok((id as u64, superseded))
}

async fn queue_notice_in(
    tx: &Transaction<'_>,
    to: &str,
    now: UnixMillis,
    notice: Notice,
) -> Result<u64, StoreError> {
    let (id, _) = queue_in(
        tx,
        to,
        None,
        now,
        notice.kind,
        notice.deadline,
        notice.message_token,
    )
    .await?;
    Ok(id)
}

async fn account_code_in(
    tx: &Transaction<'_>,
    key: &str,
) -> Result<Option<AccountCode>, StoreError> {
    match tx
        .query_opt(
            "SELECT record FROM gh_account_codes WHERE key = $1",
            &[&key],
        )
        .await?
    {
        Some(row) => Ok(Some(decode(row.get::<_, &str>(0))?)),
        None => Ok(None),
    }
}

async fn put_account_code_in(
    tx: &Transaction<'_>,
    key: &str,
    code: &AccountCode,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO gh_account_codes (key, expires_at, record) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
        &[&key, &i(code.pending.expires_at), &encode(code)?],
    )
    .await
    ?;
    Ok(())
}

async fn remove_code_in(
    tx: &Transaction<'_>,
    key: &str,
) -> Result<Option<AccountCode>, StoreError> {
    match tx
        .query_opt(
            "DELETE FROM gh_account_codes WHERE key = $1 RETURNING record",
            &[&key],
        )
        .await?
    {
        Some(row) => Ok(Some(decode(row.get::<_, &str>(0))?)),
        None => Ok(None),
    }
}

async fn still_pending_in(
    tx: &Transaction<'_>,
    key: &str,
    code: &AccountCode,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    Ok(match account_code_in(tx, key).await? {
        Some(stored) => {
            stored.pending.salt == code.pending.salt
                && stored.pending.code_hash == code.pending.code_hash
                && now < stored.pending.expires_at
                && stored.user_id.is_some()
                && stored.user_id == code.user_id
        }
        None => false,
    })
}

async fn otp_in(tx: &Transaction<'_>, email: &str) -> Result<Option<PendingOtp>, StoreError> {
    match tx
        .query_opt("SELECT record FROM gh_otps WHERE email = $1", &[&email])
        .await?
    {
        Some(row) => Ok(Some(decode(row.get::<_, &str>(0))?)),
        None => Ok(None),
    }
}

async fn put_otp_in(tx: &Transaction<'_>, email: &str, otp: &PendingOtp) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO gh_otps (email, expires_at, record) VALUES ($1, $2, $3) \
         ON CONFLICT (email) DO UPDATE SET expires_at = EXCLUDED.expires_at, record = EXCLUDED.record",
        &[&email, &i(otp.expires_at), &encode(otp)?],
    )
    .await
    ?;
    Ok(())
}

async fn remove_otp_in(tx: &Transaction<'_>, email: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM gh_otps WHERE email = $1", &[&email])
        .await?;
    Ok(())
}

/// Send-rate window keys, as in redb (sign-up's is the bare email).
fn reset_sends(email: &str) -> String {
    format!("reset:{email}")
}
fn change_sends_to(email: &str) -> String {
    format!("email-change:{email}")
}
fn change_sends_by(user_id: u64) -> String {
    format!("email-change-user:{user_id}")
}

impl Store for PostgresStore {
    fn sweep(&self, now: UnixMillis, expiry: SessionExpiry) -> Result<SweepCounts, StoreError> {
        self.read(async |client| {
            let sessions = client
                .execute(
                    "DELETE FROM gh_sessions WHERE $1 >= created_at + $2 OR $1 >= last_seen + $3",
                    &[&i(now), &i(expiry.absolute_ms), &i(expiry.idle_ms)],
                )
                .await?;
            let otps = client
                .execute("DELETE FROM gh_otps WHERE $1 >= expires_at", &[&i(now)])
                .await?;
            let codes = client
                .execute(
                    "DELETE FROM gh_account_codes WHERE $1 >= expires_at",
                    &[&i(now)],
                )
                .await?;
            let prune = format!(
                "DELETE FROM gh_revocations WHERE at < now() - interval '{REVOCATION_KEEP}'"
            );
            client.execute(&prune, &[]).await?;
            Ok(SweepCounts {
                sessions: sessions as usize,
                otps: (otps + codes) as usize,
            })
        })
    }

    fn server_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let mut fresh = [0u8; 32];
        crate::random::random_bytes(&mut fresh);
        self.serial(async |tx| {
            // Of instances starting together, the first insert wins; all
            // read the same secret back.
            tx.execute(
                "INSERT INTO gh_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh.as_slice()],
            )
            .await
            ?;
            let value: Vec<u8> = tx
                .query_one("SELECT value FROM gh_secrets WHERE name = $1", &[&name])
                .await
                ?
                .get(0);
            <[u8; 32]>::try_from(value.as_slice())
                .map_err(|_| StoreError::Setup(format!("server secret `{name}` is not 32 bytes")))
        })
    }

    fn backup_to(&self, _dest: &Path) -> Result<BackupCounts, StoreError> {
        Err(StoreError::BackupUnsupported)
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged write was committed by PostgreSQL already.
        Ok(())
    }

    fn watch_revocations(&self, sink: RevocationSink) {
        match connector(&self.config) {
            Ok((pg_config, connector)) => super::pg_revocations::spawn(
                &self.runtime_handle(),
                pg_config,
                connector,
                sink,
                self.feed.clone(),
            ),
            // `open` parsed the same configuration already.
            Err(e) => tracing::error!(error = %e, "revocation listener not started"),
        }
    }

    fn is_available(&self) -> bool {
        self.feed.healthy()
    }
}

impl UserStore for PostgresStore {
    fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.read(async |client| {
            let sql = format!("SELECT {USER_COLUMNS} FROM gh_users WHERE email = $1");
            Ok(client
                .query_opt(&sql, &[&email])
                .await?
                .as_ref()
                .map(user_of))
        })
    }

    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.read(async |client| {
            let sql = format!("SELECT {USER_COLUMNS} FROM gh_users ORDER BY id");
            Ok(client.query(&sql, &[]).await?.iter().map(user_of).collect())
        })
    }

    fn add_user(
        &self,
        email: &str,
        password_hash: &str,
        now: UnixMillis,
    ) -> Result<Option<User>, StoreError> {
        self.serial(async |tx| {
            if user_by_email_in(tx, email).await?.is_some() {
                return Ok(None);
            }
            let user = insert_user_in(tx, email, password_hash, now).await?;
            // A code sent before the operator created the account is void.
            remove_otp_in(tx, email).await?;
            Ok(Some(user))
        })
    }

    fn delete_user(&self, email: &str) -> Result<Option<UserChange>, StoreError> {
        match self.user_by_email(email)? {
            Some(user) => self.delete_account(user.id),
            None => Ok(None),
        }
    }

    fn set_user_disabled(
        &self,
        email: &str,
        disabled: bool,
    ) -> Result<Option<UserChange>, StoreError> {
        self.serial(async |tx| {
            let Some(mut user) = user_by_email_in(tx, email).await? else {
                return Ok(None);
            };
            user.disabled = disabled;
            put_user_in(tx, &user).await?;
            let ended_sessions = delete_user_sessions_in(tx, user.id).await?;
            Ok(Some(UserChange {
                user,
                ended_sessions,
            }))
        })
    }

    fn set_password_hash(
        &self,
        email: &str,
        password_hash: &str,
    ) -> Result<Option<UserChange>, StoreError> {
        self.serial(async |tx| {
            let Some(mut user) = user_by_email_in(tx, email).await? else {
                return Ok(None);
            };
            user.password_hash = password_hash.to_string();
            put_user_in(tx, &user).await?;
            let ended_sessions = delete_user_sessions_in(tx, user.id).await?;
            Ok(Some(UserChange {
                user,
                ended_sessions,
            }))
        })
    }
}

impl SessionStore for PostgresStore {
    fn insert_session(&self, token: &TokenHash, session: &Session) -> Result<(), StoreError> {
        self.serial(async |tx| insert_session_in(tx, token, session).await)
    }

    fn session(&self, token: &TokenHash) -> Result<Option<Session>, StoreError> {
        self.read(async |client| {
            let sql = format!("SELECT {SESSION_COLUMNS} FROM gh_sessions WHERE token = $1");
            Ok(client
                .query_opt(&sql, &[&token.as_slice()])
                .await?
                .as_ref()
                .and_then(session_of)
                .map(|(_, s)| s))
        })
    }

    fn touch_sessions(&self, touches: &[(TokenHash, UnixMillis)]) -> Result<(), StoreError> {
        let tokens: Vec<&[u8]> = touches.iter().map(|(t, _)| t.as_slice()).collect();
        let times: Vec<i64> = touches.iter().map(|&(_, at)| i(at)).collect();
        self.read(async |client| {
            client
                .execute(
                    "UPDATE gh_sessions AS s SET last_seen = t.last_seen \
                     FROM UNNEST($1::bytea[], $2::bigint[]) AS t(token, last_seen) \
                     WHERE s.token = t.token AND s.last_seen < t.last_seen",
                    &[&tokens, &times],
                )
                .await?;
            Ok(())
        })
    }

    fn delete_session(&self, token: &TokenHash) -> Result<bool, StoreError> {
        self.read(async |client| {
            Ok(client
                .execute(
                    "DELETE FROM gh_sessions WHERE token = $1",
                    &[&token.as_slice()],
                )
                .await?
                > 0)
        })
    }

    fn delete_user_sessions(&self, user_id: u64) -> Result<Vec<TokenHash>, StoreError> {
        self.serial(async |tx| delete_user_sessions_in(tx, user_id).await)
    }

    fn list_sessions(&self, user_id: Option<u64>) -> Result<Vec<(TokenHash, Session)>, StoreError> {
        self.read(async |client| {
            let rows = match user_id {
                Some(id) => {
                    let sql = format!(
                        "SELECT {SESSION_COLUMNS} FROM gh_sessions WHERE user_id = $1 ORDER BY token"
                    );
                    client.query(&sql, &[&i(id)]).await
                }
                None => {
                    let sql = format!("SELECT {SESSION_COLUMNS} FROM gh_sessions ORDER BY token");
                    client.query(&sql, &[]).await
                }
            }
            ?;
            Ok(rows.iter().filter_map(session_of).collect())
        })
    }

    fn count_sessions(&self) -> Result<u64, StoreError> {
        self.read(async |client| {
            let n: i64 = client
                .query_one("SELECT count(*) FROM gh_sessions", &[])
                .await?
                .get(0);
            Ok(n as u64)
        })
    }
}

impl CodeStore for PostgresStore {
    fn record_otp_send(
        &self,
        email: &str,
        now: UnixMillis,
        limit: SendLimit,
        otp: PendingOtp,
        mail: OtpMail,
    ) -> Result<SendOutcome, StoreError> {
        self.serial(async |tx| {
            if let Some(retry_after_ms) = count_send_in(tx, email, now, limit).await? {
                return Ok(SendOutcome::Limited { retry_after_ms });
            }
            let account_exists = user_by_email_in(tx, email).await?.is_some();
            if account_exists {
                remove_otp_in(tx, email).await?;
            } else {
                put_otp_in(tx, email, &otp).await?;
            }
            let (queued, superseded) = queue_in(
                tx,
                email,
                Some(email),
                now,
                mail.kind(account_exists),
                mail.deadline,
                mail.message_token.clone(),
            )
            .await?;
            Ok(SendOutcome::Accepted {
                account_exists,
                queued,
                superseded,
            })
        })
    }

    fn check_otp(
        &self,
        email: &str,
        now: UnixMillis,
        max_attempts: u32,
        matches: &dyn Fn(&PendingOtp) -> bool,
    ) -> Result<OtpCheck, StoreError> {
        self.serial(async |tx| {
            Ok(match otp_in(tx, email).await? {
                None => OtpCheck::Missing,
                Some(p) if now >= p.expires_at => {
                    remove_otp_in(tx, email).await?;
                    OtpCheck::Expired
                }
                Some(p) if p.attempts >= max_attempts => OtpCheck::Exhausted,
                Some(p) if matches(&p) => OtpCheck::Valid(p),
                Some(mut p) => {
                    p.attempts += 1;
                    put_otp_in(tx, email, &p).await?;
                    OtpCheck::Wrong
                }
            })
        })
    }

    fn create_account(
        &self,
        email: &str,
        otp: &PendingOtp,
        password_hash: &str,
        now: UnixMillis,
        session_token: &TokenHash,
        origin: &SessionOrigin,
    ) -> Result<AccountCreation, StoreError> {
        self.serial(async |tx| {
            let still_pending = match otp_in(tx, email).await? {
                Some(p) => p.code_hash == otp.code_hash && p.salt == otp.salt && now < p.expires_at,
                None => false,
            };
            if !still_pending {
                return Ok(AccountCreation::CodeGone);
            }
            remove_otp_in(tx, email).await?;
            if user_by_email_in(tx, email).await?.is_some() {
                return Ok(AccountCreation::EmailTaken);
            }
            let user = insert_user_in(tx, email, password_hash, now).await?;
            let session = Session {
                user_id: user.id,
                email: email.to_string(),
                created_at: now,
                last_seen: now,
                ip: origin.ip.clone(),
                user_agent: origin.user_agent.clone(),
            };
            insert_session_in(tx, session_token, &session).await?;
            Ok(AccountCreation::Created(user))
        })
    }
}

impl OutboxStore for PostgresStore {
    fn outbox_due(&self, now: UnixMillis, max: usize) -> Result<OutboxBatch, StoreError> {
        self.read(async |client| {
            // Claim (lease) due messages no other worker holds; committed
            // at once (autocommit), so the lease is visible to every worker.
            let rows = client
                .query(
                    "UPDATE gh_outbox SET next_attempt_at = $3, leased_by = $4 WHERE id IN ( \
                       SELECT id FROM gh_outbox WHERE next_attempt_at <= $1 \
                       ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     RETURNING record, next_attempt_at",
                    &[
                        &i(now),
                        &(max as i64),
                        &i(now + self.lease_ms()),
                        &self.instance,
                    ],
                )
                .await?;
            let mut due = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut mail = mail_of(row)?;
                // The worker sees when it was due, not the lease.
                let record: QueuedMail = decode(row.get::<_, &str>(0))?;
                mail.next_attempt_at = record.next_attempt_at;
                due.push(mail);
            }
            due.sort_by_key(|m| (m.next_attempt_at, m.id));
            let stats = client
                .query_one(
                    "SELECT count(*), min(next_attempt_at) FILTER (WHERE next_attempt_at > $1) \
                     FROM gh_outbox",
                    &[&i(now)],
                )
                .await?;
            let depth: i64 = stats.get(0);
            let next_due: Option<i64> = stats.get(1);
            Ok(OutboxBatch {
                due,
                next_due: next_due.map(|v| v as u64),
                depth: depth as u64,
            })
        })
    }

    /// The worker re-reads a claimed mail right before its SMTP dialogue:
    /// this renews the lease, and answers `None` if the lease ran out and
    /// another instance claimed the mail meanwhile (it sends it, not us).
    fn outbox_get(&self, id: u64, now: UnixMillis) -> Result<Option<QueuedMail>, StoreError> {
        let lease_end = i(now + self.lease_ms());
        self.read(async |client| {
            match client
                .query_opt(
                    "UPDATE gh_outbox SET next_attempt_at = $3 \
                     WHERE id = $1 AND leased_by = $2 \
                     RETURNING record, next_attempt_at",
                    &[&i(id), &self.instance, &lease_end],
                )
                .await?
            {
                Some(row) => Ok(Some(mail_of(&row)?)),
                None => Ok(None),
            }
        })
    }

    fn outbox_reschedule(
        &self,
        id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.serial(async |tx| {
            let Some(row) = tx
                .query_opt(
                    "SELECT record, next_attempt_at FROM gh_outbox WHERE id = $1",
                    &[&i(id)],
                )
                .await?
            else {
                return Ok(false);
            };
            let mut mail = mail_of(&row)?;
            mail.attempts = attempts;
            mail.next_attempt_at = next_attempt_at;
            tx.execute(
                "UPDATE gh_outbox SET next_attempt_at = $2, record = $3, leased_by = NULL \
                 WHERE id = $1",
                &[&i(id), &i(next_attempt_at), &encode(&mail)?],
            )
            .await?;
            Ok(true)
        })
    }

    fn outbox_remove(&self, id: u64) -> Result<bool, StoreError> {
        self.read(async |client| {
            Ok(client
                .execute("DELETE FROM gh_outbox WHERE id = $1", &[&i(id)])
                .await?
                > 0)
        })
    }
}

impl CounterStore for PostgresStore {
    fn load_throttles(&self) -> Result<Vec<(String, ThrottleRecord)>, StoreError> {
        self.read(async |client| {
            let rows = client
                .query("SELECT key, record FROM gh_throttles", &[])
                .await?;
            rows.iter()
                .map(|r| Ok((r.get::<_, String>(0), decode(r.get::<_, &str>(1))?)))
                .collect()
        })
    }

    fn save_throttles(
        &self,
        changes: &[(String, Option<ThrottleRecord>)],
    ) -> Result<(), StoreError> {
        self.serial(async |tx| {
            for (key, record) in changes {
                match record {
                    Some(r) => {
                        tx.execute(
                            "INSERT INTO gh_throttles (key, record) VALUES ($1, $2) \
                             ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
                            &[key, &encode(r)?],
                        )
                        .await?;
                    }
                    None => {
                        tx.execute("DELETE FROM gh_throttles WHERE key = $1", &[key])
                            .await?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Counters are counted in the database, so every instance sees every
    /// failure and request at once (one small transaction per auth request;
    /// proxied requests never count).
    fn shares_counters(&self) -> bool {
        true
    }

    fn throttle_record(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError> {
        self.read(async |client| {
            match client
                .query_opt("SELECT record FROM gh_throttles WHERE key = $1", &[&key])
                .await?
            {
                Some(row) => Ok(Some(decode(row.get::<_, &str>(0))?)),
                None => Ok(None),
            }
        })
    }

    fn update_throttle(
        &self,
        key: &str,
        change: &mut dyn FnMut(&mut ThrottleRecord),
    ) -> Result<ThrottleRecord, StoreError> {
        let change = std::sync::Mutex::new(change);
        self.serial(async |tx| {
            let mut record: ThrottleRecord = match tx
                .query_opt("SELECT record FROM gh_throttles WHERE key = $1", &[&key])
                .await?
            {
                Some(row) => decode(row.get::<_, &str>(0))?,
                None => ThrottleRecord::default(),
            };
            (change.lock().unwrap_or_else(|p| p.into_inner()))(&mut record);
            tx.execute(
                "INSERT INTO gh_throttles (key, record) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
                &[&key, &encode(&record)?],
            )
            .await?;
            Ok(record)
        })
    }
}

impl AccountStore for PostgresStore {
    fn request_password_reset(
        &self,
        email: &str,
        now: UnixMillis,
        limit: SendLimit,
        code: PendingOtp,
        mail: OtpMail,
    ) -> Result<SendOutcome, StoreError> {
        self.serial(async |tx| {
            if let Some(retry_after_ms) = count_send_in(tx, &reset_sends(email), now, limit).await?
            {
                return Ok(SendOutcome::Limited { retry_after_ms });
            }
            let user = user_by_email_in(tx, email).await?.filter(|u| !u.disabled);
            let record = AccountCode {
                pending: code.clone(),
                user_id: user.as_ref().map(|u| u.id),
                new_email: None,
            };
            put_account_code_in(tx, &CodePurpose::PasswordReset.key(email), &record).await?;
            let queued = match &user {
                Some(_) => {
                    let mail = mail.clone();
                    queue_in(
                        tx,
                        email,
                        None,
                        now,
                        MailKind::ResetCode {
                            code: mail.code,
                            ttl_ms: mail.ttl_ms,
                        },
                        mail.deadline,
                        mail.message_token,
                    )
                    .await?
                    .0
                }
                None => 0,
            };
            Ok(SendOutcome::Accepted {
                account_exists: user.is_some(),
                queued,
                superseded: false,
            })
        })
    }

    fn check_account_code(
        &self,
        purpose: CodePurpose,
        subject: &str,
        now: UnixMillis,
        max_attempts: u32,
        matches: &dyn Fn(&PendingOtp) -> bool,
    ) -> Result<AccountCodeCheck, StoreError> {
        let key = purpose.key(subject);
        self.serial(async |tx| {
            Ok(match account_code_in(tx, &key).await? {
                None => AccountCodeCheck::Missing,
                Some(c) if now >= c.pending.expires_at => {
                    remove_code_in(tx, &key).await?;
                    AccountCodeCheck::Expired
                }
                Some(c) if c.pending.attempts >= max_attempts => AccountCodeCheck::Exhausted,
                Some(c) if matches(&c.pending) => AccountCodeCheck::Valid(c),
                Some(mut c) => {
                    c.pending.attempts += 1;
                    put_account_code_in(tx, &key, &c).await?;
                    AccountCodeCheck::Wrong
                }
            })
        })
    }

    fn complete_password_reset(
        &self,
        email: &str,
        code: &AccountCode,
        password_hash: &str,
        token: &TokenHash,
        session: &Session,
        notice: Notice,
    ) -> Result<Option<UserChange>, StoreError> {
        let key = CodePurpose::PasswordReset.key(email);
        let now = session.created_at;
        self.serial(async |tx| {
            if !still_pending_in(tx, &key, code, now).await? {
                return Ok(None);
            }
            remove_code_in(tx, &key).await?;
            let user = user_by_email_in(tx, email)
                .await?
                .filter(|u| !u.disabled && Some(u.id) == code.user_id && session.user_id == u.id);
            let Some(mut user) = user else {
                return Ok(None);
            };
            user.password_hash = password_hash.to_string();
            put_user_in(tx, &user).await?;
            let ended_sessions = delete_user_sessions_in(tx, user.id).await?;
            insert_session_in(tx, token, session).await?;
            queue_notice_in(tx, email, now, notice.clone()).await?;
            Ok(Some(UserChange {
                user,
                ended_sessions,
            }))
        })
    }

    fn change_password(
        &self,
        user_id: u64,
        expected_hash: &str,
        new_hash: &str,
        token: &TokenHash,
        session: &Session,
        notice: Notice,
    ) -> Result<Option<UserChange>, StoreError> {
        self.serial(async |tx| {
            let Some(mut user) = user_by_id_in(tx, user_id).await? else {
                return Ok(None);
            };
            if user.disabled || user.password_hash != expected_hash {
                return Ok(None);
            }
            user.password_hash = new_hash.to_string();
            put_user_in(tx, &user).await?;
            remove_code_in(tx, &CodePurpose::PasswordReset.key(&user.email)).await?;
            let ended_sessions = delete_user_sessions_in(tx, user.id).await?;
            insert_session_in(tx, token, session).await?;
            queue_notice_in(tx, &user.email, session.created_at, notice.clone()).await?;
            Ok(Some(UserChange {
                user,
                ended_sessions,
            }))
        })
    }

    fn request_email_change(
        &self,
        user_id: u64,
        new_email: &str,
        now: UnixMillis,
        limit: SendLimit,
        code: PendingOtp,
        mails: EmailChangeMails,
    ) -> Result<SendOutcome, StoreError> {
        self.serial(async |tx| {
            for key in [change_sends_by(user_id), change_sends_to(new_email)] {
                if let Some(retry_after_ms) = count_send_in(tx, &key, now, limit).await? {
                    return Ok(SendOutcome::Limited { retry_after_ms });
                }
            }
            let Some(user) = user_by_id_in(tx, user_id).await? else {
                return Ok(SendOutcome::Accepted {
                    account_exists: false,
                    queued: 0,
                    superseded: false,
                });
            };
            let in_use = user_by_email_in(tx, new_email).await?.is_some();
            let record = AccountCode {
                pending: code.clone(),
                user_id: Some(user_id),
                new_email: Some(new_email.to_string()),
            };
            put_account_code_in(
                tx,
                &CodePurpose::EmailChange.key(&user_id.to_string()),
                &record,
            )
            .await?;
            let mails = mails.clone();
            let queued = if in_use {
                queue_notice_in(tx, new_email, now, mails.in_use).await?
            } else {
                let mail = mails.code;
                queue_in(
                    tx,
                    new_email,
                    None,
                    now,
                    MailKind::EmailChangeCode {
                        code: mail.code,
                        ttl_ms: mail.ttl_ms,
                    },
                    mail.deadline,
                    mail.message_token,
                )
                .await?
                .0
            };
            queue_notice_in(tx, &user.email, now, mails.old_address).await?;
            Ok(SendOutcome::Accepted {
                account_exists: in_use,
                queued,
                superseded: false,
            })
        })
    }

    fn complete_email_change(
        &self,
        user_id: u64,
        code: &AccountCode,
        keep: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<EmailChanged>, StoreError> {
        let key = CodePurpose::EmailChange.key(&user_id.to_string());
        self.serial(async |tx| {
            if !still_pending_in(tx, &key, code, now).await? {
                return Ok(None);
            }
            let Some(new_email) = remove_code_in(tx, &key).await?.and_then(|c| c.new_email) else {
                return Ok(None);
            };
            let user = user_by_id_in(tx, user_id).await?.filter(|u| !u.disabled);
            let taken = user_by_email_in(tx, &new_email).await?.is_some();
            let Some(mut user) = user.filter(|_| !taken) else {
                return Ok(None);
            };
            let old_email = std::mem::replace(&mut user.email, new_email.clone());
            put_user_in(tx, &user).await?;
            remove_code_in(tx, &CodePurpose::PasswordReset.key(&old_email)).await?;
            remove_otp_in(tx, &new_email).await?;
            let rows = tx
                .query(
                    "DELETE FROM gh_sessions WHERE user_id = $1 AND token <> $2 RETURNING token",
                    &[&i(user.id), &keep.as_slice()],
                )
                .await?;
            let ended_sessions = rows
                .iter()
                .filter_map(|r| TokenHash::try_from(r.get::<_, &[u8]>(0)).ok())
                .collect();
            tx.execute(
                "UPDATE gh_sessions SET email = $3 WHERE token = $1 AND user_id = $2",
                &[&keep.as_slice(), &i(user.id), &new_email],
            )
            .await?;
            Ok(Some(EmailChanged {
                user: user.clone(),
                old_email,
                ended_sessions,
            }))
        })
    }

    fn user_sessions(&self, user_id: u64) -> Result<Vec<(TokenHash, Session)>, StoreError> {
        self.list_sessions(Some(user_id))
    }

    fn delete_account(&self, user_id: u64) -> Result<Option<UserChange>, StoreError> {
        self.serial(async |tx| {
            let Some(user) = user_by_id_in(tx, user_id).await? else {
                return Ok(None);
            };
            let email = user.email.as_str();
            let ended_sessions = delete_user_sessions_in(tx, user.id).await?;
            // Linked OIDC identities go with the account.
            tx.execute(
                "DELETE FROM gh_identities WHERE user_id = $1",
                &[&i(user.id)],
            )
            .await?;
            tx.execute("DELETE FROM gh_users WHERE id = $1", &[&i(user.id)])
                .await?;
            remove_code_in(tx, &CodePurpose::PasswordReset.key(email)).await?;
            let change =
                remove_code_in(tx, &CodePurpose::EmailChange.key(&user.id.to_string())).await?;
            remove_otp_in(tx, email).await?;
            tx.execute("DELETE FROM gh_outbox WHERE to_addr = $1", &[&email])
                .await?;
            if let Some(pending_address) = change.and_then(|c| c.new_email) {
                tx.execute(
                    "DELETE FROM gh_outbox WHERE to_addr = $1",
                    &[&pending_address],
                )
                .await?;
            }
            let keys = [
                email.to_string(),
                reset_sends(email),
                change_sends_to(email),
                change_sends_by(user.id),
            ];
            tx.execute(
                "DELETE FROM gh_otp_sends WHERE key = ANY($1)",
                &[&keys.as_slice()],
            )
            .await?;
            Ok(Some(UserChange {
                user: user.clone(),
                ended_sessions,
            }))
        })
    }

    fn queue_notice(&self, to: &str, now: UnixMillis, notice: Notice) -> Result<u64, StoreError> {
        self.serial(async |tx| queue_notice_in(tx, to, now, notice.clone()).await)
    }

    fn pending_codes(&self, user: &User, now: UnixMillis) -> Result<PendingCodes, StoreError> {
        self.serial(async |tx| {
            let live = async |key: String| -> Result<bool, StoreError> {
                Ok(account_code_in(tx, &key)
                    .await?
                    .is_some_and(|c| c.user_id == Some(user.id) && now < c.pending.expires_at))
            };
            Ok(PendingCodes {
                password_reset: live(CodePurpose::PasswordReset.key(&user.email)).await?,
                email_change: live(CodePurpose::EmailChange.key(&user.id.to_string())).await?,
            })
        })
    }

    fn traces(&self, email: &str) -> Result<Traces, StoreError> {
        self.serial(async |tx| {
            let user_id = user_by_email_in(tx, email).await?.map(|u| i(u.id));
            let count = async |sql: &str,
                               params: &[&(dyn tokio_postgres::types::ToSql + Sync)]|
                   -> Result<usize, StoreError> {
                let n: i64 = tx.query_one(sql, params).await?.get(0);
                Ok(n as usize)
            };
            let mut traces = Traces {
                user: user_id.is_some(),
                ..Traces::default()
            };
            traces.sessions = count(
                "SELECT count(*) FROM gh_sessions WHERE email = $1 OR user_id = $2",
                &[&email, &user_id],
            )
            .await?;
            let reset_key = CodePurpose::PasswordReset.key(email);
            let rows = tx
                .query("SELECT key, record FROM gh_account_codes", &[])
                .await?;
            for row in &rows {
                let c: AccountCode = decode(row.get::<_, &str>(1))?;
                let names_it = row.get::<_, &str>(0) == reset_key
                    || c.new_email.as_deref() == Some(email)
                    || (user_id.is_some() && c.user_id.map(i) == user_id);
                traces.codes += usize::from(names_it);
            }
            traces.codes +=
                count("SELECT count(*) FROM gh_otps WHERE email = $1", &[&email]).await?;
            traces.mails = count(
                "SELECT count(*) FROM gh_outbox WHERE to_addr = $1",
                &[&email],
            )
            .await?;
            let keys = [
                email.to_string(),
                reset_sends(email),
                change_sends_to(email),
            ];
            traces.send_counters = count(
                "SELECT count(*) FROM gh_otp_sends WHERE key = ANY($1)",
                &[&keys.as_slice()],
            )
            .await?;
            let suffix = format!(
                "%:{}",
                email
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            traces.send_counters += count(
                "SELECT count(*) FROM gh_throttles WHERE key LIKE $1",
                &[&suffix],
            )
            .await?;
            Ok(traces)
        })
    }
}
