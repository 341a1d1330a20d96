//! Answering before the request body has arrived (401, 403, 405, 413, 415,
//! 408 …) without breaking the client. Most HTTP libraries write the body
//! in a separate write after the head; if the server simply stops reading,
//! the client either fails mid-upload or finds a dead keep-alive connection
//! on its next request.
//!
//! What happens to a body the pipeline dropped before its end:
//! - HTTP/2: the rest is read and discarded in the background (bounded),
//!   so the stream ends cleanly after the response instead of being reset
//!   while the client is still sending (curl and others drop the response
//!   then). Past the bound the stream is reset with `NO_ERROR`, after the
//!   response (RFC 9113 §8.1).
//! - HTTP/1.1: a body whose remaining length is known and within the bound
//!   is read and discarded in the background, and the connection stays
//!   open; otherwise the response says `Connection: close`, and the close
//!   lingers (reads and discards for a while, see `conn::linger`) so the
//!   client still gets to read the response.
//! - A body that failed (too slow, broken framing) is never waited for: the
//!   connection closes (HTTP/1.1 with `Connection: close`).

use std::time::Duration;

use bytes::Buf;
use http::{HeaderValue, Response, Version, header};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use super::response::Body;
use crate::request::body::Unread;

/// Most bytes read and discarded after an early answer.
pub const DISCARD_BYTES: u64 = 1024 * 1024;
/// Longest time spent reading and discarding after an early answer.
pub const DISCARD_TIME: Duration = Duration::from_secs(5);

/// A slot for the request body, when the request has one.
pub fn slot_for(body: &Incoming) -> Option<Unread> {
    (!body.is_end_stream()).then(Unread::default)
}

/// Settles a body the pipeline left unread: discards it in the background
/// or marks the response `Connection: close` (HTTP/1.1).
pub fn settle(unread: &Unread, version: Version, resp: &mut Response<Body>) {
    let body = unread.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(body) = body else { return };
    let timed_out = resp.status() == http::StatusCode::REQUEST_TIMEOUT;
    let fits = body
        .size_hint()
        .upper()
        .is_some_and(|left| left <= DISCARD_BYTES);
    let discard = !timed_out && (version == Version::HTTP_2 || fits);
    if discard {
        tokio::spawn(discard_rest(body));
    } else if version != Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Reads and drops the rest of `body`, within the bounds above.
async fn discard_rest(mut body: Incoming) {
    let read = async {
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return };
            if let Some(data) = frame.data_ref() {
                total += data.remaining() as u64;
                if total > DISCARD_BYTES {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, read).await;
}
