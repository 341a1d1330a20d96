//! The one place where failures become HTTP responses, by who is at fault:
//! the client (4xx), the upstream (502/504) or Gatehouse itself (500/503).

use http::{HeaderValue, StatusCode, header};

use super::path::PathError;
use super::response::{Body, json_message};
use crate::auth::AuthError;
use crate::auth::mfa::MfaError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An auth flow refused or failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request path is refused before routing.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The request body is not valid input for the endpoint.
    #[error("{0}")]
    BadBody(String),
    /// The body is larger than `server.max_body_bytes`.
    #[error("Request body is too large")]
    BodyTooLarge,
    /// The body could not be read from the connection.
    #[error("Request body could not be read")]
    BodyRead,
    /// The body did not arrive within `server.body_read_timeout`, or
    /// arrived below `server.min_body_rate`.
    #[error("Request body was not received in time")]
    BodyTimeout,
    /// The request head is over the documented limits.
    #[error("Request header fields too large")]
    HeadTooLarge,
    /// A `Transfer-Encoding` other than plain `chunked`.
    #[error("Transfer-Encoding other than chunked is not supported")]
    UnsupportedTransferCoding,
    /// The endpoint takes JSON and got something else.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// Known endpoint, wrong method.
    #[error("Method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// No route covers the path.
    #[error("Not found")]
    NoRoute,
    /// The route's `methods` do not include the request's; the value is
    /// the route's `Allow` list.
    #[error("Method not allowed")]
    RouteMethodNotAllowed(HeaderValue),
    /// Signed in, but the route's `allow_*` rules do not admit the user.
    #[error("Access denied")]
    Forbidden,
    /// The request's `Host` / `:authority` is missing, repeated, invalid
    /// or contradictory.
    #[error(transparent)]
    BadAuthority(crate::request::authority::AuthorityError),
    /// A cookie-carrying state change from a foreign site (CSRF).
    #[error("Cross-site request refused")]
    CrossSite,
    /// A `required` route without a valid session.
    #[error("Authentication required")]
    Unauthenticated,
    /// Forward-auth for a path no route covers: nothing may pass.
    #[error("No route allows this path")]
    NotPermitted,
    /// The upstream could not be reached or broke the exchange.
    #[error("Upstream unavailable")]
    UpstreamUnavailable(#[source] crate::proxy::UpstreamError),
    /// The upstream did not answer in time.
    #[error("Upstream timed out")]
    UpstreamTimeout,
    /// As many proxied WebSockets are open as `server.max_connections`.
    #[error("Too many open WebSocket connections; try again later")]
    WebSocketsFull,
    /// The store failed while authenticating.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// An OIDC sign-in could not be started.
    #[error(transparent)]
    OAuthConnect(#[from] crate::oidc::ConnectError),
    /// A second-factor step refused (see `auth::mfa`).
    #[error(transparent)]
    Mfa(MfaError),
    /// The request target could not be rewritten for the upstream (our bug,
    /// not the client's: the target already passed parsing).
    #[error("forwarded request target: {0}")]
    UpstreamUri(#[source] http::uri::InvalidUriParts),
}

/// Each proxy failure is the API error of the same name (same status).
impl From<crate::proxy::ProxyError> for ApiError {
    fn from(e: crate::proxy::ProxyError) -> ApiError {
        use crate::proxy::ProxyError as P;
        match e {
            P::BodyRead => ApiError::BodyRead,
            P::BodyTimeout => ApiError::BodyTimeout,
            P::UpstreamUnavailable(e) => ApiError::UpstreamUnavailable(e),
            P::UpstreamTimeout => ApiError::UpstreamTimeout,
            P::UpstreamUri(e) => ApiError::UpstreamUri(e),
        }
    }
}

impl ApiError {
    /// Status and client-facing message; internal details stay in the log.
    pub(crate) fn status_and_message(&self) -> (StatusCode, String) {
        use AuthError as A;
        let internal = (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error".to_string(),
        );
        match self {
            ApiError::Auth(e) => match e {
                A::InvalidEmail
                | A::MissingField(_)
                | A::PasswordTooShort(_)
                | A::PasswordTooLong(_)
                | A::InvalidCode
                | A::ExpiredCode
                | A::AccountExists
                | A::InvalidCredentials
                | A::WrongPassword
                | A::SameEmail => (StatusCode::BAD_REQUEST, e.to_string()),
                A::SessionNotFound => (StatusCode::NOT_FOUND, e.to_string()),
                A::SendLimited { .. } | A::Throttled { .. } | A::TooManyAttempts => {
                    (StatusCode::TOO_MANY_REQUESTS, e.to_string())
                }
                A::Busy => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                A::NotAuthenticated => (StatusCode::UNAUTHORIZED, e.to_string()),
                A::Store(e) if e.is_unavailable() => unavailable(),
                A::Store(_) | A::Password(_) => internal,
            },
            ApiError::Path(e) => (StatusCode::BAD_REQUEST, capitalise(&e.to_string())),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, self.to_string()),
            ApiError::BodyRead => (StatusCode::BAD_REQUEST, self.to_string()),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, self.to_string()),
            ApiError::HeadTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                self.to_string(),
            ),
            ApiError::UnsupportedTransferCoding => (StatusCode::NOT_IMPLEMENTED, self.to_string()),
            ApiError::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, self.to_string()),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, self.to_string())
            }
            ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, self.to_string()),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, self.to_string()),
            ApiError::RouteMethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, self.to_string())
            }
            ApiError::Forbidden => (StatusCode::FORBIDDEN, self.to_string()),
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, self.to_string()),
            ApiError::CrossSite => (StatusCode::FORBIDDEN, self.to_string()),
            ApiError::BadAuthority(_) => (StatusCode::BAD_REQUEST, self.to_string()),
            ApiError::NotPermitted => (StatusCode::FORBIDDEN, self.to_string()),
            ApiError::UpstreamUnavailable(_) => (StatusCode::BAD_GATEWAY, self.to_string()),
            ApiError::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, self.to_string()),
            ApiError::Store(e) if e.is_unavailable() => unavailable(),
            ApiError::WebSocketsFull => (StatusCode::SERVICE_UNAVAILABLE, self.to_string()),
            ApiError::Store(_) | ApiError::UpstreamUri(_) => internal,
            ApiError::Mfa(e) => (mfa_status(e), e.to_string()),
            ApiError::OAuthConnect(e) => {
                use crate::oidc::ConnectError as C;
                match e {
                    C::UnknownProvider => (StatusCode::NOT_FOUND, e.to_string()),
                    C::BadCallbackUrl => (StatusCode::BAD_REQUEST, e.to_string()),
                    C::Busy => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                    C::Provider(_) => (
                        StatusCode::BAD_GATEWAY,
                        "Identity provider unavailable".to_string(),
                    ),
                    C::Store(_) => internal,
                }
            }
        }
    }

    /// What every error answer does besides its body, whichever form the
    /// answer takes (this JSON one, or a page of `http::pages`): counts it
    /// and logs a failure of ours with the internal error and a fresh
    /// request id, which the answer must carry ([`Reported::stamp`]) so the
    /// log line, the access line and the user's report meet.
    pub(crate) fn report(&self) -> Reported {
        let (status, message) = self.status_and_message();
        record_metrics(self, status);
        // Upstream failures are logged where they happen; these are ours.
        let ours = status == StatusCode::INTERNAL_SERVER_ERROR
            || matches!(
                self,
                ApiError::OAuthConnect(crate::oidc::ConnectError::Provider(_))
            )
            || (status == StatusCode::SERVICE_UNAVAILABLE
                && !matches!(
                    self,
                    ApiError::Auth(AuthError::Busy) | ApiError::WebSocketsFull
                ));
        let request_id = ours.then(|| {
            let id = crate::proxy::new_request_id();
            tracing::error!(
                error = %self,
                status = status.as_u16(),
                request_id = id.to_str().unwrap_or("-"),
                "request failed"
            );
            id
        });
        Reported {
            status,
            message,
            request_id,
        }
    }

    /// The JSON error response (`{"message": …, "msg": …}`).
    pub fn into_response(self) -> http::Response<Body> {
        let reported = self.report();
        let mut resp = json_message(reported.status, &reported.message);
        reported.stamp(&mut resp);
        let headers = resp.headers_mut();
        match &self {
            ApiError::Auth(
                AuthError::SendLimited { retry_after } | AuthError::Throttled { retry_after },
            ) => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            ApiError::Auth(AuthError::Busy) | ApiError::WebSocketsFull => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Auth(AuthError::Store(e)) | ApiError::Store(e) if e.is_unavailable() => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RouteMethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, allow.clone());
            }
            _ => {}
        }
        resp
    }
}

/// An error as answered: status, client-facing message, and the request
/// id of its log line when it was logged (see [`ApiError::report`]).
pub(crate) struct Reported {
    pub status: StatusCode,
    pub message: String,
    request_id: Option<HeaderValue>,
}

impl Reported {
    /// Gives the answer the logged request id (`X-Request-Id`); the access
    /// log keeps an id a response already has.
    pub(crate) fn stamp(&self, resp: &mut http::Response<Body>) {
        if let Some(id) = &self.request_id {
            resp.headers_mut()
                .insert(crate::proxy::X_REQUEST_ID, id.clone());
        }
    }
}

/// Counts throttled requests (every 429, whichever throttle refused it) and
/// upstream failures.
fn record_metrics(error: &ApiError, status: StatusCode) {
    let metrics = crate::metrics::get();
    if status == StatusCode::TOO_MANY_REQUESTS {
        metrics.throttled.inc();
    }
    match error {
        ApiError::UpstreamUnavailable(_) => metrics.upstream_error("unavailable"),
        ApiError::UpstreamTimeout => metrics.upstream_error("timeout"),
        ApiError::Auth(_)
        | ApiError::Path(_)
        | ApiError::BadBody(_)
        | ApiError::BodyTooLarge
        | ApiError::BodyRead
        | ApiError::BodyTimeout
        | ApiError::HeadTooLarge
        | ApiError::UnsupportedTransferCoding
        | ApiError::UnsupportedMediaType
        | ApiError::MethodNotAllowed { .. }
        | ApiError::NoRoute
        | ApiError::RouteMethodNotAllowed(_)
        | ApiError::Forbidden
        | ApiError::Unauthenticated
        | ApiError::NotPermitted
        | ApiError::CrossSite
        | ApiError::WebSocketsFull
        | ApiError::BadAuthority(_)
        | ApiError::Store(_)
        | ApiError::OAuthConnect(_)
        | ApiError::Mfa(_)
        | ApiError::UpstreamUri(_) => {}
    }
}

/// The database is out of reach: retry shortly (with `Retry-After`).
fn unavailable() -> (StatusCode, String) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "Service temporarily unavailable, try again shortly".to_string(),
    )
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl From<MfaError> for ApiError {
    fn from(e: MfaError) -> Self {
        match e {
            MfaError::Auth(a) => ApiError::Auth(a),
            other => ApiError::Mfa(other),
        }
    }
}

/// Status of a second-factor refusal (the message is its `Display`).
fn mfa_status(e: &MfaError) -> StatusCode {
    match e {
        MfaError::InvalidCode
        | MfaError::TotpNotSetUp
        | MfaError::TotpNotEnabled
        | MfaError::NoFactor
        | MfaError::MissingAnswer
        | MfaError::PasskeyRefused
        | MfaError::PasskeyNotDiscoverable
        | MfaError::TooManyPasskeys => StatusCode::BAD_REQUEST,
        MfaError::PasskeyNotFound => StatusCode::NOT_FOUND,
        MfaError::TotpAlreadyEnabled => StatusCode::CONFLICT,
        MfaError::PendingMissing => StatusCode::UNAUTHORIZED,
        // Converted to `ApiError::Auth` before it gets here.
        MfaError::Auth(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::store::StoreError;

    /// Log output collected in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `error.report()` under a subscriber; the answer and what was logged.
    fn reported(error: &ApiError) -> (Reported, String) {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let reported = tracing::subscriber::with_default(subscriber, || error.report());
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        (reported, log)
    }

    fn response() -> http::Response<Body> {
        json_message(StatusCode::OK, "x")
    }

    #[test]
    fn a_failure_of_ours_is_logged_with_the_request_id_the_answer_carries() {
        let error = ApiError::Store(StoreError::UnknownTable("secret_table".into()));
        let (reported, log) = reported(&error);
        assert_eq!(reported.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reported.message, "Internal server error");
        let mut resp = response();
        reported.stamp(&mut resp);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(id.len() >= 16, "{id}");
        assert!(log.contains("request failed"), "{log}");
        assert!(log.contains(&format!("request_id=\"{id}\"")), "{log}");
        // The internal detail is in the log, not in the answer.
        assert!(log.contains("secret_table"), "{log}");
        assert!(!reported.message.contains("secret_table"));
    }

    #[test]
    fn a_client_error_is_answered_without_a_log_line_or_an_id() {
        let (reported, log) = reported(&ApiError::Auth(AuthError::InvalidCredentials));
        assert_eq!(reported.status, StatusCode::BAD_REQUEST);
        assert_eq!(log, "");
        let mut resp = response();
        reported.stamp(&mut resp);
        assert!(resp.headers().get("x-request-id").is_none());
    }
}
