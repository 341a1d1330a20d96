//! A response body that keeps its request counted as in flight (so the
//! connection is not idle) until hyper has sent it or dropped it, and the
//! request future that puts it on the answer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::body::{Body, Frame, SizeHint};

use super::registry::InFlight;

pin_project_lite::pin_project! {
    /// The future hyper polls for a request: its answer, with the body
    /// [`Tracked`] so the request counts as in flight until the body is
    /// done. Hand-written rather than an `async` block, which would keep a
    /// second copy of the answer's future beside the one it awaits.
    pub struct Serving<F> {
        #[pin]
        answer: F,
        in_flight: Option<InFlight>,
    }
}

impl<F> Serving<F> {
    pub fn new(answer: F, in_flight: InFlight) -> Serving<F> {
        Serving {
            answer,
            in_flight: Some(in_flight),
        }
    }
}

impl<F: Future<Output = http::Response<B>>, B> Future for Serving<F> {
    type Output = Result<http::Response<Tracked<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.answer.poll(cx));
        let in_flight = this.in_flight.take().expect("a request is answered once");
        Poll::Ready(Ok(resp.map(|body| Tracked::new(body, in_flight))))
    }
}

/// `inner`, plus the guard that marks the request finished when dropped.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
