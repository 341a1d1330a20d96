//! Raw clients for attack tests: exact bytes over TCP or TLS, and an HTTP/2
//! client that sends any `:path`, so nothing normalises the request first.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Gatehouse;

/// Writes `request` as is and returns everything read until the server
/// closes or goes quiet.
pub async fn send(g: &Gatehouse, request: &[u8]) -> String {
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    if g.tls {
        let tls = tls_connect(g, tcp, b"http/1.1").await;
        exchange(tls, request).await
    } else {
        exchange(tcp, request).await
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &[u8]) -> String {
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // Wait up to 5 s for the first bytes, then stop after 500 ms of quiet
        // (keep-alive connections stay open).
        let wait = if out.is_empty() { 5000 } else { 500 };
        match tokio::time::timeout(Duration::from_millis(wait), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn tls_connect(
    g: &Gatehouse,
    tcp: TcpStream,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(g.ca.client_config(&[alpn])));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Status codes of every response in a raw exchange, in order.
pub fn statuses(response: &str) -> Vec<u16> {
    response
        .replace("HTTP/1.0 ", "HTTP/1.1 ")
        .split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|r| r.get(..3)?.parse().ok())
        .collect()
}

/// `GET` over HTTP/2 with `path` sent verbatim as `:path`; returns the status.
pub async fn h2_get(g: &Gatehouse, path: &str, headers: &[(&str, &str)]) -> u16 {
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    let tls = tls_connect(g, tcp, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri = http::Uri::builder()
        .scheme("https")
        .authority("localhost")
        .path_and_query(path)
        .build()
        .unwrap();
    let mut req = http::Request::builder().method("GET").uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}
