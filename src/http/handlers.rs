//! The Flowtask auth endpoints Gatehouse answers itself: JSON in, JSON out,
//! session cookies set and cleared. Outcomes are decided in [`crate::auth`].

use crate::request::body::RequestBody;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};

use crate::auth::sessions::Identity;
use crate::auth::{AuthError, ClientInfo, SignedIn};

use super::error::ApiError;
use super::response::{Body, append_cookie, json, json_ok};
use super::{App, RequestContext};
use crate::http::access::Served;

/// What a JSON endpoint reads before its own work, in the order each one
/// reads it: where the call comes from, then the bounded JSON body.
pub(super) struct JsonCall {
    pub client: ClientInfo,
    pub body: Map<String, Value>,
}

impl JsonCall {
    pub(super) async fn read(
        app: &App,
        ctx: &RequestContext,
        req: Request<RequestBody>,
    ) -> Result<JsonCall, ApiError> {
        let client = ctx.client_info(app, req.headers());
        let body = read_json(app, req).await?;
        Ok(JsonCall { client, body })
    }

    /// The same for an endpoint that needs a session: the caller first, so
    /// a call without one is answered 401 before its body is read.
    pub(super) async fn signed_in(
        app: &App,
        ctx: &RequestContext,
        req: Request<RequestBody>,
        served: &mut Served,
    ) -> Result<(std::sync::Arc<Identity>, JsonCall), ApiError> {
        let who = signed_in(app, req.headers(), served)?;
        Ok((who, JsonCall::read(app, ctx, req).await?))
    }
}

/// The caller's identity (recorded for the access log), or 401.
pub(super) fn signed_in(
    app: &App,
    headers: &http::HeaderMap,
    served: &mut Served,
) -> Result<std::sync::Arc<Identity>, ApiError> {
    let who = app
        .auth
        .sessions
        .authenticate(headers)?
        .ok_or(AuthError::NotAuthenticated)?;
    served.user = Some(who.user_id);
    Ok(who)
}

pub async fn send_otp(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let JsonCall { client, body } = JsonCall::read(app, ctx, req).await?;
    let email = required_str(&body, "email")?;
    app.auth.send_otp(email, &client).await?;
    Ok(json_ok("OTP sent successfully"))
}

pub async fn verify(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let JsonCall { client, body } = JsonCall::read(app, ctx, req).await?;
    let email = required_str(&body, "email")?;
    let code = required_code(&body)?;
    let password = required_str(&body, "password")?;
    let signed_in = app.auth.verify(email, &code, password, &client).await?;
    Ok(signed_in_response(
        app,
        "Account created successfully",
        &signed_in,
    ))
}

pub async fn sign_in(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let previous = app.auth.sessions.token_hash_from(req.headers());
    let JsonCall { client, body } = JsonCall::read(app, ctx, req).await?;
    let email = required_str(&body, "email")?;
    let password = required_str(&body, "password")?;
    let step = app.auth.sign_in(email, password, previous, &client).await?;
    Ok(sign_in_answer(app, step))
}

pub(super) fn signed_in_response(app: &App, message: &str, signed_in: &SignedIn) -> Response<Body> {
    let mut resp = json_ok(message);
    append_session_cookies(&mut resp, app, signed_in);
    resp
}

/// The cookies of a new session: the session itself and the device mark.
pub(super) fn append_session_cookies(resp: &mut Response<Body>, app: &App, signed_in: &SignedIn) {
    append_cookie(resp, &app.auth.sessions.set_cookie(&signed_in.token.token));
    append_cookie(
        resp,
        &app.auth.sessions.set_device_cookie(&signed_in.device_mark),
    );
}

pub fn auth_check(
    app: &App,
    req: &Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let who = app.auth.sessions.authenticate(req.headers())?;
    served.user = who.as_ref().map(|w| w.user_id);
    let body = match who {
        Some(who) => serde_json::json!({ "isAuthenticated": true, "email": &*who.email }),
        None => serde_json::json!({ "isAuthenticated": false }),
    };
    Ok(json(http::StatusCode::OK, &body))
}

pub async fn logout(
    app: &App,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let token = app.auth.sessions.token_hash_from(req.headers());
    served.user = session_user(app, token.as_ref());
    let clear = app.auth.sessions.clear_cookie();
    let mut resp = match app.auth.logout(token).await {
        Ok(()) => json_ok("Logged out successfully"),
        Err(e) => ApiError::from(e).into_response(),
    };
    // The cookie is cleared whether or not a session was found.
    append_cookie(&mut resp, &clear);
    Ok(resp)
}

pub async fn logout_all(
    app: &App,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let token = app.auth.sessions.token_hash_from(req.headers());
    served.user = session_user(app, token.as_ref());
    let clear = app.auth.sessions.clear_cookie();
    let mut resp = match app.auth.logout_all(token).await {
        Ok(n) => json(
            http::StatusCode::OK,
            &serde_json::json!({ "msg": "Logged out of all sessions", "sessions": n }),
        ),
        Err(e) => ApiError::from(e).into_response(),
    };
    append_cookie(&mut resp, &clear);
    Ok(resp)
}

/// The user of the live session `token` names, for the access log line.
fn session_user(app: &App, token: Option<&crate::store::TokenHash>) -> Option<u64> {
    let who = app.auth.sessions.authenticate_hash(token?).ok()??;
    Some(who.user_id)
}

/// Reads a bounded JSON object body.
pub(super) async fn read_json(
    app: &App,
    req: Request<RequestBody>,
) -> Result<Map<String, Value>, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared_too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > app.max_body_bytes as u64);
    if declared_too_large {
        return Err(ApiError::BodyTooLarge);
    }
    let bytes = read_bounded(app, req.into_body()).await?;
    parse_object(&bytes)
}

/// Reads a request body of at most `max_body_bytes` under a total
/// deadline: a small body that trickles in must not hold the connection
/// (and a hashing slot's worth of attention) for long.
pub(super) async fn read_bounded(app: &App, body: RequestBody) -> Result<Bytes, ApiError> {
    let collect = Limited::new(body, app.max_body_bytes).collect();
    Ok(tokio::time::timeout(app.hygiene.body_read_timeout, collect)
        .await
        .map_err(|_| ApiError::BodyTimeout)?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::BodyTooLarge
            } else if let Some(crate::request::body::BodyError::TooSlow) = e.downcast_ref() {
                ApiError::BodyTimeout
            } else {
                ApiError::BodyRead
            }
        })?
        .to_bytes())
}

/// Parses a request body that must be one JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadBody(
            "Request body must be a JSON object".into(),
        ));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::BadBody("Request body must be UTF-8 JSON".into()));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadBody(
            "Request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadBody(format!(
            "Malformed JSON at line {} column {}",
            e.line(),
            e.column()
        ))),
    }
}

/// A required, non-empty string field without NUL bytes.
pub fn required_str<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(crate::auth::AuthError::MissingField(field).into()),
        Some(Value::String(s)) if s.is_empty() => {
            Err(crate::auth::AuthError::MissingField(field).into())
        }
        Some(Value::String(s)) if s.contains('\0') => Err(ApiError::BadBody(format!(
            "Field `{field}` contains a NUL character"
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::BadBody(format!(
            "Field `{field}` must be a string"
        ))),
    }
}

/// The code may arrive as a string or, from lenient clients, as a number;
/// a number keeps its leading zeros only as a string, so it is padded.
pub(super) fn required_code(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("code") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v < 1_000_000 => Ok(format!("{v:06}")),
            _ => Err(crate::auth::AuthError::InvalidCode.into()),
        },
        _ => required_str(body, "code").map(str::to_string),
    }
}

/// The answer to a correct password: a session, or (second factor
/// required) the pending cookie and `mfaRequired`.
fn sign_in_answer(app: &App, step: crate::auth::mfa::SignInStep) -> Response<Body> {
    match step {
        crate::auth::mfa::SignInStep::Done(signed_in) => {
            signed_in_response(app, "Signed in successfully", &signed_in)
        }
        crate::auth::mfa::SignInStep::SecondFactor { pending_token } => {
            let mut resp = json(
                http::StatusCode::OK,
                &serde_json::json!({
                    "msg": "Second factor required",
                    "mfaRequired": true,
                    "methods": crate::auth::mfa::METHODS,
                }),
            );
            append_cookie(&mut resp, &app.auth.mfa.set_pending_cookie(&pending_token));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(bytes: &[u8]) -> String {
        parse_object(bytes).unwrap_err().to_string()
    }

    #[test]
    fn body_parsing_errors_are_clear() {
        assert_eq!(err(b""), "Request body must be a JSON object");
        assert_eq!(err(b"[1]"), "Request body must be a JSON object");
        assert_eq!(err(b"\xff\xfe"), "Request body must be UTF-8 JSON");
        assert!(err(b"{\"email\":").starts_with("Malformed JSON"));
        let deep = "[".repeat(10_000);
        assert!(err(deep.as_bytes()).starts_with("Malformed JSON"));
        assert!(parse_object(b"{\"n\": 1e999999}").is_err());
    }

    #[test]
    fn field_extraction() {
        let body = parse_object(br#"{"email":"a@b.co","n":5,"z":"a\u0000b","e":""}"#).unwrap();
        assert_eq!(required_str(&body, "email").unwrap(), "a@b.co");
        assert_eq!(
            required_str(&body, "n").unwrap_err().to_string(),
            "Field `n` must be a string"
        );
        assert!(
            required_str(&body, "z")
                .unwrap_err()
                .to_string()
                .contains("NUL")
        );
        assert!(
            required_str(&body, "e")
                .unwrap_err()
                .to_string()
                .contains("Missing")
        );
        assert!(
            required_str(&body, "nope")
                .unwrap_err()
                .to_string()
                .contains("Missing")
        );
        let code = parse_object(br#"{"code": 42}"#).unwrap();
        assert_eq!(required_code(&code).unwrap(), "000042");
    }
}
