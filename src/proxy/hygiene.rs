//! Header hygiene at the proxy boundary: which request headers never reach
//! the upstream (hop-by-hop ones, forged identity, origin and URL-override
//! claims, their `_` spellings), which response headers never reach the
//! client (hop-by-hop ones and the operator's `strip_response_headers`),
//! and the one-pass strip both directions use.
//!
//! Every proxied request and response goes through here, so each pass
//! reads the headers once and hashes only what it removes.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Request headers that never reach the upstream: hop-by-hop ones
/// (RFC 9110 §7.6.1) and client-supplied claims of identity, origin or a
/// different URL — the upstream must only ever see Gatehouse's values.
/// Anything starting with `x-auth-` goes too, and so does any `_` spelling
/// of these or of the framing and routing headers (see
/// [`crate::request::header_names`]).
fn is_stripped_request_header(name: &str) -> bool {
    // Every protected name starts with one of these letters, and a `_`
    // spelling has a `_`: the usual headers (`accept`, `host`, `cookie`,
    // `user-agent`, `sec-fetch-*`...) are told apart without comparing
    // whole names.
    let could_be_protected = matches!(
        name.as_bytes().first(),
        Some(b'c' | b'f' | b'k' | b'p' | b't' | b'u' | b'x')
    );
    (could_be_protected && is_protected_request_header(name))
        || crate::request::header_names::is_spelling_of(name, is_protected_or_framing)
}

/// A protected name, or one that frames or routes the request: an `_`
/// spelling of any of them must not sit next to the real one upstream.
fn is_protected_or_framing(name: &str) -> bool {
    is_protected_request_header(name)
        || matches!(name, "content-length" | "host" | "cookie" | "content-type")
}

fn is_protected_request_header(name: &str) -> bool {
    is_hop_by_hop(name)
        || matches!(
            name,
            "proxy-authorization"
                | "forwarded"
                | "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-forwarded-port"
                | "x-forwarded-uri"
                | "x-forwarded-prefix"
                | "x-real-ip"
                | "x-original-url"
                | "x-rewrite-url"
                | "x-original-uri"
                | "x-request-id"
        )
        || name.starts_with("x-auth-")
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never passed on in either direction.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "proxy-connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
    )
}

/// Removes hop-by-hop headers and every identity, origin or URL-override
/// header a client might forge.
pub fn strip_request_headers(headers: &mut HeaderMap) {
    strip_headers(headers, |name, _| is_stripped_request_header(name.as_str()));
}

/// What [`strip_response_headers`] saw of the headers that stay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// `Content-Type` (its first value) is `text/event-stream`.
    pub event_stream: bool,
    /// There is a `Content-Length`.
    pub content_length: bool,
}

/// Readies an upstream response's headers for the client in one pass:
/// hop-by-hop headers and those named in `Connection` go, and so do the
/// operator's `also` (`[server] strip_response_headers`). Says what the
/// pass saw on the way, so nobody needs to look the headers up again.
pub fn strip_response_headers(headers: &mut HeaderMap, also: &[HeaderName]) -> ResponseHead {
    let mut head = ResponseHead::default();
    strip_headers(headers, |name, value| {
        if *name == header::CONTENT_TYPE {
            head.event_stream = value.as_bytes().starts_with(b"text/event-stream");
        } else if *name == header::CONTENT_LENGTH {
            head.content_length = true;
        }
        is_hop_by_hop(name.as_str()) || also.contains(name)
    });
    head
}

/// Removes the headers `strip` selects, plus every header named in
/// `Connection`. `strip` sees each name once, with its first value (what
/// `HeaderMap::get` would answer). One pass over the headers,
/// `Connection`'s values read as they go by; the names to remove are
/// collected on the stack (see [`Doomed`]), so the common cases allocate
/// nothing and hash only what is removed.
fn strip_headers(
    headers: &mut HeaderMap,
    mut strip: impl FnMut(&HeaderName, &HeaderValue) -> bool,
) {
    let mut doomed = Doomed::default();
    let mut previous: Option<&HeaderName> = None;
    for (name, value) in headers.iter() {
        if *name == header::CONNECTION {
            doom_connection_tokens(value, &mut doomed);
        }
        // A name with several values comes by once per value, in a row.
        if previous != Some(name) && strip(name, value) {
            doomed.push(name.clone());
        }
        previous = Some(name);
    }
    doomed.remove_from(headers);
}

/// Dooms the headers one `Connection` value names.
fn doom_connection_tokens(value: &HeaderValue, doomed: &mut Doomed) {
    // `keep-alive` (nearly every upstream's) and `close` name no header to
    // remove: `keep-alive` is hop-by-hop anyway.
    // Compared exactly first: a case-insensitive comparison is a loop.
    let bytes = value.as_bytes();
    if bytes == b"keep-alive"
        || bytes == b"close"
        || bytes.eq_ignore_ascii_case(b"keep-alive")
        || bytes.eq_ignore_ascii_case(b"close")
    {
        return;
    }
    let Ok(text) = value.to_str() else { return };
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .for_each(|name| doomed.push(name));
}

/// Names to remove once the pass over the headers is done: the first four
/// on the stack, a heap `Vec` only past them (a response usually dooms
/// two: `Connection` and `Server`).
#[derive(Default)]
struct Doomed {
    first: [Option<HeaderName>; 4],
    count: usize,
    more: Vec<HeaderName>,
}

impl Doomed {
    fn push(&mut self, name: HeaderName) {
        match self.first.get_mut(self.count) {
            Some(slot) => {
                *slot = Some(name);
                self.count += 1;
            }
            None => self.more.push(name),
        }
    }

    fn remove_from(&self, headers: &mut HeaderMap) {
        for name in self.first[..self.count].iter().flatten().chain(&self.more) {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_response_headers(&mut h, &[]);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn forged_identity_and_override_headers_go() {
        let mut h = HeaderMap::new();
        for name in [
            "X-Auth-User-Id",
            "x-auth-email",
            "X-AUTH-ROLE",
            "x-original-url",
            "X-Rewrite-URL",
            "x-forwarded-for",
            "forwarded",
            "proxy-authorization",
            "te",
            "upgrade",
            "keep-alive",
            "x_real_ip",
            "content_length",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        for kept in ["authorization", "accept", "host", "cookie", "my_header"] {
            h.insert(kept, HeaderValue::from_static("x"));
        }
        strip_request_headers(&mut h);
        let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["accept", "authorization", "cookie", "host", "my_header"]
        );
    }

    #[test]
    fn more_forged_headers_than_the_stack_buffer_all_go() {
        let mut h = HeaderMap::new();
        for i in 0..20 {
            h.insert(
                HeaderName::from_bytes(format!("x-auth-claim-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        h.insert("connection", HeaderValue::from_static("x-a, x-b, x-c"));
        for name in ["x-a", "x-b", "x-c", "accept"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        strip_request_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn a_response_loses_hop_by_hop_and_configured_headers_and_says_what_stays() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Keep-Alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("server", HeaderValue::from_static("nginx"));
        h.insert("x-powered-by", HeaderValue::from_static("PHP"));
        h.insert("content-type", HeaderValue::from_static("text/html"));
        h.append(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert("content-length", HeaderValue::from_static("5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let also = [
            HeaderName::from_static("server"),
            HeaderName::from_static("x-powered-by"),
        ];
        let head = strip_response_headers(&mut h, &also);
        let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "content-type", "x-kept"]);
        // The first value decides, as `HeaderMap::get` would.
        assert_eq!(
            head,
            ResponseHead {
                event_stream: false,
                content_length: true
            }
        );

        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert("connection", HeaderValue::from_static("close, x-hidden"));
        h.insert("x-hidden", HeaderValue::from_static("1"));
        let head = strip_response_headers(&mut h, &[]);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(
            head,
            ResponseHead {
                event_stream: true,
                content_length: false
            }
        );
    }
}
