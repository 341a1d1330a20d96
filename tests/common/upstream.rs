//! A real HTTP/1.1 upstream for tests that records every request it gets.
//! `/sse` streams three events 300 ms apart; `/slow` answers after 5 s;
//! `/close` answers and closes the connection; `/powered` adds X-Powered-By
//! and Server headers; everything else answers 200
//! with a small JSON body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub struct RecordingUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    /// One handle per accepted connection, open or not.
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, Infallible>;

impl RecordingUpstream {
    pub async fn start() -> RecordingUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (record, accepted) = (seen.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req| respond(req, record.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
                accepted.lock().unwrap().push(conn.abort_handle());
            }
        });
        RecordingUpstream {
            addr,
            seen,
            connections,
            task,
        }
    }

    /// How many connections the upstream has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.lock().unwrap().len()
    }

    /// Closes every open connection from the server side, as an upstream
    /// with a short keep-alive timeout does.
    pub fn close_connections(&self) {
        for conn in self.connections.lock().unwrap().iter() {
            conn.abort();
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops accepting connections (the port then refuses them).
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("upstream received no request")
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if target.starts_with("/api/v2/sse") || target.starts_with("/sse") {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            for i in 1..=3 {
                let event = format!("data: event {i}\n\n");
                if tx.send(Bytes::from(event)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let resp = Response::builder()
            .header("content-type", "text/event-stream")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "should be removed")
            .body(BodyExt::boxed(ChannelBody(rx)))
            .unwrap();
        return Ok(resp);
    }
    if target.contains("/slow") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let close = target.contains("/close");
    let json = serde_json::json!({
        "upstream": true,
        "path": target,
        "user": parts.headers.get("x-auth-user-id").map(|v| v.to_str().unwrap().to_string()),
    });
    let mut resp = Response::builder()
        .header("content-type", "application/json")
        .header("set-cookie", "app=1; Path=/")
        .body(BodyExt::boxed(Full::new(Bytes::from(json.to_string()))))
        .unwrap();
    if close {
        resp.headers_mut()
            .insert("connection", http::HeaderValue::from_static("close"));
    }
    // `/powered`: what an Express app behind a web server advertises.
    if target.contains("/powered") {
        let h = resp.headers_mut();
        h.insert("x-powered-by", http::HeaderValue::from_static("Express"));
        h.insert("server", http::HeaderValue::from_static("upstream/1.0"));
    }
    Ok(resp)
}

/// A response body fed by a channel, one frame per message.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}
