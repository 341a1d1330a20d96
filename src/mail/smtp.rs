//! The SMTP transport: one connection per message through mail-send, with
//! none / STARTTLS / implicit TLS, optional AUTH and a bounded dialogue.

use mail_send::SmtpClientBuilder;

use super::{Composer, MailError, Mailer, Message, SendFuture};
use crate::config::{SmtpConfig, SmtpSecurity};

pub struct SmtpMailer {
    cfg: SmtpConfig,
    composer: Composer,
}

impl SmtpMailer {
    pub fn new(cfg: SmtpConfig, composer: Composer) -> Result<SmtpMailer, MailError> {
        Ok(SmtpMailer { cfg, composer })
    }

    fn builder(&self) -> Result<SmtpClientBuilder<String>, MailError> {
        let mut b = SmtpClientBuilder::new(self.cfg.host.clone(), self.cfg.port)
            .map_err(MailError::TlsSetup)?
            .implicit_tls(self.cfg.security == SmtpSecurity::Tls)
            .timeout(self.cfg.timeout);
        if let (Some(user), Some(pass)) = (&self.cfg.username, &self.cfg.password) {
            b = b.credentials((user.clone(), pass.clone()));
        }
        Ok(b)
    }

    async fn deliver(&self, to: &str, message: Message) -> Result<(), MailError> {
        let body = self.composer.render(to, &message)?;
        let envelope = mail_send::smtp::message::Message::new(
            self.composer.envelope_from(),
            [to.to_string()],
            body,
        );
        let builder = self.builder()?;
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
}

impl Mailer for SmtpMailer {
    fn send<'a>(&'a self, to: &'a str, message: Message) -> SendFuture<'a> {
        Box::pin(async move {
            let result = self.deliver(to, message).await;
            match &result {
                Ok(()) => tracing::info!(host = %self.cfg.host, "mail accepted by smtp server"),
                Err(e) => tracing::warn!(host = %self.cfg.host, error = %e, "mail delivery failed"),
            }
            result
        })
    }
}
