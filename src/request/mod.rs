//! What is known about one request before the pipeline decides anything:
//! the peer, the client address, the authority it was sent to, how its
//! origin relates to us, and its body with deadlines. A leaf below both the
//! pipeline (`http`) and the proxy, which read the same facts; it holds no
//! policy and names no other Gatehouse module but `net`.

pub mod authority;
pub mod body;
pub mod header_names;

use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;

use authority::{AuthorityError, RequestAuthority};

/// What is known about the client's connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The peer's address as a header value, built once per connection for
    /// `X-Forwarded-For` / `X-Real-IP`.
    pub ip_header: HeaderValue,
    /// The connection's last `Host`, parsed (see [`authority::LastHost`]).
    pub last_host: std::sync::Arc<authority::LastHost>,
}

impl Peer {
    pub fn new(addr: SocketAddr, tls: bool) -> Peer {
        let ip = crate::net::canonical_ip(addr.ip());
        Peer {
            addr,
            tls,
            ip_header: ip_header(ip),
            last_host: Default::default(),
        }
    }
}

pub fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
        .expect("an IP address is a valid header value")
}

/// Per-request facts derived once at the start of the pipeline.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Shared by the connection's requests: one reference count each.
    pub peer: std::sync::Arc<Peer>,
    /// When the request arrived (its head was parsed): the start of its
    /// duration and of its upstream timeout.
    pub received: std::time::Instant,
    /// The head has an `Upgrade` header (see `http::head::Seen`).
    pub upgrade_header: bool,
    /// The client address (see `net::client_ip`).
    pub client_ip: IpAddr,
    /// `client_ip` as a header value.
    pub client_ip_header: HeaderValue,
    /// The authority the request was sent to (`Host` or `:authority`, see
    /// [`authority`]); an error is answered with 400 before routing.
    pub authority: Result<Option<RequestAuthority>, AuthorityError>,
    pub site: Site,
}

/// How a request's origin relates to Gatehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// No `Origin` and no cross-site fetch metadata (curl, same-origin GET…).
    Unknown,
    /// Same scheme, host and port as the request itself.
    SameOrigin,
    /// A foreign origin listed in `allowed_origins`.
    Allowed(HeaderValue),
    /// Any other site, including `Origin: null`.
    Foreign,
}
