//! Passkeys (WebAuthn) through the pure-Rust relying-party crate
//! `webauthn_rp`: registration by a signed-in user, listing and deletion,
//! and sign-in — passwordless with a discoverable credential, or as the
//! second factor of a pending sign-in.
//!
//! - Every ceremony's server state is stored as a challenge (single use,
//!   5 minutes) keyed by the hash of its random challenge, bound to the
//!   user who started it (registration) or to the pending sign-in whose
//!   cookie started it; finishing takes it.
//! - The RP ID and allowed origins come from `[mfa] rp_id` / `rp_origins`,
//!   else from the request's own authority (a start-up warning says so).
//!   The crate checks the origin, RP ID hash, challenge, signature, user
//!   presence and verification; a credential from another origin is refused.
//! - The sign counter and the BE/BS flags are stored after each use; a
//!   counter that does not grow is refused and logged on
//!   `gatehouse::security`.

use base64::Engine;
use sha2::{Digest, Sha256};
use webauthn_rp::bin::{Decode, Encode};
use webauthn_rp::request::auth::AuthenticationVerificationOptions;
use webauthn_rp::request::register::{
    CredProtect, PublicKeyCredentialUserEntity, RegistrationVerificationOptions,
    ResidentKeyRequirement, UserHandle16,
};
use webauthn_rp::request::{
    AsciiDomain, ExtensionReq, PublicKeyCredentialDescriptor, RpId, TimedCeremony,
    UserVerificationRequirement,
};
use webauthn_rp::response::auth::error::AuthCeremonyErr;
use webauthn_rp::response::auth::ser_relaxed::DiscoverableAuthenticationRelaxed16;
use webauthn_rp::response::register::ser_relaxed::RegistrationRelaxed;
use webauthn_rp::response::register::{DynamicState, StaticState};
use webauthn_rp::response::{AuthTransports, Backup, CredentialId};
use webauthn_rp::{
    AuthenticatedCredential, DiscoverableAuthentication16, DiscoverableAuthenticationServerState,
    DiscoverableCredentialRequestOptions, PublicKeyCredentialCreationOptions,
    RegistrationServerState,
};

use super::mfa::{MfaError, PENDING_TTL};
use super::sessions::{Identity, hash_token};
use super::throttle::Rate;
use super::{Auth, AuthError, ClientInfo, SignedIn, random_bytes, throttled};
use crate::store::run_blocking;
use crate::store::{
    ChallengePurpose, MfaChallenge, MfaEvent, MfaRecord, PasskeyRecord, StoreError, TokenHash,
};

/// Unexpired ceremonies kept at most.
const MAX_CHALLENGES: u64 = 100_000;
/// Passkeys per account.
const MAX_PASSKEYS: usize = 20;

/// Defined beside the settings that derive it (`mfa`), so the arrow points
/// from passkeys to mfa only.
pub use super::mfa::RelyingParty;

/// A passkey as `GET /api/v1/user/passkeys` shows it.
pub struct PasskeyInfo {
    pub id: String,
    pub name: String,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn challenge_key(challenge: u128) -> TokenHash {
    let mut h = Sha256::new();
    h.update(b"webauthn-challenge:");
    h.update(challenge.to_le_bytes());
    h.finalize().into()
}

fn refused(why: impl std::fmt::Display) -> MfaError {
    tracing::info!(target: "gatehouse::security", reason = %why, "passkey refused");
    MfaError::PasskeyRefused
}

fn rp_id_of(rp: &RelyingParty) -> Result<RpId, MfaError> {
    AsciiDomain::try_from(rp.rp_id.clone())
        .map(RpId::Domain)
        .map_err(|e| refused(format!("RP ID {:?} is not a domain: {e:?}", rp.rp_id)))
}

/// Static and dynamic state, stored as `base64(static).base64(dynamic)`.
fn encode_credential(static_state: &[u8], dynamic: DynamicState) -> Result<String, MfaError> {
    let dynamic = dynamic
        .encode()
        .map_err(|e| refused(format!("dynamic state: {e:?}")))?;
    Ok(format!(
        "{}.{}",
        b64().encode(static_state),
        b64().encode(dynamic)
    ))
}

fn flags(dynamic: DynamicState) -> (bool, bool) {
    match dynamic.backup {
        Backup::NotEligible => (false, false),
        Backup::Eligible => (true, false),
        Backup::Exists => (true, true),
    }
}

fn new_handle() -> String {
    let mut raw = [0u8; 8];
    random_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl Auth {
    async fn put_challenge(&self, key: TokenHash, challenge: MfaChallenge) -> Result<(), MfaError> {
        let store = self.store.clone();
        let now = self.clock.now_millis();
        let stored =
            run_blocking(move || store.mfa_challenge_put(&key, &challenge, now, MAX_CHALLENGES))
                .await?;
        if stored {
            Ok(())
        } else {
            tracing::warn!("pending WebAuthn ceremonies are at their limit");
            Err(AuthError::Busy.into())
        }
    }

    async fn take_challenge(&self, key: TokenHash) -> Result<Option<MfaChallenge>, StoreError> {
        let store = self.store.clone();
        let now = self.clock.now_millis();
        run_blocking(move || store.mfa_challenge_take(&key, now)).await
    }

    /// `POST /api/v1/user/passkeys/register/start`: creation options for
    /// the browser (`{"publicKey": …}` is built by the caller).
    pub async fn passkey_register_start(
        &self,
        who: &Identity,
        rp: &RelyingParty,
    ) -> Result<serde_json::Value, MfaError> {
        let user = self.account_of(who).await?;
        // The user handle is made once, with the first passkey.
        let mut fresh = UserHandle16::new()
            .encode()
            .map_err(|e| refused(format!("{e:?}")))?;
        let store = self.store.clone();
        let user_id = user.id;
        let updated = run_blocking(move || {
            store.mfa_update(user_id, &move |r: &MfaRecord| {
                if r.passkey_user.is_some() {
                    return None;
                }
                let mut next = r.clone();
                next.passkey_user = Some(fresh);
                Some(next)
            })
        })
        .await?;
        let record = updated.after.unwrap_or(updated.before);
        if record.passkeys.len() >= MAX_PASSKEYS {
            return Err(MfaError::TooManyPasskeys);
        }
        fresh = record.passkey_user.unwrap_or(fresh);
        let handle = UserHandle16::decode(fresh).map_err(|e| refused(format!("{e:?}")))?;
        let rp_id = rp_id_of(rp)?;
        let name = user
            .email
            .as_str()
            .try_into()
            .map_err(|e| refused(format!("user name: {e:?}")))?;
        // excludeCredentials: the user's passkeys, so an authenticator that
        // already holds one answers "already registered" instead of making
        // a second credential. Transports are not stored: none are sent.
        // (The empty set is `AuthTransports::NONE` behind the crate's
        // `custom` feature; its binary form 0 is the same value.)
        let no_transports =
            AuthTransports::decode(0).map_err(|e| refused(format!("transports: {e:?}")))?;
        let exclude = record
            .passkeys
            .iter()
            .filter_map(|p| CredentialId::<Vec<u8>>::decode(p.credential_id.clone()).ok())
            .map(|id| PublicKeyCredentialDescriptor {
                id,
                transports: no_transports,
            })
            .collect();
        let mut options = PublicKeyCredentialCreationOptions::passkey(
            &rp_id,
            PublicKeyCredentialUserEntity {
                name,
                id: &handle,
                display_name: None,
            },
            exclude,
        );
        // Discoverable and verified are asked for, not demanded, at
        // registration (the contract's "preferred"); a passwordless sign-in
        // still demands user verification. An enforced credProtect is
        // left out: authenticators without it (Chromium's virtual one,
        // some password managers) would refuse the registration outright.
        options.authenticator_selection.resident_key = ResidentKeyRequirement::Preferred;
        options.authenticator_selection.user_verification = UserVerificationRequirement::Preferred;
        options.extensions.cred_protect = CredProtect::None;
        // credProps: the browser says whether the credential is
        // discoverable; `register/finish` refuses one that is not (sign-in
        // is discoverable-only, so it could never be used).
        options.extensions.cred_props = Some(ExtensionReq::Allow);
        let (server, client) = options
            .start_ceremony()
            .map_err(|e| refused(format!("creation options: {e:?}")))?;
        let state = server
            .encode()
            .map_err(|e| refused(format!("server state: {e:?}")))?;
        let options = serde_json::to_value(&client).map_err(StoreError::from)?;
        self.put_challenge(
            challenge_key(server.sent_challenge().0),
            MfaChallenge {
                purpose: ChallengePurpose::PasskeyRegister,
                user_id: Some(user.id),
                expires_at: self.clock.now_millis() + PENDING_TTL.as_millis() as u64,
                attempts: 0,
                state: b64().encode(state),
            },
        )
        .await?;
        Ok(options)
    }

    /// `POST /api/v1/user/passkeys/register/finish`.
    pub async fn passkey_register_finish(
        &self,
        who: &Identity,
        rp: &RelyingParty,
        credential: &[u8],
        name: &str,
    ) -> Result<PasskeyInfo, MfaError> {
        let user = self.account_of(who).await?;
        // The browser's `PublicKeyCredential.toJSON()`, read leniently
        // (extra fields such as `publicKey` are ignored; every signed part
        // is still checked).
        let registration = serde_json::from_slice::<RegistrationRelaxed>(credential)
            .map_err(|e| refused(format!("registration JSON: {e}")))?
            .0;
        // Sign-in offers no allowCredentials list (discoverable only): a
        // credential the browser reports as not discoverable could be
        // registered but never used. Clients that do not report credProps
        // are trusted (residentKey "preferred" was asked for).
        let discoverable = registration
            .client_extension_results()
            .cred_props
            .and_then(|p| p.rk);
        if discoverable == Some(false) {
            tracing::info!(
                target: "gatehouse::security",
                user_id = user.id,
                "passkey refused: the authenticator made a non-discoverable credential"
            );
            return Err(MfaError::PasskeyNotDiscoverable);
        }
        let challenge = registration
            .challenge_relaxed()
            .map_err(|e| refused(format!("client data: {e}")))?;
        let pending = self
            .take_challenge(challenge_key(challenge.0))
            .await?
            .filter(|c| c.purpose == ChallengePurpose::PasskeyRegister)
            .filter(|c| c.user_id == Some(user.id))
            .ok_or_else(|| refused("unknown, used, expired or foreign registration challenge"))?;
        let state = b64()
            .decode(&pending.state)
            .map_err(|e| refused(format!("stored state: {e}")))?;
        let server = RegistrationServerState::<16>::decode(state.as_slice())
            .map_err(|e| refused(format!("stored state: {e:?}")))?;
        let rp_id = rp_id_of(rp)?;
        let options = RegistrationVerificationOptions::<String, String> {
            allowed_origins: &rp.origins,
            ..RegistrationVerificationOptions::default()
        };
        let registered = server
            .verify(&rp_id, &registration, &options)
            .map_err(|e| refused(format!("registration: {e}")))?;
        let credential_id = registered.id().as_ref().to_vec();
        let static_state = registered
            .static_state()
            .encode()
            .map_err(|e| refused(format!("static state: {e:?}")))?;
        let dynamic = registered.dynamic_state();
        let (backup_eligible, backed_up) = flags(dynamic);
        let record = PasskeyRecord {
            id: new_handle(),
            credential_id: credential_id.clone(),
            name: name.chars().take(64).collect(),
            created_at: self.clock.now_millis(),
            last_used_at: None,
            credential: encode_credential(&static_state, dynamic)?,
            sign_count: dynamic.sign_count,
            backup_eligible,
            backed_up,
        };
        let store = self.store.clone();
        let (user_id, owner_check) = (user.id, credential_id.clone());
        if run_blocking(move || store.passkey_owner(&owner_check))
            .await?
            .is_some()
        {
            return Err(refused("credential id already registered"));
        }
        let store = self.store.clone();
        let added = record.clone();
        let updated = run_blocking(move || {
            store.mfa_update(user_id, &move |r: &MfaRecord| {
                if r.passkeys.len() >= MAX_PASSKEYS {
                    return None;
                }
                let mut next = r.clone();
                next.passkeys.push(added.clone());
                Some(next)
            })
        })
        .await?;
        if updated.after.is_none() {
            return Err(MfaError::TooManyPasskeys);
        }
        tracing::info!(target: "gatehouse::security", user_id = user.id, "passkey added");
        self.mfa_notice(&user.email, MfaEvent::PasskeyAdded).await;
        Ok(PasskeyInfo {
            id: record.id,
            name: record.name,
            created_at: record.created_at,
            last_used_at: None,
        })
    }

    /// `GET /api/v1/user/passkeys`.
    pub async fn passkeys_of(&self, who: &Identity) -> Result<Vec<PasskeyInfo>, MfaError> {
        let user = self.account_of(who).await?;
        Ok(self
            .factors_of(user.id)
            .await?
            .passkeys
            .into_iter()
            .map(|p| PasskeyInfo {
                id: p.id,
                name: p.name,
                created_at: p.created_at,
                last_used_at: p.last_used_at,
            })
            .collect())
    }

    /// `DELETE /api/v1/user/passkeys/{id}`; `PasskeyNotFound` for an id that
    /// is not one of the caller's.
    pub async fn passkey_delete(&self, who: &Identity, id: &str) -> Result<(), MfaError> {
        let user = self.account_of(who).await?;
        let store = self.store.clone();
        let (user_id, id) = (user.id, id.to_string());
        let updated = run_blocking(move || {
            store.mfa_update(user_id, &move |r: &MfaRecord| {
                let at = r.passkeys.iter().position(|p| p.id == id)?;
                let mut next = r.clone();
                next.passkeys.remove(at);
                if !next.has_factor() {
                    next.recovery_codes.clear();
                }
                Some(next)
            })
        })
        .await?;
        if updated.after.is_none() {
            return Err(MfaError::PasskeyNotFound);
        }
        tracing::info!(target: "gatehouse::security", user_id = user.id, "passkey removed");
        self.mfa_notice(&user.email, MfaEvent::PasskeyRemoved).await;
        Ok(())
    }

    /// `POST /api/v1/user/passkeys/login/start`: request options for a
    /// discoverable credential. With a pending sign-in's token the ceremony
    /// is bound to it (the passkey is then the second factor).
    pub async fn passkey_login_start(
        &self,
        rp: &RelyingParty,
        pending_token: Option<&str>,
        client: &ClientInfo,
    ) -> Result<serde_json::Value, MfaError> {
        self.throttle
            .hit(Rate::SignInPerIp, &client.ip_key)
            .map_err(throttled)?;
        let rp_id = rp_id_of(rp)?;
        let (server, client_state) = DiscoverableCredentialRequestOptions::passkey(&rp_id)
            .start_ceremony()
            .map_err(|e| refused(format!("request options: {e:?}")))?;
        let state = server
            .encode()
            .map_err(|e| refused(format!("server state: {e:?}")))?;
        let options = serde_json::to_value(&client_state).map_err(StoreError::from)?;
        let bound = pending_token.map(|t| hex(&hash_token(t)));
        self.put_challenge(
            challenge_key(server.sent_challenge().0),
            MfaChallenge {
                purpose: ChallengePurpose::PasskeyLogin,
                user_id: None,
                expires_at: self.clock.now_millis() + PENDING_TTL.as_millis() as u64,
                attempts: 0,
                state: match bound {
                    Some(h) => format!("{}.{h}", b64().encode(state)),
                    None => b64().encode(state),
                },
            },
        )
        .await?;
        Ok(options)
    }

    /// `POST /api/v1/user/passkeys/login/finish`: a session. A ceremony
    /// started with a pending sign-in completes that sign-in (the passkey
    /// must be the pending user's); one started without is passwordless
    /// (a passkey with user verification counts as both factors).
    pub async fn passkey_login_finish(
        &self,
        rp: &RelyingParty,
        credential: &[u8],
        pending_token: Option<&str>,
        client: &ClientInfo,
    ) -> Result<SignedIn, MfaError> {
        self.throttle
            .check_backoff(super::throttle::Failures::SignInPerIp, &client.ip_key)
            .map_err(throttled)?;
        let outcome = self
            .passkey_login_verify(rp, credential, pending_token)
            .await;
        let user = match outcome {
            Ok(user) => user,
            Err(e) => {
                crate::metrics::get().sign_in(false);
                self.throttle
                    .record_failure(super::throttle::Failures::SignInPerIp, &client.ip_key);
                return Err(e);
            }
        };
        crate::metrics::get().sign_in(true);
        // The notice a password sign-in sends, on the same condition: a
        // browser without this account's device mark (judged before the
        // session marks it).
        let known_device = self.is_known_device(&user.email, client);
        let signed_in = self.start_session(&user, None, &client.origin).await?;
        if !known_device && self.notify_new_device {
            self.notify_new_sign_in(&user.email, client).await;
        }
        Ok(signed_in)
    }

    async fn passkey_login_verify(
        &self,
        rp: &RelyingParty,
        credential: &[u8],
        pending_token: Option<&str>,
    ) -> Result<crate::store::User, MfaError> {
        let authentication: DiscoverableAuthentication16 =
            serde_json::from_slice::<DiscoverableAuthenticationRelaxed16>(credential)
                .map_err(|e| refused(format!("assertion JSON: {e}")))?
                .0;
        let challenge = authentication
            .challenge_relaxed()
            .map_err(|e| refused(format!("client data: {e}")))?;
        let ceremony = self
            .take_challenge(challenge_key(challenge.0))
            .await?
            .filter(|c| c.purpose == ChallengePurpose::PasskeyLogin)
            .ok_or_else(|| refused("unknown, used or expired sign-in challenge"))?;
        let (state, bound) = match ceremony.state.split_once('.') {
            Some((s, h)) => (s.to_string(), Some(h.to_string())),
            None => (ceremony.state.clone(), None),
        };
        // Bound to a pending sign-in: the same cookie must finish it.
        let pending = match &bound {
            Some(h) => {
                let token = pending_token.ok_or(MfaError::PendingMissing)?;
                let key = hash_token(token);
                if hex(&key) != *h {
                    return Err(MfaError::PendingMissing);
                }
                Some(
                    self.take_challenge(key)
                        .await?
                        .filter(|c| c.purpose == ChallengePurpose::PendingSignIn)
                        .ok_or(MfaError::PendingMissing)?,
                )
            }
            None => None,
        };
        let state = b64()
            .decode(&state)
            .map_err(|e| refused(format!("stored state: {e}")))?;
        let server = DiscoverableAuthenticationServerState::decode(state.as_slice())
            .map_err(|e| refused(format!("stored state: {e:?}")))?;
        let credential_id = authentication.raw_id().as_ref().to_vec();
        let store = self.store.clone();
        let lookup = credential_id.clone();
        let owner = run_blocking(move || store.passkey_owner(&lookup))
            .await?
            .ok_or_else(|| refused("unknown credential (deleted, or never registered)"))?;
        if let Some(p) = &pending
            && p.user_id != Some(owner)
        {
            return Err(refused("the passkey is not the pending user's"));
        }
        let record = self.factors_of(owner).await?;
        let stored = record
            .passkeys
            .iter()
            .find(|p| p.credential_id == credential_id)
            .ok_or_else(|| refused("credential index out of step"))?;
        let handle_bytes = record
            .passkey_user
            .ok_or_else(|| refused("account without a user handle"))?;
        let handle = UserHandle16::decode(handle_bytes).map_err(|e| refused(format!("{e:?}")))?;
        let (static_b64, dynamic_b64) = stored
            .credential
            .split_once('.')
            .ok_or_else(|| refused("stored credential unreadable"))?;
        let static_bytes = b64()
            .decode(static_b64)
            .map_err(|e| refused(format!("stored credential: {e}")))?;
        let dynamic_bytes: [u8; 7] = b64()
            .decode(dynamic_b64)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| refused("stored credential unreadable"))?;
        let static_state = StaticState::decode(static_bytes.as_slice())
            .map_err(|e| refused(format!("stored credential: {e:?}")))?;
        let dynamic = DynamicState::decode(dynamic_bytes)
            .map_err(|e| refused(format!("stored credential: {e:?}")))?;
        let mut authenticated =
            AuthenticatedCredential::new(authentication.raw_id(), &handle, static_state, dynamic)
                .map_err(|e| refused(format!("stored credential: {e:?}")))?;
        let rp_id = rp_id_of(rp)?;
        let options = AuthenticationVerificationOptions::<String, String> {
            allowed_origins: &rp.origins,
            ..AuthenticationVerificationOptions::default()
        };
        match server.verify(&rp_id, &authentication, &mut authenticated, &options) {
            Ok(_) => {}
            Err(AuthCeremonyErr::SignatureCounter) => {
                tracing::warn!(
                    target: "gatehouse::security",
                    user_id = owner,
                    passkey = %stored.id,
                    stored_count = stored.sign_count,
                    "passkey signature counter did not grow: a cloned authenticator? sign-in refused"
                );
                return Err(MfaError::PasskeyRefused);
            }
            Err(e) => return Err(refused(format!("assertion: {e}"))),
        }
        let dynamic = authenticated.dynamic_state();
        let (backup_eligible, backed_up) = flags(dynamic);
        let updated_credential = encode_credential(&static_bytes, dynamic)?;
        let store = self.store.clone();
        let (id, now) = (stored.id.clone(), self.clock.now_millis());
        run_blocking(move || {
            store.mfa_update(owner, &move |r: &MfaRecord| {
                let mut next = r.clone();
                let p = next.passkeys.iter_mut().find(|p| p.id == id)?;
                p.sign_count = dynamic.sign_count;
                p.backup_eligible = backup_eligible;
                p.backed_up = backed_up;
                p.credential = updated_credential.clone();
                p.last_used_at = Some(now);
                Some(next)
            })
        })
        .await?;
        let store = self.store.clone();
        run_blocking(move || store.mfa_user(owner))
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| refused("the passkey's account is gone or disabled"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
