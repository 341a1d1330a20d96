//! The second-factor half of the storage contract ([`MfaStore`]): each
//! user's factors as one record (TOTP, recovery codes, passkeys), the index
//! from a passkey's credential id to its owner, and short-lived challenges
//! (pending sign-ins and WebAuthn ceremonies), each taken once.
//!
//! Nothing here is a usable secret on its own: the TOTP secret is sealed
//! by `auth::mfa` with a key kept outside the store, recovery codes are
//! SHA-256 hashes of high-entropy codes, passkeys are public keys, and
//! challenges are keyed by the hash of the cookie or id that names them.

use serde::{Deserialize, Serialize};

use super::{StoreError, TokenHash, UnixMillis};

/// An enabled TOTP factor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TotpFactor {
    /// Nonce and AEAD ciphertext of the secret (see `auth::mfa::MfaKey`).
    pub sealed_secret: Vec<u8>,
    pub enabled_at: UnixMillis,
    /// The last time step a code was accepted for: codes of this step and
    /// earlier are refused (no replay).
    pub last_step: u64,
}

/// A registered passkey (WebAuthn credential).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// Public handle shown to the user and used in `DELETE …/passkeys/{id}`.
    pub id: String,
    /// The credential id the authenticator chose.
    pub credential_id: Vec<u8>,
    pub name: String,
    pub created_at: UnixMillis,
    pub last_used_at: Option<UnixMillis>,
    /// The relying-party library's serialised credential (public key,
    /// counter, flags), opaque here.
    pub credential: String,
    /// The signature counter last seen.
    pub sign_count: u32,
    /// Backup-eligible (BE) and backed-up (BS) flags last seen.
    pub backup_eligible: bool,
    pub backed_up: bool,
}

/// A user's second factors. The default (no factors) is what a user who
/// never enrolled has.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MfaRecord {
    pub totp: Option<TotpFactor>,
    /// A secret from `totp/setup` not yet confirmed by `totp/enable`.
    pub totp_setup: Option<Vec<u8>>,
    /// SHA-256 of each unused recovery code.
    pub recovery_codes: Vec<[u8; 32]>,
    pub passkeys: Vec<PasskeyRecord>,
    /// The random WebAuthn user handle of this account (made with its
    /// first passkey; no personal data in it).
    #[serde(default)]
    pub passkey_user: Option<[u8; 16]>,
}

impl MfaRecord {
    /// Whether sign-in asks for a second factor.
    pub fn has_factor(&self) -> bool {
        self.totp.is_some() || !self.passkeys.is_empty()
    }
}

/// What a challenge is for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ChallengePurpose {
    /// A password sign-in waiting for its second factor (the pending cookie).
    PendingSignIn,
    /// A passkey registration started by a signed-in user.
    PasskeyRegister,
    /// A passkey sign-in (passwordless, or the second factor).
    PasskeyLogin,
}

/// A short-lived, single-use challenge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MfaChallenge {
    pub purpose: ChallengePurpose,
    /// The user it belongs to (`None`: a discoverable passkey sign-in).
    pub user_id: Option<u64>,
    pub expires_at: UnixMillis,
    /// Wrong codes entered against this pending sign-in so far.
    pub attempts: u32,
    /// The ceremony state (JSON, opaque here).
    pub state: String,
}

/// A change to a user's record: `None` leaves it as it is.
pub type MfaChange = dyn Fn(&MfaRecord) -> Option<MfaRecord> + Send + Sync;

/// The record before a change, and after it if it was written.
#[derive(Debug, Clone)]
pub struct MfaUpdated {
    pub before: MfaRecord,
    pub after: Option<MfaRecord>,
}

/// Storage of second factors; both backends implement it.
pub trait MfaStore: Send + Sync + 'static {
    /// The user's factors (the default record when none).
    fn mfa_get(&self, user_id: u64) -> Result<MfaRecord, StoreError>;

    /// Reads, changes and writes the user's record in one transaction, so
    /// concurrent requests cannot both use one TOTP step or recovery code.
    /// Keeps the credential-id index in step with the passkeys.
    fn mfa_update(&self, user_id: u64, change: &MfaChange) -> Result<MfaUpdated, StoreError>;

    /// Removes every factor of the user; returns what was removed.
    fn mfa_delete(&self, user_id: u64) -> Result<MfaRecord, StoreError>;

    /// The user a passkey credential id belongs to.
    fn passkey_owner(&self, credential_id: &[u8]) -> Result<Option<u64>, StoreError>;

    /// The account with this id (a passkey names its owner by id).
    fn mfa_user(&self, user_id: u64) -> Result<Option<super::User>, StoreError>;

    /// Stores a challenge unless `max_pending` unexpired ones exist already
    /// (expired ones are dropped first). `false` when full.
    fn mfa_challenge_put(
        &self,
        key: &TokenHash,
        challenge: &MfaChallenge,
        now: UnixMillis,
        max_pending: u64,
    ) -> Result<bool, StoreError>;

    /// Removes and returns a challenge; an expired one is removed and
    /// `None` returned.
    fn mfa_challenge_take(
        &self,
        key: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<MfaChallenge>, StoreError>;

    /// A challenge without removing it (`None` when absent or expired):
    /// what a page needs to know about a pending sign-in it shows.
    fn mfa_challenge_peek(
        &self,
        key: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<MfaChallenge>, StoreError>;

    /// Removes expired challenges; returns how many.
    fn mfa_sweep(&self, now: UnixMillis) -> Result<usize, StoreError>;
}

/// What a second-factor notice mail reports.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum MfaEvent {
    TotpEnabled,
    TotpDisabled,
    PasskeyAdded,
    PasskeyRemoved,
    RecoveryCodeUsed,
    RecoveryCodesRenewed,
    /// An operator removed every factor (`gatehouse user reset-2fa`).
    ResetByAdmin,
}
