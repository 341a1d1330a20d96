//! The PostgreSQL half of [`AccessStore`]: `gh_user_groups` and
//! `gh_invites` (schema version 3), each change one transaction.

use super::access::{AccessStore, Invite};
use super::{PostgresStore, StoreError};

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn invite_of(row: &tokio_postgres::Row) -> Invite {
    Invite {
        email: row.get(0),
        created_at: row.get::<_, i64>(1) as u64,
        expires_at: row.get::<_, i64>(2) as u64,
    }
}

impl AccessStore for PostgresStore {
    fn groups_of(&self, user_id: u64) -> Result<Vec<String>, StoreError> {
        self.read(async |client| {
            match client
                .query_opt(
                    "SELECT groups FROM gh_user_groups WHERE user_id = $1",
                    &[&i(user_id)],
                )
                .await?
            {
                Some(r) => Ok(serde_json::from_str(r.get::<_, &str>(0))?),
                None => Ok(Vec::new()),
            }
        })
    }

    fn set_groups(&self, user_id: u64, groups: &[String]) -> Result<(), StoreError> {
        let record = serde_json::to_string(groups)?;
        self.serial(async |tx| {
            if groups.is_empty() {
                tx.execute(
                    "DELETE FROM gh_user_groups WHERE user_id = $1",
                    &[&i(user_id)],
                )
                .await?;
            } else {
                tx.execute(
                    "INSERT INTO gh_user_groups (user_id, groups) VALUES ($1, $2) \
                     ON CONFLICT (user_id) DO UPDATE SET groups = EXCLUDED.groups",
                    &[&i(user_id), &record],
                )
                .await?;
            }
            // Other instances hold the user's sessions in their caches with
            // the old groups: announce the sessions like revocations (they
            // are not deleted), so every cache reloads them with the new ones.
            tx.query(
                "WITH r AS (INSERT INTO gh_revocations (token) \
                 SELECT token FROM gh_sessions WHERE user_id = $1 RETURNING seq, token) \
                 SELECT pg_notify('gatehouse_revocations', seq::text || ':' || encode(token, 'hex')) FROM r",
                &[&i(user_id)],
            )
            .await?;
            Ok(())
        })
    }

    fn invite_put(&self, invite: &Invite) -> Result<(), StoreError> {
        self.serial(async |tx| {
            tx.execute(
                "INSERT INTO gh_invites (email, created_at, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (email) DO UPDATE SET created_at = EXCLUDED.created_at, \
                 expires_at = EXCLUDED.expires_at",
                &[&invite.email, &i(invite.created_at), &i(invite.expires_at)],
            )
            .await?;
            Ok(())
        })
    }

    fn invite_get(&self, email: &str) -> Result<Option<Invite>, StoreError> {
        self.read(async |client| {
            Ok(client
                .query_opt(
                    "SELECT email, created_at, expires_at FROM gh_invites WHERE email = $1",
                    &[&email],
                )
                .await?
                .as_ref()
                .map(invite_of))
        })
    }

    fn invite_list(&self) -> Result<Vec<Invite>, StoreError> {
        self.read(async |client| {
            Ok(client
                .query(
                    "SELECT email, created_at, expires_at FROM gh_invites ORDER BY email",
                    &[],
                )
                .await?
                .iter()
                .map(invite_of)
                .collect())
        })
    }

    fn invite_delete(&self, email: &str) -> Result<bool, StoreError> {
        self.serial(async |tx| {
            let n = tx
                .execute("DELETE FROM gh_invites WHERE email = $1", &[&email])
                .await?;
            Ok(n > 0)
        })
    }
}
