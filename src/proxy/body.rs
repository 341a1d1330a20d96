//! The body of every response Gatehouse sends: a small body it wrote
//! itself, a body streamed from the upstream, or a wrapped one. It lives in
//! `proxy` because it names the upstream body type directly (no boxing on
//! the proxied path); `http::response` re-exports it for the pipeline.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::UpstreamBody;

/// Errors a streamed body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body. An enum rather than a boxed trait object because
/// nearly every response is one of the first two, and a proxied request
/// should not pay an allocation and a virtual call per frame for it.
pub enum Body {
    /// A small body Gatehouse wrote itself (taken on the first poll).
    Full(Option<Bytes>),
    /// A body streamed from the upstream.
    Upstream(UpstreamBody),
    /// Anything wrapping another body (the access log's byte counter).
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    let bytes: Bytes = bytes.into();
    Body::Full((!bytes.is_empty()).then_some(bytes))
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Upstream(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|e| Box::new(e) as BoxError))),
            Body::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Upstream(body) => body.is_end_stream(),
            Body::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Upstream(body) => body.size_hint(),
            Body::Boxed(body) => body.size_hint(),
        }
    }
}
