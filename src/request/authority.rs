//! The authority (host and port) a request was sent to, read the same way
//! whatever the protocol. Everything that needs "the host the client asked
//! for" — the same-origin (CSRF/CORS) decision, `X-Forwarded-Host`, log
//! lines — takes it from here, never from a `Host` header directly.
//!
//! Where it comes from:
//! - HTTP/2 and HTTP/3 carry it in `:authority`, which hyper puts in the
//!   request URI; browsers send no `Host` header at all. A `Host` header next
//!   to `:authority` must name the same authority (RFC 9113 §8.3.1).
//! - HTTP/1.1 carries it in `Host`, except for an absolute-form target
//!   (`GET http://h/p`), whose authority wins and `Host` is ignored
//!   (RFC 9112 §3.2.2). An HTTP/1.1 request without `Host`, with several, or
//!   with an invalid one is refused (RFC 9112 §3.2).
//! - HTTP/1.0 may omit it.
//!
//! Hosts compare case-insensitively; a missing port equals the scheme's
//! default (`example.com` is `example.com:443` over TLS).

use http::uri::{Authority, Uri};
use http::{HeaderMap, HeaderValue, Version, header};

/// The authority a request named, validated.
#[derive(Debug, Clone)]
pub struct RequestAuthority {
    parsed: Authority,
    /// The `Host` header it came from (a cheap clone), if it came from one.
    header: Option<HeaderValue>,
}

/// Why a request's authority is refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// An HTTP/1.1 request in origin form without a `Host` header.
    #[error("Host header is required")]
    Missing,
    /// More than one `Host` header.
    #[error("Only one Host header is allowed")]
    Repeated,
    /// Not a valid `host[:port]` (user info, bad characters, bad port).
    #[error("Host header is not a valid host[:port]")]
    Invalid,
    /// An HTTP/2 request whose `Host` header names another authority than
    /// its `:authority`.
    #[error("Host header does not match :authority")]
    Conflicting,
}

impl RequestAuthority {
    /// Parses `host[:port]`; user info (`user@host`) is refused, as is an
    /// empty host or a port that is not a number up to 65535.
    pub fn parse(text: &[u8]) -> Result<RequestAuthority, AuthorityError> {
        let parsed = Authority::try_from(text).map_err(|_| AuthorityError::Invalid)?;
        RequestAuthority::checked(parsed, None)
    }

    fn from_header(value: &HeaderValue) -> Result<RequestAuthority, AuthorityError> {
        let parsed = Authority::try_from(value.as_bytes()).map_err(|_| AuthorityError::Invalid)?;
        RequestAuthority::checked(parsed, Some(value.clone()))
    }

    /// `:authority` (or an absolute-form target's), already parsed by hyper.
    fn from_uri(authority: &Authority) -> Result<RequestAuthority, AuthorityError> {
        RequestAuthority::checked(authority.clone(), None)
    }

    fn checked(
        parsed: Authority,
        header: Option<HeaderValue>,
    ) -> Result<RequestAuthority, AuthorityError> {
        let valid_port = match parsed.as_str().strip_prefix(parsed.host()) {
            Some("") | Some(":") => true,
            Some(port) => parsed.port_u16().is_some() && port.len() <= 6,
            None => false, // user info precedes the host
        };
        if parsed.host().is_empty() || !valid_port {
            return Err(AuthorityError::Invalid);
        }
        Ok(RequestAuthority { parsed, header })
    }

    /// The host, as written (compare with [`str::eq_ignore_ascii_case`]);
    /// an IPv6 literal keeps its brackets.
    pub fn host(&self) -> &str {
        self.parsed.host()
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.parsed.port_u16()
    }

    /// The port, or the scheme's default.
    pub fn port_or(&self, default_port: u16) -> u16 {
        self.port().unwrap_or(default_port)
    }

    /// Whether both name the same host and port (`default_port` when none).
    pub fn same_as(&self, other: &RequestAuthority, default_port: u16) -> bool {
        self.host().eq_ignore_ascii_case(other.host())
            && self.port_or(default_port) == other.port_or(default_port)
    }

    /// The authority as the client sent it, for `X-Forwarded-Host`: the
    /// `Host` header itself, or `:authority` copied into a header value.
    pub fn header_value(&self) -> Option<HeaderValue> {
        match &self.header {
            Some(value) => Some(value.clone()),
            None => HeaderValue::from_str(self.parsed.as_str()).ok(),
        }
    }

    /// For log lines.
    pub fn as_str(&self) -> &str {
        self.parsed.as_str()
    }
}

/// The authority `uri`, `headers` and `version` name, by the rules in the
/// module header. `Ok(None)` when the request names none (HTTP/1.0 without
/// `Host`, an HTTP/2 request with neither `:authority` nor `host`).
/// The pipeline calls [`of_request_on`] with the connection's [`LastHost`];
/// the tables below call this.
#[cfg(test)]
pub fn of_request(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<RequestAuthority>, AuthorityError> {
    of_request_on(version, uri, headers, None)
}

/// The last `Host` header a connection's requests carried, parsed: a
/// client sends the same one on every request, and parsing and checking it
/// again costs more than comparing its bytes. Only a valid authority is
/// kept, and only a byte-identical header reuses it.
#[derive(Debug, Default)]
pub struct LastHost(std::sync::Mutex<Option<RequestAuthority>>);

impl LastHost {
    fn authority_of(&self, host: &HeaderValue) -> Result<RequestAuthority, AuthorityError> {
        let mut last = crate::sync::lock(&self.0);
        if let Some(known) = last.as_ref()
            && known.header.as_ref() == Some(host)
        {
            return Ok(known.clone());
        }
        // A copy: the request's own header value shares the connection's
        // read buffer, which a kept slice would hold on to (8 KiB per
        // connection, idle or not).
        let owned =
            HeaderValue::from_bytes(host.as_bytes()).map_err(|_| AuthorityError::Invalid)?;
        let parsed = RequestAuthority::from_header(&owned)?;
        *last = Some(parsed.clone());
        Ok(parsed)
    }
}

/// `of_request`, reusing the connection's last `Host` when it is the same.
pub fn of_request_on(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
    last_host: Option<&LastHost>,
) -> Result<Option<RequestAuthority>, AuthorityError> {
    let host = single_host(headers)?;
    let http2_or_later = version >= Version::HTTP_2;
    match uri.authority() {
        Some(from_uri) => {
            let authority = RequestAuthority::from_uri(from_uri)?;
            if http2_or_later && let Some(host) = host {
                // Default port by the request's `:scheme` (always present
                // in an HTTP/2 request that has `:authority`).
                let default_port = match uri.scheme_str() {
                    Some("http") => 80,
                    _ => 443,
                };
                let host = RequestAuthority::from_header(host)?;
                if !host.same_as(&authority, default_port) {
                    return Err(AuthorityError::Conflicting);
                }
            }
            Ok(Some(authority))
        }
        None => match host {
            Some(host) => match last_host {
                Some(last) => last.authority_of(host).map(Some),
                None => RequestAuthority::from_header(host).map(Some),
            },
            None if version == Version::HTTP_11 => Err(AuthorityError::Missing),
            None => Ok(None),
        },
    }
}

/// The one `Host` header, if any.
fn single_host(headers: &HeaderMap) -> Result<Option<&HeaderValue>, AuthorityError> {
    let mut all = headers.get_all(header::HOST).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(AuthorityError::Repeated);
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    #[test]
    fn the_connections_last_host_is_reused_only_when_identical() {
        let last = LastHost::default();
        let uri: Uri = "/x".parse().unwrap();
        let on = |host: &str| {
            of_request_on(
                Version::HTTP_11,
                &uri,
                &headers(&[("host", host)]),
                Some(&last),
            )
        };
        assert_eq!(
            on("a.example:8443").unwrap().unwrap().as_str(),
            "a.example:8443"
        );
        assert_eq!(
            on("a.example:8443").unwrap().unwrap().as_str(),
            "a.example:8443"
        );
        assert_eq!(on("b.example").unwrap().unwrap().as_str(), "b.example");
        assert_eq!(on("user@b.example").unwrap_err(), AuthorityError::Invalid);
        assert_eq!(on("b.example:99999").unwrap_err(), AuthorityError::Invalid);
        assert_eq!(on("b.example").unwrap().unwrap().as_str(), "b.example");
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// `(host, port)` of the request's authority, or the error.
    fn read(
        version: Version,
        uri: &str,
        pairs: &[(&str, &str)],
    ) -> Result<Option<(String, Option<u16>)>, AuthorityError> {
        let uri: Uri = uri.parse().unwrap();
        of_request(version, &uri, &headers(pairs))
            .map(|a| a.map(|a| (a.host().to_string(), a.port())))
    }

    fn found(
        host: &str,
        port: Option<u16>,
    ) -> Result<Option<(String, Option<u16>)>, AuthorityError> {
        Ok(Some((host.to_string(), port)))
    }

    const H1: Version = Version::HTTP_11;
    const H2: Version = Version::HTTP_2;

    #[test]
    fn http1_takes_the_host_header() {
        assert_eq!(
            read(H1, "/p", &[("host", "example.com")]),
            found("example.com", None)
        );
        assert_eq!(
            read(H1, "/p", &[("host", "Example.COM:8443")]),
            found("Example.COM", Some(8443))
        );
        assert_eq!(
            read(H1, "/p", &[("host", "[::1]:8443")]),
            found("[::1]", Some(8443))
        );
        assert_eq!(read(H1, "/p", &[("host", "[::1]")]), found("[::1]", None));
        assert_eq!(
            read(H1, "/p", &[("host", "127.0.0.1:443")]),
            found("127.0.0.1", Some(443))
        );
        assert_eq!(read(H1, "/p", &[]), Err(AuthorityError::Missing));
        assert_eq!(
            read(H1, "/p", &[("host", "a.example"), ("host", "b.example")]),
            Err(AuthorityError::Repeated)
        );
        // HTTP/1.0 may leave it out.
        assert_eq!(read(Version::HTTP_10, "/p", &[]), Ok(None));
    }

    #[test]
    fn http1_absolute_form_wins_over_host() {
        assert_eq!(
            read(
                H1,
                "https://Target.example:8443/p",
                &[("host", "other.example")]
            ),
            found("Target.example", Some(8443))
        );
        assert_eq!(
            read(H1, "http://target.example/p", &[]),
            found("target.example", None)
        );
    }

    #[test]
    fn http2_takes_the_authority_pseudo_header() {
        // What browsers send: `:authority`, no `host`.
        assert_eq!(
            read(H2, "https://127.0.0.1:8443/api", &[]),
            found("127.0.0.1", Some(8443))
        );
        assert_eq!(
            read(H2, "https://[::1]:8443/api", &[]),
            found("[::1]", Some(8443))
        );
        // A `host` next to it must agree (case and default port aside).
        assert_eq!(
            read(
                H2,
                "https://example.com/api",
                &[("host", "EXAMPLE.com:443")]
            ),
            found("example.com", None)
        );
        assert_eq!(
            read(H2, "https://example.com/api", &[("host", "evil.example")]),
            Err(AuthorityError::Conflicting)
        );
        assert_eq!(
            read(
                H2,
                "https://example.com/api",
                &[("host", "example.com:8443")]
            ),
            Err(AuthorityError::Conflicting)
        );
        // Without `:authority`, a `host` header is what there is.
        assert_eq!(
            read(H2, "/api", &[("host", "example.com")]),
            found("example.com", None)
        );
        assert_eq!(read(H2, "/api", &[]), Ok(None));
    }

    #[test]
    fn invalid_authorities_are_refused() {
        for bad in [
            "",
            "user@example.com",
            "user:pw@example.com",
            "example.com:99999",
            "example.com:8a",
            "example.com/path",
            "example.com?q",
            "[::1",
            "::1",
            "a b",
            ":443",
        ] {
            assert!(
                RequestAuthority::parse(bad.as_bytes()).is_err(),
                "{bad:?} accepted"
            );
        }
        for good in [
            "example.com",
            "example.com:",
            "EXAMPLE.com:0",
            "[2001:db8::1]:443",
            "xn--bcher-kva.example",
        ] {
            assert!(
                RequestAuthority::parse(good.as_bytes()).is_ok(),
                "{good:?} refused"
            );
        }
    }

    #[test]
    fn default_ports_compare_equal_to_none() {
        let a = |s: &str| RequestAuthority::parse(s.as_bytes()).unwrap();
        assert!(a("example.com").same_as(&a("EXAMPLE.COM:443"), 443));
        assert!(!a("example.com").same_as(&a("example.com:443"), 80));
        assert!(a("example.com:80").same_as(&a("example.com"), 80));
        assert!(!a("example.com:8443").same_as(&a("example.com"), 443));
        assert!(a("[::1]:443").same_as(&a("[::1]"), 443));
        assert!(!a("[::1]").same_as(&a("[::2]"), 443));
        assert!(!a("example.com").same_as(&a("example.com.evil"), 443));
    }
}
