//! Forward-auth (`GET /api/v1/auth/verify`) as nginx `auth_request`, Caddy
//! `forward_auth` and Traefik `ForwardAuth` call it.

mod common;

use common::{Gatehouse, Options};

async fn verify(g: &Gatehouse, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = g.client().get(g.url("/api/v1/auth/verify"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn verify_answers_by_session_and_by_the_trusted_original_uri() {
    let g = Gatehouse::start_with(Options {
        extra_toml: "trusted_proxies = [\"127.0.0.1/32\"]".into(),
        ..Options::default()
    })
    .await;
    let cookie = g.sign_up("fay@example.com", "password1").await;

    // Without an original URI the strictest rule applies.
    let resp = verify(&g, &[]).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("x-auth-user-id").is_none());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Authentication required");

    let resp = verify(&g, &[("cookie", &cookie)]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-user-id"], "1");
    assert_eq!(resp.headers()["x-auth-email"], "fay@example.com");

    // The original request's route decides whether a session is needed.
    let public = [("x-forwarded-uri", "/api/v2/public/status?x=1")];
    let resp = verify(&g, &public).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-auth-user-id").is_none());
    assert_eq!(
        verify(&g, &[("x-original-uri", "/api/v2/tasks")])
            .await
            .status(),
        401
    );
    assert_eq!(
        verify(&g, &[("x-original-uri", "/dashboard")])
            .await
            .status(),
        200
    );
    let resp = verify(&g, &[("x-original-uri", "/dashboard"), ("cookie", &cookie)]).await;
    assert_eq!(resp.headers()["x-auth-email"], "fay@example.com");

    // Spellings that could smuggle a protected path under a public prefix
    // fall back to `required`.
    for sneaky in [
        "/api/v2/public/../tasks",
        "/api/v2/public/%2e%2e/tasks",
        "/API/V2/tasks",
    ] {
        let resp = verify(&g, &[("x-forwarded-uri", sneaky)]).await;
        assert_eq!(resp.status(), 401, "{sneaky}");
    }
    // Conflicting headers: strictest rule.
    let resp = verify(
        &g,
        &[
            ("x-forwarded-uri", "/api/v2/public/a"),
            ("x-original-uri", "/api/v2/tasks"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 401);

    // Only GET; and nothing was ever proxied.
    let resp = g
        .client()
        .post(g.url("/api/v1/auth/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(g.upstream.count(), 0);
}

#[tokio::test]
async fn untrusted_peers_cannot_choose_the_route_rule() {
    // No trusted_proxies: the test client is not a proxy Gatehouse believes.
    let g = Gatehouse::start().await;
    for (name, uri) in [
        ("x-forwarded-uri", "/api/v2/public/status"),
        ("x-original-uri", "/dashboard"),
    ] {
        let resp = verify(&g, &[(name, uri)]).await;
        assert_eq!(resp.status(), 401, "{name}: {uri}");
    }
    let cookie = g.sign_up("gus@example.com", "password1").await;
    let resp = verify(&g, &[("cookie", &cookie), ("x-forwarded-uri", "/x")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-email"], "gus@example.com");
}
