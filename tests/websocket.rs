//! WebSocket pass-through and live connections that end with their
//! session: a real WebSocket echo server (tokio-tungstenite) behind
//! Gatehouse, a real WebSocket client over TLS, handshake auth and
//! cross-site refusal, text and binary echo both ways, and sockets and
//! Server-Sent Events streams closed within 5 s of logout, operator revoke
//! and idle expiry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use common::backends::{HttpBackend, WsEcho};
use common::{Gatehouse, Options};

/// The bound: a live connection closes within 5 s of its session
/// ending.
const CLOSE_BOUND: Duration = Duration::from_secs(5);
const LOGOUT: &str = "/api/v1/user/logout";

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

struct Setup {
    g: Gatehouse,
    echo: WsEcho,
    web: HttpBackend,
}

/// `/ws/` (required) and `/open-ws/` (optional) → the echo server;
/// everything else (optional) → a web backend with an endless `/events`.
async fn setup(session: &str) -> Setup {
    setup_on(session, false).await
}

/// [`setup`], in-process on a manual clock (`Options::manual_clock`) when
/// `manual_clock`: expiry tests move it instead of waiting.
async fn setup_on(session: &str, manual_clock: bool) -> Setup {
    let echo = WsEcho::start().await;
    let web = HttpBackend::start("web", None).await;
    let g = Gatehouse::start_with(Options {
        extra_toml: format!(
            "[cors]\nallowed_origins = [\"https://app.example\"]\n\
             [upstreams.ws]\nurl = \"http://{}\"\n\
             [upstreams.web]\nurl = \"http://{}\"\n",
            echo.addr, web.addr
        ),
        routes: "[[route]]\nprefix = \"/ws/\"\nauth = \"required\"\nupstream = \"ws\"\n\
                 [[route]]\nprefix = \"/open-ws/\"\nauth = \"optional\"\nupstream = \"ws\"\n\
                 [[route]]\nprefix = \"/\"\nauth = \"optional\"\nupstream = \"web\"\n"
            .into(),
        session: session.into(),
        manual_clock,
        ..Default::default()
    })
    .await;
    Setup { g, echo, web }
}

/// Opens a WebSocket to `path` through Gatehouse (wss, the test CA) with
/// extra handshake headers.
async fn connect(g: &Gatehouse, path: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(g.ca.client_config(&[b"http/1.1"])))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut req = format!("wss://localhost:{}{path}", g.addr.port())
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    tokio_tungstenite::client_async(req, tls)
        .await
        .map(|(ws, _)| ws)
}

/// A WebSocket over HTTP/2 and the connection's request handle (kept so
/// the connection stays up).
type H2Ws = (
    WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
);

/// Opens a WebSocket to `path` over HTTP/2 with RFC 8441 extended CONNECT
/// (as Chromium does when the server allows it); `Err(status)` if refused.
async fn connect_h2(
    g: &Gatehouse,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Result<H2Ws, u16> {
    connect_h2_protocol(g, path, cookie, origin, "websocket").await
}

/// Extended CONNECT with any `:protocol`.
async fn connect_h2_protocol(
    g: &Gatehouse,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    protocol: &'static str,
) -> Result<H2Ws, u16> {
    use http_body_util::Empty;
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(g.ca.client_config(&[b"h2"])))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Extended CONNECT may only be sent once the server's SETTINGS allowed
    // it; one answered request makes sure they have arrived.
    let url = |p: &str| format!("https://localhost:{}{p}", g.addr.port());
    let warm = http::Request::get(url("/api/v1/auth-check"))
        .body(Empty::new())
        .unwrap();
    sender.send_request(warm).await.unwrap();
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(url(path))
        .header("sec-websocket-version", "13");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    let mut req = req.body(Empty::new()).unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    let resp = sender.send_request(req).await.unwrap();
    if resp.status() != 200 {
        return Err(resp.status().as_u16());
    }
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let ws = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    Ok((ws, sender))
}

fn status_of(result: Result<Ws, WsError>) -> u16 {
    match result {
        Ok(_) => 101,
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

/// Receives the greeting, then checks a text and a binary round trip.
async fn assert_echoes<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    let greeting = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert_eq!(
        greeting.unwrap().unwrap().unwrap(),
        Message::text("welcome"),
        "upstream → client"
    );
    ws.send(Message::text("hello over gatehouse"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert_eq!(
        echoed.unwrap().unwrap().unwrap(),
        Message::text("hello over gatehouse")
    );
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x80]).collect();
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert_eq!(echoed.unwrap().unwrap().unwrap(), Message::binary(bytes));
}

/// Waits (up to `CLOSE_BOUND`) for the socket to end: a close frame, an
/// error such as a reset, or the end of the stream. Panics if it is still
/// open, or if a data message arrives instead.
async fn assert_closed_within_bound<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    what: &str,
) {
    let ended = tokio::time::timeout(CLOSE_BOUND, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(other)) => panic!("{what}: unexpected message {other:?}"),
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "{what}: socket still open after {CLOSE_BOUND:?}"
    );
}

#[tokio::test]
async fn handshake_without_a_session_on_a_required_route_is_401_and_never_reaches_upstream() {
    let s = setup("").await;
    let name = s.g.cookie_name();
    let forged = format!("{name}={}", "x".repeat(43));
    assert_eq!(status_of(connect(&s.g, "/ws/chat", &[]).await), 401);
    assert_eq!(
        status_of(connect(&s.g, "/ws/chat", &[("cookie", &forged)]).await),
        401
    );
    assert!(s.echo.handshakes().is_empty(), "a handshake got through");
    // And with a session it is accepted.
    let session = s.g.sign_up("wes@example.com", "password1").await;
    let mut ws = connect(&s.g, "/ws/chat", &[("cookie", &session)])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.g.logs()));
    assert_echoes(&mut ws).await;
    assert_eq!(s.echo.handshakes().len(), 1);
}

#[tokio::test]
async fn echo_both_ways_with_identity_headers_and_without_the_session_cookie() {
    let s = setup("").await;
    let session = s.g.sign_up("eve@example.com", "password1").await;
    let cookie = format!("theme=dark; {session}");
    let mut ws = connect(
        &s.g,
        "/ws/chat?room=1",
        &[
            ("cookie", &cookie),
            ("x-auth-email", "admin@example.com"),
            ("x-auth-user-id", "999"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-request-id", "forged"),
        ],
    )
    .await
    .unwrap();
    assert_echoes(&mut ws).await;

    let seen = s.echo.handshakes().pop().unwrap();
    assert_eq!(seen["x-auth-email"], "eve@example.com");
    assert_eq!(
        seen["x-auth-user-id"], "1",
        "the real id, not the forged 999"
    );
    assert_eq!(seen["cookie"], "theme=dark", "session cookie stripped");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        seen["x-forwarded-host"],
        format!("localhost:{}", s.g.addr.port())
    );
    assert_ne!(seen["x-request-id"], "forged");
    assert!(
        seen["upgrade"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("websocket")
    );
    assert!(seen.contains_key("sec-websocket-key"));

    // The gauge counts the open socket.
    let metrics = s.g.metrics().await;
    assert!(
        metrics.contains("gatehouse_websocket_connections 1"),
        "{metrics}"
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn cross_site_handshake_with_the_session_cookie_is_403_unless_the_origin_is_allowed() {
    let s = setup("").await;
    let session = s.g.sign_up("cy@example.com", "password1").await;
    let same_origin = format!("https://localhost:{}", s.g.addr.port());
    for path in ["/ws/chat", "/open-ws/chat"] {
        let refused = connect(
            &s.g,
            path,
            &[("cookie", &session), ("origin", "https://evil.example")],
        )
        .await;
        assert_eq!(status_of(refused), 403, "{path}");
    }
    assert!(
        s.echo.handshakes().is_empty(),
        "a hijacked handshake got through"
    );

    // Accepted: the allowed origin, the same origin, and a foreign origin
    // that carries no session cookie (it gains nothing).
    for (path, headers) in [
        (
            "/ws/chat",
            vec![
                ("cookie", session.as_str()),
                ("origin", "https://app.example"),
            ],
        ),
        (
            "/ws/chat",
            vec![
                ("cookie", session.as_str()),
                ("origin", same_origin.as_str()),
            ],
        ),
        ("/open-ws/chat", vec![("origin", "https://evil.example")]),
    ] {
        let mut ws = connect(&s.g, path, &headers)
            .await
            .unwrap_or_else(|e| panic!("{headers:?}: {e}"));
        assert_echoes(&mut ws).await;
    }
    assert_eq!(s.echo.handshakes().len(), 3);
}

#[tokio::test]
async fn logout_in_another_connection_closes_the_open_socket() {
    let s = setup("").await;
    let session = s.g.sign_up("lou@example.com", "password1").await;
    let mut ws = connect(&s.g, "/ws/chat", &[("cookie", &session)])
        .await
        .unwrap();
    assert_echoes(&mut ws).await;
    // An anonymous socket on an optional route is not anyone's session.
    let mut anonymous = connect(&s.g, "/open-ws/chat", &[]).await.unwrap();
    assert_eq!(
        anonymous.next().await.unwrap().unwrap(),
        Message::text("welcome")
    );

    let resp =
        s.g.post_json_with_cookie(LOGOUT, serde_json::json!({}), &session)
            .await;
    assert_eq!(resp.status(), 200);
    assert_closed_within_bound(&mut ws, "after logout").await;
    // The upstream side was closed too.
    let upstream_closed =
        common::eventually(CLOSE_BOUND, || (s.echo.closed() >= 1).then_some(())).await;
    assert!(upstream_closed.is_some(), "upstream socket still open");
    // The session cannot open a new one.
    assert_eq!(
        status_of(connect(&s.g, "/ws/chat", &[("cookie", &session)]).await),
        401
    );
    // The anonymous socket still works.
    anonymous.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        anonymous.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
}

#[tokio::test]
async fn operator_revoke_from_the_cli_closes_only_that_sessions_socket() {
    let s = setup("").await;
    let alice = s.g.sign_up("alice@example.com", "password1").await;
    let bob = s.g.sign_up("bob@example.com", "password1").await;
    let mut alice_ws = connect(&s.g, "/ws/a", &[("cookie", &alice)]).await.unwrap();
    let mut bob_ws = connect(&s.g, "/ws/b", &[("cookie", &bob)]).await.unwrap();
    assert_echoes(&mut alice_ws).await;
    assert_echoes(&mut bob_ws).await;

    let (ok, out, err) = s.g.cli(
        &["session", "list", "--user", "alice@example.com", "--json"],
        "",
    );
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (ok, _, err) = s.g.cli(&["session", "revoke", &id, "--json"], "");
    assert!(ok, "{err}");

    assert_closed_within_bound(&mut alice_ws, "after session revoke").await;
    bob_ws.send(Message::text("bob is fine")).await.unwrap();
    assert_eq!(
        bob_ws.next().await.unwrap().unwrap(),
        Message::text("bob is fine")
    );

    // `user disable` ends Bob's too.
    let (ok, _, err) = s.g.cli(&["user", "disable", "bob@example.com"], "");
    assert!(ok, "{err}");
    assert_closed_within_bound(&mut bob_ws, "after user disable").await;
}

#[tokio::test]
async fn idle_expiry_closes_the_socket() {
    // The socket itself does not count as use of the session.
    let s = setup_on("idle_timeout = \"1h\"\n", true).await;
    let session = s.g.sign_up("ida@example.com", "password1").await;
    let mut ws = connect(&s.g, "/ws/chat", &[("cookie", &session)])
        .await
        .unwrap();
    assert_echoes(&mut ws).await;
    // Half an hour on (the server's clock), it is open and in use ...
    s.g.advance(Duration::from_secs(30 * 60));
    ws.send(Message::text("half an hour on")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("half an hour on")
    );
    // ... which did not count: an hour after the handshake the session has
    // expired, and the socket is gone within the bound.
    s.g.advance(Duration::from_secs(31 * 60));
    assert_closed_within_bound(&mut ws, "after idle expiry").await;
    assert_eq!(
        status_of(connect(&s.g, "/ws/chat", &[("cookie", &session)]).await),
        401
    );
}

/// Reads an SSE response until an error or its end, up to `limit`; returns
/// whether it ended and the chunks read.
async fn read_until_end(resp: &mut reqwest::Response, limit: Duration) -> (bool, usize) {
    let mut chunks = 0;
    let ended = tokio::time::timeout(limit, async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => chunks += 1,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    (ended.is_ok(), chunks)
}

#[tokio::test]
async fn event_streams_opened_with_a_session_end_on_logout() {
    let s = setup("").await;
    let session = s.g.sign_up("sse@example.com", "password1").await;
    for (round, client) in [s.g.client(), s.g.h2_client()].into_iter().enumerate() {
        let session = s.g.sign_in("sse@example.com", "password1").await;
        let mut mine = client
            .get(s.g.url("/events"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(mine.status(), 200);
        assert_eq!(mine.headers()["content-type"], "text/event-stream");
        let mut anonymous = client.get(s.g.url("/events")).send().await.unwrap();
        // Both streams are flowing.
        let first = mine.chunk().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: event 0"), "{first:?}");
        assert!(anonymous.chunk().await.unwrap().is_some());

        let resp =
            s.g.post_json_with_cookie(LOGOUT, serde_json::json!({}), &session)
                .await;
        assert_eq!(resp.status(), 200);
        let (ended, _) = read_until_end(&mut mine, CLOSE_BOUND).await;
        assert!(ended, "event stream outlived the logout");
        // The proxy let go of the upstream stream too (earlier rounds ended
        // two streams each).
        let released = common::eventually(CLOSE_BOUND, || {
            (s.web.streams_ended() > 2 * round).then_some(())
        })
        .await;
        assert!(released.is_some(), "upstream stream still held");
        // The anonymous stream goes on.
        for _ in 0..2 {
            let next = tokio::time::timeout(Duration::from_secs(10), anonymous.chunk()).await;
            assert!(
                matches!(next, Ok(Ok(Some(_)))),
                "anonymous stream was cut: {next:?}"
            );
        }
    }
    drop(session);
}

#[tokio::test]
async fn websocket_over_http2_extended_connect_echoes_and_ends_with_the_session() {
    let s = setup("").await;
    assert_eq!(
        connect_h2(&s.g, "/ws/chat", None, None).await.err(),
        Some(401)
    );
    let session = s.g.sign_up("h2@example.com", "password1").await;
    let evil = Some("https://evil.example");
    assert_eq!(
        connect_h2(&s.g, "/ws/chat", Some(&session), evil)
            .await
            .err(),
        Some(403)
    );
    assert!(s.echo.handshakes().is_empty());
    // Same origin (judged by :authority, HTTP/2 has no Host), as a browser
    // sends it; and without an Origin, as a non-browser client does.
    let same_origin = format!("https://localhost:{}", s.g.addr.port());
    let (mut browser_like, _h2) = connect_h2(&s.g, "/ws/chat", Some(&session), Some(&same_origin))
        .await
        .unwrap_or_else(|status| panic!("{status}\n{}", s.g.logs()));
    assert_echoes(&mut browser_like).await;
    let (mut ws, _h2) = connect_h2(&s.g, "/ws/chat", Some(&session), None)
        .await
        .unwrap_or_else(|status| panic!("{status}\n{}", s.g.logs()));
    assert_echoes(&mut ws).await;
    // The upstream got an ordinary HTTP/1.1 upgrade with a key of its own.
    let seen = s.echo.handshakes().pop().unwrap();
    assert!(
        seen["upgrade"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("websocket")
    );
    assert_eq!(seen["sec-websocket-key"].len(), 24);
    assert_eq!(seen["x-auth-email"], "h2@example.com");
    assert!(seen.get("cookie").is_none());

    let resp =
        s.g.post_json_with_cookie(LOGOUT, serde_json::json!({}), &session)
            .await;
    assert_eq!(resp.status(), 200);
    assert_closed_within_bound(&mut ws, "HTTP/2 WebSocket after logout").await;
}

#[tokio::test]
async fn websocket_to_an_https_upstream_is_verified_and_echoes() {
    let pki = common::backends::Pki::new("Realtime Test CA");
    let echo = WsEcho::start_tls(pki.acceptor(&["realtime.internal"])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let g = Gatehouse::start_with(Options {
        extra_toml: format!(
            "[upstreams.rt]\nurl = \"https://{}\"\nca_file = \"{}\"\nserver_name = \"realtime.internal\"\n\
             [upstreams.rt_wrong]\nurl = \"https://{}\"\nca_file = \"{}\"\nserver_name = \"other.internal\"\n",
            echo.addr,
            ca_file.display(),
            echo.addr,
            ca_file.display()
        ),
        routes: "[[route]]\nprefix = \"/rt/\"\nauth = \"required\"\nupstream = \"rt\"\n\
                 [[route]]\nprefix = \"/rt-wrong/\"\nauth = \"required\"\nupstream = \"rt_wrong\"\n"
            .into(),
        ..Default::default()
    })
    .await;
    let session = g.sign_up("tls@example.com", "password1").await;
    // A certificate for another name: 502, nothing gets through.
    assert_eq!(
        status_of(connect(&g, "/rt-wrong/x", &[("cookie", &session)]).await),
        502
    );
    assert!(echo.handshakes().is_empty());
    let mut ws = connect(&g, "/rt/x", &[("cookie", &session)])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", g.logs()));
    assert_echoes(&mut ws).await;
    assert_eq!(echo.handshakes()[0]["x-auth-email"], "tls@example.com");
}

#[tokio::test]
async fn logout_all_set_password_user_delete_and_absolute_expiry_close_sockets() {
    // In-process on a manual clock: the last case moves it past the
    // absolute lifetime.
    let s = setup_on("absolute_timeout = \"2h\"\n", true).await;
    let mut sockets = Vec::new();
    for who in ["all", "pw", "del", "old"] {
        let email = format!("{who}@example.com");
        let session = s.g.sign_up(&email, "password1").await;
        let mut ws = connect(&s.g, "/ws/x", &[("cookie", &session)])
            .await
            .unwrap();
        assert_echoes(&mut ws).await;
        sockets.push((email, session, ws));
    }
    let mut old = sockets.pop().unwrap();

    // logout-all through the API, set-password and delete through the CLI.
    let resp =
        s.g.post_json_with_cookie(
            "/api/v1/user/logout-all",
            serde_json::json!({}),
            &sockets[0].1,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_closed_within_bound(&mut sockets[0].2, "after logout-all").await;
    let (ok, _, err) = s.g.cli(
        &["user", "set-password", &sockets[1].0, "--password-stdin"],
        "password2\n",
    );
    assert!(ok, "{err}");
    assert_closed_within_bound(&mut sockets[1].2, "after set-password").await;
    let (ok, _, err) = s.g.cli(&["user", "delete", &sockets[2].0], "");
    assert!(ok, "{err}");
    assert_closed_within_bound(&mut sockets[2].2, "after user delete").await;

    // The untouched session's socket is still open, and its session valid
    // (used within the idle timeout) ...
    s.g.advance(Duration::from_secs(110 * 60));
    old.2.send(Message::text("still open")).await.unwrap();
    assert_eq!(
        old.2.next().await.unwrap().unwrap(),
        Message::text("still open")
    );
    assert_eq!(s.g.auth_check(&old.1).await["isAuthenticated"], true);
    // ... until the absolute lifetime ends both, the socket within the bound.
    s.g.advance(Duration::from_secs(11 * 60));
    assert_closed_within_bound(&mut old.2, "after absolute expiry").await;
    assert_eq!(s.g.auth_check(&old.1).await["isAuthenticated"], false);
}

#[tokio::test]
async fn shutdown_closes_open_websockets_instead_of_waiting_out_the_drain() {
    let echo = WsEcho::start().await;
    let mut g = Gatehouse::start_with(Options {
        extra_toml: format!(
            "drain_timeout = \"60s\"\n[upstreams.ws]\nurl = \"http://{}\"\n",
            echo.addr
        ),
        routes: "[[route]]\nprefix = \"/\"\nauth = \"optional\"\nupstream = \"ws\"\n".into(),
        ..Default::default()
    })
    .await;
    // Over HTTP/2 the tunnel is a stream of a connection the drain waits
    // for; over HTTP/1.1 the connection itself.
    let (mut h2_ws, _h2) = connect_h2(&g, "/live", None, None).await.unwrap();
    let mut h1_ws = connect(&g, "/live", &[]).await.unwrap();
    assert_echoes(&mut h2_ws).await;
    assert_echoes(&mut h1_ws).await;
    g.signal("TERM");
    // Well inside the 60 s drain: the server closed the sockets and exited.
    assert_closed_within_bound(&mut h2_ws, "HTTP/2 WebSocket at shutdown").await;
    assert_closed_within_bound(&mut h1_ws, "HTTP/1.1 WebSocket at shutdown").await;
    let status = g.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        g.logs()
    );
}

#[tokio::test]
async fn a_declined_upgrade_comes_back_as_the_upstreams_answer_and_hop_headers_stay_ours() {
    let s = setup("").await;
    let session = s.g.sign_up("no@example.com", "password1").await;
    match connect(&s.g, "/ws/reject", &[("cookie", &session)]).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            assert_eq!(resp.headers()["x-app"], "declined");
            // (tungstenite's client shows the body as framed on the wire.)
            let body = resp.body().as_deref().unwrap_or_default();
            assert!(String::from_utf8_lossy(body).contains("no sockets here"));
        }
        other => panic!(
            "expected the upstream's 403, got {:?}",
            other.map(|_| "a socket")
        ),
    }
    // Headers the client names in Connection are hop-by-hop and stay here;
    // the upgrade's own two go through.
    let mut ws = connect(
        &s.g,
        "/ws/chat",
        &[
            ("cookie", &session),
            ("connection", "Upgrade, x-hop"),
            ("x-hop", "secret"),
            ("keep-alive", "timeout=5"),
        ],
    )
    .await
    .unwrap();
    assert_echoes(&mut ws).await;
    let seen = s.echo.handshakes().pop().unwrap();
    assert!(seen.get("x-hop").is_none(), "{seen:?}");
    assert!(seen.get("keep-alive").is_none(), "{seen:?}");
    assert_eq!(seen["connection"], "upgrade");
}

#[tokio::test]
async fn account_password_change_and_deletion_close_the_sockets_they_end() {
    let s = setup("").await;
    let here = s.g.sign_up("pat@example.com", "password1").await;
    let there = s.g.sign_in("pat@example.com", "password1").await;
    let gone = s.g.sign_up("gus@example.com", "password1").await;
    let mut sockets = Vec::new();
    for cookie in [&here, &there, &gone] {
        let mut ws = connect(&s.g, "/ws/x", &[("cookie", cookie)]).await.unwrap();
        assert_echoes(&mut ws).await;
        sockets.push(ws);
    }
    let mut gone_ws = sockets.pop().unwrap();

    // A password change ends this browser's old token and every other
    // session: both sockets close.
    let resp = s
        .g
        .client()
        .post(s.g.url("/api/v1/user/password"))
        .header("cookie", &here)
        .json(&serde_json::json!({ "currentPassword": "password1", "newPassword": "password2" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for ws in &mut sockets {
        assert_closed_within_bound(ws, "after a password change").await;
    }
    // Gus's socket was not touched by Pat's change; his account deletion
    // closes it.
    gone_ws.send(Message::text("still mine")).await.unwrap();
    assert_eq!(
        gone_ws.next().await.unwrap().unwrap(),
        Message::text("still mine")
    );
    let resp =
        s.g.client()
            .delete(s.g.url("/api/v1/user"))
            .header("cookie", &gone)
            .json(&serde_json::json!({ "password": "password1" }))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    assert_closed_within_bound(&mut gone_ws, "after account deletion").await;
}
