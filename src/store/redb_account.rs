//! The redb half of account self-service: reset and email-change codes in
//! their own table, each change with its mails in one transaction.

use redb::{ReadableDatabase, ReadableMultimapTable, ReadableTable, WriteTransaction};

use super::redb_outbox::{self, delete_mail_to_in, queue_plain_in};
use super::redb_store::{RedbStore, delete_session_in, delete_user_sessions_in, insert_session_in};
use super::redb_tables::{
    ACCOUNT_CODES, OTP_SENDS, OTPS, OUTBOX, SESSIONS, THROTTLES, USER_SESSIONS, USERS,
    USERS_BY_EMAIL, decode, encode,
};
use super::{
    AccountCode, AccountCodeCheck, CodePurpose, EmailChangeMails, EmailChanged, MailKind, Notice,
    OtpMail, PendingCodes, PendingOtp, SendLimit, SendOutcome, Session, StoreError, TokenHash,
    Traces, UnixMillis, User, UserChange,
};

/// Send-rate window keys, apart from sign-up's (which is the bare email).
fn reset_sends(email: &str) -> String {
    format!("reset:{email}")
}
fn change_sends_to(email: &str) -> String {
    format!("email-change:{email}")
}
fn change_sends_by(user_id: u64) -> String {
    format!("email-change-user:{user_id}")
}

/// Counts one send under `key` in the rolling window; `Some(retry_after_ms)`
/// (and nothing counted) when the window is full.
fn count_send_in(
    txn: &WriteTransaction,
    key: &str,
    now: UnixMillis,
    limit: SendLimit,
) -> Result<Option<u64>, StoreError> {
    let mut table = txn.open_table(OTP_SENDS)?;
    let mut sends: Vec<UnixMillis> = match table.get(key)? {
        Some(v) => decode(v.value())?,
        None => Vec::new(),
    };
    if let Some(retry) = limit.admit(&mut sends, now) {
        return Ok(Some(retry));
    }
    table.insert(key, encode(&sends)?.as_slice())?;
    Ok(None)
}

fn user_by_id_in(txn: &WriteTransaction, id: u64) -> Result<Option<User>, StoreError> {
    match txn.open_table(USERS)?.get(id)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

fn put_user_in(txn: &WriteTransaction, user: &User) -> Result<(), StoreError> {
    txn.open_table(USERS)?
        .insert(user.id, encode(user)?.as_slice())?;
    Ok(())
}

/// Whether `code` is still the pending record under `key` and still valid.
fn still_pending_in(
    txn: &WriteTransaction,
    key: &str,
    code: &AccountCode,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let codes = txn.open_table(ACCOUNT_CODES)?;
    Ok(match codes.get(key)? {
        Some(v) => {
            let stored: AccountCode = decode(v.value())?;
            stored.pending.salt == code.pending.salt
                && stored.pending.code_hash == code.pending.code_hash
                && now < stored.pending.expires_at
                && stored.user_id.is_some()
                && stored.user_id == code.user_id
        }
        None => false,
    })
}

fn remove_code_in(txn: &WriteTransaction, key: &str) -> Result<Option<AccountCode>, StoreError> {
    let mut codes = txn.open_table(ACCOUNT_CODES)?;
    let removed = match codes.remove(key)? {
        Some(v) => Some(decode(v.value())?),
        None => None,
    };
    Ok(removed)
}

fn queue_notice_in(
    txn: &WriteTransaction,
    to: &str,
    now: UnixMillis,
    notice: Notice,
) -> Result<u64, StoreError> {
    queue_plain_in(
        txn,
        to,
        now,
        notice.kind,
        notice.deadline,
        notice.message_token,
    )
}

impl RedbStore {
    pub(super) fn reset_requested(
        &self,
        email: &str,
        now: UnixMillis,
        limit: SendLimit,
        code: PendingOtp,
        mail: OtpMail,
    ) -> Result<SendOutcome, StoreError> {
        let txn = self.write_txn()?;
        if let Some(retry_after_ms) = count_send_in(&txn, &reset_sends(email), now, limit)? {
            return Ok(SendOutcome::Limited { retry_after_ms });
        }
        let user = Self::user_in(&txn, email)?.filter(|u| !u.disabled);
        let record = AccountCode {
            pending: code,
            user_id: user.as_ref().map(|u| u.id),
            new_email: None,
        };
        txn.open_table(ACCOUNT_CODES)?.insert(
            CodePurpose::PasswordReset.key(email).as_str(),
            encode(&record)?.as_slice(),
        )?;
        let queued = match &user {
            Some(_) => queue_plain_in(
                &txn,
                email,
                now,
                MailKind::ResetCode {
                    code: mail.code,
                    ttl_ms: mail.ttl_ms,
                },
                mail.deadline,
                mail.message_token,
            )?,
            None => 0,
        };
        txn.commit()?;
        Ok(SendOutcome::Accepted {
            account_exists: user.is_some(),
            queued,
            superseded: false,
        })
    }

    pub(super) fn account_code_checked(
        &self,
        purpose: CodePurpose,
        subject: &str,
        now: UnixMillis,
        max_attempts: u32,
        matches: &dyn Fn(&PendingOtp) -> bool,
    ) -> Result<AccountCodeCheck, StoreError> {
        let key = purpose.key(subject);
        let txn = self.write_txn()?;
        let verdict = {
            let mut codes = txn.open_table(ACCOUNT_CODES)?;
            let stored: Option<AccountCode> = match codes.get(key.as_str())? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            match stored {
                None => AccountCodeCheck::Missing,
                Some(c) if now >= c.pending.expires_at => {
                    codes.remove(key.as_str())?;
                    AccountCodeCheck::Expired
                }
                Some(c) if c.pending.attempts >= max_attempts => AccountCodeCheck::Exhausted,
                Some(c) if matches(&c.pending) => AccountCodeCheck::Valid(c),
                Some(mut c) => {
                    c.pending.attempts += 1;
                    codes.insert(key.as_str(), encode(&c)?.as_slice())?;
                    AccountCodeCheck::Wrong
                }
            }
        };
        match verdict {
            AccountCodeCheck::Expired | AccountCodeCheck::Wrong => txn.commit()?,
            AccountCodeCheck::Missing
            | AccountCodeCheck::Exhausted
            | AccountCodeCheck::Valid(_) => txn.abort()?,
        }
        Ok(verdict)
    }

    pub(super) fn reset_completed(
        &self,
        email: &str,
        code: &AccountCode,
        password_hash: &str,
        token: &TokenHash,
        session: &Session,
        notice: Notice,
    ) -> Result<Option<UserChange>, StoreError> {
        let key = CodePurpose::PasswordReset.key(email);
        let now = session.created_at;
        let txn = self.write_txn()?;
        if !still_pending_in(&txn, &key, code, now)? {
            return Ok(None);
        }
        remove_code_in(&txn, &key)?;
        let user = Self::user_in(&txn, email)?
            .filter(|u| !u.disabled && Some(u.id) == code.user_id && session.user_id == u.id);
        let Some(mut user) = user else {
            // The account changed hands or was disabled since: the code is void.
            txn.commit()?;
            return Ok(None);
        };
        user.password_hash = password_hash.to_string();
        put_user_in(&txn, &user)?;
        let ended_sessions = delete_user_sessions_in(&txn, user.id)?;
        insert_session_in(&txn, token, session)?;
        queue_notice_in(&txn, email, now, notice)?;
        txn.commit()?;
        Ok(Some(UserChange {
            user,
            ended_sessions,
        }))
    }

    pub(super) fn password_changed(
        &self,
        user_id: u64,
        expected_hash: &str,
        new_hash: &str,
        token: &TokenHash,
        session: &Session,
        notice: Notice,
    ) -> Result<Option<UserChange>, StoreError> {
        let txn = self.write_txn()?;
        let Some(mut user) = user_by_id_in(&txn, user_id)? else {
            return Ok(None);
        };
        if user.disabled || user.password_hash != expected_hash {
            return Ok(None);
        }
        user.password_hash = new_hash.to_string();
        put_user_in(&txn, &user)?;
        // A reset code asked for before the change must not undo it.
        remove_code_in(&txn, &CodePurpose::PasswordReset.key(&user.email))?;
        let ended_sessions = delete_user_sessions_in(&txn, user.id)?;
        insert_session_in(&txn, token, session)?;
        queue_notice_in(&txn, &user.email, session.created_at, notice)?;
        txn.commit()?;
        Ok(Some(UserChange {
            user,
            ended_sessions,
        }))
    }

    pub(super) fn email_change_requested(
        &self,
        user_id: u64,
        new_email: &str,
        now: UnixMillis,
        limit: SendLimit,
        code: PendingOtp,
        mails: EmailChangeMails,
    ) -> Result<SendOutcome, StoreError> {
        let txn = self.write_txn()?;
        for key in [change_sends_by(user_id), change_sends_to(new_email)] {
            if let Some(retry_after_ms) = count_send_in(&txn, &key, now, limit)? {
                return Ok(SendOutcome::Limited { retry_after_ms });
            }
        }
        let Some(user) = user_by_id_in(&txn, user_id)? else {
            // Deleted meanwhile: nothing to change, nothing to tell.
            return Ok(SendOutcome::Accepted {
                account_exists: false,
                queued: 0,
                superseded: false,
            });
        };
        let in_use = txn.open_table(USERS_BY_EMAIL)?.get(new_email)?.is_some();
        // Kept even when the address is in use: never mailed then, it cannot
        // complete, but guesses against it count like against a real one.
        let record = AccountCode {
            pending: code,
            user_id: Some(user_id),
            new_email: Some(new_email.to_string()),
        };
        txn.open_table(ACCOUNT_CODES)?.insert(
            CodePurpose::EmailChange.key(&user_id.to_string()).as_str(),
            encode(&record)?.as_slice(),
        )?;
        let queued = if in_use {
            queue_notice_in(&txn, new_email, now, mails.in_use)?
        } else {
            let mail = mails.code;
            queue_plain_in(
                &txn,
                new_email,
                now,
                MailKind::EmailChangeCode {
                    code: mail.code,
                    ttl_ms: mail.ttl_ms,
                },
                mail.deadline,
                mail.message_token,
            )?
        };
        queue_notice_in(&txn, &user.email, now, mails.old_address)?;
        txn.commit()?;
        Ok(SendOutcome::Accepted {
            account_exists: in_use,
            queued,
            superseded: false,
        })
    }

    pub(super) fn email_change_completed(
        &self,
        user_id: u64,
        code: &AccountCode,
        keep: &TokenHash,
        now: UnixMillis,
    ) -> Result<Option<EmailChanged>, StoreError> {
        let key = CodePurpose::EmailChange.key(&user_id.to_string());
        let txn = self.write_txn()?;
        if !still_pending_in(&txn, &key, code, now)? {
            return Ok(None);
        }
        let Some(new_email) = remove_code_in(&txn, &key)?.and_then(|c| c.new_email) else {
            txn.commit()?;
            return Ok(None);
        };
        let user = user_by_id_in(&txn, user_id)?.filter(|u| !u.disabled);
        let taken = txn
            .open_table(USERS_BY_EMAIL)?
            .get(new_email.as_str())?
            .is_some();
        let Some(mut user) = user.filter(|_| !taken) else {
            txn.commit()?;
            return Ok(None);
        };
        let old_email = std::mem::replace(&mut user.email, new_email.clone());
        put_user_in(&txn, &user)?;
        {
            let mut by_email = txn.open_table(USERS_BY_EMAIL)?;
            by_email.remove(old_email.as_str())?;
            by_email.insert(new_email.as_str(), user.id)?;
        }
        // Codes tied to either address are void: a reset of the old one, a
        // sign-up waiting on the new one.
        remove_code_in(&txn, &CodePurpose::PasswordReset.key(&old_email))?;
        txn.open_table(OTPS)?.remove(new_email.as_str())?;
        let mut ended_sessions = Vec::new();
        for (hash, _) in sessions_in(&txn, user.id)? {
            if hash == *keep {
                continue;
            }
            if delete_session_in(&txn, &hash)? {
                ended_sessions.push(hash);
            }
        }
        {
            let mut sessions = txn.open_table(SESSIONS)?;
            let kept: Option<Session> = match sessions.get(keep.as_slice())? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            if let Some(mut s) = kept.filter(|s| s.user_id == user.id) {
                s.email = new_email.clone();
                sessions.insert(keep.as_slice(), encode(&s)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(Some(EmailChanged {
            user,
            old_email,
            ended_sessions,
        }))
    }

    pub(super) fn sessions_of(
        &self,
        user_id: u64,
    ) -> Result<Vec<(TokenHash, Session)>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_multimap_table(USER_SESSIONS)?;
        let sessions = txn.open_table(SESSIONS)?;
        let mut out = Vec::new();
        for v in index.get(user_id)? {
            let Ok(hash) = <TokenHash>::try_from(v?.value()) else {
                continue;
            };
            if let Some(s) = sessions.get(hash.as_slice())? {
                out.push((hash, decode(s.value())?));
            }
        }
        Ok(out)
    }

    pub(super) fn account_deleted(&self, user_id: u64) -> Result<Option<UserChange>, StoreError> {
        let txn = self.write_txn()?;
        let Some(user) = user_by_id_in(&txn, user_id)? else {
            return Ok(None);
        };
        let email = user.email.as_str();
        let ended_sessions = delete_user_sessions_in(&txn, user.id)?;
        // Linked OIDC identities go with the account.
        super::redb_oidc::unlink_in(&txn, user.id, None)?;
        txn.open_table(USERS)?.remove(user.id)?;
        txn.open_table(USERS_BY_EMAIL)?.remove(email)?;
        remove_code_in(&txn, &CodePurpose::PasswordReset.key(email))?;
        let change = remove_code_in(&txn, &CodePurpose::EmailChange.key(&user.id.to_string()))?;
        txn.open_table(OTPS)?.remove(email)?;
        delete_mail_to_in(&txn, email)?;
        if let Some(pending_address) = change.and_then(|c| c.new_email) {
            // The code mail to the address the account was moving to.
            delete_mail_to_in(&txn, &pending_address)?;
        }
        {
            let mut sends = txn.open_table(OTP_SENDS)?;
            for key in [
                email.to_string(),
                reset_sends(email),
                change_sends_to(email),
                change_sends_by(user.id),
            ] {
                sends.remove(key.as_str())?;
            }
        }
        txn.commit()?;
        Ok(Some(UserChange {
            user,
            ended_sessions,
        }))
    }

    pub(super) fn notice_queued(
        &self,
        to: &str,
        now: UnixMillis,
        notice: Notice,
    ) -> Result<u64, StoreError> {
        let txn = self.write_txn()?;
        let id = queue_notice_in(&txn, to, now, notice)?;
        txn.commit()?;
        Ok(id)
    }

    pub(super) fn codes_pending(
        &self,
        user: &User,
        now: UnixMillis,
    ) -> Result<PendingCodes, StoreError> {
        let txn = self.db.begin_read()?;
        let codes = txn.open_table(ACCOUNT_CODES)?;
        let live = |key: String| -> Result<bool, StoreError> {
            Ok(match codes.get(key.as_str())? {
                Some(v) => {
                    let c: AccountCode = decode(v.value())?;
                    c.user_id == Some(user.id) && now < c.pending.expires_at
                }
                None => false,
            })
        };
        Ok(PendingCodes {
            password_reset: live(CodePurpose::PasswordReset.key(&user.email))?,
            email_change: live(CodePurpose::EmailChange.key(&user.id.to_string()))?,
        })
    }

    pub(super) fn traces_of(&self, email: &str) -> Result<Traces, StoreError> {
        let txn = self.db.begin_read()?;
        let user_id = txn
            .open_table(USERS_BY_EMAIL)?
            .get(email)?
            .map(|v| v.value());
        let mut traces = Traces {
            user: user_id.is_some(),
            ..Traces::default()
        };
        for row in txn.open_table(SESSIONS)?.iter()? {
            let (_, v) = row?;
            let s: Session = decode(v.value())?;
            if s.email == email || Some(s.user_id) == user_id {
                traces.sessions += 1;
            }
        }
        let reset_key = CodePurpose::PasswordReset.key(email);
        for row in txn.open_table(ACCOUNT_CODES)?.iter()? {
            let (k, v) = row?;
            let c: AccountCode = decode(v.value())?;
            let names_it = k.value() == reset_key
                || c.new_email.as_deref() == Some(email)
                || (user_id.is_some() && c.user_id == user_id);
            traces.codes += usize::from(names_it);
        }
        if txn.open_table(OTPS)?.get(email)?.is_some() {
            traces.codes += 1;
        }
        traces.mails = redb_outbox::mail_to(&txn.open_table(OUTBOX)?, email)?.len();
        let sends = txn.open_table(OTP_SENDS)?;
        for key in [
            email.to_string(),
            reset_sends(email),
            change_sends_to(email),
        ] {
            traces.send_counters += usize::from(sends.get(key.as_str())?.is_some());
        }
        let suffix = format!(":{email}");
        for row in txn.open_table(THROTTLES)?.iter()? {
            let (k, _) = row?;
            traces.send_counters += usize::from(k.value().ends_with(&suffix));
        }
        Ok(traces)
    }

    /// Removes expired account codes; returns how many.
    pub(super) fn sweep_account_codes(&self, now: UnixMillis) -> Result<usize, StoreError> {
        let dead: Vec<String> = {
            let txn = self.db.begin_read()?;
            let codes = txn.open_table(ACCOUNT_CODES)?;
            let mut dead = Vec::new();
            for row in codes.iter()? {
                let (k, v) = row?;
                let c: AccountCode = decode(v.value())?;
                if now >= c.pending.expires_at {
                    dead.push(k.value().to_string());
                }
            }
            dead
        };
        if dead.is_empty() {
            return Ok(0);
        }
        let txn = self.write_txn()?;
        let mut removed = 0;
        {
            let mut codes = txn.open_table(ACCOUNT_CODES)?;
            for key in &dead {
                let expired = match codes.get(key.as_str())? {
                    Some(v) => now >= decode::<AccountCode>(v.value())?.pending.expires_at,
                    None => false,
                };
                if expired {
                    codes.remove(key.as_str())?;
                    removed += 1;
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

/// The sessions of one user inside a write transaction.
fn sessions_in(
    txn: &WriteTransaction,
    user_id: u64,
) -> Result<Vec<(TokenHash, Session)>, StoreError> {
    let index = txn.open_multimap_table(USER_SESSIONS)?;
    let sessions = txn.open_table(SESSIONS)?;
    let mut out = Vec::new();
    for v in index.get(user_id)? {
        let Ok(hash) = <TokenHash>::try_from(v?.value()) else {
            continue;
        };
        if let Some(s) = sessions.get(hash.as_slice())? {
            out.push((hash, decode(s.value())?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionOrigin;
    use crate::store::traits::*;

    #[test]
    fn a_session_written_before_origins_were_kept_still_reads() {
        // The exact JSON the previous binary wrote for a session.
        let old = br#"{"user_id":7,"email":"a@x.io","created_at":1,"last_seen":2}"#;
        let s: Session = decode(old).unwrap();
        assert_eq!((s.user_id, s.ip, s.user_agent), (7, None, None));
        let new = Session {
            ip: Some("127.0.0.1".into()),
            user_agent: Some("curl/8".into()),
            ..s
        };
        assert_eq!(decode::<Session>(&encode(&new).unwrap()).unwrap(), new);
        let _ = SessionOrigin::default();
    }

    fn pending(expires_at: u64) -> PendingOtp {
        PendingOtp {
            salt: [3; 16],
            code_hash: [4; 32],
            expires_at,
            attempts: 0,
        }
    }

    #[test]
    fn reset_codes_live_apart_from_sign_up_codes_and_unknown_emails_get_decoys() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let limit = SendLimit {
            max: 2,
            window_ms: 1000,
        };
        let mail = || OtpMail {
            code: "123456".into(),
            ttl_ms: 1000,
            deadline: 1000,
            message_token: "t".into(),
        };
        s.add_user("a@x.io", "h", 0).unwrap().unwrap();
        let known = s
            .request_password_reset("a@x.io", 1, limit, pending(900), mail())
            .unwrap();
        let unknown = s
            .request_password_reset("b@x.io", 1, limit, pending(900), mail())
            .unwrap();
        assert!(
            matches!(known, SendOutcome::Accepted { account_exists: true, queued, .. } if queued > 0)
        );
        assert!(matches!(
            unknown,
            SendOutcome::Accepted {
                account_exists: false,
                queued: 0,
                ..
            }
        ));
        // The sign-up check never sees a reset code.
        assert_eq!(
            s.check_otp("a@x.io", 2, 5, &|_| true).unwrap(),
            crate::store::OtpCheck::Missing
        );
        // The decoy counts wrong guesses like the real code.
        for email in ["a@x.io", "b@x.io"] {
            assert_eq!(
                s.check_account_code(CodePurpose::PasswordReset, email, 2, 1, &|_| false)
                    .unwrap(),
                AccountCodeCheck::Wrong
            );
            assert_eq!(
                s.check_account_code(CodePurpose::PasswordReset, email, 2, 1, &|_| true)
                    .unwrap(),
                AccountCodeCheck::Exhausted
            );
        }
        s.request_password_reset("b@x.io", 2, limit, pending(900), mail())
            .unwrap();
        assert!(matches!(
            s.request_password_reset("b@x.io", 3, limit, pending(900), mail())
                .unwrap(),
            SendOutcome::Limited { .. }
        ));
        let AccountCodeCheck::Valid(decoy) = s
            .check_account_code(CodePurpose::PasswordReset, "b@x.io", 3, 5, &|_| true)
            .unwrap()
        else {
            panic!("expected the decoy to match")
        };
        let session = Session {
            user_id: 0,
            email: "b@x.io".into(),
            created_at: 3,
            last_seen: 3,
            ip: None,
            user_agent: None,
        };
        let notice = Notice {
            kind: MailKind::PasswordChanged,
            deadline: 1000,
            message_token: "n".into(),
        };
        assert_eq!(
            s.complete_password_reset("b@x.io", &decoy, "h2", &[1; 32], &session, notice)
                .unwrap(),
            None,
            "a decoy never completes"
        );
    }
}
