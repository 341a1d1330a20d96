//! More real upstreams for tests: a test PKI (its own CA, certificates for
//! any name, or from a CA nobody trusts), an HTTP/1.1 backend that can sit
//! behind TLS and reports what it received, and a WebSocket echo server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;

/// A certificate authority for test upstreams.
pub struct Pki {
    pub ca_pem: String,
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            ca_pem,
            key,
            params,
        }
    }

    /// A TLS acceptor serving a certificate for `names`, signed by this CA,
    /// offering only `http/1.1`.
    pub fn acceptor(&self, names: &[&str]) -> tokio_rustls::TlsAcceptor {
        use rustls_pki_types::pem::PemObject;
        let issuer = rcgen::Issuer::new(self.params.clone(), &self.key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let chain =
            vec![rustls_pki_types::CertificateDer::from_pem_slice(leaf.pem().as_bytes()).unwrap()];
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes())
                .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }
}

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: http::HeaderMap,
}

type Body = BoxBody<Bytes, Infallible>;

/// An HTTP/1.1 backend, plain or TLS. `/events` is a Server-Sent Events
/// stream that never ends by itself (one event every 200 ms); anything
/// else answers `{"upstream": LABEL, "path": PATH, "host": HOST}`.
pub struct HttpBackend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<Mutex<usize>>,
    /// Event streams the backend has seen end (client or proxy went away).
    streams_ended: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpBackend {
    pub async fn start(label: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) -> HttpBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let streams_ended = Arc::new(Mutex::new(0));
        let (seen2, conns2, ended2) = (seen.clone(), connections.clone(), streams_ended.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                *conns2.lock().unwrap() += 1;
                let (seen, ended, tls) = (seen2.clone(), ended2.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc =
                        service_fn(move |req| respond(label, req, seen.clone(), ended.clone()));
                    match tls {
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(sock), svc)
                                .await;
                        }
                        Some(acceptor) => {
                            // A refused handshake (the proxy did not trust
                            // us) just ends the connection.
                            if let Ok(tls) = acceptor.accept(sock).await {
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls), svc)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        HttpBackend {
            addr,
            seen,
            connections,
            streams_ended,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Connections accepted (TCP), handshake refused or not.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    pub fn streams_ended(&self) -> usize {
        *self.streams_ended.lock().unwrap()
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts an event stream as ended when the body is dropped.
struct EndCounter(Arc<Mutex<usize>>);

impl Drop for EndCounter {
    fn drop(&mut self) {
        *self.0.lock().unwrap() += 1;
    }
}

async fn respond(
    label: &'static str,
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    ended: Arc<Mutex<usize>>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: req.headers().clone(),
    });
    if path == "/events" {
        let counter = EndCounter(ended);
        let events = futures_util::stream::unfold((0u64, counter), |(n, counter)| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let frame = Frame::data(Bytes::from(format!("data: event {n}\n\n")));
            Some((Ok::<_, Infallible>(frame), (n + 1, counter)))
        });
        let body = BodyExt::boxed(StreamBody::new(events));
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(body)
            .unwrap());
    }
    let host = req
        .headers()
        .get("host")
        .map(|h| h.to_str().unwrap().to_string())
        .unwrap_or_default();
    let _ = req.into_body().collect().await;
    let json = serde_json::json!({ "upstream": label, "path": path, "host": host });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())).boxed())
        .unwrap())
}

/// A plain or TLS connection, for servers that take either.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A WebSocket server (tokio-tungstenite): greets each client with a text
/// message `welcome`, then echoes every text and binary message back.
/// Handshakes for a path ending in `/reject` are answered 403.
pub struct WsEcho {
    pub addr: SocketAddr,
    /// The handshake request headers of every connection accepted.
    handshakes: Arc<Mutex<Vec<http::HeaderMap>>>,
    /// Connections whose socket has ended, from the server's side.
    closed: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl WsEcho {
    pub async fn start() -> WsEcho {
        WsEcho::start_with(None).await
    }

    /// The same server behind TLS (`wss://`).
    pub async fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> WsEcho {
        WsEcho::start_with(Some(acceptor)).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> WsEcho {
        use tokio_tungstenite::tungstenite::handshake::server::{
            Request as WsRequest, Response as WsResponse,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(0));
        let (hs, cl) = (handshakes.clone(), closed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (hs, cl, tls) = (hs.clone(), cl.clone(), tls.clone());
                tokio::spawn(async move {
                    let sock: Box<dyn Stream> = match tls {
                        None => Box::new(sock),
                        Some(acceptor) => match acceptor.accept(sock).await {
                            Ok(tls) => Box::new(tls),
                            Err(_) => return,
                        },
                    };
                    // The callback's error type is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let record = |req: &WsRequest, resp: WsResponse| {
                        hs.lock().unwrap().push(req.headers().clone());
                        // `…/reject` declines the upgrade, as an app that
                        // refuses a handshake does.
                        if req.uri().path().ends_with("/reject") {
                            let refusal = http::Response::builder()
                                .status(403)
                                .header("x-app", "declined")
                                .body(Some("no sockets here".to_string()))
                                .unwrap();
                            return Err(refusal);
                        }
                        Ok(resp)
                    };
                    let mut ws = match tokio_tungstenite::accept_hdr_async(sock, record).await {
                        Ok(ws) => ws,
                        Err(e) => {
                            eprintln!("ws echo: handshake refused: {e}");
                            return;
                        }
                    };
                    if ws.send(Message::text("welcome")).await.is_ok() {
                        while let Some(Ok(msg)) = ws.next().await {
                            let reply = match msg {
                                Message::Text(_) | Message::Binary(_) => msg,
                                Message::Close(_) => break,
                                _ => continue,
                            };
                            if ws.send(reply).await.is_err() {
                                break;
                            }
                        }
                    }
                    *cl.lock().unwrap() += 1;
                });
            }
        });
        WsEcho {
            addr,
            handshakes,
            closed,
            task,
        }
    }

    pub fn handshakes(&self) -> Vec<http::HeaderMap> {
        self.handshakes.lock().unwrap().clone()
    }

    pub fn closed(&self) -> usize {
        *self.closed.lock().unwrap()
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}
