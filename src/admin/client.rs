//! The CLI's side of the admin socket: send one command, read the reply, and
//! for `backup` receive the snapshot into a file. Blocking std I/O: the CLI
//! runs one command and exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Reply, Request};

/// How long to wait for a reply to an ordinary command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest reply line accepted (a `user list` of many accounts fits).
const MAX_REPLY_BYTES: u64 = 256 * 1024 * 1024;

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be used.
    #[error("admin socket {path}: {source}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The request or the server's answer is not valid JSON of the protocol.
    #[error("admin socket sent an unreadable reply: {0}")]
    Json(#[source] serde_json::Error),
    /// A backup reply did not say how many bytes follow.
    #[error("admin socket sent a backup reply without `bytes`")]
    BackupSize,
    /// The backup stream ended early.
    #[error("backup stream ended after {got} of {expected} bytes")]
    BackupShort { got: u64, expected: u64 },
    /// Writing the received backup failed.
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Connects to the running server. `Ok(None)` means no server runs: the
/// socket file is missing or nobody accepts on it (a stale file).
pub fn connect(socket: &Path) -> Result<Option<UnixStream>, ClientError> {
    match UnixStream::connect(socket) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(ClientError::Socket {
            path: socket.display().to_string(),
            source,
        }),
    }
}

/// Sends `request` on `stream` and reads the reply line.
pub fn call(
    socket: &Path,
    stream: UnixStream,
    request: &Request,
) -> Result<(Reply, BufReader<UnixStream>), ClientError> {
    let io = |source| ClientError::Socket {
        path: socket.display().to_string(),
        source,
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(ClientError::Json)?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut reply = String::new();
    (&mut reader)
        .take(MAX_REPLY_BYTES)
        .read_line(&mut reply)
        .map_err(io)?;
    let reply: Reply = serde_json::from_str(reply.trim_end()).map_err(ClientError::Json)?;
    Ok((reply, reader))
}

/// Receives a backup: the reply's `bytes` raw bytes go to a temporary file
/// next to `dest` (mode 0600), which is synced and renamed into place.
pub fn receive_backup(
    socket: &Path,
    stream: UnixStream,
    dest: &Path,
) -> Result<Reply, ClientError> {
    let (reply, mut reader) = call(socket, stream, &Request::Backup)?;
    let Reply::Ok { data } = &reply else {
        return Ok(reply);
    };
    let bytes = data["bytes"].as_u64().ok_or(ClientError::BackupSize)?;
    let file_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ClientError::File { path, source }
    };
    let partial = dest.with_extension("partial");
    let mut file = crate::private_file::create_new(&partial).map_err(file_err(&partial))?;
    let copied = std::io::copy(&mut (&mut reader).take(bytes), &mut file);
    let finished = match copied {
        Ok(n) if n == bytes => file
            .sync_all()
            .and_then(|()| std::fs::rename(&partial, dest))
            .map_err(file_err(dest)),
        Ok(n) => Err(ClientError::BackupShort {
            got: n,
            expected: bytes,
        }),
        Err(e) => Err(file_err(&partial)(e)),
    };
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    Ok(reply)
}
