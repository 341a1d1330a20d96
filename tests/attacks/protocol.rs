//! Small protocol points (issue 18 §4): the documented head limits exactly
//! (64 KiB in all, 32 KiB per header line, tested at the limit and one byte
//! over), transfer codings other than `chunked` refused, `Content-Length`
//! forwarded in canonical form, the server's cipher order, and backend
//! software headers stripped from responses.

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::common::{Gatehouse, Options, raw};

/// A GET for /public whose head is exactly `size` bytes, padded with
/// `X-Pad-N` headers of at most `line` bytes per line.
fn head_of(size: usize, line: usize) -> String {
    let start = "GET /public HTTP/1.1\r\nHost: localhost\r\n";
    let mut head = start.to_string();
    let mut i = 0;
    // Reserve the final CRLF.
    while head.len() + 2 < size {
        let left = size - 2 - head.len();
        let name = format!("X-Pad-{i}: ");
        let overhead = name.len() + 2;
        let take = left.min(line);
        if take < overhead + 1 {
            // Too little left for a header: widen the previous one.
            let (body, _) = head.split_at(head.len() - 2);
            head = format!("{body}{}\r\n", "a".repeat(left));
            break;
        }
        head.push_str(&name);
        head.push_str(&"a".repeat(take - overhead));
        head.push_str("\r\n");
        i += 1;
    }
    head.push_str("\r\n");
    assert_eq!(head.len(), size);
    head
}

async fn status_of(g: &Gatehouse, request: &str) -> Vec<u16> {
    raw::statuses(&raw::send(g, request.as_bytes()).await)
}

#[tokio::test]
async fn request_heads_are_limited_exactly_as_documented() {
    let g = Gatehouse::start_with(Options {
        tls: false,
        ..Options::default()
    })
    .await;
    // 64 KiB in all, in lines of 16 KiB.
    assert_eq!(status_of(&g, &head_of(64 * 1024, 16 * 1024)).await, [200]);
    assert_eq!(
        status_of(&g, &head_of(64 * 1024 + 1, 16 * 1024)).await,
        [431]
    );
    // 32 KiB for one line.
    // One line of exactly `n` bytes: "X-Big: " + value + CRLF.
    let one_line = |n: usize| {
        let value = "b".repeat(n - "X-Big: \r\n".len());
        format!("GET /public HTTP/1.1\r\nHost: localhost\r\nX-Big: {value}\r\n\r\n")
    };
    assert_eq!(status_of(&g, &one_line(32 * 1024)).await, [200]);
    assert_eq!(status_of(&g, &one_line(32 * 1024 + 1)).await, [431]);
    // Between hyper's old limits: a single 100 KiB header was let through.
    assert_eq!(status_of(&g, &head_of(100 * 1024, 100 * 1024)).await, [431]);
    let forwarded = g.upstream.count();
    assert_eq!(
        forwarded, 2,
        "only the heads within the limits were forwarded"
    );
}

#[tokio::test]
async fn http2_heads_are_limited_by_the_same_count() {
    let g = Gatehouse::start().await;
    // "GET /public HTTP/1.1\r\n" + "x-pad: …\r\n" + "\r\n"
    let fixed = "GET /public HTTP/1.1\r\n".len() + "x-pad: \r\n".len() + 2;
    let at_limit = "a".repeat(30 * 1024 - fixed);
    assert_eq!(
        raw::h2_get(&g, "/public", &[("x-pad", &at_limit)]).await,
        200
    );
    let pad = |n: usize| "p".repeat(n);
    // Three lines: 64 KiB exactly, then one byte more.
    let a = pad(20 * 1024);
    let b = pad(20 * 1024);
    let line = |v: &str| "x-pad-0: \r\n".len() + v.len();
    let c_len = 64 * 1024
        - "GET /public HTTP/1.1\r\n".len()
        - 2
        - line(&a)
        - line(&b)
        - "x-pad-0: \r\n".len();
    let c = pad(c_len);
    let headers = [
        ("x-pad-0", a.as_str()),
        ("x-pad-1", b.as_str()),
        ("x-pad-2", c.as_str()),
    ];
    assert_eq!(raw::h2_get(&g, "/public", &headers).await, 200);
    let c = pad(c_len + 1);
    let headers = [
        ("x-pad-0", a.as_str()),
        ("x-pad-1", b.as_str()),
        ("x-pad-2", c.as_str()),
    ];
    assert_eq!(raw::h2_get(&g, "/public", &headers).await, 431);
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused() {
    let g = Gatehouse::start_with(Options {
        tls: false,
        ..Options::default()
    })
    .await;
    let body = "3\r\nabc\r\n0\r\n\r\n";
    for coding in ["gzip, chunked", "deflate,chunked", "chunked, chunked"] {
        let req = format!(
            "POST /api/v2/public/x HTTP/1.1\r\nHost: localhost\r\n\
             Transfer-Encoding: {coding}\r\nConnection: close\r\n\r\n{body}"
        );
        assert_eq!(status_of(&g, &req).await, [501], "{coding}");
    }
    assert_eq!(g.upstream.count(), 0);
    // Plain chunked is forwarded.
    let req = format!(
        "POST /api/v2/public/x HTTP/1.1\r\nHost: localhost\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
    );
    assert_eq!(status_of(&g, &req).await, [200]);
    assert_eq!(&g.upstream.last().body[..], b"abc");
}

#[tokio::test]
async fn content_length_is_forwarded_in_canonical_form() {
    let g = Gatehouse::start_with(Options {
        tls: false,
        ..Options::default()
    })
    .await;
    for (sent, body, seen) in [("00", "", "0"), ("007", "abcdefg", "7"), ("3", "abc", "3")] {
        let req = format!(
            "POST /api/v2/public/x HTTP/1.1\r\nHost: localhost\r\n\
             Content-Length: {sent}\r\nConnection: close\r\n\r\n{body}"
        );
        assert_eq!(status_of(&g, &req).await, [200], "{sent}");
        let last = g.upstream.last();
        let lengths: Vec<_> = last.headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, [seen], "{sent}");
        assert_eq!(&last.body[..], body.as_bytes());
    }
}

#[tokio::test]
async fn the_server_cipher_order_wins() {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let g = Gatehouse::start().await;
    let negotiated = |client_order: Vec<rustls::SupportedCipherSuite>| {
        let g = &g;
        async move {
            let mut provider = default_provider();
            provider.cipher_suites = client_order;
            let mut roots = rustls::RootCertStore::empty();
            use rustls_pki_types::pem::PemObject;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(g.ca.ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let tcp = TcpStream::connect(g.addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .unwrap();
            tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
        }
    };
    // The client prefers ChaCha20; the server's first choice is AES-256-GCM.
    let suite = negotiated(vec![
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ])
    .await;
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    // A client that only speaks ChaCha20 still connects.
    let suite = negotiated(vec![cipher_suite::TLS13_CHACHA20_POLY1305_SHA256]).await;
    assert_eq!(suite, rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
}

#[tokio::test]
async fn backend_software_headers_are_stripped_unless_configured_otherwise() {
    let g = Gatehouse::start().await;
    let resp = g.client().get(g.url("/powered")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-powered-by").is_none());
    assert!(resp.headers().get("server").is_none());
    assert_eq!(resp.headers()["set-cookie"], "app=1; Path=/", "others pass");

    let g = Gatehouse::start_with(Options {
        extra_toml: "strip_response_headers = [\"X-Powered-By\"]\n".into(),
        ..Options::default()
    })
    .await;
    let resp = g.client().get(g.url("/powered")).send().await.unwrap();
    assert!(resp.headers().get("x-powered-by").is_none());
    assert_eq!(resp.headers()["server"], "upstream/1.0");
}
