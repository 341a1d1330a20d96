//! Cross-origin rules: CSRF refusal for cookie-carrying state changes from
//! foreign sites, CORS preflights and credentialed CORS headers for the
//! origins listed in `[cors] allowed_origins`.

use http::header;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::response::{Body, json_message};
use crate::config::CorsConfig;
use crate::request::Site;
use crate::request::authority::RequestAuthority;

/// Longest `Access-Control-Request-Headers` echoed back.
const MAX_REQUEST_HEADERS_LEN: usize = 1024;
/// Looked up on every request without an `Origin`: a constant, not parsed
/// from a string each time.
pub(super) const SEC_FETCH_SITE: header::HeaderName =
    header::HeaderName::from_static("sec-fetch-site");

pub struct OriginPolicy {
    allowed: Vec<String>,
    max_age: HeaderValue,
}

impl OriginPolicy {
    pub fn new(cfg: &CorsConfig) -> OriginPolicy {
        OriginPolicy {
            allowed: cfg.allowed_origins.clone(),
            max_age: HeaderValue::from(cfg.max_age.as_secs()),
        }
    }

    /// Classifies the request by `Origin`, falling back to `Sec-Fetch-Site`.
    /// `authority` is the request's own (see [`crate::request::authority`]): the
    /// `Host` header over HTTP/1.1, `:authority` over HTTP/2.
    pub fn site(
        &self,
        headers: &HeaderMap,
        tls: bool,
        authority: Option<&RequestAuthority>,
    ) -> Site {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return match headers.get(SEC_FETCH_SITE).map(HeaderValue::as_bytes) {
                Some(b"cross-site" | b"same-site") => Site::Foreign,
                _ => Site::Unknown,
            };
        };
        let Ok(text) = origin.to_str() else {
            return Site::Foreign;
        };
        let lower = text.trim().to_ascii_lowercase();
        if self.allowed.contains(&lower) {
            return Site::Allowed(origin.clone());
        }
        if is_same_origin(&lower, authority, tls) {
            Site::SameOrigin
        } else {
            Site::Foreign
        }
    }

    /// CSRF rule: a state-changing request that carries the session cookie
    /// (or, `carries_session` too, targets an endpoint that clears it) must
    /// not come from a foreign site.
    pub fn refuses(&self, method: &Method, carries_session: bool, site: &Site) -> bool {
        let state_changing = !matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        state_changing && carries_session && *site == Site::Foreign
    }

    /// Answers a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`),
    /// or `None` if the request is not one.
    pub fn preflight(
        &self,
        method: &Method,
        headers: &HeaderMap,
        site: &Site,
    ) -> Option<Response<Body>> {
        if *method != Method::OPTIONS
            || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            || !headers.contains_key(header::ORIGIN)
        {
            return None;
        }
        let Site::Allowed(origin) = site else {
            return Some(json_message(StatusCode::FORBIDDEN, "Origin not allowed"));
        };
        let mut resp = Response::new(super::response::full(""));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        self.decorate_headers(h, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        if let Some(requested) = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .filter(|v| v.len() <= MAX_REQUEST_HEADERS_LEN && is_header_list(v.as_bytes()))
        {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(resp)
    }

    /// Adds credentialed CORS headers for an allowed origin.
    pub fn decorate(&self, resp: &mut Response<Body>, site: &Site) {
        if let Site::Allowed(origin) = site {
            self.decorate_headers(resp.headers_mut(), origin);
        }
    }

    fn decorate_headers(&self, h: &mut HeaderMap, origin: &HeaderValue) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Whether `origin` (lower-cased `scheme://host[:port]`) names the
/// authority the request was sent to, over the same scheme.
fn is_same_origin(origin: &str, authority: Option<&RequestAuthority>, tls: bool) -> bool {
    let (scheme, default_port) = if tls {
        ("https://", 443)
    } else {
        ("http://", 80)
    };
    let (Some(origin_authority), Some(authority)) = (origin.strip_prefix(scheme), authority) else {
        return false;
    };
    RequestAuthority::parse(origin_authority.as_bytes())
        .is_ok_and(|origin| origin.same_as(authority, default_port))
}

fn is_header_list(v: &[u8]) -> bool {
    v.iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::authority;
    use http::{HeaderName, Uri, Version};
    use std::time::Duration;

    fn policy() -> OriginPolicy {
        OriginPolicy::new(&CorsConfig {
            allowed_origins: vec!["https://app.example.com".into()],
            max_age: Duration::from_secs(600),
        })
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

    /// Extra request headers in a table row.
    type Headers<'a> = &'a [(&'a str, &'a str)];

    /// A request as each protocol carries it to `authority`: HTTP/1.1 in
    /// origin form with a `Host` header, HTTP/2 with `:authority` in the URI
    /// and no `Host` (what browsers send).
    #[derive(Debug, Clone, Copy)]
    enum Wire {
        Http1,
        Http2,
    }

    fn site_over(wire: Wire, tls: bool, authority: &str, pairs: &[(&str, &str)]) -> Site {
        let mut h = headers(pairs);
        let scheme = if tls { "https" } else { "http" };
        let (version, uri): (Version, Uri) = match wire {
            Wire::Http1 => {
                h.insert(header::HOST, HeaderValue::from_str(authority).unwrap());
                (Version::HTTP_11, "/api/v1/user/logout".parse().unwrap())
            }
            Wire::Http2 => (
                Version::HTTP_2,
                format!("{scheme}://{authority}/api/v1/user/logout")
                    .parse()
                    .unwrap(),
            ),
        };
        let authority = authority::of_request(version, &uri, &h).unwrap();
        policy().site(&h, tls, authority.as_ref())
    }

    #[test]
    fn classifies_origins_the_same_over_both_protocols() {
        use Site::{Foreign, SameOrigin, Unknown};
        // (tls, request authority, headers, expected)
        let table: &[(bool, &str, Headers, Site)] = &[
            (
                true,
                "gh.example.com",
                &[("origin", "https://gh.example.com")],
                SameOrigin,
            ),
            (
                true,
                "gh.example.com:443",
                &[("origin", "https://GH.example.com")],
                SameOrigin,
            ),
            (
                true,
                "gh.example.com",
                &[("origin", "https://gh.example.com:443")],
                SameOrigin,
            ),
            (
                true,
                "GH.EXAMPLE.COM",
                &[("origin", "https://gh.example.com")],
                SameOrigin,
            ),
            (
                true,
                "127.0.0.1:8443",
                &[("origin", "https://127.0.0.1:8443")],
                SameOrigin,
            ),
            (
                true,
                "[::1]:8443",
                &[("origin", "https://[::1]:8443")],
                SameOrigin,
            ),
            (
                true,
                "[::1]",
                &[("origin", "https://[::1]:443")],
                SameOrigin,
            ),
            (
                false,
                "gh.example.com",
                &[("origin", "http://gh.example.com:80")],
                SameOrigin,
            ),
            (
                false,
                "gh.example.com:8080",
                &[("origin", "http://gh.example.com:8080")],
                SameOrigin,
            ),
            // Another scheme, host or port is another origin.
            (
                true,
                "gh.example.com",
                &[("origin", "http://gh.example.com")],
                Foreign,
            ),
            (
                false,
                "gh.example.com",
                &[("origin", "https://gh.example.com")],
                Foreign,
            ),
            (
                true,
                "gh.example.com",
                &[("origin", "https://gh.example.com:8443")],
                Foreign,
            ),
            (
                true,
                "127.0.0.1:8443",
                &[("origin", "https://127.0.0.1:8444")],
                Foreign,
            ),
            (
                true,
                "127.0.0.1:8443",
                &[("origin", "https://localhost:8443")],
                Foreign,
            ),
            (
                true,
                "[::1]:8443",
                &[("origin", "https://[::2]:8443")],
                Foreign,
            ),
            (
                true,
                "gh.example.com",
                &[("origin", "https://evil.example")],
                Foreign,
            ),
            (
                true,
                "gh.example.com",
                &[("origin", "https://gh.example.com.evil")],
                Foreign,
            ),
            (
                true,
                "gh.example.com",
                &[("origin", "https://user@gh.example.com")],
                Foreign,
            ),
            (
                true,
                "gh.example.com",
                &[("origin", "https://gh.example.com/")],
                Foreign,
            ),
            (true, "gh.example.com", &[("origin", "null")], Foreign),
            // The allowed origin, whatever the request's own authority.
            (
                true,
                "gh.example.com",
                &[("origin", "https://app.example.com")],
                Site::Allowed(HeaderValue::from_static("https://app.example.com")),
            ),
            // No Origin: fetch metadata, else unknown (curl, same-origin GET).
            (
                true,
                "gh.example.com",
                &[("sec-fetch-site", "cross-site")],
                Foreign,
            ),
            (
                true,
                "gh.example.com",
                &[("sec-fetch-site", "same-site")],
                Foreign,
            ),
            (
                true,
                "gh.example.com",
                &[("sec-fetch-site", "same-origin")],
                Unknown,
            ),
            (true, "gh.example.com", &[], Unknown),
        ];
        let mut checked = 0;
        for wire in [Wire::Http1, Wire::Http2] {
            for (tls, authority, pairs, expected) in table {
                assert_eq!(
                    &site_over(wire, *tls, authority, pairs),
                    expected,
                    "{wire:?} tls={tls} authority={authority} {pairs:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 2 * table.len());
    }

    #[test]
    fn no_request_authority_is_never_same_origin() {
        let h = headers(&[("origin", "https://gh.example.com")]);
        assert_eq!(policy().site(&h, true, None), Site::Foreign);
    }

    #[test]
    fn csrf_decision_table_over_both_protocols() {
        let p = policy();
        let origin = ("origin", "https://gh.example.com");
        let evil = ("origin", "https://evil.example");
        // (method, carries session, headers, refused)
        let table: &[(Method, bool, Headers, bool)] = &[
            (Method::POST, true, &[origin], false),
            (Method::PUT, true, &[origin], false),
            (
                Method::DELETE,
                true,
                &[origin, ("sec-fetch-site", "same-origin")],
                false,
            ),
            (Method::POST, true, &[evil], true),
            (Method::DELETE, true, &[evil], true),
            (Method::PATCH, true, &[("origin", "null")], true),
            (
                Method::POST,
                true,
                &[("sec-fetch-site", "cross-site")],
                true,
            ),
            (Method::POST, true, &[], false),
            (Method::POST, false, &[evil], false),
            (Method::GET, true, &[evil], false),
            (Method::HEAD, true, &[evil], false),
            (Method::OPTIONS, true, &[evil], false),
            (
                Method::POST,
                true,
                &[("origin", "https://app.example.com")],
                false,
            ),
        ];
        for wire in [Wire::Http1, Wire::Http2] {
            for (method, session, pairs, refused) in table {
                let site = site_over(wire, true, "gh.example.com", pairs);
                assert_eq!(
                    p.refuses(method, *session, &site),
                    *refused,
                    "{wire:?} {method} session={session} {pairs:?}"
                );
            }
        }
    }
}
