//! The sign-up policy (`[signup] mode`): whether an address may create an
//! account. The API and the pages ask the same question here; a refused
//! address is answered like a permitted one by send-otp (nothing revealed,
//! nothing mailed) and its verify fails like a wrong code.

use crate::config::{SignupConfig, SignupMode};
use crate::store::{Store, StoreError, UnixMillis};

/// Whether the normalised `email` may sign up at `now` (blocking: reads
/// the invite from the store in `invite` mode).
pub fn permits(
    policy: &SignupConfig,
    store: &dyn Store,
    email: &str,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    Ok(match policy.mode {
        SignupMode::Open => true,
        SignupMode::Closed => false,
        SignupMode::Domains => {
            let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
            policy
                .allowed_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
        }
        SignupMode::Invite => store
            .invite_get(email)?
            .is_some_and(|invite| invite.is_live(now)),
    })
}

/// After a sign-up: the invite is used up (best effort; an expired invite
/// is harmless).
pub fn consume_invite(policy: &SignupConfig, store: &dyn Store, email: &str) {
    if policy.mode == SignupMode::Invite
        && let Err(e) = store.invite_delete(email)
    {
        tracing::warn!(error = %e, "could not remove a used invite");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AccessStore, Invite, RedbStore};

    fn policy(mode: SignupMode, domains: &[&str]) -> SignupConfig {
        SignupConfig {
            mode,
            allowed_domains: domains.iter().map(|d| d.to_string()).collect(),
            refusal_notice: false,
        }
    }

    #[test]
    fn every_mode_decides() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("p.redb")).unwrap();
        let open = policy(SignupMode::Open, &[]);
        let closed = policy(SignupMode::Closed, &[]);
        let domains = policy(SignupMode::Domains, &["corp.example"]);
        let invite = policy(SignupMode::Invite, &[]);
        assert!(permits(&open, &store, "a@x.co", 5).unwrap());
        assert!(!permits(&closed, &store, "a@x.co", 5).unwrap());
        assert!(permits(&domains, &store, "a@corp.example", 5).unwrap());
        assert!(!permits(&domains, &store, "a@evilcorp.example", 5).unwrap());
        assert!(!permits(&invite, &store, "a@x.co", 5).unwrap());
        store
            .invite_put(&Invite {
                email: "a@x.co".into(),
                created_at: 1,
                expires_at: 10,
            })
            .unwrap();
        assert!(permits(&invite, &store, "a@x.co", 5).unwrap());
        assert!(!permits(&invite, &store, "a@x.co", 10).unwrap());
        consume_invite(&invite, &store, "a@x.co");
        assert!(!permits(&invite, &store, "a@x.co", 5).unwrap());
    }
}
