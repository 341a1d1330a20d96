//! The admin socket server: a Unix socket (mode 0600, so only the service
//! user and root can connect) that runs one command per connection.
//!
//! The socket is bound under a temporary name, restricted, then renamed into
//! place, so there is no moment when it exists with looser permissions.

use crate::tasks::{accept_loop, permit};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use super::{AdminError, Reply, Request, execute};
use crate::http::App;

/// Longest request line accepted.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// Time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands served at once.
const MAX_CONCURRENT: usize = 4;

/// A bound admin socket; removes its file when dropped.
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl AdminSocket {
    /// Binds `path` with mode 0600, replacing a stale socket file.
    pub fn bind(path: &Path) -> std::io::Result<AdminSocket> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let staging = path.with_extension(format!("sock-{}", std::process::id()));
        let _ = std::fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging)?;
        let restricted = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&staging, path));
        if let Err(e) = restricted {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
        Ok(AdminSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves commands until the task is dropped (which removes the socket
    /// file).
    pub async fn serve(self, handle: Arc<AdminContext>) {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
        let admit = |_: &_| permit(permits.clone());
        accept_loop(
            &self.listener,
            "admin socket",
            admit,
            |stream, _, permit, _| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_one(&handle, stream).await {
                        tracing::debug!(error = %e, "admin connection ended with error");
                    }
                    drop(permit);
                });
            },
        )
        .await
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the socket needs from the running server.
pub struct AdminContext {
    pub app: Arc<App>,
    /// Where snapshots are staged before being streamed (the data directory,
    /// which the service may write to under systemd's sandbox).
    pub staging_dir: PathBuf,
}

async fn serve_one(handle: &AdminContext, stream: UnixStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES);
    match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    }
    crate::metrics::get().admin_commands.inc();
    let request: Request = match serde_json::from_str(line.trim_end()) {
        Ok(r) => r,
        Err(e) => {
            let reply = Reply::Error {
                message: format!("malformed request: {e}"),
            };
            return write_reply(&mut write, &reply).await;
        }
    };
    if request == Request::Backup {
        return stream_backup(handle, &mut write).await;
    }
    let store = handle.app.auth.store().clone();
    let now = handle.app.auth.clock.now_millis();
    let outcome = tokio::task::spawn_blocking(move || execute(store.as_ref(), now, request))
        .await
        .map_err(std::io::Error::other)?;
    let reply = match outcome {
        Ok(done) => {
            for user in &done.forget_users {
                handle.app.auth.sessions.forget_user(*user);
            }
            if done.queued_mail {
                handle.app.auth.outbox().queued(false);
            }
            for token in &done.forget_tokens {
                handle.app.auth.sessions.forget(token);
            }
            Reply::Ok { data: done.data }
        }
        Err(e) => {
            if matches!(e, AdminError::Store(_)) {
                tracing::error!(error = %e, "admin command failed");
            }
            Reply::Error {
                message: e.to_string(),
            }
        }
    };
    write_reply(&mut write, &reply).await
}

async fn write_reply(
    write: &mut (impl AsyncWriteExt + Unpin),
    reply: &Reply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await
}

/// Takes a snapshot into the staging directory, streams it after the reply
/// line, and removes it.
async fn stream_backup(
    handle: &AdminContext,
    write: &mut (impl AsyncWriteExt + Unpin),
) -> std::io::Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let staged = handle
        .staging_dir
        .join(format!(".backup-{}-{n}.redb", std::process::id()));
    let store = handle.app.auth.store().clone();
    let path = staged.clone();
    let taken = tokio::task::spawn_blocking(move || store.backup_to(&path))
        .await
        .map_err(std::io::Error::other)?;
    let counts = match taken {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "backup failed");
            let reply = Reply::Error {
                message: format!("backup failed: {e}"),
            };
            return write_reply(write, &reply).await;
        }
    };
    let result = async {
        let mut file = tokio::fs::File::open(&staged).await?;
        let bytes = file.metadata().await?.len();
        let data = serde_json::json!({
            "users": counts.users,
            "sessions": counts.sessions,
            "bytes": bytes,
        });
        write_reply(write, &Reply::Ok { data }).await?;
        let sent = tokio::io::copy(&mut (&mut file).take(bytes), write).await?;
        write.flush().await?;
        tracing::info!(
            users = counts.users,
            sessions = counts.sessions,
            bytes = sent,
            "backup streamed to the admin socket"
        );
        Ok(())
    }
    .await;
    let _ = tokio::fs::remove_file(&staged).await;
    result
}
