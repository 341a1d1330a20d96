//! Malformed, duplicated and oversized session cookies: never a bypass,
//! never a 5xx.

use crate::common::{Gatehouse, raw};

#[tokio::test]
async fn malformed_duplicated_and_oversized_cookies_do_not_authenticate() {
    let g = Gatehouse::start().await;
    let valid = g.sign_up("cookie@example.com", "password1").await;
    let value = valid.split_once('=').unwrap().1.to_string();
    let name = g.cookie_name();
    let cookies = vec![
        format!("{name}"),
        format!("{name}="),
        format!("{name}=%%%"),
        format!("{name}=\"\""),
        format!("{name}={value}x"),
        format!("{name}={}", &value[..value.len() - 1]),
        format!("{name}= {}", "A".repeat(43)),
        format!("{}={value}", name.to_lowercase()),
        format!("{}={value}", name.trim_start_matches("__Host-")),
        format!("{name}=garbage; {name}={value}"),
        format!("{name}={}", "A".repeat(16 * 1024)),
        format!("a=1;;;;{name}"),
        format!("{name}={}", "\u{7f}"),
        ";;;".to_string(),
        format!("{name}={value}\u{1}"),
    ];
    for cookie in &cookies {
        let resp = g
            .client()
            .get(g.url("/api/v2/secret"))
            .header("cookie", cookie.as_bytes())
            .send()
            .await;
        // A value reqwest will not put on the wire goes over a raw socket.
        let status = match resp {
            Ok(resp) => resp.status().as_u16(),
            Err(_) => {
                let request = format!(
                    "GET /api/v2/secret HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
                );
                let response = raw::send(&g, request.as_bytes()).await;
                raw::statuses(&response).first().copied().unwrap_or(0)
            }
        };
        assert!(matches!(status, 400 | 401 | 431), "{cookie:.60} → {status}");
    }
    assert_eq!(g.upstream.count(), 0);

    // A cookie too large for the header limit is refused outright.
    let huge = format!(
        "GET /api/v2/secret HTTP/1.1\r\nHost: localhost\r\nCookie: {name}={}\r\n\r\n",
        "A".repeat(100 * 1024)
    );
    let statuses = raw::statuses(&raw::send(&g, huge.as_bytes()).await);
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| (400..500).contains(s)),
        "{statuses:?}"
    );
    assert_eq!(g.upstream.count(), 0);

    // The valid cookie, sent properly, still works.
    let resp = g.get_with_cookie("/api/v2/secret", &valid).await;
    assert_eq!(resp.status(), 200);
}
