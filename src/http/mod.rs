//! The request pipeline. Each request goes through the same checklist:
//! 1. canonicalise the path (refuse ambiguous spellings),
//! 2. attribute the request to a client address,
//! 3. answer CORS preflights, refuse cross-site state changes (CSRF),
//! 4. serve Gatehouse's own endpoints,
//! 5. or pick the route, authenticate as it demands and forward upstream,
//! 6. add the response headers every answer carries (CORS, HSTS).
//!
//! Inner steps return `Result<Response, ApiError>`; only [`handle`] turns an
//! error into a response.

pub mod body;
mod early;
pub mod error;
mod forward_auth;
mod handlers;
pub mod head;
pub mod header_names;
pub mod origin;
pub mod path;
pub mod response;

use std::net::{IpAddr, SocketAddr};

use http::{HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;

use crate::auth::{Auth, ClientInfo};
use crate::config::{Route, RouteAuth};
use crate::net::Cidr;
use crate::ops::access::Served;
use crate::proxy::Upstream;
use body::RequestBody;
use error::ApiError;
use origin::{OriginPolicy, Site};
use response::Body;

pub use handlers::{parse_object, required_str};

/// Shared state for every connection.
pub struct App {
    pub auth: Auth,
    pub upstream: Upstream,
    pub routes: Vec<Route>,
    pub max_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` (client address) and forwarded-URI
    /// headers (forward-auth) are believed.
    pub trusted_proxies: Vec<Cidr>,
    pub origins: OriginPolicy,
    /// `Strict-Transport-Security` value, when TLS is on and HSTS enabled.
    pub hsts: Option<HeaderValue>,
    /// Connection hygiene: body deadlines, header-name rules.
    pub hygiene: crate::config::HygieneConfig,
}

/// What is known about the client's connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The peer's address as a header value, built once per connection for
    /// `X-Forwarded-For` / `X-Real-IP`.
    pub ip_header: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, tls: bool) -> Peer {
        let ip = crate::net::canonical_ip(addr.ip());
        Peer {
            addr,
            tls,
            ip_header: ip_header(ip),
        }
    }
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
        .expect("an IP address is a valid header value")
}

/// Per-request facts derived once at the start of the pipeline.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub peer: Peer,
    /// The client address (see `net::client_ip`).
    pub client_ip: IpAddr,
    /// `client_ip` as a header value.
    pub client_ip_header: HeaderValue,
    pub site: Site,
}

impl RequestContext {
    fn client_info(&self, app: &App, headers: &http::HeaderMap) -> ClientInfo {
        ClientInfo {
            ip_key: crate::net::throttle_key(self.client_ip),
            device: app.auth.sessions.device_mark(headers).map(str::to_string),
        }
    }
}

/// Entry point for every request: never fails, never panics on input.
/// Every request is counted and access-logged (see [`crate::ops::access`]).
pub async fn handle(app: &App, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    let started = crate::ops::access::Started::new(&req);
    let min_rate = body::MinRate {
        bytes_per_sec: app.hygiene.min_body_rate,
        grace: app.hygiene.min_body_rate_grace,
    };
    let unread = early::slot_for(req.body());
    let version = req.version();
    let mut req = req.map(|b| RequestBody::new(b, Some(min_rate), unread.clone()));
    // Size is judged on the head as received, underscored names included.
    let head_checked = head::check(&mut req);
    if app.hygiene.underscores_in_headers == crate::config::Underscores::Drop {
        header_names::drop_underscored(req.headers_mut());
    }
    let client_ip = crate::net::client_ip(peer.addr.ip(), req.headers(), &app.trusted_proxies);
    let client_ip_header = if client_ip == crate::net::canonical_ip(peer.addr.ip()) {
        peer.ip_header.clone()
    } else {
        ip_header(client_ip)
    };
    let ctx = RequestContext {
        site: app.origins.site(req.headers(), peer.tls),
        peer,
        client_ip,
        client_ip_header,
    };
    let mut served = Served::default();
    let routed = match head_checked {
        Ok(()) => route(app, &ctx, req, &mut served).await,
        Err(e) => Err(e),
    };
    let mut resp = match routed {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    if let Some(unread) = &unread {
        early::settle(unread, version, &mut resp);
    }
    app.origins.decorate(&mut resp, &ctx.site);
    if let Some(hsts) = &app.hsts {
        resp.headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| hsts.clone());
    }
    started.finish(served, resp)
}

/// `served` is filled in as soon as the request is routed and authenticated.
async fn route(
    app: &App,
    ctx: &RequestContext,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let canonical = path::canonical(req.uri().path())?;
    if let Some(resp) = app
        .origins
        .preflight(req.method(), req.headers(), &ctx.site)
    {
        return Ok(resp);
    }
    let carries_session = app.auth.sessions.carries_cookie(req.headers());
    if app
        .origins
        .refuses(req.method(), carries_session, &ctx.site)
    {
        return Err(ApiError::CrossSite);
    }
    // Decide everything the path decides before the request moves on.
    let endpoint = Endpoint::for_path(&canonical);
    let route_auth = path::auth_for(&app.routes, &canonical);
    drop(canonical);
    match endpoint {
        Some(endpoint) => {
            served.route = endpoint.name();
            serve_endpoint(app, ctx, endpoint, req, served).await
        }
        None => {
            served.route = "proxy";
            proxy(app, ctx, route_auth, req, served).await
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
    LogoutAll,
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
            "/api/v1/user/logout-all" => Endpoint::LogoutAll,
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
            Endpoint::LogoutAll => "logout-all",
            Endpoint::ForwardAuth => "forward-auth",
        }
    }

    fn method(self) -> Method {
        match self {
            Endpoint::AuthCheck | Endpoint::ForwardAuth => Method::GET,
            Endpoint::SendOtp
            | Endpoint::Verify
            | Endpoint::SignIn
            | Endpoint::Logout
            | Endpoint::LogoutAll => Method::POST,
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
    ctx: &RequestContext,
    endpoint: Endpoint,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    if req.method() != endpoint.method() {
        return Err(ApiError::MethodNotAllowed {
            allow: endpoint.allow(),
        });
    }
    match endpoint {
        Endpoint::SendOtp => handlers::send_otp(app, ctx, req).await,
        Endpoint::Verify => handlers::verify(app, ctx, req).await,
        Endpoint::SignIn => handlers::sign_in(app, ctx, req).await,
        Endpoint::AuthCheck => handlers::auth_check(app, &req),
        Endpoint::Logout => handlers::logout(app, req).await,
        Endpoint::LogoutAll => handlers::logout_all(app, req).await,
        Endpoint::ForwardAuth => forward_auth::verify(app, &ctx.peer, &req, served),
    }
}

/// Authenticates as the route demands and forwards.
async fn proxy(
    app: &App,
    ctx: &RequestContext,
    route_auth: Option<RouteAuth>,
    req: Request<RequestBody>,
    served: &mut Served,
) -> Result<Response<Body>, ApiError> {
    let auth = route_auth.ok_or(ApiError::NoRoute)?;
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
    served.user = identity.as_ref().map(|who| who.user_id);
    let mut resp = app
        .upstream
        .forward(req, identity.as_ref(), ctx, &app.auth.sessions)
        .await?;
    for name in &app.hygiene.strip_response_headers {
        resp.headers_mut().remove(name);
    }
    Ok(resp)
}
