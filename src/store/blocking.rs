//! The bridge from async code to the store: every store call blocks (redb
//! commits fsync; the PostgreSQL driver is synchronous), so async callers
//! run it on tokio's blocking pool through [`run_blocking`].

use super::StoreError;

/// Runs a store call on the blocking pool.
pub async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(StoreError::Task)?
}
