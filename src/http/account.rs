//! The account self-service endpoints: forgotten password, password and
//! email changes, the caller's own sessions, account deletion. JSON in and
//! out like the other auth endpoints; outcomes are decided in
//! [`crate::auth`]. CSRF and `Cache-Control: no-store` come from the
//! pipeline and [`super::response::json`], as for every endpoint.

use crate::request::body::RequestBody;
use http::{Request, Response, StatusCode};

use crate::auth::{AuthError, SessionInfo};
use crate::http::access::Served;

use super::error::ApiError;
use super::handlers::{JsonCall, required_code, signed_in, signed_in_response};
use super::response::{Body, append_cookie, json, json_ok, json_time};
use super::{App, RequestContext, path};

const SESSIONS_PREFIX: &str = "/api/v1/user/sessions/";

/// The `{id}` of `/api/v1/user/sessions/{id}` (trailing slash trimmed).
pub(super) fn session_id(canonical: &str) -> Option<&str> {
    canonical
        .strip_prefix(SESSIONS_PREFIX)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

fn session_json(s: &SessionInfo) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "createdAt": json_time(s.created_at),
        "lastSeenAt": json_time(s.last_seen_at),
        "ip": s.ip,
        "userAgent": s.user_agent,
        "current": s.current,
    })
}

pub async fn forgot_password(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let JsonCall { client, body } = JsonCall::read(app, ctx, req).await?;
    let email = super::required_str(&body, "email")?;
    app.auth.forgot_password(email, &client).await?;
    Ok(json_ok(
        "If an account exists for this email, a reset code has been sent",
    ))
}

pub async fn reset_password(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let JsonCall { client, body } = JsonCall::read(app, ctx, req).await?;
    let email = super::required_str(&body, "email")?;
    let code = required_code(&body)?;
    let password = super::required_str(&body, "password")?;
    let signed_in = app
        .auth
        .reset_password(email, &code, password, &client)
        .await?;
    Ok(signed_in_response(
        app,
        "Password reset successfully",
        &signed_in,
    ))
}

pub async fn change_password(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let (who, JsonCall { client, body }) = JsonCall::signed_in(app, ctx, req, served).await?;
    let current = super::required_str(&body, "currentPassword")?;
    let new = super::required_str(&body, "newPassword")?;
    let token = app
        .auth
        .change_password(&who, current, new, &client)
        .await?;
    let mut resp = json_ok("Password changed successfully");
    append_cookie(&mut resp, &app.auth.sessions.set_cookie(&token.token));
    Ok(resp)
}

pub async fn own_sessions(
    app: &App,
    req: &Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let who = signed_in(app, req.headers(), served)?;
    let sessions = app.auth.own_sessions(&who).await?;
    let list: Vec<serde_json::Value> = sessions.iter().map(session_json).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "sessions": list }),
    ))
}

pub async fn end_own_session(
    app: &App,
    req: &Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let who = signed_in(app, req.headers(), served)?;
    let canonical = path::canonical(req.uri().path())?;
    let id = session_id(canonical.trim_end_matches('/')).ok_or(AuthError::SessionNotFound)?;
    let was_current = app.auth.end_own_session(&who, id).await?;
    let mut resp = json_ok("Session ended");
    if was_current {
        append_cookie(&mut resp, &app.auth.sessions.clear_cookie());
    }
    Ok(resp)
}

pub async fn email_change(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let (who, JsonCall { client, body }) = JsonCall::signed_in(app, ctx, req, served).await?;
    let new_email = super::required_str(&body, "newEmail")?;
    let password = super::required_str(&body, "password")?;
    app.auth
        .request_email_change(&who, new_email, password, &client)
        .await?;
    Ok(json_ok(
        "A confirmation code has been sent to the new address",
    ))
}

pub async fn email_verify(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let (who, JsonCall { client, body }) = JsonCall::signed_in(app, ctx, req, served).await?;
    let code = required_code(&body)?;
    let done = app.auth.verify_email_change(&who, &code, &client).await?;
    let mut resp = json_ok("Email changed successfully");
    append_cookie(
        &mut resp,
        &app.auth.sessions.set_device_cookie(&done.device_mark),
    );
    Ok(resp)
}

pub async fn delete_account(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let (who, JsonCall { client, body }) = JsonCall::signed_in(app, ctx, req, served).await?;
    let password = super::required_str(&body, "password")?;
    app.auth.delete_own_account(&who, password, &client).await?;
    let mut resp = json_ok("Account deleted");
    append_cookie(&mut resp, &app.auth.sessions.clear_cookie());
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_come_from_one_path_segment() {
        assert_eq!(session_id("/api/v1/user/sessions/abc"), Some("abc"));
        assert_eq!(session_id("/api/v1/user/sessions/"), None);
        assert_eq!(session_id("/api/v1/user/sessions/a/b"), None);
        assert_eq!(session_id("/api/v1/user/sessionsx"), None);
    }
}
