//! Connection slots (issue 18 §1): no connection keeps its slot without
//! making progress, whatever the protocol — silent HTTP/2 after TLS, idle
//! HTTP/2 that answers PINGs, bodies trickled to Gatehouse's own endpoints
//! or proxied below the minimum rate — and no one address, and no pile of
//! idle connections, locks other clients out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{Gatehouse, Options, raw};

fn options(tls: bool, server: &str) -> Options {
    Options {
        tls,
        extra_toml: format!("header_read_timeout = \"1s\"\nkeep_alive_timeout = \"1s\"\n{server}"),
        ..Options::default()
    }
}

/// Reads until the peer closes; `true` if that happened within `limit`.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A TCP connection from `local` (another loopback address) to `to`.
async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// An HTTP/2 connection over TLS from `local` that sends PINGs every
/// 100 ms; returns the request sender and the connection's task (which ends
/// when the server closes the connection).
async fn h2_connection(
    g: &Gatehouse,
    local: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tcp = connect_from(local, g.addr).await;
    let tls = raw::tls_connect(g, tcp, b"h2").await;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    (sender, tokio::spawn(conn))
}

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
) -> u16 {
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// A TLS handshake that may be refused (the server closes the socket).
async fn try_tls(
    g: &Gatehouse,
    tcp: TcpStream,
    alpn: &[u8],
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = std::sync::Arc::new(g.ca.client_config(&[alpn]));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    tokio::time::timeout(std::time::Duration::from_secs(5), handshake)
        .await
        .ok()?
        .ok()
}

/// A request from `local` on a fresh HTTP/1.1 TLS connection; its status.
async fn get_from(g: &Gatehouse, local: &str, path: &str) -> Option<u16> {
    let tcp = connect_from(local, g.addr).await;
    let mut tls = try_tls(g, tcp, b"http/1.1").await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let _ = read;
    raw::statuses(&String::from_utf8_lossy(&out))
        .first()
        .copied()
}

#[tokio::test]
async fn tls_h2_connection_that_never_sends_a_request_is_closed() {
    let g = Gatehouse::start_with(options(true, "")).await;
    // ALPN h2, then nothing at all (not even the preface).
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    let mut silent = raw::tls_connect(&g, tcp, b"h2").await;
    // Preface and SETTINGS, then PINGs but never a HEADERS frame.
    let (_sender, pinging) = h2_connection(&g, "127.0.0.1").await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "a silent h2 connection kept its slot"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), pinging).await;
    assert!(
        ended.is_ok(),
        "an h2 connection with no request kept its slot"
    );
    // The deadline is for silence, not for clients: a prompt one is served.
    let (mut sender, _conn) = h2_connection(&g, "127.0.0.1").await;
    assert_eq!(h2_get(&mut sender, "/public").await, 200);
}

#[tokio::test]
async fn idle_h2_connection_is_closed_with_goaway_despite_pings() {
    let g = Gatehouse::start_with(options(true, "")).await;
    let (mut sender, conn) = h2_connection(&g, "127.0.0.1").await;
    assert_eq!(h2_get(&mut sender, "/public").await, 200);
    // Idle from here on; the client keeps PINGing every 100 ms. A GOAWAY
    // ends the client connection cleanly (Ok), a reset would be an error.
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("an idle h2 connection answering PINGs was never closed");
    let ended = ended.unwrap();
    assert!(ended.is_ok(), "closed without GOAWAY: {ended:?}");
    assert!(sender.is_closed());
}

#[tokio::test]
async fn a_long_response_keeps_an_h2_connection_busy_not_idle() {
    // The SSE stream takes ~600 ms with keep_alive_timeout = 300ms: an open
    // stream is not idleness.
    let g = Gatehouse::start_with(Options {
        tls: true,
        extra_toml: "keep_alive_timeout = \"300ms\"\n".into(),
        ..Options::default()
    })
    .await;
    let (mut sender, _conn) = h2_connection(&g, "127.0.0.1").await;
    let req = http::Request::get("https://localhost/sse")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("event 3"),
        "{body:?}"
    );
}

#[tokio::test]
async fn trickled_body_to_an_own_endpoint_gets_408_within_the_body_deadline() {
    let g = Gatehouse::start_with(options(
        false,
        "body_read_timeout = \"1s\"\nmin_body_rate = 0\n",
    ))
    .await;
    let mut conn = TcpStream::connect(g.addr).await.unwrap();
    conn.write_all(
        b"POST /api/v1/user/signin HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // One byte every 200 ms would take 40 s to finish the body.
    while started.elapsed() < Duration::from_secs(8) {
        if conn.write_all(b" ").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received in time"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the trickling client kept the connection"
    );
}

#[tokio::test]
async fn proxied_body_below_the_minimum_rate_is_cut_and_a_normal_one_passes() {
    let g = Gatehouse::start_with(options(
        false,
        "min_body_rate = 200\nmin_body_rate_grace = \"1s\"\n",
    ))
    .await;
    let head = "POST /api/v2/public/upload HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n";
    // 1000 bytes in 5 pieces over ~1 s: 1000 B/s, well above 200 B/s.
    let mut fine = TcpStream::connect(g.addr).await.unwrap();
    fine.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..5 {
        fine.write_all(&[b'a'; 200]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), fine.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(g.upstream.last().body.len(), 1000);

    // One byte every 200 ms (5 B/s): cut soon after the grace period.
    let mut slow = TcpStream::connect(g.addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        if slow.write_all(b"b").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a body trickled at 5 B/s was never cut"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(
        g.upstream
            .requests()
            .iter()
            .filter(|r| r.body.len() == 1000)
            .count(),
        1,
        "the slow body never completed upstream"
    );
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    // Cap 4 per address, 8 in all. 20 idle h2 connections from 127.0.0.1
    // (only 4 keep a slot) leave 127.0.0.2 able to make requests.
    let g = Gatehouse::start_with(Options {
        tls: true,
        extra_toml: "max_connections = 8\nmax_connections_per_ip = 4\n\
                     header_read_timeout = \"30s\"\nkeep_alive_timeout = \"30s\"\n"
            .into(),
        ..Options::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let tcp = connect_from("127.0.0.1", g.addr).await;
        if let Some(tls) = try_tls(&g, tcp, b"h2").await {
            held.push(tls);
        }
    }
    // Each new connection from the address closed its longest-idle one:
    // the oldest sixteen are closed, the newest four still open.
    assert_eq!(held.len(), 20);
    for (i, conn) in held.iter_mut().enumerate().take(16) {
        assert!(
            closed_within(conn, Duration::from_secs(5)).await,
            "connection {i} kept its slot beyond the per-address cap"
        );
    }
    for conn in held.iter_mut().skip(16) {
        assert!(!closed_within(conn, Duration::from_millis(200)).await);
    }
    for _ in 0..3 {
        assert_eq!(get_from(&g, "127.0.0.2", "/public").await, Some(200));
    }
    // The flooding address itself is still served (its idle connections
    // make room).
    assert_eq!(get_from(&g, "127.0.0.1", "/public").await, Some(200));
}

#[tokio::test]
async fn at_the_connection_cap_the_longest_idle_connection_makes_room() {
    let g = Gatehouse::start_with(Options {
        tls: false,
        extra_toml: "max_connections = 2\nheader_read_timeout = \"30s\"\n\
                     keep_alive_timeout = \"30s\"\n"
            .into(),
        upstream_timeout: "20s",
        ..Options::default()
    })
    .await;
    let request = b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Slot 1: idle after one request. Slot 2: busy (the upstream answers
    // /slow after 5 s).
    let mut idle = TcpStream::connect(g.addr).await.unwrap();
    idle.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut busy = TcpStream::connect(g.addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    crate::common::eventually(Duration::from_secs(5), || {
        (g.upstream.requests().iter().any(|r| r.target == "/slow")).then_some(())
    })
    .await
    .expect("the slow request reached the upstream");
    // A third client is served at once; the idle connection is closed for
    // it, the busy one is not.
    let mut third = TcpStream::connect(g.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf))
        .await
        .expect("a new client waited behind an idle connection")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    let n = tokio::time::timeout(Duration::from_secs(10), busy.read(&mut buf))
        .await
        .expect("the busy connection was answered")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
