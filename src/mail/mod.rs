//! Outgoing mail. send-otp commits its message to the durable outbox in the
//! store; the delivery worker ([`outbox`]) renders it ([`templates`]) and
//! hands it to the configured transport: `smtp` (mail-send), `file` (`.eml`
//! files) or `log` (development only). `check` is `gatehouse check-mail`.

pub mod check;
pub mod outbox;
mod smtp;
pub mod templates;
mod transports;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{MailConfig, MailTransport};
use crate::store::Store;

pub use outbox::{Outbox, Worker};
pub use templates::{Composer, Rendered};

/// Why mail could not be set up (at start-up, naming the config key).
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A template file named in the config could not be read.
    #[error("config key `{key}`: cannot read {path}: {source}")]
    TemplateRead {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A template is unusable (unknown placeholder, no code, ...).
    #[error("config key `{key}`: {message}")]
    Template { key: &'static str, message: String },
    /// The SMTP CA file could not be used.
    #[error("config key `mail.smtp.ca_file`: {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: CaFileError,
    },
    /// The SMTP password could not be read from its source.
    #[error("config key `{key}`: {message}")]
    Password { key: &'static str, message: String },
    /// The `file` transport's directory could not be created.
    #[error("config key `mail.dir`: cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// mail-send could not build its TLS client (system roots).
    #[error("config key `mail.smtp`: TLS client setup: {0}")]
    TlsSetup(String),
    /// A message could not be rendered.
    #[error("rendering the message: {0}")]
    Render(#[source] std::io::Error),
}

/// Why the SMTP CA file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// A PEM block is malformed.
    #[error("not PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    /// A certificate was refused as a trust anchor, or the TLS client could
    /// not be built from the anchors.
    #[error("unusable certificate: {0}")]
    Certificate(#[from] rustls::Error),
    /// The file holds no certificate at all.
    #[error("holds no PEM certificate")]
    Empty,
}

impl MailError {
    /// The configuration key an operator has to change.
    pub fn config_key(&self) -> &'static str {
        match self {
            MailError::TemplateRead { key, .. }
            | MailError::Template { key, .. }
            | MailError::Password { key, .. } => key,
            MailError::CaFile { .. } => "mail.smtp.ca_file",
            MailError::Dir { .. } => "mail.dir",
            MailError::TlsSetup(_) => "mail.smtp",
            MailError::Render(_) => "mail.templates",
        }
    }
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The SMTP dialogue failed (connect, TLS, auth, or a refused command).
    #[error("smtp: {0}")]
    Smtp(#[from] mail_send::Error),
    /// The `.eml` file could not be written.
    #[error("writing the mail file: {0}")]
    File(#[source] std::io::Error),
}

impl TransportError {
    /// Whether retrying cannot help: a 5xx reply, or a TLS / AUTH /
    /// configuration problem. Connection trouble, timeouts and 4xx replies
    /// are temporary.
    pub fn is_permanent(&self) -> bool {
        use mail_send::Error as E;
        match self {
            TransportError::Smtp(e) => match e {
                E::UnexpectedReply(reply) | E::AuthenticationFailed(reply) => reply.code >= 500,
                E::Io(_) | E::Timeout | E::UnparseableReply => false,
                E::Tls(_)
                | E::Base64(_)
                | E::Auth(_)
                | E::InvalidTLSName
                | E::MissingCredentials
                | E::MissingMailFrom
                | E::MissingRcptTo
                | E::UnsupportedAuthMechanism
                | E::MissingStartTls => true,
            },
            TransportError::File(_) => false,
        }
    }
}

pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send + 'a>>;

/// A way of delivering a rendered message. `Ok` means the message was
/// accepted (for SMTP: the server answered 250 to DATA).
pub trait Transport: Send + Sync + 'static {
    fn deliver<'a>(&'a self, mail: &'a Rendered) -> DeliverFuture<'a>;

    /// Whether `deliver` only prints the message (the `log` transport),
    /// which then says so itself: no second "sent" line follows.
    fn prints_instead_of_sending(&self) -> bool {
        false
    }
}

/// Builds the transport named in the configuration, with a line for the
/// operator describing it.
pub fn transport(cfg: &MailConfig) -> Result<(Arc<dyn Transport>, String), MailError> {
    Ok(match &cfg.transport {
        MailTransport::Log => {
            tracing::warn!(
                "mail transport is `log`: sign-up codes are written to this log. \
                 This is a DEVELOPMENT transport; use `smtp` in production"
            );
            (Arc::new(transports::LogTransport), "log".to_string())
        }
        MailTransport::File(dir) => {
            let t =
                transports::FileTransport::new(dir.clone()).map_err(|source| MailError::Dir {
                    path: dir.clone(),
                    source,
                })?;
            (Arc::new(t), format!("file {}", dir.display()))
        }
        MailTransport::Smtp(smtp) => {
            let t = smtp::SmtpTransport::new(smtp.clone())?;
            let description = t.describe();
            (Arc::new(t), description)
        }
    })
}

/// What [`start`] checks, without starting anything (for `gatehouse
/// check-config`): templates readable and usable, the transport buildable
/// (SMTP password source and CA file read, the `file` directory created).
/// Returns the transport's description.
pub fn check_setup(cfg: &MailConfig) -> Result<String, MailError> {
    Composer::from_config(cfg)?;
    let (_, description) = transport(cfg)?;
    Ok(description)
}

/// Sets up mail for the server: checks templates and the transport, and
/// starts the delivery worker on the store's outbox. Call inside the runtime.
pub fn start(
    cfg: &MailConfig,
    store: Arc<dyn Store>,
    clock: crate::clock::Clock,
) -> Result<(Arc<Outbox>, Worker), MailError> {
    let composer = Composer::from_config(cfg)?;
    let (transport, description) = transport(cfg)?;
    tracing::info!(transport = %description, "mail delivery worker starting");
    let outbox = Arc::new(Outbox::new(cfg.deadline));
    let worker = outbox::spawn_worker(outbox.clone(), store, transport, composer, cfg, clock);
    Ok((outbox, worker))
}
