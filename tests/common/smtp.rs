//! A small SMTP server on tokio for tests: keeps every accepted message
//! (envelope recipients and raw data) for assertions, and can be told to
//! speak STARTTLS or implicit TLS with the test CA's certificate, require
//! AUTH PLAIN / LOGIN, answer DATA with 4xx or 5xx, and go down and come
//! back up on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone)]
pub struct Mail {
    pub rcpt: Vec<String>,
    pub data: String,
}

/// How the server protects the session.
#[derive(Clone)]
pub enum SinkTls {
    /// Offers STARTTLS and requires it before MAIL.
    StartTls(TlsAcceptor),
    /// TLS from the first byte (port 465 style).
    Implicit(TlsAcceptor),
}

/// What the server demands and answers.
#[derive(Clone, Default)]
pub struct SinkOptions {
    pub tls: Option<SinkTls>,
    /// Required AUTH credentials and the mechanisms advertised ("PLAIN LOGIN").
    pub auth: Option<(String, String, &'static str)>,
    /// Reply to DATA instead of accepting, e.g. "554 5.7.1 rejected".
    pub data_reply: Option<String>,
    /// The first this-many DATA commands get "451 try again later".
    pub temp_failures: usize,
}

#[derive(Default)]
struct State {
    mails: Mutex<Vec<Mail>>,
    connections: AtomicUsize,
    data_attempts: AtomicUsize,
    auth_failures: AtomicUsize,
    temp_failures_left: AtomicUsize,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    opts: SinkOptions,
    state: Arc<State>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        SmtpSink::start_with(SinkOptions::default()).await
    }

    pub async fn start_with(opts: SinkOptions) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(State::default());
        state
            .temp_failures_left
            .store(opts.temp_failures, Ordering::SeqCst);
        let mut sink = SmtpSink {
            addr: listener.local_addr().unwrap(),
            opts,
            state,
            task: None,
        };
        sink.serve(listener);
        sink
    }

    fn serve(&mut self, listener: TcpListener) {
        let (state, opts) = (self.state.clone(), self.opts.clone());
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let (state, opts) = (state.clone(), opts.clone());
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), accept(sock, state, opts))
                            .await;
                });
            }
        }));
    }

    /// Closes the listening socket: connections are refused until `resume`.
    /// Returns once the socket is closed (the aborted task has been dropped).
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port, keeping the mails received so far.
    pub async fn resume(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.state.mails.lock().unwrap().clone()
    }

    pub fn mails_to(&self, email: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.rcpt.iter().any(|r| r.eq_ignore_ascii_case(email)))
            .collect()
    }

    pub fn count_to(&self, email: &str) -> usize {
        self.mails_to(email).len()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// DATA commands whose message was received (accepted or refused).
    pub fn data_attempts(&self) -> usize {
        self.state.data_attempts.load(Ordering::SeqCst)
    }

    pub fn auth_failures(&self) -> usize {
        self.state.auth_failures.load(Ordering::SeqCst)
    }

    /// Waits until `email` has received `n` mails and returns the n-th.
    pub async fn wait_for_nth(&self, email: &str, n: usize) -> String {
        let found = super::eventually(Duration::from_secs(10), || {
            self.mails_to(email).get(n - 1).map(|m| m.data.clone())
        })
        .await;
        found.unwrap_or_else(|| panic!("mail #{n} to {email} did not arrive"))
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A TLS acceptor presenting the test CA's localhost certificate.
pub fn tls_acceptor(ca: &super::TestCa) -> TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&ca.cert_path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&ca.key_path).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(cfg))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn accept(
    sock: tokio::net::TcpStream,
    state: Arc<State>,
    opts: SinkOptions,
) -> std::io::Result<()> {
    match &opts.tls {
        Some(SinkTls::Implicit(acceptor)) => {
            let tls = acceptor.accept(sock).await?;
            session(Box::new(tls), true, state, opts).await
        }
        Some(SinkTls::StartTls(_)) | None => session(Box::new(sock), false, state, opts).await,
    }
}

async fn session(
    stream: Box<dyn Io>,
    mut secure: bool,
    state: Arc<State>,
    opts: SinkOptions,
) -> std::io::Result<()> {
    let mut io = BufReader::new(stream);
    let starttls = matches!(opts.tls, Some(SinkTls::StartTls(_)));
    reply(&mut io, "220 sink.test ESMTP").await?;
    let (mut rcpt, mut authed) = (Vec::new(), false);
    loop {
        let Some(line) = read_line(&mut io).await? else {
            return Ok(());
        };
        let cmd = line.to_ascii_uppercase();
        if cmd.starts_with("EHLO") {
            let mut caps = vec!["250-sink.test"];
            if starttls && !secure {
                caps.push("250-STARTTLS");
            }
            let auth_line;
            if let Some((_, _, mechs)) = &opts.auth {
                auth_line = format!("250-AUTH {mechs}");
                caps.push(&auth_line);
            }
            caps.push("250 8BITMIME");
            reply(&mut io, &caps.join("\r\n")).await?;
        } else if cmd == "STARTTLS" && starttls && !secure {
            reply(&mut io, "220 ready for TLS").await?;
            let Some(SinkTls::StartTls(acceptor)) = &opts.tls else {
                unreachable!()
            };
            let tls = acceptor.accept(io.into_inner()).await?;
            io = BufReader::new(Box::new(tls));
            secure = true;
        } else if cmd.starts_with("AUTH ") {
            let ok = check_auth(&mut io, &line, &opts).await?;
            authed = ok;
            if ok {
                reply(&mut io, "235 2.7.0 Authentication successful").await?;
            } else {
                state.auth_failures.fetch_add(1, Ordering::SeqCst);
                reply(&mut io, "535 5.7.8 Authentication credentials invalid").await?;
            }
        } else if cmd.starts_with("MAIL FROM") {
            if starttls && !secure {
                reply(&mut io, "530 5.7.0 Must issue a STARTTLS command first").await?;
            } else if opts.auth.is_some() && !authed {
                reply(&mut io, "530 5.7.0 Authentication required").await?;
            } else {
                rcpt.clear();
                reply(&mut io, "250 OK").await?;
            }
        } else if cmd.starts_with("RCPT TO") {
            let addr = line[8..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_string();
            rcpt.push(addr);
            reply(&mut io, "250 OK").await?;
        } else if cmd == "DATA" {
            reply(&mut io, "354 go ahead").await?;
            let mut data = String::new();
            loop {
                let Some(line) = read_raw_line(&mut io).await? else {
                    return Ok(());
                };
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            state.data_attempts.fetch_add(1, Ordering::SeqCst);
            let temp = state
                .temp_failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if temp {
                reply(&mut io, "451 4.3.0 try again later").await?;
            } else if let Some(r) = &opts.data_reply {
                reply(&mut io, r).await?;
            } else {
                state.mails.lock().unwrap().push(Mail {
                    rcpt: std::mem::take(&mut rcpt),
                    data,
                });
                reply(&mut io, "250 queued").await?;
            }
        } else if cmd == "RSET" || cmd == "NOOP" || cmd.starts_with("HELO") {
            reply(&mut io, "250 OK").await?;
        } else if cmd == "QUIT" {
            reply(&mut io, "221 bye").await?;
            return Ok(());
        } else {
            reply(&mut io, "502 not implemented").await?;
        }
    }
}

/// Runs an AUTH PLAIN or AUTH LOGIN exchange; whether the credentials match.
async fn check_auth(
    io: &mut BufReader<Box<dyn Io>>,
    line: &str,
    opts: &SinkOptions,
) -> std::io::Result<bool> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |s: &str| String::from_utf8(b64.decode(s.trim()).unwrap_or_default());
    let Some((user, pass, mechs)) = &opts.auth else {
        return Ok(false);
    };
    let mut parts = line.split_whitespace().skip(1);
    let mech = parts.next().unwrap_or("").to_ascii_uppercase();
    if !mechs.split_whitespace().any(|m| m == mech) {
        return Ok(false);
    }
    let given = match mech.as_str() {
        "PLAIN" => {
            let initial = match parts.next() {
                Some(i) => i.to_string(),
                None => {
                    reply(io, "334 ").await?;
                    read_line(io).await?.unwrap_or_default()
                }
            };
            let text = decode(&initial).unwrap_or_default();
            let mut fields = text.split('\0').skip(1);
            (
                fields.next().unwrap_or("").to_string(),
                fields.next().unwrap_or("").to_string(),
            )
        }
        "LOGIN" => {
            reply(io, "334 VXNlcm5hbWU6").await?;
            let u = decode(&read_line(io).await?.unwrap_or_default()).unwrap_or_default();
            reply(io, "334 UGFzc3dvcmQ6").await?;
            let p = decode(&read_line(io).await?.unwrap_or_default()).unwrap_or_default();
            (u, p)
        }
        _ => return Ok(false),
    };
    Ok(&given.0 == user && &given.1 == pass)
}

async fn reply(io: &mut BufReader<Box<dyn Io>>, text: &str) -> std::io::Result<()> {
    let w = io.get_mut();
    w.write_all(text.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

async fn read_raw_line(io: &mut BufReader<Box<dyn Io>>) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    if io.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    Ok(Some(line))
}

async fn read_line(io: &mut BufReader<Box<dyn Io>>) -> std::io::Result<Option<String>> {
    Ok(read_raw_line(io).await?.map(|l| l.trim_end().to_string()))
}
