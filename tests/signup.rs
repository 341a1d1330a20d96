//! Sign-up by emailed code: `send-otp` and `verify`, every row and failure.

mod common;

use common::{Gatehouse, Options, extract_code, session_cookie, set_cookie_header};
use serde_json::json;

const SEND: &str = "/api/v1/user/signup/send-otp";
const VERIFY: &str = "/api/v1/user/signup/verify";

async fn message(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let cache = resp.headers().get("cache-control").cloned();
    assert_eq!(cache.unwrap(), "no-store");
    (status, resp.json().await.unwrap())
}

fn assert_error(body: &serde_json::Value, text: &str) {
    assert_eq!(body["message"], text, "{body}");
    assert_eq!(body["msg"], text, "{body}");
}

#[tokio::test]
async fn full_signup_flow_sets_a_session_cookie() {
    let g = Gatehouse::start().await;
    let resp = g
        .post_json(SEND, json!({ "email": "Alice@Example.com " }))
        .await;
    let (status, body) = message(resp).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "msg": "OTP sent successfully" }));

    let mail = g.smtp.wait_for_nth("alice@example.com", 1).await;
    assert!(mail.contains("5 minutes"), "{mail}");
    let code = extract_code(&mail).unwrap();
    let subject = mail.lines().find(|l| l.starts_with("Subject:")).unwrap();
    assert!(!subject.contains(&code));

    let resp = g
        .post_json(
            VERIFY,
            json!({ "email": "ALICE@example.com", "code": code, "password": "correct horse" }),
        )
        .await;
    let header = set_cookie_header(&resp, "__Host-sid").expect("session cookie");
    let cookie = session_cookie(&resp, "__Host-sid").unwrap();
    let (status, body) = message(resp).await;
    assert_eq!(status, 200);
    assert!(body["msg"].is_string());
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=604800",
    ] {
        assert!(header.contains(attr), "{attr} missing in {header}");
    }
    assert_eq!(
        g.auth_check(&cookie).await,
        json!({ "isAuthenticated": true, "email": "alice@example.com" })
    );
    // The code never reaches the log; the mail went by SMTP.
    assert!(!g.logs().contains(&code));
}

#[tokio::test]
async fn send_otp_rejects_missing_and_invalid_email() {
    let g = Gatehouse::start().await;
    let (s, b) = message(g.post_json(SEND, json!({})).await).await;
    assert_eq!(s, 400);
    assert_error(&b, "Missing required field: email");
    let (s, b) = message(g.post_json(SEND, json!({ "email": "not-an-email" })).await).await;
    assert_eq!(s, 400);
    assert_error(&b, "A valid email address is required");
    let (s, _) = message(g.post_json(SEND, json!({ "email": 42 })).await).await;
    assert_eq!(s, 400);
    assert_eq!(g.smtp.mails().len(), 0);
}

#[tokio::test]
async fn send_otp_is_limited_per_email_with_retry_after() {
    let g = Gatehouse::start_with(Options {
        otp: "max_sends_per_day = 3".into(),
        ..Options::default()
    })
    .await;
    // Each mail is awaited before the next request: an unsent mail would be
    // superseded by the next code (see tests/mail_outbox.rs).
    for _ in 0..3 {
        g.request_code("bob@example.com").await;
    }
    // Spelling variants of one mailbox share the limit.
    let resp = g
        .post_json(SEND, json!({ "email": " BOB@example.com" }))
        .await;
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 23 * 3600 && retry <= 24 * 3600, "{retry}");
    let (s, b) = message(resp).await;
    assert_eq!(s, 429);
    assert!(b["message"].as_str().unwrap().contains("Too many"));
    // Other emails are unaffected.
    let resp = g
        .post_json(SEND, json!({ "email": "carol@example.com" }))
        .await;
    assert_eq!(resp.status(), 200);
    g.smtp.wait_for_nth("carol@example.com", 1).await;
    assert_eq!(g.smtp.count_to("bob@example.com"), 3);
}

#[tokio::test]
async fn a_new_code_replaces_the_previous_one() {
    let g = Gatehouse::start().await;
    let first = g.request_code("dan@example.com").await;
    let second = g.request_code("dan@example.com").await;
    if first != second {
        let resp = g
            .post_json(
                VERIFY,
                json!({ "email": "dan@example.com", "code": first, "password": "password1" }),
            )
            .await;
        let (s, b) = message(resp).await;
        assert_eq!(s, 400);
        assert_error(&b, "Invalid verification code");
    }
    let resp = g
        .post_json(
            VERIFY,
            json!({ "email": "dan@example.com", "code": second, "password": "password1" }),
        )
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn verify_failures() {
    let g = Gatehouse::start().await;
    let code = g.request_code("erin@example.com").await;
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let cases = [
        (
            json!({ "code": code, "password": "password1" }),
            "Missing required field: email",
        ),
        (
            json!({ "email": "erin@example.com", "password": "password1" }),
            "Missing required field: code",
        ),
        (
            json!({ "email": "erin@example.com", "code": code }),
            "Missing required field: password",
        ),
        (
            json!({ "email": "erin@example.com", "code": code, "password": "short" }),
            "Password must be at least 8 characters",
        ),
        (
            json!({ "email": "erin@example.com", "code": code, "password": "x".repeat(129) }),
            "Password must be at most 128 characters",
        ),
        (
            json!({ "email": "erin@example.com", "code": wrong, "password": "password1" }),
            "Invalid verification code",
        ),
        (
            json!({ "email": "erin@example.com", "code": "12ab56", "password": "password1" }),
            "Invalid verification code",
        ),
        (
            json!({ "email": "nobody@example.com", "code": code, "password": "password1" }),
            "Invalid verification code",
        ),
    ];
    for (body, expected) in cases {
        let (s, b) = message(g.post_json(VERIFY, body.clone()).await).await;
        assert_eq!(s, 400, "{body}");
        assert_error(&b, expected);
    }
    // The right code still works after one wrong attempt ...
    let resp = g
        .post_json(
            VERIFY,
            json!({ "email": "erin@example.com", "code": code, "password": "password1" }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    // ... and only once.
    let (s, b) = message(
        g.post_json(
            VERIFY,
            json!({ "email": "erin@example.com", "code": code, "password": "password1" }),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_error(&b, "Invalid verification code");
}

#[tokio::test]
async fn wrong_codes_void_the_code_after_max_attempts() {
    let g = Gatehouse::start_with(Options {
        otp: "max_attempts = 3".into(),
        ..Options::default()
    })
    .await;
    let code = g.request_code("frank@example.com").await;
    let mut wrong_codes = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .filter(|c| *c != code);
    for _ in 0..3 {
        let resp = g
            .post_json(VERIFY, json!({ "email": "frank@example.com", "code": wrong_codes.next().unwrap(), "password": "password1" }))
            .await;
        assert_eq!(resp.status(), 400);
    }
    for attempt in [wrong_codes.next().unwrap(), code] {
        let (s, b) = message(
            g.post_json(
                VERIFY,
                json!({ "email": "frank@example.com", "code": attempt, "password": "password1" }),
            )
            .await,
        )
        .await;
        assert_eq!(s, 429);
        assert_error(&b, "Too many incorrect attempts; request a new code");
    }
    // A fresh code works again.
    let code = g.request_code("frank@example.com").await;
    let resp = g
        .post_json(
            VERIFY,
            json!({ "email": "frank@example.com", "code": code, "password": "password1" }),
        )
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn expired_code_is_refused() {
    // In-process on a manual clock, and no sweep while the test runs: the
    // expired code is still stored, so the answer is exactly "expired".
    let g = Gatehouse::start_with(Options {
        otp: "ttl = \"10m\"".into(),
        manual_clock: true,
        sweep_interval: "1h",
        ..Options::default()
    })
    .await;
    let minute = std::time::Duration::from_secs(60);
    // Nine minutes on, a code is still good ...
    let code = g.request_code("hana@example.com").await;
    g.advance(9 * minute);
    assert_eq!(g.verify("hana@example.com", &code).await, 200);
    // ... eleven minutes on, it has expired.
    let code = g.request_code("gina@example.com").await;
    g.advance(11 * minute);
    let (s, b) = message(
        g.post_json(
            VERIFY,
            json!({ "email": "gina@example.com", "code": code, "password": "password1" }),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["message"], "Verification code has expired; request a new one",
        "{b}"
    );
}

#[tokio::test]
async fn existing_account_gets_a_notice_not_a_code_and_the_same_answer() {
    let g = Gatehouse::start().await;
    g.sign_up("hank@example.com", "password1").await;
    let known = g
        .post_json(SEND, json!({ "email": "hank@example.com" }))
        .await;
    let unknown = g
        .post_json(SEND, json!({ "email": "ivy@example.com" }))
        .await;
    assert_eq!(known.status(), unknown.status());
    assert_eq!(known.text().await.unwrap(), unknown.text().await.unwrap());
    let notice = g.smtp.wait_for_nth("hank@example.com", 2).await;
    assert!(notice.contains("already exists"), "{notice}");
    assert_eq!(extract_code(&notice), None);
    // No code is pending for the existing account, so verify cannot re-create it.
    let (s, _) = message(
        g.post_json(
            VERIFY,
            json!({ "email": "hank@example.com", "code": "000000", "password": "password1" }),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn concurrent_verifies_of_one_code_create_exactly_one_account() {
    // Seven of the passwords below fail on purpose; keep the back-off out of the way.
    let g = Gatehouse::start_with(Options {
        extra_toml: "[limits]\nsignin_failures_per_email = 100\n".into(),
        ..Options::default()
    })
    .await;
    let code = g.request_code("jack@example.com").await;
    let attempts = (0..8).map(|i| {
        let client = g.client();
        let url = g.url(VERIFY);
        let body = json!({ "email": "jack@example.com", "code": code, "password": format!("password-{i}") });
        async move { client.post(url).json(&body).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );
    // Exactly one of the passwords works.
    let mut ok = 0;
    for i in 0..8 {
        let resp = g
            .post_json(
                "/api/v1/user/signin",
                json!({ "email": "jack@example.com", "password": format!("password-{i}") }),
            )
            .await;
        ok += usize::from(resp.status() == 200);
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn malformed_bodies_get_clear_json_errors() {
    let g = Gatehouse::start().await;
    let client = g.client();
    let send = |ct: &'static str, body: Vec<u8>| {
        client
            .post(g.url(SEND))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = send("text/plain", b"{\"email\":\"a@b.co\"}".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = send("application/json", b"{\"email\":".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.json::<serde_json::Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .starts_with("Malformed JSON")
    );
    let r = send("application/json", b"\xff\xfe".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = send("application/json", b"[\"a@b.co\"]".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = send(
        "application/json; charset=utf-8",
        br#"{"email":"a\u0000@b.co"}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let big = format!("{{\"email\":\"{}@b.co\"}}", "a".repeat(20_000));
    let r = send("application/json", big.into_bytes()).await.unwrap();
    assert_eq!(r.status(), 413);
    let r = client.get(g.url(SEND)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(g.smtp.mails().len(), 0);
}

async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
