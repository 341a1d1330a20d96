//! A route's access rules (issue 20), as pure functions: which methods it
//! serves, whether a request is a top-level browser navigation (which gets
//! a redirect or a page instead of JSON), and whether a signed-in user is
//! one the route admits. The request pipeline (`http`) calls these in order.

use http::{HeaderMap, Method};

use super::sessions::Identity;
use crate::config::RouteAccess;

/// Whether the route serves `method`. A WebSocket handshake counts as the
/// `GET` it is (RFC 6455), also when HTTP/2 spells it `CONNECT` (RFC 8441).
pub fn method_permitted(access: &RouteAccess, method: &Method, websocket: bool) -> bool {
    let method = if websocket { &Method::GET } else { method };
    access.methods.as_ref().is_none_or(|m| m.contains(method))
}

/// Whether the signed-in user is admitted: no `allow_*` list, or any list
/// naming them (their address, its domain, or one of their groups).
pub fn user_permitted(access: &RouteAccess, who: &Identity) -> bool {
    if !access.restricts_users() {
        return true;
    }
    let email = who.email.to_ascii_lowercase();
    if access.allow_emails.contains(&email) {
        return true;
    }
    let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
    if access.allow_domains.iter().any(|d| d == domain) {
        return true;
    }
    who.groups.iter().any(|g| access.allow_groups.contains(g))
}

/// Whether a request is a browser's top-level navigation: a `GET`/`HEAD`
/// that accepts `text/html` and, when the browser says (`Sec-Fetch-Mode`),
/// is a navigation. `fetch`/XHR calls, images, scripts and API clients get
/// JSON whatever the route's `on_unauthenticated`.
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if *method != Method::GET && *method != Method::HEAD {
        return false;
    }
    let mode_ok = match headers.get("sec-fetch-mode") {
        Some(mode) => mode.as_bytes().eq_ignore_ascii_case(b"navigate"),
        None => true,
    };
    let accepts_html = headers.get_all(http::header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("text/html"))
    });
    mode_ok && accepts_html
}

/// The rule for paths no route covers under `[server] default_auth =
/// "required"`: a session, then `[upstream]`; browsers are sent to the
/// sign-in page when `[pages]` is on.
pub fn default_route(cfg: &crate::config::Config) -> Option<crate::config::Route> {
    use crate::config::{DefaultAuth, OnUnauthenticated, Route, RouteAuth};
    match cfg.access.default_auth {
        DefaultAuth::NotServed => None,
        DefaultAuth::Required => Some(Route {
            prefix: "/".to_string(),
            auth: RouteAuth::Required,
            upstream: None,
            access: RouteAccess {
                on_unauthenticated: if cfg.access.pages.is_some() {
                    OnUnauthenticated::Redirect
                } else {
                    OnUnauthenticated::Status401
                },
                ..RouteAccess::default()
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::sync::Arc;

    fn who(email: &str, groups: &[&str]) -> Identity {
        Identity {
            user_id: 1,
            email: Arc::from(email),
            token: [0; 32],
            user_id_header: HeaderValue::from_static("1"),
            email_header: HeaderValue::from_static("x"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            groups_header: None,
        }
    }

    fn access(emails: &[&str], domains: &[&str], groups: &[&str]) -> RouteAccess {
        RouteAccess {
            allow_emails: emails.iter().map(|s| s.to_string()).collect(),
            allow_domains: domains.iter().map(|s| s.to_string()).collect(),
            allow_groups: groups.iter().map(|s| s.to_string()).collect(),
            ..RouteAccess::default()
        }
    }

    #[test]
    fn any_list_admits_and_others_are_refused() {
        let rules = access(&["ann@x.co"], &["corp.example"], &["ops"]);
        assert!(user_permitted(&rules, &who("ann@x.co", &[])));
        assert!(user_permitted(&rules, &who("bob@corp.example", &[])));
        assert!(user_permitted(&rules, &who("eve@y.co", &["wiki", "ops"])));
        assert!(!user_permitted(&rules, &who("eve@y.co", &["wiki"])));
        // Exact domain only: neither a subdomain nor a look-alike suffix.
        assert!(!user_permitted(&rules, &who("m@sub.corp.example", &[])));
        assert!(!user_permitted(&rules, &who("m@evilcorp.example", &[])));
        assert!(user_permitted(
            &RouteAccess::default(),
            &who("anyone@y.co", &[])
        ));
    }

    #[test]
    fn methods_and_navigation() {
        let rules = RouteAccess {
            methods: Some(vec![Method::GET, Method::HEAD]),
            ..RouteAccess::default()
        };
        assert!(method_permitted(&rules, &Method::GET, false));
        assert!(!method_permitted(&rules, &Method::POST, false));
        assert!(method_permitted(&rules, &Method::CONNECT, true));
        let mut h = HeaderMap::new();
        assert!(!is_navigation(&Method::GET, &h));
        h.insert("accept", HeaderValue::from_static("text/html,*/*;q=0.8"));
        assert!(is_navigation(&Method::GET, &h));
        assert!(!is_navigation(&Method::POST, &h));
        h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        assert!(!is_navigation(&Method::GET, &h));
        h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        assert!(is_navigation(&Method::GET, &h));
    }
}
