//! The Flowtask OAuth endpoints over [`crate::oidc`]:
//! `GET /api/v1/oauth/{name}/connect` answers `{"authUrl","state"}` and sets
//! the browser-binding cookie; `GET /api/v1/oauth/{name}/callback` finishes
//! the sign-in and redirects the browser (never answers JSON: it is a
//! top-level navigation coming back from the provider).

use crate::request::body::RequestBody;
use http::{HeaderValue, Request, Response, StatusCode, header};

use super::error::ApiError;
use super::handlers::append_session_cookies;
use super::response::{self, Body, append_cookie, json};
use super::{App, RequestContext};
use crate::auth::throttle::Rate;
use crate::auth::{AuthError, ClientInfo};
use crate::oidc::{BINDING_COOKIE, CallbackError, CallbackQuery, form_pairs};

/// How much longer than the state the binding cookie lives.
const BINDING_GRACE_SECS: u64 = 600;

/// Which step a path names, for the endpoint table.
pub(super) fn step_for(canonical: &str) -> Option<super::Endpoint> {
    let rest = canonical.strip_prefix("/api/v1/oauth/")?;
    let (name, step) = rest.split_once('/')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    match step {
        "connect" => Some(super::Endpoint::OAuthConnect),
        "callback" => Some(super::Endpoint::OAuthCallback),
        _ => None,
    }
}

/// The provider name from the request path (canonicalised the same way as
/// for routing, so `/API/v1/OAuth/Google/connect` names `google`).
fn provider_name(req: &Request<RequestBody>) -> Option<String> {
    let canonical = super::path::canonical(req.uri().path()).ok()?;
    let rest = canonical
        .trim_end_matches('/')
        .strip_prefix("/api/v1/oauth/")?;
    rest.split_once('/').map(|(name, _)| name.to_string())
}

pub async fn connect(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    throttle_connect(app, &ctx.client_info(app, req.headers()))?;
    let name = provider_name(&req).unwrap_or_default();
    let callback_url = form_pairs(req.uri().query().unwrap_or(""))
        .find(|(k, _)| k == "callbackUrl")
        .map(|(_, v)| v);
    let existing = cookie_value(req.headers(), BINDING_COOKIE);
    let started = app
        .oidc
        .connect(&name, callback_url.as_deref(), existing.as_deref())
        .await?;
    let mut resp = json(
        StatusCode::OK,
        &serde_json::json!({ "authUrl": started.auth_url, "state": started.state }),
    );
    append_cookie(&mut resp, &binding_cookie(app, &started.binding));
    Ok(resp)
}

/// Each connect stores a pending sign-in: limited per client address
/// (the JSON endpoint and the pages' "Sign in with" buttons alike).
pub(super) fn throttle_connect(app: &App, client: &ClientInfo) -> Result<(), ApiError> {
    app.auth
        .throttle
        .hit(Rate::OAuthConnectPerIp, &client.ip_key)
        .map_err(|retry_after| AuthError::Throttled { retry_after }.into())
}

/// The `Set-Cookie` value binding a started sign-in to this browser. The
/// cookie outlives the state a little, so a late return is told
/// `expired_state` rather than `invalid_state`.
pub(super) fn binding_cookie(app: &App, binding: &str) -> String {
    let ttl = app.oidc.state_ttl().as_secs() + BINDING_GRACE_SECS;
    format!("{BINDING_COOKIE}={binding}; Path=/; Max-Age={ttl}; Secure; HttpOnly; SameSite=Lax")
}

pub async fn callback(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let name = provider_name(&req).unwrap_or_default();
    let query = CallbackQuery::parse(req.uri().query());
    let binding = cookie_value(req.headers(), BINDING_COOKIE);
    let previous = app.auth.sessions.token_hash_from(req.headers());
    let client = ctx.client_info(app, req.headers());
    let oauth = &app.oidc.oauth;
    let outcome = app.oidc.callback(&name, query, binding.as_deref()).await;
    let resp = match outcome {
        Ok(done) => match app
            .auth
            .start_external_session(&done.user, done.created, previous, &client)
            .await
        {
            Ok(signed_in) => {
                let path = match (&done.callback_path, done.created) {
                    (Some(path), _) => path.as_str(),
                    (None, true) => oauth.new_user_path.as_str(),
                    (None, false) => oauth.success_path.as_str(),
                };
                let mut resp = redirect(oauth.frontend_url.as_deref(), path);
                append_session_cookies(&mut resp, app, &signed_in);
                // Signed in: the binding has done its job. (A failure keeps
                // it, so a sign-in still pending in another tab can finish.)
                append_cookie(
                    &mut resp,
                    &format!(
                        "{BINDING_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
                    ),
                );
                resp
            }
            Err(error) => {
                tracing::error!(%error, "OIDC sign-in: session could not be started");
                error_redirect(app, CallbackError::OauthFailed)
            }
        },
        Err(code) => error_redirect(app, code),
    };
    Ok(resp)
}

fn error_redirect(app: &App, error: CallbackError) -> Response<Body> {
    let oauth = &app.oidc.oauth;
    let joiner = if oauth.error_path.contains('?') {
        '&'
    } else {
        '?'
    };
    let path = format!("{}{joiner}error={}", oauth.error_path, error.code());
    redirect(oauth.frontend_url.as_deref(), &path)
}

/// A 302 to `frontend_url` + `path` (both checked: see `config::oidc`).
fn redirect(frontend_url: Option<&str>, path: &str) -> Response<Body> {
    let location = format!("{}{path}", frontend_url.unwrap_or(""));
    let mut resp = response::redirect(StatusCode::FOUND, &location);
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The value of cookie `name` (first occurrence, across `Cookie` headers).
fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_steps() {
        assert_eq!(
            step_for("/api/v1/oauth/google/connect"),
            Some(super::super::Endpoint::OAuthConnect)
        );
        assert_eq!(
            step_for("/api/v1/oauth/x/callback"),
            Some(super::super::Endpoint::OAuthCallback)
        );
        assert_eq!(step_for("/api/v1/oauth/google/other"), None);
        assert_eq!(step_for("/api/v1/oauth/a/b/connect"), None);
        assert_eq!(step_for("/api/v1/oauth//connect"), None);
    }

    #[test]
    fn binding_cookie_is_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-gatehouse-oidc=abc"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-gatehouse-oidc=later"),
        );
        assert_eq!(cookie_value(&h, BINDING_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie_value(&http::HeaderMap::new(), BINDING_COOKIE), None);
    }

    #[test]
    fn redirects_join_the_frontend_and_path() {
        let r = redirect(
            Some("https://app.example.com"),
            "/signin?error=oauth_failed",
        );
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://app.example.com/signin?error=oauth_failed"
        );
        assert_eq!(
            redirect(None, "/app/today").headers()[header::LOCATION],
            "/app/today"
        );
    }
}
