//! The access log and request metrics: one line per request on the
//! `gatehouse::access` target, written when the response body is finished
//! (so a streamed response is logged with its full duration and size).
//!
//! Logged: method, path without the query string, status, duration, bytes,
//! user id or `-`, request id. Never cookies, tokens, codes or bodies.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::http::response::{Body, BoxError};
use crate::metrics::RouteLabel;

/// What the pipeline learned while serving a request, for metrics and the
/// access log. Filled in as the request is routed and authenticated; kept
/// out of the response (no extension map to allocate per request).
#[derive(Debug, Clone)]
pub struct Served {
    /// Metric label: an own endpoint, `proxy`, or `refused` before routing.
    pub route: RouteLabel,
    /// The user the request was served for, if it carried a valid session.
    pub user: Option<u64>,
    /// The `X-Request-Id` sent upstream, if the request was forwarded: the
    /// response carries the same one (unless the upstream set its own).
    pub request_id: Option<HeaderValue>,
}

impl Default for Served {
    fn default() -> Served {
        Served {
            route: RouteLabel::Refused,
            user: None,
            request_id: None,
        }
    }
}

/// What is known about a request before it is served.
pub struct Started {
    /// `None` when the access log is off: nothing to copy, nothing to wrap.
    logged: Option<(Method, Box<str>)>,
    at: Instant,
}

impl Started {
    /// When the request arrived.
    pub fn at(&self) -> Instant {
        self.at
    }

    pub fn new<B>(req: &http::Request<B>) -> Started {
        Started {
            logged: tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO)
                .then(|| (req.method().clone(), req.uri().path().into())),
            at: Instant::now(),
        }
    }

    /// Counts the response, gives it a request id if it has none, and (when
    /// the access log is on) wraps its body so the access line is written
    /// when the body ends.
    pub fn finish(self, mut served: Served, mut resp: Response<Body>) -> Response<Body> {
        let status = resp.status().as_u16();
        let metrics = crate::metrics::get();
        metrics.request(served.route, status);
        let elapsed = self.at.elapsed().as_secs_f64();
        match served.route {
            RouteLabel::Proxy => metrics.proxy_latency.observe(elapsed),
            RouteLabel::Endpoint(endpoint) => metrics
                .auth_latency
                .get_or_create(&crate::metrics::EndpointLabel { endpoint })
                .observe(elapsed),
            RouteLabel::Refused => {}
        }
        let request_id = resp
            .headers_mut()
            .entry(crate::proxy::X_REQUEST_ID)
            .or_insert_with(|| {
                served
                    .request_id
                    .take()
                    .unwrap_or_else(crate::proxy::new_request_id)
            });
        let Some((method, path)) = self.logged else {
            return resp;
        };
        let request_id = request_id.clone();
        let user = served.user;
        let (parts, body) = resp.into_parts();
        let logged = LoggedBody {
            inner: body,
            line: Some(Line {
                method,
                path,
                status,
                at: self.at,
                bytes: 0,
                user,
                request_id,
            }),
        };
        Response::from_parts(parts, Body::Boxed(logged.boxed_unsync()))
    }
}

struct Line {
    method: Method,
    path: Box<str>,
    status: u16,
    at: Instant,
    bytes: u64,
    user: Option<u64>,
    request_id: HeaderValue,
}

impl Line {
    fn write(&self, complete: bool) {
        let duration_ms = self.at.elapsed().as_millis() as u64;
        let request_id = self.request_id.to_str().unwrap_or("-");
        let direct = crate::http::access_line::write(&crate::http::access_line::Fields {
            method: self.method.as_str(),
            path: &self.path,
            status: self.status,
            duration_ms,
            bytes: self.bytes,
            user: self.user,
            request_id,
            complete,
        });
        if direct {
            return;
        }
        let user = match self.user {
            Some(id) => id.to_string(),
            None => "-".to_string(),
        };
        tracing::info!(
            target: "gatehouse::access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            duration_ms,
            bytes = self.bytes,
            user = %user,
            request_id = %request_id,
            complete,
            "request"
        );
    }
}

/// A response body that counts its bytes and writes the access line once:
/// at the end of the stream, or when dropped early (client went away).
struct LoggedBody {
    inner: Body,
    line: Option<Line>,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(line)) = (frame.data_ref(), self.line.as_mut()) {
                    line.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(line) = self.line.take() {
                    line.write(true);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            // hyper may skip polling a body it knows is empty or complete.
            let complete = self.inner.is_end_stream();
            line.write(complete);
        }
    }
}
