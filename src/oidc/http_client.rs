//! The small HTTPS client Gatehouse uses to talk to an OpenID provider
//! (discovery, JWKS, token exchange): one request per connection over hyper
//! and rustls (ring), trusting the provider's `ca_file` or the system roots,
//! bounded in time and response size. Plugged into `openidconnect` as its
//! async HTTP client.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// Whole exchange (connect, TLS, request, response body).
const TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery documents and key sets are small; a token response too.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a request to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// Only https:// URLs are fetched.
    #[error("refusing a non-https URL: {0}")]
    NotHttps(String),
    /// The URL has no usable host.
    #[error("URL without a usable host: {0}")]
    BadUrl(String),
    /// TCP connection failed.
    #[error("connecting to {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// TLS handshake failed (certificate not trusted, …).
    #[error("TLS with {host}: {source}")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// The response body was larger than allowed or could not be read.
    #[error("response body unreadable or larger than {MAX_RESPONSE_BYTES} bytes")]
    Body,
    /// The exchange took longer than the limit.
    #[error("no complete answer within {TIMEOUT:?}")]
    Timeout,
}

/// `openidconnect` sends its requests through this client.
impl<'c> openidconnect::AsyncHttpClient<'c> for HttpClient {
    type Error = HttpClientError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<http::Response<Vec<u8>>, HttpClientError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: http::Request<Vec<u8>>) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// Why the trust for a provider could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read CA file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {0} holds no certificate")]
    Empty(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client bound to one trust configuration.
#[derive(Clone)]
pub struct HttpClient {
    tls: TlsConnector,
}

impl HttpClient {
    /// Trusts exactly the CAs in `ca_file`, or the system roots without one.
    pub fn new(ca_file: Option<&Path>) -> Result<HttpClient, TrustError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs: Result<Vec<CertificateDer<'static>>, _> =
                    CertificateDer::pem_file_iter(path)
                        .and_then(|iter| iter.collect())
                        .map_err(|source| TrustError::Read {
                            path: path.display().to_string(),
                            source,
                        });
                for cert in certs? {
                    roots.add(cert)?;
                }
                if roots.is_empty() {
                    return Err(TrustError::Empty(path.display().to_string()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for error in &found.errors {
                    tracing::warn!(%error, "system CA certificate not loaded");
                }
                roots.add_parsable_certificates(found.certs);
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpClient {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Sends one request and reads the whole (bounded) response.
    pub async fn send(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpClientError> {
        tokio::time::timeout(TIMEOUT, self.exchange(req))
            .await
            .map_err(|_| HttpClientError::Timeout)?
    }

    async fn exchange(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpClientError> {
        let uri = req.uri().clone();
        if uri.scheme_str() != Some("https") {
            return Err(HttpClientError::NotHttps(uri.to_string()));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| HttpClientError::BadUrl(uri.to_string()))?
            .clone();
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let port = authority.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| HttpClientError::BadUrl(uri.to_string()))?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|source| HttpClientError::Connect {
                host: host.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls =
            self.tls
                .connect(server_name, tcp)
                .await
                .map_err(|source| HttpClientError::Tls {
                    host: host.clone(),
                    source,
                })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "identity provider connection ended");
            }
        });
        let (mut parts, body) = req.into_parts();
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        parts.uri = path.parse().map_err(http::Error::from)?;
        parts.version = http::Version::HTTP_11;
        parts.headers.insert(
            header::HOST,
            HeaderValue::from_str(authority.as_str()).map_err(http::Error::from)?,
        );
        let outgoing = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let result = async {
            let resp = sender.send_request(outgoing).await?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|_| HttpClientError::Body)?
                .to_bytes();
            Ok(http::Response::from_parts(parts, bytes.to_vec()))
        }
        .await;
        driver.abort();
        result
    }
}
