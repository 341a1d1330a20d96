//! The SMTP transport: one connection per message through mail-send, with
//! none / STARTTLS / implicit TLS, the server certificate checked against
//! the system roots or a configured CA file, optional AUTH, and a bound on
//! connecting and on every command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_send::SmtpClientBuilder;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_rustls::TlsConnector;

use super::templates::Rendered;
use super::{CaFileError, DeliverFuture, MailError, Transport, TransportError};
use crate::config::{PasswordSource, SmtpConfig, SmtpSecurity};

pub struct SmtpTransport {
    cfg: SmtpConfig,
    /// Built once: loading the system roots takes long enough (hundreds of
    /// milliseconds in a debug build) to matter between the outbox check
    /// and the dialogue. Holds the credentials; mail-send never prints them.
    builder: SmtpClientBuilder<String>,
    /// The AUTH user, for `describe`.
    username: Option<String>,
}

impl SmtpTransport {
    /// Reads the CA file and the password source; errors name the key.
    pub fn new(cfg: SmtpConfig) -> Result<SmtpTransport, MailError> {
        let (host, port) = (cfg.host.clone(), cfg.port);
        let builder = match (&cfg.ca_file, cfg.security) {
            (Some(path), _) => {
                SmtpClientBuilder::new_with_tls_connector(host, port, connector_for_ca(path)?)
            }
            // Plaintext never uses the connector: skip loading the system roots.
            (None, SmtpSecurity::None) => {
                let empty = client_config(rustls::RootCertStore::empty())
                    .map_err(|e| MailError::TlsSetup(e.to_string()))?;
                SmtpClientBuilder::new_with_tls_connector(host, port, empty)
            }
            (None, SmtpSecurity::StartTls | SmtpSecurity::Tls) => {
                SmtpClientBuilder::new(host, port).map_err(MailError::TlsSetup)?
            }
        };
        let mut builder = builder
            .implicit_tls(cfg.security == SmtpSecurity::Tls)
            .helo_host("gatehouse")
            .timeout(cfg.timeout);
        if let (Some(user), Some(source)) = (&cfg.username, &cfg.password) {
            builder = builder.credentials((user.clone(), read_password(source)?));
        }
        Ok(SmtpTransport {
            username: cfg.username.clone(),
            cfg,
            builder,
        })
    }

    /// One SMTP dialogue. `Ok` means the server answered 250 to DATA.
    async fn deliver(&self, mail: &Rendered) -> Result<(), TransportError> {
        let envelope = mail_send::smtp::message::Message::new(
            mail.envelope_from.as_str(),
            [mail.to.as_str()],
            mail.bytes.as_slice(),
        );
        let builder = &self.builder;
        // QUIT is a courtesy: the message is accepted once DATA got its 250,
        // so a failing QUIT must not turn a delivery into a retry.
        match self.cfg.security {
            SmtpSecurity::None => {
                let mut client = builder.connect_plain().await?;
                client.send(envelope).await?;
                let _ = client.quit().await;
            }
            SmtpSecurity::StartTls | SmtpSecurity::Tls => {
                let mut client = builder.connect().await?;
                client.send(envelope).await?;
                let _ = client.quit().await;
            }
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let security = match self.cfg.security {
            SmtpSecurity::None => "none",
            SmtpSecurity::StartTls => "starttls",
            SmtpSecurity::Tls => "tls",
        };
        let trust = match &self.cfg.ca_file {
            Some(p) => format!("CA file {}", p.display()),
            None => "system roots".to_string(),
        };
        let auth = match &self.username {
            Some(user) => format!("AUTH as {user}"),
            None => "no AUTH".to_string(),
        };
        format!(
            "smtp {}:{} (security {security}, {trust}, {auth})",
            self.cfg.host, self.cfg.port
        )
    }
}

impl Transport for SmtpTransport {
    fn deliver<'a>(&'a self, mail: &'a Rendered) -> DeliverFuture<'a> {
        Box::pin(self.deliver(mail))
    }
}

/// A TLS connector trusting only the CAs in `path` (ring provider).
fn connector_for_ca(path: &Path) -> Result<TlsConnector, MailError> {
    let trusted = || -> Result<TlsConnector, CaFileError> {
        let pem = std::fs::read(path)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert?)?;
        }
        if roots.is_empty() {
            return Err(CaFileError::Empty);
        }
        Ok(client_config(roots)?)
    };
    trusted().map_err(|source| MailError::CaFile {
        path: path.to_path_buf(),
        source,
    })
}

/// A TLS connector trusting exactly `roots`, on the ring provider.
fn client_config(roots: rustls::RootCertStore) -> Result<TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Reads the SMTP password from its configured source.
fn read_password(source: &PasswordSource) -> Result<String, MailError> {
    match source {
        PasswordSource::Inline(p) => Ok(p.clone()),
        PasswordSource::Env(var) => match std::env::var(var) {
            Ok(p) if !p.is_empty() => Ok(p),
            _ => Err(MailError::Password {
                key: "mail.smtp.password_env",
                message: format!("environment variable {var} is not set or empty"),
            }),
        },
        PasswordSource::File(path) => {
            let path = credential_path(path);
            let text = std::fs::read_to_string(&path).map_err(|e| MailError::Password {
                key: "mail.smtp.password_file",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            // Files usually end with a newline that is not part of the password.
            let password = text.trim_end_matches(['\r', '\n']).to_string();
            if password.is_empty() {
                return Err(MailError::Password {
                    key: "mail.smtp.password_file",
                    message: format!("{} is empty", path.display()),
                });
            }
            Ok(password)
        }
    }
}

/// A relative password file is looked up in systemd's credentials directory
/// (`LoadCredential=`) when there is one.
fn credential_path(path: &Path) -> PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if path.is_relative() => Path::new(&dir).join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_is_trimmed_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(
            read_password(&PasswordSource::File(p.clone())).unwrap(),
            "s3cret"
        );
        std::fs::write(&p, "\n").unwrap();
        let e = read_password(&PasswordSource::File(p)).unwrap_err();
        assert!(e.to_string().contains("mail.smtp.password_file"), "{e}");
        let e = read_password(&PasswordSource::Env("GATEHOUSE_TEST_UNSET_VAR".into()));
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("mail.smtp.password_env")
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let e = connector_for_ca(&p).err().unwrap().to_string();
        assert!(e.contains("mail.smtp.ca_file"), "{e}");
    }
}
