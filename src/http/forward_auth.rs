//! Forward-auth: `GET /api/v1/auth/verify` lets nginx (`auth_request`),
//! Caddy (`forward_auth`) and Traefik (`ForwardAuth`) ask Gatehouse whether
//! a request may pass, without Gatehouse proxying it.
//!
//! 200 with `X-Auth-User-Id` / `X-Auth-Email` for a valid session; 401
//! without one. The route rule of the *original* request decides whether a
//! session is needed. That URI comes from `X-Forwarded-Uri` or
//! `X-Original-URI`, believed only from peers in `server.trusted_proxies`:
//! anyone else could name a public path to get a 200 for a protected one
//! (the flaw behind oauth2-proxy's CVE-2026-40575). Without a believable
//! original URI the strictest rule (`required`) applies.

use crate::request::body::RequestBody;
use http::{HeaderMap, Request, Response, StatusCode};

use super::error::ApiError;
use super::response::{Body, json};
use super::{App, path};
use crate::auth::sessions::Identity;
use crate::config::RouteAuth;
use crate::http::access::Served;
use crate::request::Peer;

/// Headers that carry the original request's URI, by proxy convention.
const ORIGINAL_URI_HEADERS: [&str; 2] = ["x-forwarded-uri", "x-original-uri"];

/// What the original request's route demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Route(RouteAuth),
    /// No route covers the path: Gatehouse would not forward it either.
    Uncovered,
}

pub fn verify(
    app: &App,
    peer: &Peer,
    req: &Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let trusted = crate::net::is_trusted(peer.addr.ip(), &app.trusted_proxies);
    // The route of the original request, for its access rules (issue 20).
    let route = if trusted {
        original_path(req.headers())
            .and_then(|p| path::match_route(&app.routes, &p).or(app.default_route.as_ref()))
    } else {
        None
    };
    let rule = match (trusted, route) {
        (false, _) => Rule::Route(RouteAuth::Required),
        (true, Some(r)) if r.access.restricts_users() => Rule::Route(RouteAuth::Required),
        (true, _) => rule_for(&app.routes, req.headers()),
    };
    let rule = match (rule, &app.default_route) {
        (Rule::Uncovered, Some(_)) => Rule::Route(RouteAuth::Required),
        (rule, _) => rule,
    };
    if let Some(r) = route
        && let Some(method) = forwarded_method(req.headers())
        && !crate::auth::rules::method_permitted(&r.access, &method, false)
    {
        return Err(ApiError::Forbidden);
    }
    let identity = app.auth.sessions.authenticate(req.headers())?;
    match (rule, identity) {
        (Rule::Uncovered, _) => Err(ApiError::NotPermitted),
        (Rule::Route(_), Some(who)) => {
            served.user = Some(who.user_id);
            if let Some(r) = route
                && !crate::auth::rules::user_permitted(&r.access, &who)
            {
                return Err(ApiError::Forbidden);
            }
            Ok(allowed(Some(&who)))
        }
        (Rule::Route(RouteAuth::Required), None) => Err(ApiError::Unauthenticated),
        (Rule::Route(RouteAuth::Optional | RouteAuth::None), None) => Ok(allowed(None)),
    }
}

/// `X-Forwarded-Method` (Traefik, Caddy; nginx when configured), if one
/// valid value is given.
fn forwarded_method(headers: &HeaderMap) -> Option<http::Method> {
    let mut values = headers.get_all("x-forwarded-method").iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    http::Method::from_bytes(value.as_bytes().to_ascii_uppercase().as_slice()).ok()
}

/// The rule for the original URI named by a trusted proxy. Missing,
/// repeated, conflicting or refused values fall back to `required`.
fn rule_for(routes: &[crate::config::Route], headers: &HeaderMap) -> Rule {
    match original_path(headers) {
        None => Rule::Route(RouteAuth::Required),
        Some(canonical) => match path::auth_for(routes, &canonical) {
            Some(auth) => Rule::Route(auth),
            None => Rule::Uncovered,
        },
    }
}

/// The canonical path of the original URI named by a trusted proxy;
/// `None` when missing, repeated, conflicting or refused.
fn original_path(headers: &HeaderMap) -> Option<String> {
    let mut named: Option<&str> = None;
    for name in ORIGINAL_URI_HEADERS {
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else { continue };
        if values.next().is_some() {
            return None;
        }
        let text = value.to_str().ok()?;
        match named {
            Some(earlier) if earlier != text => return None,
            _ => named = Some(text),
        }
    }
    let uri = named?;
    let path_only = uri.split(['?', '#']).next().unwrap_or("");
    if !path_only.starts_with('/') {
        return None;
    }
    path::canonical(path_only).ok().map(|c| c.into_owned())
}

fn allowed(who: Option<&Identity>) -> Response<Body> {
    let body = match who {
        Some(w) => serde_json::json!({ "isAuthenticated": true, "email": &*w.email }),
        None => serde_json::json!({ "isAuthenticated": false }),
    };
    let mut resp = json(StatusCode::OK, &body);
    if let Some(w) = who {
        w.insert_headers(resp.headers_mut());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Route;
    use http::{HeaderName, HeaderValue};

    fn routes() -> Vec<Route> {
        vec![
            Route::new("/api/v2/", RouteAuth::Required),
            Route::new("/public/", RouteAuth::None),
        ]
    }

    fn rule(pairs: &[(&str, &str)]) -> Rule {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        rule_for(&routes(), &h)
    }

    const REQUIRED: Rule = Rule::Route(RouteAuth::Required);

    #[test]
    fn original_uri_picks_the_route_rule() {
        assert_eq!(
            rule(&[("x-forwarded-uri", "/public/a?x=1")]),
            Rule::Route(RouteAuth::None)
        );
        assert_eq!(rule(&[("x-original-uri", "/api/v2/tasks")]), REQUIRED);
        assert_eq!(rule(&[("x-original-uri", "/other")]), Rule::Uncovered);
        assert_eq!(
            rule(&[
                ("x-forwarded-uri", "/public/a"),
                ("x-original-uri", "/public/a")
            ]),
            Rule::Route(RouteAuth::None)
        );
    }

    #[test]
    fn doubtful_original_uris_get_the_strictest_rule() {
        assert_eq!(rule(&[]), REQUIRED);
        // Conflicting, repeated, relative, or refused by canonicalisation.
        assert_eq!(
            rule(&[
                ("x-forwarded-uri", "/public/a"),
                ("x-original-uri", "/api/v2/x")
            ]),
            REQUIRED
        );
        assert_eq!(
            rule(&[
                ("x-forwarded-uri", "/public/a"),
                ("x-forwarded-uri", "/public/b")
            ]),
            REQUIRED
        );
        assert_eq!(rule(&[("x-forwarded-uri", "public/a")]), REQUIRED);
        assert_eq!(
            rule(&[("x-forwarded-uri", "/public/%2e%2e/api/v2/x")]),
            REQUIRED
        );
        assert_eq!(
            rule(&[("x-forwarded-uri", "/public/../api/v2/x")]),
            REQUIRED
        );
    }
}
