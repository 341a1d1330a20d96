//! The redb half of [`AccessStore`]: user groups and sign-up invites, one
//! table each, JSON values like the rest of the redb store.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::access::{AccessStore, Invite};
use super::redb_store::{db_err, decode, encode};
use super::{RedbStore, StoreError};

/// user id → JSON list of group names.
pub(super) const USER_GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("user_groups");
/// normalised email → JSON [`Invite`].
pub(super) const INVITES: TableDefinition<&str, &[u8]> = TableDefinition::new("invites");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(USER_GROUPS).map_err(db_err)?;
    txn.open_table(INVITES).map_err(db_err)?;
    Ok(())
}

impl AccessStore for RedbStore {
    fn groups_of(&self, user_id: u64) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(USER_GROUPS).map_err(db_err)?;
        match table.get(user_id).map_err(db_err)? {
            Some(v) => decode(v.value()),
            None => Ok(Vec::new()),
        }
    }

    fn set_groups(&self, user_id: u64, groups: &[String]) -> Result<(), StoreError> {
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(USER_GROUPS).map_err(db_err)?;
            if groups.is_empty() {
                table.remove(user_id).map_err(db_err)?;
            } else {
                table
                    .insert(user_id, encode(&groups)?.as_slice())
                    .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    fn invite_put(&self, invite: &Invite) -> Result<(), StoreError> {
        let txn = self.write_txn()?;
        {
            let mut table = txn.open_table(INVITES).map_err(db_err)?;
            table
                .insert(invite.email.as_str(), encode(invite)?.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn invite_get(&self, email: &str) -> Result<Option<Invite>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(INVITES).map_err(db_err)?;
        table
            .get(email)
            .map_err(db_err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    fn invite_list(&self) -> Result<Vec<Invite>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(INVITES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (_, v) = entry.map_err(db_err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn invite_delete(&self, email: &str) -> Result<bool, StoreError> {
        let txn = self.write_txn()?;
        let removed = {
            let mut table = txn.open_table(INVITES).map_err(db_err)?;
            table.remove(email).map_err(db_err)?.is_some()
        };
        txn.commit().map_err(db_err)?;
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
