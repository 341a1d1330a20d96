//! Files only their owner may read (store snapshots, restores, downloaded
//! backups, ACME and self-signed keys and certificates): created with mode
//! 0600 from the start, never widened later. A leaf: the store, the admin
//! client, ACME and TLS all write them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `path` for reading and writing, readable by its owner only;
/// fails if it exists (a stale temporary file is the caller's to remove).
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Replaces `path` with `contents` atomically: written to a 0600
/// temporary sibling (`path` with the extension `tmp`), synced, renamed.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
