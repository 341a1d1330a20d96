//! Path spellings of a protected route: none may reach the upstream
//! without a session (dot segments, encodings, case, slashes, parameters,
//! absolute-form targets, Host tricks, HTTP/2 `:path`).

use crate::common::{Gatehouse, raw};
use crate::{assert_nothing_protected_reached_upstream, plain};

/// `/api/v2/` is `required`; `/api/v2/public/` is `none`; `/` is `optional`.
const SPELLINGS: &[&str] = &[
    "/api/v2/secret",
    "/api/v2",
    "/api/v2/",
    "/API/V2/secret",
    "/Api/V2",
    "//api/v2/secret",
    "///api/v2/secret",
    "/api//v2/secret",
    "/api/v2//secret",
    "/./api/v2/secret",
    "/api/./v2/secret",
    "/api/v2/./secret",
    "/x/../api/v2/secret",
    "/api/v2/public/../secret",
    "/api/v2/public/..%2fsecret",
    "/api/v2/public/%2e%2e/secret",
    "/api/v2/public/%2E%2E/secret",
    "/api/v2/public/.%2e/secret",
    "/api/v2/public/%2e./secret",
    "/api/v2/public%2f..%2fsecret",
    "/api/v2/public%2F..%2Fsecret",
    "/api/v2/public/%252e%252e/secret",
    "/api/v2/public/%25%32%65%25%32%65/secret",
    "/api/v2/public/..;/secret",
    "/api/v2/public;/../secret",
    "/api/v2/public/..;x=y/secret",
    "/api/v2;/secret",
    "/api;x=1/v2/secret",
    "/api/v2%3b/secret",
    "/api/v2/public%5c..%5csecret",
    "/api/v2/public\\..\\secret",
    "/%61pi/v2/secret",
    "/api/%76%32/secret",
    "/api/v%32/secret",
    "/%2fapi/v2/secret",
    "/api%2fv2/secret",
    "/api/v2%2fsecret",
    "/api/v2./secret",
    "/api/v2../secret",
    "/api/v2%20/secret",
    "/api/v2%09/secret",
    "/api/v2%00/secret",
    "/api/v2/secret%00.css",
    "/api/v2/secret?next=/api/v2/public/",
    "/api/v2/secret#/api/v2/public/",
    "/api/v2/public/..%252fsecret",
    "/api/v2/public/%2e%2e%2fsecret",
    "/api/v2/public/....//secret",
    "/api/v2/public/ /../secret",
    "http://localhost/api/v2/secret",
    "http://localhost/api/v2/public/../secret",
    "HTTP://LOCALHOST/API/V2/secret",
    "http://evil.example/api/v2/secret",
    "http://localhost//api/v2/secret",
];

#[tokio::test]
async fn no_spelling_of_a_protected_path_reaches_the_upstream() {
    assert!(SPELLINGS.len() >= 50);
    let g = plain().await;
    for target in SPELLINGS {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let response = raw::send(&g, request.as_bytes()).await;
        // An answer is required: a dropped connection would hide a hang
        // or a crash as easily as a refusal.
        let statuses = raw::statuses(&response);
        assert!(
            matches!(statuses[..], [status] if (400..500).contains(&status)),
            "{target} answered {statuses:?}:\n{response}"
        );
    }
    assert_nothing_protected_reached_upstream(&g);
    assert_eq!(g.upstream.count(), 0, "{:?}", g.upstream.requests());
}

#[tokio::test]
async fn host_and_url_override_tricks_do_not_change_the_route() {
    let g = plain().await;
    let requests = [
        "GET /api/v2/secret HTTP/1.1\r\nHost: localhost/api/v2/public/\r\n\r\n",
        "GET /api/v2/secret HTTP/1.1\r\nHost: localhost\r\nX-Original-URL: /api/v2/public/x\r\n\r\n",
        "GET /api/v2/secret HTTP/1.1\r\nHost: localhost\r\nX-Rewrite-URL: /dashboard\r\n\r\n",
        "GET /api/v2/secret HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Uri: /dashboard\r\nX-Forwarded-Prefix: /api/v2/public\r\n\r\n",
        "GET /api/v2/secret HTTP/1.1\r\nHost: localhost\r\nX-Auth-User-Id: 1\r\nX-Auth-Email: admin@example.com\r\n\r\n",
        "GET /api/v2/secret HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
        "GET /api/v2/secret HTTP/1.1\r\n\r\n",
        "GET /api/v2/secret HTTP/1.0\r\n\r\n",
        "GET http://localhost:1/api/v2/public/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ];
    for request in requests {
        let response = raw::send(&g, request.as_bytes()).await;
        let status = raw::statuses(&response).first().copied().unwrap_or(0);
        if request.contains("public/x HTTP") {
            // Absolute-form to a public path is routed by its path only:
            // the authority in the target changes nothing.
            assert_eq!(status, 200, "{request:?}");
            continue;
        }
        assert!(
            (400..500).contains(&status),
            "{request:?} answered {status}"
        );
    }
    assert_nothing_protected_reached_upstream(&g);
    // Override headers never reach the upstream either.
    for r in g.upstream.requests() {
        for h in [
            "x-original-url",
            "x-rewrite-url",
            "x-forwarded-uri",
            "x-auth-user-id",
        ] {
            assert!(r.headers.get(h).is_none(), "{h} forwarded");
        }
    }
}

#[tokio::test]
async fn http2_path_variants_need_a_session_too() {
    let g = Gatehouse::start().await;
    let paths = [
        "/api/v2/secret",
        "/API/v2/secret",
        "//api/v2/secret",
        "/api/v2/public/../secret",
        "/api/v2/public/%2e%2e/secret",
        "/api/v2/public%2f..%2fsecret",
        "/api/v2;x/secret",
        "/%61pi/v2/secret",
        "/api/v2",
        "/api/v2/public/..;/secret",
    ];
    for path in paths {
        let status = raw::h2_get(&g, path, &[("x-auth-user-id", "1")]).await;
        assert!((400..500).contains(&status), "h2 {path} answered {status}");
    }
    assert_eq!(g.upstream.count(), 0);
    // A legitimate h2 request to a public path still works.
    assert_eq!(raw::h2_get(&g, "/api/v2/public/ok", &[]).await, 200);
}
