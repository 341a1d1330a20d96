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

pub mod access;
pub mod access_line;
mod account;
mod early;
pub mod error;
mod forward_auth;
mod handlers;
pub mod head;
mod mfa;
mod oauth;
pub mod origin;
pub mod pages;
pub mod path;
pub mod response;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;

use crate::auth::{Auth, ClientInfo, rules};
use crate::config::{OnUnauthenticated, Route, RouteAuth};
use crate::http::access::Served;
use crate::metrics::RouteLabel;
use crate::proxy::Upstream;
use crate::request::authority;
use crate::request::body::{self, RequestBody};
use crate::request::header_names;
use crate::request::{Peer, RequestContext, Site, ip_header};
use error::ApiError;
use ipnet::IpNet;
use origin::OriginPolicy;
use response::Body;

pub use handlers::{parse_object, required_str};

/// Shared state for every connection.
pub struct App {
    pub auth: Auth,
    /// `[upstream]`: routes that name no upstream go here.
    pub upstream: Upstream,
    /// `[upstreams.NAME]`, for routes with `upstream = "NAME"`.
    pub named_upstreams: std::collections::HashMap<String, Upstream>,
    /// Open proxied WebSockets, bounded like connections, closed at drain.
    pub websockets: crate::proxy::websocket::Tunnels,
    pub routes: Vec<Route>,
    pub max_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` (client address) and forwarded-URI
    /// headers (forward-auth) are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub origins: OriginPolicy,
    /// `Strict-Transport-Security` value, when TLS is on and HSTS enabled.
    pub hsts: Option<HeaderValue>,
    /// Connection hygiene: body deadlines, header-name rules.
    pub hygiene: crate::config::HygieneConfig,
    /// OpenID Connect sign-in (`[[oidc]]`, `[oauth]`).
    pub oidc: crate::oidc::Oidc,
    /// `[server] default_auth = "required"`: the rule for paths no route
    /// covers (a session, then `[upstream]`); `None` answers them 404.
    pub default_route: Option<Route>,
    /// The built-in pages (`[pages]`), when enabled.
    pub pages: Option<crate::http::pages::Pages>,
}

impl App {
    /// The upstream a route forwards to.
    fn upstream_for(&self, route: &Route) -> &Upstream {
        route
            .upstream
            .as_deref()
            .and_then(|name| self.named_upstreams.get(name))
            .unwrap_or(&self.upstream)
    }

    /// Every upstream, the default first.
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        std::iter::once(&self.upstream).chain(self.named_upstreams.values())
    }
}

// `RequestContext` is defined in `crate::request` (the proxy reads it
// too); what the pipeline derives from it for the auth flows lives here.
impl RequestContext {
    pub(crate) fn client_info(&self, app: &App, headers: &http::HeaderMap) -> ClientInfo {
        ClientInfo {
            ip_key: crate::net::throttle_key(self.client_ip),
            device: app.auth.sessions.device_mark(headers).map(str::to_string),
            origin: crate::auth::sessions::origin_of(self.client_ip, headers),
        }
    }
}

/// Entry point for every request: never fails, never panics on input.
/// Every request is counted and access-logged (see [`crate::http::access`]).
///
/// What needs no waiting (the head checks, the client address, the site)
/// runs at once; the returned future holds only what routing and the
/// answer need. A plain `fn` rather than an `async fn`: an `async fn` keeps
/// a second copy of its arguments in its future, and hyper's request is a
/// few hundred bytes that every request's future would carry, and copy.
pub fn handle(
    app: Arc<App>,
    peer: Arc<Peer>,
    req: Request<Incoming>,
) -> impl Future<Output = Response<Body>> + Send + 'static {
    let started = crate::http::access::Started::new(&req);
    let min_rate = body::MinRate {
        bytes_per_sec: app.hygiene.min_body_rate,
        grace: app.hygiene.min_body_rate_grace,
    };
    let unread = early::slot_for(req.body());
    let version = req.version();
    // Boxed once here: every `async fn` level below (route, proxy,
    // forward) would otherwise hold the request by value in its future,
    // and hyper's request future is moved and copied whole.
    let mut req = Box::new(req.map(|b| RequestBody::new(b, Some(min_rate), unread.clone())));
    // Size is judged on the head as received, underscored names included.
    let head_checked = head::check(&mut *req);
    // What the head check's pass saw; after a refused head (its answer is
    // still decorated), everything is looked up.
    let seen = head_checked.as_ref().map_or(
        head::Seen {
            underscore: true,
            site_claim: true,
            upgrade: true,
        },
        |seen| *seen,
    );
    let head_checked = head_checked.map(drop);
    if seen.underscore && app.hygiene.underscores_in_headers == crate::config::Underscores::Drop {
        header_names::drop_underscored(req.headers_mut());
    }
    let client_ip = crate::net::client_ip(peer.addr.ip(), req.headers(), &app.trusted_proxies);
    let client_ip_header = if client_ip == crate::net::canonical_ip(peer.addr.ip()) {
        peer.ip_header.clone()
    } else {
        ip_header(client_ip)
    };
    let authority = authority::of_request_on(
        req.version(),
        req.uri(),
        req.headers(),
        Some(&peer.last_host),
    );
    // Without `Origin` or `Sec-Fetch-Site` the site is unknown: no lookup.
    let site = if seen.site_claim {
        let authority = authority.as_ref().ok().and_then(Option::as_ref);
        app.origins.site(req.headers(), peer.tls, authority)
    } else {
        Site::Unknown
    };
    let ctx = RequestContext {
        received: started.at(),
        upgrade_header: seen.upgrade,
        site,
        authority,
        peer,
        client_ip,
        client_ip_header,
    };
    async move {
        let app = &*app;
        let mut served = Served::default();
        // Decided in a statement of its own, then awaited as one future: a
        // `match` on `route`'s result with an `.await` in its arms would
        // keep the result, the arm's binding and the awaited future, three
        // copies of the same state, in this future.
        let next = match head_checked.and_then(|()| route(app, &ctx, req, &mut served)) {
            Ok(next) => next,
            Err(e) => Next::failed(e),
        };
        let mut resp = match next.await {
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
}

pin_project_lite::pin_project! {
    /// What routing decided for a request, and the future `handle` waits
    /// on for its answer.
    #[project = NextProj]
    enum Next<'a, F> {
        /// The answer (or the error) is known already: a preflight, a
        /// redirect to sign in, a refusal. `None` once taken.
        Ready { answer: Option<Result<Response<Body>, ApiError>> },
        /// Forwarded: the request is on its way upstream.
        Upstream { #[pin] forwarding: crate::proxy::Forwarding<'a, F> },
        /// An endpoint, a page or a WebSocket tunnel. Boxed: their futures
        /// are many times the size of the proxied path's, and hyper moves
        /// every request's future into place.
        Work { work: Pin<Box<dyn Future<Output = Result<Response<Body>, ApiError>> + Send + 'a>> },
    }
}

impl<'a, F> Next<'a, F> {
    fn answer(resp: Response<Body>) -> Self {
        Next::Ready {
            answer: Some(Ok(resp)),
        }
    }

    fn failed(e: ApiError) -> Self {
        Next::Ready {
            answer: Some(Err(e)),
        }
    }

    fn work(work: impl Future<Output = Result<Response<Body>, ApiError>> + Send + 'a) -> Self {
        Next::Work {
            work: Box::pin(work),
        }
    }
}

impl<F: Future<Output = crate::proxy::Answer>> Future for Next<'_, F> {
    type Output = Result<Response<Body>, ApiError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            NextProj::Ready { answer } => {
                Poll::Ready(answer.take().expect("a request's answer is taken once"))
            }
            NextProj::Upstream { forwarding } => forwarding.poll(cx).map_err(ApiError::from),
            NextProj::Work { work } => work.as_mut().poll(cx),
        }
    }
}

/// Decides what becomes of a request, without waiting for anything: every
/// check, the session lookup and the header rewrite happen here, and a
/// proxied request is handed to an upstream connection before this
/// returns. `served` is filled in as soon as the request is routed and
/// authenticated.
fn route<'a>(
    app: &'a App,
    ctx: &'a RequestContext,
    req: Box<Request<RequestBody>>,
    served: &'a mut Served,
) -> Result<Next<'a, impl Future<Output = crate::proxy::Answer> + Send + use<>>, ApiError> {
    let canonical = path::canonical(req.uri().path())?;
    if let Err(e) = &ctx.authority {
        return Err(ApiError::BadAuthority(*e));
    }
    if let Some(resp) = app
        .origins
        .preflight(req.method(), req.headers(), &ctx.site)
    {
        if resp.status() == http::StatusCode::FORBIDDEN {
            log_cross_site_refusal(ctx, &req, "CORS preflight from an origin not allowed");
        }
        return Ok(Next::answer(resp));
    }
    // Decide everything the path decides before the request moves on.
    let endpoint = Endpoint::for_path(&canonical).filter(|e| e.claims(req.method()));
    // Logout endpoints clear the session cookie even when the request
    // carries none: a top-level form POST from another site (which a
    // SameSite=Lax cookie does not accompany) would otherwise sign the
    // user out. They are guarded as if the cookie were there.
    // Only a foreign site is ever refused: the cookie scan is skipped for
    // same-site and allowed requests (nearly all proxied ones).
    let refused = ctx.site == Site::Foreign && {
        let guarded = app.auth.sessions.carries_cookie(req.headers())
            || endpoint.is_some_and(Endpoint::clears_session_cookie);
        app.origins.refuses(req.method(), guarded, &ctx.site)
    };
    if refused {
        log_cross_site_refusal(ctx, &req, "state change from a foreign site");
        return Err(ApiError::CrossSite);
    }
    let target = path::match_route(&app.routes, &canonical)
        .or(app.default_route.as_ref())
        .map(|r| (r, app.upstream_for(r)));
    if let Some(pages) = &app.pages
        && let Some(page) = pages.page_for(&canonical)
    {
        served.route = RouteLabel::Endpoint("pages");
        return Ok(Next::work(pages.serve(app, ctx, page, *req, served)));
    }
    drop(canonical);
    match endpoint {
        Some(endpoint) => {
            served.route = RouteLabel::Endpoint(endpoint.name());
            Ok(Next::work(serve_endpoint(app, ctx, endpoint, *req, served)))
        }
        None => {
            served.route = RouteLabel::Proxy;
            proxy(app, ctx, target, req, served)
        }
    }
}

/// Says why a request was refused as cross-site, so an operator can see at
/// once whether an `[cors] allowed_origins` entry is missing. The origin is
/// the site's own claim (cut at 200 bytes); no cookie or other secret is
/// logged.
fn log_cross_site_refusal(ctx: &RequestContext, req: &Request<RequestBody>, reason: &'static str) {
    let text = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(&v.as_bytes()[..v.len().min(200)]).into_owned())
            .unwrap_or_else(|| "-".to_string())
    };
    let scheme = if ctx.peer.tls { "https" } else { "http" };
    let authority = match &ctx.authority {
        Ok(Some(a)) => format!("{scheme}://{}", a.as_str()),
        Ok(None) | Err(_) => "-".to_string(),
    };
    tracing::info!(
        target: "gatehouse::security",
        method = %req.method(),
        path = %req.uri().path(),
        origin = %text(header::ORIGIN),
        sec_fetch_site = %text(header::HeaderName::from_static("sec-fetch-site")),
        compared_with = %authority,
        client = %ctx.client_ip,
        reason,
        "cross-site request refused: its Origin is neither this server's own origin nor listed in [cors] allowed_origins",
    );
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
    // Account self-service (see `account`).
    ForgotPassword,
    ResetPassword,
    ChangePassword,
    OwnSessions,
    /// `DELETE /api/v1/user/sessions/{id}`.
    OwnSession,
    EmailChange,
    EmailVerify,
    DeleteAccount,
    /// `GET /api/v1/oauth/{name}/connect`: start an OIDC sign-in.
    OAuthConnect,
    /// `GET /api/v1/oauth/{name}/callback`: the provider sends the browser back.
    OAuthCallback,
    /// Second factors (see `mfa`).
    Mfa(mfa::Step),
}

impl Endpoint {
    fn for_path(canonical: &str) -> Option<Endpoint> {
        /// Every endpoint lives under it: the proxied paths (nearly every
        /// request) are told apart with one comparison.
        const API: &str = "/api/v1/";
        if !canonical.starts_with(API) {
            return None;
        }
        Some(match canonical.trim_end_matches('/') {
            "/api/v1/user/signup/send-otp" => Endpoint::SendOtp,
            "/api/v1/user/signup/verify" => Endpoint::Verify,
            "/api/v1/user/signin" => Endpoint::SignIn,
            "/api/v1/auth-check" => Endpoint::AuthCheck,
            "/api/v1/user/logout" => Endpoint::Logout,
            "/api/v1/user/logout-all" => Endpoint::LogoutAll,
            "/api/v1/auth/verify" => Endpoint::ForwardAuth,
            "/api/v1/user/password/forgot" => Endpoint::ForgotPassword,
            "/api/v1/user/password/reset" => Endpoint::ResetPassword,
            "/api/v1/user/password" => Endpoint::ChangePassword,
            "/api/v1/user/sessions" => Endpoint::OwnSessions,
            "/api/v1/user/email/change" => Endpoint::EmailChange,
            "/api/v1/user/email/verify" => Endpoint::EmailVerify,
            "/api/v1/user" => Endpoint::DeleteAccount,
            other if account::session_id(other).is_some() => Endpoint::OwnSession,
            other if mfa::Step::for_path(other).is_some() => {
                Endpoint::Mfa(mfa::Step::for_path(other)?)
            }
            other => return oauth::step_for(other),
        })
    }

    /// Whether Gatehouse answers this method on the endpoint's path. Only
    /// `DELETE` of the generic `/api/v1/user` is Gatehouse's; other methods
    /// there stay the backend's (a profile read, say) and are proxied.
    fn claims(self, method: &Method) -> bool {
        self != Endpoint::DeleteAccount || *method == Method::DELETE
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
            Endpoint::ForgotPassword => "password-forgot",
            Endpoint::ResetPassword => "password-reset",
            Endpoint::ChangePassword => "password-change",
            Endpoint::OwnSessions => "sessions-list",
            Endpoint::OwnSession => "session-end",
            Endpoint::EmailChange => "email-change",
            Endpoint::EmailVerify => "email-verify",
            Endpoint::DeleteAccount => "account-delete",
            Endpoint::OAuthConnect => "oauth-connect",
            Endpoint::OAuthCallback => "oauth-callback",
            Endpoint::Mfa(step) => step.name(),
        }
    }

    /// Endpoints whose answer clears the session cookie.
    fn clears_session_cookie(self) -> bool {
        matches!(self, Endpoint::Logout | Endpoint::LogoutAll)
    }

    fn method(self) -> Method {
        match self {
            Endpoint::AuthCheck
            | Endpoint::ForwardAuth
            | Endpoint::OwnSessions
            | Endpoint::OAuthConnect
            | Endpoint::OAuthCallback => Method::GET,
            Endpoint::OwnSession | Endpoint::DeleteAccount => Method::DELETE,
            Endpoint::Mfa(step) => step.method(),
            Endpoint::SendOtp
            | Endpoint::Verify
            | Endpoint::SignIn
            | Endpoint::Logout
            | Endpoint::LogoutAll
            | Endpoint::ForgotPassword
            | Endpoint::ResetPassword
            | Endpoint::ChangePassword
            | Endpoint::EmailChange
            | Endpoint::EmailVerify => Method::POST,
        }
    }

    fn allow(self) -> &'static str {
        match self.method() {
            Method::GET => "GET",
            Method::DELETE => "DELETE",
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
        Endpoint::AuthCheck => handlers::auth_check(app, &req, served),
        Endpoint::Logout => handlers::logout(app, req, served).await,
        Endpoint::LogoutAll => handlers::logout_all(app, req, served).await,
        Endpoint::ForwardAuth => forward_auth::verify(app, &ctx.peer, &req, served),
        Endpoint::ForgotPassword => account::forgot_password(app, ctx, req).await,
        Endpoint::ResetPassword => account::reset_password(app, ctx, req).await,
        Endpoint::ChangePassword => account::change_password(app, ctx, req, served).await,
        Endpoint::OwnSessions => account::own_sessions(app, &req, served).await,
        Endpoint::OwnSession => account::end_own_session(app, &req, served).await,
        Endpoint::EmailChange => account::email_change(app, ctx, req, served).await,
        Endpoint::EmailVerify => account::email_verify(app, ctx, req, served).await,
        Endpoint::DeleteAccount => account::delete_account(app, ctx, req, served).await,
        Endpoint::OAuthConnect => oauth::connect(app, ctx, req).await,
        Endpoint::OAuthCallback => oauth::callback(app, ctx, req).await,
        Endpoint::Mfa(step) => mfa::serve(app, ctx, step, req, served).await,
    }
}

/// Authenticates as the route demands and forwards (a WebSocket handshake
/// through the tunnel).
fn proxy<'a>(
    app: &'a App,
    ctx: &'a RequestContext,
    target: Option<(&'a Route, &'a Upstream)>,
    req: Box<Request<RequestBody>>,
    served: &mut Served,
) -> Result<Next<'a, impl Future<Output = crate::proxy::Answer> + Send + use<>>, ApiError> {
    let (route, upstream) = target.ok_or(ApiError::NoRoute)?;
    // Over HTTP/1.1 a handshake needs an `Upgrade` header, which the head
    // check noticed or not: most requests skip the header lookups.
    let websocket = (ctx.upgrade_header || req.version() != http::Version::HTTP_11)
        && crate::proxy::websocket::is_handshake(&*req);
    // CONNECT only ever opens a WebSocket (RFC 8441); Gatehouse tunnels
    // nothing else.
    if req.method() == Method::CONNECT && !websocket {
        return Err(ApiError::MethodNotAllowed {
            allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        });
    }
    // Cross-site WebSocket hijacking: browsers send the cookie with a
    // handshake from any site, and the CSRF rule above only covers state
    // changes; a handshake is a GET.
    // One scan of the cookies: the session token, and what stripping ours
    // before forwarding will take.
    let cookies = app.auth.sessions.scan_cookies(req.headers());
    if websocket && ctx.site == Site::Foreign && cookies.token.is_some() {
        return Err(ApiError::CrossSite);
    }
    let access = &route.access;
    if !rules::method_permitted(access, req.method(), websocket) {
        let allow = access.allow_header.clone();
        return Err(ApiError::RouteMethodNotAllowed(
            allow.unwrap_or(HeaderValue::from_static("GET")),
        ));
    }
    // Any `allow_*` list needs a session, whatever `auth` says.
    let restricted = access.restricts_users();
    // Browsers navigating to a page-style route get the sign-in page or
    // the "no access" page instead of JSON.
    let page_for_browser = || {
        app.pages.as_ref().filter(|_| {
            access.on_unauthenticated == OnUnauthenticated::Redirect
                && rules::is_navigation(req.method(), req.headers())
        })
    };
    let identity = match route.auth {
        RouteAuth::None => None,
        RouteAuth::Optional if !restricted => app.auth.sessions.authenticate_scanned(&cookies)?,
        RouteAuth::Optional | RouteAuth::Required => {
            match app.auth.sessions.authenticate_scanned(&cookies)? {
                Some(who) => Some(who),
                None => {
                    return match page_for_browser() {
                        Some(pages) => Ok(Next::answer(pages.sign_in_redirect(req.uri()))),
                        None => Err(ApiError::Unauthenticated),
                    };
                }
            }
        }
    };
    if restricted
        && let Some(who) = &identity
        && !rules::user_permitted(access, who)
    {
        served.user = Some(who.user_id);
        return match page_for_browser() {
            Some(pages) => Ok(Next::answer(pages.forbidden_page(&who.email))),
            None => Err(ApiError::Forbidden),
        };
    }
    served.user = identity.as_ref().map(|who| who.user_id);
    let cookies = cookies.strip;
    let request_id = crate::proxy::new_request_id();
    served.request_id = Some(request_id.clone());
    if websocket {
        let Some(slot) = app.websockets.slot() else {
            tracing::warn!("WebSocket refused: server.max_connections WebSockets are open");
            return Err(ApiError::WebSocketsFull);
        };
        // Boxed, like the endpoints: rare, and kept out of the size of
        // every proxied request's future.
        let sessions = &app.auth.sessions;
        return Ok(Next::work(async move {
            let tunnel =
                upstream.tunnel(*req, identity.as_deref(), ctx, sessions, slot, request_id);
            Ok(tunnel.await?)
        }));
    }
    let forwarding = upstream.forward(
        req,
        identity.as_deref(),
        ctx,
        &app.auth.sessions,
        cookies,
        request_id,
    )?;
    Ok(Next::Upstream { forwarding })
}

#[cfg(test)]
mod tests {
    //! Sizes of the proxied path's futures. hyper moves each request's
    //! future into place, and every `.await` moves the awaited future into
    //! its caller's: what these hold is copied several times per request
    //! (and the request future is boxed per request). Found from the
    //! functions' types alone, no request needed.

    use super::*;

    /// The size of what `f` returns, for three or more arguments.
    fn returned_size<A, B, C, R>(_f: impl FnOnce(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    fn returned_size5<A, B, C, D, E, R>(_f: impl FnOnce(A, B, C, D, E) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn the_proxied_paths_futures_stay_small() {
        let handle = returned_size::<Arc<App>, Arc<Peer>, Request<Incoming>, _>(handle);
        // What `proxy` decides: for a forwarded request, the future that
        // waits for the upstream's answer.
        let decided = returned_size5::<
            &'static App,
            &'static RequestContext,
            Option<(&'static Route, &'static Upstream)>,
            Box<Request<RequestBody>>,
            &'static mut Served,
            _,
        >(proxy);
        eprintln!("future sizes: handle {handle} B, a forwarded request's wait {decided} B");
        assert!(decided > 0 && decided <= handle, "handle holds the wait");
        // The bounds (1,016 and 480 bytes when written, debug and release
        // alike) guard against a large state slipping back into every
        // request (an endpoint's, a connect's, the request by value, a
        // second copy of the wait): such states are boxed.
        assert!(handle <= 1536, "handle's future is {handle} bytes");
        assert!(
            decided <= 1024,
            "the wait for the upstream is {decided} bytes"
        );
    }
}
