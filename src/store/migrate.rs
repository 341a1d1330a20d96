//! `gatehouse store migrate`: copies everything one store holds into another
//! of the other kind (redb → PostgreSQL and back), ids and secrets included,
//! so sessions, pending codes, queued mail and throttles carry over.
//!
//! The copy goes through a neutral [`Snapshot`]: read whole from the source
//! (one read transaction), written whole into the target (one transaction).
//! The target must be empty; neither server may run (redb's lock enforces
//! it for the file; for PostgreSQL it is the operator's job).

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::Serialize;

use super::ids::IdCounter;
use super::redb_tables::{
    ACCOUNT_CODES, IDENTITIES, META, OTP_SENDS, OTPS, OUTBOX, OUTBOX_BY_EMAIL, OUTBOX_DUE, SECRETS,
    SESSIONS, THROTTLES, USER_SESSIONS, USERS, USERS_BY_EMAIL, decode, encode,
};
use super::{
    AccountCode, PendingOtp, PostgresStore, QueuedMail, RedbStore, Session, StoreError,
    ThrottleRecord, TokenHash, UnixMillis, User,
};

/// Everything a store holds.
#[derive(Default)]
pub struct Snapshot {
    users: Vec<User>,
    sessions: Vec<(TokenHash, Session)>,
    otps: Vec<(String, PendingOtp)>,
    otp_sends: Vec<(String, Vec<UnixMillis>)>,
    throttles: Vec<(String, ThrottleRecord)>,
    secrets: Vec<(String, Vec<u8>)>,
    /// Each mail with the email whose replaceable sign-up mail it is.
    outbox: Vec<(QueuedMail, Option<String>)>,
    account_codes: Vec<(String, AccountCode)>,
    /// Linked OpenID identities (started sign-ins are not copied: they
    /// last minutes and are bound to a browser mid-flow).
    identities: Vec<super::Identity>,
    /// Second factors per user (challenges are not copied, like OIDC
    /// states). The TOTP secrets stay sealed: the target needs the same
    /// `[mfa] key_file`.
    mfa: Vec<(u64, super::MfaRecord)>,
    next_user_id: u64,
    next_outbox_id: u64,
}

/// What was copied, printed by the command.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MigrateCounts {
    pub users: usize,
    pub sessions: usize,
    pub pending_codes: usize,
    pub send_windows: usize,
    pub throttles: usize,
    pub secrets: usize,
    pub queued_mails: usize,
    pub linked_identities: usize,
    /// Users with groups (issue 20).
    pub user_groups: usize,
    pub invites: usize,
    /// Users with second-factor records (TOTP, recovery codes, passkeys).
    pub second_factor_users: usize,
}

impl Snapshot {
    pub fn counts(&self) -> MigrateCounts {
        MigrateCounts {
            users: self.users.len(),
            sessions: self.sessions.len(),
            pending_codes: self.otps.len() + self.account_codes.len(),
            send_windows: self.otp_sends.len(),
            throttles: self.throttles.len(),
            secrets: self.secrets.len(),
            queued_mails: self.outbox.len(),
            linked_identities: self.identities.len(),
            user_groups: 0,
            invites: 0,
            second_factor_users: self.mfa.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.sessions.is_empty()
            && self.outbox.is_empty()
            && self.otps.is_empty()
            && self.account_codes.is_empty()
    }
}

impl RedbStore {
    /// Reads the whole store in one read transaction.
    pub fn export(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read()?;
        let mut snap = Snapshot::default();
        for row in txn.open_table(USERS)?.iter()? {
            snap.users.push(decode(row?.1.value())?);
        }
        for row in txn.open_table(SESSIONS)?.iter()? {
            let (k, v) = row?;
            if let Ok(hash) = TokenHash::try_from(k.value()) {
                snap.sessions.push((hash, decode(v.value())?));
            }
        }
        for row in txn.open_table(OTPS)?.iter()? {
            let (k, v) = row?;
            snap.otps.push((k.value().to_string(), decode(v.value())?));
        }
        for row in txn.open_table(OTP_SENDS)?.iter()? {
            let (k, v) = row?;
            snap.otp_sends
                .push((k.value().to_string(), decode(v.value())?));
        }
        for row in txn.open_table(THROTTLES)?.iter()? {
            let (k, v) = row?;
            snap.throttles
                .push((k.value().to_string(), decode(v.value())?));
        }
        for row in txn.open_table(SECRETS)?.iter()? {
            let (k, v) = row?;
            snap.secrets
                .push((k.value().to_string(), v.value().to_vec()));
        }
        let by_email = txn.open_table(OUTBOX_BY_EMAIL)?;
        for row in txn.open_table(OUTBOX)?.iter()? {
            let (_, v) = row?;
            let mail: QueuedMail = decode(v.value())?;
            let slot = by_email
                .get(mail.to.as_str())?
                .filter(|id| id.value() == mail.id)
                .map(|_| mail.to.clone());
            snap.outbox.push((mail, slot));
        }
        for row in txn.open_table(ACCOUNT_CODES)?.iter()? {
            let (k, v) = row?;
            snap.account_codes
                .push((k.value().to_string(), decode(v.value())?));
        }
        for row in txn.open_table(IDENTITIES)?.iter()? {
            snap.identities.push(decode(row?.1.value())?);
        }
        for row in txn.open_table(super::redb_tables::MFA)?.iter()? {
            let (k, v) = row?;
            snap.mfa.push((k.value(), decode(v.value())?));
        }
        let meta = txn.open_table(META)?;
        let counter = |c: IdCounter| -> Result<u64, StoreError> {
            Ok(meta.get(c.meta_key())?.map_or(1, |v| v.value()))
        };
        snap.next_user_id = counter(IdCounter::User)?;
        snap.next_outbox_id = counter(IdCounter::Outbox)?;
        Ok(snap)
    }

    /// Writes `snap` into this (empty) store in one transaction.
    pub fn import(&self, snap: &Snapshot) -> Result<(), StoreError> {
        {
            let txn = self.db.begin_read()?;
            let holds = txn.open_table(USERS)?.len()?
                + txn.open_table(SESSIONS)?.len()?
                + txn.open_table(OUTBOX)?.len()?;
            if holds > 0 {
                return Err(StoreError::Setup(
                    "the target store is not empty; migrate only into a new store".into(),
                ));
            }
        }
        let txn = self.write_txn()?;
        {
            let mut users = txn.open_table(USERS)?;
            let mut by_email = txn.open_table(USERS_BY_EMAIL)?;
            for u in &snap.users {
                users.insert(u.id, encode(u)?.as_slice())?;
                by_email.insert(u.email.as_str(), u.id)?;
            }
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut index = txn.open_multimap_table(USER_SESSIONS)?;
            for (hash, s) in &snap.sessions {
                sessions.insert(hash.as_slice(), encode(s)?.as_slice())?;
                index.insert(s.user_id, hash.as_slice())?;
            }
            let mut otps = txn.open_table(OTPS)?;
            for (k, v) in &snap.otps {
                otps.insert(k.as_str(), encode(v)?.as_slice())?;
            }
            let mut sends = txn.open_table(OTP_SENDS)?;
            for (k, v) in &snap.otp_sends {
                sends.insert(k.as_str(), encode(v)?.as_slice())?;
            }
            let mut throttles = txn.open_table(THROTTLES)?;
            for (k, v) in &snap.throttles {
                throttles.insert(k.as_str(), encode(v)?.as_slice())?;
            }
            let mut secrets = txn.open_table(SECRETS)?;
            for (k, v) in &snap.secrets {
                secrets.insert(k.as_str(), v.as_slice())?;
            }
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut due = txn.open_table(OUTBOX_DUE)?;
            let mut slots = txn.open_table(OUTBOX_BY_EMAIL)?;
            for (mail, slot) in &snap.outbox {
                outbox.insert(mail.id, encode(mail)?.as_slice())?;
                due.insert((mail.next_attempt_at, mail.id), ())?;
                if let Some(email) = slot {
                    slots.insert(email.as_str(), mail.id)?;
                }
            }
            let mut codes = txn.open_table(ACCOUNT_CODES)?;
            for (k, v) in &snap.account_codes {
                codes.insert(k.as_str(), encode(v)?.as_slice())?;
            }
            let mut identities = txn.open_table(IDENTITIES)?;
            for id in &snap.identities {
                identities.insert(
                    (id.issuer.as_str(), id.subject.as_str()),
                    encode(id)?.as_slice(),
                )?;
            }
            let mut mfa = txn.open_table(super::redb_tables::MFA)?;
            let mut owners = txn.open_table(super::redb_tables::PASSKEY_OWNERS)?;
            for (user_id, record) in &snap.mfa {
                mfa.insert(*user_id, encode(record)?.as_slice())?;
                for pk in &record.passkeys {
                    owners.insert(pk.credential_id.as_slice(), *user_id)?;
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(IdCounter::User.meta_key(), snap.next_user_id)?;
            meta.insert(IdCounter::Outbox.meta_key(), snap.next_outbox_id)?;
        }
        Ok(txn.commit()?)
    }
}

fn text<T: serde::de::DeserializeOwned>(
    row: &tokio_postgres::Row,
    col: usize,
) -> Result<T, StoreError> {
    Ok(serde_json::from_str(row.get::<_, &str>(col))?)
}

fn json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(value)?)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Reads the whole database in one (SERIALIZABLE) snapshot.
    pub fn export(&self) -> Result<Snapshot, StoreError> {
        self.serial(async |tx| {
            let mut snap = Snapshot::default();
            for r in tx
                .query("SELECT id, email, password_hash, created_at, disabled FROM gh_users", &[])
                .await
                ?
            {
                snap.users.push(User {
                    id: r.get::<_, i64>(0) as u64,
                    email: r.get(1),
                    password_hash: r.get(2),
                    created_at: r.get::<_, i64>(3) as u64,
                    disabled: r.get(4),
                });
            }
            for r in tx
                .query(
                    "SELECT token, user_id, email, created_at, last_seen, ip, user_agent FROM gh_sessions",
                    &[],
                )
                .await
                ?
            {
                let Ok(hash) = TokenHash::try_from(r.get::<_, &[u8]>(0)) else {
                    continue;
                };
                snap.sessions.push((
                    hash,
                    Session {
                        user_id: r.get::<_, i64>(1) as u64,
                        email: r.get(2),
                        created_at: r.get::<_, i64>(3) as u64,
                        last_seen: r.get::<_, i64>(4) as u64,
                        ip: r.get(5),
                        user_agent: r.get(6),
                    },
                ));
            }
            for r in tx.query("SELECT email, record FROM gh_otps", &[]).await? {
                snap.otps.push((r.get(0), text(&r, 1)?));
            }
            for r in tx.query("SELECT key, sends FROM gh_otp_sends", &[]).await? {
                snap.otp_sends.push((r.get(0), text(&r, 1)?));
            }
            for r in tx.query("SELECT key, record FROM gh_throttles", &[]).await? {
                snap.throttles.push((r.get(0), text(&r, 1)?));
            }
            for r in tx.query("SELECT name, value FROM gh_secrets", &[]).await? {
                snap.secrets.push((r.get(0), r.get(1)));
            }
            for r in tx
                .query("SELECT record, slot FROM gh_outbox", &[])
                .await
                ?
            {
                // The record keeps the due time from before any lease: a
                // lease held by a stopped server must not delay the mail.
                let mail: QueuedMail = text(&r, 0)?;
                snap.outbox.push((mail, r.get(1)));
            }
            for r in tx.query("SELECT key, record FROM gh_account_codes", &[]).await? {
                snap.account_codes.push((r.get(0), text(&r, 1)?));
            }
            for r in tx.query("SELECT record FROM gh_identities", &[]).await? {
                snap.identities.push(text(&r, 0)?);
            }
            for r in tx.query("SELECT user_id, record FROM gh_mfa", &[]).await? {
                snap.mfa.push((r.get::<_, i64>(0) as u64, text(&r, 1)?));
            }
            let next = async |c: IdCounter| -> Result<u64, StoreError> {
                let sql = format!("SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {}", c.sequence());
                Ok(tx.query_one(&sql, &[]).await?.get::<_, i64>(0) as u64)
            };
            snap.next_user_id = next(IdCounter::User).await?;
            snap.next_outbox_id = next(IdCounter::Outbox).await?;
            Ok(snap)
        })
    }

    /// Writes `snap` into this (empty) database in one transaction.
    pub fn import(&self, snap: &Snapshot) -> Result<(), StoreError> {
        self.serial(async |tx| {
            let holds: i64 = tx
                .query_one(
                    "SELECT (SELECT count(*) FROM gh_users) + (SELECT count(*) FROM gh_sessions) \
                     + (SELECT count(*) FROM gh_outbox)",
                    &[],
                )
                .await
                ?
                .get(0);
            if holds > 0 {
                return Err(StoreError::Setup(
                    "the target database is not empty; migrate only into a new database".into(),
                ));
            }
            for u in &snap.users {
                tx.execute(
                    "INSERT INTO gh_users (id, email, password_hash, created_at, disabled) VALUES ($1, $2, $3, $4, $5)",
                    &[&i(u.id), &u.email, &u.password_hash, &i(u.created_at), &u.disabled],
                )
                .await
                ?;
            }
            for (hash, s) in &snap.sessions {
                tx.execute(
                    "INSERT INTO gh_sessions (token, user_id, email, created_at, last_seen, ip, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&hash.as_slice(), &i(s.user_id), &s.email, &i(s.created_at), &i(s.last_seen), &s.ip, &s.user_agent],
                )
                .await
                ?;
            }
            for (k, v) in &snap.otps {
                tx.execute(
                    "INSERT INTO gh_otps (email, expires_at, record) VALUES ($1, $2, $3)",
                    &[k, &i(v.expires_at), &json(v)?],
                )
                .await
                ?;
            }
            for (k, v) in &snap.otp_sends {
                tx.execute("INSERT INTO gh_otp_sends (key, sends) VALUES ($1, $2)", &[k, &json(v)?])
                    .await
                    ?;
            }
            for (k, v) in &snap.throttles {
                tx.execute("INSERT INTO gh_throttles (key, record) VALUES ($1, $2)", &[k, &json(v)?])
                    .await
                    ?;
            }
            for (k, v) in &snap.secrets {
                // A server started on the empty database may have made one.
                tx.execute(
                    "INSERT INTO gh_secrets (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    &[k, &v.as_slice()],
                )
                .await
                ?;
            }
            for (mail, slot) in &snap.outbox {
                tx.execute(
                    "INSERT INTO gh_outbox (id, to_addr, slot, next_attempt_at, record) VALUES ($1, $2, $3, $4, $5)",
                    &[&i(mail.id), &mail.to, slot, &i(mail.next_attempt_at), &json(mail)?],
                )
                .await
                ?;
            }
            for (k, v) in &snap.account_codes {
                tx.execute(
                    "INSERT INTO gh_account_codes (key, expires_at, record) VALUES ($1, $2, $3)",
                    &[k, &i(v.pending.expires_at), &json(v)?],
                )
                .await
                ?;
            }
            for id in &snap.identities {
                tx.execute(
                    "INSERT INTO gh_identities (issuer, subject, user_id, provider, record) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&id.issuer, &id.subject, &i(id.user_id), &id.provider, &json(id)?],
                )
                .await
                ?;
            }
            for (user_id, record) in &snap.mfa {
                tx.execute(
                    "INSERT INTO gh_mfa (user_id, record) VALUES ($1, $2)",
                    &[&i(*user_id), &json(record)?],
                )
                .await?;
                for pk in &record.passkeys {
                    tx.execute(
                        "INSERT INTO gh_passkey_owners (credential_id, user_id) VALUES ($1, $2)",
                        &[&pk.credential_id, &i(*user_id)],
                    )
                    .await?;
                }
            }
            for (counter, next) in [
                (IdCounter::User, snap.next_user_id),
                (IdCounter::Outbox, snap.next_outbox_id),
            ] {
                let sql = format!("SELECT setval('{}', $1, false)", counter.sequence());
                tx.execute(&sql, &[&i(next.max(1))]).await?;
            }
            Ok(())
        })
    }
}

/// Copies the store of `from` into the (empty) store of `to`; they must be
/// of different kinds. Returns what was copied.
pub fn migrate(
    from: &crate::config::StoreConfig,
    to: &crate::config::StoreConfig,
) -> Result<MigrateCounts, StoreError> {
    use crate::config::StoreBackend;
    let snap = match &from.backend {
        StoreBackend::Redb => {
            if !from.path.exists() {
                return Err(StoreError::Setup(format!(
                    "{} does not exist: nothing to migrate",
                    from.path.display()
                )));
            }
            RedbStore::open(&from.path)?.export()?
        }
        StoreBackend::Postgres(pg) => PostgresStore::open(pg)?.export()?,
    };
    if snap.is_empty() {
        tracing::warn!("the source store holds no users, sessions, codes or mail");
    }
    match (&from.backend, &to.backend) {
        (StoreBackend::Redb, StoreBackend::Postgres(pg)) => {
            PostgresStore::open(pg)?.import(&snap)?
        }
        (StoreBackend::Postgres(_), StoreBackend::Redb) => {
            RedbStore::open(&to.path)?.import(&snap)?
        }
        _ => {
            return Err(StoreError::Setup(
                "both configurations name the same kind of store; migrate copies redb to postgres or back"
                    .into(),
            ));
        }
    }
    let mut counts = snap.counts();
    // Groups and invites (the `AccessStore` half) go through the trait, on
    // the user ids the import kept.
    let (source, target) = (super::open(from)?, super::open(to)?);
    for user in source.list_users()? {
        let groups = source.groups_of(user.id)?;
        if !groups.is_empty() {
            target.set_groups(user.id, &groups)?;
            counts.user_groups += 1;
        }
    }
    for invite in source.invite_list()? {
        target.invite_put(&invite)?;
        counts.invites += 1;
    }
    Ok(counts)
}
