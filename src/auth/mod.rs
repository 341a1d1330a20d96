//! The authentication flows — sign-up by emailed code, sign-in, logout — as
//! plain async functions over the store, password hasher, sessions and mailer.
//! HTTP lives elsewhere; this module only decides outcomes.

pub mod email;
pub mod otp;
pub mod passwords;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use crate::config::Config;
use crate::mail::{MailError, Mailer, Message};
use crate::store::{
    AccountCreation, OtpCheck, SendLimit, SendOutcome, Store, StoreError, TokenHash, now_millis,
};
use passwords::{PasswordError, Passwords};
use sessions::{NewToken, Sessions, run_blocking};

/// Rolling window for `otp.max_sends_per_day`.
const SEND_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Outcomes the client is told about, plus the internal failures behind a 5xx.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The email is missing or not an address.
    #[error("A valid email address is required")]
    InvalidEmail,
    /// A required field is absent or empty.
    #[error("Missing required field: {0}")]
    MissingField(&'static str),
    /// The password is shorter than the configured minimum.
    #[error("Password must be at least {0} characters")]
    PasswordTooShort(usize),
    /// The password is longer than the configured maximum.
    #[error("Password must be at most {0} characters")]
    PasswordTooLong(usize),
    /// send-otp was asked too often for this email.
    #[error("Too many codes requested for this email; try again later")]
    SendLimited { retry_after: Duration },
    /// Wrong, unknown or already used code.
    #[error("Invalid verification code")]
    InvalidCode,
    /// The code's lifetime is over.
    #[error("Verification code has expired; request a new one")]
    ExpiredCode,
    /// Too many wrong codes; the code is void.
    #[error("Too many incorrect attempts; request a new code")]
    TooManyAttempts,
    /// Sign-up for an email that has an account.
    #[error("An account with this email already exists")]
    AccountExists,
    /// Unknown email or wrong password: deliberately one message.
    #[error("Invalid email or password")]
    InvalidCredentials,
    /// No valid session.
    #[error("Not authenticated")]
    NotAuthenticated,
    /// The mail could not be handed to the transport.
    #[error("mail: {0}")]
    Mail(#[from] MailError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error("password hashing: {0}")]
    Password(#[from] PasswordError),
}

/// Everything the auth endpoints need, shared across connections.
pub struct Auth {
    store: Arc<dyn Store>,
    pub sessions: Sessions,
    passwords: Passwords,
    mailer: Arc<dyn Mailer>,
    otp_ttl: Duration,
    send_limit: SendLimit,
    max_attempts: u32,
    password_len: (usize, usize),
}

impl Auth {
    pub fn new(
        cfg: &Config,
        store: Arc<dyn Store>,
        mailer: Arc<dyn Mailer>,
    ) -> Result<Auth, PasswordError> {
        Ok(Auth {
            sessions: Sessions::new(store.clone(), &cfg.session, cfg.tls.is_some()),
            passwords: Passwords::new(&cfg.password)?,
            store,
            mailer,
            otp_ttl: cfg.otp.ttl,
            send_limit: SendLimit {
                max: cfg.otp.max_sends_per_day,
                window_ms: SEND_WINDOW.as_millis() as u64,
            },
            max_attempts: cfg.otp.max_attempts,
            password_len: (cfg.password.min_length, cfg.password.max_length),
        })
    }

    /// Records a sign-up request and mails a code — or, when the email has
    /// an account, a notice instead; the caller cannot tell which.
    pub async fn send_otp(&self, raw_email: &str) -> Result<(), AuthError> {
        let email = email::normalise(raw_email).ok_or(AuthError::InvalidEmail)?;
        let now = now_millis();
        let code = otp::generate(now + self.otp_ttl.as_millis() as u64);
        let store = self.store.clone();
        let limit = self.send_limit;
        let pending = code.pending;
        let key = email.clone();
        let outcome =
            run_blocking(move || store.record_otp_send(&key, now, limit, pending)).await?;
        let message = match outcome {
            SendOutcome::Limited { retry_after_ms } => {
                return Err(AuthError::SendLimited {
                    retry_after: Duration::from_millis(retry_after_ms),
                });
            }
            SendOutcome::Accepted {
                account_exists: false,
            } => Message::SignupCode {
                code: code.code,
                ttl: self.otp_ttl,
            },
            SendOutcome::Accepted {
                account_exists: true,
            } => Message::AccountExists,
        };
        self.mailer.send(&email, message).await?;
        crate::metrics::get().otp_sends.inc();
        Ok(())
    }

    /// Checks the code, creates the account and its first session.
    pub async fn verify(
        &self,
        raw_email: &str,
        code: &str,
        password: &str,
    ) -> Result<NewToken, AuthError> {
        let email = email::normalise(raw_email).ok_or(AuthError::InvalidEmail)?;
        self.check_password_policy(password)?;
        if !otp::is_well_formed(code) {
            return Err(AuthError::InvalidCode);
        }
        let store = self.store.clone();
        let (key, submitted, max) = (email.clone(), code.to_string(), self.max_attempts);
        let check = run_blocking(move || {
            store.check_otp(&key, now_millis(), max, &|p| otp::matches(p, &submitted))
        })
        .await?;
        let pending = match check {
            OtpCheck::Valid(p) => p,
            OtpCheck::Missing | OtpCheck::Wrong => return Err(AuthError::InvalidCode),
            OtpCheck::Expired => return Err(AuthError::ExpiredCode),
            OtpCheck::Exhausted => return Err(AuthError::TooManyAttempts),
        };
        let password_hash = self.passwords.hash(password.to_string()).await?;
        let token = Sessions::new_token();
        let store = self.store.clone();
        let token_hash = token.hash;
        let created = run_blocking(move || {
            store.create_account(&email, &pending, &password_hash, now_millis(), &token_hash)
        })
        .await?;
        match created {
            AccountCreation::Created(user) => {
                tracing::info!(user_id = user.id, "account created");
                crate::metrics::get().signups.inc();
                Ok(token)
            }
            AccountCreation::CodeGone => Err(AuthError::InvalidCode),
            AccountCreation::EmailTaken => Err(AuthError::AccountExists),
        }
    }

    /// Password sign-in. The previous session named by the request (if any)
    /// is ended so every sign-in gets a fresh token.
    pub async fn sign_in(
        &self,
        raw_email: &str,
        password: &str,
        previous: Option<TokenHash>,
    ) -> Result<NewToken, AuthError> {
        let email = email::normalise(raw_email).ok_or(AuthError::InvalidEmail)?;
        if password.is_empty() {
            return Err(AuthError::MissingField("password"));
        }
        // Overlong input is refused before hashing, for known and unknown
        // emails alike, so it costs nothing and reveals nothing.
        if password.chars().count() > self.password_len.1 {
            return Err(AuthError::InvalidCredentials);
        }
        let store = self.store.clone();
        let key = email.clone();
        let user = run_blocking(move || store.user_by_email(&key)).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.passwords.verify(password.to_string(), stored).await?;
        // A disabled account answers exactly like a wrong password.
        let user = match user {
            Some(u) if ok && !u.disabled => u,
            _ => {
                crate::metrics::get().sign_in(false);
                return Err(AuthError::InvalidCredentials);
            }
        };
        crate::metrics::get().sign_in(true);
        if let Some(old) = previous {
            self.sessions.revoke(old).await?;
        }
        Ok(self.sessions.create(user.id, &user.email).await?)
    }

    /// Ends the session named by the request.
    pub async fn logout(&self, token: Option<TokenHash>) -> Result<(), AuthError> {
        let token = token.ok_or(AuthError::NotAuthenticated)?;
        // Only a live session counts; an expired one is just cleaned up.
        let live = self.sessions.authenticate_hash(&token)?.is_some();
        let existed = self.sessions.revoke(token).await?;
        if live && existed {
            Ok(())
        } else {
            Err(AuthError::NotAuthenticated)
        }
    }

    /// The store, for operator commands that go around the flows.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The password hasher (operator-set passwords use the same parameters).
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    fn check_password_policy(&self, password: &str) -> Result<(), AuthError> {
        let (min, max) = self.password_len;
        if password.is_empty() {
            return Err(AuthError::MissingField("password"));
        }
        let len = password.chars().count();
        if len < min {
            return Err(AuthError::PasswordTooShort(min));
        }
        if len > max {
            return Err(AuthError::PasswordTooLong(max));
        }
        Ok(())
    }

    /// Removes expired sessions and codes, from the store and the cache.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let expiry = self.sessions.expiry();
        let counts = run_blocking(move || store.sweep(now_millis(), expiry)).await?;
        self.sessions.prune_cache();
        if counts.sessions + counts.otps > 0 {
            tracing::info!(
                sessions = counts.sessions,
                codes = counts.otps,
                "swept expired records"
            );
        }
        Ok(())
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    // Without the OS RNG no secret can be made safely: stopping is the only
    // correct answer, and it does not happen on a working Linux system.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// Unpadded base64url.
pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
