//! WebSocket pass-through: RFC 6455 upgrade over HTTP/1.1, and RFC 8441
//! extended CONNECT over HTTP/2 (turned into an HTTP/1.1 upgrade for the
//! upstream, with a `Sec-WebSocket-Key` of Gatehouse's own). The handshake
//! is forwarded like any request — same header hygiene, `X-Forwarded-*`,
//! `X-Request-Id` and identity headers — except that `Connection: upgrade`
//! and `Upgrade` are kept, and it goes out on a connection of its own
//! rather than a pooled one. After the upstream's `101`, both upgraded
//! connections are spliced together: bytes are copied both ways as they
//! arrive, without any framing of Gatehouse's own, until either side
//! closes — or the session the handshake was made with ends (see
//! `auth::live`), which closes both.

use std::sync::Arc;
use std::time::Duration;

use crate::request::body::RequestBody;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::ProxyError;
use super::{Upstream, UpstreamError, X_REQUEST_ID, strip_response_headers};
use crate::auth::live::LiveGuard;
use crate::auth::sessions::{Identity, Sessions};
use crate::proxy::body::{Body, BoxError, full};
use crate::request::RequestContext;

/// How long a closing tunnel waits for each side to take its shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Every open tunnel: a bound on how many (an upgraded connection leaves
/// the listener's connection count) and a switch that closes them all when
/// the server drains.
pub struct Tunnels {
    slots: Arc<Semaphore>,
    closing: CancellationToken,
}

/// A place among the open tunnels, held for as long as one is open.
pub struct TunnelSlot {
    _permit: OwnedSemaphorePermit,
    closing: CancellationToken,
}

impl Tunnels {
    pub fn new(max: usize) -> Tunnels {
        Tunnels {
            slots: Arc::new(Semaphore::new(max)),
            closing: CancellationToken::new(),
        }
    }

    /// A slot for one more tunnel, or `None` when `max` are open.
    pub fn slot(&self) -> Option<TunnelSlot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(TunnelSlot {
            _permit: permit,
            closing: self.closing.clone(),
        })
    }

    /// Closes every open tunnel (at shutdown: WebSocket clients reconnect
    /// to the next instance instead of holding up the drain).
    pub fn close_all(&self) {
        self.closing.cancel();
    }
}

/// Whether `req` asks to switch to the WebSocket protocol (RFC 6455 §4.1:
/// an HTTP/1.1 GET with `Connection: upgrade` and `Upgrade: websocket`).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        // `Upgrade` first: nearly every request has none, while browsers
        // send `Connection: keep-alive` on every HTTP/1.1 request.
        && has_token(req.headers(), header::UPGRADE, "websocket")
        && has_token(req.headers(), header::CONNECTION, "upgrade")
}

/// Whether `req` opens a WebSocket over HTTP/2 (RFC 8441: `CONNECT` with
/// the `:protocol` pseudo-header `websocket`).
pub fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Whether `req` opens a WebSocket in either way.
pub fn is_handshake<B>(req: &Request<B>) -> bool {
    is_upgrade(req) || is_extended_connect(req)
}

/// A fresh `Sec-WebSocket-Key` (RFC 6455 §4.1: 16 random bytes, base64).
fn new_key() -> HeaderValue {
    use base64::Engine;
    let mut raw = [0u8; 16];
    crate::random::random_bytes(&mut raw);
    let key = base64::engine::general_purpose::STANDARD.encode(raw);
    HeaderValue::from_str(&key).expect("base64 is a valid header value")
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl Upstream {
    /// Forwards a WebSocket handshake; on the upstream's `101`, answers the
    /// client with it and splices the two connections in a task of their
    /// own. Any other answer is passed on as a normal response. `slot` is
    /// held for as long as the tunnel is open.
    pub async fn tunnel(
        &self,
        mut req: Request<RequestBody>,
        identity: Option<&Identity>,
        ctx: &RequestContext,
        sessions: &Sessions,
        slot: TunnelSlot,
        request_id: HeaderValue,
    ) -> Result<Response<Body>, ProxyError> {
        let over_h2 = is_extended_connect(&req);
        let client_upgrade = hyper::upgrade::on(&mut req);
        // The handshake has no body (over HTTP/2 the request body is the
        // tunnel itself).
        let (parts, _) = req.into_parts();
        let mut upstream_req = Request::from_parts(parts, Empty::<Bytes>::new());
        let protocol = match over_h2 {
            true => Some(HeaderValue::from_static("websocket")),
            false => upstream_req.headers().get(header::UPGRADE).cloned(),
        };
        let cookies = sessions.scan_cookies(upstream_req.headers()).strip;
        self.prepare(
            &mut upstream_req,
            identity,
            ctx,
            (sessions, cookies),
            request_id.clone(),
        )?;
        let headers = upstream_req.headers_mut();
        headers.remove(header::CONTENT_LENGTH);
        if over_h2 {
            // RFC 8441 §5: the HTTP/1.1 equivalent is a GET upgrade, whose
            // key only the hop that speaks HTTP/1.1 can make.
            headers.insert(header::SEC_WEBSOCKET_KEY, new_key());
            *upstream_req.method_mut() = Method::GET;
            *upstream_req.extensions_mut() = http::Extensions::new();
        }
        if let Some(protocol) = protocol {
            let headers = upstream_req.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
        }
        let exchange = async {
            let mut sender = self.pool.connect_for_upgrade().await?;
            Ok::<_, UpstreamError>(sender.send_request(upstream_req).await?)
        };
        let mut resp = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                self.outcomes.timeout.inc();
                return Err(ProxyError::UpstreamTimeout);
            }
            Ok(Err(e)) => {
                self.failed(&e);
                return Err(ProxyError::UpstreamUnavailable(e));
            }
            Ok(Ok(resp)) => resp,
        };
        self.outcomes.ok.inc();
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The upstream declined the upgrade: its answer goes back as any
            // answer does, hop-by-hop and configured headers removed.
            let (mut parts, body) = resp.into_parts();
            strip_response_headers(&mut parts.headers, &self.strip_response_headers);
            parts.headers.entry(X_REQUEST_ID).or_insert(request_id);
            let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
            return Ok(Response::from_parts(parts, Body::Boxed(body)));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let (mut parts, _) = resp.into_parts();
        if over_h2 {
            // RFC 8441 §5: a 200 opens the tunnel; the accept value answers
            // Gatehouse's key, not anything the client sent.
            strip_response_headers(&mut parts.headers, &self.strip_response_headers);
            parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
            parts.status = StatusCode::OK;
            parts.version = Version::HTTP_2;
        } else {
            keep_upgrade_headers(&mut parts.headers, &self.strip_response_headers);
        }
        parts.headers.entry(X_REQUEST_ID).or_insert(request_id);
        // Registered before the 101 goes out, so a logout from here on
        // reaches the tunnel.
        let live = identity.map(|who| sessions.live.register(who.token, who.user_id));
        tokio::spawn(splice(
            client_upgrade,
            upstream_upgrade,
            live,
            self.name.clone(),
            slot,
        ));
        Ok(Response::from_parts(parts, full("")))
    }
}

/// Strips hop-by-hop headers (and the operator's `also`) but keeps the two
/// the upgrade needs.
fn keep_upgrade_headers(headers: &mut HeaderMap, also: &[HeaderName]) {
    let upgrade = headers.get(header::UPGRADE).cloned();
    strip_response_headers(headers, also);
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// One open WebSocket in the gauge while this lives.
struct OpenSocket;

impl OpenSocket {
    fn new() -> OpenSocket {
        crate::metrics::get().websocket_connections.inc();
        OpenSocket
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        crate::metrics::get().websocket_connections.dec();
    }
}

/// Waits for both upgrades, then copies bytes both ways until either side
/// closes or the session ends.
async fn splice(
    client: OnUpgrade,
    upstream: OnUpgrade,
    live: Option<LiveGuard>,
    upstream_name: Arc<str>,
    slot: TunnelSlot,
) {
    let session_ended = async {
        match &live {
            Some(guard) => guard.ended().cancelled().await,
            None => std::future::pending().await,
        }
    };
    let relay = async {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(upstream = %upstream_name, error = %e, "websocket upgrade failed");
                return;
            }
        };
        let _open = OpenSocket::new();
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = copied {
                    tracing::debug!(upstream = %upstream_name, error = %e, "websocket connection ended");
                }
            }
            () = session_ended => {
                tracing::info!(upstream = %upstream_name, "session ended; closing its websocket");
                let _ = tokio::time::timeout(CLOSE_GRACE, client.shutdown()).await;
                let _ = tokio::time::timeout(CLOSE_GRACE, upstream.shutdown()).await;
            }
            () = slot.closing.cancelled() => {
                tracing::debug!(upstream = %upstream_name, "shutting down; closing websocket");
                let _ = tokio::time::timeout(CLOSE_GRACE, client.shutdown()).await;
                let _ = tokio::time::timeout(CLOSE_GRACE, upstream.shutdown()).await;
            }
        }
    };
    relay.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(connection: &str, upgrade: &str) -> Request<()> {
        Request::get("/ws")
            .header("connection", connection)
            .header("upgrade", upgrade)
            .body(())
            .unwrap()
    }

    #[test]
    fn upgrade_requests_are_recognised_in_any_case_and_token_order() {
        assert!(is_upgrade(&handshake("Upgrade", "websocket")));
        assert!(is_upgrade(&handshake("keep-alive, upgrade", "WebSocket")));
        assert!(!is_upgrade(&handshake("keep-alive", "websocket")));
        assert!(!is_upgrade(&handshake("upgrade", "h2c")));
        let mut post = handshake("upgrade", "websocket");
        *post.method_mut() = Method::POST;
        assert!(!is_upgrade(&post));
    }

    #[test]
    fn extended_connect_needs_http2_connect_and_the_websocket_protocol() {
        let connect = |version, protocol: Option<&'static str>| {
            let mut req = Request::connect("https://example.com/ws")
                .version(version)
                .body(())
                .unwrap();
            if let Some(p) = protocol {
                req.extensions_mut()
                    .insert(hyper::ext::Protocol::from_static(p));
            }
            req
        };
        assert!(is_extended_connect(&connect(
            Version::HTTP_2,
            Some("websocket")
        )));
        assert!(is_handshake(&connect(Version::HTTP_2, Some("websocket"))));
        assert!(!is_extended_connect(&connect(Version::HTTP_2, None)));
        assert!(!is_extended_connect(&connect(
            Version::HTTP_2,
            Some("webtransport")
        )));
        assert!(!is_extended_connect(&connect(
            Version::HTTP_11,
            Some("websocket")
        )));
        let key = new_key();
        assert_eq!(key.len(), 24, "{key:?}");
        assert_ne!(key, new_key());
    }
}
