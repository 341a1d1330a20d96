//! Runs one hyper connection until it ends, closing it gracefully when it
//! stops making progress:
//! - no request (for HTTP/2: preface, SETTINGS and a HEADERS frame) within
//!   `first_request` of the accept — the TLS handshake counts against it;
//! - no request in flight for `keep_alive` (HTTP/1.1 between requests,
//!   HTTP/2 with no open stream, whatever PINGs the client sends). For
//!   HTTP/1.1 the server passes min(keep-alive, header-read timeout): a
//!   request head still arriving counts as nothing in flight, so this is
//!   also what bounds a head that drips in (hyper's own per-head timer is
//!   off, see `server::serve_http`);
//! - asked to close by the registry (evicted at the connection cap, or the
//!   server is draining).
//!
//! Closing is graceful (HTTP/2 GOAWAY; HTTP/1.1 finishes the response in
//! progress); a connection that has nothing in flight but does not finish
//! closing within `close_grace` is dropped.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::registry::ConnState;

/// How long each phase of a connection may take.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From accept to the first request's head (`server.header_read_timeout`).
    pub first_request: Duration,
    /// Idle time allowed with no request in flight (`server.keep_alive_timeout`).
    pub keep_alive: Duration,
    /// After a graceful close was started, how long an idle connection may
    /// take to finish it (GOAWAY acknowledged, lingering close).
    pub close_grace: Duration,
}

/// A hyper server connection that can be asked to close gracefully. Any
/// connection type with a `graceful_shutdown` fits (an upgradeable HTTP/1.1
/// connection included).
pub trait Closable: Future<Output = Result<(), hyper::Error>> {
    fn start_graceful_close(self: Pin<&mut Self>);
}

impl<I, S, B> Closable for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn start_graceful_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Closable for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn start_graceful_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Closable for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn start_graceful_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    NoFirstRequest,
    Idle,
    Asked,
}

/// When the connection's current phase ends, given what it has done.
fn deadline(state: &ConnState, accepted: Instant, d: &Deadlines) -> Instant {
    if !state.seen_request() {
        return accepted + d.first_request;
    }
    match state.idle_since() {
        Some(since) => Instant::from_std(since) + d.keep_alive,
        // Busy: look again later (a response may stream for a long time).
        None => Instant::now() + d.keep_alive,
    }
}

fn expired(state: &ConnState, accepted: Instant, d: &Deadlines) -> Option<CloseReason> {
    let now = Instant::now();
    if !state.seen_request() {
        return (now >= accepted + d.first_request).then_some(CloseReason::NoFirstRequest);
    }
    let since = Instant::from_std(state.idle_since()?);
    (now >= since + d.keep_alive).then_some(CloseReason::Idle)
}

/// Drives `conn` to completion under the deadlines above.
pub async fn drive<C: Closable>(
    conn: C,
    state: &ConnState,
    accepted: Instant,
    d: &Deadlines,
) -> Result<(), hyper::Error> {
    let mut conn = pin!(conn);
    let timer = pin!(tokio::time::sleep_until(deadline(state, accepted, d)));
    let close = pin!(state.close_signal());
    let watched = Watched {
        conn: conn.as_mut(),
        state,
        accepted,
        deadlines: d,
        timer,
        close,
        armed: None,
    };
    let reason = match watched.await {
        Ok(result) => return result,
        Err(reason) => reason,
    };
    tracing::debug!(?reason, "closing connection");
    if !state.seen_request() {
        // Nothing was ever asked on it: nothing to be graceful about (and an
        // HTTP/2 connection still waiting for its preface cannot send GOAWAY).
        return Ok(());
    }
    conn.as_mut().start_graceful_close();
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            () = tokio::time::sleep(d.close_grace) => {
                if state.idle_since().is_some() {
                    return Ok(());
                }
            }
        }
    }
}

/// A connection and what may end it early: its phase's deadline and the
/// registry's request to close. Ready with the connection's own result, or
/// with why it must close.
///
/// Hand-written rather than a `select!` because the connection task wakes
/// several times per request (request head, upstream answer, response
/// written) and only the connection can have made progress on most of those
/// wakes: the timer and the close signal are polled once to register the
/// task's waker and then only looked at (an elapsed flag, an atomic) until
/// the timer fires or the waker changes, instead of being re-polled (and
/// re-registered) on every wake.
struct Watched<'c, 's, C> {
    conn: Pin<&'c mut C>,
    state: &'s ConnState,
    accepted: Instant,
    deadlines: &'s Deadlines,
    timer: Pin<&'c mut tokio::time::Sleep>,
    close: Pin<&'c mut tokio::sync::futures::Notified<'s>>,
    /// The waker the timer and the close signal hold, once polled.
    armed: Option<Waker>,
}

impl<C: Closable> Future for Watched<'_, '_, C> {
    type Output = Result<Result<(), hyper::Error>, CloseReason>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(result) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(result));
        }
        if this.state.is_closing() {
            return Poll::Ready(Err(CloseReason::Asked));
        }
        let still_armed = this
            .armed
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if still_armed && !this.timer.is_elapsed() {
            return Poll::Pending;
        }
        // First poll, a new waker, or the timer fired: has the phase ended,
        // or does it end later now (a request came and went)?
        while this.timer.as_mut().poll(cx).is_ready() {
            if let Some(reason) = expired(this.state, this.accepted, this.deadlines) {
                return Poll::Ready(Err(reason));
            }
            let next = deadline(this.state, this.accepted, this.deadlines);
            this.timer.as_mut().reset(next);
        }
        if this.close.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(CloseReason::Asked));
        }
        this.armed = Some(cx.waker().clone());
        Poll::Pending
    }
}
