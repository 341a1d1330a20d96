//! Request-head rules checked before anything else looks at a request:
//! - size: the whole head (request line, header lines, final CRLF, counted
//!   as an HTTP/1.1 client writes them — `Name: value\r\n`) at most
//!   [`MAX_HEAD_BYTES`], and no header line over [`MAX_HEADER_LINE_BYTES`];
//!   otherwise 431. HTTP/2 heads are counted by the same formula from the
//!   decoded header list, `:path` as the target.
//! - framing: `Transfer-Encoding` must be exactly `chunked` (any other
//!   coding is refused with 501, RFC 9112 §6.1, rather than forwarded with
//!   the coding silently dropped); `Content-Length` is rewritten in its
//!   canonical form (`00` → `0`) so the upstream reads the number hyper did.

use http::{HeaderValue, Request, Version, header};

use super::error::ApiError;

/// Largest request head accepted (bytes).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest single header line (`Name: value\r\n`) accepted (bytes).
pub const MAX_HEADER_LINE_BYTES: usize = 32 * 1024;

/// Applies the rules above; may rewrite `Content-Length`. Says what the
/// pass over the headers noticed on the way.
pub fn check<B>(req: &mut Request<B>) -> Result<Seen, ApiError> {
    let (framing, seen) = check_size(req)?;
    if framing.transfer_encoding {
        check_transfer_coding(req)?;
    }
    if framing.content_length {
        canonical_content_length(req);
    }
    Ok(seen)
}

/// Headers the pipeline looks for on every request, noticed in the size
/// pass: a head without them costs no lookups (or passes) for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// A header name with `_` (see [`crate::request::header_names`]).
    pub underscore: bool,
    /// `Origin` or `Sec-Fetch-Site`: the request says which site it comes
    /// from (see [`super::origin::OriginPolicy::site`]).
    pub site_claim: bool,
    /// `Upgrade`: an HTTP/1.1 request might open a WebSocket.
    pub upgrade: bool,
}

/// The head's size as an HTTP/1.1 client writes it (what `check_size`
/// counts in its pass).
#[cfg(test)]
fn head_size<B>(req: &Request<B>) -> usize {
    let headers: usize = req.headers().iter().map(|(n, v)| line_size(n, v)).sum();
    request_line_size(req) + headers + 2
}

/// The request line's size, `\r\n` included.
fn request_line_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let path = uri.path_and_query().map_or(1, |p| p.as_str().len());
    // HTTP/2 carries the authority in `:authority`, not in the target;
    // an HTTP/1.1 absolute-form target spells it out.
    let target = match (req.version(), uri.scheme_str(), uri.authority()) {
        (Version::HTTP_2, _, _) => path,
        (_, Some(scheme), Some(authority)) => scheme.len() + 3 + authority.as_str().len() + path,
        (_, None, Some(authority)) => authority.as_str().len(), // CONNECT
        _ => path,
    };
    // "METHOD target HTTP/1.1\r\n"
    req.method().as_str().len() + 1 + target + 1 + 8 + 2
}

fn line_size(name: &http::HeaderName, value: &HeaderValue) -> usize {
    name.as_str().len() + 2 + value.len() + 2
}

/// Which framing headers a head carries, noticed while its size is
/// counted, so a head without them costs no lookups for them.
struct Framing {
    transfer_encoding: bool,
    content_length: bool,
}

/// The size rules, in one pass over the headers.
fn check_size<B>(req: &Request<B>) -> Result<(Framing, Seen), ApiError> {
    let mut framing = Framing {
        transfer_encoding: false,
        content_length: false,
    };
    let mut seen = Seen::default();
    let (mut total, mut too_long_line) = (request_line_size(req) + 2, false);
    for (name, value) in req.headers() {
        let line = line_size(name, value);
        too_long_line |= line > MAX_HEADER_LINE_BYTES;
        total += line;
        framing.transfer_encoding |= name == header::TRANSFER_ENCODING;
        framing.content_length |= name == header::CONTENT_LENGTH;
        seen.underscore |= name.as_str().as_bytes().contains(&b'_');
        seen.site_claim |= name == header::ORIGIN || name == super::origin::SEC_FETCH_SITE;
        seen.upgrade |= name == header::UPGRADE;
    }
    if too_long_line || total > MAX_HEAD_BYTES {
        return Err(ApiError::HeadTooLarge);
    }
    Ok((framing, seen))
}

fn check_transfer_coding<B>(req: &Request<B>) -> Result<(), ApiError> {
    let mut codings = req
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(only), None) if only.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(ApiError::UnsupportedTransferCoding),
    }
}

fn canonical_content_length<B>(req: &mut Request<B>) {
    let headers = req.headers_mut();
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let (Some(first), second) = (values.next(), values.next()) else {
        return;
    };
    let canonical = second.is_none()
        && first.as_bytes().first() != Some(&b'0')
        && first.as_bytes().iter().all(u8::is_ascii_digit)
        || first.as_bytes() == b"0";
    if canonical {
        return;
    }
    // hyper already refused anything that is not one number (repeated or
    // listed copies of the same number are allowed); write it once, plainly.
    let number = std::str::from_utf8(first.as_bytes())
        .ok()
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.trim().parse::<u64>().ok());
    if let Some(n) = number {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::post("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_pass_notes_underscores_and_site_claims_and_nothing_else() {
        let seen = |headers: &[(&str, &str)]| check(&mut req(headers)).unwrap();
        let none = Seen::default();
        assert_eq!(seen(&[("accept", "*/*"), ("cookie", "a=1")]), none);
        assert!(seen(&[("x_forwarded_for", "1.2.3.4")]).underscore);
        assert!(seen(&[("origin", "https://a.example")]).site_claim);
        assert!(seen(&[("sec-fetch-site", "cross-site")]).site_claim);
        assert!(!seen(&[("sec-fetch-mode", "cors")]).site_claim);
        assert!(seen(&[("upgrade", "websocket")]).upgrade);
    }

    #[test]
    fn head_size_counts_what_an_http1_client_writes() {
        let r = req(&[("host", "localhost")]);
        assert_eq!(
            head_size(&r),
            "POST /x HTTP/1.1\r\nhost: localhost\r\n\r\n".len()
        );
    }

    #[test]
    fn the_size_limit_is_the_head_size_and_framing_checks_still_run() {
        // Many lines just under the line limit, filled to exactly the limit.
        let filler = "a".repeat(MAX_HEADER_LINE_BYTES - 100);
        let mut r = req(&[]);
        for i in 0.. {
            let name = http::HeaderName::try_from(format!("x-fill-{i}")).unwrap();
            r.headers_mut()
                .insert(name, HeaderValue::from_str(&filler).unwrap());
            if head_size(&r) + MAX_HEADER_LINE_BYTES > MAX_HEAD_BYTES {
                break;
            }
        }
        let room = MAX_HEAD_BYTES - head_size(&r) - "x-last: \r\n".len();
        r.headers_mut()
            .insert("x-last", HeaderValue::from_str(&"b".repeat(room)).unwrap());
        assert_eq!(head_size(&r), MAX_HEAD_BYTES);
        assert!(check(&mut r).is_ok(), "exactly the limit is accepted");
        r.headers_mut().insert(
            "x-last",
            HeaderValue::from_str(&"b".repeat(room + 1)).unwrap(),
        );
        assert!(matches!(check(&mut r), Err(ApiError::HeadTooLarge)));
        // The framing rules still apply to a head within the limit.
        let mut bad = req(&[("transfer-encoding", "gzip")]);
        assert!(matches!(
            check(&mut bad),
            Err(ApiError::UnsupportedTransferCoding)
        ));
        let mut padded = req(&[("content-length", "007")]);
        assert!(check(&mut padded).is_ok());
        assert_eq!(padded.headers()["content-length"], "7");
    }

    #[test]
    fn only_plain_chunked_is_accepted() {
        for ok in ["chunked", "Chunked", " chunked "] {
            assert!(check_transfer_coding(&req(&[("transfer-encoding", ok)])).is_ok());
        }
        assert!(check_transfer_coding(&req(&[])).is_ok());
        for bad in ["gzip, chunked", "gzip", "chunked, chunked", "identity", "x"] {
            let refused = check_transfer_coding(&req(&[("transfer-encoding", bad)]));
            assert!(
                matches!(refused, Err(ApiError::UnsupportedTransferCoding)),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_length_is_made_canonical() {
        for (sent, forwarded) in [
            ("00", "0"),
            ("007", "7"),
            ("5", "5"),
            ("0", "0"),
            ("5, 5", "5"),
        ] {
            let mut r = req(&[("content-length", sent)]);
            canonical_content_length(&mut r);
            assert_eq!(r.headers()["content-length"], forwarded, "{sent}");
        }
    }
}
