//! The access half of the storage contract (issue 20): the groups an
//! operator gives users (`gatehouse user groups`) and sign-up invites
//! (`gatehouse invite`). Kept out of the big [`super::Store`] trait; both
//! backends implement it (`redb_access`, `pg_access`).

use serde::{Deserialize, Serialize};

use super::{StoreError, UnixMillis};

/// An invitation to sign up, keyed by the normalised address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub email: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

impl Invite {
    /// Whether the invite still lets its address sign up at `now`.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        now < self.expires_at
    }
}

pub trait AccessStore: Send + Sync + 'static {
    /// The user's groups, sorted (empty when none were set).
    fn groups_of(&self, user_id: u64) -> Result<Vec<String>, StoreError>;

    /// Replaces the user's groups (empty: removes them).
    fn set_groups(&self, user_id: u64, groups: &[String]) -> Result<(), StoreError>;

    /// Stores an invite, replacing an earlier one for the same address.
    fn invite_put(&self, invite: &Invite) -> Result<(), StoreError>;

    /// The invite for a normalised address, live or expired.
    fn invite_get(&self, email: &str) -> Result<Option<Invite>, StoreError>;

    /// Every stored invite, by address.
    fn invite_list(&self) -> Result<Vec<Invite>, StoreError>;

    /// Deletes the invite for an address (revoked, or used by a sign-up);
    /// `false` if there was none.
    fn invite_delete(&self, email: &str) -> Result<bool, StoreError>;
}
