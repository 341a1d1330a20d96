//! Underscore spellings of protected headers (issue 18 §2). CGI/WSGI-style
//! backends read `X_Auth_User_Id` as `X-Auth-User-Id`; such spellings must
//! never reach the upstream, in either `underscores_in_headers` mode, and
//! `Transfer_Encoding` / `Content_Length` never sit next to real framing.

use crate::common::{Gatehouse, Options, Recorded, raw};

async fn gatehouse(mode: Option<&str>) -> Gatehouse {
    let extra = mode
        .map(|m| format!("underscores_in_headers = \"{m}\"\n"))
        .unwrap_or_default();
    Gatehouse::start_with(Options {
        tls: false,
        extra_toml: extra,
        ..Options::default()
    })
    .await
}

/// The headers as a CGI/WSGI backend sees them: `_` and `-` merged, case
/// folded, values of the same variable joined.
fn wsgi_view(r: &Recorded, name: &str) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n.as_str().replace('_', "-") == name)
        .map(|(_, v)| v.to_str().unwrap().to_string())
        .collect()
}

const FORGED: &str = "X_Auth_User_Id: 999\r\nX_Auth_Email: evil@example.com\r\n\
                      X-Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\n\
                      X-Auth_User-Id: 998\r\nX_Forwarded_Host: evil.example\r\n";

async fn signed_in_user(g: &Gatehouse) -> (String, String) {
    let cookie = g.sign_up("under@example.com", "password1").await;
    let resp = raw::send(
        g,
        format!("GET /api/v2/me HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let id = wsgi_view(&g.upstream.last(), "x-auth-user-id");
    assert_eq!(id.len(), 1);
    (cookie, id[0].clone())
}

fn assert_no_spoofed_identity(r: &Recorded, user_id: Option<&str>) {
    let expected: Vec<String> = user_id.into_iter().map(str::to_string).collect();
    assert_eq!(wsgi_view(r, "x-auth-user-id"), expected, "{:?}", r.headers);
    assert!(
        !wsgi_view(r, "x-auth-email")
            .iter()
            .any(|v| v.contains("evil")),
        "{:?}",
        r.headers
    );
    assert_eq!(wsgi_view(r, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(wsgi_view(r, "x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(wsgi_view(r, "x-forwarded-host"), vec!["localhost"]);
}

#[tokio::test]
async fn by_default_underscored_headers_never_reach_the_upstream() {
    let g = gatehouse(None).await;
    let (cookie, id) = signed_in_user(&g).await;
    let resp = raw::send(
        &g,
        format!(
            "GET /api/v2/me HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n{FORGED}\
             My_Header: 1\r\nX-Normal: kept\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = g.upstream.last();
    let underscored: Vec<_> = seen
        .headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .collect();
    assert!(underscored.is_empty(), "{underscored:?}");
    assert_eq!(seen.headers["x-normal"], "kept", "ordinary headers pass");
    assert_no_spoofed_identity(&seen, Some(&id));
}

#[tokio::test]
async fn in_pass_mode_only_harmless_underscored_headers_pass() {
    let g = gatehouse(Some("pass")).await;
    let (cookie, id) = signed_in_user(&g).await;
    let resp = raw::send(
        &g,
        format!(
            "GET /api/v2/me HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n{FORGED}\
             My_Header: 1\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = g.upstream.last();
    assert_eq!(seen.headers["my_header"], "1", "pass mode keeps the rest");
    assert_no_spoofed_identity(&seen, Some(&id));
}

#[tokio::test]
async fn a_signed_out_client_cannot_claim_an_identity_on_an_optional_route() {
    for mode in ["drop", "pass"] {
        let g = gatehouse(Some(mode)).await;
        let resp = raw::send(
            &g,
            format!("GET /page HTTP/1.1\r\nHost: localhost\r\n{FORGED}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{mode}: {resp}");
        assert_no_spoofed_identity(&g.upstream.last(), None);
    }
}

#[tokio::test]
async fn underscore_framing_headers_never_reach_the_upstream() {
    for mode in ["drop", "pass"] {
        let g = gatehouse(Some(mode)).await;
        let resp = raw::send(
            &g,
            b"POST /api/v2/public/echo HTTP/1.1\r\nHost: localhost\r\n\
              Transfer_Encoding: chunked\r\nContent_Length: 40\r\nContent-Length: 3\r\n\
              Connection: close\r\n\r\nabc",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{mode}: {resp}");
        let seen = g.upstream.last();
        assert_eq!(&seen.body[..], b"abc");
        assert_eq!(wsgi_view(&seen, "content-length"), vec!["3"], "{mode}");
        assert!(wsgi_view(&seen, "transfer-encoding").is_empty(), "{mode}");
    }
}
