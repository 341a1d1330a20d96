//! The request body every handler and the proxy read: hyper's `Incoming`
//! with a minimum data rate. Once `grace` has passed, the body must have
//! averaged `bytes_per_sec` over the time spent waiting for the client —
//! time the consumer (an upstream applying back-pressure) did not ask for
//! data is not counted — or reading fails with [`BodyError::TooSlow`].
//!
//! A body dropped before its end (the request was answered early: 401,
//! 403, 405, 413, 415 …) is handed to its [`Unread`] slot instead of being
//! dropped, so the pipeline can decide how the connection survives the
//! early answer (see [`super::early`]).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed or the framing was broken.
    #[error(transparent)]
    Read(#[from] hyper::Error),
    /// The client sent the body more slowly than the minimum data rate.
    #[error("request body arrived below the minimum data rate")]
    TooSlow,
}

/// The minimum data rate (`server.min_body_rate` after
/// `server.min_body_rate_grace`).
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    pub bytes_per_sec: u64,
    pub grace: Duration,
}

struct RateState {
    rule: MinRate,
    bytes: u64,
    /// Time spent waiting on the client so far.
    waited: Duration,
    /// Set while the last poll returned `Pending`.
    pending_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl RateState {
    /// Client time the bytes so far pay for.
    fn allowance(&self) -> Duration {
        let paid = self.bytes as f64 / self.rule.bytes_per_sec as f64;
        self.rule.grace + Duration::from_secs_f64(paid.min(1e9))
    }
}

/// Where a body dropped before its end goes; see [`super::early`].
pub type Unread = std::sync::Arc<std::sync::Mutex<Option<Incoming>>>;

pub struct RequestBody {
    /// `None` only once handed to `unread` on drop.
    inner: Option<Incoming>,
    rate: Option<Box<RateState>>,
    unread: Option<Unread>,
    /// Reading failed (too slow, broken): not worth keeping on drop.
    failed: bool,
}

impl RequestBody {
    /// `rate: None` (or a zero rate) reads at whatever pace the client sends.
    /// `unread` receives the body if it is dropped before its end.
    pub fn new(inner: Incoming, rate: Option<MinRate>, unread: Option<Unread>) -> RequestBody {
        let rate = rate
            .filter(|r| r.bytes_per_sec > 0 && !inner.is_end_stream())
            .map(|rule| {
                Box::new(RateState {
                    rule,
                    bytes: 0,
                    waited: Duration::ZERO,
                    pending_since: None,
                    timer: None,
                })
            });
        RequestBody {
            inner: Some(inner),
            rate,
            unread,
            failed: false,
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let (Some(inner), Some(unread)) = (self.inner.take(), self.unread.as_ref())
            && !self.failed
            && !inner.is_end_stream()
        {
            *unread.lock().unwrap_or_else(|e| e.into_inner()) = Some(inner);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(rate) = this.rate.as_mut()
            && let Some(since) = rate.pending_since.take()
        {
            rate.waited += since.elapsed();
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.failed = true;
        }
        let Some(rate) = this.rate.as_mut() else {
            return polled.map(|f| f.map(|r| r.map_err(BodyError::Read)));
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    rate.bytes += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(BodyError::Read))),
            Poll::Pending => {
                let allowance = rate.allowance();
                if rate.waited >= allowance {
                    this.failed = true;
                    return Poll::Ready(Some(Err(BodyError::TooSlow)));
                }
                let now = Instant::now();
                rate.pending_since = Some(now);
                let at = now + (allowance - rate.waited);
                match rate.timer.as_mut() {
                    Some(t) => t.as_mut().reset(at),
                    None => rate.timer = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                let timer = rate.timer.as_mut().expect("just set");
                if timer.as_mut().poll(cx).is_ready() {
                    // The allowance ran out between the check and now.
                    rate.waited += now.elapsed();
                    this.failed = true;
                    return Poll::Ready(Some(Err(BodyError::TooSlow)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}
