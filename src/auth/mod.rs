//! The authentication flows — sign-up by emailed code, sign-in, logout,
//! (in `account`) account self-service, and (in `mfa`, `passkeys`) second
//! factors — as
//! plain async functions over the store, password hasher, sessions and the
//! mail outbox.
//! HTTP lives elsewhere; this module only decides outcomes.

mod account;
pub use account::SessionInfo;
pub mod devices;
pub mod email;
pub mod live;
pub mod mfa;
pub mod otp;
pub mod passkeys;
pub mod passwords;
pub mod rules;
pub mod sessions;
pub mod signup_policy;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use crate::random::{base64url, random_bytes};

use crate::clock::Clock;
use crate::config::Config;
use crate::mail::Outbox;
use crate::store::run_blocking;
use crate::store::{
    AccountCreation, OtpCheck, OtpMail, SendLimit, SendOutcome, SessionOrigin, Store, StoreError,
    TokenHash,
};
use devices::Devices;
use passwords::{PasswordError, Passwords};
use sessions::{NewToken, Sessions};
use throttle::{Failures, Rate, Throttle};

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
    /// Too many requests or failures from this client or for this account.
    #[error("Too many attempts; try again later")]
    Throttled { retry_after: Duration },
    /// Every password-hashing slot is taken and the queue is full.
    #[error("Server busy; try again shortly")]
    Busy,
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
    /// The password given to confirm an account change is wrong.
    #[error("Password is incorrect")]
    WrongPassword,
    /// An email change to the address the account already has.
    #[error("This is already your email address")]
    SameEmail,
    /// A session id that is not one of the caller's own sessions (or none).
    #[error("Session not found")]
    SessionNotFound,
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error("password hashing: {0}")]
    Password(PasswordError),
}

impl From<PasswordError> for AuthError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => AuthError::Busy,
            other => AuthError::Password(other),
        }
    }
}

/// What is known about the client making an auth request.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Throttle key of the client address (see `net::throttle_key`).
    pub ip_key: String,
    /// The known-device cookie, if the request carried one.
    pub device: Option<String>,
    /// Address and `User-Agent`, kept on sessions it opens.
    pub origin: SessionOrigin,
}

/// A successful sign-in or sign-up: the session token and the device mark.
pub struct SignedIn {
    pub token: NewToken,
    pub device_mark: String,
}

fn throttled(retry_after: Duration) -> AuthError {
    AuthError::Throttled { retry_after }
}

/// Everything the auth endpoints need, shared across connections.
pub struct Auth {
    store: Arc<dyn Store>,
    pub sessions: Sessions,
    pub throttle: Throttle,
    devices: Devices,
    passwords: Passwords,
    outbox: Arc<Outbox>,
    otp_ttl: Duration,
    send_limit: SendLimit,
    max_attempts: u32,
    password_len: (usize, usize),
    /// `[notify] new_device`.
    notify_new_device: bool,
    /// `[signup]`: who may create an account (see `signup_policy`).
    signup: Arc<crate::config::SignupConfig>,
    /// Second factors: the sealing key, the issuer, the pending cookie.
    pub mfa: mfa::MfaSettings,
    /// Every expiry decision of the flows reads this (see `crate::clock`).
    pub clock: Clock,
}

impl Auth {
    pub fn new(
        cfg: &Config,
        store: Arc<dyn Store>,
        outbox: Arc<Outbox>,
        clock: Clock,
    ) -> Result<Auth, AuthError> {
        Ok(Auth {
            sessions: Sessions::new(store.clone(), &cfg.session, cfg.tls.is_some(), clock),
            throttle: Throttle::load(cfg.limits.clone(), store.clone(), clock)?,
            devices: Devices::new(store.server_secret("known-device")?),
            passwords: Passwords::new(&cfg.password, cfg.limits.max_queued_hashes)?,
            store,
            outbox,
            otp_ttl: cfg.otp.ttl,
            send_limit: SendLimit {
                max: cfg.otp.max_sends_per_day,
                window_ms: SEND_WINDOW.as_millis() as u64,
            },
            max_attempts: cfg.otp.max_attempts,
            password_len: (cfg.password.min_length, cfg.password.max_length),
            notify_new_device: cfg.notify.new_device,
            signup: Arc::new(cfg.access.signup.clone()),
            mfa: mfa::MfaSettings::new(cfg)?,
            clock,
        })
    }

    /// Records a sign-up request and queues a code mail — or, when the email
    /// has an account, a notice instead; the caller cannot tell which. The
    /// pending code and its mail are committed together, so `Ok` means the
    /// delivery worker will send it (until the mail deadline).
    pub async fn send_otp(&self, raw_email: &str, client: &ClientInfo) -> Result<(), AuthError> {
        self.throttle
            .hit(Rate::SendOtpPerIp, &client.ip_key)
            .map_err(throttled)?;
        let email = email::normalise(raw_email).ok_or(AuthError::InvalidEmail)?;
        if !self.signup_permits(&email).await? {
            // Answered like a permitted address: nothing revealed; no code,
            // at most a polite notice (one a day per address).
            tracing::debug!("sign-up code not sent: the address is not permitted by [signup]");
            if self.signup.refusal_notice
                && self
                    .throttle
                    .hit(Rate::RefusalNoticePerEmail, &email)
                    .is_ok()
            {
                let store = self.store.clone();
                let mut token = [0u8; 16];
                random_bytes(&mut token);
                let notice = crate::store::Notice {
                    kind: crate::store::MailKind::SignupRefused,
                    deadline: self.clock.now_millis() + self.outbox.deadline().as_millis() as u64,
                    message_token: base64url(&token),
                };
                let now = self.clock.now_millis();
                run_blocking(move || store.queue_notice(&email, now, notice)).await?;
                self.outbox.queued(false);
            }
            return Ok(());
        }
        let now = self.clock.now_millis();
        let ttl_ms = self.otp_ttl.as_millis() as u64;
        let code = otp::generate(now + ttl_ms);
        let mut token = [0u8; 16];
        random_bytes(&mut token);
        let mail = OtpMail {
            code: code.code,
            ttl_ms,
            deadline: now + self.outbox.deadline().as_millis() as u64,
            message_token: base64url(&token),
        };
        let store = self.store.clone();
        let limit = self.send_limit;
        let pending = code.pending;
        let outcome =
            run_blocking(move || store.record_otp_send(&email, now, limit, pending, mail)).await?;
        match outcome {
            SendOutcome::Limited { retry_after_ms } => Err(AuthError::SendLimited {
                retry_after: Duration::from_millis(retry_after_ms),
            }),
            SendOutcome::Accepted {
                queued, superseded, ..
            } => {
                tracing::debug!(outbox_id = queued, superseded, "sign-up mail queued");
                self.outbox.queued(superseded);
                crate::metrics::get().otp_sends.inc();
                Ok(())
            }
        }
    }

    /// Whether `[signup]` lets the normalised address create an account.
    pub async fn signup_permits(&self, email: &str) -> Result<bool, StoreError> {
        // Only `invite` reads the store; the others decide on the spot.
        if self.signup.mode != crate::config::SignupMode::Invite {
            return signup_policy::permits(
                &self.signup,
                self.store.as_ref(),
                email,
                self.clock.now_millis(),
            );
        }
        let (store, policy, key) = (self.store.clone(), self.signup.clone(), email.to_string());
        let now = self.clock.now_millis();
        run_blocking(move || signup_policy::permits(&policy, store.as_ref(), &key, now)).await
    }

    /// The mail outbox (its counters are the mail metrics).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Checks the code, creates the account and its first session.
    pub async fn verify(
        &self,
        raw_email: &str,
        code: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<SignedIn, AuthError> {
        self.throttle
            .hit(Rate::VerifyPerIp, &client.ip_key)
            .map_err(throttled)?;
        let email = email::normalise(raw_email).ok_or(AuthError::InvalidEmail)?;
        self.check_password_policy(password)?;
        if !otp::is_well_formed(code) {
            return Err(AuthError::InvalidCode);
        }
        // A refused address fails like a wrong code (also when its invite
        // was revoked or expired after the code was sent).
        if !self.signup_permits(&email).await? {
            return Err(AuthError::InvalidCode);
        }
        let store = self.store.clone();
        let (key, submitted, max) = (email.clone(), code.to_string(), self.max_attempts);
        let now = self.clock.now_millis();
        let check =
            run_blocking(move || store.check_otp(&key, now, max, &|p| otp::matches(p, &submitted)))
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
        let key = email.clone();
        let origin = client.origin.clone();
        let now = self.clock.now_millis();
        let created = run_blocking(move || {
            store.create_account(&key, &pending, &password_hash, now, &token_hash, &origin)
        })
        .await?;
        match created {
            AccountCreation::Created(user) => {
                tracing::info!(user_id = user.id, "account created");
                let (store, policy, key) = (self.store.clone(), self.signup.clone(), email.clone());
                // Before answering, so the invite is gone once the client
                // hears of its account (a failure is logged, not fatal).
                let _ = run_blocking(move || {
                    signup_policy::consume_invite(&policy, store.as_ref(), &key);
                    Ok(())
                })
                .await;
                crate::metrics::get().signups.inc();
                Ok(SignedIn {
                    token,
                    device_mark: self.devices.mark(&email),
                })
            }
            AccountCreation::CodeGone => Err(AuthError::InvalidCode),
            AccountCreation::EmailTaken => Err(AuthError::AccountExists),
        }
    }

    /// Password sign-in. The previous session named by the request (if any)
    /// is ended so every sign-in gets a fresh token. A user with a second
    /// factor gets a pending sign-in instead (see [`mfa`]).
    pub async fn sign_in(
        &self,
        raw_email: &str,
        password: &str,
        previous: Option<TokenHash>,
        client: &ClientInfo,
    ) -> Result<mfa::SignInStep, AuthError> {
        let ip = client.ip_key.as_str();
        self.throttle
            .hit(Rate::SignInPerIp, ip)
            .map_err(throttled)?;
        self.throttle
            .check_backoff(Failures::SignInPerIp, ip)
            .map_err(throttled)?;
        let email = email::normalise(raw_email).ok_or(AuthError::InvalidEmail)?;
        if password.is_empty() {
            return Err(AuthError::MissingField("password"));
        }
        let known_device = self.is_known_device(&email, client);
        if !known_device {
            self.throttle
                .check_backoff(Failures::SignInPerEmail, &email)
                .map_err(throttled)?;
        }
        // Overlong input is refused before hashing, for known and unknown
        // emails alike, so it costs nothing and reveals nothing.
        let ok = if password.chars().count() > self.password_len.1 {
            None
        } else {
            let store = self.store.clone();
            let key = email.clone();
            let user = run_blocking(move || store.user_by_email(&key)).await?;
            // An account without a password (created by OIDC) is checked
            // against the decoy hash, exactly like an unknown email.
            let stored = user
                .as_ref()
                .map(|u| u.password_hash.clone())
                .filter(|h| h != crate::store::NO_PASSWORD);
            let verified = self.passwords.verify(password.to_string(), stored).await?;
            // A disabled account answers exactly like a wrong password.
            user.filter(|u| verified && !u.disabled)
        };
        let Some(user) = ok else {
            crate::metrics::get().sign_in(false);
            self.throttle.record_failure(Failures::SignInPerIp, ip);
            self.throttle
                .record_failure(Failures::SignInPerEmail, &email);
            return Err(AuthError::InvalidCredentials);
        };
        let step = self.after_password(&user, previous, client).await?;
        if let mfa::SignInStep::SecondFactor { .. } = step {
            // Failures are cleared, and the new-device notice sent, once
            // the second factor is right (`complete_second_factor`).
            return Ok(step);
        }
        crate::metrics::get().sign_in(true);
        self.throttle
            .clear_failures(Failures::SignInPerEmail, &email);
        if !known_device && self.notify_new_device {
            self.notify_new_sign_in(&user.email, client).await;
        }
        Ok(step)
    }

    /// Starts a session for an authenticated user — the one path shared by
    /// password and OIDC sign-in, so cookies, expiry and revocation are
    /// the same. The previous session named by the request is ended.
    pub async fn start_session(
        &self,
        user: &crate::store::User,
        previous: Option<TokenHash>,
        origin: &crate::store::SessionOrigin,
    ) -> Result<SignedIn, AuthError> {
        if let Some(old) = previous {
            self.sessions.revoke(old).await?;
        }
        Ok(SignedIn {
            token: self.sessions.create(user.id, &user.email, origin).await?,
            device_mark: self.devices.mark(&user.email),
        })
    }

    /// A session for a user an identity provider vouched for (OIDC), with
    /// the new-sign-in notice a password sign-in sends: from a browser
    /// without this account's device cookie, when `[notify] new_device`
    /// is on. An account the sign-in just created gets no notice.
    pub async fn start_external_session(
        &self,
        user: &crate::store::User,
        created: bool,
        previous: Option<TokenHash>,
        client: &ClientInfo,
    ) -> Result<SignedIn, AuthError> {
        let known_device = self.is_known_device(&user.email, client);
        let signed_in = self.start_session(user, previous, &client.origin).await?;
        if !created && !known_device && self.notify_new_device {
            self.notify_new_sign_in(&user.email, client).await;
        }
        Ok(signed_in)
    }

    /// Ends every session of the user signed in with `token`.
    pub async fn logout_all(&self, token: Option<TokenHash>) -> Result<usize, AuthError> {
        let token = token.ok_or(AuthError::NotAuthenticated)?;
        let who = self
            .sessions
            .authenticate_hash(&token)?
            .ok_or(AuthError::NotAuthenticated)?;
        Ok(self.sessions.revoke_user(who.user_id).await?)
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
        let now = self.clock.now_millis();
        let counts = run_blocking(move || store.sweep(now, expiry)).await?;
        let challenges = self.sweep_mfa().await?;
        if challenges > 0 {
            tracing::debug!(challenges, "swept expired second-factor challenges");
        }
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
