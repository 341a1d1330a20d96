//! Sign-in through OpenID Connect providers (`[[oidc]]`): the connect step
//! (state, nonce and PKCE verifier stored server-side, bound to the browser
//! by a short-lived `__Host-` cookie) and the callback step (single-use
//! state, code exchange, ID-token verification, account lookup by
//! (issuer, subject) or linking by verified email).
//!
//! Outcomes only: HTTP (redirects, cookies) is in `http::oauth`, and the
//! session is created by [`crate::auth::Auth::start_session`], the same path
//! as a password sign-in.

pub mod http_client;
pub mod provider;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, OAuthConfig, is_local_path};
use crate::random::{base64url, random_bytes};
use crate::store::{OidcLink, OidcState, Store, StoreError, TokenHash, User};
use provider::{Provider, ProviderError};

/// Name of the browser-binding cookie. `__Host-`: Secure, no Domain, Path=/,
/// so no sibling subdomain can set or read it.
pub const BINDING_COOKIE: &str = "__Host-gatehouse-oidc";
/// Most started, unfinished sign-ins kept at once (each expires after
/// `oauth.state_ttl`); beyond that connect answers 503.
const MAX_PENDING: u64 = 10_000;
/// Longest `state` accepted in a callback (ours are 43 characters).
const MAX_STATE_LEN: usize = 256;

/// The Flowtask error codes the callback redirects with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackError {
    AccessDenied,
    MissingCode,
    InvalidState,
    ExpiredState,
    OauthFailed,
}

impl CallbackError {
    pub fn code(self) -> &'static str {
        match self {
            CallbackError::AccessDenied => "access_denied",
            CallbackError::MissingCode => "missing_code",
            CallbackError::InvalidState => "invalid_state",
            CallbackError::ExpiredState => "expired_state",
            CallbackError::OauthFailed => "oauth_failed",
        }
    }
}

/// Why connect failed (a JSON error, not a redirect: the SPA called it).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No `[[oidc]]` provider has this name.
    #[error("Unknown identity provider")]
    UnknownProvider,
    /// `callbackUrl` is not a same-origin relative path.
    #[error("callbackUrl must be a relative path on this site, such as /app/today")]
    BadCallbackUrl,
    /// Too many sign-ins are pending.
    #[error("Too many sign-ins in progress; try again shortly")]
    Busy,
    /// The provider could not be reached or described itself badly.
    #[error("identity provider: {0}")]
    Provider(#[from] ProviderError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A started sign-in, as the connect endpoint answers it.
pub struct Connect {
    pub auth_url: String,
    pub state: String,
    /// Value of the [`BINDING_COOKIE`].
    pub binding: String,
}

/// The query of a callback request.
#[derive(Debug, Default)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

impl CallbackQuery {
    pub fn parse(query: Option<&str>) -> CallbackQuery {
        let mut out = CallbackQuery::default();
        for (k, v) in form_pairs(query.unwrap_or("")) {
            let slot = match k.as_str() {
                "code" => &mut out.code,
                "state" => &mut out.state,
                "error" => &mut out.error,
                _ => continue,
            };
            if slot.is_none() && !v.is_empty() {
                *slot = Some(v);
            }
        }
        out
    }
}

/// A finished callback: the account to start a session for.
pub struct SignedInUser {
    pub user: User,
    pub created: bool,
    pub callback_path: Option<String>,
}

/// The configured providers and redirect targets.
pub struct Oidc {
    providers: Vec<Provider>,
    pub oauth: OAuthConfig,
    store: Arc<dyn Store>,
    /// `[signup]`: OIDC creates accounts only for addresses it permits.
    signup: crate::config::SignupConfig,
    /// Decides when a started sign-in's state has expired.
    clock: Clock,
}

impl Oidc {
    /// Reads each provider's client secret and CA file; nothing is fetched
    /// from the providers until the first sign-in.
    pub fn new(cfg: &Config, store: Arc<dyn Store>, clock: Clock) -> Result<Oidc, ConfigError> {
        let mut providers = Vec::with_capacity(cfg.oidc.len());
        for p in &cfg.oidc {
            let secret = p.read_client_secret()?;
            let provider = Provider::new(p.clone(), secret).map_err(|e| ConfigError::Invalid {
                key: "oidc.ca_file",
                message: format!("provider \"{}\": {e}", p.name),
            })?;
            providers.push(provider);
        }
        Ok(Oidc {
            providers,
            oauth: cfg.oauth.clone(),
            store,
            signup: cfg.access.signup.clone(),
            clock,
        })
    }

    fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.cfg.name == name)
    }

    pub fn state_ttl(&self) -> Duration {
        self.oauth.state_ttl
    }

    /// Starts a sign-in: fresh state, nonce and PKCE verifier, stored under
    /// the state's hash together with the hash of the browser binding. The
    /// binding the browser already holds (`existing_binding`, if it is one
    /// of ours by shape) is kept, so sign-ins started in two tabs of one
    /// browser both finish; otherwise a fresh one is made.
    pub async fn connect(
        &self,
        name: &str,
        callback_url: Option<&str>,
        existing_binding: Option<&str>,
    ) -> Result<Connect, ConnectError> {
        let provider = self.provider(name).ok_or(ConnectError::UnknownProvider)?;
        let callback_path = match callback_url {
            None => None,
            Some(path) if is_local_path(path) => Some(path.to_string()),
            Some(_) => return Err(ConnectError::BadCallbackUrl),
        };
        let binding = existing_binding
            .filter(|b| is_secret_shaped(b))
            .map_or_else(secret, str::to_string);
        let (state, nonce) = (secret(), secret());
        let authorization = provider.authorize(&state, &nonce).await?;
        let now = self.clock.now_millis();
        let record = OidcState {
            provider: name.to_string(),
            nonce,
            pkce_verifier: authorization.pkce_verifier,
            binding_hash: sha256(&binding),
            callback_path,
            expires_at: now + self.oauth.state_ttl.as_millis() as u64,
        };
        let store = self.store.clone();
        let key = sha256(&state);
        let stored = crate::store::run_blocking(move || {
            store.oidc_state_insert(&key, &record, now, MAX_PENDING)
        })
        .await?;
        if !stored {
            return Err(ConnectError::Busy);
        }
        Ok(Connect {
            auth_url: authorization.url,
            state,
            binding,
        })
    }

    /// Finishes a sign-in. Every failure is logged here with its reason
    /// (never a token) and counted; the caller only redirects.
    pub async fn callback(
        &self,
        name: &str,
        query: CallbackQuery,
        binding: Option<&str>,
    ) -> Result<SignedInUser, CallbackError> {
        let outcome = self.callback_inner(name, query, binding).await;
        let label = match &outcome {
            Ok(done) if done.created => "created",
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        crate::metrics::get().oidc_sign_in(self.metric_name(name), label);
        outcome
    }

    /// Provider names are bounded by the configuration; anything else is
    /// counted as "unknown".
    fn metric_name(&self, name: &str) -> String {
        match self.provider(name) {
            Some(p) => p.cfg.name.clone(),
            None => "unknown".to_string(),
        }
    }

    async fn callback_inner(
        &self,
        name: &str,
        query: CallbackQuery,
        binding: Option<&str>,
    ) -> Result<SignedInUser, CallbackError> {
        let fail = |error: CallbackError, reason: &dyn std::fmt::Display| {
            tracing::warn!(provider = %name, error = error.code(), %reason, "OIDC sign-in refused");
            error
        };
        let provider = self
            .provider(name)
            .ok_or_else(|| fail(CallbackError::OauthFailed, &"unknown provider"))?;
        // The state is taken (deleted) whatever happens next: single use.
        let taken = match query.state.as_deref() {
            Some(s) if s.len() <= MAX_STATE_LEN => {
                let store = self.store.clone();
                let key = sha256(s);
                crate::store::run_blocking(move || store.oidc_state_take(&key))
                    .await
                    .map_err(|e| fail(CallbackError::OauthFailed, &e))?
            }
            _ => None,
        };
        if let Some(error) = query.error.as_deref() {
            // The provider's own error code only (a fixed vocabulary); its
            // description is free text and is not logged.
            let code: String = error
                .chars()
                .take(64)
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let mapped = if error == "access_denied" {
                CallbackError::AccessDenied
            } else {
                CallbackError::OauthFailed
            };
            return Err(fail(
                mapped,
                &format_args!("provider answered error={code}"),
            ));
        }
        let Some(code) = query.code else {
            return Err(fail(CallbackError::MissingCode, &"no code in the callback"));
        };
        let Some(state) = taken else {
            return Err(fail(
                CallbackError::InvalidState,
                &"unknown, used or missing state",
            ));
        };
        let bound = binding.is_some_and(|b| bool::from(sha256(b).ct_eq(&state.binding_hash)));
        if !bound {
            return Err(fail(
                CallbackError::InvalidState,
                &"state not bound to this browser (binding cookie missing or wrong)",
            ));
        }
        if state.provider != provider.cfg.name {
            return Err(fail(
                CallbackError::InvalidState,
                &"state was issued for another provider",
            ));
        }
        if self.clock.now_millis() >= state.expires_at {
            return Err(fail(CallbackError::ExpiredState, &"state expired"));
        }
        let claims = provider
            .finish(code, state.pkce_verifier, &state.nonce)
            .await
            .map_err(|e| fail(CallbackError::OauthFailed, &e))?;
        if !provider.cfg.allowed_domains.is_empty() {
            let domain = claims
                .email
                .as_deref()
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d);
            if !domain.is_some_and(|d| provider.cfg.allowed_domains.iter().any(|a| a == d)) {
                return Err(fail(
                    CallbackError::OauthFailed,
                    &"email domain not in allowed_domains",
                ));
            }
        }
        let store = self.store.clone();
        let create = provider.cfg.create_users;
        let link_claims = claims.clone();
        let signup = self.signup.clone();
        let now = self.clock.now_millis();
        let link = crate::store::run_blocking(move || {
            // `[signup]` applies to accounts OIDC would create, too.
            let email = link_claims
                .email
                .as_deref()
                .unwrap_or("")
                .to_ascii_lowercase();
            let create = create
                && crate::auth::signup_policy::permits(&signup, store.as_ref(), &email, now)?;
            store.oidc_sign_in(&link_claims, create, now)
        })
        .await
        .map_err(|e| fail(CallbackError::OauthFailed, &e))?;
        let (user, created) = match link {
            OidcLink::Existing(user) => (user, false),
            OidcLink::Linked(user) => {
                tracing::info!(user_id = user.id, provider = %name, "identity linked by verified email");
                (user, false)
            }
            OidcLink::Created(user) => {
                tracing::info!(user_id = user.id, provider = %name, "account created by OIDC sign-in");
                // An invite (`[signup] mode = "invite"`) is used up here too.
                let (store, signup, email) =
                    (self.store.clone(), self.signup.clone(), user.email.clone());
                let _ = crate::store::run_blocking(move || {
                    crate::auth::signup_policy::consume_invite(&signup, store.as_ref(), &email);
                    Ok(())
                })
                .await;
                (user, true)
            }
            OidcLink::Unverified => {
                return Err(fail(
                    CallbackError::OauthFailed,
                    &"first sign-in and the provider does not say the email is verified",
                ));
            }
            OidcLink::NoAccount => {
                return Err(fail(
                    CallbackError::OauthFailed,
                    &"no account with this email and create_users = false",
                ));
            }
            OidcLink::Disabled => {
                return Err(fail(CallbackError::OauthFailed, &"account disabled"));
            }
        };
        Ok(SignedInUser {
            user,
            created,
            callback_path: state.callback_path,
        })
    }

    /// Removes expired started sign-ins.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let store = self.store.clone();
        let now = self.clock.now_millis();
        crate::store::run_blocking(move || store.oidc_sweep(now)).await
    }
}

/// 32 bytes from the OS CSPRNG, base64url.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes);
    base64url(&bytes)
}

/// What [`secret`] makes: 43 base64url characters.
fn is_secret_shaped(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn sha256(text: &str) -> TokenHash {
    Sha256::digest(text.as_bytes()).into()
}

/// `application/x-www-form-urlencoded` pairs, percent- and `+`-decoded.
pub fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k), form_decode(v))
    })
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_bindings_are_kept() {
        assert!(is_secret_shaped(&secret()));
        assert!(!is_secret_shaped("short"));
        assert!(!is_secret_shaped(&format!("{}=", &secret()[..42])));
    }

    #[test]
    fn callback_query_parsing() {
        let q = CallbackQuery::parse(Some("code=a%2Bb&state=s+t&x=1&code=second"));
        assert_eq!(q.code.as_deref(), Some("a+b"));
        assert_eq!(q.state.as_deref(), Some("s t"));
        assert!(q.error.is_none());
        let q = CallbackQuery::parse(Some("error=access_denied&state="));
        assert_eq!(q.error.as_deref(), Some("access_denied"));
        assert!(q.state.is_none());
        assert!(CallbackQuery::parse(None).code.is_none());
        assert_eq!(form_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn callback_urls_must_stay_on_this_site() {
        for good in ["/app/today", "/", "/a/b?x=1&y=%20#frag", "/projects/42"] {
            assert!(is_local_path(good), "{good} should be accepted");
        }
        let evil = [
            "",
            "//evil.com",
            "https://evil.com",
            "http:evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "%2F%2Fevil.com",
            "/%2F/evil.com",
            "/%2Fevil.com",
            "/%5Cevil.com",
            "/%252F%252Fevil.com",
            "javascript:alert(1)",
            "evil.com",
            "/\tevil",
            "/ /evil",
            " /app",
            "/app\r\nSet-Cookie: x=1",
            "///evil.com",
        ];
        for bad in evil {
            assert!(!is_local_path(bad), "{bad:?} should be refused");
        }
        assert!(!is_local_path(&format!("/{}", "a".repeat(3000))));
    }

    #[test]
    fn error_codes_are_the_flowtask_ones() {
        let all = [
            CallbackError::AccessDenied,
            CallbackError::MissingCode,
            CallbackError::InvalidState,
            CallbackError::ExpiredState,
            CallbackError::OauthFailed,
        ];
        let codes: Vec<&str> = all.iter().map(|e| e.code()).collect();
        assert_eq!(
            codes,
            [
                "access_denied",
                "missing_code",
                "invalid_state",
                "expired_state",
                "oauth_failed"
            ]
        );
    }
}
