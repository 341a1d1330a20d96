//! contract-probe LISTEN UPSTREAM
//!
//! `../shared/floor-probe` (a current-thread runtime, one upstream HTTP/1.1
//! connection per client connection, its stand-in cookie check) plus the
//! header work Gatehouse's README promises the upstream and the client, done
//! on hyper's `HeaderMap` as plainly and cheaply as this probe's author
//! could:
//!
//! - request: one pass that removes hop-by-hop headers, those `Connection`
//!   names, and forged identity, origin and URL-override headers; the
//!   session cookie removed (here the whole `Cookie` header: the bench sends
//!   no other cookie); `Host` set; `X-Forwarded-For`, `X-Real-IP`,
//!   `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Request-Id`,
//!   `X-Auth-User-Id` and `X-Auth-Email` appended;
//! - response: one pass that removes hop-by-hop headers, those `Connection`
//!   names, `Server` and `X-Powered-By`; `X-Request-Id` set.
//!
//! No session lookup, no timeouts, no logging, no metrics: what is left
//! between this probe and Gatehouse is Gatehouse's own.
//! `bench/run --instructions` measures it beside floor-probe.
//!
//! The name lists below copy those of `src/proxy/hygiene.rs` on purpose:
//! like floor-probe, this is a program of its own on hyper alone, with no
//! access to Gatehouse's private crate. A change to the lists there belongs
//! here too, or the two stop measuring the same work.
use http_body_util::{Either, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1 as client;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1 as server;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tokio::net::{TcpListener, TcpStream};

type Reply = Response<Either<Incoming, Empty<Bytes>>>;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
const X_AUTH_EMAIL: HeaderName = HeaderName::from_static("x-auth-email");
const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: contract-probe LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let upstream_host = HeaderValue::from_str(&upstream).expect("upstream is host:port");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(&listen).await.expect("bind");
        let counter = Rc::new(Cell::new(0u64));
        loop {
            let Ok((client_io, peer)) = listener.accept().await else {
                continue;
            };
            let _ = client_io.set_nodelay(true);
            let (upstream, upstream_host, counter) =
                (upstream.clone(), upstream_host.clone(), counter.clone());
            let client_ip =
                HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a header value");
            tokio::task::spawn_local(async move {
                let Ok(upstream_io) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = upstream_io.set_nodelay(true);
                let Ok((sender, conn)) =
                    client::handshake::<_, Incoming>(TokioIo::new(upstream_io)).await
                else {
                    return;
                };
                tokio::task::spawn_local(conn);
                let sender = Rc::new(RefCell::new(sender));
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let (sender, upstream_host, client_ip) =
                        (sender.clone(), upstream_host.clone(), client_ip.clone());
                    let n = counter.get();
                    counter.set(n + 1);
                    async move {
                        if req
                            .headers()
                            .get(header::COOKIE)
                            .is_none_or(|v| v.len() <= 10)
                        {
                            let mut denied = Response::new(Either::Right(Empty::new()));
                            *denied.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                            return Ok::<Reply, hyper::Error>(denied);
                        }
                        let request_id =
                            HeaderValue::from_str(&format!("probe-{n:x}")).expect("valid");
                        let headers = req.headers_mut();
                        let original_host = headers.get(header::HOST).cloned();
                        strip(headers, |name| is_stripped_request_header(name.as_str()));
                        headers.remove(header::COOKIE);
                        headers.insert(header::HOST, upstream_host);
                        headers.append(X_FORWARDED_FOR, client_ip.clone());
                        headers.append(X_REAL_IP, client_ip);
                        headers.append(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
                        if let Some(host) = original_host {
                            headers.append(X_FORWARDED_HOST, host);
                        }
                        headers.append(X_REQUEST_ID, request_id.clone());
                        headers.append(X_AUTH_USER_ID, HeaderValue::from_static("42"));
                        headers.append(X_AUTH_EMAIL, HeaderValue::from_static("user@example.com"));
                        let pending = sender.borrow_mut().send_request(req);
                        let mut resp = pending.await?;
                        let headers = resp.headers_mut();
                        strip(headers, |name| {
                            is_hop_by_hop(name.as_str())
                                || name == header::SERVER
                                || name == X_POWERED_BY
                        });
                        headers.insert(X_REQUEST_ID, request_id);
                        Ok(resp.map(Either::Left))
                    }
                });
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(client_io), service)
                    .await;
            });
        }
    });
}

/// One pass over the names: those `doomed` selects and those `Connection`
/// names are collected (no allocation when there are none), then removed.
fn strip(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let mut remove: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            let tokens = value.to_str().unwrap_or_default().split(',').map(str::trim);
            remove.extend(
                tokens
                    .filter(|t| {
                        !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive")
                    })
                    .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
            );
        }
        if doomed(name) {
            remove.push(name.clone());
        }
    }
    for name in &remove {
        headers.remove(name);
    }
}

fn is_stripped_request_header(name: &str) -> bool {
    is_hop_by_hop(name)
        || matches!(
            name,
            "proxy-authorization"
                | "forwarded"
                | "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-forwarded-port"
                | "x-forwarded-uri"
                | "x-forwarded-prefix"
                | "x-real-ip"
                | "x-original-url"
                | "x-rewrite-url"
                | "x-original-uri"
                | "x-request-id"
        )
        || name.starts_with("x-auth-")
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "proxy-connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
    )
}
