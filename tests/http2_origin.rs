//! The request's authority, whatever the protocol: over HTTP/2 (what every
//! browser speaks over TLS) a same-origin state change carrying the session
//! cookie passes, a forged one is refused and logged, and the upstream's
//! `X-Forwarded-Host` is the authority the client asked for. HTTP/1.1
//! requests without a usable `Host` are refused with 400.

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::Version;
use serde_json::json;
use tokio::net::TcpStream;

use common::{Gatehouse, raw};

/// The origin a browser sends for a page served by `g`.
fn own_origin(g: &Gatehouse) -> String {
    format!("https://localhost:{}", g.addr.port())
}

#[tokio::test]
async fn same_origin_state_changes_pass_over_http2() {
    let g = Gatehouse::start().await;
    let session = g.sign_up("h2@example.com", "password1").await;
    let h2 = g.h2_client();
    let origin = own_origin(&g);

    for (method, path) in [
        ("POST", "/api/v2/tasks"),
        ("PUT", "/api/v2/tasks/1"),
        ("DELETE", "/api/v2/tasks/1"),
    ] {
        let resp = h2
            .request(method.parse().unwrap(), g.url(path))
            .header("cookie", &session)
            .header("origin", &origin)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/json")
            .body("{\"title\":\"t\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), Version::HTTP_2, "not HTTP/2");
        let status = resp.status();
        assert_eq!(
            status,
            200,
            "{method} {path}: {}",
            resp.text().await.unwrap()
        );
        let got = g.upstream.last();
        assert_eq!(got.method, method);
        assert_eq!(
            got.headers["x-forwarded-host"],
            format!("localhost:{}", g.addr.port())
        );
        assert_eq!(got.headers["x-auth-email"], "h2@example.com");
    }
    assert_eq!(g.upstream.count(), 3);

    // A forged request from another site is refused, and the log says why.
    for forged in ["https://evil.example", "https://localhost:1", "null"] {
        let resp = h2
            .post(g.url("/api/v1/user/logout"))
            .header("cookie", &session)
            .header("origin", forged)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.status(), 403, "{forged}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["message"], "Cross-site request refused");
    }
    assert_eq!(g.auth_check(&session).await["isAuthenticated"], true);
    let line = g
        .wait_for_log(&[
            "gatehouse::security",
            "cross-site request refused",
            "origin=https://evil.example",
        ])
        .await;
    assert!(line.contains(&format!("compared_with={origin}")), "{line}");
    assert!(line.contains("INFO"), "{line}");
    assert!(
        !line.contains(session.split('=').nth(1).unwrap()),
        "session token logged: {line}"
    );
    assert_eq!(
        g.upstream.count(),
        3,
        "a forged request reached the upstream"
    );

    // A CORS preflight from an origin not allowed is logged the same way.
    let resp = h2
        .request(reqwest::Method::OPTIONS, g.url("/api/v2/tasks"))
        .header("origin", "https://spa.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let line = g
        .wait_for_log(&[
            "gatehouse::security",
            "origin=https://spa.example",
            "preflight",
        ])
        .await;
    assert!(line.contains(&format!("compared_with={origin}")), "{line}");

    // The user can sign out over HTTP/2, and sign in again.
    let resp = h2
        .post(g.url("/api/v1/user/logout"))
        .header("cookie", &session)
        .header("origin", &origin)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "logout over HTTP/2");
    assert_eq!(g.auth_check(&session).await["isAuthenticated"], false);
    let resp = h2
        .post(g.url("/api/v1/user/signin"))
        .header("cookie", &session)
        .header("origin", &origin)
        .json(&json!({ "email": "h2@example.com", "password": "password1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "sign-in while holding a cookie over HTTP/2"
    );
}

/// One HTTP/2 request with `:authority` = `authority` and any extra headers
/// (a `host` among them), bypassing client-side normalisation.
async fn h2_post(g: &Gatehouse, authority: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    let tls = raw::tls_connect(g, tcp, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri = format!("https://{authority}/api/v2/tasks");
    let mut req = http::Request::builder().method("POST").uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from_static(b"{}"))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn http2_authority_spellings_and_conflicting_host() {
    let g = Gatehouse::start().await;
    let session = g.sign_up("authority@example.com", "password1").await;
    let port = g.addr.port();
    let with = |origin: &str| vec![("cookie", session.clone()), ("origin", origin.to_string())];
    let send = |authority: String, headers: Vec<(&'static str, String)>| {
        let g = &g;
        async move {
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h2_post(g, &authority, &pairs).await
        }
    };
    // Upper-case authority, and the origin as the browser spells it.
    let (status, _) = send(
        format!("LOCALHOST:{port}"),
        with(&format!("https://localhost:{port}")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        g.upstream.last().headers["x-forwarded-host"],
        format!("LOCALHOST:{port}")
    );
    // IPv4 literal.
    let (status, _) = send(
        format!("127.0.0.1:{port}"),
        with(&format!("https://127.0.0.1:{port}")),
    )
    .await;
    assert_eq!(status, 200);
    // A matching `host` header next to `:authority` is fine.
    let mut headers = with(&format!("https://localhost:{port}"));
    headers.push(("host", format!("localhost:{port}")));
    let (status, _) = send(format!("localhost:{port}"), headers).await;
    assert_eq!(status, 200);
    let before = g.upstream.count();
    // A different `host` next to `:authority` is malformed (RFC 9113 §8.3.1).
    let mut headers = with("https://evil.example");
    headers.push(("host", "evil.example".to_string()));
    let (status, body) = send(format!("localhost:{port}"), headers).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("Host header does not match :authority"),
        "{body}"
    );
    // The origin is compared with `:authority`, not with some header.
    let (status, _) = send(
        format!("localhost:{port}"),
        with(&format!("https://127.0.0.1:{port}")),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(g.upstream.count(), before);
}

#[tokio::test]
async fn http1_requests_need_exactly_one_valid_host() {
    let g = Gatehouse::start().await;
    for (request, message) in [
        (
            "GET /dashboard HTTP/1.1\r\nConnection: close\r\n\r\n",
            "Host header is required",
        ),
        (
            "GET /dashboard HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            "Only one Host header is allowed",
        ),
        (
            "GET /dashboard HTTP/1.1\r\nHost: user@localhost\r\nConnection: close\r\n\r\n",
            "Host header is not a valid host[:port]",
        ),
        (
            "GET /dashboard HTTP/1.1\r\nHost: localhost:99999\r\nConnection: close\r\n\r\n",
            "Host header is not a valid host[:port]",
        ),
    ] {
        let response = raw::send(&g, request.as_bytes()).await;
        assert_eq!(raw::statuses(&response), [400], "{request:?}:\n{response}");
        assert!(response.contains(message), "{request:?}:\n{response}");
    }
    assert_eq!(g.upstream.count(), 0);
    // The valid forms pass: one Host, absolute form (its authority wins),
    // and HTTP/1.0 without Host.
    for request in [
        "GET /dashboard HTTP/1.1\r\nHost: LOCALHOST\r\nConnection: close\r\n\r\n",
        "GET https://localhost/dashboard HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        "GET /dashboard HTTP/1.0\r\n\r\n",
    ] {
        let response = raw::send(&g, request.as_bytes()).await;
        assert_eq!(raw::statuses(&response), [200], "{request:?}:\n{response}");
    }
    let forwarded: Vec<_> = g
        .upstream
        .requests()
        .iter()
        .map(|r| {
            r.headers
                .get("x-forwarded-host")
                .map(|v| v.to_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        forwarded,
        [
            Some("LOCALHOST".to_string()),
            Some("localhost".to_string()),
            None
        ]
    );
}

#[tokio::test]
async fn a_foreign_logout_is_refused_even_without_the_cookie() {
    // A SameSite=Lax cookie does not go with a cross-site form POST, but the
    // answer's clearing Set-Cookie would still sign the user out.
    let g = Gatehouse::start().await;
    for client in [g.client(), g.h2_client()] {
        for path in ["/api/v1/user/logout", "/api/v1/user/logout-all"] {
            let resp = client
                .post(g.url(path))
                .header("origin", "https://evil.example")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("x=1")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 403, "{path}");
            assert!(
                resp.headers().get("set-cookie").is_none(),
                "{path} clears the cookie"
            );
        }
    }
    // The same request from the page's own origin, or without an Origin, is served.
    let resp = g
        .h2_client()
        .post(g.url("/api/v1/user/logout"))
        .header("origin", own_origin(&g))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no session to end, but not refused");
    assert!(resp.headers().get("set-cookie").is_some());
}
