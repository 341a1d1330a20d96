//! Every redb table of the store in one place, with the value encoding
//! (JSON) and the conversion of redb's errors. The leaf of the redb
//! backend: the store, its outbox, account and OIDC halves, the backup and
//! the migration all name tables from here and nothing else.

use redb::{MultimapTableDefinition, ReadableTable, TableDefinition, WriteTransaction};

use super::StoreError;
use super::ids::IdCounter;

/// Names of every table, for the backup's completeness check.
pub(super) const TABLE_NAMES: [&str; 20] = [
    "meta",
    "users",
    "users_by_email",
    "sessions",
    "user_sessions",
    "otps",
    "otp_sends",
    "throttles",
    "secrets",
    "outbox",
    "outbox_due",
    "outbox_by_email",
    "account_codes",
    "oidc_states",
    "identities",
    "user_groups",
    "invites",
    "mfa",
    "passkey_owners",
    "mfa_challenges",
];

/// Small counters: `schema_version` and the id counters (see [`next_id_in`]).
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// user id → JSON [`User`].
pub(super) const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
/// normalised email → user id.
pub(super) const USERS_BY_EMAIL: TableDefinition<&str, u64> =
    TableDefinition::new("users_by_email");
/// token hash → JSON [`Session`].
pub(super) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// user id → token hashes of that user's sessions.
pub(super) const USER_SESSIONS: MultimapTableDefinition<u64, &[u8]> =
    MultimapTableDefinition::new("user_sessions");
/// email → JSON [`PendingOtp`].
pub(super) const OTPS: TableDefinition<&str, &[u8]> = TableDefinition::new("otps");
/// email → JSON list of send times inside the rolling window.
pub(super) const OTP_SENDS: TableDefinition<&str, &[u8]> = TableDefinition::new("otp_sends");
/// throttle key → JSON [`ThrottleRecord`].
pub(super) const THROTTLES: TableDefinition<&str, &[u8]> = TableDefinition::new("throttles");
/// name → 32-byte server secret.
pub(super) const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");

/// outbox id → JSON [`QueuedMail`].
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// (next attempt time, outbox id) → (): the worker's schedule.
pub(super) const OUTBOX_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("outbox_due");
/// normalised email → id of its unsent message.
pub(super) const OUTBOX_BY_EMAIL: TableDefinition<&str, u64> =
    TableDefinition::new("outbox_by_email");

/// `CodePurpose::key` → JSON [`AccountCode`].
pub(super) const ACCOUNT_CODES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("account_codes");

/// SHA-256 of `state` → JSON [`OidcState`].
pub(super) const OIDC_STATES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("oidc_states");
/// (issuer, subject) → JSON [`Identity`].
pub(super) const IDENTITIES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("identities");

/// user id → JSON list of group names (issue 20).
pub(super) const USER_GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("user_groups");
/// normalised email → JSON [`Invite`].
pub(super) const INVITES: TableDefinition<&str, &[u8]> = TableDefinition::new("invites");

/// User id → JSON [`MfaRecord`] (issue 19).
pub(super) const MFA: TableDefinition<u64, &[u8]> = TableDefinition::new("mfa");
/// Passkey credential id → user id.
pub(super) const PASSKEY_OWNERS: TableDefinition<&[u8], u64> =
    TableDefinition::new("passkey_owners");
/// SHA-256 of the cookie or id naming it → JSON [`MfaChallenge`].
pub(super) const MFA_CHALLENGES: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("mfa_challenges");

/// Creates every table but `meta`, which the caller holds open to check
/// the schema version (read transactions cannot open missing tables).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(USERS)?;
    txn.open_table(USERS_BY_EMAIL)?;
    txn.open_table(SESSIONS)?;
    txn.open_multimap_table(USER_SESSIONS)?;
    txn.open_table(OTPS)?;
    txn.open_table(OTP_SENDS)?;
    txn.open_table(THROTTLES)?;
    txn.open_table(SECRETS)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(OUTBOX_DUE)?;
    txn.open_table(OUTBOX_BY_EMAIL)?;
    txn.open_table(ACCOUNT_CODES)?;
    txn.open_table(OIDC_STATES)?;
    txn.open_table(IDENTITIES)?;
    txn.open_table(USER_GROUPS)?;
    txn.open_table(INVITES)?;
    txn.open_table(MFA)?;
    txn.open_table(PASSKEY_OWNERS)?;
    txn.open_table(MFA_CHALLENGES)?;
    Ok(())
}

/// Takes the next id of `counter` inside the caller's transaction (the
/// first is 1).
pub(super) fn next_id_in(txn: &WriteTransaction, counter: IdCounter) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let id = meta.get(counter.meta_key())?.map_or(1, |v| v.value());
    meta.insert(counter.meta_key(), id + 1)?;
    Ok(id)
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(serde_json::from_slice(bytes)?)
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(value)?)
}

/// redb reports each operation's failure as its own type; every one of them
/// is a database failure to the store, so `?` converts them all.
macro_rules! redb_errors_are_database_errors {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for StoreError {
            fn from(e: $error) -> StoreError {
                StoreError::Database(e.into())
            }
        }
    )*};
}

redb_errors_are_database_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);
