//! Opening a connection to an upstream: TCP (no Nagle, keep-alive probes)
//! and, for `https://` upstreams, TLS with rustls (ring) — certificate and
//! name always verified, ALPN `http/1.1` — behind one stream type.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::UpstreamError;
use crate::config::UpstreamTls;

/// TCP keep-alive probes on upstream connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why an upstream's TLS settings could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// The system trust store held no usable certificate.
    #[error("config key `{key}`: no usable CA certificate in the system trust store; set ca_file")]
    NoSystemRoots { key: String },
    /// A `ca_file` certificate is not a usable CA.
    #[error("config key `{key}`: {source}")]
    BadCa {
        key: String,
        #[source]
        source: rustls::Error,
    },
}

impl UpstreamTlsError {
    /// The configuration key to change.
    pub fn config_key(&self) -> &str {
        match self {
            UpstreamTlsError::NoSystemRoots { key } | UpstreamTlsError::BadCa { key, .. } => key,
        }
    }

    /// The message without the key (for errors that name it themselves).
    pub fn message(&self) -> String {
        match self {
            UpstreamTlsError::NoSystemRoots { .. } => {
                "no usable CA certificate in the system trust store; set ca_file".to_string()
            }
            UpstreamTlsError::BadCa { source, .. } => source.to_string(),
        }
    }
}

/// Builds an upstream's TLS client once, as start-up will (for
/// `check-config`).
pub fn check_tls(name: &str, tls: &UpstreamTls) -> Result<(), UpstreamTlsError> {
    client_config(name, tls).map(|_| ())
}

/// A connection to an upstream, plain or TLS.
pub enum UpstreamStream {
    Plain(TcpStream),
    /// Boxed: the TLS state is large and the plain case is the common one.
    Tls(Box<TlsStream<TcpStream>>),
    /// In memory: the pool's unit tests talk to a scripted upstream.
    #[cfg(test)]
    Memory(tokio::io::DuplexStream),
}

/// Everything needed to open a connection to one upstream.
pub struct Connector {
    host: String,
    port: u16,
    connect_timeout: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Test seam: connections are in-memory pipes whose other ends go to
    /// this channel (a closed channel refuses the connection).
    #[cfg(test)]
    memory: Option<tokio::sync::mpsc::UnboundedSender<tokio::io::DuplexStream>>,
}

impl Connector {
    /// `name` is the upstream's name in the configuration (for errors).
    pub fn new(
        name: &str,
        host: &str,
        port: u16,
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> Result<Connector, UpstreamTlsError> {
        // `Uri::host` keeps the brackets of an IPv6 literal; the resolver
        // wants the bare address.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = tls
            .map(|t| Ok((client_config(name, t)?, t.server_name.clone())))
            .transpose()?;
        Ok(Connector {
            host: host.to_string(),
            port,
            connect_timeout,
            tls,
            #[cfg(test)]
            memory: None,
        })
    }

    /// A connector whose connections are in-memory pipes; the upstream's
    /// ends arrive on the channel's receiver.
    #[cfg(test)]
    pub fn in_memory(
        upstream: tokio::sync::mpsc::UnboundedSender<tokio::io::DuplexStream>,
    ) -> Connector {
        Connector {
            host: "memory".into(),
            port: 0,
            connect_timeout: Duration::from_secs(5),
            tls: None,
            memory: Some(upstream),
        }
    }

    /// `host:port`, for log lines.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens a connection, TLS handshake included, within the connect
    /// timeout.
    pub async fn connect(&self) -> Result<UpstreamStream, UpstreamError> {
        #[cfg(test)]
        if let Some(upstream) = &self.memory {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            return match upstream.send(theirs) {
                Ok(()) => Ok(UpstreamStream::Memory(ours)),
                Err(_) => Err(UpstreamError::Connect {
                    addr: self.addr(),
                    source: io::ErrorKind::ConnectionRefused.into(),
                }),
            };
        }
        let opened = async {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|source| UpstreamError::Connect {
                    addr: self.addr(),
                    source,
                })?;
            let _ = stream.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            match &self.tls {
                None => Ok(UpstreamStream::Plain(stream)),
                Some((connector, name)) => connector
                    .connect(name.clone(), stream)
                    .await
                    .map(|tls| UpstreamStream::Tls(Box::new(tls)))
                    .map_err(|source| UpstreamError::Tls {
                        addr: self.addr(),
                        name: name.to_str().into_owned(),
                        hint: hint(&source),
                        source,
                    }),
            }
        };
        tokio::time::timeout(self.connect_timeout, opened)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout { addr: self.addr() })?
    }
}

/// A hint for the TLS failures an operator most often meets.
fn hint(e: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            " (the upstream's certificate is not signed by a CA in its ca_file, or in the system roots without one)"
        }
        Some(Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => " (set server_name to a name the certificate holds, or fix the certificate)",
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => " (the upstream's certificate has expired)",
        _ => "",
    }
}

/// A verifying rustls client for one upstream: its `ca_file`, or the
/// system roots; HTTP/1.1 only.
fn client_config(name: &str, tls: &UpstreamTls) -> Result<TlsConnector, UpstreamTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_certs {
        Some(certs) => {
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|source| UpstreamTlsError::BadCa {
                        key: format!("{}.ca_file", config_section(name)),
                        source,
                    })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "reading the system trust store");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(UpstreamTlsError::NoSystemRoots {
                    key: format!("{}.ca_file", config_section(name)),
                });
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// The configuration section of an upstream called `name`.
pub fn config_section(name: &str) -> String {
    if name == super::DEFAULT_UPSTREAM {
        "upstream".to_string()
    } else {
        format!("upstreams.{name}")
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(test)]
            UpstreamStream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(test)]
            UpstreamStream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(test)]
            UpstreamStream::Memory(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
            #[cfg(test)]
            UpstreamStream::Memory(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(test)]
            UpstreamStream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(test)]
            UpstreamStream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
