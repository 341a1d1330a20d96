//! The PostgreSQL half of OpenID Connect sign-in: started sign-ins (taken
//! once) and identities linked to accounts, each change one SERIALIZABLE
//! transaction like the rest of [`PostgresStore`].

use super::{
    Identity, OidcClaims, OidcLink, OidcState, OidcStore, PostgresStore, StoreError, TokenHash,
    UnixMillis, User,
};

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn user_by_id(
    tx: &tokio_postgres::Transaction<'_>,
    id: u64,
) -> Result<Option<User>, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT id, email, password_hash, created_at, disabled FROM gh_users WHERE id = $1",
            &[&i(id)],
        )
        .await?
        .map(|r| User {
            id: r.get::<_, i64>(0) as u64,
            email: r.get(1),
            password_hash: r.get(2),
            created_at: r.get::<_, i64>(3) as u64,
            disabled: r.get(4),
        }))
}

async fn link(
    tx: &tokio_postgres::Transaction<'_>,
    claims: &OidcClaims,
    user: &User,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let identity = Identity {
        user_id: user.id,
        provider: claims.provider.clone(),
        issuer: claims.issuer.clone(),
        subject: claims.subject.clone(),
        email: claims.email.clone().unwrap_or_default(),
        linked_at: now,
    };
    tx.execute(
        "INSERT INTO gh_identities (issuer, subject, user_id, provider, record) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (issuer, subject) DO UPDATE SET \
         user_id = EXCLUDED.user_id, provider = EXCLUDED.provider, record = EXCLUDED.record",
        &[
            &identity.issuer,
            &identity.subject,
            &i(user.id),
            &identity.provider,
            &serde_json::to_string(&identity)?,
        ],
    )
    .await?;
    Ok(())
}

impl OidcStore for PostgresStore {
    fn oidc_state_insert(
        &self,
        key: &TokenHash,
        state: &OidcState,
        now: UnixMillis,
        max_pending: u64,
    ) -> Result<bool, StoreError> {
        let record = serde_json::to_string(state)?;
        self.serial(async |tx| {
            let count = async || -> Result<u64, StoreError> {
                let n: i64 = tx
                    .query_one("SELECT count(*) FROM gh_oidc_states", &[])
                    .await?
                    .get(0);
                Ok(n as u64)
            };
            if count().await? >= max_pending {
                tx.execute(
                    "DELETE FROM gh_oidc_states WHERE expires_at <= $1",
                    &[&i(now)],
                )
                .await?;
                if count().await? >= max_pending {
                    return Ok(false);
                }
            }
            tx.execute(
                "INSERT INTO gh_oidc_states (key, expires_at, record) VALUES ($1, $2, $3)",
                &[&key.as_slice(), &i(state.expires_at), &record],
            )
            .await?;
            Ok(true)
        })
    }

    fn oidc_state_take(&self, key: &TokenHash) -> Result<Option<OidcState>, StoreError> {
        self.serial(async |tx| {
            match tx
                .query_opt(
                    "DELETE FROM gh_oidc_states WHERE key = $1 RETURNING record",
                    &[&key.as_slice()],
                )
                .await?
            {
                Some(r) => Ok(Some(serde_json::from_str(r.get::<_, &str>(0))?)),
                None => Ok(None),
            }
        })
    }

    fn oidc_sign_in(
        &self,
        claims: &OidcClaims,
        create: bool,
        now: UnixMillis,
    ) -> Result<OidcLink, StoreError> {
        self.serial(async |tx| {
            let linked = tx
                .query_opt(
                    "SELECT user_id FROM gh_identities WHERE issuer = $1 AND subject = $2",
                    &[&claims.issuer, &claims.subject],
                )
                .await?
                .map(|r| r.get::<_, i64>(0) as u64);
            if let Some(user_id) = linked {
                match user_by_id(tx, user_id).await? {
                    Some(user) if user.disabled => return Ok(OidcLink::Disabled),
                    Some(user) => return Ok(OidcLink::Existing(user)),
                    // A link left behind by a deleted account.
                    None => {
                        tx.execute(
                            "DELETE FROM gh_identities WHERE issuer = $1 AND subject = $2",
                            &[&claims.issuer, &claims.subject],
                        )
                        .await?;
                    }
                }
            }
            let Some(email) = claims.email.as_deref().filter(|_| claims.email_verified) else {
                return Ok(OidcLink::Unverified);
            };
            let by_email = tx
                .query_opt("SELECT id FROM gh_users WHERE email = $1", &[&email])
                .await?
                .map(|r| r.get::<_, i64>(0) as u64);
            let user = match by_email {
                Some(id) => user_by_id(tx, id).await?,
                None => None,
            };
            Ok(match user {
                Some(user) if user.disabled => OidcLink::Disabled,
                Some(user) => {
                    link(tx, claims, &user, now).await?;
                    OidcLink::Linked(user)
                }
                None if create => {
                    let user =
                        super::postgres::insert_user_in(tx, email, super::NO_PASSWORD, now).await?;
                    link(tx, claims, &user, now).await?;
                    OidcLink::Created(user)
                }
                None => OidcLink::NoAccount,
            })
        })
    }

    fn identities_of(&self, user_id: u64) -> Result<Vec<Identity>, StoreError> {
        self.serial(async |tx| {
            let rows = tx
                .query(
                    "SELECT record FROM gh_identities WHERE user_id = $1 ORDER BY issuer, subject",
                    &[&i(user_id)],
                )
                .await?;
            rows.iter()
                .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
                .collect()
        })
    }

    fn unlink_identity(&self, user_id: u64, provider: &str) -> Result<usize, StoreError> {
        self.serial(async |tx| {
            Ok(tx
                .execute(
                    "DELETE FROM gh_identities WHERE user_id = $1 AND provider = $2",
                    &[&i(user_id), &provider],
                )
                .await? as usize)
        })
    }

    fn oidc_sweep(&self, now: UnixMillis) -> Result<usize, StoreError> {
        self.serial(async |tx| {
            Ok(tx
                .execute(
                    "DELETE FROM gh_oidc_states WHERE expires_at <= $1",
                    &[&i(now)],
                )
                .await? as usize)
        })
    }
}
