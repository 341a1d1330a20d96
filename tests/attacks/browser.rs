//! Browser-side attacks: cross-site request forgery, CORS, and the
//! protective headers on Gatehouse's own responses.

use serde_json::json;

use crate::common::{Gatehouse, Options};

fn with_cors() -> Options {
    Options {
        extra_toml: "[cors]\nallowed_origins = [\"https://app.example.com\"]\n".into(),
        ..Options::default()
    }
}

#[tokio::test]
async fn cross_site_state_changes_with_the_cookie_are_refused() {
    let g = Gatehouse::start_with(with_cors()).await;
    let session = g.sign_up("csrf@example.com", "password1").await;
    let client = g.client();
    for (method, path) in [
        ("POST", "/api/v2/tasks"),
        ("DELETE", "/api/v2/tasks/1"),
        ("PUT", "/dashboard"),
        ("PATCH", "/api/v2/tasks/1"),
        ("POST", "/api/v1/user/logout"),
        ("POST", "/api/v1/user/logout-all"),
    ] {
        for foreign in [
            vec![("origin", "https://evil.example")],
            vec![("origin", "null")],
            vec![("origin", &*format!("http://localhost:{}", g.addr.port()))],
            vec![("sec-fetch-site", "cross-site")],
        ] {
            let mut req = client
                .request(method.parse().unwrap(), g.url(path))
                .header("cookie", &session)
                .header("content-type", "application/json")
                .body("{}");
            for (k, v) in &foreign {
                req = req.header(*k, *v);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 403, "{method} {path} {foreign:?}");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["message"], "Cross-site request refused");
        }
    }
    assert_eq!(g.upstream.count(), 0);
    assert_eq!(
        g.auth_check(&session).await["isAuthenticated"],
        true,
        "logout was refused"
    );

    // Same origin, the allowed origin, no Origin (non-browser), and safe methods pass.
    let same = format!("https://localhost:{}", g.addr.port());
    for origin in [Some(same.as_str()), Some("https://app.example.com"), None] {
        let mut req = client
            .post(g.url("/api/v2/tasks"))
            .header("cookie", &session);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        assert_eq!(req.send().await.unwrap().status(), 200, "{origin:?}");
    }
    let resp = client
        .get(g.url("/api/v2/tasks"))
        .header("cookie", &session)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // Without the cookie there is nothing to forge: a foreign sign-up is fine.
    let resp = client
        .post(g.url("/api/v1/user/signup/send-otp"))
        .header("origin", "https://evil.example")
        .json(&json!({ "email": "x@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn cors_preflight_and_credentialed_responses_for_allowed_origins_only() {
    let g = Gatehouse::start_with(with_cors()).await;
    let session = g.sign_up("cors@example.com", "password1").await;
    let client = g.client();
    for path in ["/api/v1/user/signin", "/api/v2/tasks"] {
        let resp = client
            .request(reqwest::Method::OPTIONS, g.url(path))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, x-csrf")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{path}");
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        assert_eq!(h["access-control-allow-headers"], "content-type, x-csrf");
        assert_eq!(h["vary"], "Origin");

        let resp = client
            .request(reqwest::Method::OPTIONS, g.url(path))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert!(resp.headers().get("access-control-allow-origin").is_none());
    }
    assert_eq!(
        g.upstream.count(),
        0,
        "preflights are answered by Gatehouse"
    );
    let resp = client
        .get(g.url("/api/v1/auth-check"))
        .header("origin", "https://app.example.com")
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    let resp = client
        .get(g.url("/api/v2/tasks"))
        .header("origin", "https://app.example.com")
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn own_responses_carry_protective_headers_and_no_version() {
    let g = Gatehouse::start().await;
    let resp = g
        .client()
        .get(g.url("/api/v1/auth-check"))
        .send()
        .await
        .unwrap();
    let h = resp.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["strict-transport-security"], "max-age=31536000");
    assert!(h.get("server").is_none());
    let resp = g.client().get(g.url("/api/v2/x")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["cache-control"], "no-store");

    let plain = Gatehouse::start_with(Options {
        tls: false,
        ..Options::default()
    })
    .await;
    let resp = plain
        .client()
        .get(plain.url("/api/v1/auth-check"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("strict-transport-security").is_none());
}
