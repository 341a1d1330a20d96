//! The PostgreSQL half of second factors: one JSON record per user, the
//! passkey credential-id index and single-use challenges, each change one
//! SERIALIZABLE transaction like the rest of [`PostgresStore`] (so two
//! instances cannot both accept one TOTP step or recovery code).

use super::{
    MfaChallenge, MfaChange, MfaRecord, MfaStore, MfaUpdated, PostgresStore, StoreError, TokenHash,
    UnixMillis,
};

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn record_in(
    tx: &tokio_postgres::Transaction<'_>,
    user_id: u64,
) -> Result<MfaRecord, StoreError> {
    match tx
        .query_opt(
            "SELECT record FROM gh_mfa WHERE user_id = $1",
            &[&i(user_id)],
        )
        .await?
    {
        Some(r) => Ok(serde_json::from_str(r.get::<_, &str>(0))?),
        None => Ok(MfaRecord::default()),
    }
}

async fn put_in(
    tx: &tokio_postgres::Transaction<'_>,
    user_id: u64,
    after: &MfaRecord,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM gh_passkey_owners WHERE user_id = $1",
        &[&i(user_id)],
    )
    .await?;
    for pk in &after.passkeys {
        tx.execute(
            "INSERT INTO gh_passkey_owners (credential_id, user_id) VALUES ($1, $2) \
             ON CONFLICT (credential_id) DO UPDATE SET user_id = EXCLUDED.user_id",
            &[&pk.credential_id, &i(user_id)],
        )
        .await?;
    }
    if *after == MfaRecord::default() {
        tx.execute("DELETE FROM gh_mfa WHERE user_id = $1", &[&i(user_id)])
            .await?;
    } else {
        tx.execute(
            "INSERT INTO gh_mfa (user_id, record) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET record = EXCLUDED.record",
            &[&i(user_id), &serde_json::to_string(after)?],
        )
        .await?;
    }
    Ok(())
}

impl PostgresStore {
    /// The challenge `statement` returns for `key` (`SELECT` to look,
    /// `DELETE … RETURNING` to use it up), if it has not expired by `now`.
    fn challenge_record(
        &self,
        statement: &str,
        key: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<MfaChallenge>, StoreError> {
        let found =
            self.serial(
                async |tx| match tx.query_opt(statement, &[&key.as_slice()]).await? {
                    Some(r) => Ok(Some(serde_json::from_str::<MfaChallenge>(
                        r.get::<_, &str>(0),
                    )?)),
                    None => Ok(None),
                },
            )?;
        Ok(found.filter(|c| c.expires_at > now))
    }
}

impl MfaStore for PostgresStore {
    fn mfa_get(&self, user_id: u64) -> Result<MfaRecord, StoreError> {
        self.serial(async |tx| record_in(tx, user_id).await)
    }

    fn mfa_update(&self, user_id: u64, change: &MfaChange) -> Result<MfaUpdated, StoreError> {
        self.serial(async |tx| {
            let before = record_in(tx, user_id).await?;
            let after = change(&before);
            if let Some(after) = &after {
                put_in(tx, user_id, after).await?;
            }
            Ok(MfaUpdated { before, after })
        })
    }

    fn mfa_delete(&self, user_id: u64) -> Result<MfaRecord, StoreError> {
        self.serial(async |tx| {
            let before = record_in(tx, user_id).await?;
            put_in(tx, user_id, &MfaRecord::default()).await?;
            Ok(before)
        })
    }

    fn passkey_owner(&self, credential_id: &[u8]) -> Result<Option<u64>, StoreError> {
        self.serial(async |tx| {
            Ok(tx
                .query_opt(
                    "SELECT user_id FROM gh_passkey_owners WHERE credential_id = $1",
                    &[&credential_id],
                )
                .await?
                .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn mfa_user(&self, user_id: u64) -> Result<Option<super::User>, StoreError> {
        self.serial(async |tx| super::postgres::user_by_id_in(tx, user_id).await)
    }

    fn mfa_challenge_put(
        &self,
        key: &TokenHash,
        challenge: &MfaChallenge,
        now: UnixMillis,
        max_pending: u64,
    ) -> Result<bool, StoreError> {
        let record = serde_json::to_string(challenge)?;
        self.serial(async |tx| {
            let count = async || -> Result<u64, StoreError> {
                let n: i64 = tx
                    .query_one("SELECT count(*) FROM gh_mfa_challenges", &[])
                    .await?
                    .get(0);
                Ok(n as u64)
            };
            if count().await? >= max_pending {
                tx.execute(
                    "DELETE FROM gh_mfa_challenges WHERE expires_at <= $1",
                    &[&i(now)],
                )
                .await?;
                if count().await? >= max_pending {
                    return Ok(false);
                }
            }
            tx.execute(
                "INSERT INTO gh_mfa_challenges (key, expires_at, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at, \
                 record = EXCLUDED.record",
                &[&key.as_slice(), &i(challenge.expires_at), &record],
            )
            .await?;
            Ok(true)
        })
    }

    fn mfa_challenge_take(
        &self,
        key: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<MfaChallenge>, StoreError> {
        self.challenge_record(
            "DELETE FROM gh_mfa_challenges WHERE key = $1 RETURNING record",
            key,
            now,
        )
    }

    fn mfa_challenge_peek(
        &self,
        key: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<MfaChallenge>, StoreError> {
        self.challenge_record(
            "SELECT record FROM gh_mfa_challenges WHERE key = $1",
            key,
            now,
        )
    }

    fn mfa_sweep(&self, now: UnixMillis) -> Result<usize, StoreError> {
        self.serial(async |tx| {
            Ok(tx
                .execute(
                    "DELETE FROM gh_mfa_challenges WHERE expires_at <= $1",
                    &[&i(now)],
                )
                .await? as usize)
        })
    }
}
