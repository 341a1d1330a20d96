//! The authenticated reverse proxy: route modes, header hygiene, path
//! refusals, upstream failures, HTTP/2 and streaming.

mod common;

use std::time::Duration;

use common::{Gatehouse, Options};
use serde_json::json;

#[tokio::test]
async fn required_route_without_session_is_401_and_never_reaches_upstream() {
    let g = Gatehouse::start().await;
    let name = g.cookie_name();
    for cookie in [
        "".to_string(),
        format!("{name}=forged"),
        format!("{name}={}", "x".repeat(43)),
    ] {
        let resp = g
            .client()
            .get(g.url("/api/v2/tasks"))
            .header("cookie", cookie)
            .header("x-auth-user-id", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["message"], "Authentication required");
    }
    assert_eq!(g.upstream.count(), 0);
}

#[tokio::test]
async fn authenticated_request_is_forwarded_with_identity_and_clean_headers() {
    let g = Gatehouse::start().await;
    let session = g.sign_up("uma@example.com", "password1").await;
    let resp = g
        .client()
        .post(g.url("/api/v2/tasks?sort=due&x=%2F"))
        .header("cookie", format!("theme=dark; {session}; lang=en"))
        .header("x-auth-user-id", "999")
        .header("X-Auth-Email", "admin@example.com")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-original-url", "/admin")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("x-keep-me", "1")
        .header("content-type", "application/json")
        .body("{\"title\":\"write tests\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Upstream response headers (including its own cookies) come back.
    assert_eq!(resp.headers()["set-cookie"], "app=1; Path=/");
    let got = g.upstream.last();
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/api/v2/tasks?sort=due&x=%2F");
    assert_eq!(got.body.as_ref(), b"{\"title\":\"write tests\"}");
    let h = &got.headers;
    assert_eq!(h["x-auth-user-id"], "1");
    assert_eq!(h["x-auth-email"], "uma@example.com");
    assert_eq!(h.get_all("x-auth-email").iter().count(), 1);
    assert_eq!(h["cookie"], "theme=dark; lang=en");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(
        h["x-forwarded-host"],
        format!("localhost:{}", g.addr.port())
    );
    assert_eq!(h["host"], g.upstream.addr.to_string());
    assert!(h["x-request-id"].len() >= 16);
    assert!(h.get("x-original-url").is_none());
    assert!(h.get("x-drop-me").is_none());
    assert_eq!(h["x-keep-me"], "1");
}

#[tokio::test]
async fn optional_and_none_routes() {
    let g = Gatehouse::start().await;
    let session = g.sign_up("vic@example.com", "password1").await;
    // optional, anonymous: forwarded, identity headers stripped.
    let resp = g
        .client()
        .get(g.url("/dashboard"))
        .header("x-auth-user-id", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(g.upstream.last().headers.get("x-auth-user-id").is_none());
    // optional, signed in: identity attached.
    g.get_with_cookie("/dashboard", &session).await;
    assert_eq!(g.upstream.last().headers["x-auth-email"], "vic@example.com");
    // none: forwarded without identity even with a session, cookie still stripped.
    let resp = g.get_with_cookie("/api/v2/public/status", &session).await;
    assert_eq!(resp.status(), 200);
    let last = g.upstream.last();
    assert_eq!(last.target, "/api/v2/public/status");
    assert!(last.headers.get("x-auth-user-id").is_none());
    assert!(last.headers.get("cookie").is_none());
}

#[tokio::test]
async fn lenient_spellings_of_the_protected_prefix_still_need_a_session() {
    let g = Gatehouse::start().await;
    let spellings = [
        "/api/v2",
        "/API/V2/tasks",
        "/Api/v2/",
        "//api/v2/tasks",
        "/api//v2/tasks",
        "/api/v2;x=1/tasks",
        "/api;/v2/tasks",
        "/%61pi/v2/tasks",
        "/api/%76%32/tasks",
        "/api/v2./tasks",
        "/api/v2%20/tasks",
        "/api/v2/public/..;/tasks",
    ];
    for path in spellings {
        let resp = g.client().get(g.url(path)).send().await.unwrap();
        assert!(
            matches!(resp.status().as_u16(), 400 | 401),
            "{path} → {}",
            resp.status()
        );
    }
    assert_eq!(g.upstream.count(), 0, "{:?}", g.upstream.requests());
}

#[tokio::test]
async fn ambiguous_paths_are_refused_with_400() {
    let g = Gatehouse::start().await;
    let session = g.sign_up("wes@example.com", "password1").await;
    for path in [
        "/api/v2/public/../tasks",
        "/api/v2/public/%2e%2e/tasks",
        "/api/v2/public%2f..%2ftasks",
        "/api/v2/public/%252e%252e/tasks",
        "/api/v2/%5c..%5ctasks",
        "/a/./b",
        "/api/v2/%00",
        "/api/v2/%zz",
    ] {
        // reqwest would normalise dot segments, so send the raw target ourselves.
        let status = raw_get(&g, path, &session).await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(g.upstream.count(), 0);
}

/// Sends `GET path` over TLS exactly as written and returns the status.
async fn raw_get(g: &Gatehouse, path: &str, cookie: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(g.ca.client_config(&[b"http/1.1"])));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn upstream_connections_are_reused_and_replaced_when_closed() {
    let g = Gatehouse::start().await;
    let client = g.client();
    let get = |path: &'static str| {
        let (client, url) = (client.clone(), g.url(path));
        async move {
            let resp = client.get(url).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (
                status,
                body["path"].as_str().unwrap_or_default().to_string(),
            )
        }
    };

    // Sequential requests share one kept-alive upstream connection.
    for i in 0..20 {
        let path = if i % 2 == 0 { "/even" } else { "/odd" };
        assert_eq!(get(path).await, (200, path.to_string()));
    }
    assert_eq!(g.upstream.count(), 20);
    assert_eq!(g.upstream.connections(), 1);

    // An upstream that closes after its answer: the next request gets a
    // fresh connection and nothing fails.
    assert_eq!(get("/close").await, (200, "/close".to_string()));
    assert_eq!(get("/after-close").await, (200, "/after-close".to_string()));
    assert_eq!(g.upstream.connections(), 2);

    // An upstream that drops idle connections behind our back.
    g.upstream.close_connections();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for path in ["/after-drop-1", "/after-drop-2"] {
        assert_eq!(get(path).await, (200, path.to_string()));
    }
    assert_eq!(g.upstream.connections(), 3);
    assert_eq!(g.upstream.count(), 24);
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let g = Gatehouse::start_with(Options {
        upstream_timeout: "1s",
        ..Options::default()
    })
    .await;
    let resp = g.client().get(g.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Upstream timed out");

    let mut g = g;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let config = std::fs::read_to_string(&g.config_path).unwrap();
    let config = config.replace(&g.upstream.addr.to_string(), &dead_addr.to_string());
    std::fs::write(&g.config_path, config).unwrap();
    g.restart();
    let resp = g.client().get(g.url("/anything")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Upstream unavailable");
}

#[tokio::test]
async fn http2_clients_are_served_and_forwarded() {
    let g = Gatehouse::start().await;
    let session = g.sign_up("xena@example.com", "password1").await;
    let client = g.h2_client();
    let resp = client
        .get(g.url("/api/v1/auth-check"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["isAuthenticated"],
        true
    );
    let resp = client
        .get(g.url("/api/v2/items"))
        .header("cookie", "a=1")
        .header("cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let last = g.upstream.last();
    assert_eq!(last.headers["x-auth-email"], "xena@example.com");
    assert_eq!(last.headers.get_all("cookie").iter().count(), 1);
    assert_eq!(last.headers["cookie"], "a=1");
    let resp = client.get(g.url("/api/v2/items")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn server_sent_events_stream_through_event_by_event() {
    let g = Gatehouse::start().await;
    let session = g.sign_up("yan@example.com", "password1").await;
    let mut resp = g.get_with_cookie("/api/v2/sse", &session).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("x-hop").is_none(),
        "hop-by-hop header leaked"
    );
    // The first event arrives while the upstream is still producing the rest.
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: event 1\n\n");
    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: event 2\n\ndata: event 3\n\n");
}

#[tokio::test]
async fn auth_endpoints_are_never_forwarded_in_any_spelling() {
    let g = Gatehouse::start().await;
    for path in [
        "/api/v1/auth-check",
        "/API/V1/auth-check",
        "/api/v1/auth-check/",
        "//api/v1//auth-check",
    ] {
        let resp = g.client().get(g.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.json::<serde_json::Value>().await.unwrap(),
            json!({ "isAuthenticated": false })
        );
    }
    assert_eq!(g.upstream.count(), 0);
}

#[tokio::test]
async fn unrouted_paths_are_404() {
    let g = Gatehouse::start_with(Options {
        routes: "[[route]]\nprefix = \"/api/v2/\"\nauth = \"required\"\n".into(),
        ..Options::default()
    })
    .await;
    let resp = g.client().get(g.url("/elsewhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(g.upstream.count(), 0);
}
