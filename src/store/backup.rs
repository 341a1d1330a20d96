//! Backup and restore of the redb store file.
//!
//! A backup is one read transaction copied table by table into a fresh redb
//! file: a consistent snapshot taken while the server keeps writing (readers
//! do not block writers in redb). The copy refuses to run if the store holds
//! a table it does not know, so a new table cannot be silently left out.
//!
//! A restore validates the backup by opening it as a store, then renames it
//! over the configured path; it runs only while no process holds the store.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use redb::{
    Database, MultimapTableDefinition, MultimapTableHandle, ReadTransaction, ReadableDatabase,
    ReadableMultimapTable, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};

use super::redb_store::{
    META, OTP_SENDS, OTPS, SECRETS, SESSIONS, TABLE_NAMES, THROTTLES, USER_SESSIONS, USERS,
    USERS_BY_EMAIL,
};
use super::{BackupCounts, RedbStore, StoreError, redb_account, redb_outbox};

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(e.into())
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Writes the snapshot to `dest` via a temporary file in the same directory
/// and an atomic rename; the file is readable by its owner only.
pub(super) fn write_snapshot(store: &RedbStore, dest: &Path) -> Result<BackupCounts, StoreError> {
    let partial = sibling(dest, "partial");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(file_err(&partial))?;
    let result = copy_into(store, file).and_then(|counts| {
        // A hard link publishes the finished file atomically and, unlike a
        // rename, refuses to replace an existing one.
        std::fs::hard_link(&partial, dest).map_err(file_err(dest))?;
        sync_parent(dest)?;
        Ok(counts)
    });
    let _ = std::fs::remove_file(&partial);
    result
}

fn copy_into(store: &RedbStore, file: File) -> Result<BackupCounts, StoreError> {
    let src = store.db.begin_read().map_err(db_err)?;
    for table in src.list_tables().map_err(db_err)? {
        check_known(table.name())?;
    }
    for table in src.list_multimap_tables().map_err(db_err)? {
        check_known(table.name())?;
    }
    let backend = redb::backends::FileBackend::new(file).map_err(db_err)?;
    let backup = Database::builder()
        .create_with_backend(backend)
        .map_err(db_err)?;
    let dst = backup.begin_write().map_err(db_err)?;
    copy_table(&src, &dst, META)?;
    copy_table(&src, &dst, USERS)?;
    copy_table(&src, &dst, USERS_BY_EMAIL)?;
    copy_table(&src, &dst, SESSIONS)?;
    copy_multimap(&src, &dst, USER_SESSIONS)?;
    copy_table(&src, &dst, OTPS)?;
    copy_table(&src, &dst, OTP_SENDS)?;
    copy_table(&src, &dst, THROTTLES)?;
    copy_table(&src, &dst, SECRETS)?;
    copy_table(&src, &dst, redb_outbox::OUTBOX)?;
    copy_table(&src, &dst, redb_outbox::OUTBOX_DUE)?;
    copy_table(&src, &dst, redb_outbox::OUTBOX_BY_EMAIL)?;
    copy_table(&src, &dst, redb_account::ACCOUNT_CODES)?;
    copy_table(&src, &dst, super::redb_oidc::OIDC_STATES)?;
    copy_table(&src, &dst, super::redb_oidc::IDENTITIES)?;
    copy_table(&src, &dst, super::redb_access::USER_GROUPS)?;
    copy_table(&src, &dst, super::redb_access::INVITES)?;
    copy_table(&src, &dst, super::redb_mfa::MFA)?;
    copy_table(&src, &dst, super::redb_mfa::PASSKEY_OWNERS)?;
    copy_table(&src, &dst, super::redb_mfa::MFA_CHALLENGES)?;
    let counts = BackupCounts {
        users: src
            .open_table(USERS)
            .map_err(db_err)?
            .len()
            .map_err(db_err)?,
        sessions: src
            .open_table(SESSIONS)
            .map_err(db_err)?
            .len()
            .map_err(db_err)?,
    };
    // Default durability: the commit is fsynced before it returns.
    dst.commit().map_err(db_err)?;
    Ok(counts)
}

fn check_known(name: &str) -> Result<(), StoreError> {
    if TABLE_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(StoreError::UnknownTable(name.to_string()))
    }
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), StoreError> {
    let from = src.open_table(def).map_err(db_err)?;
    let mut to = dst.open_table(def).map_err(db_err)?;
    for entry in from.iter().map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        to.insert(k.value(), v.value()).map_err(db_err)?;
    }
    Ok(())
}

fn copy_multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: MultimapTableDefinition<K, V>,
) -> Result<(), StoreError> {
    let from = src.open_multimap_table(def).map_err(db_err)?;
    let mut to = dst.open_multimap_table(def).map_err(db_err)?;
    for entry in from.iter().map_err(db_err)? {
        let (k, values) = entry.map_err(db_err)?;
        for v in values {
            let v = v.map_err(db_err)?;
            to.insert(k.value(), v.value()).map_err(db_err)?;
        }
    }
    Ok(())
}

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
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)
            .map_err(file_err(&staged))?;
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
        let txn = opened.db.begin_read().map_err(db_err)?;
        BackupCounts {
            users: txn
                .open_table(USERS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?,
            sessions: txn
                .open_table(SESSIONS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?,
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

/// `dir/.name.<suffix>` next to `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gatehouse".into());
    path.with_file_name(format!(".{name}.{suffix}"))
}

/// Makes a rename durable.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

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
        {
            use crate::store::AccessStore;
            live.set_groups(user.id, &["ops".to_string()]).unwrap();
            live.invite_put(&crate::store::Invite {
                email: "c@x.io".into(),
                created_at: 1,
                expires_at: 2,
            })
            .unwrap();
        }
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
        assert_eq!(restored.list_users().unwrap(), vec![user.clone()]);
        assert_eq!(restored.session(&[3; 32]).unwrap().unwrap().email, "a@x.io");
        // The id counter came along: the next account does not reuse id 1.
        assert_eq!(restored.add_user("b@x.io", "h", 6).unwrap().unwrap().id, 2);
        // Groups and invites (issue 20) too.
        use crate::store::AccessStore;
        assert_eq!(restored.groups_of(user.id).unwrap(), ["ops"]);
        assert_eq!(restored.invite_list().unwrap().len(), 1);
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
