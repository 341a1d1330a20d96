//! Streaming responses (Server-Sent Events and any other body of unknown
//! length) served to a signed-in user end when that session ends: the body
//! is registered as a live connection (see `auth::live`) and fails as soon
//! as the session is logged out, revoked or expires, which makes hyper cut
//! the response (HTTP/1.1: the connection is closed mid-body; HTTP/2: the
//! stream is reset). Responses of known length are left alone: they end by
//! themselves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::auth::live::LiveGuard;
use crate::auth::sessions::{Identity, Sessions};
use crate::proxy::body::{Body, BoxError};
use crate::proxy::hygiene::ResponseHead;
use crate::store::TokenHash;

/// The session a streamed response was sent for: all a stream needs to
/// end with it (kept instead of the whole [`Identity`] while the answer is
/// awaited).
#[derive(Debug, Clone, Copy)]
pub struct StreamOwner {
    token: TokenHash,
    user_id: u64,
}

impl StreamOwner {
    pub fn of(who: &Identity) -> StreamOwner {
        StreamOwner {
            token: who.token,
            user_id: who.user_id,
        }
    }
}

/// Whether a response is a stream that may stay open indefinitely: an
/// event stream, or any body without a length. `head` is what stripping
/// the response's headers saw of them.
pub fn is_streaming(method: &Method, resp: &Response<Body>, head: ResponseHead) -> bool {
    let has_body = *method != Method::HEAD
        && !resp.status().is_informational()
        && resp.status() != StatusCode::NO_CONTENT
        && resp.status() != StatusCode::NOT_MODIFIED;
    has_body && (head.event_stream || !head.content_length)
}

/// Makes `resp`'s body end when `who`'s session ends.
pub fn end_with_session(
    resp: Response<Body>,
    sessions: &Sessions,
    who: &StreamOwner,
) -> Response<Body> {
    let guard = sessions.live.register(who.token, who.user_id);
    let ended = Box::pin(guard.ended().clone().cancelled_owned());
    resp.map(|inner| {
        Body::Boxed(
            EndsWithSession {
                inner,
                ended,
                _guard: guard,
            }
            .boxed_unsync(),
        )
    })
}

/// The session behind this response was ended.
#[derive(Debug, thiserror::Error)]
#[error("the session this stream was opened with has ended")]
struct SessionEnded;

struct EndsWithSession {
    inner: Body,
    ended: Pin<Box<WaitForCancellationFutureOwned>>,
    _guard: LiveGuard,
}

impl HttpBody for EndsWithSession {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(SessionEnded))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
