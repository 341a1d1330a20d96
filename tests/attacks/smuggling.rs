//! Request smuggling: conflicting or obfuscated framing must never let a
//! second, unauthenticated request for a protected path reach the upstream.

use crate::common::raw;
use crate::{assert_nothing_protected_reached_upstream, plain};

const SMUGGLED: &str = "GET /api/v2/secret HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn attacks() -> Vec<String> {
    let chunk = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    vec![
        // CL.TE
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
            5 + SMUGGLED.len()
        ),
        // TE.CL
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
        ),
        // Two different Content-Lengths.
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        ),
        // A list-valued Content-Length.
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0, {}\r\n\r\n{SMUGGLED}",
            SMUGGLED.len()
        ),
        // Obfuscated Transfer-Encoding spellings.
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nTransfer-Encoding: xchunked\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunk}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 4\r\n\r\n{chunk}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\n Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunk}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n{chunk}"
        ),
        // Chunk-size tricks.
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0;ext=\"\r\n\"\r\n\r\n{SMUGGLED}"
        ),
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{SMUGGLED}"
        ),
        // Bare LF line endings and a NUL in a header.
        format!("POST /public HTTP/1.1\nHost: localhost\nContent-Length: 0\n\n{SMUGGLED}"),
        format!(
            "POST /public HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n{SMUGGLED}"
        ),
        // Plain pipelining: the second request is judged on its own.
        format!("GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n{SMUGGLED}"),
    ]
}

#[tokio::test]
async fn conflicting_framing_never_smuggles_a_protected_request() {
    let g = plain().await;
    for attack in attacks() {
        let response = raw::send(&g, attack.as_bytes()).await;
        let statuses = raw::statuses(&response);
        // Every attack is answered (a refusal or the harmless first
        // request), never with a server error.
        assert!(
            !statuses.is_empty() && statuses.iter().all(|s| *s < 500),
            "{attack:?} gave {statuses:?}"
        );
        assert_nothing_protected_reached_upstream(&g);
    }
    // Pipelined requests are answered one by one: the smuggled one with 401.
    let pipelined = format!("GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n{SMUGGLED}");
    let statuses = raw::statuses(&raw::send(&g, pipelined.as_bytes()).await);
    assert_eq!(statuses, vec![200, 401]);
}

#[tokio::test]
async fn bodies_reach_the_upstream_reframed_not_as_requests() {
    let g = plain().await;
    let attack = format!(
        "POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let statuses = raw::statuses(&raw::send(&g, attack.as_bytes()).await);
    assert_eq!(statuses, vec![200]);
    let seen = g.upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body.as_ref(), SMUGGLED.as_bytes());
}
