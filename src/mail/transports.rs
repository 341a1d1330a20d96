//! The development transports: `log` (the message, code included, goes to
//! the log) and `file` (each message becomes an `.eml` file, written
//! atomically so a reader never sees half a message).

use std::path::PathBuf;

use super::templates::Rendered;
use super::{DeliverFuture, Transport, TransportError};

/// Development transport: writes the message text, code included, to the
/// log as one event that says plainly it was printed, not sent.
pub struct LogTransport;

impl Transport for LogTransport {
    fn deliver<'a>(&'a self, mail: &'a Rendered) -> DeliverFuture<'a> {
        Box::pin(async move {
            // The contents come last, so the first line reads whole.
            tracing::info!(
                transport = "log",
                to = %mail.to,
                subject = %mail.subject,
                message_id = %mail.message_id,
                outcome = "printed",
                text = %mail.text,
                "mail printed here instead of sent (development transport `log`; use `smtp` in production)"
            );
            Ok(())
        })
    }

    fn prints_instead_of_sending(&self) -> bool {
        true
    }
}

/// Writes `<dir>/msg-<message id>.eml` (the prefix keeps names that start
/// with '-' from looking like options to shell tools).
pub struct FileTransport {
    dir: PathBuf,
}

impl FileTransport {
    /// Creates the directory if needed, so a wrong path fails at start-up.
    pub fn new(dir: PathBuf) -> Result<FileTransport, std::io::Error> {
        std::fs::create_dir_all(&dir)?;
        Ok(FileTransport { dir })
    }
}

impl Transport for FileTransport {
    fn deliver<'a>(&'a self, mail: &'a Rendered) -> DeliverFuture<'a> {
        Box::pin(async move {
            // The id is our own token@domain: safe as a file name once '/' is ruled out.
            let name: String = mail
                .message_id
                .chars()
                .map(|c| if c == '/' { '_' } else { c })
                .collect();
            let target = self.dir.join(format!("msg-{name}.eml"));
            let tmp = self.dir.join(format!(".msg-{name}.eml.tmp"));
            let bytes = mail.bytes.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &target)
            })
            .await
            .map_err(|e| TransportError::File(std::io::Error::other(e)))?
            .map_err(TransportError::File)
        })
    }
}
