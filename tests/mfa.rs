//! Second factors, black-box against the real binary with the real SMTP
//! sink: TOTP enrolment with codes computed here (RFC 6238 through
//! `totp-rs`), the pending sign-in and its `__Host-` cookie, replay, one
//! step of clock skew, wrong codes and back-off, recovery codes, disabling,
//! the notices, what the store keeps, and the operator's reset.

mod common;

use std::time::Duration;

use common::totp::{authenticator, code};
use common::{Gatehouse, Options, session_cookie, set_cookie_header};
use serde_json::{Value, json};

const SETUP: &str = "/api/v1/user/2fa/totp/setup";
const ENABLE: &str = "/api/v1/user/2fa/totp/enable";
const DISABLE: &str = "/api/v1/user/2fa/totp/disable";
const RECOVERY: &str = "/api/v1/user/2fa/recovery-codes";
const SIGNIN: &str = "/api/v1/user/signin";
const SIGNIN_2FA: &str = "/api/v1/user/signin/2fa";
const PASSWORD: &str = "correct horse battery";

/// Generous back-off thresholds unless a test is about them.
async fn start(limits: &str) -> Gatehouse {
    Gatehouse::start_with(Options {
        extra_toml: format!("[mfa]\nissuer = \"Acme Test\"\n[limits]\n{limits}"),
        ..Options::default()
    })
    .await
}

fn pending_name(g: &Gatehouse) -> String {
    format!("{}_mfa", g.cookie_name())
}

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Signs up, sets TOTP up and enables it with the previous step's code.
/// Returns the authenticator, the recovery codes and the new session.
async fn enrolled(g: &Gatehouse, email: &str) -> (totp_rs::Totp, Vec<String>, String) {
    let cookie = g.sign_up(email, PASSWORD).await;
    let totp = g.enrol_totp(&cookie, PASSWORD).await;
    (totp.app, totp.recovery_codes, totp.session)
}

/// Password sign-in of an enrolled user: `mfaRequired` and the pending
/// cookie (`name=value`), and no session cookie.
async fn first_factor(g: &Gatehouse, email: &str) -> String {
    let resp = g
        .post_json(SIGNIN, json!({ "email": email, "password": PASSWORD }))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        session_cookie(&resp, g.cookie_name()).is_none(),
        "no session before the second factor"
    );
    let pending = session_cookie(&resp, &pending_name(g)).expect("pending cookie");
    let (_, answer) = body(resp).await;
    assert_eq!(answer["mfaRequired"], true, "{answer}");
    assert_eq!(answer["msg"], "Second factor required");
    assert_eq!(answer["methods"], json!(["totp", "passkey", "recovery"]));
    pending
}

/// Waits for a mail to `email` whose subject contains `needle`.
async fn wait_for_subject(g: &Gatehouse, email: &str, needle: &str) -> String {
    common::eventually(Duration::from_secs(10), || {
        g.smtp
            .mails_to(email)
            .into_iter()
            .map(|m| m.data)
            .find(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .is_some_and(|s| s.contains(needle))
            })
    })
    .await
    .unwrap_or_else(|| panic!("no mail about {needle:?} to {email}"))
}

async fn second_factor(g: &Gatehouse, pending: &str, answer: Value) -> reqwest::Response {
    g.post_json_with_cookie(SIGNIN_2FA, answer, pending).await
}

#[tokio::test]
async fn totp_enrolment_then_sign_in_needs_a_fresh_code() {
    let g = start("").await;
    let email = "totp@example.com";
    let cookie = g.sign_up(email, PASSWORD).await;
    let other = g.sign_in(email, PASSWORD).await;

    // Setup needs the password and activates nothing.
    let resp = g
        .post_json_with_cookie(SETUP, json!({ "password": "wrong password!" }), &cookie)
        .await;
    assert_eq!(resp.status(), 400);
    let resp = g
        .post_json_with_cookie(SETUP, json!({ "password": PASSWORD }), &cookie)
        .await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let (status, setup) = body(resp).await;
    assert_eq!(status, 200, "{setup}");
    let url = setup["otpauthUrl"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/"), "{url}");
    assert!(url.contains("issuer=Acme%20Test"), "{url}");
    let app = authenticator(setup["secret"].as_str().unwrap());
    g.sign_in(email, PASSWORD).await; // still a plain sign-in

    // A wrong code does not enable it; the right one does, once.
    let wrong = format!(
        "{:06}",
        (code(&app, 0).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    let resp = g
        .post_json_with_cookie(ENABLE, json!({ "code": wrong }), &cookie)
        .await;
    assert_eq!(resp.status(), 400);
    let resp = g
        .post_json_with_cookie(ENABLE, json!({ "code": code(&app, -1) }), &cookie)
        .await;
    assert_eq!(resp.status(), 200);
    let renewed = session_cookie(&resp, g.cookie_name()).expect("a new session for the caller");
    let (_, enabled) = body(resp).await;
    assert_eq!(enabled["recoveryCodes"].as_array().unwrap().len(), 10);
    assert_eq!(g.auth_check(&renewed).await["isAuthenticated"], true);
    // Every other session ended, the caller's old one too.
    assert_eq!(g.auth_check(&other).await["isAuthenticated"], false);
    assert_eq!(g.auth_check(&cookie).await["isAuthenticated"], false);
    let resp = g
        .post_json_with_cookie(SETUP, json!({ "password": PASSWORD }), &renewed)
        .await;
    assert_eq!(resp.status(), 409, "setup again while enabled");

    // Sign-in now stops at the second factor.
    let pending = first_factor(&g, email).await;
    assert_eq!(g.auth_check(&pending).await["isAuthenticated"], false);
    let resp = second_factor(&g, &pending, json!({ "code": code(&app, 0) })).await;
    assert_eq!(resp.status(), 200);
    let session = session_cookie(&resp, g.cookie_name()).expect("session after the code");
    let cleared = set_cookie_header(&resp, &pending_name(&g)).unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(g.auth_check(&session).await["email"], email);

    // The pending sign-in was single use.
    let resp = second_factor(&g, &pending, json!({ "code": code(&app, 1) })).await;
    assert_eq!(resp.status(), 401);

    // Replay: the same code, on a new pending sign-in, is refused …
    let used = code(&app, 0);
    let pending = first_factor(&g, email).await;
    let (status, refused) = body(second_factor(&g, &pending, json!({ "code": used })).await).await;
    assert_eq!(status, 400);
    assert_eq!(refused["message"], "Invalid authentication code");
    assert_eq!(refused["msg"], "Invalid authentication code");
    // … and so is an older step, but a phone one step ahead is fine.
    let resp = second_factor(&g, &pending, json!({ "code": code(&app, -1) })).await;
    assert_eq!(resp.status(), 400);
    let resp = second_factor(&g, &pending, json!({ "code": code(&app, 1) })).await;
    assert_eq!(resp.status(), 200);

    // The owner was told.
    wait_for_subject(&g, email, "Two-step sign-in was turned on").await;
}

#[tokio::test]
async fn the_pending_cookie_is_host_bound_strict_and_short_lived() {
    let g = start("").await;
    let email = "cookie@example.com";
    enrolled(&g, email).await;
    let resp = g
        .post_json(SIGNIN, json!({ "email": email, "password": PASSWORD }))
        .await;
    let header = set_cookie_header(&resp, "__Host-sid_mfa").expect("__Host- pending cookie");
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=300",
    ] {
        assert!(header.contains(attribute), "{attribute} in {header}");
    }
    // A made-up pending cookie, and none at all, are refused.
    let resp = second_factor(&g, "__Host-sid_mfa=forged", json!({ "code": "123456" })).await;
    assert_eq!(resp.status(), 401);
    let resp = g.post_json(SIGNIN_2FA, json!({ "code": "123456" })).await;
    assert_eq!(resp.status(), 401);
    // Neither code nor recovery code: a clear 400.
    let pending = first_factor(&g, email).await;
    let (status, e) = body(second_factor(&g, &pending, json!({})).await).await;
    assert_eq!(status, 400);
    assert!(e["message"].as_str().unwrap().contains("code"), "{e}");
}

#[tokio::test]
async fn wrong_codes_back_off_per_account() {
    let g = start("signin_failures_per_email = 3\nfirst_backoff = \"10m\"\n").await;
    let email = "backoff@example.com";
    let (app, _, _) = enrolled(&g, email).await;
    let pending = first_factor(&g, email).await;
    let wrong = format!(
        "{:06}",
        (code(&app, 0).parse::<u32>().unwrap() + 7) % 1_000_000
    );
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            second_factor(&g, &pending, json!({ "code": wrong }))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [400, 400, 400]);
    // Now even the right code waits.
    let resp = second_factor(&g, &pending, json!({ "code": code(&app, 0) })).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_pending_sign_in_is_void_after_five_wrong_codes() {
    let g = start("signin_failures_per_email = 50\nsignin_failures_per_ip = 50\n").await;
    let email = "void@example.com";
    let (app, _, _) = enrolled(&g, email).await;
    let pending = first_factor(&g, email).await;
    for _ in 0..5 {
        let resp = second_factor(&g, &pending, json!({ "code": "000000" })).await;
        // (000000 being the right code is a one-in-a-million accident.)
        assert_eq!(resp.status(), 400);
    }
    let resp = second_factor(&g, &pending, json!({ "code": code(&app, 0) })).await;
    assert_eq!(resp.status(), 401, "void after five wrong codes");
    // A new sign-in with the right code works.
    let pending = first_factor(&g, email).await;
    let resp = second_factor(&g, &pending, json!({ "code": code(&app, 0) })).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn recovery_codes_work_once_and_renewal_voids_the_old_set() {
    let g = start("").await;
    let email = "recovery@example.com";
    let (_, codes, session) = enrolled(&g, email).await;
    assert_eq!(codes.len(), 10);
    let distinct: std::collections::HashSet<&String> = codes.iter().collect();
    assert_eq!(distinct.len(), 10);

    let pending = first_factor(&g, email).await;
    let resp = second_factor(&g, &pending, json!({ "recoveryCode": codes[0] })).await;
    assert_eq!(resp.status(), 200);
    assert!(session_cookie(&resp, g.cookie_name()).is_some());
    wait_for_subject(&g, email, "A recovery code was used").await;

    // Used once: refused the second time.
    let pending = first_factor(&g, email).await;
    let resp = second_factor(&g, &pending, json!({ "recoveryCode": codes[0] })).await;
    assert_eq!(resp.status(), 400);
    // Typed in capitals, another one works.
    let resp = second_factor(
        &g,
        &pending,
        json!({ "recoveryCode": codes[1].to_uppercase() }),
    )
    .await;
    assert_eq!(resp.status(), 200);

    // A new set voids the old one.
    let resp = g
        .post_json_with_cookie(
            RECOVERY,
            json!({ "password": "not the password" }),
            &session,
        )
        .await;
    assert_eq!(resp.status(), 400);
    let (status, renewed) = body(
        g.post_json_with_cookie(RECOVERY, json!({ "password": PASSWORD }), &session)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    let fresh = renewed["recoveryCodes"].as_array().unwrap();
    assert_eq!(fresh.len(), 10);
    let pending = first_factor(&g, email).await;
    let resp = second_factor(&g, &pending, json!({ "recoveryCode": codes[2] })).await;
    assert_eq!(resp.status(), 400, "old set void");
    let resp = second_factor(&g, &pending, json!({ "recoveryCode": fresh[0] })).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn disabling_totp_needs_password_and_code_and_restores_plain_sign_in() {
    let g = start("").await;
    let email = "disable@example.com";
    let (app, _, session) = enrolled(&g, email).await;
    let resp = g
        .post_json_with_cookie(
            DISABLE,
            json!({ "password": PASSWORD, "code": "999999x" }),
            &session,
        )
        .await;
    assert_eq!(resp.status(), 400);
    let resp = g
        .post_json_with_cookie(
            DISABLE,
            json!({ "password": "wrong password!", "code": code(&app, 0) }),
            &session,
        )
        .await;
    assert_eq!(resp.status(), 400);
    let resp = g
        .post_json_with_cookie(
            DISABLE,
            json!({ "password": PASSWORD, "code": code(&app, 0) }),
            &session,
        )
        .await;
    assert_eq!(resp.status(), 200);
    // Plain sign-in again: the session cookie at once.
    g.sign_in(email, PASSWORD).await;
    wait_for_subject(&g, email, "authenticator app was removed").await;
    // Without a factor there are no recovery codes to renew.
    let resp = g
        .post_json_with_cookie(RECOVERY, json!({ "password": PASSWORD }), &session)
        .await;
    assert_eq!(resp.status(), 400);
    // And the endpoints need a session.
    let resp = g.post_json(SETUP, json!({ "password": PASSWORD })).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn the_store_alone_does_not_reveal_the_secret() {
    let g = start("").await;
    let email = "sealed@example.com";
    let (app, codes, _) = enrolled(&g, email).await;
    let key = g.dir.path().join("data/mfa.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "key file mode");
    let mut g = g;
    g.stop();
    // On PostgreSQL (GATEHOUSE_TEST_STORE=postgres) there is no store file
    // to search; the restart below still has to find the factor.
    let store = std::fs::read(g.dir.path().join("data/gatehouse.redb")).unwrap_or_default();
    assert!(
        !store.is_empty() || common::pg::suite_on_postgres(),
        "the store file"
    );
    let secret = app.secret().as_ref().to_vec();
    assert_eq!(secret.len(), 20);
    assert!(
        !store.windows(secret.len()).any(|w| w == secret.as_slice()),
        "raw TOTP secret in the store"
    );
    let b32 = totp_rs::Secret::from(secret).to_base32();
    assert!(
        !store.windows(b32.len()).any(|w| w == b32.as_bytes()),
        "base32 TOTP secret in the store"
    );
    for c in &codes {
        assert!(
            !store.windows(c.len()).any(|w| w == c.as_bytes()),
            "recovery code in the store"
        );
    }
    // Something was stored, though: the factor survives a restart.
    g.restart();
    let pending = first_factor(&g, email).await;
    let resp = second_factor(&g, &pending, json!({ "code": code(&app, 1) })).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn users_without_a_factor_sign_in_as_before_over_http2() {
    let g = start("").await;
    let email = "plain@example.com";
    g.sign_up(email, PASSWORD).await;
    let resp = g
        .h2_client()
        .post(g.url(SIGNIN))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert!(session_cookie(&resp, g.cookie_name()).is_some());
    assert!(session_cookie(&resp, &pending_name(&g)).is_none());
    let (_, answer) = body(resp).await;
    assert_eq!(answer, json!({ "msg": "Signed in successfully" }));
    // TOTP over HTTP/2 too.
    let (app, _, _) = enrolled(&g, "h2@example.com").await;
    let resp = g
        .h2_client()
        .post(g.url(SIGNIN))
        .json(&json!({ "email": "h2@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let pending = session_cookie(&resp, &pending_name(&g)).unwrap();
    let resp = g
        .h2_client()
        .post(g.url(SIGNIN_2FA))
        .header("cookie", pending)
        .json(&json!({ "code": code(&app, 0) }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(session_cookie(&resp, g.cookie_name()).is_some());
}

#[tokio::test]
async fn the_operator_sees_factors_never_secrets_and_can_reset_them() {
    let g = start("").await;
    let email = "lost-phone@example.com";
    let (app, codes, session) = enrolled(&g, email).await;
    let (ok, out, err) = g.cli(&["user", "show", email], "");
    assert!(ok, "{err}");
    assert!(out.contains("second factors: TOTP (since"), "{out}");
    assert!(out.contains("10 recovery codes left"), "{out}");
    let (ok, json_out, _) = g.cli(&["user", "show", email, "--json"], "");
    assert!(ok);
    let shown: Value = serde_json::from_str(json_out.trim()).unwrap();
    assert_eq!(shown["factors"]["totp"], true, "{shown}");
    let secret = app.secret().to_base32();
    for text in [&out, &json_out] {
        assert!(!text.contains(&secret), "secret shown: {text}");
        assert!(!text.contains(&codes[0]), "recovery code shown: {text}");
    }
    // An address without an account is refused clearly.
    let (ok, _, err) = g.cli(&["user", "reset-2fa", "nobody@example.com"], "");
    assert!(!ok);
    assert!(err.contains("nobody@example.com"), "{err}");

    let (ok, out, err) = g.cli(&["user", "reset-2fa", email], "");
    assert!(ok, "{err}");
    assert!(out.contains("sessions_ended: 1"), "{out}");
    assert_eq!(g.auth_check(&session).await["isAuthenticated"], false);
    // Plain password sign-in again, and the owner was told.
    g.sign_in(email, PASSWORD).await;
    wait_for_subject(&g, email, "second factors were removed").await;
    let (_, out, _) = g.cli(&["user", "show", email], "");
    assert!(out.contains("second factors: none"), "{out}");
}

#[tokio::test]
async fn passkey_endpoints_answer_clearly_without_an_authenticator() {
    let g = start("").await;
    // Session-only endpoints need a session.
    let resp = g
        .post_json("/api/v1/user/passkeys/register/start", json!({}))
        .await;
    assert_eq!(resp.status(), 401);
    let resp = g
        .client()
        .get(g.url("/api/v1/user/passkeys"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Sign-in options for a discoverable credential, no session needed.
    let (status, start) = body(
        g.post_json(
            "/api/v1/user/passkeys/login/start",
            json!({ "email": "a@example.com" }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{start}");
    assert_eq!(start["publicKey"]["rpId"], "localhost", "{start}");
    assert_eq!(start["publicKey"]["userVerification"], "required");
    let challenge = start["publicKey"]["challenge"].as_str().unwrap();
    assert!(challenge.len() >= 22, "a 128-bit challenge: {challenge}");
    let (_, again) = body(
        g.post_json("/api/v1/user/passkeys/login/start", json!({}))
            .await,
    )
    .await;
    assert_ne!(
        again["publicKey"]["challenge"],
        start["publicKey"]["challenge"]
    );

    // A made-up assertion is refused with a clear JSON error, not a 500.
    let (status, refused) = body(
        g.post_json(
            "/api/v1/user/passkeys/login/finish",
            json!({ "credential": { "id": "AAAA", "type": "public-key" } }),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["message"], "Passkey verification failed");
    let (status, missing) = body(
        g.post_json("/api/v1/user/passkeys/login/finish", json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(missing["message"].as_str().unwrap().contains("credential"));

    // Signed in: an empty list, and someone else's (or no) id is 404.
    let cookie = g.sign_up("pk@example.com", PASSWORD).await;
    let resp = g.get_with_cookie("/api/v1/user/passkeys", &cookie).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({ "passkeys": [] })
    );
    let resp = g
        .client()
        .delete(g.url("/api/v1/user/passkeys/0123456789abcdef"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let (status, options) = body(
        g.post_json_with_cookie("/api/v1/user/passkeys/register/start", json!({}), &cookie)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{options}");
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost");
    assert_eq!(options["publicKey"]["user"]["name"], "pk@example.com");
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["residentKey"],
        "preferred"
    );
}
