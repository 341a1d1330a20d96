//! The request pipeline. Each request goes through the same checklist:
//! 1. canonicalise the path (refuse ambiguous spellings),
//! 2. serve Gatehouse's own endpoints,
//! 3. pick the route, authenticate as it demands,
//! 4. forward to the upstream.
//!
//! Inner steps return `Result<Response, ApiError>`; only [`handle`] turns an
//! error into a response.

pub mod error;
mod forward_auth;
mod handlers;
pub mod path;
pub mod response;

use std::net::SocketAddr;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::auth::Auth;
use crate::config::{Route, RouteAuth};
use crate::proxy::Upstream;
use error::ApiError;
use response::Body;

/// Shared state for every connection.
pub struct App {
    pub auth: Auth,
    pub upstream: Upstream,
    pub routes: Vec<Route>,
    pub max_body_bytes: usize,
    /// Peers whose forwarded-URI headers are believed (forward-auth).
    pub trusted_proxies: Vec<crate::net::Cidr>,
}

/// What is known about the client's connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Entry point for every request: never fails, never panics on input.
/// Every request is counted and access-logged (see [`crate::ops::access`]).
pub async fn handle(app: &App, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    let started = crate::ops::access::Started::new(&req);
    let mut route_name = "refused";
    let resp = match route(app, peer, req, &mut route_name).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    started.finish(route_name, resp)
}

/// `route_name` is set as soon as the request is routed, for metrics.
async fn route(
    app: &App,
    peer: Peer,
    req: Request<Incoming>,
    route_name: &mut &'static str,
) -> Result<Response<Body>, ApiError> {
    let canonical = path::canonical(req.uri().path())?;
    match Endpoint::for_path(&canonical) {
        Some(endpoint) => {
            *route_name = endpoint.name();
            serve_endpoint(app, peer, endpoint, req).await
        }
        None => {
            *route_name = "proxy";
            proxy(app, peer, &canonical, req).await
        }
    }
}

/// Gatehouse's own API. Matched on the canonical path, so no spelling of an
/// auth endpoint reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    SendOtp,
    Verify,
    SignIn,
    AuthCheck,
    Logout,
    /// `GET /api/v1/auth/verify` for nginx `auth_request`, Caddy
    /// `forward_auth`, Traefik `ForwardAuth`.
    ForwardAuth,
}

impl Endpoint {
    fn for_path(canonical: &str) -> Option<Endpoint> {
        Some(match canonical.trim_end_matches('/') {
            "/api/v1/user/signup/send-otp" => Endpoint::SendOtp,
            "/api/v1/user/signup/verify" => Endpoint::Verify,
            "/api/v1/user/signin" => Endpoint::SignIn,
            "/api/v1/auth-check" => Endpoint::AuthCheck,
            "/api/v1/user/logout" => Endpoint::Logout,
            "/api/v1/auth/verify" => Endpoint::ForwardAuth,
            _ => return None,
        })
    }

    /// Metric label.
    fn name(self) -> &'static str {
        match self {
            Endpoint::SendOtp => "send-otp",
            Endpoint::Verify => "signup-verify",
            Endpoint::SignIn => "signin",
            Endpoint::AuthCheck => "auth-check",
            Endpoint::Logout => "logout",
            Endpoint::ForwardAuth => "forward-auth",
        }
    }

    fn method(self) -> Method {
        match self {
            Endpoint::AuthCheck | Endpoint::ForwardAuth => Method::GET,
            Endpoint::SendOtp | Endpoint::Verify | Endpoint::SignIn | Endpoint::Logout => {
                Method::POST
            }
        }
    }

    fn allow(self) -> &'static str {
        match self.method() {
            Method::GET => "GET",
            _ => "POST",
        }
    }
}

async fn serve_endpoint(
    app: &App,
    peer: Peer,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != endpoint.method() {
        return Err(ApiError::MethodNotAllowed {
            allow: endpoint.allow(),
        });
    }
    match endpoint {
        Endpoint::SendOtp => handlers::send_otp(app, req).await,
        Endpoint::Verify => handlers::verify(app, req).await,
        Endpoint::SignIn => handlers::sign_in(app, req).await,
        Endpoint::AuthCheck => handlers::auth_check(app, &req),
        Endpoint::Logout => handlers::logout(app, req).await,
        Endpoint::ForwardAuth => forward_auth::verify(app, peer, &req),
    }
}

/// Authenticates as the route demands and forwards.
async fn proxy(
    app: &App,
    peer: Peer,
    canonical: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let auth = path::auth_for(&app.routes, canonical).ok_or(ApiError::NoRoute)?;
    let identity = match auth {
        RouteAuth::None => None,
        RouteAuth::Optional => app.auth.sessions.authenticate(req.headers())?,
        RouteAuth::Required => Some(
            app.auth
                .sessions
                .authenticate(req.headers())?
                .ok_or(ApiError::Unauthenticated)?,
        ),
    };
    let mut resp = app
        .upstream
        .forward(req, identity.as_ref(), peer, &app.auth.sessions)
        .await?;
    if let Some(who) = &identity {
        resp.extensions_mut()
            .insert(crate::ops::access::AuthenticatedUser(who.user_id));
    }
    Ok(resp)
}
