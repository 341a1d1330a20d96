//! The redb half of [`AccessStore`]: user groups and sign-up invites, one
//! table each, JSON values like the rest of the redb store.

use redb::{ReadableDatabase, ReadableTable};

use super::access::{AccessStore, Invite};
use super::redb_tables::{INVITES, USER_GROUPS, decode, encode};
use super::{RedbStore, StoreError};

impl AccessStore for RedbStore {
    fn groups_of(&self, user_id: u64) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USER_GROUPS)?;
        match table.get(user_id)? {
            Some(v) => decode(v.value()),
            None => Ok(Vec::new()),
        }
    }

    fn set_groups(&self, user_id: u64, groups: &[String]) -> Result<(), StoreError> {
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(USER_GROUPS)?;
            if groups.is_empty() {
                table.remove(user_id)?;
            } else {
                table.insert(user_id, encode(&groups)?.as_slice())?;
            }
        }
        Ok(txn.commit()?)
    }

    fn invite_put(&self, invite: &Invite) -> Result<(), StoreError> {
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(INVITES)?;
            table.insert(invite.email.as_str(), encode(invite)?.as_slice())?;
        }
        Ok(txn.commit()?)
    }

    fn invite_get(&self, email: &str) -> Result<Option<Invite>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INVITES)?;
        table.get(email)?.map(|v| decode(v.value())).transpose()
    }

    fn invite_list(&self) -> Result<Vec<Invite>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INVITES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn invite_delete(&self, email: &str) -> Result<bool, StoreError> {
        let txn = self.write_txn()?;
        let removed = {
            let mut table = txn.open_table(INVITES)?;
            table.remove(email)?.is_some()
        };
        txn.commit()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_invites_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("a.redb")).unwrap();
        assert!(store.groups_of(7).unwrap().is_empty());
        store.set_groups(7, &["ops".into(), "wiki".into()]).unwrap();
        assert_eq!(store.groups_of(7).unwrap(), ["ops", "wiki"]);
        store.set_groups(7, &[]).unwrap();
        assert!(store.groups_of(7).unwrap().is_empty());
        let invite = Invite {
            email: "a@b.co".into(),
            created_at: 1,
            expires_at: 10,
        };
        store.invite_put(&invite).unwrap();
        assert_eq!(store.invite_get("a@b.co").unwrap(), Some(invite.clone()));
        assert!(invite.is_live(9) && !invite.is_live(10));
        assert_eq!(store.invite_list().unwrap().len(), 1);
        assert!(store.invite_delete("a@b.co").unwrap());
        assert!(!store.invite_delete("a@b.co").unwrap());
        assert!(store.invite_get("a@b.co").unwrap().is_none());
    }
}
