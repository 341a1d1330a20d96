//! Operator commands: the request/reply protocol of the admin socket and the
//! one function that carries a command out against a [`Store`].
//!
//! redb lets one process open the store file, so while the server runs the
//! CLI sends its command over a Unix socket ([`socket`] serves it, [`client`]
//! sends it) and the server runs it; with no server, the CLI runs the same
//! [`execute`] on the store directly. Passwords never cross the socket: the
//! CLI hashes them and sends the PHC string.
//!
//! Wire format: one JSON request line, one JSON reply line, then (for
//! `backup` only) exactly `bytes` raw bytes of the snapshot file.

pub mod client;
pub mod socket;

use serde::{Deserialize, Serialize};

use crate::auth::email;
use crate::store::{
    Invite, Session, Store, StoreError, TokenHash, UnixMillis, User, session_handle,
};

/// One command from the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Liveness of the socket itself.
    Ping,
    UserList,
    UserShow {
        email: String,
    },
    UserAdd {
        email: String,
        password_hash: String,
    },
    UserDelete {
        email: String,
    },
    UserDisable {
        email: String,
    },
    UserEnable {
        email: String,
    },
    UserSetPassword {
        email: String,
        password_hash: String,
    },
    /// Remove every second factor (TOTP, recovery codes, passkeys), end
    /// every session, mail a notice.
    UserReset2fa {
        email: String,
    },
    /// Remove a user's link to an OIDC provider.
    UserUnlink {
        email: String,
        provider: String,
    },
    SessionList {
        email: Option<String>,
    },
    SessionRevoke {
        id: String,
    },
    SessionRevokeAll {
        email: String,
    },
    /// A snapshot of the store, streamed after the reply line.
    Backup,
    /// What the store still holds that names an address (after a deletion:
    /// nothing).
    UserTraces {
        email: String,
    },
    /// Replace a user's groups (empty: none).
    UserGroups {
        email: String,
        groups: Vec<String>,
    },
    /// Let an address sign up under `[signup] mode = "invite"`.
    InviteCreate {
        email: String,
        expires_in_ms: u64,
    },
    InviteList,
    InviteRevoke {
        email: String,
    },
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Reply {
    Ok { data: serde_json::Value },
    Error { message: String },
}

/// Why a command was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The email is not an address.
    #[error("\"{0}\" is not a valid email address")]
    InvalidEmail(String),
    /// No account has this email.
    #[error("no user with email {0}")]
    UnknownUser(String),
    /// `user add` for an email that has an account.
    #[error("a user with email {0} exists already")]
    EmailTaken(String),
    /// No session has this handle.
    #[error("no session with id {0}")]
    UnknownSession(String),
    /// A session id must be 16 lower-case hex digits.
    #[error("\"{0}\" is not a session id (16 hex digits, as shown by `session list`)")]
    MalformedSessionId(String),
    /// The hash sent by the CLI is not a PHC string.
    #[error("password hash is not a PHC string")]
    MalformedHash,
    /// `backup` is streamed by the socket server, not run here.
    #[error("backup is handled by the socket server")]
    NotHere,
    /// `user unlink` for a provider the user is not linked to.
    #[error("{email} is not linked to provider \"{provider}\"")]
    NotLinked { email: String, provider: String },
    /// A group name outside `a-z 0-9 - _ .` or longer than 64.
    #[error("\"{0}\" is not a group name (1-64 of a-z 0-9 - _ .)")]
    InvalidGroup(String),
    /// `invite revoke` for an address with no invite.
    #[error("no invite for {0}")]
    UnknownInvite(String),
    /// `invite create` for an address that has an account.
    #[error("{0} has an account already")]
    HasAccount(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// An OIDC identity linked to a user, as `user show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityView {
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// The provider's email when the link was made.
    pub email: String,
    pub linked_at: u64,
}

/// A user as the CLI shows it; never includes the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub id: u64,
    pub email: String,
    pub disabled: bool,
    pub created_at: u64,
    pub sessions: usize,
}

/// A session as the CLI shows it: its public handle, never the token or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    pub user_id: u64,
    pub email: String,
    pub created_at: u64,
    pub last_seen: u64,
    /// Where the session was opened (absent for sessions from before).
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// What a change did, for the reply and for the session cache.
#[derive(Debug, Default)]
pub struct Executed {
    pub data: serde_json::Value,
    /// Users whose cached sessions must be dropped at once.
    pub forget_users: Vec<u64>,
    /// Single sessions to drop from the cache.
    pub forget_tokens: Vec<TokenHash>,
    /// A mail was queued: wake the delivery worker.
    pub queued_mail: bool,
}

fn normalise(raw: &str) -> Result<String, AdminError> {
    email::normalise(raw).ok_or_else(|| AdminError::InvalidEmail(raw.to_string()))
}

fn check_hash(hash: &str) -> Result<(), AdminError> {
    argon2::password_hash::phc::PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|_| AdminError::MalformedHash)
}

fn user_view(user: &User, sessions: usize) -> UserView {
    UserView {
        id: user.id,
        email: user.email.clone(),
        disabled: user.disabled,
        created_at: user.created_at,
        sessions,
    }
}

fn session_view(hash: &TokenHash, s: &Session) -> SessionView {
    SessionView {
        id: session_handle(hash),
        user_id: s.user_id,
        email: s.email.clone(),
        created_at: s.created_at,
        last_seen: s.last_seen,
        ip: s.ip.clone(),
        user_agent: s.user_agent.clone(),
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Carries out one command (blocking: call from the blocking pool) at
/// time `now` (the server's clock, or the wall clock when the CLI opens the
/// store itself).
pub fn execute(store: &dyn Store, now: UnixMillis, req: Request) -> Result<Executed, AdminError> {
    let done = |data: serde_json::Value| Executed {
        data,
        ..Executed::default()
    };
    match req {
        Request::Ping => Ok(done(serde_json::json!({ "pong": true }))),
        Request::UserList => {
            let mut per_user = std::collections::HashMap::<u64, usize>::new();
            for (_, s) in store.list_sessions(None)? {
                *per_user.entry(s.user_id).or_default() += 1;
            }
            let users: Vec<UserView> = store
                .list_users()?
                .iter()
                .map(|u| user_view(u, per_user.get(&u.id).copied().unwrap_or(0)))
                .collect();
            Ok(done(to_value(&users)))
        }
        Request::UserShow { email } => {
            let key = normalise(&email)?;
            let user = store
                .user_by_email(&key)?
                .ok_or(AdminError::UnknownUser(key))?;
            let sessions = store.list_sessions(Some(user.id))?;
            let sessions: Vec<SessionView> =
                sessions.iter().map(|(h, s)| session_view(h, s)).collect();
            let identities: Vec<IdentityView> = store
                .identities_of(user.id)?
                .into_iter()
                .map(|i| IdentityView {
                    provider: i.provider,
                    issuer: i.issuer,
                    subject: i.subject,
                    email: i.email,
                    linked_at: i.linked_at,
                })
                .collect();
            let mut value = to_value(&user_view(&user, sessions.len()));
            value["session_list"] = to_value(&sessions);
            // Whether codes are pending; the codes themselves are never shown.
            value["pending_codes"] = to_value(&store.pending_codes(&user, now)?);
            value["identities"] = to_value(&identities);
            value["has_password"] =
                serde_json::Value::from(user.password_hash != crate::store::NO_PASSWORD);
            value["groups"] = to_value(&store.groups_of(user.id)?);
            value["factors"] = factors_view(&store.mfa_get(user.id)?);
            Ok(done(value))
        }
        Request::UserReset2fa { email } => {
            let key = normalise(&email)?;
            let user = store
                .user_by_email(&key)?
                .ok_or(AdminError::UnknownUser(key))?;
            let removed = store.mfa_delete(user.id)?;
            let ended = store.delete_user_sessions(user.id)?;
            let had = removed != crate::store::MfaRecord::default();
            if had {
                store.queue_notice(&user.email, now, reset_notice(now))?;
            }
            tracing::info!(
                target: "gatehouse::security",
                user_id = user.id,
                sessions = ended.len(),
                "second factors reset by operator"
            );
            let mut data = to_value(&user_view(&user, 0));
            data["action"] = serde_json::Value::from("second factors removed");
            data["factors_removed"] = factors_view(&removed);
            data["sessions_ended"] = serde_json::Value::from(ended.len());
            Ok(Executed {
                data,
                forget_users: vec![user.id],
                forget_tokens: ended,
                queued_mail: had,
            })
        }
        Request::UserUnlink { email, provider } => {
            let key = normalise(&email)?;
            let user = store
                .user_by_email(&key)?
                .ok_or(AdminError::UnknownUser(key))?;
            let removed = store.unlink_identity(user.id, &provider)?;
            if removed == 0 {
                return Err(AdminError::NotLinked {
                    email: user.email,
                    provider,
                });
            }
            tracing::info!(user_id = user.id, provider = %provider, "identity unlinked by operator");
            Ok(done(serde_json::json!({
                "email": user.email,
                "provider": provider,
                "unlinked": removed,
            })))
        }
        Request::UserAdd {
            email,
            password_hash,
        } => {
            let key = normalise(&email)?;
            check_hash(&password_hash)?;
            let user = store
                .add_user(&key, &password_hash, now)?
                .ok_or(AdminError::EmailTaken(key))?;
            tracing::info!(user_id = user.id, "user added by operator");
            Ok(done(to_value(&user_view(&user, 0))))
        }
        Request::UserDelete { email } => {
            let key = normalise(&email)?;
            let change = store
                .delete_user(&key)?
                .ok_or(AdminError::UnknownUser(key))?;
            // Second factors go with the account.
            store.mfa_delete(change.user.id)?;
            tracing::info!(user_id = change.user.id, "user deleted by operator");
            Ok(changed(
                &change.user,
                change.ended_sessions.len(),
                "deleted",
            ))
        }
        Request::UserDisable { email } => set_disabled(store, &email, true),
        Request::UserEnable { email } => set_disabled(store, &email, false),
        Request::UserSetPassword {
            email,
            password_hash,
        } => {
            let key = normalise(&email)?;
            check_hash(&password_hash)?;
            let change = store
                .set_password_hash(&key, &password_hash)?
                .ok_or(AdminError::UnknownUser(key))?;
            tracing::info!(user_id = change.user.id, "password set by operator");
            Ok(changed(
                &change.user,
                change.ended_sessions.len(),
                "password set",
            ))
        }
        Request::SessionList { email } => {
            let user_id = match email {
                Some(e) => {
                    let key = normalise(&e)?;
                    Some(
                        store
                            .user_by_email(&key)?
                            .ok_or(AdminError::UnknownUser(key))?
                            .id,
                    )
                }
                None => None,
            };
            let sessions: Vec<SessionView> = store
                .list_sessions(user_id)?
                .iter()
                .map(|(h, s)| session_view(h, s))
                .collect();
            Ok(done(to_value(&sessions)))
        }
        Request::SessionRevoke { id } => {
            let wanted = id.trim().to_ascii_lowercase();
            if wanted.len() != 16 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(AdminError::MalformedSessionId(id));
            }
            let matching: Vec<(TokenHash, Session)> = store
                .list_sessions(None)?
                .into_iter()
                .filter(|(h, _)| session_handle(h) == wanted)
                .collect();
            let [(hash, session)] = matching.as_slice() else {
                // Zero matches, or (astronomically unlikely) a handle collision:
                // refuse rather than guess.
                return Err(AdminError::UnknownSession(wanted));
            };
            store.delete_session(hash)?;
            tracing::info!(user_id = session.user_id, "session revoked by operator");
            Ok(Executed {
                data: serde_json::json!({ "revoked": 1, "id": wanted }),
                forget_tokens: vec![*hash],
                ..Executed::default()
            })
        }
        Request::SessionRevokeAll { email } => {
            let key = normalise(&email)?;
            let user = store
                .user_by_email(&key)?
                .ok_or(AdminError::UnknownUser(key))?;
            let ended = store.delete_user_sessions(user.id)?;
            tracing::info!(
                user_id = user.id,
                sessions = ended.len(),
                "sessions revoked by operator"
            );
            Ok(Executed {
                data: serde_json::json!({ "revoked": ended.len(), "email": user.email }),
                forget_users: vec![user.id],
                forget_tokens: ended,
                ..Executed::default()
            })
        }
        Request::Backup => Err(AdminError::NotHere),
        Request::UserGroups { email, groups } => set_groups(store, &email, groups),
        Request::InviteCreate {
            email,
            expires_in_ms,
        } => {
            let key = normalise(&email)?;
            if store.user_by_email(&key)?.is_some() {
                return Err(AdminError::HasAccount(key));
            }
            let invite = Invite {
                email: key,
                created_at: now,
                expires_at: now.saturating_add(expires_in_ms),
            };
            store.invite_put(&invite)?;
            // The invitation mail; useless once the invite has expired.
            let mut token = [0u8; 16];
            crate::random::random_bytes(&mut token);
            let notice = crate::store::Notice {
                kind: crate::store::MailKind::Invited {
                    expires_at: invite.expires_at,
                },
                deadline: invite.expires_at,
                message_token: crate::random::base64url(&token),
            };
            store.queue_notice(&invite.email, now, notice)?;
            tracing::info!("invite created by operator; invitation mail queued");
            Ok(Executed {
                data: invite_view(&invite, now),
                queued_mail: true,
                ..Executed::default()
            })
        }
        Request::InviteList => {
            let invites = store.invite_list()?;
            Ok(done(invites.iter().map(|i| invite_view(i, now)).collect()))
        }
        Request::InviteRevoke { email } => {
            let key = normalise(&email)?;
            if !store.invite_delete(&key)? {
                return Err(AdminError::UnknownInvite(key));
            }
            tracing::info!("invite revoked by operator");
            Ok(done(serde_json::json!({ "email": key, "revoked": true })))
        }
        Request::UserTraces { email } => {
            let key = normalise(&email)?;
            let mut value = to_value(&store.traces(&key)?);
            value["email"] = serde_json::Value::from(key);
            Ok(done(value))
        }
    }
}

/// `user groups`: the new groups take effect on the user's next request
/// (their cached sessions are dropped and reloaded; open WebSockets end).
fn set_groups(store: &dyn Store, email: &str, groups: Vec<String>) -> Result<Executed, AdminError> {
    let key = normalise(email)?;
    let mut groups: Vec<String> = groups
        .into_iter()
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    if let Some(bad) = groups.iter().find(|g| !crate::config::is_group_name(g)) {
        return Err(AdminError::InvalidGroup(bad.clone()));
    }
    groups.sort();
    groups.dedup();
    let user = store
        .user_by_email(&key)?
        .ok_or(AdminError::UnknownUser(key))?;
    store.set_groups(user.id, &groups)?;
    tracing::info!(
        user_id = user.id,
        groups = groups.len(),
        "groups set by operator"
    );
    Ok(Executed {
        data: serde_json::json!({ "email": user.email, "groups": groups }),
        forget_users: vec![user.id],
        ..Executed::default()
    })
}

/// A user's second factors as the operator sees them: kinds, names and
/// dates, never a secret.
fn factors_view(record: &crate::store::MfaRecord) -> serde_json::Value {
    let passkeys: Vec<serde_json::Value> = record
        .passkeys
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": p.id,
                "name": p.name,
                "created_at": p.created_at,
                "last_used_at": p.last_used_at,
                "backed_up": p.backed_up,
            })
        })
        .collect();
    serde_json::json!({
        "totp": record.totp.is_some(),
        "totp_enabled_at": record.totp.as_ref().map(|t| t.enabled_at),
        "recovery_codes_left": record.recovery_codes.len(),
        "passkeys": passkeys,
    })
}

/// The notice for an operator's reset; without the server's mail
/// settings at hand, it may wait in the outbox for a day.
fn reset_notice(now: UnixMillis) -> crate::store::Notice {
    let mut token = [0u8; 16];
    crate::random::random_bytes(&mut token);
    crate::store::Notice {
        kind: crate::store::MailKind::SecondFactor {
            event: crate::store::MfaEvent::ResetByAdmin,
        },
        deadline: now + 24 * 3600 * 1000,
        message_token: crate::random::base64url(&token),
    }
}

/// An invite with `live`: whether it still lets its address sign up, decided
/// here on the server's clock (the CLI may run on another machine's).
fn invite_view(invite: &Invite, now: UnixMillis) -> serde_json::Value {
    let mut value = to_value(invite);
    value["live"] = serde_json::Value::from(invite.is_live(now));
    value
}

fn set_disabled(store: &dyn Store, email: &str, disabled: bool) -> Result<Executed, AdminError> {
    let key = normalise(email)?;
    let change = store
        .set_user_disabled(&key, disabled)?
        .ok_or(AdminError::UnknownUser(key))?;
    let what = if disabled { "disabled" } else { "enabled" };
    tracing::info!(user_id = change.user.id, "user {what} by operator");
    Ok(changed(&change.user, change.ended_sessions.len(), what))
}

/// The reply for a change that may have ended sessions.
fn changed(user: &User, ended: usize, what: &str) -> Executed {
    let mut data = to_value(&user_view(user, 0));
    data["action"] = serde_json::Value::from(what);
    data["sessions_ended"] = serde_json::Value::from(ended);
    Executed {
        data,
        forget_users: vec![user.id],
        ..Executed::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::now_millis;
    use crate::store::traits::*;

    #[test]
    fn requests_have_a_stable_wire_shape() {
        let line = serde_json::to_string(&Request::SessionList {
            email: Some("a@b.co".into()),
        })
        .unwrap();
        assert_eq!(line, r#"{"cmd":"session-list","email":"a@b.co"}"#);
        let parsed: Request = serde_json::from_str(r#"{"cmd":"user-list"}"#).unwrap();
        assert_eq!(parsed, Request::UserList);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"drop-tables"}"#).is_err());
    }

    #[test]
    fn disable_and_delete_end_sessions_and_name_the_user_to_forget() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let add = Request::UserAdd {
            email: "Ann@Example.com".into(),
            password_hash: hash.into(),
        };
        let user: UserView =
            serde_json::from_value(execute(&store, now_millis(), add.clone()).unwrap().data)
                .unwrap();
        assert_eq!(user.email, "ann@example.com");
        assert!(matches!(
            execute(&store, now_millis(), add),
            Err(AdminError::EmailTaken(_))
        ));
        let session = Session {
            user_id: user.id,
            email: user.email.clone(),
            created_at: 1,
            last_seen: 1,
            ip: None,
            user_agent: None,
        };
        store.insert_session(&[9; 32], &session).unwrap();
        let done = execute(
            &store,
            now_millis(),
            Request::UserDisable {
                email: "ann@example.com".into(),
            },
        )
        .unwrap();
        assert_eq!(done.forget_users, vec![user.id]);
        assert_eq!(done.data["sessions_ended"], 1);
        assert!(store.session(&[9; 32]).unwrap().is_none());
        // A disabled account gets no new sessions either.
        store.insert_session(&[8; 32], &session).unwrap();
        assert!(store.session(&[8; 32]).unwrap().is_none());
        assert!(matches!(
            execute(
                &store,
                now_millis(),
                Request::SessionRevoke { id: "xyz".into() }
            ),
            Err(AdminError::MalformedSessionId(_))
        ));
        assert!(matches!(
            execute(
                &store,
                now_millis(),
                Request::UserSetPassword {
                    email: "ann@example.com".into(),
                    password_hash: "plaintext".into()
                }
            ),
            Err(AdminError::MalformedHash)
        ));
    }
}
