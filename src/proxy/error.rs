//! What forwarding a request can fail with. The proxy names who is at fault
//! (the client's body, the upstream, our own rewrite); `http::error` turns
//! each into a status, the one place that does.

use super::UpstreamError;

/// A failed forward or WebSocket handshake.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request body could not be read from the client.
    #[error("Request body could not be read")]
    BodyRead,
    /// The request body did not arrive in time or arrived too slowly.
    #[error("Request body was not received in time")]
    BodyTimeout,
    /// The upstream could not be reached or broke the exchange.
    #[error("Upstream unavailable")]
    UpstreamUnavailable(#[source] UpstreamError),
    /// The upstream did not answer in time.
    #[error("Upstream timed out")]
    UpstreamTimeout,
    /// The request target could not be rewritten for the upstream.
    #[error("forwarded request target: {0}")]
    UpstreamUri(#[source] http::uri::InvalidUriParts),
}
