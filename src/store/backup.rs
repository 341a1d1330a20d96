//! Restoring the redb store file from a backup (see `redb_snapshot` for
//! how a backup is written).
//!
//! A restore validates the backup by opening it as a store, then renames it
//! over the configured path; it runs only while no process holds the store.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTableMetadata};

use super::redb_snapshot::{file_err, sibling, sync_parent};
use super::redb_store::RedbStore;
use super::redb_tables::{SESSIONS, USERS};
use super::{BackupCounts, StoreError};

/// Replaces the store at `store_path` with the backup at `backup`. Fails if
/// another process holds the store (a running server), if the backup is not
/// a readable store, or if its schema is newer than this binary. Keeps the
/// owner and mode of the file it replaces, so a root-run restore does not
/// lock out the service user.
pub fn restore(backup: &Path, store_path: &Path) -> Result<BackupCounts, StoreError> {
    // Opening the live store takes redb's lock: this fails while a server runs.
    drop(RedbStore::open(store_path)?);
    let previous = std::fs::metadata(store_path).map_err(file_err(store_path))?;

    let staged = sibling(store_path, "restore");
    let _ = std::fs::remove_file(&staged);
    {
        let mut from = File::open(backup).map_err(file_err(backup))?;
        let mut to = crate::private_file::create_new(&staged).map_err(file_err(&staged))?;
        std::io::copy(&mut from, &mut to).map_err(file_err(&staged))?;
        to.sync_all().map_err(file_err(&staged))?;
    }
    let result = validate_and_swap(&staged, store_path, &previous);
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    result
}

fn validate_and_swap(
    staged: &Path,
    store_path: &Path,
    previous: &std::fs::Metadata,
) -> Result<BackupCounts, StoreError> {
    let counts = {
        let opened = RedbStore::open(staged)?;
        let txn = opened.db.begin_read()?;
        BackupCounts {
            users: txn.open_table(USERS)?.len()?,
            sessions: txn.open_table(SESSIONS)?.len()?,
        }
    };
    std::fs::set_permissions(
        staged,
        std::os::unix::fs::PermissionsExt::from_mode(previous.mode() & 0o7777),
    )
    .map_err(file_err(staged))?;
    // Only root may give a file away; anyone else already owns what they write.
    if let Err(e) = std::os::unix::fs::chown(staged, Some(previous.uid()), Some(previous.gid()))
        && e.kind() != std::io::ErrorKind::PermissionDenied
    {
        return Err(file_err(staged)(e));
    }
    std::fs::rename(staged, store_path).map_err(file_err(store_path))?;
    sync_parent(store_path)?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::traits::*;

    #[test]
    fn backup_restores_users_and_sessions_and_refuses_a_held_store() {
        let dir = tempfile::tempdir().unwrap();
        let live = RedbStore::open(&dir.path().join("live.redb")).unwrap();
        let user = live.add_user("a@x.io", "hash", 5).unwrap().unwrap();
        live.insert_session(
            &[3; 32],
            &crate::store::Session {
                user_id: user.id,
                email: user.email.clone(),
                created_at: 5,
                last_seen: 5,
                ip: None,
                user_agent: None,
            },
        )
        .unwrap();
        let copy = dir.path().join("backup.redb");
        let counts = live.backup_to(&copy).unwrap();
        assert_eq!(
            counts,
            BackupCounts {
                users: 1,
                sessions: 1
            }
        );
        assert!(live.backup_to(&copy).is_err(), "an existing file is kept");

        // Restoring over the live store is refused while it is open.
        let refused = restore(&copy, &dir.path().join("live.redb"));
        assert!(matches!(refused, Err(StoreError::Locked(_))), "{refused:?}");
        let target = dir.path().join("restored.redb");
        drop(RedbStore::open(&target).unwrap());
        restore(&copy, &target).unwrap();
        let restored = RedbStore::open(&target).unwrap();
        assert_eq!(restored.list_users().unwrap(), vec![user]);
        assert_eq!(restored.session(&[3; 32]).unwrap().unwrap().email, "a@x.io");
        // The id counter came along: the next account does not reuse id 1.
        assert_eq!(restored.add_user("b@x.io", "h", 6).unwrap().unwrap().id, 2);
    }

    #[test]
    fn restore_rejects_a_file_that_is_not_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("s.redb");
        drop(RedbStore::open(&target).unwrap());
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a database").unwrap();
        assert!(restore(&junk, &target).is_err());
        // The store is untouched and no staging file is left behind.
        RedbStore::open(&target).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
