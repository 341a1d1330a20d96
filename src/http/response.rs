//! Response bodies and the JSON responses Gatehouse writes itself, all with
//! the same protective headers.

use http::{HeaderValue, Response, StatusCode, header};

// The body type every response carries is defined next to the upstream
// body it wraps (the proxy builds it too); re-exported here because every
// answer Gatehouse writes itself is built from it.
pub use crate::proxy::body::{Body, BoxError, full};

/// A JSON response with `Cache-Control: no-store` and `nosniff`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
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
