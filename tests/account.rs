//! Account self-service, black-box against the real binary with the real
//! SMTP sink: forgotten passwords, password and email changes, one's own
//! sessions, account deletion, notices, and what none of them may reveal.

mod common;

use common::{Gatehouse, Options, extract_code, session_cookie, set_cookie_header};
use serde_json::{Value, json};

const FORGOT: &str = "/api/v1/user/password/forgot";
const RESET: &str = "/api/v1/user/password/reset";
const PASSWORD: &str = "/api/v1/user/password";
const SESSIONS: &str = "/api/v1/user/sessions";
const EMAIL_CHANGE: &str = "/api/v1/user/email/change";
const EMAIL_VERIFY: &str = "/api/v1/user/email/verify";
const ACCOUNT: &str = "/api/v1/user";

/// A server with small limits so the tests reach them quickly.
async fn start() -> Gatehouse {
    Gatehouse::start_with(Options {
        otp: "max_sends_per_day = 3\nmax_attempts = 3\n".into(),
        ..Options::default()
    })
    .await
}

/// Status, headers other than `date`, and body: what a client can see.
async fn seen(resp: reqwest::Response) -> (u16, Vec<(String, String)>, String) {
    let status = resp.status().as_u16();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        // The date and the per-request id differ for any two requests.
        .filter(|(k, _)| k.as_str() != "date" && k.as_str() != "x-request-id")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    headers.sort();
    (status, headers, resp.text().await.unwrap())
}

fn subject(mail: &str) -> String {
    mail.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_string()
}

/// Mails to `email` whose subject contains `needle`.
fn mails_about(g: &Gatehouse, email: &str, needle: &str) -> Vec<String> {
    g.smtp
        .mails_to(email)
        .into_iter()
        .map(|m| m.data)
        .filter(|m| subject(m).contains(needle))
        .collect()
}

/// Waits for the `n`-th mail to `email` whose subject contains `needle`
/// (sign-in notices may arrive in between).
async fn wait_for_mail(g: &Gatehouse, email: &str, needle: &str, n: usize) -> String {
    common::eventually(std::time::Duration::from_secs(10), || {
        mails_about(g, email, needle).get(n - 1).cloned()
    })
    .await
    .unwrap_or_else(|| panic!("mail #{n} about {needle:?} to {email} did not arrive"))
}

async fn message(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.unwrap();
    body["message"].as_str().unwrap_or_default().to_string()
}

async fn forgot(g: &Gatehouse, email: &str) -> reqwest::Response {
    g.post_json(FORGOT, json!({ "email": email })).await
}

async fn reset(g: &Gatehouse, email: &str, code: &str, password: &str) -> reqwest::Response {
    g.post_json(
        RESET,
        json!({ "email": email, "code": code, "password": password }),
    )
    .await
}

/// Asks for a reset code for `email` and reads it from the mailbox.
async fn reset_code(g: &Gatehouse, email: &str) -> String {
    let before = mails_about(g, email, "password reset").len();
    let resp = forgot(g, email).await;
    assert_eq!(resp.status(), 200);
    let mail = wait_for_mail(g, email, "password reset", before + 1).await;
    extract_code(&mail).expect("the reset mail carries a code")
}

/// A request with the session cookie and a JSON body.
async fn send(
    g: &Gatehouse,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = g
        .client()
        .request(method, g.url(path))
        .header("cookie", cookie);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// Asks to move the account signed in with `cookie` (password
/// `password1`) to `new_email`.
async fn change_email(g: &Gatehouse, cookie: &str, new_email: &str) -> reqwest::Response {
    send(
        g,
        reqwest::Method::POST,
        EMAIL_CHANGE,
        cookie,
        Some(json!({ "newEmail": new_email, "password": "password1" })),
    )
    .await
}

async fn delete_account(g: &Gatehouse, cookie: &str, password: &str) -> reqwest::Response {
    send(
        g,
        reqwest::Method::DELETE,
        ACCOUNT,
        cookie,
        Some(json!({ "password": password })),
    )
    .await
}

async fn list_sessions(g: &Gatehouse, cookie: &str) -> Vec<Value> {
    let resp = send(g, reqwest::Method::GET, SESSIONS, cookie, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

async fn signed_in(g: &Gatehouse, cookie: &str) -> bool {
    g.auth_check(cookie).await["isAuthenticated"] == true
}

async fn sign_in_status(g: &Gatehouse, email: &str, password: &str) -> u16 {
    g.post_json(
        "/api/v1/user/signin",
        json!({ "email": email, "password": password }),
    )
    .await
    .status()
    .as_u16()
}

async fn sign_in_with_agent(g: &Gatehouse, email: &str, agent: &str) -> String {
    let resp = g
        .client()
        .post(g.url("/api/v1/user/signin"))
        .header("user-agent", agent)
        .json(&json!({ "email": email, "password": "password1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    session_cookie(&resp, g.cookie_name()).unwrap()
}

#[tokio::test]
async fn a_reset_ends_every_session_signs_in_anew_and_says_so() {
    let g = start().await;
    let first = g.sign_up("ann@example.com", "password1").await;
    let second = g.sign_in("ann@example.com", "password1").await;
    let code = reset_code(&g, "ann@example.com").await;

    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let resp = reset(&g, "ann@example.com", &wrong, "password2").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(message(resp).await, "Invalid verification code");
    let resp = reset(&g, "ann@example.com", &code, "short").await;
    assert_eq!(resp.status(), 400);
    assert!(message(resp).await.contains("at least"));
    let resp = reset(&g, "ann@example.com", "12345x", "password2").await;
    assert_eq!(resp.status(), 400);
    // Nothing changed so far.
    assert!(signed_in(&g, &first).await && signed_in(&g, &second).await);

    let resp = reset(&g, "ANN@example.com", &code, "password2").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let fresh = session_cookie(&resp, g.cookie_name()).expect("a new session cookie");
    assert!(
        set_cookie_header(&resp, g.cookie_name())
            .unwrap()
            .contains("HttpOnly")
    );
    assert!(signed_in(&g, &fresh).await);
    assert!(!signed_in(&g, &first).await, "every old session ends");
    assert!(!signed_in(&g, &second).await, "every old session ends");
    assert_eq!(
        sign_in_status(&g, "ann@example.com", "password1").await,
        400
    );
    assert_eq!(
        sign_in_status(&g, "ann@example.com", "password2").await,
        200
    );
    // The code is used up.
    let resp = reset(&g, "ann@example.com", &code, "password3").await;
    assert_eq!(resp.status(), 400);

    // The notice arrives and carries no code.
    let notice = wait_for_mail(&g, "ann@example.com", "password was changed", 1).await;
    assert!(
        subject(&notice).contains("password was changed"),
        "{notice}"
    );
    assert_eq!(extract_code(&notice), None, "{notice}");

    let metrics = g.metrics().await;
    for line in [
        "gatehouse_account_events_total{event=\"reset_requested\"} 1",
        "gatehouse_account_events_total{event=\"reset_completed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn forgot_and_reset_answer_unknown_addresses_byte_for_byte_alike() {
    let g = start().await;
    g.sign_up("bea@example.com", "password1").await;

    let known = seen(forgot(&g, "bea@example.com").await).await;
    let unknown = seen(forgot(&g, "nobody@example.com").await).await;
    assert_eq!(known.0, 200);
    assert_eq!(known, unknown);
    // Only the account's owner gets mail (the sign-up code was the first).
    g.smtp.wait_for_nth("bea@example.com", 2).await;
    assert_eq!(g.smtp.count_to("nobody@example.com"), 0);

    // Wrong codes: the same answer, then the same 429 once the attempts
    // are used up (counted against a decoy for the unknown address).
    for attempt in 1..=4 {
        let known = seen(reset(&g, "bea@example.com", "000000", "password2").await).await;
        let unknown = seen(reset(&g, "nobody@example.com", "000000", "password2").await).await;
        assert_eq!(known, unknown, "attempt {attempt}");
        let expected = if attempt <= 3 { 400 } else { 429 };
        assert_eq!(known.0, expected, "attempt {attempt}: {known:?}");
    }
    // An address never asked about answers like a wrong code.
    let never = seen(reset(&g, "never@example.com", "000000", "password2").await).await;
    assert_eq!(never.0, 400);
    assert!(never.2.contains("Invalid verification code"));

    // The send limit is reached for both at the same request.
    for n in 2..=4 {
        let known = forgot(&g, "bea@example.com").await;
        let unknown = forgot(&g, "nobody@example.com").await;
        let (ks, us) = (known.status().as_u16(), unknown.status().as_u16());
        assert_eq!(ks, us, "request {n}");
        assert_eq!(ks, if n <= 3 { 200 } else { 429 }, "request {n}");
        if ks == 429 {
            assert!(known.headers().contains_key("retry-after"));
            assert!(unknown.headers().contains_key("retry-after"));
            assert_eq!(message(known).await, message(unknown).await);
        }
    }
    let bad = forgot(&g, "not-an-address").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(message(bad).await, "A valid email address is required");
}

#[tokio::test]
async fn an_attacker_who_knows_only_the_email_changes_nothing() {
    let g = start().await;
    let victim = g.sign_up("cy@example.com", "password1").await;
    let resp = forgot(&g, "cy@example.com").await;
    assert_eq!(resp.status(), 200);
    let mail = g.smtp.wait_for_nth("cy@example.com", 2).await;
    let real_code = extract_code(&mail).unwrap();
    // Guessing burns the code; it does not sign anyone out.
    let guesses: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "{:06}",
                (real_code.parse::<u32>().unwrap() + 1 + i) % 1_000_000
            )
        })
        .collect();
    for guess in &guesses {
        assert_eq!(
            reset(&g, "cy@example.com", guess, "attacker1")
                .await
                .status(),
            400
        );
    }
    let resp = reset(&g, "cy@example.com", &real_code, "attacker1").await;
    assert_eq!(resp.status(), 429, "the code is void after max_attempts");
    assert!(signed_in(&g, &victim).await);
    assert_eq!(sign_in_status(&g, "cy@example.com", "password1").await, 200);
    assert_eq!(sign_in_status(&g, "cy@example.com", "attacker1").await, 400);
}

#[tokio::test]
async fn codes_of_one_purpose_are_refused_by_every_other() {
    let g = start().await;
    let dee = g.sign_up("dee@example.com", "password1").await;

    // A sign-up code (for an address without an account) is no reset code.
    let signup_code = g.request_code("eve@example.com").await;
    let resp = reset(&g, "eve@example.com", &signup_code, "password2").await;
    assert_eq!(resp.status(), 400);
    // A reset code is no sign-up code and no email-change code.
    let code = reset_code(&g, "dee@example.com").await;
    assert_eq!(g.verify("dee@example.com", &code).await, 400);
    let resp = send(
        &g,
        reqwest::Method::POST,
        EMAIL_VERIFY,
        &dee,
        Some(json!({ "code": code })),
    )
    .await;
    assert_eq!(resp.status(), 400);
    // An email-change code is no reset code and no sign-up code.
    let resp = change_email(&g, &dee, "dee2@example.com").await;
    assert_eq!(resp.status(), 200);
    let change_code = extract_code(&g.smtp.wait_for_nth("dee2@example.com", 1).await).unwrap();
    let resp = reset(&g, "dee@example.com", &change_code, "password2").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(g.verify("dee2@example.com", &change_code).await, 400);
    // Each code still works for its own purpose (unless, by a one in a
    // million chance, two of them are equal digits).
    if change_code != code {
        let resp = reset(&g, "dee@example.com", &code, "password2").await;
        assert_eq!(resp.status(), 200);
    }
    if signup_code != code && signup_code != change_code {
        assert_eq!(g.verify("eve@example.com", &signup_code).await, 200);
    }
}

#[tokio::test]
async fn a_password_change_keeps_this_browser_and_ends_the_others() {
    let g = Gatehouse::start_with(Options {
        extra_toml: "[limits]\nsignin_failures_per_email = 3\nfirst_backoff = \"30s\"\n".into(),
        ..Options::default()
    })
    .await;
    let here = g.sign_up("fay@example.com", "password1").await;
    let there = g.sign_in("fay@example.com", "password1").await;
    let change = |cookie: String, current: &'static str, new: &'static str| {
        let g = &g;
        async move {
            send(
                g,
                reqwest::Method::POST,
                PASSWORD,
                &cookie,
                Some(json!({ "currentPassword": current, "newPassword": new })),
            )
            .await
        }
    };
    assert_eq!(
        change(String::new(), "password1", "password2")
            .await
            .status(),
        401
    );
    let resp = change(here.clone(), "password1", "short").await;
    assert_eq!(resp.status(), 400);
    let resp = change(here.clone(), "wrong-one", "password2").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(message(resp).await, "Password is incorrect");
    assert!(signed_in(&g, &here).await && signed_in(&g, &there).await);

    let resp = change(here.clone(), "password1", "password2").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let fresh = session_cookie(&resp, g.cookie_name()).expect("a fresh token");
    assert_ne!(fresh, here);
    assert!(signed_in(&g, &fresh).await);
    assert!(
        !signed_in(&g, &here).await,
        "the old token of this browser ends"
    );
    assert!(!signed_in(&g, &there).await, "other sessions end");
    assert_eq!(
        sign_in_status(&g, "fay@example.com", "password2").await,
        200
    );
    let notice = wait_for_mail(&g, "fay@example.com", "password was changed", 1).await;
    assert!(
        subject(&notice).contains("password was changed"),
        "{notice}"
    );
    assert_eq!(extract_code(&notice), None);

    // Wrong current passwords count toward the sign-in back-off.
    for _ in 0..2 {
        assert_eq!(
            change(fresh.clone(), "nope-nope", "password3")
                .await
                .status(),
            400
        );
    }
    let resp = change(fresh.clone(), "nope-nope", "password3").await;
    assert_eq!(resp.status(), 400);
    let resp = change(fresh.clone(), "password2", "password3").await;
    assert_eq!(resp.status(), 429, "backing off after three failures");
    assert_eq!(
        sign_in_status(&g, "fay@example.com", "password2").await,
        429
    );
}

#[tokio::test]
async fn one_sees_and_ends_only_ones_own_sessions() {
    let g = start().await;
    g.sign_up("gil@example.com", "password1").await;
    g.sign_up("hal@example.com", "password1").await;
    let phone = sign_in_with_agent(&g, "gil@example.com", "Phone/1.0").await;
    let laptop = sign_in_with_agent(&g, "gil@example.com", "Laptop/2.0").await;
    let hal = sign_in_with_agent(&g, "hal@example.com", "Hal/3.0").await;

    assert_eq!(
        send(&g, reqwest::Method::GET, SESSIONS, "", None)
            .await
            .status(),
        401
    );
    let mine = list_sessions(&g, &laptop).await;
    assert_eq!(mine.len(), 3, "sign-up, phone and laptop: {mine:?}");
    assert_eq!(mine[0]["userAgent"], "Laptop/2.0", "newest first: {mine:?}");
    assert_eq!(mine[0]["current"], true);
    assert_eq!(mine[1]["userAgent"], "Phone/1.0");
    assert_eq!(mine[1]["current"], false);
    for s in &mine {
        assert_eq!(s["ip"], "127.0.0.1");
        assert!(s["createdAt"].as_str().unwrap().ends_with('Z'));
        assert!(s["lastSeenAt"].as_str().is_some());
        assert_eq!(s["id"].as_str().unwrap().len(), 16);
    }
    assert!(!serde_json::to_string(&mine).unwrap().contains("Hal/3.0"));
    // The ids are the admin CLI's.
    let (ok, out, err) = g.cli(
        &["session", "list", "--user", "gil@example.com", "--json"],
        "",
    );
    assert!(ok, "{err}");
    let cli: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut cli_ids: Vec<&str> = cli.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let mut ids: Vec<&str> = mine.iter().map(|s| s["id"].as_str().unwrap()).collect();
    cli_ids.sort();
    ids.sort();
    assert_eq!(cli_ids, ids);
    assert!(
        cli.iter()
            .any(|s| s["user_agent"] == "Phone/1.0" && s["ip"] == "127.0.0.1")
    );

    // Someone else's id, an unknown id and a malformed one: the same 404.
    let hal_id = list_sessions(&g, &hal).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = |id: &str| format!("{SESSIONS}/{id}");
    let theirs = seen(send(&g, reqwest::Method::DELETE, &path(&hal_id), &laptop, None).await).await;
    let unknown = seen(
        send(
            &g,
            reqwest::Method::DELETE,
            &path("0123456789abcdef"),
            &laptop,
            None,
        )
        .await,
    )
    .await;
    let malformed = seen(send(&g, reqwest::Method::DELETE, &path("zz"), &laptop, None).await).await;
    assert_eq!(theirs.0, 404);
    assert_eq!(theirs, unknown);
    assert_eq!(theirs, malformed);
    assert!(signed_in(&g, &hal).await, "hal's session is untouched");

    // A cross-site request carrying the cookie is refused (CSRF).
    let phone_id = mine[1]["id"].as_str().unwrap().to_string();
    let resp = g
        .client()
        .delete(g.url(&path(&phone_id)))
        .header("cookie", &laptop)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(signed_in(&g, &phone).await);

    // Ending one's own other session works at once.
    let resp = send(&g, reqwest::Method::DELETE, &path(&phone_id), &laptop, None).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(!signed_in(&g, &phone).await);
    assert_eq!(list_sessions(&g, &laptop).await.len(), 2);
    // Ending the current one signs this browser out and clears its cookie.
    let resp = send(
        &g,
        reqwest::Method::DELETE,
        &path(mine[0]["id"].as_str().unwrap()),
        &laptop,
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        set_cookie_header(&resp, g.cookie_name())
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(!signed_in(&g, &laptop).await);
}

#[tokio::test]
async fn an_email_change_moves_the_account_and_ends_other_sessions() {
    let g = start().await;
    let here = g.sign_up("ivy@example.com", "password1").await;
    let there = g.sign_in("ivy@example.com", "password1").await;
    let change = |body: Value| send(&g, reqwest::Method::POST, EMAIL_CHANGE, &here, Some(body));

    assert_eq!(change_email(&g, "", "ivy2@example.com").await.status(), 401);
    let resp = change(json!({ "newEmail": "ivy2@example.com", "password": "wrong-pw" })).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(message(resp).await, "Password is incorrect");
    let resp = change(json!({ "newEmail": "not an address", "password": "password1" })).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(g.smtp.count_to("ivy2@example.com"), 0);

    let resp = change(json!({ "newEmail": "Ivy2@Example.com", "password": "password1" })).await;
    assert_eq!(resp.status(), 200);
    let code_mail = g.smtp.wait_for_nth("ivy2@example.com", 1).await;
    let code = extract_code(&code_mail).expect("a code to the new address");
    let notice = wait_for_mail(&g, "ivy@example.com", "being changed", 1).await;
    assert!(subject(&notice).contains("being changed"), "{notice}");
    assert!(notice.contains("ivy2@example.com"));
    assert_eq!(extract_code(&notice), None, "no code to the old address");

    let verify = |code: String| {
        send(
            &g,
            reqwest::Method::POST,
            EMAIL_VERIFY,
            &here,
            Some(json!({ "code": code })),
        )
    };
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    assert_eq!(verify(wrong).await.status(), 400);
    assert!(signed_in(&g, &there).await);
    let resp = verify(code.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(g.auth_check(&here).await["email"], "ivy2@example.com");
    assert!(!signed_in(&g, &there).await, "other sessions end");
    assert_eq!(verify(code).await.status(), 400, "used up");
    assert_eq!(
        sign_in_status(&g, "ivy@example.com", "password1").await,
        400
    );
    assert_eq!(
        sign_in_status(&g, "ivy2@example.com", "password1").await,
        200
    );
    // The old address is free for a new sign-up.
    let resp = g
        .post_json(
            "/api/v1/user/signup/send-otp",
            json!({ "email": "ivy@example.com" }),
        )
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_email_change_to_an_address_in_use_reveals_nothing() {
    let g = start().await;
    let jo = g.sign_up("jo@example.com", "password1").await;
    g.sign_up("kai@example.com", "password1").await;
    let change = |to: &'static str| change_email(&g, &jo, to);
    let taken = seen(change("kai@example.com").await).await;
    let free = seen(change("new-jo@example.com").await).await;
    assert_eq!(taken.0, 200);
    assert_eq!(taken, free);
    // kai gets a notice without a code; jo is told about both requests.
    let notice = g.smtp.wait_for_nth("kai@example.com", 2).await;
    assert!(
        notice.contains("already belongs to your account"),
        "{notice}"
    );
    assert_eq!(extract_code(&notice), None);
    wait_for_mail(&g, "jo@example.com", "being changed", 2).await;
    g.smtp.wait_for_nth("new-jo@example.com", 1).await;
    // Nothing a guess could complete moves jo onto kai's address: the
    // pending change is now the one to new-jo, and its code went there.
    assert_eq!(g.auth_check(&jo).await["email"], "jo@example.com");
    assert_eq!(
        sign_in_status(&g, "kai@example.com", "password1").await,
        200
    );
    // Asking for one's own address is the only distinct answer, and it
    // reveals nothing about others.
    let resp = change("jo@example.com").await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn deleting_the_account_leaves_nothing_behind() {
    let mut g = start().await;
    let here = g.sign_up("lou@example.com", "password1").await;
    let there = g.sign_in("lou@example.com", "password1").await;
    g.sign_up("max@example.com", "password1").await;
    // Pending codes of both kinds, and mail about them.
    reset_code(&g, "lou@example.com").await;
    let resp = change_email(&g, &here, "lou-new@example.com").await;
    assert_eq!(resp.status(), 200);
    let (ok, out, err) = g.cli(&["user", "show", "lou@example.com", "--json"], "");
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown["pending_codes"],
        json!({ "password_reset": true, "email_change": true })
    );
    assert!(!out.contains("code_hash") && !out.contains("salt"), "{out}");
    let (_, out, _) = g.cli(&["user", "show", "lou@example.com"], "");
    assert!(out.contains("a password-reset code is pending"), "{out}");
    let (ok, before, err) = g.cli(&["user", "traces", "lou@example.com", "--json"], "");
    assert!(ok, "{err}");
    let before: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(before["user"], true, "{before}");
    assert_eq!(before["sessions"], 2, "{before}");
    assert!(before["codes"].as_u64().unwrap() >= 1, "{before}");
    assert!(before["send_counters"].as_u64().unwrap() >= 1, "{before}");

    assert_eq!(delete_account(&g, "", "password1").await.status(), 401);
    // Only DELETE of /api/v1/user is Gatehouse's; a GET is the backend's.
    let resp = send(&g, reqwest::Method::GET, ACCOUNT, &here, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(g.upstream.last().target, ACCOUNT);
    let resp = delete_account(&g, &here, "wrong-pw").await;
    assert_eq!(resp.status(), 400);
    assert!(signed_in(&g, &here).await);
    let resp = delete_account(&g, &here, "password1").await;
    assert_eq!(resp.status(), 200);
    assert!(
        set_cookie_header(&resp, g.cookie_name())
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(!signed_in(&g, &here).await && !signed_in(&g, &there).await);
    let metrics = g.metrics().await;
    assert!(metrics.contains("gatehouse_account_events_total{event=\"account_deleted\"} 1"));

    // After a clean stop (throttles flushed), the store itself is checked.
    g.stop();
    let (ok, after, err) = g.cli(&["user", "traces", "lou@example.com", "--json"], "");
    assert!(ok, "{err}");
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        after,
        json!({ "email": "lou@example.com", "user": false, "sessions": 0, "codes": 0,
                "mails": 0, "send_counters": 0 })
    );
    let (ok, out, _) = g.cli(&["user", "traces", "lou-new@example.com", "--json"], "");
    assert!(ok);
    let pending_target: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pending_target["codes"], 0, "{pending_target}");
    assert_eq!(pending_target["mails"], 0, "{pending_target}");
    let (ok, _, err) = g.cli(&["user", "show", "lou@example.com"], "");
    assert!(!ok && err.contains("no user"), "{err}");
    // The other account is untouched.
    let (ok, out, _) = g.cli(&["user", "traces", "max@example.com", "--json"], "");
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["user"], true);
    g.restart();
    assert_eq!(
        sign_in_status(&g, "lou@example.com", "password1").await,
        400
    );
}

#[tokio::test]
async fn send_and_attempt_limits_survive_a_restart() {
    let mut g = start().await;
    g.sign_up("ned@example.com", "password1").await;
    for _ in 0..3 {
        assert_eq!(forgot(&g, "ned@example.com").await.status(), 200);
        assert_eq!(forgot(&g, "ghost@example.com").await.status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(
            reset(&g, "ned@example.com", "000000", "password2")
                .await
                .status(),
            400
        );
    }
    g.restart();
    assert_eq!(forgot(&g, "ned@example.com").await.status(), 429);
    assert_eq!(forgot(&g, "ghost@example.com").await.status(), 429);
    assert_eq!(
        reset(&g, "ned@example.com", "000000", "password2")
            .await
            .status(),
        429
    );
    // Another address is not affected.
    assert_eq!(forgot(&g, "other@example.com").await.status(), 200);
}

#[tokio::test]
async fn a_sign_in_from_an_unknown_browser_is_announced() {
    let g = start().await;
    let resp = g
        .client()
        .post(g.url("/api/v1/user/signup/verify"))
        .json(&json!({
            "email": "ola@example.com",
            "code": g.request_code("ola@example.com").await,
            "password": "password1",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let device = session_cookie(&resp, &format!("{}_device", g.cookie_name())).unwrap();
    // This browser is known: no notice. Then an unknown one: a notice.
    let resp = g
        .client()
        .post(g.url("/api/v1/user/signin"))
        .header("cookie", &device)
        .header("user-agent", "Known/1.0")
        .json(&json!({ "email": "ola@example.com", "password": "password1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sign_in_with_agent(&g, "ola@example.com", "Stranger/9.9 <b>").await;
    let notice = g.smtp.wait_for_nth("ola@example.com", 2).await;
    assert!(subject(&notice).contains("New sign-in"), "{notice}");
    assert!(notice.contains("Stranger/9.9"), "{notice}");
    assert!(notice.contains("127.0.0.1"), "{notice}");
    assert!(notice.contains("&lt;b&gt;"), "escaped in HTML: {notice}");
    assert!(!notice.contains("Known/1.0"));
    assert_eq!(extract_code(&notice), None);
    // The known sign-in produced nothing: the stranger's notice was the
    // only mail after the sign-up code.
    assert_eq!(g.smtp.count_to("ola@example.com"), 2);
}

#[tokio::test]
async fn new_sign_in_notices_can_be_turned_off() {
    let g = Gatehouse::start_with(Options {
        extra_toml: "[notify]\nnew_device = false\n".into(),
        ..Options::default()
    })
    .await;
    g.sign_up("pia@example.com", "password1").await;
    g.sign_in("pia@example.com", "password1").await;
    // A later mail arrives; nothing was queued before it.
    let resp = forgot(&g, "pia@example.com").await;
    assert_eq!(resp.status(), 200);
    let mail = g.smtp.wait_for_nth("pia@example.com", 2).await;
    assert!(subject(&mail).contains("password reset"), "{mail}");
}

#[tokio::test]
async fn expired_codes_exhausted_email_codes_and_the_remaining_refusals() {
    // In-process on a manual clock, with no sweep during the test: expired
    // records stay stored, so the answers below are exactly "expired".
    let g = Gatehouse::start_with(Options {
        otp: "ttl = \"10m\"\nmax_sends_per_day = 3\nmax_attempts = 3\n".into(),
        manual_clock: true,
        sweep_interval: "1h",
        ..Options::default()
    })
    .await;
    let quinn = g.sign_up("quinn@example.com", "password1").await;

    // An expired reset code, and the decoy of an unknown address, expire alike.
    let code = reset_code(&g, "quinn@example.com").await;
    assert_eq!(forgot(&g, "ghost@example.com").await.status(), 200);
    g.advance(std::time::Duration::from_secs(11 * 60));
    let known = seen(reset(&g, "quinn@example.com", &code, "password2").await).await;
    let unknown = seen(reset(&g, "ghost@example.com", &code, "password2").await).await;
    assert_eq!(known.0, 400);
    assert!(known.2.contains("expired"), "{known:?}");
    assert_eq!(known, unknown);
    assert!(signed_in(&g, &quinn).await);

    // Session required.
    for (method, path) in [
        (
            reqwest::Method::DELETE,
            format!("{SESSIONS}/0123456789abcdef"),
        ),
        (reqwest::Method::POST, EMAIL_VERIFY.to_string()),
        (reqwest::Method::POST, EMAIL_CHANGE.to_string()),
    ] {
        let resp = send(&g, method, &path, "", Some(json!({ "code": "123456" }))).await;
        assert_eq!(resp.status(), 401, "{path}");
    }

    // Email-change codes: wrong ones count, then 429 even for the right one.
    let change = |to: &'static str| {
        send(
            &g,
            reqwest::Method::POST,
            EMAIL_CHANGE,
            &quinn,
            Some(json!({ "newEmail": to, "password": "password1" })),
        )
    };
    assert_eq!(change("quinn2@example.com").await.status(), 200);
    let code = extract_code(&g.smtp.wait_for_nth("quinn2@example.com", 1).await).unwrap();
    let verify = |code: String| {
        send(
            &g,
            reqwest::Method::POST,
            EMAIL_VERIFY,
            &quinn,
            Some(json!({ "code": code })),
        )
    };
    for i in 1..=3u32 {
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + i) % 1_000_000);
        assert_eq!(verify(wrong).await.status(), 400);
    }
    assert_eq!(verify(code).await.status(), 429);
    assert_eq!(g.auth_check(&quinn).await["email"], "quinn@example.com");

    // Email-change requests are limited like send-otp.
    assert_eq!(change("quinn3@example.com").await.status(), 200);
    assert_eq!(change("quinn4@example.com").await.status(), 200);
    let resp = change("quinn5@example.com").await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn concurrent_requests_use_a_code_once_and_respect_the_send_limit() {
    let g = start().await;
    g.sign_up("rae@example.com", "password1").await;
    let code = reset_code(&g, "rae@example.com").await;
    let mut resets = Vec::new();
    for i in 0..6 {
        let (client, url) = (g.client(), g.url(RESET));
        let body = json!({ "email": "rae@example.com", "code": code, "password": format!("password-{i}") });
        resets.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for r in resets {
        statuses.push(r.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 400, 400, 400, 400, 400]);

    let mut forgots = Vec::new();
    for _ in 0..6 {
        let (client, url) = (g.client(), g.url(FORGOT));
        forgots.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .json(&json!({ "email": "sid@example.com" }))
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for f in forgots {
        statuses.push(f.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
}
