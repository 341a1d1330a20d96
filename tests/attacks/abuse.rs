//! Abuse: brute force of codes and passwords, enumeration, spoofed client
//! addresses, and malformed input.

use serde_json::json;

use crate::common::{Gatehouse, Options, session_cookie, set_cookie_header};

const SEND: &str = "/api/v1/user/signup/send-otp";
const VERIFY: &str = "/api/v1/user/signup/verify";
const SIGNIN: &str = "/api/v1/user/signin";

#[tokio::test]
async fn otp_brute_force_is_stopped_within_max_attempts() {
    let g = Gatehouse::start().await;
    let code = g.request_code("brute@example.com").await;
    let mut rejected_as_wrong = 0;
    for guess in (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .filter(|c| *c != code)
        .take(30)
    {
        let resp = g
            .post_json(
                VERIFY,
                json!({ "email": "brute@example.com", "code": guess, "password": "password1" }),
            )
            .await;
        match resp.status().as_u16() {
            400 => rejected_as_wrong += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        rejected_as_wrong, 5,
        "only max_attempts guesses are evaluated"
    );
    let resp = g
        .post_json(
            VERIFY,
            json!({ "email": "brute@example.com", "code": code, "password": "password1" }),
        )
        .await;
    assert_eq!(
        resp.status(),
        429,
        "the right code is void after the guesses"
    );
}

/// Status, body and header names (without `date`) of a response.
async fn shape(resp: reqwest::Response) -> (u16, Vec<String>, String) {
    let status = resp.status().as_u16();
    let mut names: Vec<String> = resp
        .headers()
        .keys()
        .map(|k| k.to_string())
        .filter(|k| k != "date")
        .collect();
    names.sort();
    (status, names, resp.text().await.unwrap())
}

#[tokio::test]
async fn responses_are_identical_whether_or_not_the_email_has_an_account() {
    let g = Gatehouse::start().await;
    g.sign_up("known@example.com", "password1").await;
    for (path, known, unknown) in [
        (
            SEND,
            json!({ "email": "known@example.com" }),
            json!({ "email": "unknown@example.com" }),
        ),
        (
            VERIFY,
            json!({ "email": "known@example.com", "code": "123456", "password": "password1" }),
            json!({ "email": "unknown@example.com", "code": "123456", "password": "password1" }),
        ),
        (
            SIGNIN,
            json!({ "email": "known@example.com", "password": "wrong-password" }),
            json!({ "email": "unknown@example.com", "password": "wrong-password" }),
        ),
    ] {
        let a = shape(g.post_json(path, known).await).await;
        let b = shape(g.post_json(path, unknown).await).await;
        assert_eq!(a, b, "{path}");
    }
}

#[tokio::test]
async fn sign_in_failures_back_off_but_the_owners_browser_gets_in() {
    let mut g = Gatehouse::start_with(Options {
        extra_toml: "[limits]\nsignin_failures_per_email = 3\nsignin_failures_per_ip = 100\nsignin_per_ip_per_minute = 100\nfirst_backoff = \"10m\"\n".into(),
        ..Options::default()
    })
    .await;
    g.sign_up("victim@example.com", "password1").await;
    // The owner's browser signs in once and keeps its known-device cookie.
    let resp = g
        .post_json(
            SIGNIN,
            json!({ "email": "victim@example.com", "password": "password1" }),
        )
        .await;
    let device_name = format!("{}_device", g.cookie_name());
    let device = session_cookie(&resp, &device_name).expect("known-device cookie");
    let header = set_cookie_header(&resp, &device_name).unwrap();
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Strict"),
        "{header}"
    );

    // The attacker fails on purpose.
    for _ in 0..3 {
        let r = g
            .post_json(
                SIGNIN,
                json!({ "email": "victim@example.com", "password": "guess" }),
            )
            .await;
        assert_eq!(r.status(), 400);
    }
    let r = g
        .post_json(
            SIGNIN,
            json!({ "email": "victim@example.com", "password": "password1" }),
        )
        .await;
    assert_eq!(
        r.status(),
        429,
        "even the right password waits on an unknown device"
    );
    assert!(r.headers().get("retry-after").is_some());
    // The back-off survives a restart.
    g.restart();
    let r = g
        .post_json(
            SIGNIN,
            json!({ "email": "victim@example.com", "password": "guess" }),
        )
        .await;
    assert_eq!(r.status(), 429);
    // Forged marks, or the mark of another account, do not bypass it.
    let other = g
        .post_json(
            SIGNIN,
            json!({ "email": "victim@example.com", "password": "x" }),
        )
        .await;
    assert_eq!(other.status(), 429);
    g.sign_up("attacker@example.com", "password1").await;
    let r = g
        .post_json(
            SIGNIN,
            json!({ "email": "attacker@example.com", "password": "password1" }),
        )
        .await;
    let attacker_device = session_cookie(&r, &device_name).unwrap();
    for forged in [format!("{device_name}=AAAA"), attacker_device] {
        let r = g
            .post_json_with_cookie(
                SIGNIN,
                json!({ "email": "victim@example.com", "password": "password1" }),
                &forged,
            )
            .await;
        assert_eq!(r.status(), 429, "{forged}");
    }
    // The owner's browser is not locked out.
    let r = g
        .post_json_with_cookie(
            SIGNIN,
            json!({ "email": "victim@example.com", "password": "password1" }),
            &device,
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn per_address_limits_ignore_spoofed_forwarded_for() {
    let g = Gatehouse::start_with(Options {
        extra_toml: "[limits]\nsend_otp_per_ip_per_hour = 3\n".into(),
        ..Options::default()
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let resp = g
            .client()
            .post(g.url(SEND))
            .header("x-forwarded-for", format!("10.0.0.{i}"))
            .header("x-real-ip", format!("10.0.0.{i}"))
            .json(&json!({ "email": format!("spray{i}@example.com") }))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let g = Gatehouse::start_with(Options {
        extra_toml:
            "trusted_proxies = [\"127.0.0.1/32\"]\n[limits]\nsend_otp_per_ip_per_hour = 1\n".into(),
        ..Options::default()
    })
    .await;
    for i in 0..3 {
        let resp = g
            .client()
            .post(g.url(SEND))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({ "email": format!("proxied{i}@example.com") }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "each forwarded client has its own limit"
        );
    }
    g.client()
        .get(g.url("/dashboard"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(g.upstream.last().headers["x-forwarded-for"], "198.51.100.7");
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_only() {
    let g = Gatehouse::start().await;
    let a = g.sign_up("many@example.com", "password1").await;
    let b = g.sign_in("many@example.com", "password1").await;
    let other = g.sign_up("bystander@example.com", "password1").await;
    let resp = g
        .post_json_with_cookie("/api/v1/user/logout-all", json!({}), &a)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["sessions"],
        2
    );
    assert_eq!(g.auth_check(&a).await["isAuthenticated"], false);
    assert_eq!(g.auth_check(&b).await["isAuthenticated"], false);
    assert_eq!(g.auth_check(&other).await["isAuthenticated"], true);
    let resp = g
        .post_json_with_cookie("/api/v1/user/logout-all", json!({}), &a)
        .await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn hostile_bodies_get_clear_errors_never_5xx() {
    let g = Gatehouse::start().await;
    let client = g.client();
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let bodies: Vec<(&str, Vec<u8>, u16)> = vec![
        ("application/json", b"".to_vec(), 400),
        ("application/json", b"null".to_vec(), 400),
        (
            "application/json",
            b"{\"email\": [\"a@b.co\"]}".to_vec(),
            400,
        ),
        (
            "application/json",
            b"{\"email\": {\"$gt\": \"\"}}".to_vec(),
            400,
        ),
        ("application/json", b"{\"email\": 1e99999}".to_vec(), 400),
        (
            "application/json",
            b"{\"email\": 123456789012345678901234567890}".to_vec(),
            400,
        ),
        ("application/json", deep.into_bytes(), 400),
        ("application/json", b"{\"email\":\"a@b.co\"".to_vec(), 400),
        (
            "application/json",
            b"\xef\xbb\xbf{\"email\":\"a@b.co\"}".to_vec(),
            400,
        ),
        (
            "application/json",
            b"{\"email\":\"\\ud800@b.co\"}".to_vec(),
            400,
        ),
        (
            "application/x-www-form-urlencoded",
            b"email=a@b.co".to_vec(),
            415,
        ),
        ("", b"{}".to_vec(), 415),
        ("application/json", vec![b' '; 17 * 1024], 413),
    ];
    for (ct, body, expected) in bodies {
        let mut req = client.post(g.url(SEND)).body(body.clone());
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.status(),
            expected,
            "{ct} {:.40}",
            String::from_utf8_lossy(&body)
        );
        let json: serde_json::Value = resp.json().await.unwrap();
        assert!(json["message"].is_string());
    }
    assert_eq!(g.smtp.mails().len(), 0);
}
