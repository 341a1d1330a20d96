//! Forwarding to the upstream: header
//! hygiene (hop-by-hop, spoofable identity and URL-override headers, our own
//! session cookie), `X-Forwarded-*` and identity headers, and bodies streamed
//! both ways without buffering. Submodules: `connect` (TCP/TLS to an
//! upstream), `pool` (keep-alive connections), `websocket` (upgrade
//! pass-through), `streams` (streaming responses that end with their
//! session).

pub mod body;
mod connect;
mod error;
mod hygiene;
mod pool;
mod streams;
pub mod websocket;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use crate::request::body::RequestBody;
use http::header::{self, HeaderName};
use http::{HeaderValue, Method, Request, Response, Uri, Version};

pub use connect::{UpstreamTlsError, check_tls as check_upstream_tls};
pub use error::ProxyError;
use hygiene::{strip_request_headers, strip_response_headers};
pub use pool::{Answer, UpstreamBody, UpstreamError};
use pool::{Pool, Sending};

use crate::auth::sessions::{CookieStrip, Identity, Sessions};
use crate::config::UpstreamConfig;
use crate::proxy::body::Body;
use crate::request::RequestContext;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Headers `forward` adds: the five above, `Host` and two identity headers.
const ADDED_REQUEST_HEADERS: usize = 8;

/// The name `[upstream]` goes by in metrics and logs.
pub const DEFAULT_UPSTREAM: &str = "default";

/// An upstream proxied requests go to, with its connection pool.
pub struct Upstream {
    /// `default` for `[upstream]`, else the `[upstreams.NAME]` name.
    name: Arc<str>,
    pool: Arc<Pool>,
    host: HeaderValue,
    timeout: Duration,
    preserve_host: bool,
    /// `[server] strip_response_headers`: removed from every answer.
    strip_response_headers: Arc<[HeaderName]>,
    outcomes: Outcomes,
}

/// `gatehouse_upstream_requests_total` series of one upstream, resolved
/// once so counting costs an atomic increment.
struct Outcomes {
    ok: prometheus_client::metrics::counter::Counter,
    unavailable: prometheus_client::metrics::counter::Counter,
    tls: prometheus_client::metrics::counter::Counter,
    timeout: prometheus_client::metrics::counter::Counter,
}

impl Upstream {
    /// `name` is `DEFAULT_UPSTREAM` or the `[upstreams.NAME]` name;
    /// `strip_response_headers` come off everything it answers.
    pub fn new(
        name: &str,
        cfg: &UpstreamConfig,
        strip_response_headers: &[HeaderName],
    ) -> Result<Upstream, UpstreamTlsError> {
        let authority = cfg.url.authority().expect("checked in config");
        let https = cfg.tls.is_some();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let connector = connect::Connector::new(
            name,
            authority.host(),
            port,
            cfg.connect_timeout,
            cfg.tls.as_ref(),
        )?;
        let metrics = crate::metrics::get();
        Ok(Upstream {
            name: Arc::from(name),
            pool: Pool::new(connector),
            host: HeaderValue::from_str(authority.as_str()).expect("authority is a valid header"),
            timeout: cfg.timeout,
            preserve_host: cfg.preserve_host,
            strip_response_headers: strip_response_headers.into(),
            outcomes: Outcomes {
                ok: metrics.upstream_outcome(name, "ok"),
                unavailable: metrics.upstream_outcome(name, "unavailable"),
                tls: metrics.upstream_outcome(name, "tls_error"),
                timeout: metrics.upstream_outcome(name, "timeout"),
            },
        })
    }

    /// Counts a failed upstream request by outcome and says why in the log.
    fn failed(&self, e: &UpstreamError) {
        match e {
            UpstreamError::Tls { .. } => self.outcomes.tls.inc(),
            UpstreamError::ConnectTimeout { .. } => self.outcomes.timeout.inc(),
            _ => self.outcomes.unavailable.inc(),
        };
        tracing::warn!(upstream = %self.name, error = %e, "upstream request failed");
    }

    /// Closes pooled connections that sat idle too long.
    pub fn close_stale_connections(&self) {
        self.pool.close_stale();
    }

    /// Sends `req` upstream; the returned future streams the answer back.
    /// `cookies` is what [`Sessions::scan_cookies`] found in `req`;
    /// `request_id` goes upstream as `X-Request-Id` (the caller puts it on
    /// the response). The head is rewritten and, when a pooled connection
    /// is ready, handed to it before this returns.
    pub fn forward<'a>(
        &'a self,
        mut req: Box<Request<RequestBody>>,
        identity: Option<&Identity>,
        ctx: &RequestContext,
        sessions: &'a Sessions,
        cookies: CookieStrip,
        request_id: HeaderValue,
    ) -> Result<Forwarding<'a, impl Future<Output = Answer> + Send + use<>>, ProxyError> {
        let method = req.method().clone();
        // Rewritten in place: taking the request apart and putting it back
        // together would move its head twice.
        self.prepare(&mut *req, identity, ctx, (sessions, cookies), request_id)?;
        Ok(Forwarding {
            sending: self.pool.send(req, ctx.received, self.timeout),
            upstream: self,
            method,
            owner: identity.map(streams::StreamOwner::of),
            sessions,
        })
    }

    /// The response head from the upstream, or why there is none: counted,
    /// and readied for the client.
    fn answered(
        &self,
        sent: Result<Response<UpstreamBody>, UpstreamError>,
        method: &Method,
        owner: Option<&streams::StreamOwner>,
        sessions: &Sessions,
    ) -> Result<Response<Body>, ProxyError> {
        let resp = match sent {
            Err(UpstreamError::TimedOut) => {
                self.outcomes.timeout.inc();
                return Err(ProxyError::UpstreamTimeout);
            }
            Err(e) if e.is_client_too_slow() => return Err(ProxyError::BodyTimeout),
            Err(e) if e.is_client_body() => return Err(ProxyError::BodyRead),
            Err(e) => {
                self.failed(&e);
                return Err(ProxyError::UpstreamUnavailable(e));
            }
            Ok(resp) => resp,
        };
        self.outcomes.ok.inc();
        let mut resp = resp.map(Body::Upstream);
        let head = strip_response_headers(resp.headers_mut(), &self.strip_response_headers);
        Ok(match owner {
            Some(who) if streams::is_streaming(method, &resp, head) => {
                streams::end_with_session(resp, sessions, who)
            }
            _ => resp,
        })
    }

    /// Rewrites a request head for the upstream: hop-by-hop, forged and
    /// override headers and Gatehouse's cookies out; `Host`,
    /// `X-Forwarded-*`, `X-Request-Id` and identity headers in; origin-form
    /// target; HTTP/1.1. `cookies`: the sessions and what their
    /// [`Sessions::scan_cookies`] found in these headers.
    fn prepare<B>(
        &self,
        req: &mut Request<B>,
        identity: Option<&Identity>,
        ctx: &RequestContext,
        (sessions, cookies): (&Sessions, CookieStrip),
        request_id: HeaderValue,
    ) -> Result<(), ProxyError> {
        // The authority the client asked for, whatever the protocol (`Host`
        // over HTTP/1.1, `:authority` over HTTP/2).
        let original_host = match &ctx.authority {
            Ok(Some(authority)) => authority.header_value(),
            Ok(None) | Err(_) => None,
        };

        let headers = req.headers_mut();
        strip_request_headers(headers);
        sessions.strip_scanned_cookies(headers, cookies);
        // Room for everything added below in one step instead of two or
        // three doublings of a map sized for the client's few headers.
        headers.reserve(ADDED_REQUEST_HEADERS);
        if !self.preserve_host {
            headers.insert(header::HOST, self.host.clone());
        } else if let Some(host) = &original_host {
            headers.insert(header::HOST, host.clone());
        }
        // `append` from here on: every one of these names was just
        // stripped, so there is no old value to replace.
        headers.append(X_FORWARDED_FOR, ctx.client_ip_header.clone());
        headers.append(X_REAL_IP, ctx.client_ip_header.clone());
        headers.append(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if ctx.peer.tls { "https" } else { "http" }),
        );
        if let Some(host) = original_host {
            headers.append(X_FORWARDED_HOST, host);
        }
        headers.append(X_REQUEST_ID, request_id);
        if let Some(who) = identity {
            who.append_to_stripped(headers);
        }

        // Origin form (`/path?query`) on the wire, as a client sends it.
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let mut uri = http::uri::Parts::default();
            uri.path_and_query = req.uri().path_and_query().cloned();
            *req.uri_mut() = Uri::from_parts(uri).map_err(ProxyError::UpstreamUri)?;
        }
        // HTTP/2 clients are forwarded over HTTP/1.1 to the upstream.
        *req.version_mut() = Version::HTTP_11;

        Ok(())
    }
}

pin_project_lite::pin_project! {
    /// A request forwarded upstream, from [`Upstream::forward`]: waits in
    /// place for the answer (see [`Sending`]) and readies it for the client.
    pub struct Forwarding<'a, F> {
        #[pin]
        sending: Sending<'a, F>,
        upstream: &'a Upstream,
        method: Method,
        // Whose session the request was sent for: a streamed answer ends
        // with it.
        owner: Option<streams::StreamOwner>,
        sessions: &'a Sessions,
    }
}

impl<F: Future<Output = Answer>> Future for Forwarding<'_, F> {
    type Output = Result<Response<Body>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let sent = ready!(this.sending.poll(cx));
        Poll::Ready(
            this.upstream
                .answered(sent, this.method, this.owner.as_ref(), this.sessions),
        )
    }
}

/// Request ids: a random per-process prefix and a counter — unique within
/// the process's lifetime, not guessable across restarts, and no system
/// call per request. One allocation; the copies that go upstream and back
/// to the client share it.
pub fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut raw = [0u8; 12];
        crate::random::random_bytes(&mut raw);
        crate::random::base64url(&raw)
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut id = RequestId {
        buf: [0; RequestId::CAPACITY],
        len: 0,
    };
    // `{prefix}-{n:x}`, written byte by byte (no formatting machinery).
    let prefix = prefix.as_bytes();
    id.buf[..prefix.len()].copy_from_slice(prefix);
    id.buf[prefix.len()] = b'-';
    let digits = (64 - (n | 1).leading_zeros()).div_ceil(4) as usize;
    let start = prefix.len() + 1;
    for i in 0..digits {
        let nibble = (n >> (4 * (digits - 1 - i))) & 0xf;
        id.buf[start + i] = b"0123456789abcdef"[nibble as usize];
    }
    id.len = start + digits;
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .expect("base64url and hex are valid header characters")
}

/// A request id's text, owned by the `Bytes` every copy of it shares.
struct RequestId {
    buf: [u8; RequestId::CAPACITY],
    len: usize,
}

impl RequestId {
    /// 16 characters of prefix, a dash and at most 16 hex digits.
    const CAPACITY: usize = 40;
}

impl AsRef<[u8]> for RequestId {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_and_share_a_prefix() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_eq!(a.rsplit_once('-').unwrap().0, b.rsplit_once('-').unwrap().0);
        assert_eq!(a.rsplit_once('-').unwrap().0.len(), 16, "{a}");
        // The counter in lower-case hex, no leading zeros.
        let (na, nb) = (a.rsplit_once('-').unwrap().1, b.rsplit_once('-').unwrap().1);
        let (na, nb) = (
            u64::from_str_radix(na, 16).unwrap(),
            u64::from_str_radix(nb, 16).unwrap(),
        );
        assert!(nb > na);
        assert_eq!(a.rsplit_once('-').unwrap().1, format!("{na:x}"));
    }
}
