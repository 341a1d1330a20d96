//! OpenID Connect state in redb: started sign-ins (keyed by the hash of
//! their `state`, single use) and the identities linking a provider's
//! (issuer, subject) to an account.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::redb_store::{RedbStore, insert_user_in};
use super::redb_tables::{IDENTITIES, OIDC_STATES, USERS, USERS_BY_EMAIL, decode, encode};
use super::{
    Identity, OidcClaims, OidcLink, OidcState, OidcStore, StoreError, TokenHash, UnixMillis, User,
};

/// The password hash of an account created through OIDC: not a PHC string,
/// so no password ever matches it (sign-in treats it like an unknown email).
pub const NO_PASSWORD: &str = "";

/// Removes the user's identities (all, or those of one provider).
pub(super) fn unlink_in(
    txn: &WriteTransaction,
    user_id: u64,
    provider: Option<&str>,
) -> Result<usize, StoreError> {
    let mut table = txn.open_table(IDENTITIES)?;
    let mut doomed = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let identity: Identity = decode(v.value())?;
        if identity.user_id == user_id && provider.is_none_or(|p| p == identity.provider) {
            let (iss, sub) = k.value();
            doomed.push((iss.to_string(), sub.to_string()));
        }
    }
    for (iss, sub) in &doomed {
        table.remove((iss.as_str(), sub.as_str()))?;
    }
    Ok(doomed.len())
}

fn user_by_id(txn: &WriteTransaction, id: u64) -> Result<Option<User>, StoreError> {
    match txn.open_table(USERS)?.get(id)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn link_in(
    txn: &WriteTransaction,
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
    txn.open_table(IDENTITIES)?.insert(
        (claims.issuer.as_str(), claims.subject.as_str()),
        encode(&identity)?.as_slice(),
    )?;
    Ok(())
}

impl OidcStore for RedbStore {
    fn oidc_state_insert(
        &self,
        key: &TokenHash,
        state: &OidcState,
        now: UnixMillis,
        max_pending: u64,
    ) -> Result<bool, StoreError> {
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(OIDC_STATES)?;
            if table.len()? >= max_pending {
                let mut expired = Vec::new();
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    if decode::<OidcState>(v.value())?.expires_at <= now {
                        expired.push(k.value().to_vec());
                    }
                }
                for k in &expired {
                    table.remove(k.as_slice())?;
                }
                if table.len()? >= max_pending {
                    return Ok(false);
                }
            }
            table.insert(key.as_slice(), encode(state)?.as_slice())?;
        }
        txn.commit()?;
        Ok(true)
    }

    fn oidc_state_take(&self, key: &TokenHash) -> Result<Option<OidcState>, StoreError> {
        let txn = self.write_txn()?;
        let taken = match txn.open_table(OIDC_STATES)?.remove(key.as_slice())? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        if taken.is_some() {
            txn.commit()?;
        }
        Ok(taken)
    }

    fn oidc_sign_in(
        &self,
        claims: &OidcClaims,
        create: bool,
        now: UnixMillis,
    ) -> Result<OidcLink, StoreError> {
        let txn = self.write_txn()?;
        let linked: Option<Identity> = match txn
            .open_table(IDENTITIES)?
            .get((claims.issuer.as_str(), claims.subject.as_str()))?
        {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        if let Some(identity) = linked {
            match user_by_id(&txn, identity.user_id)? {
                Some(user) if user.disabled => return Ok(OidcLink::Disabled),
                Some(user) => return Ok(OidcLink::Existing(user)),
                // A link left behind by a deleted account: forget it and
                // treat this as a first sign-in.
                None => {
                    txn.open_table(IDENTITIES)?
                        .remove((claims.issuer.as_str(), claims.subject.as_str()))?;
                }
            }
        }
        let Some(email) = claims.email.as_deref().filter(|_| claims.email_verified) else {
            txn.commit()?;
            return Ok(OidcLink::Unverified);
        };
        let by_email = txn
            .open_table(USERS_BY_EMAIL)?
            .get(email)?
            .map(|v| v.value());
        let outcome = match by_email
            .map(|id| user_by_id(&txn, id))
            .transpose()?
            .flatten()
        {
            Some(user) if user.disabled => OidcLink::Disabled,
            Some(user) => {
                link_in(&txn, claims, &user, now)?;
                OidcLink::Linked(user)
            }
            None if create => {
                let user = insert_user_in(&txn, email, NO_PASSWORD, now)?;
                link_in(&txn, claims, &user, now)?;
                OidcLink::Created(user)
            }
            None => OidcLink::NoAccount,
        };
        txn.commit()?;
        Ok(outcome)
    }

    fn identities_of(&self, user_id: u64) -> Result<Vec<Identity>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IDENTITIES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            let identity: Identity = decode(v.value())?;
            if identity.user_id == user_id {
                out.push(identity);
            }
        }
        Ok(out)
    }

    fn unlink_identity(&self, user_id: u64, provider: &str) -> Result<usize, StoreError> {
        let txn = self.write_txn()?;
        let n = unlink_in(&txn, user_id, Some(provider))?;
        txn.commit()?;
        Ok(n)
    }

    fn oidc_sweep(&self, now: UnixMillis) -> Result<usize, StoreError> {
        let expired: Vec<Vec<u8>> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(OIDC_STATES)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                if decode::<OidcState>(v.value())?.expires_at <= now {
                    out.push(k.value().to_vec());
                }
            }
            out
        };
        if expired.is_empty() {
            return Ok(0);
        }
        let txn = self.write_txn()?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(OIDC_STATES)?;
            for k in &expired {
                if table.remove(k.as_slice())?.is_some() {
                    removed += 1;
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::traits::*;

    fn temp_store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("t.redb")).unwrap();
        (dir, store)
    }

    fn state(expires_at: u64) -> OidcState {
        OidcState {
            provider: "op".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            binding_hash: [7; 32],
            callback_path: None,
            expires_at,
        }
    }

    fn claims(sub: &str, email: &str, verified: bool) -> OidcClaims {
        OidcClaims {
            provider: "op".into(),
            issuer: "https://op.example".into(),
            subject: sub.into(),
            email: Some(email.into()),
            email_verified: verified,
        }
    }

    #[test]
    fn states_are_single_use_bounded_and_swept() {
        let (_d, store) = temp_store();
        assert!(
            store
                .oidc_state_insert(&[1; 32], &state(100), 0, 2)
                .unwrap()
        );
        assert!(
            store
                .oidc_state_insert(&[2; 32], &state(1000), 0, 2)
                .unwrap()
        );
        // Full: nothing has expired at t=50.
        assert!(
            !store
                .oidc_state_insert(&[3; 32], &state(1000), 50, 2)
                .unwrap()
        );
        // At t=200 the first has expired and makes room.
        assert!(
            store
                .oidc_state_insert(&[3; 32], &state(1000), 200, 2)
                .unwrap()
        );
        assert!(store.oidc_state_take(&[1; 32]).unwrap().is_none());
        assert_eq!(store.oidc_state_take(&[2; 32]).unwrap().unwrap().nonce, "n");
        assert!(store.oidc_state_take(&[2; 32]).unwrap().is_none());
        assert_eq!(store.oidc_sweep(2000).unwrap(), 1);
        assert!(store.oidc_state_take(&[3; 32]).unwrap().is_none());
    }

    #[test]
    fn link_by_verified_email_create_and_find_by_subject() {
        let (_d, store) = temp_store();
        let alice = store
            .add_user("alice@example.com", "$argon2id$x", 1)
            .unwrap()
            .unwrap();
        // Unverified email never links or creates.
        assert_eq!(
            store
                .oidc_sign_in(&claims("a", "alice@example.com", false), true, 2)
                .unwrap(),
            OidcLink::Unverified
        );
        assert!(store.identities_of(alice.id).unwrap().is_empty());
        // Verified: linked to the password account.
        assert_eq!(
            store
                .oidc_sign_in(&claims("a", "alice@example.com", true), true, 3)
                .unwrap(),
            OidcLink::Linked(alice.clone())
        );
        // Later the provider's email changes: found by subject.
        assert_eq!(
            store
                .oidc_sign_in(&claims("a", "other@example.org", false), false, 4)
                .unwrap(),
            OidcLink::Existing(alice.clone())
        );
        // A new subject with a new email: created without a password, or
        // refused when creation is off.
        assert_eq!(
            store
                .oidc_sign_in(&claims("b", "bob@example.com", true), false, 5)
                .unwrap(),
            OidcLink::NoAccount
        );
        let OidcLink::Created(bob) = store
            .oidc_sign_in(&claims("b", "bob@example.com", true), true, 6)
            .unwrap()
        else {
            panic!("bob not created");
        };
        assert_eq!(bob.password_hash, NO_PASSWORD);
        assert_eq!(store.identities_of(bob.id).unwrap().len(), 1);
        assert_eq!(store.unlink_identity(bob.id, "nope").unwrap(), 0);
        assert_eq!(store.unlink_identity(bob.id, "op").unwrap(), 1);
        assert!(store.identities_of(bob.id).unwrap().is_empty());
        // Deleting an account drops its links.
        store.delete_user("alice@example.com").unwrap().unwrap();
        assert!(store.identities_of(alice.id).unwrap().is_empty());
        // A disabled account is refused.
        store.set_user_disabled("bob@example.com", true).unwrap();
        assert_eq!(
            store
                .oidc_sign_in(&claims("b", "bob@example.com", true), true, 7)
                .unwrap(),
            OidcLink::Disabled
        );
    }
}
