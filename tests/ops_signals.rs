//! Signals: SIGTERM drains in-flight requests (a streaming response runs to
//! its end) and exits 0; SIGHUP swaps the TLS certificate for new
//! connections while connections opened earlier keep working.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Gatehouse, TestCa};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

#[tokio::test]
async fn sigterm_lets_a_streaming_request_finish_then_exits_zero() {
    let mut g = Gatehouse::start().await;
    let mut resp = g.client().get(g.url("/sse")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("first event");
    assert!(String::from_utf8_lossy(&first).contains("event 1"));

    g.signal("TERM");
    g.wait_for_log_line("draining connections", Duration::from_secs(10))
        .await;
    // No new connections once the drain has begun.
    assert!(
        tokio::net::TcpStream::connect(g.addr).await.is_err(),
        "listener still accepting during drain"
    );
    // The request already in flight streams to its end.
    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.contains("event 2") && rest.contains("event 3"),
        "{rest}"
    );

    let status = g
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("gatehouse exits after the drain");
    assert!(status.success(), "exit status {status:?}\n{}", g.logs());
    assert!(g.logs().contains("stopped"));
}

/// An HTTP/1.1 connection over TLS trusting only `ca`, kept open by the test.
async fn open_connection(
    g: &Gatehouse,
    ca: &TestCa,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>, std::io::Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(&[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(g.addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
    path: &str,
) -> u16 {
    sender.ready().await.unwrap();
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn sighup_serves_the_new_certificate_and_keeps_open_connections() {
    let g = Gatehouse::start().await;
    let mut old_conn = open_connection(&g, &g.ca).await.unwrap();
    assert_eq!(get(&mut old_conn, "/dashboard").await, 200);

    // A certificate from a different CA replaces the files in place.
    let new_dir = g.dir.path().join("renewed");
    std::fs::create_dir_all(&new_dir).unwrap();
    let renewed = TestCa::create(&new_dir);
    std::fs::copy(&renewed.cert_path, &g.ca.cert_path).unwrap();
    std::fs::copy(&renewed.key_path, &g.ca.key_path).unwrap();
    g.signal("HUP");
    g.wait_for_log_line("TLS certificate reloaded", Duration::from_secs(10))
        .await;

    // The connection opened before the reload still works.
    assert_eq!(get(&mut old_conn, "/dashboard").await, 200);
    // New clients get the new certificate: trusting the new CA works ...
    let mut fresh = open_connection(&g, &renewed).await.unwrap();
    assert_eq!(get(&mut fresh, "/dashboard").await, 200);
    // ... and trusting only the old CA no longer does.
    assert!(open_connection(&g, &g.ca).await.is_err());

    // A broken certificate is refused and the renewed one stays in service.
    std::fs::write(&g.ca.cert_path, "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    g.signal("HUP");
    let line = g
        .wait_for_log_line("keeping the current one", Duration::from_secs(10))
        .await;
    assert!(line.contains("ERROR"), "{line}");
    let mut after = open_connection(&g, &renewed).await.unwrap();
    assert_eq!(get(&mut after, "/dashboard").await, 200);
    assert_eq!(get(&mut old_conn, "/dashboard").await, 200);
}
