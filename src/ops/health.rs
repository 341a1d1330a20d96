//! The admin HTTP listener (plain HTTP, loopback by default, separate from
//! the public listener): `/healthz`, `/readyz` and Prometheus `/metrics`.
//! The public listener never answers these paths itself.

use crate::tasks::{accept_loop, permit};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::http::App;
use crate::http::response::{Body, json, with_body};

/// Bound on each readiness probe (store read, upstream connect).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; the listener is for probes and scrapers.
const MAX_CONNECTIONS: usize = 64;

/// What `/readyz` needs to check.
pub struct Readiness {
    pub app: Arc<App>,
    /// The upstreams some route forwards to, by name (`default` for
    /// `[upstream]`), as `host:port`; each probed with a TCP connect.
    pub upstreams: Vec<(String, String)>,
    /// Under `[tls.acme]`: whether a certificate is in service yet.
    pub certificate: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, ready: Arc<Readiness>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let admit = |_: &_| permit(permits.clone());
    accept_loop(
        &listener,
        "admin listener",
        admit,
        |stream, _, permit, _| {
            let ready = ready.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let ready = ready.clone();
                    async move { Ok::<_, Infallible>(answer(&ready, req).await) }
                });
                let mut b = http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .keep_alive(false);
                let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                drop(permit);
            });
        },
    )
    .await
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn answer(ready: &Readiness, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = crate::http::response::json_message(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/healthz" => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        "/readyz" => readyz(ready).await,
        "/metrics" => metrics(ready).await,
        _ => crate::http::response::json_message(StatusCode::NOT_FOUND, "Not found"),
    }
}

async fn readyz(ready: &Readiness) -> Response<Body> {
    let store = ready.app.auth.store().clone();
    // A shared database must also be announcing revocations, or cached
    // sessions could outlive a logout on another instance.
    let available = store.is_available();
    let store_ok = available
        && matches!(
            tokio::time::timeout(
                PROBE_TIMEOUT,
                tokio::task::spawn_blocking(move || store.count_sessions())
            )
            .await,
            Ok(Ok(Ok(_)))
        );
    // All probes at once, so one slow upstream costs PROBE_TIMEOUT, not n.
    let mut probes = tokio::task::JoinSet::new();
    for (name, addr) in ready.upstreams.iter().cloned() {
        probes.spawn(async move {
            let reached = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr));
            (name, matches!(reached.await, Ok(Ok(_))))
        });
    }
    let mut upstreams = serde_json::Map::new();
    let mut upstream_ok = true;
    while let Some(probe) = probes.join_next().await {
        let (name, ok) = probe.unwrap_or_else(|_| ("?".into(), false));
        upstream_ok &= ok;
        upstreams.insert(name, (if ok { "ok" } else { "failing" }).into());
    }
    let certificate_ok = ready.certificate.as_ref().is_none_or(|c| *c.borrow());
    let all_ok = store_ok && upstream_ok && certificate_ok;
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "failing" };
    let mut body = serde_json::json!({
        "status": word(all_ok),
        "store": word(store_ok),
        "upstream": word(upstream_ok),
        "upstreams": upstreams,
    });
    if ready.certificate.is_some() {
        body["certificate"] = if certificate_ok { "ok" } else { "waiting" }.into();
    }
    json(status, &body)
}

async fn metrics(ready: &Readiness) -> Response<Body> {
    let store = ready.app.auth.store().clone();
    if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || store.count_sessions()).await {
        crate::metrics::get()
            .active_sessions
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let mail = ready.app.auth.outbox().stats.snapshot();
    crate::metrics::get().set_mail(
        mail.depth,
        &[
            ("queued", mail.queued),
            ("sent", mail.sent),
            ("retried", mail.retried),
            ("failed", mail.failed),
            ("dropped", mail.dropped),
        ],
    );
    let mut resp = with_body(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        crate::metrics::get().render(),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
