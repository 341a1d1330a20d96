//! Early answers while the client is still sending its body (issue 18 §3,
//! issue 10 item 3): 401/403/405/413/415 to a request whose body follows
//! the head in a separate write — what Python's http.client and most
//! libraries do. The client must always read the answer, and either use
//! the connection again or be told to reconnect (`Connection: close`);
//! over HTTP/2 the stream must not be reset while the body is coming.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Gatehouse, raw};

/// One HTTP/1.1 response read off a keep-alive connection.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn closes(&self) -> bool {
        self.head
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n")
    }
}

/// Reads exactly one response (head and `Content-Length` body).
async fn read_answer<S: AsyncRead + Unpin>(s: &mut S) -> Option<Answer> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Some(Answer {
        status: head.get(9..12)?.parse().ok()?,
        body: String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned(),
        head,
    })
}

/// Head, then (separately) the body, then the answer.
async fn split_request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    head: &str,
    body: &[u8],
) -> Option<Answer> {
    s.write_all(head.as_bytes()).await.ok()?;
    s.flush().await.ok()?;
    tokio::task::yield_now().await;
    // A client still writing when the answer comes may see the write fail
    // only if the server stopped reading: that is what is tested here.
    s.write_all(body).await.ok()?;
    read_answer(s).await
}

fn post(path: &str, content_type: &str, extra: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Content-Length: {len}\r\n{extra}\r\n"
    )
}

const NEXT: &str = "GET /api/v1/auth-check HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[tokio::test]
async fn early_answers_over_http1_are_read_and_the_connection_stays_usable() {
    let g = Gatehouse::start().await;
    let cookie = g.sign_up("early@example.com", "password1").await;
    let cross_site = format!("Cookie: {cookie}\r\nOrigin: https://evil.example\r\n");
    let cases: Vec<(String, usize, u16)> = vec![
        // 413: 100 KB to sign-in (limit 16 KiB).
        (
            post("/api/v1/user/signin", "application/json", "", 100_000),
            100_000,
            413,
        ),
        // 415: not JSON.
        (
            post("/api/v1/user/signin", "text/plain", "", 40_000),
            40_000,
            415,
        ),
        // 405: auth-check takes GET.
        (
            post("/api/v1/auth-check", "application/json", "", 40_000),
            40_000,
            405,
        ),
        // 401: a required route without a session.
        (
            post("/api/v2/items", "application/json", "", 60_000),
            60_000,
            401,
        ),
        // 403: a cross-site state change carrying the session cookie.
        (
            post("/api/v2/items", "application/json", &cross_site, 60_000),
            60_000,
            403,
        ),
    ];
    for round in 0..6 {
        let tcp = TcpStream::connect(g.addr).await.unwrap();
        let mut tls = raw::tls_connect(&g, tcp, b"http/1.1").await;
        for (head, len, status) in &cases {
            let answer = split_request(&mut tls, head, &vec![b' '; *len])
                .await
                .unwrap_or_else(|| panic!("round {round}: no answer for {status}"));
            assert_eq!(answer.status, *status, "round {round}: {}", answer.head);
            assert!(answer.body.contains("\"message\""), "{}", answer.body);
            assert!(!answer.closes(), "a bounded body is discarded, not fatal");
            // The next request on the same connection works.
            tls.write_all(NEXT.as_bytes()).await.unwrap();
            let next = read_answer(&mut tls)
                .await
                .unwrap_or_else(|| panic!("round {round}: connection dead after {status}"));
            assert_eq!(next.status, 200);
        }
    }
}

#[tokio::test]
async fn an_unbounded_early_answered_body_gets_connection_close_and_a_readable_answer() {
    let g = Gatehouse::start().await;
    for round in 0..10 {
        let tcp = TcpStream::connect(g.addr).await.unwrap();
        let mut tls = raw::tls_connect(&g, tcp, b"http/1.1").await;
        // Chunked, length unknown: the answer says the connection ends.
        let head = "POST /api/v2/items HTTP/1.1\r\nHost: localhost\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        tls.write_all(head.as_bytes()).await.unwrap();
        let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
        // 512 KiB in 16 KiB chunks, written while the answer comes back.
        for _ in 0..32 {
            if tls.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        let answer = read_answer(&mut tls)
            .await
            .unwrap_or_else(|| panic!("round {round}: the 401 was lost"));
        assert_eq!(answer.status, 401);
        assert!(answer.closes(), "round {round}: {}", answer.head);
    }
}

/// An HTTP/2 client (the `h2` crate) that sends the head, gets the early
/// answer, then sends the rest of the body: the stream must not have been
/// reset meanwhile, and the connection serves the next request.
#[tokio::test]
async fn early_answers_over_http2_do_not_reset_the_stream_mid_body() {
    let g = Gatehouse::start().await;
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    let tls = raw::tls_connect(&g, tcp, b"h2").await;
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    for round in 0..20 {
        client = client.ready().await.unwrap();
        let req = http::Request::post("https://localhost/api/v1/user/signin")
            .header("content-type", "application/json")
            .header("content-length", "100000")
            .body(())
            .unwrap();
        let (answer, mut send) = client.send_request(req, false).unwrap();
        send.send_data(Bytes::from(vec![b' '; 10_000]), false)
            .unwrap();
        let answer = answer.await.unwrap();
        assert_eq!(answer.status(), 413, "round {round}");
        let mut body = answer.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        assert!(String::from_utf8_lossy(&text).contains("too large"));
        // Give a reset (if any) time to arrive, then send the rest.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..9 {
            send.send_data(Bytes::from(vec![b' '; 10_000]), i == 8)
                .unwrap_or_else(|e| panic!("round {round}: stream reset mid-body: {e}"));
        }
    }
    // And the connection still serves requests.
    client = client.ready().await.unwrap();
    let req = http::Request::get("https://localhost/api/v1/auth-check")
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(req, true).unwrap();
    assert_eq!(answer.await.unwrap().status(), 200);
}
