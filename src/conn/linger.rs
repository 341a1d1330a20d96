//! Lingering close (as nginx does): when the server ends a connection, it
//! first shuts down its sending side, then keeps reading and discarding
//! what the client still sends for a bounded time and size before closing.
//! Closing a socket with unread data makes the kernel send RST, and a RST
//! can destroy the response the client has not read yet — typically after
//! an early answer to a request whose body was still arriving.
//!
//! Wraps the TCP stream (under TLS, if any): hyper's and h2's shutdown of
//! the connection ends up in [`Lingering::poll_shutdown`].

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Longest time spent discarding input after shutting down the write side.
pub const LINGER_TIME: Duration = Duration::from_secs(3);
/// Most bytes discarded while lingering.
pub const LINGER_BYTES: u64 = 1024 * 1024;

enum Phase {
    Open,
    /// Write side shut down; discarding input until EOF or a bound.
    Lingering {
        timer: Pin<Box<Sleep>>,
        discarded: u64,
    },
    Done,
}

pub struct Lingering<S> {
    inner: S,
    phase: Phase,
}

impl<S> Lingering<S> {
    pub fn new(inner: S) -> Lingering<S> {
        Lingering {
            inner,
            phase: Phase::Open,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.phase {
                Phase::Open => {
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    this.phase = Phase::Lingering {
                        timer: Box::pin(tokio::time::sleep(LINGER_TIME)),
                        discarded: 0,
                    };
                }
                Phase::Lingering { timer, discarded } => {
                    if timer.as_mut().poll(cx).is_ready() || *discarded > LINGER_BYTES {
                        this.phase = Phase::Done;
                        continue;
                    }
                    let mut scratch = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                        Ok(()) if buf.filled().is_empty() => this.phase = Phase::Done,
                        Ok(()) => *discarded += buf.filled().len() as u64,
                        Err(_) => this.phase = Phase::Done,
                    }
                }
                Phase::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}
