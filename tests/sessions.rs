//! Sign-in, auth-check, logout, expiry and what survives a restart.

mod common;

use std::time::Duration;

use common::{Gatehouse, Options, session_cookie, set_cookie_header};
use serde_json::json;

const SIGNIN: &str = "/api/v1/user/signin";
const LOGOUT: &str = "/api/v1/user/logout";

#[tokio::test]
async fn sign_in_gives_a_fresh_session_each_time() {
    let g = Gatehouse::start().await;
    let first = g.sign_up("kim@example.com", "password1").await;
    let second = g.sign_in("KIM@example.com", "password1").await;
    let third = g.sign_in("kim@example.com", "password1").await;
    assert_ne!(first, second);
    assert_ne!(second, third);
    for c in [&first, &third] {
        assert_eq!(g.auth_check(c).await["isAuthenticated"], true);
    }
    let resp = g
        .post_json(
            SIGNIN,
            json!({ "email": "kim@example.com", "password": "password1" }),
        )
        .await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(resp.json::<serde_json::Value>().await.unwrap()["msg"].is_string());
}

#[tokio::test]
async fn sign_in_while_signed_in_rotates_the_token() {
    let g = Gatehouse::start().await;
    let old = g.sign_up("lee@example.com", "password1").await;
    let resp = g
        .post_json_with_cookie(
            SIGNIN,
            json!({ "email": "lee@example.com", "password": "password1" }),
            &old,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let new = session_cookie(&resp, g.cookie_name()).unwrap();
    assert_ne!(old, new);
    assert_eq!(
        g.auth_check(&old).await,
        json!({ "isAuthenticated": false })
    );
    assert_eq!(g.auth_check(&new).await["isAuthenticated"], true);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_identical() {
    let g = Gatehouse::start().await;
    g.sign_up("mia@example.com", "password1").await;
    let wrong = g
        .post_json(
            SIGNIN,
            json!({ "email": "mia@example.com", "password": "password2" }),
        )
        .await;
    let unknown = g
        .post_json(
            SIGNIN,
            json!({ "email": "nobody@example.com", "password": "password2" }),
        )
        .await;
    assert_eq!(wrong.status(), 400);
    assert_eq!(unknown.status(), 400);
    assert!(wrong.headers().get("set-cookie").is_none());
    let (a, b) = (wrong.text().await.unwrap(), unknown.text().await.unwrap());
    assert_eq!(a, b);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&a).unwrap()["message"],
        "Invalid email or password"
    );
    let missing = g
        .post_json(SIGNIN, json!({ "email": "mia@example.com" }))
        .await;
    assert_eq!(missing.status(), 400);
}

#[tokio::test]
async fn auth_check_without_or_with_bad_cookies() {
    let g = Gatehouse::start().await;
    let name = g.cookie_name();
    for cookie in [
        String::new(),
        format!("{name}="),
        format!("{name}=garbage"),
        format!("{name}={}", "A".repeat(43)),
        format!("{name}={}", "A".repeat(10_000)),
        "other=1".to_string(),
    ] {
        assert_eq!(
            g.auth_check(&cookie).await,
            json!({ "isAuthenticated": false }),
            "{cookie}"
        );
    }
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let g = Gatehouse::start().await;
    let cookie = g.sign_up("ned@example.com", "password1").await;
    let other = g.sign_in("ned@example.com", "password1").await;
    // Used once first, so the session sits in the in-memory cache: logout
    // must drop it from there too.
    assert_eq!(g.auth_check(&cookie).await["isAuthenticated"], true);
    let resp = g.post_json_with_cookie(LOGOUT, json!({}), &cookie).await;
    assert_eq!(resp.status(), 200);
    let cleared = set_cookie_header(&resp, g.cookie_name()).expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The old token is dead on the server, not just in the browser.
    assert_eq!(
        g.auth_check(&cookie).await,
        json!({ "isAuthenticated": false })
    );
    assert_eq!(g.auth_check(&other).await["isAuthenticated"], true);
    // Logging out again, or without a cookie: 401, cookie cleared anyway.
    for c in [cookie.as_str(), ""] {
        let resp = g.post_json_with_cookie(LOGOUT, json!({}), c).await;
        assert_eq!(resp.status(), 401);
        assert!(
            set_cookie_header(&resp, g.cookie_name())
                .unwrap()
                .contains("Max-Age=0")
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["message"], "Not authenticated");
    }
}

// The expiry tests run the server in-process on a manual clock and move
// it forward instead of sleeping (see `Options::manual_clock`).
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sessions_expire_when_idle() {
    let g = Gatehouse::start_with(Options {
        session: "idle_timeout = \"1h\"\nabsolute_timeout = \"30d\"".into(),
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let cookie = g.sign_up("olga@example.com", "password1").await;
    let other = g.sign_in("olga@example.com", "password1").await;
    // Used every 40 minutes, it stays alive for hours past the idle
    // timeout (each use is written back: the touch interval is 1 min) ...
    for _ in 0..6 {
        g.advance(40 * MINUTE);
        assert_eq!(g.auth_check(&cookie).await["isAuthenticated"], true);
        let resp = g.get_with_cookie("/api/v2/tasks", &cookie).await;
        assert_eq!(resp.status(), 200);
    }
    // ... while the session left unused for those 4 hours is gone ...
    assert_eq!(
        g.auth_check(&other).await,
        json!({ "isAuthenticated": false })
    );
    // ... and the used one dies after an hour without use.
    g.advance(61 * MINUTE);
    assert_eq!(
        g.auth_check(&cookie).await,
        json!({ "isAuthenticated": false })
    );
    let resp = g.get_with_cookie("/api/v2/tasks", &cookie).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn a_burst_of_session_uses_is_written_back_and_survives_a_restart() {
    let mut g = Gatehouse::start_with(Options {
        session: "idle_timeout = \"1h\"\nabsolute_timeout = \"30d\"".into(),
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let mut used = vec![g.sign_up("uma@example.com", "password1").await];
    for _ in 0..11 {
        used.push(g.sign_in("uma@example.com", "password1").await);
    }
    let unused = g.sign_in("uma@example.com", "password1").await;
    g.advance(40 * MINUTE);
    // All at once: every one of these uses is due to be written back.
    let statuses = futures_util::future::join_all(
        used.iter()
            .map(|cookie| g.get_with_cookie("/api/v2/tasks", cookie)),
    )
    .await;
    assert!(statuses.iter().all(|resp| resp.status() == 200));
    // Stopped right after: the store knows every use (the cache is gone).
    g.restart();
    g.advance(40 * MINUTE);
    for cookie in &used {
        assert_eq!(g.auth_check(cookie).await["isAuthenticated"], true);
    }
    // 80 minutes without use: idle past the hour.
    assert_eq!(
        g.auth_check(&unused).await,
        json!({ "isAuthenticated": false })
    );
}

#[tokio::test]
async fn sessions_expire_at_the_absolute_limit_even_when_used() {
    let g = Gatehouse::start_with(Options {
        session: "idle_timeout = \"1h\"\nabsolute_timeout = \"2h\"".into(),
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let cookie = g.sign_up("pat@example.com", "password1").await;
    assert_eq!(g.auth_check(&cookie).await["isAuthenticated"], true);
    // Used every 50 minutes (never idle for an hour) ...
    for _ in 0..2 {
        g.advance(50 * MINUTE);
        assert_eq!(g.auth_check(&cookie).await["isAuthenticated"], true);
    }
    // ... it still ends two hours after sign-in.
    g.advance(25 * MINUTE);
    assert_eq!(
        g.auth_check(&cookie).await,
        json!({ "isAuthenticated": false })
    );
    let resp = g.get_with_cookie("/api/v2/tasks", &cookie).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn users_sessions_and_pending_codes_survive_restart_and_kill() {
    let mut g = Gatehouse::start().await;
    let cookie = g.sign_up("quinn@example.com", "password1").await;
    let code = g.request_code("rita@example.com").await;
    g.restart();
    assert_eq!(g.auth_check(&cookie).await["isAuthenticated"], true);
    g.sign_in("quinn@example.com", "password1").await;

    // kill -9 right after acknowledged writes loses nothing.
    let resp = g
        .post_json(
            "/api/v1/user/signup/verify",
            json!({ "email": "rita@example.com", "code": code, "password": "password2" }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let rita = session_cookie(&resp, g.cookie_name()).unwrap();
    let code = g.request_code("sam@example.com").await;
    g.kill_and_restart();
    assert_eq!(g.auth_check(&rita).await["email"], "rita@example.com");
    g.sign_in("rita@example.com", "password2").await;
    let resp = g
        .post_json(
            "/api/v1/user/signup/verify",
            json!({ "email": "sam@example.com", "code": code, "password": "password3" }),
        )
        .await;
    assert_eq!(resp.status(), 200);

    // Logout survives a kill too.
    let resp = g.post_json_with_cookie(LOGOUT, json!({}), &rita).await;
    assert_eq!(resp.status(), 200);
    g.kill_and_restart();
    assert_eq!(
        g.auth_check(&rita).await,
        json!({ "isAuthenticated": false })
    );
}

#[tokio::test]
async fn plain_http_mode_drops_secure_and_host_prefix() {
    let g = Gatehouse::start_with(Options {
        tls: false,
        ..Options::default()
    })
    .await;
    let code = g.request_code("tom@example.com").await;
    let resp = g
        .post_json(
            "/api/v1/user/signup/verify",
            json!({ "email": "tom@example.com", "code": code, "password": "password1" }),
        )
        .await;
    let header = set_cookie_header(&resp, "sid").expect("plain cookie name");
    assert!(!header.contains("Secure"), "{header}");
    assert!(header.contains("HttpOnly"));
    assert!(g.logs().contains("plain HTTP"));
}
