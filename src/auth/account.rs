//! Account self-service: forgotten passwords, password and email changes,
//! the caller's own sessions, account deletion, and the security notices
//! that go with them.
//!
//! Enumeration: the unauthenticated flows (forgot, reset) take the same
//! path for every address. The store keeps a decoy code for an address
//! without an account, so send windows, wrong-code counting and the answers
//! are the same; neither path hashes a password before the code is right.
//!
//! Every session that a change ends goes through [`Sessions::forget`], the
//! one place an ended session leaves the cache (and whatever else tracks
//! live sessions).

use std::time::Duration;

use super::sessions::{Identity, NewToken, new_session};
use super::throttle::{Failures, Rate};
use super::{
    Auth, AuthError, ClientInfo, SignedIn, base64url, email, otp, random_bytes, throttled,
};
use crate::store::run_blocking;
use crate::store::{
    AccountCodeCheck, CodePurpose, EmailChangeMails, MailKind, Notice, OtpMail, SendOutcome,
    TokenHash, User, session_handle,
};

/// One of the caller's sessions as `GET /api/v1/user/sessions` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The public handle (as the admin CLI shows it).
    pub id: String,
    pub created_at: u64,
    pub last_seen_at: u64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session making the request.
    pub current: bool,
}

/// A finished email change: the device mark for the new address.
pub struct EmailChangeDone {
    pub device_mark: String,
}

fn message_token() -> String {
    let mut token = [0u8; 16];
    random_bytes(&mut token);
    base64url(&token)
}

impl Auth {
    pub(super) fn notice(&self, kind: MailKind) -> Notice {
        Notice {
            kind,
            deadline: self.clock.now_millis() + self.outbox.deadline().as_millis() as u64,
            message_token: message_token(),
        }
    }

    /// Ends, in the cache and every tracker, sessions the store has deleted.
    pub(super) fn sessions_ended(&self, ended: &[TokenHash]) {
        for hash in ended {
            self.sessions.forget(hash);
        }
    }

    /// The caller's account, re-read: the session may outlive a change.
    pub(super) async fn account_of(&self, who: &Identity) -> Result<User, AuthError> {
        let store = self.store.clone();
        let key = who.email.to_string();
        run_blocking(move || store.user_by_email(&key))
            .await?
            .filter(|u| u.id == who.user_id && !u.disabled)
            .ok_or(AuthError::NotAuthenticated)
    }

    /// Checks the password that confirms a change, under the sign-in
    /// back-off: a wrong one counts as a failed sign-in.
    pub(super) async fn confirm_password(
        &self,
        user: &User,
        password: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let ip = client.ip_key.as_str();
        self.throttle
            .check_backoff(Failures::SignInPerIp, ip)
            .map_err(throttled)?;
        if !self.is_known_device(&user.email, client) {
            self.throttle
                .check_backoff(Failures::SignInPerEmail, &user.email)
                .map_err(throttled)?;
        }
        let verified = password.chars().count() <= self.password_len.1
            && self
                .passwords
                .verify(password.to_string(), Some(user.password_hash.clone()))
                .await?;
        if verified {
            return Ok(());
        }
        crate::metrics::get().sign_in(false);
        self.throttle.record_failure(Failures::SignInPerIp, ip);
        self.throttle
            .record_failure(Failures::SignInPerEmail, &user.email);
        Err(AuthError::WrongPassword)
    }

    /// `POST /api/v1/user/password/forgot`: mails a reset code if the
    /// address has an account; answers the same either way.
    pub async fn forgot_password(
        &self,
        raw_email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.throttle
            .hit(Rate::AccountMailPerIp, &client.ip_key)
            .map_err(throttled)?;
        let email = email::normalise(raw_email).ok_or(AuthError::InvalidEmail)?;
        let now = self.clock.now_millis();
        let ttl_ms = self.otp_ttl.as_millis() as u64;
        let code = otp::generate(now + ttl_ms);
        let mail = OtpMail {
            code: code.code,
            ttl_ms,
            deadline: now + self.outbox.deadline().as_millis() as u64,
            message_token: message_token(),
        };
        let (store, limit, pending) = (self.store.clone(), self.send_limit, code.pending);
        let outcome =
            run_blocking(move || store.request_password_reset(&email, now, limit, pending, mail))
                .await?;
        match outcome {
            SendOutcome::Limited { retry_after_ms } => Err(AuthError::SendLimited {
                retry_after: Duration::from_millis(retry_after_ms),
            }),
            SendOutcome::Accepted { account_exists, .. } => {
                if account_exists {
                    self.outbox.queued(false);
                }
                crate::metrics::get().account("reset_requested");
                Ok(())
            }
        }
    }

    /// `POST /api/v1/user/password/reset`: a right code sets the password,
    /// ends every session of the account and opens a new one.
    pub async fn reset_password(
        &self,
        raw_email: &str,
        code: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<SignedIn, AuthError> {
        self.throttle
            .hit(Rate::AccountCodePerIp, &client.ip_key)
            .map_err(throttled)?;
        let email = email::normalise(raw_email).ok_or(AuthError::InvalidEmail)?;
        self.check_password_policy(password)?;
        if !otp::is_well_formed(code) {
            return Err(AuthError::InvalidCode);
        }
        let (store, key, submitted, max) = (
            self.store.clone(),
            email.clone(),
            code.to_string(),
            self.max_attempts,
        );
        let now = self.clock.now_millis();
        let check = run_blocking(move || {
            store.check_account_code(CodePurpose::PasswordReset, &key, now, max, &|p| {
                otp::matches(p, &submitted)
            })
        })
        .await?;
        let valid = match check {
            AccountCodeCheck::Valid(c) => c,
            AccountCodeCheck::Missing | AccountCodeCheck::Wrong => {
                return Err(AuthError::InvalidCode);
            }
            AccountCodeCheck::Expired => return Err(AuthError::ExpiredCode),
            AccountCodeCheck::Exhausted => return Err(AuthError::TooManyAttempts),
        };
        // Only a decoy's 1-in-a-million lucky guess has no account behind it.
        let Some(user_id) = valid.user_id else {
            return Err(AuthError::InvalidCode);
        };
        let password_hash = self.passwords.hash(password.to_string()).await?;
        let token = super::sessions::Sessions::new_token();
        let session = new_session(user_id, &email, &client.origin, self.clock.now_millis());
        let notice = self.notice(MailKind::PasswordChanged);
        let (store, key, token_hash) = (self.store.clone(), email.clone(), token.hash);
        let change = run_blocking(move || {
            store.complete_password_reset(
                &key,
                &valid,
                &password_hash,
                &token_hash,
                &session,
                notice,
            )
        })
        .await?
        .ok_or(AuthError::InvalidCode)?;
        self.sessions_ended(&change.ended_sessions);
        self.outbox.queued(false);
        self.throttle
            .clear_failures(Failures::SignInPerEmail, &email);
        crate::metrics::get().account("reset_completed");
        tracing::info!(
            user_id,
            sessions_ended = change.ended_sessions.len(),
            "password reset by email code"
        );
        Ok(SignedIn {
            token,
            device_mark: self.devices.mark(&email),
        })
    }

    /// `POST /api/v1/user/password`: every other session ends and this one
    /// gets a fresh token.
    pub async fn change_password(
        &self,
        who: &Identity,
        current: &str,
        new: &str,
        client: &ClientInfo,
    ) -> Result<NewToken, AuthError> {
        let user = self.account_of(who).await?;
        self.check_password_policy(new)?;
        self.confirm_password(&user, current, client).await?;
        let new_hash = self.passwords.hash(new.to_string()).await?;
        let token = super::sessions::Sessions::new_token();
        let session = new_session(
            user.id,
            &user.email,
            &client.origin,
            self.clock.now_millis(),
        );
        let notice = self.notice(MailKind::PasswordChanged);
        let (store, old_hash, token_hash) =
            (self.store.clone(), user.password_hash.clone(), token.hash);
        let change = run_blocking(move || {
            store.change_password(user.id, &old_hash, &new_hash, &token_hash, &session, notice)
        })
        .await?
        // Another change won the race: this password is no longer current.
        .ok_or(AuthError::WrongPassword)?;
        self.sessions_ended(&change.ended_sessions);
        self.outbox.queued(false);
        crate::metrics::get().account("password_changed");
        tracing::info!(
            user_id = user.id,
            sessions_ended = change.ended_sessions.len(),
            "password changed by its owner"
        );
        Ok(token)
    }

    /// `GET /api/v1/user/sessions`: the caller's live sessions, newest first.
    pub async fn own_sessions(&self, who: &Identity) -> Result<Vec<SessionInfo>, AuthError> {
        let store = self.store.clone();
        let user_id = who.user_id;
        let stored = run_blocking(move || store.user_sessions(user_id)).await?;
        let mut out: Vec<SessionInfo> = stored
            .into_iter()
            .filter_map(|(hash, s)| {
                let last_seen = self.sessions.last_seen(&hash).unwrap_or(0).max(s.last_seen);
                if self.sessions.is_expired(&s, last_seen) {
                    return None;
                }
                Some(SessionInfo {
                    id: session_handle(&hash),
                    created_at: s.created_at,
                    last_seen_at: last_seen,
                    ip: s.ip,
                    user_agent: s.user_agent,
                    current: hash == who.token,
                })
            })
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// `DELETE /api/v1/user/sessions/{id}`: ends one of the caller's own
    /// sessions. Any other id — someone else's, unknown, malformed — is
    /// `SessionNotFound`, alike. Returns whether it was the calling session.
    pub async fn end_own_session(&self, who: &Identity, id: &str) -> Result<bool, AuthError> {
        let wanted = id.to_ascii_lowercase();
        if wanted.len() != 16 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::SessionNotFound);
        }
        let store = self.store.clone();
        let user_id = who.user_id;
        let stored = run_blocking(move || store.user_sessions(user_id)).await?;
        let matching: Vec<TokenHash> = stored
            .iter()
            .filter(|(hash, s)| {
                session_handle(hash) == wanted && s.user_id == who.user_id && {
                    let last = self.sessions.last_seen(hash).unwrap_or(0).max(s.last_seen);
                    !self.sessions.is_expired(s, last)
                }
            })
            .map(|(hash, _)| *hash)
            .collect();
        let [hash] = matching.as_slice() else {
            return Err(AuthError::SessionNotFound);
        };
        if !self.sessions.revoke(*hash).await? {
            return Err(AuthError::SessionNotFound);
        }
        tracing::info!(user_id, "session ended by its owner");
        Ok(*hash == who.token)
    }

    /// `POST /api/v1/user/email/change`: mails a code to the new address
    /// (or, if it has an account, a notice to its owner instead) and a
    /// notice to the current one.
    pub async fn request_email_change(
        &self,
        who: &Identity,
        raw_new_email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.throttle
            .hit(Rate::AccountMailPerIp, &client.ip_key)
            .map_err(throttled)?;
        let new_email = email::normalise(raw_new_email).ok_or(AuthError::InvalidEmail)?;
        let user = self.account_of(who).await?;
        self.confirm_password(&user, password, client).await?;
        if new_email == user.email {
            return Err(AuthError::SameEmail);
        }
        let now = self.clock.now_millis();
        let ttl_ms = self.otp_ttl.as_millis() as u64;
        let code = otp::generate(now + ttl_ms);
        let mails = EmailChangeMails {
            code: OtpMail {
                code: code.code,
                ttl_ms,
                deadline: now + self.outbox.deadline().as_millis() as u64,
                message_token: message_token(),
            },
            in_use: self.notice(MailKind::EmailInUse),
            old_address: self.notice(MailKind::EmailChanging {
                new_email: new_email.clone(),
            }),
        };
        let (store, limit, pending) = (self.store.clone(), self.send_limit, code.pending);
        let outcome = run_blocking(move || {
            store.request_email_change(user.id, &new_email, now, limit, pending, mails)
        })
        .await?;
        match outcome {
            SendOutcome::Limited { retry_after_ms } => Err(AuthError::SendLimited {
                retry_after: Duration::from_millis(retry_after_ms),
            }),
            SendOutcome::Accepted { .. } => {
                self.outbox.queued(false);
                self.outbox.queued(false);
                Ok(())
            }
        }
    }

    /// `POST /api/v1/user/email/verify`: a right code moves the account to
    /// the new address and ends every other session.
    pub async fn verify_email_change(
        &self,
        who: &Identity,
        code: &str,
        client: &ClientInfo,
    ) -> Result<EmailChangeDone, AuthError> {
        self.throttle
            .hit(Rate::AccountCodePerIp, &client.ip_key)
            .map_err(throttled)?;
        if !otp::is_well_formed(code) {
            return Err(AuthError::InvalidCode);
        }
        let (store, user_id, submitted, max) = (
            self.store.clone(),
            who.user_id,
            code.to_string(),
            self.max_attempts,
        );
        let now = self.clock.now_millis();
        let check = run_blocking(move || {
            store.check_account_code(
                CodePurpose::EmailChange,
                &user_id.to_string(),
                now,
                max,
                &|p| otp::matches(p, &submitted),
            )
        })
        .await?;
        let valid = match check {
            AccountCodeCheck::Valid(c) => c,
            AccountCodeCheck::Missing | AccountCodeCheck::Wrong => {
                return Err(AuthError::InvalidCode);
            }
            AccountCodeCheck::Expired => return Err(AuthError::ExpiredCode),
            AccountCodeCheck::Exhausted => return Err(AuthError::TooManyAttempts),
        };
        let (store, keep, now) = (self.store.clone(), who.token, self.clock.now_millis());
        let changed =
            run_blocking(move || store.complete_email_change(user_id, &valid, &keep, now))
                .await?
                .ok_or(AuthError::InvalidCode)?;
        self.sessions_ended(&changed.ended_sessions);
        // The calling session stays; its cached copy still names the old address.
        self.sessions.refresh(&who.token);
        self.throttle
            .clear_failures(Failures::SignInPerEmail, &changed.old_email);
        crate::metrics::get().account("email_changed");
        tracing::info!(
            user_id,
            sessions_ended = changed.ended_sessions.len(),
            "email changed by its owner"
        );
        Ok(EmailChangeDone {
            device_mark: self.devices.mark(&changed.user.email),
        })
    }

    /// `DELETE /api/v1/user`: deletes the account and everything stored
    /// about it.
    pub async fn delete_own_account(
        &self,
        who: &Identity,
        password: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let user = self.account_of(who).await?;
        self.confirm_password(&user, password, client).await?;
        let store = self.store.clone();
        let change = run_blocking(move || store.delete_account(user.id))
            .await?
            .ok_or(AuthError::NotAuthenticated)?;
        self.sessions_ended(&change.ended_sessions);
        self.sessions.forget_user(change.user.id);
        self.throttle
            .clear_failures(Failures::SignInPerEmail, &change.user.email);
        // Second factors go with the account (passkeys, sealed TOTP secret).
        let (store, user_id) = (self.store.clone(), change.user.id);
        run_blocking(move || store.mfa_delete(user_id)).await?;
        crate::metrics::get().account("account_deleted");
        tracing::info!(user_id = change.user.id, "account deleted by its owner");
        Ok(())
    }

    /// Whether the browser carries this account's device mark: it signed
    /// in to the account before. Decides the sign-in back-off per email and
    /// the new-sign-in notice.
    pub(super) fn is_known_device(&self, email: &str, client: &ClientInfo) -> bool {
        client
            .device
            .as_deref()
            .is_some_and(|mark| self.devices.is_known(email, mark))
    }

    /// Queues "New sign-in to your account". A failure is logged, not
    /// returned: the sign-in itself succeeded and is answered.
    pub(super) async fn notify_new_sign_in(&self, email: &str, client: &ClientInfo) {
        let now = self.clock.now_millis();
        let notice = self.notice(MailKind::NewSignIn {
            at: now,
            ip: client.origin.ip.clone().unwrap_or_default(),
            user_agent: client.origin.user_agent.clone(),
        });
        let (store, to) = (self.store.clone(), email.to_string());
        match run_blocking(move || store.queue_notice(&to, now, notice)).await {
            Ok(_) => self.outbox.queued(false),
            Err(e) => tracing::error!(error = %e, "new sign-in notice could not be queued"),
        }
    }
}
