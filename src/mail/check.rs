//! `gatehouse check-mail`: renders a test message and sends it through the
//! configured transport right away (no outbox), reporting how the dialogue
//! ended, so an operator can verify host, TLS, CA file and AUTH before
//! users depend on them.

use super::templates::Content;
use super::{Composer, MailError, TransportError};
use crate::config::MailConfig;

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The mail configuration cannot be used at all.
    #[error(transparent)]
    Setup(#[from] MailError),
    /// The transport refused or failed.
    #[error("{error} ({kind})")]
    Delivery {
        error: TransportError,
        kind: &'static str,
    },
}

/// Sends the test message to `to` (default: the sender's own address) and
/// returns a line describing the success.
pub async fn check(cfg: &MailConfig, to: Option<&str>) -> Result<String, CheckError> {
    let composer = Composer::from_config(cfg)?;
    let (transport, description) = super::transport(cfg)?;
    let sender = super::templates::parse_mailbox(&cfg.from).1.to_string();
    let to = to.map_or(sender, str::to_string);
    let mut token = [0u8; 12];
    crate::random::random_bytes(&mut token);
    let token = format!("check.{}", crate::random::base64url(&token));
    let mail = composer.render(&to, &token, &Content::Test)?;
    match transport.deliver(&mail).await {
        Ok(()) => Ok(format!(
            "test message <{}> to {to} accepted by {description}",
            mail.message_id
        )),
        Err(error) => {
            let kind = if error.is_permanent() {
                "permanent: queued mail would not be retried"
            } else {
                "temporary: queued mail would be retried until its deadline"
            };
            Err(CheckError::Delivery { error, kind })
        }
    }
}
