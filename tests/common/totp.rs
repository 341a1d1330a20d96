//! TOTP as the user's authenticator app does it: codes computed here (RFC
//! 6238 through `totp-rs`) from the secret `totp/setup` returned, and the
//! whole enrolment (setup, then enable) through the JSON API.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{Gatehouse, session_cookie};

const SETUP: &str = "/api/v1/user/2fa/totp/setup";
const ENABLE: &str = "/api/v1/user/2fa/totp/enable";

/// The app's view of the secret `totp/setup` returned.
pub fn authenticator(secret_b32: &str) -> totp_rs::Totp {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).expect("base32 secret");
    totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .expect("RFC 6238 parameters")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code `steps` 30-second steps from now (negative: a slow phone).
pub fn code(app: &totp_rs::Totp, steps: i64) -> String {
    code_from(app, unix_now(), steps)
}

fn code_from(app: &totp_rs::Totp, base: u64, steps: i64) -> String {
    app.generate((base as i64 + steps * 30) as u64).to_string()
}

/// An enabled TOTP factor.
pub struct TotpEnrolment {
    pub app: totp_rs::Totp,
    /// Unix seconds at enrolment, where [`TotpEnrolment::code_at`] counts
    /// from (so two calls with one step give one code, even across a step
    /// boundary: what replay tests need).
    pub enrolled_at: u64,
    /// The ten recovery codes `totp/enable` answered.
    pub recovery_codes: Vec<String>,
    /// The renewed session cookie (`name=value`) `totp/enable` set.
    pub session: String,
}

impl TotpEnrolment {
    /// The code `steps` 30-second steps from enrolment.
    pub fn code_at(&self, steps: i64) -> String {
        code_from(&self.app, self.enrolled_at, steps)
    }
}

impl Gatehouse {
    /// Sets TOTP up for the account signed in with `cookie` (whose password
    /// is `password`) and enables it with the previous step's code, as a
    /// phone a little behind would.
    pub async fn enrol_totp(&self, cookie: &str, password: &str) -> TotpEnrolment {
        let resp = self
            .post_json_with_cookie(SETUP, json!({ "password": password }), cookie)
            .await;
        let status = resp.status();
        let setup: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(status, 200, "{setup}");
        let app = authenticator(setup["secret"].as_str().unwrap());
        let enrolled_at = unix_now();
        let resp = self
            .post_json_with_cookie(
                ENABLE,
                json!({ "code": code_from(&app, enrolled_at, -1) }),
                cookie,
            )
            .await;
        assert_eq!(resp.status(), 200);
        let session = session_cookie(&resp, self.cookie_name()).expect("enable renews the session");
        let enabled: serde_json::Value = resp.json().await.unwrap();
        let recovery_codes = enabled["recoveryCodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        TotpEnrolment {
            app,
            enrolled_at,
            recovery_codes,
            session,
        }
    }
}
