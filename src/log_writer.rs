//! Where log lines go: stderr, with access-log lines buffered. An access
//! line per request would otherwise cost a `write` system call per request;
//! here they collect in memory and go out in one `write` every
//! [`FLUSH_INTERVAL`], when [`MAX_BUFFERED`] bytes are waiting, before any
//! other log line (so the order on stderr stays the order of events), and
//! at shutdown ([`flush`]). Only a crash (a kill -9, an abort) loses the
//! lines of the last interval.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::sync;

/// Longest an access line waits in memory.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered bytes that trigger an immediate write.
const MAX_BUFFERED: usize = 64 * 1024;
/// The target of access-log lines (see [`crate::http::access`]).
const ACCESS_TARGET: &str = "gatehouse::access";

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The `MakeWriter` for the log subscriber.
#[derive(Clone, Copy, Default)]
pub struct Logs;

impl Logs {
    /// Starts the thread that writes buffered access lines out every
    /// [`FLUSH_INTERVAL`]. A thread rather than a task: it keeps working
    /// whatever the runtime is doing, and is cheap (it sleeps).
    pub fn start_flusher() {
        let started = std::thread::Builder::new()
            .name("gatehouse-log".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    flush();
                }
            });
        if let Err(e) = started {
            // Without the thread, lines still go out when the buffer fills,
            // before other lines and at shutdown.
            eprintln!("gatehouse: could not start the access-log flusher: {e}");
        }
    }
}

/// Writes every buffered access line to stderr now.
pub fn flush() {
    let mut buffer = sync::lock(&BUFFER);
    write_out(&mut buffer);
}

fn write_out(buffer: &mut Vec<u8>) {
    if buffer.is_empty() {
        return;
    }
    let mut stderr = std::io::stderr().lock();
    // Nowhere to report a failing stderr: the lines are dropped.
    let _ = stderr.write_all(buffer);
    let _ = stderr.flush();
    buffer.clear();
    // Give back the memory of a burst, keep the usual size.
    buffer.shrink_to(MAX_BUFFERED);
}

/// Appends one access line, written by `line` straight into the buffer
/// (see [`crate::http::access_line`]): no intermediate string.
pub fn append_access(line: impl FnOnce(&mut Vec<u8>)) {
    let mut buffer = sync::lock(&BUFFER);
    line(&mut buffer);
    if buffer.len() >= MAX_BUFFERED {
        write_out(&mut buffer);
    }
}

/// One log line's destination.
pub enum LogSink {
    /// An access line: appended to the buffer.
    Access,
    /// Anything else: straight to stderr, after the buffered access lines.
    Direct,
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut buffer = sync::lock(&BUFFER);
        match self {
            LogSink::Access => {
                buffer.extend_from_slice(buf);
                if buffer.len() >= MAX_BUFFERED {
                    write_out(&mut buffer);
                }
                Ok(())
            }
            LogSink::Direct => {
                write_out(&mut buffer);
                // Holding the buffer's lock keeps an access line from
                // slipping in between.
                std::io::stderr().lock().write_all(buf)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = LogSink;

    fn make_writer(&'a self) -> LogSink {
        LogSink::Direct
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogSink {
        if meta.target() == ACCESS_TARGET {
            LogSink::Access
        } else {
            LogSink::Direct
        }
    }
}
