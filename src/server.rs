//! Start-up and the public listener: open the store, build the pieces, accept
//! connections (bounded), terminate TLS, speak HTTP/1.1 or HTTP/2, and drain
//! gracefully on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::auth::AuthError;
use crate::clock::Clock;
use crate::config::{CertSource, Config};
use crate::conn::{ConnState, Deadlines, Lingering, Registry, Serving, Slot, Tracked};
use crate::http::origin::OriginPolicy;
use crate::http::{App, handle};
use crate::mail::MailError;
use crate::proxy::Upstream;
use crate::request::Peer;
use crate::store::{Store, StoreError};
use crate::tasks::{Background, accept_loop};
use crate::tls::TlsError;
use http::HeaderValue;

/// hyper's own hard stop for a request head. The documented limits
/// (`http::head`) are enforced exactly by the pipeline; hyper's buffer
/// limit is only approximate, so it sits well above them.
const MAX_HEADER_BYTES: usize = 2 * crate::http::head::MAX_HEAD_BYTES;
/// Most headers accepted in one request.
const MAX_HEADERS: usize = 100;
/// Concurrent HTTP/2 streams per connection.
const MAX_H2_STREAMS: u32 = 100;
/// How long an idle connection may take to finish a graceful close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error("store {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: StoreError,
    },
    /// TLS could not be configured.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The mail transport could not be configured.
    #[error("mail: {0}")]
    Mail(#[from] MailError),
    /// The auth state (hasher, throttles, secrets) could not be set up.
    #[error("auth: {0}")]
    Auth(#[from] AuthError),
    /// The admin socket could not be created.
    #[error("admin socket {path}: {source}")]
    AdminSocket {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An `[[oidc]]` provider could not be set up (secret, CA file).
    #[error("{0}")]
    Oidc(#[source] crate::config::ConfigError),
    /// The built-in pages could not be set up (templates, logo).
    #[error("{0}")]
    Pages(#[from] crate::http::pages::PagesError),
    /// An upstream's TLS client could not be set up.
    #[error("{0}")]
    Upstream(#[from] crate::proxy::UpstreamTlsError),
    /// `[tls.acme]` could not be set up.
    #[error("tls.acme: {0}")]
    Acme(#[from] crate::acme::AcmeError),
    /// A signal handler could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// Runs the server until `shutdown` resolves, then drains and returns.
///
/// The start-up story, step by step; every background task runs under one
/// cancellation token (`root`), whose child group (`upkeep`) stops before
/// the drain and whose own tasks (the admin listeners) stop after it.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    serve_with_clock(config, shutdown, Clock::System, |_| {}).await
}

/// [`serve`] with every expiry decision on `clock`, telling `listening`
/// the public listener's address once it is bound. Only for tests that run
/// the server in-process and move a [`Clock::manual`] forward instead of
/// sleeping (see `crate::clock`); the binary always runs [`serve`].
#[doc(hidden)]
pub async fn serve_with_clock(
    config: Config,
    shutdown: impl Future<Output = ()>,
    clock: Clock,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    // 1. Build the app from the configuration: store, mail outbox worker,
    //    auth, OIDC, upstream pools.
    let (app, mail_worker) = build_app(&config, clock).await?;

    // 2. TLS, if configured: a file certificate (reloaded on SIGHUP), a
    //    self-signed one, or `[tls.acme]` (whose manager swaps it).
    let tls = prepare_tls(&config).await?;

    // 3. Open the listeners: the admin socket for the CLI, the admin HTTP
    //    listener (health, readiness, metrics), the public listener.
    let listeners = open_listeners(&config).await?;
    listening(listeners.public_addr);

    // 4. Spawn the background tasks under one cancellation token.
    let root = CancellationToken::new();
    let mut operator = Background::new(root.clone());
    let mut upkeep_tasks = operator.child();
    spawn_background(
        &config,
        &app,
        tls.acme,
        listeners.public_addr,
        tls.reloader,
        listeners.admin_http,
        listeners.admin_socket,
        &mut operator,
        &mut upkeep_tasks,
    );

    // 5. Serve: accept until `shutdown`. Every connection holds a slot in
    //    the registry: per-address and global caps, longest-idle eviction
    //    at the cap, drain on shutdown.
    let registry = Registry::new(
        config.server.max_connections,
        config.server.hygiene.max_connections_per_ip,
    );
    let settings = Arc::new(ConnSettings {
        tls: tls.acceptor,
        header_read_timeout: config.server.header_read_timeout,
        deadlines: Deadlines {
            first_request: config.server.header_read_timeout,
            keep_alive: config.server.hygiene.keep_alive_timeout,
            close_grace: CLOSE_GRACE,
        },
    });
    let admit = |addr: &SocketAddr| {
        let ip = addr.ip();
        let registry = &registry;
        async move {
            match registry.admit(ip).await {
                Ok(slot) => Some(slot),
                Err(refused) => {
                    tracing::debug!(%ip, ?refused, "connection refused");
                    None
                }
            }
        }
    };
    let start = |stream, addr, slot, accepted| {
        let (app, settings) = (app.clone(), settings.clone());
        tokio::spawn(serve_connection(
            app, settings, slot, stream, addr, accepted,
        ));
    };
    tokio::select! {
        () = shutdown => {}
        () = accept_loop(&listeners.public, "accept", admit, start) => {}
    }

    // 6. Drain: stop accepting, let in-flight requests finish (up to
    //    server.drain_timeout), then make every store write durable.
    drop(listeners.public);
    crate::ops::systemd::stopping();
    upkeep_tasks.stop().await;
    tracing::info!(
        connections = registry.count(),
        "shutting down; draining connections"
    );
    // Open WebSockets end now: they are tunnels, not requests to finish.
    app.websockets.close_all();
    if tokio::time::timeout(config.server.drain_timeout, registry.drain())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    // The admin socket stays up during the drain; its file goes with it.
    operator.stop().await;
    // Mail queued by the drained requests stays in the outbox for next start.
    mail_worker.stop().await;
    flush_throttles(&app).await;
    let flushed = app.clone();
    let final_flush = move || {
        // Uses queued by the last requests, so their sessions do not look
        // idle for longer than they were after the restart.
        if let Err(e) = flushed.auth.sessions.write_queued_touches() {
            tracing::warn!(error = %e, "could not record the last session uses");
        }
        flushed.auth.store().flush()
    };
    match tokio::task::spawn_blocking(final_flush).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "final store flush failed"),
        Err(e) => tracing::warn!(error = %e, "final store flush task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Step 1: opens the store (blocking file I/O or the database connection
/// and its migrations, done before serving anything) and builds the shared
/// state every connection uses. Sessions ended on other instances (shared
/// database) leave this instance's cache too.
async fn build_app(
    config: &Config,
    clock: Clock,
) -> Result<(Arc<App>, crate::mail::Worker), ServeError> {
    let store_path = config.store.path.clone();
    let store: Arc<dyn Store> = {
        let store_config = config.store.clone();
        let opened = tokio::task::spawn_blocking(move || crate::store::open(&store_config))
            .await
            .map_err(StoreError::Task)
            .and_then(|r| r);
        opened.map_err(|source| ServeError::Store {
            path: match &config.store.backend {
                crate::config::StoreBackend::Redb => store_path.display().to_string(),
                crate::config::StoreBackend::Postgres(_) => "(postgresql)".to_string(),
            },
            source,
        })?
    };
    let (outbox, mail_worker) = crate::mail::start(&config.mail, store.clone(), clock)?;
    let oidc = crate::oidc::Oidc::new(config, store.clone(), clock).map_err(ServeError::Oidc)?;
    let auth = Auth::new(config, store.clone(), outbox, clock)?;
    let strip_response_headers = &config.server.hygiene.strip_response_headers;
    let upstream = Upstream::new(
        crate::proxy::DEFAULT_UPSTREAM,
        &config.upstream,
        strip_response_headers,
    )?;
    let named_upstreams = config
        .upstreams
        .iter()
        .map(|(name, cfg)| {
            Ok((
                name.clone(),
                Upstream::new(name, cfg, strip_response_headers)?,
            ))
        })
        .collect::<Result<_, ServeError>>()?;
    let pages = crate::http::pages::Pages::new(config, store.as_ref())?;
    let app = Arc::new(App {
        default_route: crate::auth::rules::default_route(config),
        pages,
        oidc,
        auth,
        upstream,
        named_upstreams,
        websockets: crate::proxy::websocket::Tunnels::new(config.server.max_connections),
        routes: config.routes.clone(),
        max_body_bytes: config.server.max_body_bytes,
        hygiene: config.server.hygiene.clone(),
        trusted_proxies: config.server.trusted_proxies.clone(),
        origins: OriginPolicy::new(&config.cors),
        hsts: config
            .tls
            .as_ref()
            .filter(|t| !t.hsts_max_age.is_zero())
            .and_then(|t| {
                HeaderValue::from_str(&format!("max-age={}", t.hsts_max_age.as_secs())).ok()
            }),
    });
    {
        let app = Arc::downgrade(&app);
        store.watch_revocations(Arc::new(move |revoked| {
            if let Some(app) = app.upgrade() {
                app.auth.sessions.forget_revoked(revoked);
            }
        }));
    }
    Ok((app, mail_worker))
}

/// What step 2 sets up: the acceptor, the SIGHUP reloader (installed now,
/// spawned in step 4) and, under `[tls.acme]`, the certificate manager.
struct TlsSetup {
    acceptor: Option<TlsAcceptor>,
    reloader: BoxedTask,
    acme: Option<crate::acme::Acme>,
}

type BoxedTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Step 2: TLS, if configured, with SIGHUP swapping the certificate in
/// place. Under `[tls.acme]` the ACME manager swaps it instead.
async fn prepare_tls(config: &Config) -> Result<TlsSetup, ServeError> {
    let acme = match config.tls.as_ref().map(|t| &t.source) {
        Some(CertSource::Acme(acme)) => {
            Some(crate::acme::prepare(acme, &config.store.data_dir()).await?)
        }
        _ => None,
    };
    let (acceptor, reloadable) = match &config.tls {
        Some(_) if acme.is_some() => (
            acme.as_ref().map(|a| TlsAcceptor::from(a.server_config())),
            None,
        ),
        Some(t) => {
            let (server_config, cert) =
                crate::tls::reloadable_server_config(&t.source, &config.store.data_dir())?;
            (Some(TlsAcceptor::from(server_config)), Some(cert))
        }
        None => {
            tracing::warn!(
                "no [tls] section: serving plain HTTP; session cookies are sent without Secure"
            );
            (None, None)
        }
    };
    let reloader =
        crate::ops::signals::reload_on_hangup(reloadable).map_err(ServeError::Signals)?;
    Ok(TlsSetup {
        acceptor,
        reloader: Box::pin(reloader),
        acme,
    })
}

/// The sockets step 3 opens.
struct Listeners {
    admin_socket: crate::admin::socket::AdminSocket,
    admin_http: Option<TcpListener>,
    public: TcpListener,
    public_addr: SocketAddr,
}

/// Step 3: binds the admin socket, the admin HTTP listener (if
/// `admin.listen` is set) and the public listener, in that order.
async fn open_listeners(config: &Config) -> Result<Listeners, ServeError> {
    let admin_socket =
        crate::admin::socket::AdminSocket::bind(&config.admin.socket).map_err(|source| {
            ServeError::AdminSocket {
                path: config.admin.socket.display().to_string(),
                source,
            }
        })?;
    let admin_http = match config.admin.listen {
        Some(addr) => {
            let listener = crate::ops::health::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            tracing::info!("admin endpoints on http://{bound} (/healthz /readyz /metrics)");
            Some(listener)
        }
        None => None,
    };
    let bind_error = |source| ServeError::Bind {
        addr: config.server.listen,
        source,
    };
    let public = TcpListener::bind(config.server.listen)
        .await
        .map_err(bind_error)?;
    let public_addr = public.local_addr().map_err(bind_error)?;
    Ok(Listeners {
        admin_socket,
        admin_http,
        public,
        public_addr,
    })
}

/// Step 4: the admin socket and admin HTTP listener go in `operator` (they
/// serve through the drain); upkeep, the SIGHUP reloader, the ACME manager,
/// the readiness notice and the systemd watchdog go in `upkeep` (stopped
/// when the drain starts). ACME orders or renews now that the listener can
/// answer TLS-ALPN-01; systemd hears READY=1 once a certificate serves.
#[allow(clippy::too_many_arguments)]
fn spawn_background(
    config: &Config,
    app: &Arc<App>,
    acme: Option<crate::acme::Acme>,
    public_addr: SocketAddr,
    reloader: BoxedTask,
    admin_http: Option<TcpListener>,
    admin_socket: crate::admin::socket::AdminSocket,
    operator: &mut Background,
    upkeep_tasks: &mut Background,
) {
    operator.spawn(
        admin_socket.serve(Arc::new(crate::admin::socket::AdminContext {
            app: app.clone(),
            staging_dir: config.store.data_dir(),
        })),
    );
    if let Some(listener) = admin_http {
        let ready = Arc::new(crate::ops::health::Readiness {
            app: app.clone(),
            upstreams: routed_upstreams(config),
            certificate: acme.as_ref().map(|a| a.ready()),
        });
        operator.spawn(crate::ops::health::serve(listener, ready));
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        upstream = %config.upstream.url,
        "listening on {scheme}://{public_addr}"
    );
    upkeep_tasks.spawn(reloader);
    match acme {
        Some(acme) => {
            let certified = acme.ready();
            acme.spawn(public_addr.port(), upkeep_tasks);
            upkeep_tasks.spawn(notify_ready_when_certified(certified));
        }
        None => crate::ops::systemd::ready(),
    }
    if let Some(watchdog) = crate::ops::systemd::watchdog() {
        upkeep_tasks.spawn(watchdog);
    }
    upkeep_tasks.spawn(upkeep(app.clone(), config.store.sweep_interval));
}

/// The upstreams some route forwards to, by name, as `host:port` (what
/// `/readyz` probes: an `[upstream]` no route uses need not be up).
fn routed_upstreams(config: &Config) -> Vec<(String, String)> {
    let mut used: Vec<(String, String)> = Vec::new();
    for route in &config.routes {
        let (name, cfg) = match &route.upstream {
            Some(name) => (name.as_str(), &config.upstreams[name]),
            None => (crate::proxy::DEFAULT_UPSTREAM, &config.upstream),
        };
        if used.iter().all(|(n, _)| n != name) {
            let addr = cfg.url.authority().map(|a| {
                let port = a
                    .port_u16()
                    .unwrap_or(if cfg.tls.is_some() { 443 } else { 80 });
                format!("{}:{port}", a.host())
            });
            used.push((name.to_string(), addr.unwrap_or_default()));
        }
    }
    used
}

/// Sends systemd READY=1 once the ACME certificate is in service.
async fn notify_ready_when_certified(mut certified: tokio::sync::watch::Receiver<bool>) {
    if !*certified.borrow() {
        tracing::info!("not ready until the ACME certificate is issued (/readyz answers 503)");
    }
    if certified.wait_for(|ok| *ok).await.is_ok() {
        crate::ops::systemd::ready();
    }
}

/// How often throttle counters are written to the store (and stale upstream
/// connections closed).
const THROTTLE_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// How often live connections (WebSockets, streams) are checked against
/// their session's expiry; well inside the 5 s in which they must close.
const LIVE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

async fn upkeep(app: Arc<App>, sweep_every: Duration) {
    let mut live = tokio::time::interval(LIVE_CHECK_INTERVAL);
    live.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(sweep_every);
    let mut flush = tokio::time::interval(THROTTLE_FLUSH_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sweep.tick() => {
                if let Err(e) = app.auth.sweep().await {
                    tracing::warn!(error = %e, "sweep failed");
                }
                match app.oidc.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(states = n, "swept expired OIDC sign-ins"),
                    Err(e) => tracing::warn!(error = %e, "OIDC state sweep failed"),
                }
            }
            _ = live.tick() => {
                if let Err(e) = app.auth.sessions.end_expired_live().await {
                    tracing::warn!(error = %e, "checking live connections' sessions failed");
                }
            }
            _ = flush.tick() => {
                flush_throttles(&app).await;
                for upstream in app.upstreams() {
                    upstream.close_stale_connections();
                }
            }
        }
    }
}

async fn flush_throttles(app: &Arc<App>) {
    let app = app.clone();
    let result = tokio::task::spawn_blocking(move || app.auth.throttle.flush()).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "saving throttle counters failed"),
        Err(e) => tracing::warn!(error = %e, "saving throttle counters failed"),
    }
}

struct ConnSettings {
    tls: Option<TlsAcceptor>,
    header_read_timeout: Duration,
    deadlines: Deadlines,
}

async fn serve_connection(
    app: Arc<App>,
    settings: Arc<ConnSettings>,
    slot: Slot,
    stream: TcpStream,
    addr: SocketAddr,
    accepted: Instant,
) {
    let _ = stream.set_nodelay(true);
    let state = slot.state().clone();
    // The TLS handshake and protocol detection count against the first
    // request's deadline, and stop early if the slot is reclaimed.
    let first_request_by = accepted + settings.header_read_timeout;
    let peer = Arc::new(Peer::new(addr, settings.tls.is_some()));
    let requests = state.clone();
    let service = service_fn(move |req| {
        let in_flight = requests.request_started();
        // Boxed per request: hyper keeps a slot the size of this future for
        // the connection's whole life, so unboxed, every idle keep-alive
        // connection would carry a request's worth of state (KiBs).
        Box::pin(Serving::new(
            handle(app.clone(), peer.clone(), req),
            in_flight,
        ))
    });
    let result = match &settings.tls {
        // Boxed: the TLS state (rustls, the handshake) and the HTTP/2 one
        // are several KiB that a plain HTTP/1.1 connection's task would
        // otherwise carry for its whole life.
        Some(acceptor) => {
            let tls = serve_tls(acceptor, stream, addr, service, &state, accepted, &settings);
            match Box::pin(tls).await {
                Some(result) => result,
                None => return,
            }
        }
        None => {
            let sniffed = tokio::select! {
                s = sniff_h2_preface(&stream, first_request_by) => s,
                () = state.close_requested() => None,
            };
            match sniffed {
                Some(is_h2) => {
                    serve_http(
                        TokioIo::new(Lingering::new(stream)),
                        is_h2,
                        service,
                        &state,
                        accepted,
                        &settings,
                    )
                    .await
                }
                None => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%addr, error = %e, "connection ended with error");
    }
    drop(slot);
}

/// A TLS connection: the handshake (bounded by the first request's
/// deadline, cut short if the slot is reclaimed), then HTTP. `None` when
/// no HTTP was served (the handshake failed or timed out, or it was a
/// TLS-ALPN-01 validation).
async fn serve_tls<S>(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    service: S,
    state: &ConnState,
    accepted: Instant,
    settings: &ConnSettings,
) -> Option<Result<(), hyper::Error>>
where
    S: hyper::service::HttpService<
            hyper::body::Incoming,
            ResBody = Tracked<crate::http::response::Body>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let first_request_by = accepted + settings.header_read_timeout;
    let stream = Lingering::new(stream);
    let handshake = tokio::time::timeout_at(first_request_by, acceptor.accept(stream));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "tls handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%addr, "tls handshake timed out");
                return None;
            }
        },
        () = state.close_requested() => return None,
    };
    if tls.get_ref().1.alpn_protocol() == Some(crate::acme::ACME_TLS_ALPN) {
        // A TLS-ALPN-01 validation: the handshake itself was the answer.
        return None;
    }
    let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    Some(serve_http(TokioIo::new(tls), is_h2, service, state, accepted, settings).await)
}

async fn serve_http<I, S>(
    io: I,
    is_h2: bool,
    service: S,
    state: &ConnState,
    accepted: Instant,
    settings: &ConnSettings,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<
            hyper::body::Incoming,
            ResBody = Tracked<crate::http::response::Body>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let deadlines = &settings.deadlines;
    if is_h2 {
        // Boxed (see `serve_connection`): HTTP/2's connection state is
        // larger than HTTP/1.1's.
        return Box::pin(serve_h2(io, service, state, accepted, deadlines)).await;
    }
    // No hyper timer: hyper's own header-read timeout would register (and
    // allocate) a timer for every request head. The connection's deadline
    // in `conn::drive` gives the same bound — an HTTP/1.1 head must arrive
    // within `header_read_timeout` of the previous response (or of the
    // accept) — from the one timer the connection has anyway.
    let mut b = http1::Builder::new();
    b.max_buf_size(MAX_HEADER_BYTES).max_headers(MAX_HEADERS);
    let deadlines = Deadlines {
        keep_alive: deadlines.keep_alive.min(settings.header_read_timeout),
        ..*deadlines
    };
    // Upgrades on, for WebSocket pass-through (see proxy::websocket).
    let conn = b.serve_connection(io, service).with_upgrades();
    crate::conn::drive(conn, state, accepted, &deadlines).await
}

/// An HTTP/2 connection (prior knowledge or ALPN `h2`).
async fn serve_h2<I, S>(
    io: I,
    service: S,
    state: &ConnState,
    accepted: Instant,
    deadlines: &Deadlines,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<
            hyper::body::Incoming,
            ResBody = Tracked<crate::http::response::Body>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        // RFC 8441: WebSockets over HTTP/2 (see proxy::websocket).
        .enable_connect_protocol()
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    crate::conn::drive(b.serve_connection(io, service), state, accepted, deadlines).await
}

/// For plain connections: whether the client opens with the HTTP/2 preface
/// (prior knowledge). `None` if it closes or stays silent past `deadline` —
/// this bounds the protocol-detection read that hyper itself leaves open.
async fn sniff_h2_preface(stream: &TcpStream, deadline: Instant) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let sniff = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != PREFACE[..n] {
                return Some(false);
            }
            if n == PREFACE.len() {
                return Some(true);
            }
            // A partial preface: peek would return at once; wait for more.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout_at(deadline, sniff)
        .await
        .ok()
        .flatten()
}
