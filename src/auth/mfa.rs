//! Second factors: TOTP (RFC 6238 through `totp-rs`), recovery codes, and
//! the pending sign-in that waits for one of them.
//!
//! - The TOTP secret is sealed with ChaCha20-Poly1305 (ring) under a key
//!   kept outside the store ([`MfaKey`]: `[mfa] key_file`, or `mfa.key` in
//!   the data directory, mode 0600), with the user id as associated data,
//!   so a leaked store alone does not reveal it and a sealed secret cannot
//!   be moved to another account.
//! - A code is accepted once: the accepted time step is stored and codes of
//!   that step or earlier are refused; the check and the write are one
//!   store transaction ([`crate::store::MfaStore::mfa_update`]).
//! - Recovery codes are 50-bit random codes stored as SHA-256 hashes and
//!   removed when used.
//! - A password sign-in of a user with a factor ends in a pending sign-in:
//!   a random token in a short-lived `__Host-` cookie (5 minutes, taken
//!   once when it completes, void after [`MAX_PENDING_ATTEMPTS`] wrong
//!   codes). [`Auth::complete_second_factor`] is the one function that
//!   turns it into a session, for the JSON endpoint and any page handler.
//!   Wrong codes count toward the sign-in back-off (per client address
//!   and per account).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sessions::{NewToken, find_cookie, hash_token};
use super::throttle::{Failures, Rate};
use super::{Auth, AuthError, ClientInfo, SignedIn, base64url, random_bytes, throttled};
use crate::config::Config;
use crate::store::run_blocking;
use crate::store::{
    ChallengePurpose, MailKind, MfaChallenge, MfaEvent, MfaRecord, StoreError, TotpFactor, User,
};

/// How long a pending sign-in (and its cookie) lives.
pub const PENDING_TTL: Duration = Duration::from_secs(300);
/// Wrong codes one pending sign-in survives.
pub const MAX_PENDING_ATTEMPTS: u32 = 5;
/// Unexpired challenges kept at most (a flood of sign-ins cannot fill the disk).
const MAX_CHALLENGES: u64 = 100_000;
/// Recovery codes per set.
pub const RECOVERY_CODES: usize = 10;
/// Bytes of a TOTP secret (160 bits, as RFC 4226 recommends).
const SECRET_LEN: usize = 20;
/// The methods a pending sign-in can be completed with (as the contract
/// states them; the same for every user, so the answer reveals nothing).
pub const METHODS: [&str; 3] = ["totp", "passkey", "recovery"];

/// Second-factor failures the client is told about.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// A flow error shared with the other endpoints (throttled, store…).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Wrong, replayed or malformed TOTP or recovery code.
    #[error("Invalid authentication code")]
    InvalidCode,
    /// No pending sign-in: the cookie is missing, used, expired or void.
    #[error("The sign-in step has expired or was already used; sign in again")]
    PendingMissing,
    /// `totp/enable` without a `totp/setup` first.
    #[error("Set up TOTP first")]
    TotpNotSetUp,
    /// `totp/setup` while TOTP is on.
    #[error("TOTP is already enabled; disable it first")]
    TotpAlreadyEnabled,
    /// `totp/disable` while TOTP is off.
    #[error("TOTP is not enabled")]
    TotpNotEnabled,
    /// `recovery-codes` for an account without a second factor.
    #[error("Enable a second factor first")]
    NoFactor,
    /// A pending request neither carries `code` nor `recoveryCode`.
    #[error("Missing required field: code or recoveryCode")]
    MissingAnswer,
    /// A passkey ceremony failed (the reason is logged, not told).
    #[error("Passkey verification failed")]
    PasskeyRefused,
    /// `register/finish` with a credential the browser reports as not
    /// discoverable (`credProps.rk` false): sign-in could never find it.
    #[error(
        "This authenticator did not save the passkey on the device (not discoverable), so it could not be used to sign in; use an authenticator that supports passkeys"
    )]
    PasskeyNotDiscoverable,
    /// A passkey id that is not one of the caller's.
    #[error("Passkey not found")]
    PasskeyNotFound,
    /// The account has as many passkeys as allowed.
    #[error("Too many passkeys; delete one first")]
    TooManyPasskeys,
}

impl From<StoreError> for MfaError {
    fn from(e: StoreError) -> Self {
        MfaError::Auth(AuthError::Store(e))
    }
}

/// The key that seals TOTP secrets. Never logged.
pub struct MfaKey(LessSafeKey);

impl std::fmt::Debug for MfaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaKey(<redacted>)")
    }
}

impl MfaKey {
    /// Reads the key file, creating the default one (mode 0600) when it does
    /// not exist yet. A configured `key_file` must exist: it is usually a
    /// systemd credential or a key shared by several instances.
    pub fn load(cfg: &Config) -> Result<MfaKey, StoreError> {
        let (path, create) = match &cfg.mfa.key_file {
            Some(p) => (p.clone(), false),
            None => (cfg.store.data_dir().join("mfa.key"), true),
        };
        if create && !path.exists() {
            write_new_key(&path)?;
            tracing::info!(path = %path.display(), "created the key that seals TOTP secrets");
            if matches!(cfg.store.backend, crate::config::StoreBackend::Postgres(_)) {
                tracing::warn!(
                    path = %path.display(),
                    "[mfa] key_file is not set but the store is PostgreSQL: every instance needs the same key, or TOTP enrolled on one instance cannot be checked on another"
                );
            }
        }
        let file_err = |source| StoreError::File {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read(&path).map_err(file_err)?;
        warn_if_readable_by_others(&path);
        let bytes = parse_key(&text).ok_or_else(|| {
            StoreError::Setup(format!(
                "{}: the MFA key must be 32 bytes, as 64 hex digits (or raw)",
                path.display()
            ))
        })?;
        Ok(MfaKey::from_bytes(&bytes))
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> MfaKey {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte ChaCha20 key");
        MfaKey(LessSafeKey::new(key))
    }

    /// Nonce || ciphertext || tag, bound to `user_id`.
    pub fn seal(&self, user_id: u64, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce);
        let mut sealed = secret.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(user_id.to_be_bytes()),
                &mut sealed,
            )
            .expect("sealing a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// The secret, or `None` when the key or the user does not match.
    pub fn open(&self, user_id: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(user_id.to_be_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

fn write_new_key(path: &Path) -> Result<(), StoreError> {
    use std::io::Write;
    let file_err = |source| StoreError::File {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file_err)?;
    }
    let mut key = [0u8; 32];
    random_bytes(&mut key);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(file_err)?;
    file.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_err)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the MFA key file is readable by other users; chmod 600 it"
            );
        }
    }
}

/// 64 hex digits (surrounding whitespace ignored), or exactly 32 raw bytes.
fn parse_key(text: &[u8]) -> Option<[u8; 32]> {
    let trimmed = std::str::from_utf8(text).ok().map(str::trim);
    if let Some(hex) = trimmed.filter(|t| t.len() == 64) {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        return Some(out);
    }
    text.try_into().ok()
}

/// What the second-factor code needs, made once at start-up.
pub struct MfaSettings {
    key: Arc<MfaKey>,
    issuer: String,
    pending_cookie_name: String,
    secure: bool,
    rp_id: Option<String>,
    rp_origins: Vec<String>,
}

impl MfaSettings {
    pub fn new(cfg: &Config) -> Result<MfaSettings, StoreError> {
        let secure = cfg.tls.is_some();
        let base = format!("{}_mfa", cfg.session.cookie_name);
        if cfg.mfa.rp_id.is_none() {
            tracing::warn!(
                "[mfa] rp_id is not set: passkeys take the RP ID and origin from each request's Host; set rp_id and rp_origins to pin them"
            );
        }
        Ok(MfaSettings {
            key: Arc::new(MfaKey::load(cfg)?),
            issuer: cfg.mfa.issuer.clone(),
            pending_cookie_name: if secure {
                format!("__Host-{base}")
            } else {
                base
            },
            secure,
            rp_id: cfg.mfa.rp_id.clone(),
            rp_origins: cfg.mfa.rp_origins.clone(),
        })
    }

    /// The WebAuthn relying party for a request sent to `authority`
    /// (`host[:port]`): the configured RP ID and origins, or the request's.
    pub fn relying_party(&self, authority: Option<&str>, tls: bool) -> Option<RelyingParty> {
        let scheme = if tls { "https" } else { "http" };
        let own = authority.map(|a| a.to_ascii_lowercase());
        let rp_id = match &self.rp_id {
            Some(id) => id.clone(),
            None => {
                let a = own.as_deref()?;
                if a.starts_with('[') {
                    return None;
                }
                a.rsplit_once(':').map_or(a, |(host, _)| host).to_string()
            }
        };
        let origins = if self.rp_origins.is_empty() {
            vec![format!("{scheme}://{}", own?)]
        } else {
            self.rp_origins.clone()
        };
        Some(RelyingParty { rp_id, origins })
    }

    /// The pending sign-in token the request carries.
    pub fn pending_token<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        find_cookie(headers, &self.pending_cookie_name).filter(|v| v.len() <= 64)
    }

    /// `Set-Cookie` for a new pending sign-in.
    pub fn set_pending_cookie(&self, token: &str) -> String {
        self.cookie(token.to_string(), PENDING_TTL.as_secs() as i64)
    }

    /// `Set-Cookie` that removes the pending cookie.
    pub fn clear_pending_cookie(&self) -> String {
        self.cookie(String::new(), 0)
    }

    fn cookie(&self, value: String, max_age: i64) -> String {
        cookie::Cookie::build((self.pending_cookie_name.clone(), value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            // Only ever sent by this site's own pages: no cross-site form
            // can complete someone's sign-in.
            .same_site(cookie::SameSite::Strict)
            .max_age(cookie::time::Duration::seconds(max_age))
            .build()
            .to_string()
    }
}

/// Where a ceremony runs: the RP ID and the origins its responses may come
/// from (see `auth::passkeys`).
#[derive(Debug, Clone)]
pub struct RelyingParty {
    pub rp_id: String,
    pub origins: Vec<String>,
}

/// What a correct password leads to.
pub enum SignInStep {
    /// No second factor: signed in.
    Done(SignedIn),
    /// A second factor is required; the token goes in the pending cookie.
    SecondFactor { pending_token: String },
}

/// Which answers a pending sign-in's user can give: what the page for the
/// second step offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingFactors {
    /// TOTP is enrolled (and so recovery codes may be used).
    pub totp: bool,
    /// At least one passkey is registered.
    pub passkey: bool,
}

/// The answer to a pending sign-in.
#[derive(Debug, Clone, Copy)]
pub enum SecondFactor<'a> {
    /// A TOTP code.
    Code(&'a str),
    /// One of the recovery codes.
    RecoveryCode(&'a str),
}

/// A fresh TOTP secret: base32 for manual entry and the `otpauth://` URL.
pub struct TotpSetup {
    pub secret: String,
    pub otpauth_url: String,
}

/// Codes of a freshly enabled factor (shown once) and, when other sessions
/// were ended, the caller's new session.
pub struct Enabled {
    pub recovery_codes: Vec<String>,
    pub token: NewToken,
}

fn totp_for(secret: &[u8], account: &str, issuer: &str) -> Option<totp_rs::Totp> {
    // RFC 6238 defaults: SHA-1, 6 digits, 30 s; one step of skew each way.
    let builder = || {
        totp_rs::Builder::new()
            .with_secret(secret.to_vec())
            .with_skew(1)
            .with_issuer(Some(issuer))
    };
    builder()
        .with_account_name(account)
        .build()
        .or_else(|_| {
            builder()
                .with_account_name(account.replace(':', ""))
                .build()
        })
        .ok()
}

/// `xxxxx-xxxxx` from Crockford's base32 alphabet (no i, l, o, u): 50 bits.
fn new_recovery_code() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut raw = [0u8; 10];
    random_bytes(&mut raw);
    let mut code = String::with_capacity(11);
    for (i, b) in raw.iter().enumerate() {
        if i == 5 {
            code.push('-');
        }
        code.push(ALPHABET[(b & 31) as usize] as char);
    }
    code
}

/// Case, spaces and dashes do not matter when a code is typed.
fn recovery_hash(code: &str) -> [u8; 32] {
    let normal: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    Sha256::digest(normal.as_bytes()).into()
}

fn new_recovery_set() -> (Vec<String>, Vec<[u8; 32]>) {
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let hashes = codes.iter().map(|c| recovery_hash(c)).collect();
    (codes, hashes)
}

fn is_totp_shaped(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

impl Auth {
    /// The user's second factors (the default record when none).
    pub async fn factors_of(&self, user_id: u64) -> Result<MfaRecord, AuthError> {
        let store = self.store.clone();
        Ok(run_blocking(move || store.mfa_get(user_id)).await?)
    }

    /// After a correct password: a session, or a pending sign-in when the
    /// user has a second factor.
    pub(super) async fn after_password(
        &self,
        user: &User,
        previous: Option<crate::store::TokenHash>,
        client: &ClientInfo,
    ) -> Result<SignInStep, AuthError> {
        if !self.factors_of(user.id).await?.has_factor() {
            return Ok(SignInStep::Done(
                self.start_session(user, previous, &client.origin).await?,
            ));
        }
        let mut raw = [0u8; 32];
        random_bytes(&mut raw);
        let pending_token = base64url(&raw);
        let challenge = MfaChallenge {
            purpose: ChallengePurpose::PendingSignIn,
            user_id: Some(user.id),
            expires_at: self.clock.now_millis() + PENDING_TTL.as_millis() as u64,
            attempts: 0,
            state: user.email.clone(),
        };
        let (store, key) = (self.store.clone(), hash_token(&pending_token));
        let now = self.clock.now_millis();
        let stored =
            run_blocking(move || store.mfa_challenge_put(&key, &challenge, now, MAX_CHALLENGES))
                .await?;
        if !stored {
            tracing::warn!("pending second-factor sign-ins are at their limit");
            return Err(AuthError::Busy);
        }
        Ok(SignInStep::SecondFactor { pending_token })
    }

    /// The factors of the user a pending sign-in belongs to, without
    /// using it up; `None` when there is no such pending sign-in (missing,
    /// used, expired or void).
    pub async fn pending_factors(
        &self,
        pending_token: Option<&str>,
    ) -> Result<Option<PendingFactors>, AuthError> {
        let Some(token) = pending_token else {
            return Ok(None);
        };
        let (store, key) = (self.store.clone(), hash_token(token));
        let now = self.clock.now_millis();
        let pending = run_blocking(move || store.mfa_challenge_peek(&key, now)).await?;
        let Some(user_id) = pending
            .filter(|c| c.purpose == ChallengePurpose::PendingSignIn)
            .and_then(|c| c.user_id)
        else {
            return Ok(None);
        };
        let factors = self.factors_of(user_id).await?;
        Ok(Some(PendingFactors {
            totp: factors.totp.is_some(),
            passkey: !factors.passkeys.is_empty(),
        }))
    }

    /// Completes a pending sign-in with a TOTP or recovery code: the one
    /// entry point for every handler that finishes a second-factor step.
    /// The pending sign-in is taken; a wrong code puts it back with one
    /// attempt fewer (none left: void).
    pub async fn complete_second_factor(
        &self,
        pending_token: Option<&str>,
        answer: SecondFactor<'_>,
        client: &ClientInfo,
    ) -> Result<SignedIn, MfaError> {
        let ip = client.ip_key.as_str();
        self.throttle
            .hit(Rate::SignInPerIp, ip)
            .map_err(throttled)?;
        self.throttle
            .check_backoff(Failures::SignInPerIp, ip)
            .map_err(throttled)?;
        let token = pending_token.ok_or(MfaError::PendingMissing)?;
        let key = hash_token(token);
        let store = self.store.clone();
        let now = self.clock.now_millis();
        let mut pending = run_blocking(move || store.mfa_challenge_take(&key, now))
            .await?
            .filter(|c| c.purpose == ChallengePurpose::PendingSignIn)
            .ok_or(MfaError::PendingMissing)?;
        let email = pending.state.clone();
        let store = self.store.clone();
        let lookup = email.clone();
        let user = run_blocking(move || store.user_by_email(&lookup))
            .await?
            .filter(|u| Some(u.id) == pending.user_id && !u.disabled)
            .ok_or(MfaError::PendingMissing)?;
        if let Err(retry_after) = self
            .throttle
            .check_backoff(Failures::SignInPerEmail, &email)
        {
            self.put_back(key, pending).await?;
            return Err(AuthError::Throttled { retry_after }.into());
        }
        let used_recovery = match answer {
            SecondFactor::Code(code) => self.check_totp(&user, code).await?,
            SecondFactor::RecoveryCode(code) => self.use_recovery_code(&user, code).await?,
        };
        let Some(used_recovery) = used_recovery else {
            crate::metrics::get().sign_in(false);
            self.throttle.record_failure(Failures::SignInPerIp, ip);
            self.throttle
                .record_failure(Failures::SignInPerEmail, &email);
            pending.attempts += 1;
            if pending.attempts < MAX_PENDING_ATTEMPTS {
                self.put_back(key, pending).await?;
            } else {
                tracing::info!(
                    target: "gatehouse::security",
                    user_id = user.id,
                    "pending sign-in void after too many wrong second-factor codes"
                );
            }
            return Err(MfaError::InvalidCode);
        };
        crate::metrics::get().sign_in(true);
        self.throttle
            .clear_failures(Failures::SignInPerEmail, &email);
        if used_recovery {
            self.mfa_notice(&user.email, MfaEvent::RecoveryCodeUsed)
                .await;
        }
        if !self.is_known_device(&user.email, client) && self.notify_new_device {
            self.notify_new_sign_in(&user.email, client).await;
        }
        Ok(self.start_session(&user, None, &client.origin).await?)
    }

    async fn put_back(
        &self,
        key: crate::store::TokenHash,
        pending: MfaChallenge,
    ) -> Result<(), StoreError> {
        let store = self.store.clone();
        let now = self.clock.now_millis();
        run_blocking(move || store.mfa_challenge_put(&key, &pending, now, MAX_CHALLENGES))
            .await
            .map(|_| ())
    }

    /// `Some(false)` when the TOTP code is right and its step unused (the
    /// step is then recorded); `None` otherwise.
    async fn check_totp(&self, user: &User, code: &str) -> Result<Option<bool>, StoreError> {
        if !is_totp_shaped(code) {
            return Ok(None);
        }
        let (store, key, issuer) = (
            self.store.clone(),
            self.mfa.key.clone(),
            self.mfa.issuer.clone(),
        );
        let (user_id, email, code) = (user.id, user.email.clone(), code.to_string());
        let now = self.clock.now_secs();
        let updated = run_blocking(move || {
            store.mfa_update(user_id, &move |r: &MfaRecord| {
                let factor = r.totp.as_ref()?;
                let Some(secret) = key.open(user_id, &factor.sealed_secret) else {
                    tracing::error!(
                        user_id,
                        "a TOTP secret cannot be opened: is [mfa] key_file the key it was sealed with?"
                    );
                    return None;
                };
                let step = totp_for(&secret, &email, &issuer)?.check(&code, now)?;
                if step <= factor.last_step {
                    tracing::info!(target: "gatehouse::security", user_id, "a TOTP code was replayed");
                    return None;
                }
                let mut next = r.clone();
                next.totp.as_mut()?.last_step = step;
                Some(next)
            })
        })
        .await?;
        Ok(updated.after.map(|_| false))
    }

    /// `Some(true)` when the recovery code was unused (it is now removed).
    async fn use_recovery_code(&self, user: &User, code: &str) -> Result<Option<bool>, StoreError> {
        if code.len() > 64 {
            return Ok(None);
        }
        let hash = recovery_hash(code);
        let store = self.store.clone();
        let user_id = user.id;
        let updated = run_blocking(move || {
            store.mfa_update(user_id, &move |r: &MfaRecord| {
                // Every stored hash is compared, in constant time each.
                let mut found = None;
                for (i, h) in r.recovery_codes.iter().enumerate() {
                    if bool::from(h.ct_eq(&hash)) {
                        found = Some(i);
                    }
                }
                let mut next = r.clone();
                next.recovery_codes.remove(found?);
                Some(next)
            })
        })
        .await?;
        Ok(updated.after.map(|_| true))
    }

    /// Queues a second-factor notice; a failure is logged, not returned
    /// (the change it reports has happened).
    pub(super) async fn mfa_notice(&self, to: &str, event: MfaEvent) {
        let notice = self.notice(MailKind::SecondFactor { event });
        let (store, to) = (self.store.clone(), to.to_string());
        let now = self.clock.now_millis();
        match run_blocking(move || store.queue_notice(&to, now, notice)).await {
            Ok(_) => self.outbox.queued(false),
            Err(e) => tracing::error!(error = %e, "second-factor notice could not be queued"),
        }
    }

    /// `POST /api/v1/user/2fa/totp/setup`: a new secret, not active yet.
    pub async fn totp_setup(
        &self,
        who: &super::sessions::Identity,
        password: &str,
        client: &ClientInfo,
    ) -> Result<TotpSetup, MfaError> {
        let user = self.account_of(who).await?;
        self.confirm_password(&user, password, client).await?;
        let mut secret = [0u8; SECRET_LEN];
        random_bytes(&mut secret);
        let sealed = self.mfa.key.seal(user.id, &secret);
        let store = self.store.clone();
        let user_id = user.id;
        let updated = run_blocking(move || {
            store.mfa_update(user_id, &move |r: &MfaRecord| {
                if r.totp.is_some() {
                    return None;
                }
                let mut next = r.clone();
                next.totp_setup = Some(sealed.clone());
                Some(next)
            })
        })
        .await?;
        if updated.after.is_none() {
            return Err(MfaError::TotpAlreadyEnabled);
        }
        let totp = totp_for(&secret, &user.email, &self.mfa.issuer).ok_or_else(|| {
            MfaError::Auth(AuthError::Store(StoreError::Setup(
                "TOTP parameters refused".into(),
            )))
        })?;
        let otpauth_url = totp.to_url().map_err(|e| {
            MfaError::Auth(AuthError::Store(StoreError::Setup(format!(
                "otpauth URL: {e}"
            ))))
        })?;
        Ok(TotpSetup {
            secret: totp.secret().to_base32(),
            otpauth_url,
        })
    }

    /// `POST /api/v1/user/2fa/totp/enable`: the first code from the app
    /// turns TOTP on; every session of the user ends and the caller gets a
    /// new one.
    pub async fn totp_enable(
        &self,
        who: &super::sessions::Identity,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Enabled, MfaError> {
        let user = self.account_of(who).await?;
        let ip = client.ip_key.as_str();
        self.throttle
            .check_backoff(Failures::SignInPerIp, ip)
            .map_err(throttled)?;
        let record = self.factors_of(user.id).await?;
        if record.totp.is_some() {
            return Err(MfaError::TotpAlreadyEnabled);
        }
        let sealed = record.totp_setup.ok_or(MfaError::TotpNotSetUp)?;
        let (codes, hashes) = new_recovery_set();
        let (store, key, issuer) = (
            self.store.clone(),
            self.mfa.key.clone(),
            self.mfa.issuer.clone(),
        );
        let (user_id, email, code) = (user.id, user.email.clone(), code.to_string());
        let now = self.clock.now_millis();
        let updated = run_blocking(move || {
            store.mfa_update(user_id, &move |r: &MfaRecord| {
                // The setup must be the one checked (not replaced meanwhile).
                if r.totp.is_some() || r.totp_setup.as_ref() != Some(&sealed) {
                    return None;
                }
                let secret = key.open(user_id, &sealed)?;
                let step = totp_for(&secret, &email, &issuer)?.check(&code, now / 1000)?;
                let mut next = r.clone();
                next.totp = Some(TotpFactor {
                    sealed_secret: sealed.clone(),
                    enabled_at: now,
                    last_step: step,
                });
                next.totp_setup = None;
                next.recovery_codes = hashes.clone();
                Some(next)
            })
        })
        .await?;
        if updated.after.is_none() {
            self.throttle.record_failure(Failures::SignInPerIp, ip);
            return Err(MfaError::InvalidCode);
        }
        tracing::info!(target: "gatehouse::security", user_id = user.id, "TOTP enabled");
        self.sessions
            .revoke_user(user.id)
            .await
            .map_err(AuthError::from)?;
        let token = self
            .sessions
            .create(user.id, &user.email, &client.origin)
            .await?;
        self.mfa_notice(&user.email, MfaEvent::TotpEnabled).await;
        Ok(Enabled {
            recovery_codes: codes,
            token,
        })
    }

    /// `POST /api/v1/user/2fa/totp/disable`: password and a current code.
    pub async fn totp_disable(
        &self,
        who: &super::sessions::Identity,
        password: &str,
        code: &str,
        client: &ClientInfo,
    ) -> Result<(), MfaError> {
        let user = self.account_of(who).await?;
        self.confirm_password(&user, password, client).await?;
        if self.factors_of(user.id).await?.totp.is_none() {
            return Err(MfaError::TotpNotEnabled);
        }
        if self.check_totp(&user, code).await?.is_none() {
            self.throttle
                .record_failure(Failures::SignInPerIp, &client.ip_key);
            self.throttle
                .record_failure(Failures::SignInPerEmail, &user.email);
            return Err(MfaError::InvalidCode);
        }
        let store = self.store.clone();
        let user_id = user.id;
        run_blocking(move || {
            store.mfa_update(user_id, &|r: &MfaRecord| {
                let mut next = r.clone();
                next.totp = None;
                next.totp_setup = None;
                // Recovery codes stand in for whatever factor is left.
                if next.passkeys.is_empty() {
                    next.recovery_codes.clear();
                }
                Some(next)
            })
        })
        .await?;
        tracing::info!(target: "gatehouse::security", user_id = user.id, "TOTP disabled");
        self.mfa_notice(&user.email, MfaEvent::TotpDisabled).await;
        Ok(())
    }

    /// `POST /api/v1/user/2fa/recovery-codes`: a new set; the old is void.
    pub async fn renew_recovery_codes(
        &self,
        who: &super::sessions::Identity,
        password: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>, MfaError> {
        let user = self.account_of(who).await?;
        self.confirm_password(&user, password, client).await?;
        let (codes, hashes) = new_recovery_set();
        let store = self.store.clone();
        let user_id = user.id;
        let updated = run_blocking(move || {
            store.mfa_update(user_id, &move |r: &MfaRecord| {
                if !r.has_factor() {
                    return None;
                }
                let mut next = r.clone();
                next.recovery_codes = hashes.clone();
                Some(next)
            })
        })
        .await?;
        if updated.after.is_none() {
            return Err(MfaError::NoFactor);
        }
        self.mfa_notice(&user.email, MfaEvent::RecoveryCodesRenewed)
            .await;
        Ok(codes)
    }

    /// Removes expired pending sign-ins and ceremonies.
    pub(super) async fn sweep_mfa(&self) -> Result<usize, StoreError> {
        let store = self.store.clone();
        let now = self.clock.now_millis();
        run_blocking(move || store.mfa_sweep(now)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let key = MfaKey::from_bytes(&[7; 32]);
        let sealed = key.seal(42, b"twenty bytes secret!");
        assert_eq!(key.open(42, &sealed).unwrap(), b"twenty bytes secret!");
        assert!(key.open(43, &sealed).is_none(), "bound to the user");
        assert!(MfaKey::from_bytes(&[8; 32]).open(42, &sealed).is_none());
        assert_ne!(key.seal(42, b"x"), key.seal(42, b"x"), "fresh nonces");
    }

    #[test]
    fn keys_parse_from_hex_or_raw() {
        let hex = format!("{}\n", "ab".repeat(32));
        assert_eq!(parse_key(hex.as_bytes()), Some([0xab; 32]));
        assert_eq!(parse_key(&[1u8; 32]), Some([1; 32]));
        assert_eq!(parse_key(b"short"), None);
    }

    #[test]
    fn recovery_codes_are_forgiving_when_typed() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 11);
        assert_eq!(recovery_hash(&code), recovery_hash(&code.to_uppercase()));
        assert_eq!(recovery_hash(&code), recovery_hash(&code.replace('-', " ")));
        assert_ne!(recovery_hash(&code), recovery_hash(&new_recovery_code()));
    }

    #[test]
    fn totp_accepts_one_step_of_skew() {
        let totp = totp_for(&[1; 20], "a@x.io", "Gatehouse").unwrap();
        let now = 1_800_000_000;
        let code = totp.generate(now - 30).to_string();
        assert_eq!(totp.check(&code, now), Some(now / 30 - 1));
        assert_eq!(totp.check(&totp.generate(now - 60).to_string(), now), None);
        assert!(totp.to_url().unwrap().starts_with("otpauth://totp/"));
    }
}
