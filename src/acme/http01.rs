//! The plain-HTTP listener of `tls.acme.http_listen`: answers HTTP-01
//! challenges under `/.well-known/acme-challenge/<token>` and sends every
//! other request to HTTPS with a 308 (method and body kept). It serves
//! nothing else: no API, no proxying, no cookies.

use crate::tasks::{accept_loop, permit};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::resolver::AcmeResolver;
use crate::http::response::{Body, json_message, with_body};

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// Connections served at once.
const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection lives at most this long (a redirect needs one request).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Where redirects point.
#[derive(Debug, Clone)]
pub struct RedirectTarget {
    /// The configured names; a request for another host is sent to the first.
    pub domains: Vec<String>,
    /// The HTTPS port; omitted from the URL when 443.
    pub https_port: u16,
}

/// Serves the listener until the task is aborted.
pub async fn serve(listener: TcpListener, resolver: Arc<AcmeResolver>, target: RedirectTarget) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let target = Arc::new(target);
    let admit = |_: &_| permit(permits.clone());
    accept_loop(&listener, "http_listen", admit, |stream, _, permit, _| {
        let (resolver, target) = (resolver.clone(), target.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let answer = answer(&resolver, &target, &req);
                async move { Ok::<_, Infallible>(answer) }
            });
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024);
            let conn = b.serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    })
    .await
}

/// The answer to one plain-HTTP request.
pub fn answer(
    resolver: &AcmeResolver,
    target: &RedirectTarget,
    req: &Request<Incoming>,
) -> Response<Body> {
    answer_parts(resolver, target, req.uri(), req.headers())
}

fn answer_parts(
    resolver: &AcmeResolver,
    target: &RedirectTarget,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> Response<Body> {
    if let Some(token) = uri.path().strip_prefix(CHALLENGE_PREFIX) {
        return match resolver.http01_answer(token) {
            Some(key_authorization) => with_body(
                StatusCode::OK,
                "application/octet-stream",
                key_authorization,
            ),
            None => json_message(StatusCode::NOT_FOUND, "No such ACME challenge"),
        };
    }
    let requested = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map(|a| a.host().to_ascii_lowercase());
    // Only the configured names: a forged Host must not turn this into an
    // open redirect.
    let host = match requested {
        Some(h) if target.domains.contains(&h) => h,
        _ => target.domains[0].clone(),
    };
    let port = match target.https_port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    let mut resp = json_message(StatusCode::PERMANENT_REDIRECT, "Use HTTPS");
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => return json_message(StatusCode::BAD_REQUEST, "Bad request target"),
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: u16) -> RedirectTarget {
        RedirectTarget {
            domains: vec!["app.example.com".into(), "www.example.com".into()],
            https_port: port,
        }
    }

    fn ask(resolver: &AcmeResolver, t: &RedirectTarget, uri: &str, host: &str) -> Response<Body> {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        answer_parts(resolver, t, &uri.parse().unwrap(), &headers)
    }

    fn location(resp: &Response<Body>) -> &str {
        resp.headers()[header::LOCATION].to_str().unwrap()
    }

    #[test]
    fn plain_requests_are_redirected_to_https_with_path_and_query() {
        let r = AcmeResolver::default();
        let resp = ask(&r, &target(443), "/api/v2/x?y=1", "www.example.com");
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(location(&resp), "https://www.example.com/api/v2/x?y=1");
        let resp = ask(&r, &target(8443), "/", "APP.example.com:80");
        assert_eq!(location(&resp), "https://app.example.com:8443/");
    }

    #[test]
    fn a_foreign_host_is_sent_to_the_first_domain_not_elsewhere() {
        let r = AcmeResolver::default();
        let resp = ask(&r, &target(443), "/login", "evil.example.net");
        assert_eq!(location(&resp), "https://app.example.com/login");
    }

    #[test]
    fn published_tokens_are_answered_and_others_are_404() {
        let r = AcmeResolver::default();
        r.publish_http01("tok123", "tok123.thumb");
        let resp = ask(&r, &target(443), "/.well-known/acme-challenge/tok123", "x");
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = ask(&r, &target(443), "/.well-known/acme-challenge/other", "x");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        r.clear_challenges();
        let resp = ask(&r, &target(443), "/.well-known/acme-challenge/tok123", "x");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
