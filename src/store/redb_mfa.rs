//! Second factors in redb: one JSON [`MfaRecord`] per user, the passkey
//! credential-id index, and challenges keyed by the hash of what names
//! them. Each change is one write transaction.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::RedbStore;
use super::redb_tables::{MFA, MFA_CHALLENGES, PASSKEY_OWNERS, decode, encode};
use super::{
    MfaChallenge, MfaChange, MfaRecord, MfaStore, MfaUpdated, StoreError, TokenHash, UnixMillis,
};

fn record_in(txn: &WriteTransaction, user_id: u64) -> Result<MfaRecord, StoreError> {
    match txn.open_table(MFA)?.get(user_id)? {
        Some(v) => decode(v.value()),
        None => Ok(MfaRecord::default()),
    }
}

/// Writes (or, when empty, removes) the record and re-indexes its passkeys.
fn put_in(
    txn: &WriteTransaction,
    user_id: u64,
    before: &MfaRecord,
    after: &MfaRecord,
) -> Result<(), StoreError> {
    let mut owners = txn.open_table(PASSKEY_OWNERS)?;
    for pk in &before.passkeys {
        owners.remove(pk.credential_id.as_slice())?;
    }
    for pk in &after.passkeys {
        owners.insert(pk.credential_id.as_slice(), user_id)?;
    }
    let mut table = txn.open_table(MFA)?;
    if *after == MfaRecord::default() {
        table.remove(user_id)?;
    } else {
        table.insert(user_id, encode(after)?.as_slice())?;
    }
    Ok(())
}

fn drop_expired(txn: &WriteTransaction, now: UnixMillis) -> Result<usize, StoreError> {
    let mut table = txn.open_table(MFA_CHALLENGES)?;
    let mut doomed = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let challenge: MfaChallenge = decode(v.value())?;
        if challenge.expires_at <= now {
            doomed.push(k.value().to_vec());
        }
    }
    for k in &doomed {
        table.remove(k.as_slice())?;
    }
    Ok(doomed.len())
}

impl MfaStore for RedbStore {
    fn mfa_get(&self, user_id: u64) -> Result<MfaRecord, StoreError> {
        let txn = self.db.begin_read()?;
        match txn.open_table(MFA)?.get(user_id)? {
            Some(v) => decode(v.value()),
            None => Ok(MfaRecord::default()),
        }
    }

    fn mfa_update(&self, user_id: u64, change: &MfaChange) -> Result<MfaUpdated, StoreError> {
        let txn = self.write_txn()?;
        let before = record_in(&txn, user_id)?;
        let after = change(&before);
        if let Some(after) = &after {
            put_in(&txn, user_id, &before, after)?;
        }
        txn.commit()?;
        Ok(MfaUpdated { before, after })
    }

    fn mfa_delete(&self, user_id: u64) -> Result<MfaRecord, StoreError> {
        let txn = self.write_txn()?;
        let before = record_in(&txn, user_id)?;
        put_in(&txn, user_id, &before, &MfaRecord::default())?;
        txn.commit()?;
        Ok(before)
    }

    fn passkey_owner(&self, credential_id: &[u8]) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(PASSKEY_OWNERS)?
            .get(credential_id)?
            .map(|v| v.value()))
    }

    fn mfa_user(&self, user_id: u64) -> Result<Option<super::User>, StoreError> {
        let txn = self.db.begin_read()?;
        match txn.open_table(super::redb_tables::USERS)?.get(user_id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn mfa_challenge_put(
        &self,
        key: &TokenHash,
        challenge: &MfaChallenge,
        now: UnixMillis,
        max_pending: u64,
    ) -> Result<bool, StoreError> {
        let txn = self.write_txn()?;
        let full = |txn: &WriteTransaction| -> Result<bool, StoreError> {
            Ok(txn.open_table(MFA_CHALLENGES)?.len()? >= max_pending)
        };
        if full(&txn)? {
            drop_expired(&txn, now)?;
            if full(&txn)? {
                return Ok(false);
            }
        }
        txn.open_table(MFA_CHALLENGES)?
            .insert(key.as_slice(), encode(challenge)?.as_slice())?;
        txn.commit()?;
        Ok(true)
    }

    fn mfa_challenge_take(
        &self,
        key: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<MfaChallenge>, StoreError> {
        let txn = self.write_txn()?;
        let taken = txn
            .open_table(MFA_CHALLENGES)?
            .remove(key.as_slice())?
            .map(|v| decode::<MfaChallenge>(v.value()))
            .transpose()?;
        txn.commit()?;
        Ok(taken.filter(|c| c.expires_at > now))
    }

    fn mfa_challenge_peek(
        &self,
        key: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<MfaChallenge>, StoreError> {
        let txn = self.db.begin_read()?;
        let found = txn
            .open_table(MFA_CHALLENGES)?
            .get(key.as_slice())?
            .map(|v| decode::<MfaChallenge>(v.value()))
            .transpose()?;
        Ok(found.filter(|c| c.expires_at > now))
    }

    fn mfa_sweep(&self, now: UnixMillis) -> Result<usize, StoreError> {
        let txn = self.write_txn()?;
        let n = drop_expired(&txn, now)?;
        txn.commit()?;
        Ok(n)
    }
}
