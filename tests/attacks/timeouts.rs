//! Slow clients: a slowloris connection is closed by the header timeout
//! while other clients are served; silent connections (before TLS, before
//! the first byte) and idle keep-alive connections are closed too.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Gatehouse, Options, raw};

fn short_timeouts(tls: bool) -> Options {
    Options {
        tls,
        extra_toml: "header_read_timeout = \"1s\"\n".into(),
        ..Options::default()
    }
}

/// Reads until the peer closes; `true` if that happened within `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. a 408 response before the close
        }
    }
}

#[tokio::test]
async fn slowloris_is_cut_off_while_others_are_served() {
    let g = Gatehouse::start_with(short_timeouts(false)).await;
    let mut slow = TcpStream::connect(g.addr).await.unwrap();
    slow.write_all(b"GET /public HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let dripping = async {
        // One header byte every 200 ms: never completes the head in time.
        for _ in 0..100 {
            if slow.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut buf = [0u8; 64];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
            {
                return true;
            }
        }
        false
    };
    let others = async {
        for _ in 0..5 {
            let resp = g.client().get(g.url("/public")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (cut_off, ()) = tokio::join!(dripping, others);
    assert!(cut_off, "the slowloris connection was never closed");
}

#[tokio::test]
async fn silent_connections_are_closed_before_and_after_tls() {
    let g = Gatehouse::start_with(short_timeouts(true)).await;
    // No ClientHello at all.
    let mut silent = TcpStream::connect(g.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    // TLS done, then nothing.
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    let mut tls = raw::tls_connect(&g, tcp, b"http/1.1").await;
    assert!(closed_within(&mut tls, Duration::from_secs(10)).await);

    let plain = Gatehouse::start_with(short_timeouts(false)).await;
    let mut silent = TcpStream::connect(plain.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    // A partial HTTP/2 preface, then silence.
    let mut partial = TcpStream::connect(plain.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(closed_within(&mut partial, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let g = Gatehouse::start_with(short_timeouts(false)).await;
    let mut conn = TcpStream::connect(g.addr).await.unwrap();
    conn.write_all(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut conn, Duration::from_secs(10)).await);
}

/// One whole HTTP/1.1 response with a `Content-Length` body.
async fn read_response(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .expect("a Content-Length");
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_is_cut_off() {
    // keep_alive_timeout far above header_read_timeout: only the head's own
    // deadline can end this connection in time.
    let g = Gatehouse::start_with(Options {
        tls: false,
        extra_toml: "header_read_timeout = \"1s\"\nkeep_alive_timeout = \"60s\"\n".into(),
        ..Options::default()
    })
    .await;
    let mut conn = TcpStream::connect(g.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    // Prompt requests on the connection are served ...
    for _ in 0..2 {
        conn.write_all(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let response = read_response(&mut conn).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    // ... one whose head drips in (a byte every 200 ms) is not.
    conn.write_all(b"GET /public HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let cut_off = loop {
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        if conn.write_all(b"X").await.is_err() {
            break true;
        }
        match tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => panic!("answered a head that never ended: {:?}", &buf[..n]),
            Err(_) => {}
        }
    };
    assert!(cut_off, "the dripping head was never cut off");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_while_every_slot_is_busy() {
    // Idle connections make room for new ones (see `slots.rs`); busy ones
    // do not: with both slots answering a slow request, a third client
    // waits until one finishes.
    let g = Gatehouse::start_with(Options {
        tls: false,
        extra_toml: "max_connections = 2\nheader_read_timeout = \"30s\"\n".into(),
        upstream_timeout: "20s",
        ..Options::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(g.addr).await.unwrap();
        conn.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        held.push(conn);
    }
    crate::common::eventually(Duration::from_secs(5), || {
        (g.upstream.count() == 2).then_some(())
    })
    .await
    .expect("both slow requests reached the upstream");
    let mut third = TcpStream::connect(g.addr).await.unwrap();
    third
        .write_all(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond server.max_connections");
    // ... and is served once a slow response has gone out.
    let n = tokio::time::timeout(Duration::from_secs(15), third.read(&mut buf))
        .await
        .expect("served after a slot freed up")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    for mut conn in held {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}
