//! The redb implementation of [`Store`]: one file, one write transaction per
//! logical change, committed with two-phase commit because stored data is
//! attacker-influenced.

use std::path::Path;

use super::{AccountStore, CodeStore, CounterStore, OutboxStore, SessionStore, UserStore};
use super::{BackupCounts, UserChange};

use redb::{
    Database, Durability, ReadableDatabase, ReadableMultimapTable, ReadableTable, WriteTransaction,
};

use super::ids::IdCounter;
use super::redb_outbox;
use super::redb_tables::*;
use super::{
    AccountCode, AccountCodeCheck, CodePurpose, EmailChangeMails, EmailChanged, Notice,
    PendingCodes, SessionOrigin, Traces,
};
use super::{
    AccountCreation, OtpCheck, OtpMail, OutboxBatch, PendingOtp, QueuedMail, SendLimit,
    SendOutcome, Session, SessionExpiry, Store, StoreError, SweepCounts, ThrottleRecord, TokenHash,
    UnixMillis, User,
};

const SCHEMA_VERSION: u64 = 1;

pub struct RedbStore {
    pub(super) db: Database,
}

impl RedbStore {
    /// Opens (or creates) the store file, creating every table and checking
    /// the schema version.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::from(redb::StorageError::Io(e)))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::Locked(path.display().to_string())
            }
            other => other.into(),
        })?;
        let store = RedbStore { db };
        store.init()?;
        Ok(store)
    }

    fn init(&self) -> Result<(), StoreError> {
        let txn = self.write_txn()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            create_tables(&txn)?;
        }
        Ok(txn.commit()?)
    }

    pub(super) fn write_txn(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_two_phase_commit(true);
        Ok(txn)
    }
}

impl Store for RedbStore {
    fn server_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let txn = self.write_txn()?;
        let secret = {
            let mut table = txn.open_table(SECRETS)?;
            let existing = table
                .get(name)?
                .and_then(|v| <[u8; 32]>::try_from(v.value()).ok());
            match existing {
                Some(s) => s,
                None => {
                    let mut fresh = [0u8; 32];
                    crate::random::random_bytes(&mut fresh);
                    table.insert(name, fresh.as_slice())?;
                    fresh
                }
            }
        };
        txn.commit()?;
        Ok(secret)
    }

    fn sweep(&self, now: UnixMillis, expiry: SessionExpiry) -> Result<SweepCounts, StoreError> {
        let account_codes = self.sweep_account_codes(now)?;
        // Collect under a read transaction so writers are not held up by the scan.
        let (dead_sessions, dead_otps) = {
            let txn = self.db.begin_read()?;
            let mut dead_sessions = Vec::new();
            for entry in txn.open_table(SESSIONS)?.iter()? {
                let (k, v) = entry?;
                let s: Session = decode(v.value())?;
                if expiry.is_expired(&s, s.last_seen, now) {
                    dead_sessions.push(k.value().to_vec());
                }
            }
            let mut dead_otps = Vec::new();
            for entry in txn.open_table(OTPS)?.iter()? {
                let (k, v) = entry?;
                let p: PendingOtp = decode(v.value())?;
                if now >= p.expires_at {
                    dead_otps.push(k.value().to_string());
                }
            }
            (dead_sessions, dead_otps)
        };
        if dead_sessions.is_empty() && dead_otps.is_empty() {
            return Ok(SweepCounts {
                sessions: 0,
                otps: account_codes,
            });
        }
        let txn = self.write_txn()?;
        let mut counts = SweepCounts {
            sessions: 0,
            otps: account_codes,
        };
        for key in &dead_sessions {
            let Ok(token) = <TokenHash>::try_from(key.as_slice()) else {
                continue;
            };
            // Re-check inside the write: the session may have been used since.
            let still_dead = match txn.open_table(SESSIONS)?.get(key.as_slice())? {
                Some(v) => {
                    let s: Session = decode(v.value())?;
                    expiry.is_expired(&s, s.last_seen, now)
                }
                None => false,
            };
            if still_dead && delete_session_in(&txn, &token)? {
                counts.sessions += 1;
            }
        }
        {
            let mut otps = txn.open_table(OTPS)?;
            for email in &dead_otps {
                let expired = match otps.get(email.as_str())? {
                    Some(v) => now >= decode::<PendingOtp>(v.value())?.expires_at,
                    None => false,
                };
                if expired {
                    otps.remove(email.as_str())?;
                    counts.otps += 1;
                }
            }
        }
        txn.commit()?;
        Ok(counts)
    }

    fn backup_to(&self, dest: &Path) -> Result<BackupCounts, StoreError> {
        super::redb_snapshot::write_snapshot(&self.db, dest)
    }

    fn flush(&self) -> Result<(), StoreError> {
        // An empty durable commit persists every earlier non-durable one.
        let txn = self.db.begin_write()?;
        Ok(txn.commit()?)
    }
}

impl UserStore for RedbStore {
    fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let txn = self.db.begin_read()?;
        let by_email = txn.open_table(USERS_BY_EMAIL)?;
        let Some(id) = by_email.get(email)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let users = txn.open_table(USERS)?;
        match users.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        let mut out = Vec::new();
        for entry in users.iter()? {
            let (_, v) = entry?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn add_user(
        &self,
        email: &str,
        password_hash: &str,
        now: UnixMillis,
    ) -> Result<Option<User>, StoreError> {
        let txn = self.write_txn()?;
        let user = {
            let by_email = txn.open_table(USERS_BY_EMAIL)?;
            if by_email.get(email)?.is_some() {
                return Ok(None);
            }
            drop(by_email);
            let user = insert_user_in(&txn, email, password_hash, now)?;
            // A code sent before the operator created the account is void.
            txn.open_table(OTPS)?.remove(email)?;
            user
        };
        txn.commit()?;
        Ok(Some(user))
    }

    fn delete_user(&self, email: &str) -> Result<Option<UserChange>, StoreError> {
        // The same clean-up as a user's own deletion: sessions, pending
        // codes, queued mail and send windows go with the account.
        match self.user_by_email(email)? {
            Some(user) => self.account_deleted(user.id),
            None => Ok(None),
        }
    }

    fn set_user_disabled(
        &self,
        email: &str,
        disabled: bool,
    ) -> Result<Option<UserChange>, StoreError> {
        self.update_user(email, |u| u.disabled = disabled)
    }

    fn set_password_hash(
        &self,
        email: &str,
        password_hash: &str,
    ) -> Result<Option<UserChange>, StoreError> {
        self.update_user(email, |u| u.password_hash = password_hash.to_string())
    }
}

impl SessionStore for RedbStore {
    fn insert_session(&self, token: &TokenHash, session: &Session) -> Result<(), StoreError> {
        let txn = self.write_txn()?;
        insert_session_in(&txn, token, session)?;
        Ok(txn.commit()?)
    }

    fn session(&self, token: &TokenHash) -> Result<Option<Session>, StoreError> {
        let txn = self.db.begin_read()?;
        let sessions = txn.open_table(SESSIONS)?;
        match sessions.get(token.as_slice())? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn touch_sessions(&self, touches: &[(TokenHash, UnixMillis)]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        // A lost touch only shortens a session, so it rides on the next durable commit.
        txn.set_durability(Durability::None)?;
        {
            let mut sessions = txn.open_table(SESSIONS)?;
            for (token, last_seen) in touches {
                let current: Option<Session> = match sessions.get(token.as_slice())? {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
                if let Some(mut s) = current
                    && *last_seen > s.last_seen
                {
                    s.last_seen = *last_seen;
                    sessions.insert(token.as_slice(), encode(&s)?.as_slice())?;
                }
            }
        }
        Ok(txn.commit()?)
    }

    fn delete_session(&self, token: &TokenHash) -> Result<bool, StoreError> {
        let txn = self.write_txn()?;
        let existed = delete_session_in(&txn, token)?;
        txn.commit()?;
        Ok(existed)
    }

    fn list_sessions(&self, user_id: Option<u64>) -> Result<Vec<(TokenHash, Session)>, StoreError> {
        let txn = self.db.begin_read()?;
        let sessions = txn.open_table(SESSIONS)?;
        let mut out = Vec::new();
        for entry in sessions.iter()? {
            let (k, v) = entry?;
            let Ok(hash) = <TokenHash>::try_from(k.value()) else {
                continue;
            };
            let session: Session = decode(v.value())?;
            if user_id.is_none_or(|id| id == session.user_id) {
                out.push((hash, session));
            }
        }
        Ok(out)
    }

    fn delete_user_sessions(&self, user_id: u64) -> Result<Vec<TokenHash>, StoreError> {
        let txn = self.write_txn()?;
        let ended = delete_user_sessions_in(&txn, user_id)?;
        txn.commit()?;
        Ok(ended)
    }

    fn count_sessions(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(SESSIONS)?.len()?)
    }
}

impl CodeStore for RedbStore {
    fn record_otp_send(
        &self,
        email: &str,
        now: UnixMillis,
        limit: SendLimit,
        otp: PendingOtp,
        mail: OtpMail,
    ) -> Result<SendOutcome, StoreError> {
        let txn = self.write_txn()?;
        let outcome = {
            let mut sends_table = txn.open_table(OTP_SENDS)?;
            let mut sends: Vec<UnixMillis> = match sends_table.get(email)? {
                Some(v) => decode(v.value())?,
                None => Vec::new(),
            };
            if let Some(retry_after_ms) = limit.admit(&mut sends, now) {
                return Ok(SendOutcome::Limited { retry_after_ms });
            }
            sends_table.insert(email, encode(&sends)?.as_slice())?;

            let account_exists = txn.open_table(USERS_BY_EMAIL)?.get(email)?.is_some();
            let mut otps = txn.open_table(OTPS)?;
            if account_exists {
                otps.remove(email)?;
            } else {
                otps.insert(email, encode(&otp)?.as_slice())?;
            }
            let (queued, superseded) =
                redb_outbox::queue_in(&txn, email, now, account_exists, mail)?;
            SendOutcome::Accepted {
                account_exists,
                queued,
                superseded,
            }
        };
        txn.commit()?;
        Ok(outcome)
    }

    fn check_otp(
        &self,
        email: &str,
        now: UnixMillis,
        max_attempts: u32,
        matches: &dyn Fn(&PendingOtp) -> bool,
    ) -> Result<OtpCheck, StoreError> {
        let txn = self.write_txn()?;
        let verdict = {
            let mut otps = txn.open_table(OTPS)?;
            let pending: Option<PendingOtp> = match otps.get(email)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            match pending {
                None => OtpCheck::Missing,
                Some(p) if now >= p.expires_at => {
                    otps.remove(email)?;
                    OtpCheck::Expired
                }
                Some(p) if p.attempts >= max_attempts => OtpCheck::Exhausted,
                Some(p) if matches(&p) => OtpCheck::Valid(p),
                Some(mut p) => {
                    p.attempts += 1;
                    otps.insert(email, encode(&p)?.as_slice())?;
                    OtpCheck::Wrong
                }
            }
        };
        if matches!(
            verdict,
            OtpCheck::Missing | OtpCheck::Exhausted | OtpCheck::Valid(_)
        ) {
            txn.abort()?;
        } else {
            txn.commit()?;
        }
        Ok(verdict)
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
        let txn = self.write_txn()?;
        let user = {
            let mut otps = txn.open_table(OTPS)?;
            let still_pending = match otps.get(email)? {
                Some(v) => {
                    let p: PendingOtp = decode(v.value())?;
                    p.code_hash == otp.code_hash && p.salt == otp.salt && now < p.expires_at
                }
                None => false,
            };
            if !still_pending {
                return Ok(AccountCreation::CodeGone);
            }
            let by_email = txn.open_table(USERS_BY_EMAIL)?;
            if by_email.get(email)?.is_some() {
                otps.remove(email)?;
                drop((otps, by_email));
                txn.commit()?;
                return Ok(AccountCreation::EmailTaken);
            }
            otps.remove(email)?;

            drop(by_email);
            let user = insert_user_in(&txn, email, password_hash, now)?;
            let session = Session {
                user_id: user.id,
                email: email.to_string(),
                created_at: now,
                last_seen: now,
                ip: origin.ip.clone(),
                user_agent: origin.user_agent.clone(),
            };
            insert_session_in(&txn, session_token, &session)?;
            user
        };
        txn.commit()?;
        Ok(AccountCreation::Created(user))
    }
}

impl OutboxStore for RedbStore {
    fn outbox_due(&self, now: UnixMillis, max: usize) -> Result<OutboxBatch, StoreError> {
        self.outbox_due_at(now, max)
    }

    fn outbox_get(&self, id: u64, _now: UnixMillis) -> Result<Option<QueuedMail>, StoreError> {
        self.outbox_entry(id)
    }

    fn outbox_reschedule(
        &self,
        id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.outbox_set_next_attempt(id, attempts, next_attempt_at)
    }

    fn outbox_remove(&self, id: u64) -> Result<bool, StoreError> {
        self.outbox_delete(id)
    }
}

impl CounterStore for RedbStore {
    fn load_throttles(&self) -> Result<Vec<(String, ThrottleRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(THROTTLES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), decode(v.value())?));
        }
        Ok(out)
    }

    fn save_throttles(
        &self,
        changes: &[(String, Option<ThrottleRecord>)],
    ) -> Result<(), StoreError> {
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(THROTTLES)?;
            for (key, record) in changes {
                match record {
                    Some(r) => {
                        table.insert(key.as_str(), encode(r)?.as_slice())?;
                    }
                    None => {
                        table.remove(key.as_str())?;
                    }
                }
            }
        }
        Ok(txn.commit()?)
    }
}

impl AccountStore for RedbStore {
    // Account self-service: implemented in `redb_account`.

    fn request_password_reset(
        &self,
        email: &str,
        now: UnixMillis,
        limit: SendLimit,
        code: PendingOtp,
        mail: OtpMail,
    ) -> Result<SendOutcome, StoreError> {
        self.reset_requested(email, now, limit, code, mail)
    }

    fn check_account_code(
        &self,
        purpose: CodePurpose,
        subject: &str,
        now: UnixMillis,
        max_attempts: u32,
        matches: &dyn Fn(&PendingOtp) -> bool,
    ) -> Result<AccountCodeCheck, StoreError> {
        self.account_code_checked(purpose, subject, now, max_attempts, matches)
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
        self.reset_completed(email, code, password_hash, token, session, notice)
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
        self.password_changed(user_id, expected_hash, new_hash, token, session, notice)
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
        self.email_change_requested(user_id, new_email, now, limit, code, mails)
    }

    fn complete_email_change(
        &self,
        user_id: u64,
        code: &AccountCode,
        keep: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<EmailChanged>, StoreError> {
        self.email_change_completed(user_id, code, keep, now)
    }

    fn user_sessions(&self, user_id: u64) -> Result<Vec<(TokenHash, Session)>, StoreError> {
        self.sessions_of(user_id)
    }

    fn delete_account(&self, user_id: u64) -> Result<Option<UserChange>, StoreError> {
        self.account_deleted(user_id)
    }

    fn queue_notice(&self, to: &str, now: UnixMillis, notice: Notice) -> Result<u64, StoreError> {
        self.notice_queued(to, now, notice)
    }

    fn pending_codes(&self, user: &User, now: UnixMillis) -> Result<PendingCodes, StoreError> {
        self.codes_pending(user, now)
    }

    fn traces(&self, email: &str) -> Result<Traces, StoreError> {
        self.traces_of(email)
    }
}

/// The store half of the operator commands.
impl RedbStore {
    /// The user behind `email` inside a write transaction.
    pub(super) fn user_in(txn: &WriteTransaction, email: &str) -> Result<Option<User>, StoreError> {
        let Some(id) = txn
            .open_table(USERS_BY_EMAIL)?
            .get(email)?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        match txn.open_table(USERS)?.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Applies `change` to the user and ends their sessions, in one commit.
    fn update_user(
        &self,
        email: &str,
        change: impl FnOnce(&mut User),
    ) -> Result<Option<UserChange>, StoreError> {
        let txn = self.write_txn()?;
        let Some(mut user) = Self::user_in(&txn, email)? else {
            return Ok(None);
        };
        change(&mut user);
        txn.open_table(USERS)?
            .insert(user.id, encode(&user)?.as_slice())?;
        let ended_sessions = delete_user_sessions_in(&txn, user.id)?;
        txn.commit()?;
        Ok(Some(UserChange {
            user,
            ended_sessions,
        }))
    }
}

pub(super) fn delete_user_sessions_in(
    txn: &WriteTransaction,
    user_id: u64,
) -> Result<Vec<TokenHash>, StoreError> {
    let mut hashes: Vec<TokenHash> = Vec::new();
    {
        let index = txn.open_multimap_table(USER_SESSIONS)?;
        for v in index.get(user_id)? {
            if let Ok(h) = <TokenHash>::try_from(v?.value()) {
                hashes.push(h);
            }
        }
    }
    let mut sessions = txn.open_table(SESSIONS)?;
    for h in &hashes {
        sessions.remove(h.as_slice())?;
    }
    txn.open_multimap_table(USER_SESSIONS)?
        .remove_all(user_id)?;
    Ok(hashes)
}

/// Creates a user with the next id; the caller checked the email is free.
pub(super) fn insert_user_in(
    txn: &WriteTransaction,
    email: &str,
    password_hash: &str,
    now: UnixMillis,
) -> Result<User, StoreError> {
    let id = next_id_in(txn, IdCounter::User)?;
    let user = User {
        id,
        email: email.to_string(),
        password_hash: password_hash.to_string(),
        created_at: now,
        disabled: false,
    };
    txn.open_table(USERS)?
        .insert(id, encode(&user)?.as_slice())?;
    txn.open_table(USERS_BY_EMAIL)?.insert(email, id)?;
    Ok(user)
}

pub(super) fn insert_session_in(
    txn: &WriteTransaction,
    token: &TokenHash,
    session: &Session,
) -> Result<(), StoreError> {
    // A sign-in racing an operator's disable or delete must not leave a live
    // session behind: the account is re-checked inside the same transaction.
    let account_usable = match txn.open_table(USERS)?.get(session.user_id)? {
        Some(v) => !decode::<User>(v.value())?.disabled,
        None => false,
    };
    if !account_usable {
        return Ok(());
    }
    txn.open_table(SESSIONS)?
        .insert(token.as_slice(), encode(session)?.as_slice())?;
    txn.open_multimap_table(USER_SESSIONS)?
        .insert(session.user_id, token.as_slice())?;
    Ok(())
}

pub(super) fn delete_session_in(
    txn: &WriteTransaction,
    token: &TokenHash,
) -> Result<bool, StoreError> {
    let mut sessions = txn.open_table(SESSIONS)?;
    let removed: Option<Session> = match sessions.remove(token.as_slice())? {
        Some(v) => Some(decode(v.value())?),
        None => None,
    };
    if let Some(s) = &removed {
        txn.open_multimap_table(USER_SESSIONS)?
            .remove(s.user_id, token.as_slice())?;
    }
    Ok(removed.is_some())
}

/// The outbox worker's reads and updates (the queueing itself happens
/// inside other changes' transactions, see [`redb_outbox`]).
impl RedbStore {
    pub(super) fn outbox_due_at(
        &self,
        now: UnixMillis,
        max: usize,
    ) -> Result<OutboxBatch, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        let schedule = txn.open_table(OUTBOX_DUE)?;
        let outbox = txn.open_table(OUTBOX)?;
        let mut batch = OutboxBatch {
            depth: outbox.len()?,
            ..OutboxBatch::default()
        };
        for row in schedule.iter()? {
            let (key, _) = row?;
            let (at, id) = key.value();
            if at > now || batch.due.len() >= max {
                batch.next_due = Some(at);
                break;
            }
            if let Some(v) = outbox.get(id)? {
                batch.due.push(decode(v.value())?);
            }
        }
        Ok(batch)
    }

    pub(super) fn outbox_entry(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read()?;
        let outbox = txn.open_table(OUTBOX)?;
        match outbox.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    pub(super) fn outbox_set_next_attempt(
        &self,
        id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let txn = self.write_txn()?;
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            let current: Option<QueuedMail> = match outbox.get(id)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            let Some(mut entry) = current else {
                return Ok(false);
            };
            let mut schedule = txn.open_table(OUTBOX_DUE)?;
            schedule.remove((entry.next_attempt_at, id))?;
            schedule.insert((next_attempt_at, id), ())?;
            entry.attempts = attempts;
            entry.next_attempt_at = next_attempt_at;
            outbox.insert(id, encode(&entry)?.as_slice())?;
        }
        txn.commit()?;
        Ok(true)
    }

    pub(super) fn outbox_delete(&self, id: u64) -> Result<bool, StoreError> {
        let txn = self.write_txn()?;
        let existed = redb_outbox::delete_in(&txn, id)?;
        txn.commit()?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        (dir, store)
    }

    fn otp(expires_at: u64) -> PendingOtp {
        PendingOtp {
            salt: [1; 16],
            code_hash: [2; 32],
            expires_at,
            attempts: 0,
        }
    }

    fn mail() -> OtpMail {
        OtpMail {
            code: "123456".into(),
            ttl_ms: 10_000,
            deadline: 10_000,
            message_token: "t".into(),
        }
    }

    const LIMIT: SendLimit = SendLimit {
        max: 2,
        window_ms: 1000,
    };

    #[test]
    fn send_window_limits_and_slides() {
        let (_d, s) = temp_store();
        assert_eq!(
            s.record_otp_send("a@x.io", 100, LIMIT, otp(999), mail())
                .unwrap(),
            SendOutcome::Accepted {
                account_exists: false,
                queued: 1,
                superseded: false
            }
        );
        s.record_otp_send("a@x.io", 200, LIMIT, otp(999), mail())
            .unwrap();
        assert_eq!(
            s.record_otp_send("a@x.io", 300, LIMIT, otp(999), mail())
                .unwrap(),
            SendOutcome::Limited {
                retry_after_ms: 800
            }
        );
        // Another email is not affected; the first frees up once 100 leaves the window.
        assert!(matches!(
            s.record_otp_send("b@x.io", 300, LIMIT, otp(999), mail())
                .unwrap(),
            SendOutcome::Accepted { .. }
        ));
        assert!(matches!(
            s.record_otp_send("a@x.io", 1101, LIMIT, otp(999), mail())
                .unwrap(),
            SendOutcome::Accepted { .. }
        ));
    }

    #[test]
    fn wrong_attempts_exhaust_the_code_and_valid_code_creates_one_account() {
        let (_d, s) = temp_store();
        s.record_otp_send("a@x.io", 0, LIMIT, otp(10_000), mail())
            .unwrap();
        assert_eq!(
            s.check_otp("a@x.io", 1, 2, &|_| false).unwrap(),
            OtpCheck::Wrong
        );
        let OtpCheck::Valid(p) = s.check_otp("a@x.io", 1, 2, &|_| true).unwrap() else {
            panic!("expected valid")
        };
        assert!(matches!(
            s.create_account("a@x.io", &p, "hash", 2, &[7; 32], &SessionOrigin::default())
                .unwrap(),
            AccountCreation::Created(User { id: 1, .. })
        ));
        assert_eq!(
            s.create_account("a@x.io", &p, "hash", 2, &[8; 32], &SessionOrigin::default())
                .unwrap(),
            AccountCreation::CodeGone
        );
        assert_eq!(s.session(&[7; 32]).unwrap().unwrap().user_id, 1);
        assert!(s.session(&[8; 32]).unwrap().is_none());

        s.record_otp_send("b@x.io", 0, LIMIT, otp(10_000), mail())
            .unwrap();
        assert_eq!(
            s.check_otp("b@x.io", 1, 2, &|_| false).unwrap(),
            OtpCheck::Wrong
        );
        assert_eq!(
            s.check_otp("b@x.io", 1, 2, &|_| false).unwrap(),
            OtpCheck::Wrong
        );
        assert_eq!(
            s.check_otp("b@x.io", 1, 2, &|_| true).unwrap(),
            OtpCheck::Exhausted
        );
    }

    #[test]
    fn existing_account_gets_no_code_and_expired_codes_are_swept() {
        let (_d, s) = temp_store();
        s.record_otp_send("a@x.io", 0, LIMIT, otp(10_000), mail())
            .unwrap();
        let OtpCheck::Valid(p) = s.check_otp("a@x.io", 1, 5, &|_| true).unwrap() else {
            panic!()
        };
        s.create_account("a@x.io", &p, "h", 1, &[7; 32], &SessionOrigin::default())
            .unwrap();
        assert!(matches!(
            s.record_otp_send("a@x.io", 5, LIMIT, otp(10_000), mail())
                .unwrap(),
            SendOutcome::Accepted {
                account_exists: true,
                ..
            }
        ));
        assert_eq!(
            s.check_otp("a@x.io", 6, 5, &|_| true).unwrap(),
            OtpCheck::Missing
        );

        s.record_otp_send("c@x.io", 0, LIMIT, otp(50), mail())
            .unwrap();
        let expiry = SessionExpiry {
            idle_ms: 100,
            absolute_ms: 1000,
        };
        let counts = s.sweep(200, expiry).unwrap();
        assert_eq!(
            counts,
            SweepCounts {
                sessions: 1,
                otps: 1
            }
        );
        assert!(s.session(&[7; 32]).unwrap().is_none());
    }
}
