//! Response bodies and the JSON responses Gatehouse writes itself, all with
//! the same protective headers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Errors a streamed body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body: small owned JSON or a streamed upstream body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

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
