//! Writing a consistent snapshot of the redb store file (the `backup`
//! command and the admin socket's backup): one read transaction copied
//! table by table into a fresh redb file, written to a 0600 temporary file
//! and published with a hard link. The copy refuses to run if the store
//! holds a table it does not know, so a new table cannot be silently left
//! out. Restoring lives in `backup`, which opens stores; this half only
//! needs the table definitions.

use std::fs::File;
use std::path::{Path, PathBuf};

use redb::{
    Database, MultimapTableDefinition, MultimapTableHandle, ReadTransaction, ReadableDatabase,
    ReadableMultimapTable, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};

use super::redb_tables::*;
use super::{BackupCounts, StoreError};

pub(super) fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Writes the snapshot to `dest` via a temporary file in the same directory
/// and an atomic rename; the file is readable by its owner only.
pub(super) fn write_snapshot(db: &Database, dest: &Path) -> Result<BackupCounts, StoreError> {
    let partial = sibling(dest, "partial");
    let file = crate::private_file::create_new(&partial).map_err(file_err(&partial))?;
    let result = copy_into(db, file).and_then(|counts| {
        // A hard link publishes the finished file atomically and, unlike a
        // rename, refuses to replace an existing one.
        std::fs::hard_link(&partial, dest).map_err(file_err(dest))?;
        sync_parent(dest)?;
        Ok(counts)
    });
    let _ = std::fs::remove_file(&partial);
    result
}

fn copy_into(db: &Database, file: File) -> Result<BackupCounts, StoreError> {
    let src = db.begin_read()?;
    for table in src.list_tables()? {
        check_known(table.name())?;
    }
    for table in src.list_multimap_tables()? {
        check_known(table.name())?;
    }
    let backend = redb::backends::FileBackend::new(file)?;
    let backup = Database::builder().create_with_backend(backend)?;
    let dst = backup.begin_write()?;
    copy_table(&src, &dst, META)?;
    copy_table(&src, &dst, USERS)?;
    copy_table(&src, &dst, USERS_BY_EMAIL)?;
    copy_table(&src, &dst, SESSIONS)?;
    copy_multimap(&src, &dst, USER_SESSIONS)?;
    copy_table(&src, &dst, OTPS)?;
    copy_table(&src, &dst, OTP_SENDS)?;
    copy_table(&src, &dst, THROTTLES)?;
    copy_table(&src, &dst, SECRETS)?;
    copy_table(&src, &dst, OUTBOX)?;
    copy_table(&src, &dst, OUTBOX_DUE)?;
    copy_table(&src, &dst, OUTBOX_BY_EMAIL)?;
    copy_table(&src, &dst, ACCOUNT_CODES)?;
    copy_table(&src, &dst, OIDC_STATES)?;
    copy_table(&src, &dst, IDENTITIES)?;
    copy_table(&src, &dst, USER_GROUPS)?;
    copy_table(&src, &dst, INVITES)?;
    copy_table(&src, &dst, MFA)?;
    copy_table(&src, &dst, PASSKEY_OWNERS)?;
    copy_table(&src, &dst, MFA_CHALLENGES)?;
    let counts = BackupCounts {
        users: src.open_table(USERS)?.len()?,
        sessions: src.open_table(SESSIONS)?.len()?,
    };
    // Default durability: the commit is fsynced before it returns.
    dst.commit()?;
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
    let from = src.open_table(def)?;
    let mut to = dst.open_table(def)?;
    for entry in from.iter()? {
        let (k, v) = entry?;
        to.insert(k.value(), v.value())?;
    }
    Ok(())
}

fn copy_multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: MultimapTableDefinition<K, V>,
) -> Result<(), StoreError> {
    let from = src.open_multimap_table(def)?;
    let mut to = dst.open_multimap_table(def)?;
    for entry in from.iter()? {
        let (k, values) = entry?;
        for v in values {
            let v = v?;
            to.insert(k.value(), v.value())?;
        }
    }
    Ok(())
}

/// `dir/.name.<suffix>` next to `path`.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gatehouse".into());
    path.with_file_name(format!(".{name}.{suffix}"))
}

/// Makes a rename durable.
pub(super) fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err(dir))
}
