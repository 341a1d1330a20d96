//! The second-factor endpoints: TOTP setup/enable/disable, recovery codes,
//! and `POST /api/v1/user/signin/2fa`, which completes a pending sign-in.
//! Outcomes are decided in [`crate::auth::mfa`]; JSON in and out, errors
//! `{"message","msg"}`, `Cache-Control: no-store` like every endpoint.

use http::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value};

use crate::auth::AuthError;
use crate::auth::mfa::{MfaError, SecondFactor};
use crate::http::access::Served;
use crate::request::body::RequestBody;

use super::error::ApiError;
use super::handlers::{JsonCall, read_json, required_str, signed_in, signed_in_response};
use super::response::{Body, append_cookie, json, json_ok, json_time};
use super::{App, RequestContext};

/// One second-factor endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    TotpSetup,
    TotpEnable,
    TotpDisable,
    RecoveryCodes,
    /// Completes a pending sign-in (no session; the pending cookie).
    SignIn2fa,
    PasskeyRegisterStart,
    PasskeyRegisterFinish,
    /// `GET /api/v1/user/passkeys`.
    PasskeyList,
    /// `DELETE /api/v1/user/passkeys/{id}`.
    PasskeyDelete,
    /// No session (passwordless, or with the pending cookie).
    PasskeyLoginStart,
    PasskeyLoginFinish,
}

const PASSKEYS_PREFIX: &str = "/api/v1/user/passkeys/";

/// The `{id}` of `/api/v1/user/passkeys/{id}`.
fn passkey_id(canonical: &str) -> Option<&str> {
    canonical
        .strip_prefix(PASSKEYS_PREFIX)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

impl Step {
    pub(super) fn for_path(canonical: &str) -> Option<Step> {
        Some(match canonical {
            "/api/v1/user/2fa/totp/setup" => Step::TotpSetup,
            "/api/v1/user/2fa/totp/enable" => Step::TotpEnable,
            "/api/v1/user/2fa/totp/disable" => Step::TotpDisable,
            "/api/v1/user/2fa/recovery-codes" => Step::RecoveryCodes,
            "/api/v1/user/signin/2fa" => Step::SignIn2fa,
            "/api/v1/user/passkeys" => Step::PasskeyList,
            "/api/v1/user/passkeys/register/start" => Step::PasskeyRegisterStart,
            "/api/v1/user/passkeys/register/finish" => Step::PasskeyRegisterFinish,
            "/api/v1/user/passkeys/login/start" => Step::PasskeyLoginStart,
            "/api/v1/user/passkeys/login/finish" => Step::PasskeyLoginFinish,
            other if passkey_id(other).is_some() => Step::PasskeyDelete,
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Step::TotpSetup => "2fa-totp-setup",
            Step::TotpEnable => "2fa-totp-enable",
            Step::TotpDisable => "2fa-totp-disable",
            Step::RecoveryCodes => "2fa-recovery-codes",
            Step::SignIn2fa => "signin-2fa",
            Step::PasskeyRegisterStart => "passkey-register-start",
            Step::PasskeyRegisterFinish => "passkey-register-finish",
            Step::PasskeyList => "passkeys-list",
            Step::PasskeyDelete => "passkey-delete",
            Step::PasskeyLoginStart => "passkey-login-start",
            Step::PasskeyLoginFinish => "passkey-login-finish",
        }
    }

    pub(super) fn method(self) -> Method {
        match self {
            Step::PasskeyList => Method::GET,
            Step::PasskeyDelete => Method::DELETE,
            _ => Method::POST,
        }
    }
}

pub(super) async fn serve(
    app: &App,
    ctx: &RequestContext,
    step: Step,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    match step {
        Step::SignIn2fa => sign_in_2fa(app, ctx, req).await,
        Step::PasskeyRegisterStart
        | Step::PasskeyRegisterFinish
        | Step::PasskeyList
        | Step::PasskeyDelete
        | Step::PasskeyLoginStart
        | Step::PasskeyLoginFinish => passkeys(app, ctx, step, req, served).await,
        Step::TotpSetup => {
            let (who, JsonCall { client, body }) =
                JsonCall::signed_in(app, ctx, req, served).await?;
            let password = required_str(&body, "password")?;
            let setup = app.auth.totp_setup(&who, password, &client).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "secret": setup.secret, "otpauthUrl": setup.otpauth_url }),
            ))
        }
        Step::TotpEnable => {
            let (who, JsonCall { client, body }) =
                JsonCall::signed_in(app, ctx, req, served).await?;
            let code = code_field(&body, "code")?;
            let enabled = app.auth.totp_enable(&who, &code, &client).await?;
            let mut resp = json(
                StatusCode::OK,
                &serde_json::json!({ "recoveryCodes": enabled.recovery_codes }),
            );
            append_cookie(
                &mut resp,
                &app.auth.sessions.set_cookie(&enabled.token.token),
            );
            Ok(resp)
        }
        Step::TotpDisable => {
            let (who, JsonCall { client, body }) =
                JsonCall::signed_in(app, ctx, req, served).await?;
            let password = required_str(&body, "password")?;
            let code = code_field(&body, "code")?;
            app.auth
                .totp_disable(&who, password, &code, &client)
                .await?;
            Ok(json_ok("TOTP disabled"))
        }
        Step::RecoveryCodes => {
            let (who, JsonCall { client, body }) =
                JsonCall::signed_in(app, ctx, req, served).await?;
            let password = required_str(&body, "password")?;
            let codes = app
                .auth
                .renew_recovery_codes(&who, password, &client)
                .await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "recoveryCodes": codes }),
            ))
        }
    }
}

fn relying_party(
    app: &App,
    ctx: &RequestContext,
) -> Result<crate::auth::passkeys::RelyingParty, ApiError> {
    let authority = match &ctx.authority {
        Ok(Some(a)) => Some(a.as_str()),
        _ => None,
    };
    app.auth
        .mfa
        .relying_party(authority, ctx.peer.tls)
        .ok_or_else(|| MfaError::PasskeyRefused.into())
}

fn passkey_json(p: &crate::auth::passkeys::PasskeyInfo) -> Value {
    serde_json::json!({
        "id": p.id,
        "name": p.name,
        "createdAt": json_time(p.created_at),
        "lastUsedAt": p.last_used_at.map(json_time),
    })
}

/// The browser's `PublicKeyCredential` (as `toJSON()` gives it), re-encoded
/// for the relying-party crate.
fn credential_field(body: &Map<String, Value>) -> Result<Vec<u8>, ApiError> {
    match body.get("credential") {
        Some(v @ Value::Object(_)) => Ok(v.to_string().into_bytes()),
        Some(Value::Null) | None => Err(AuthError::MissingField("credential").into()),
        Some(_) => Err(ApiError::BadBody(
            "Field `credential` must be an object".into(),
        )),
    }
}

async fn passkeys(
    app: &App,
    ctx: &RequestContext,
    step: Step,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let rp = relying_party(app, ctx)?;
    match step {
        Step::PasskeyRegisterStart => {
            let who = signed_in(app, req.headers(), served)?;
            let _ = read_json(app, req).await?;
            let options = app.auth.passkey_register_start(&who, &rp).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "publicKey": options }),
            ))
        }
        Step::PasskeyRegisterFinish => {
            let who = signed_in(app, req.headers(), served)?;
            let body = read_json(app, req).await?;
            let credential = credential_field(&body)?;
            let name = match body.get("name") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                _ => "Passkey".to_string(),
            };
            let added = app
                .auth
                .passkey_register_finish(&who, &rp, &credential, &name)
                .await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "id": added.id, "name": added.name }),
            ))
        }
        Step::PasskeyList => {
            let who = signed_in(app, req.headers(), served)?;
            let list = app.auth.passkeys_of(&who).await?;
            let list: Vec<Value> = list.iter().map(passkey_json).collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "passkeys": list }),
            ))
        }
        Step::PasskeyDelete => {
            let who = signed_in(app, req.headers(), served)?;
            let canonical = super::path::canonical(req.uri().path())?;
            let id = passkey_id(canonical.trim_end_matches('/'))
                .ok_or(MfaError::PasskeyNotFound)?
                .to_string();
            app.auth.passkey_delete(&who, &id).await?;
            Ok(json_ok("Passkey deleted"))
        }
        Step::PasskeyLoginStart => {
            let (pending, JsonCall { client, body: _ }) = pending_call(app, ctx, req).await?;
            let options = app
                .auth
                .passkey_login_start(&rp, pending.as_deref(), &client)
                .await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "publicKey": options }),
            ))
        }
        _ => {
            let (pending, JsonCall { client, body }) = pending_call(app, ctx, req).await?;
            let credential = credential_field(&body)?;
            let signed_in = app
                .auth
                .passkey_login_finish(&rp, &credential, pending.as_deref(), &client)
                .await?;
            let mut resp = signed_in_response(app, "Signed in successfully", &signed_in);
            if pending.is_some() {
                append_cookie(&mut resp, &app.auth.mfa.clear_pending_cookie());
            }
            Ok(resp)
        }
    }
}

/// What the steps that finish a pending sign-in read first: the pending
/// cookie's token (if the browser sent one), then the call.
async fn pending_call(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
) -> Result<(Option<String>, JsonCall), ApiError> {
    let pending = app
        .auth
        .mfa
        .pending_token(req.headers())
        .map(str::to_string);
    Ok((pending, JsonCall::read(app, ctx, req).await?))
}

/// `POST /api/v1/user/signin/2fa` with `{"code"}` or `{"recoveryCode"}`.
/// The pending cookie is cleared once the step succeeds or is void.
async fn sign_in_2fa(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (pending, JsonCall { client, body }) = pending_call(app, ctx, req).await?;
    let code;
    let answer = if body.get("recoveryCode").is_some_and(|v| !v.is_null()) {
        SecondFactor::RecoveryCode(required_str(&body, "recoveryCode")?)
    } else if body.get("code").is_some_and(|v| !v.is_null()) {
        code = code_field(&body, "code")?;
        SecondFactor::Code(&code)
    } else {
        return Err(MfaError::MissingAnswer.into());
    };
    match app
        .auth
        .complete_second_factor(pending.as_deref(), answer, &client)
        .await
    {
        Ok(signed_in) => {
            let mut resp = signed_in_response(app, "Signed in successfully", &signed_in);
            append_cookie(&mut resp, &app.auth.mfa.clear_pending_cookie());
            Ok(resp)
        }
        Err(e @ MfaError::PendingMissing) => {
            let mut resp = ApiError::from(e).into_response();
            append_cookie(&mut resp, &app.auth.mfa.clear_pending_cookie());
            Ok(resp)
        }
        Err(e) => Err(e.into()),
    }
}

/// A 6-digit code as a string, or as a number from lenient clients
/// (leading zeros restored). Spaces typed between digit groups are dropped.
fn code_field(body: &Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    match body.get(field) {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v < 1_000_000 => Ok(format!("{v:06}")),
            _ => Err(MfaError::InvalidCode.into()),
        },
        _ => Ok(required_str(body, field)?.replace(' ', "")),
    }
}
