//! Outgoing mail: what Gatehouse says (sign-up code, "you already have an
//! account"), rendered as a plain-text message, and the transports that carry
//! it — `smtp` (mail-send) and `log` (development only).

mod smtp;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mail_send::mail_builder::MessageBuilder;

use crate::config::{MailConfig, MailTransport};

/// Why a message was not accepted for delivery.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The SMTP dialogue failed (connect, TLS, auth, or a rejected command).
    #[error("smtp: {0}")]
    Smtp(#[from] mail_send::Error),
    /// The message could not be rendered.
    #[error("rendering the message: {0}")]
    Render(#[from] std::io::Error),
    /// The TLS client for SMTP could not be configured.
    #[error("smtp tls setup: {0}")]
    TlsSetup(String),
}

/// What Gatehouse has to tell a mailbox.
#[derive(Debug, Clone)]
pub enum Message {
    /// The sign-up code and how long it is valid.
    SignupCode { code: String, ttl: Duration },
    /// Someone asked to sign up with an email that has an account already.
    AccountExists,
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), MailError>> + Send + 'a>>;

/// A way of delivering a rendered message.
pub trait Mailer: Send + Sync + 'static {
    fn send<'a>(&'a self, to: &'a str, message: Message) -> SendFuture<'a>;
}

/// Builds the transport named in the configuration.
pub fn from_config(cfg: &MailConfig) -> Result<Box<dyn Mailer>, MailError> {
    let composer = Composer {
        from: cfg.from.clone(),
        product: cfg.product_name.clone(),
    };
    Ok(match &cfg.transport {
        MailTransport::Log => {
            tracing::warn!(
                "mail transport is `log`: sign-up codes are written to this log. \
                 This is a DEVELOPMENT transport; use `smtp` in production"
            );
            Box::new(LogMailer { composer })
        }
        MailTransport::Smtp(smtp) => Box::new(smtp::SmtpMailer::new(smtp.clone(), composer)?),
    })
}

/// Renders messages with the configured sender and product name.
#[derive(Debug, Clone)]
pub struct Composer {
    from: String,
    product: String,
}

impl Composer {
    fn subject_and_body(&self, message: &Message) -> (String, String) {
        let product = &self.product;
        match message {
            Message::SignupCode { code, ttl } => (
                format!("Your {product} sign-up code"),
                format!(
                    "Your {product} verification code is:\n\n    {code}\n\n\
                     It is valid for {}. If you did not try to sign up for {product}, \
                     you can ignore this message.\n",
                    human_duration(*ttl)
                ),
            ),
            Message::AccountExists => (
                format!("Your {product} account"),
                format!(
                    "Someone asked to sign up for {product} with this email address, \
                     but an account with this address already exists.\n\n\
                     If that was you, sign in with your password instead. \
                     If it was not you, you can ignore this message.\n"
                ),
            ),
        }
    }

    /// The full RFC 5322 message (headers included) for `to`.
    pub fn render(&self, to: &str, message: &Message) -> Result<Vec<u8>, MailError> {
        let (subject, body) = self.subject_and_body(message);
        let from = parse_mailbox(&self.from);
        Ok(MessageBuilder::new()
            .from(from)
            .to(to)
            .subject(subject)
            .text_body(body)
            .write_to_vec()?)
    }

    /// The bare address of the sender, for the SMTP envelope.
    pub fn envelope_from(&self) -> String {
        parse_mailbox(&self.from).1.to_string()
    }
}

/// Splits `Name <addr>` into its parts; a bare address has an empty name.
fn parse_mailbox(text: &str) -> (&str, &str) {
    match (text.find('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => (
            text[..open].trim().trim_matches('"'),
            text[open + 1..close].trim(),
        ),
        _ => ("", text.trim()),
    }
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Development transport: writes the whole message, code included, to the log.
struct LogMailer {
    composer: Composer,
}

impl Mailer for LogMailer {
    fn send<'a>(&'a self, to: &'a str, message: Message) -> SendFuture<'a> {
        Box::pin(async move {
            let (subject, body) = self.composer.subject_and_body(&message);
            tracing::warn!(
                transport = "log (DEVELOPMENT ONLY)",
                %to,
                %subject,
                "mail not sent; contents follow:\n{body}"
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn composer() -> Composer {
        Composer {
            from: "Flowtask <no-reply@example.com>".into(),
            product: "Flowtask".into(),
        }
    }

    #[test]
    fn code_mail_has_headers_code_and_lifetime_but_code_not_in_subject() {
        let msg = Message::SignupCode {
            code: "123456".into(),
            ttl: Duration::from_secs(300),
        };
        let text = String::from_utf8(composer().render("a@x.io", &msg).unwrap()).unwrap();
        assert!(
            text.contains("From: \"Flowtask\" <no-reply@example.com>"),
            "{text}"
        );
        assert!(text.contains("To: <a@x.io>"), "{text}");
        assert!(text.contains("Date: "), "{text}");
        assert!(text.contains("Message-ID: "), "{text}");
        assert!(text.contains("123456"));
        assert!(text.contains("5 minutes"));
        let subject = text.lines().find(|l| l.starts_with("Subject:")).unwrap();
        assert!(!subject.contains("123456"));
    }

    #[test]
    fn mailbox_parsing() {
        assert_eq!(parse_mailbox("Flowtask <a@b.c>"), ("Flowtask", "a@b.c"));
        assert_eq!(parse_mailbox("a@b.c"), ("", "a@b.c"));
        assert_eq!(composer().envelope_from(), "no-reply@example.com");
    }
}
