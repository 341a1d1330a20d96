//! Cross-origin rules: CSRF refusal for cookie-carrying state changes from
//! foreign sites, CORS preflights and credentialed CORS headers for the
//! origins listed in `[cors] allowed_origins`.

use http::header;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::response::{Body, json_message};
use crate::config::CorsConfig;

/// Longest `Access-Control-Request-Headers` echoed back.
const MAX_REQUEST_HEADERS_LEN: usize = 1024;

pub struct OriginPolicy {
    allowed: Vec<String>,
    max_age: HeaderValue,
}

/// How a request's origin relates to Gatehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// No `Origin` and no cross-site fetch metadata (curl, same-origin GET…).
    Unknown,
    /// Same scheme, host and port as the request itself.
    SameOrigin,
    /// A foreign origin listed in `allowed_origins`.
    Allowed(HeaderValue),
    /// Any other site, including `Origin: null`.
    Foreign,
}

impl OriginPolicy {
    pub fn new(cfg: &CorsConfig) -> OriginPolicy {
        OriginPolicy {
            allowed: cfg.allowed_origins.clone(),
            max_age: HeaderValue::from(cfg.max_age.as_secs()),
        }
    }

    /// Classifies the request by `Origin`, falling back to `Sec-Fetch-Site`.
    pub fn site(&self, headers: &HeaderMap, tls: bool) -> Site {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
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
        if is_same_origin(&lower, headers, tls) {
            Site::SameOrigin
        } else {
            Site::Foreign
        }
    }

    /// CSRF rule: a state-changing request that carries the session cookie
    /// must not come from a foreign site.
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

/// Whether `origin` (lower-cased) names the host the request was sent to.
fn is_same_origin(origin: &str, headers: &HeaderMap, tls: bool) -> bool {
    let (scheme, default_port) = if tls {
        ("https://", 443)
    } else {
        ("http://", 80)
    };
    let Some(origin_host) = origin.strip_prefix(scheme) else {
        return false;
    };
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
    else {
        return false;
    };
    with_port(origin_host, default_port) == with_port(&host, default_port)
}

/// `host` with an explicit port, so `example.com` equals `example.com:443`.
fn with_port(host: &str, default_port: u16) -> String {
    let has_port = match host.rfind(':') {
        Some(i) => host[i + 1..].bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(']'),
        None => false,
    };
    if has_port {
        host.to_string()
    } else {
        format!("{host}:{default_port}")
    }
}

fn is_header_list(v: &[u8]) -> bool {
    v.iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
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

    #[test]
    fn classifies_origins() {
        let p = policy();
        let site = |pairs: &[(&str, &str)]| p.site(&headers(pairs), true);
        assert_eq!(
            site(&[
                ("host", "gh.example.com"),
                ("origin", "https://gh.example.com")
            ]),
            Site::SameOrigin
        );
        assert_eq!(
            site(&[
                ("host", "gh.example.com:443"),
                ("origin", "https://GH.example.com")
            ]),
            Site::SameOrigin
        );
        assert_eq!(
            site(&[
                ("host", "gh.example.com"),
                ("origin", "http://gh.example.com")
            ]),
            Site::Foreign
        );
        assert_eq!(
            site(&[
                ("host", "gh.example.com"),
                ("origin", "https://evil.example")
            ]),
            Site::Foreign
        );
        assert_eq!(
            site(&[("host", "gh.example.com"), ("origin", "null")]),
            Site::Foreign
        );
        assert!(matches!(
            site(&[("origin", "https://app.example.com")]),
            Site::Allowed(_)
        ));
        assert_eq!(site(&[("sec-fetch-site", "cross-site")]), Site::Foreign);
        assert_eq!(site(&[("sec-fetch-site", "same-origin")]), Site::Unknown);
        assert_eq!(site(&[]), Site::Unknown);
    }

    #[test]
    fn csrf_refuses_only_cookie_carrying_state_changes_from_foreign_sites() {
        let p = policy();
        assert!(p.refuses(&Method::POST, true, &Site::Foreign));
        assert!(p.refuses(&Method::DELETE, true, &Site::Foreign));
        assert!(!p.refuses(&Method::GET, true, &Site::Foreign));
        assert!(!p.refuses(&Method::POST, false, &Site::Foreign));
        assert!(!p.refuses(&Method::POST, true, &Site::SameOrigin));
        assert!(!p.refuses(&Method::POST, true, &Site::Unknown));
    }
}
