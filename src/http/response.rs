//! Response bodies and the JSON responses Gatehouse writes itself, all with
//! the same protective headers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

// The body type every response carries is defined next to the upstream
// body it wraps (the proxy builds it too); re-exported here because every
// answer Gatehouse writes itself is built from it.
pub use crate::proxy::body::{Body, BoxError, full};

/// A response of `status` carrying `body` as `content_type`; callers add
/// the headers their kind of answer needs.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A redirect (or any bodiless answer naming a `Location`). A location
/// that is not a valid header value is left out rather than answered
/// with an error: every caller passes a checked path or URL.
pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Adds a `Set-Cookie` header (several may be set on one answer). A value
/// that is not a valid header value is dropped: cookies are built here
/// from ASCII tokens.
pub fn append_cookie(resp: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A JSON response with `Cache-Control: no-store` and `nosniff`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = with_body(status, "application/json; charset=utf-8", value.to_string());
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `{"message": m, "msg": m}`: the documented error shape plus the field
/// clients of the original Express backend read.
pub fn json_message(status: StatusCode, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "message": message, "msg": message }),
    )
}

/// A success body in the original backend's shape: `{"msg": m}`.
pub fn json_ok(message: &str) -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({ "msg": message }))
}

/// A stored time as the JSON API writes it: `2026-11-28T18:30:05.123Z`, the
/// form JavaScript's `Date` reads and `toISOString()` writes (UTC, always
/// three fractional digits).
pub(crate) fn json_time(ms: u64) -> String {
    const JS_DATE: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    i64::try_from(ms)
        .ok()
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|t| t.format(JS_DATE).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

#[cfg(test)]
mod json_time_tests {
    use super::json_time;

    #[test]
    fn times_are_javascript_dates() {
        assert_eq!(json_time(1_795_890_605_042), "2026-11-28T18:30:05.042Z");
        assert_eq!(json_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(json_time(1_000), "1970-01-01T00:00:01.000Z");
    }
}
