//! The mail outbox in redb: queued messages, a due-time index for the
//! delivery worker, and at most one unsent message per email so a newer
//! send-otp replaces (drops) the older unsent mail.

use redb::{ReadableTable, WriteTransaction};

use super::ids::IdCounter;
use super::redb_tables::{OUTBOX, OUTBOX_BY_EMAIL, OUTBOX_DUE, decode, encode, next_id_in};
use super::{MailKind, OtpMail, QueuedMail, StoreError, UnixMillis};

/// Queues the send-otp mail inside the caller's transaction, dropping the
/// email's older unsent message. Returns the new id and whether one was dropped.
pub(super) fn queue_in(
    txn: &WriteTransaction,
    email: &str,
    now: UnixMillis,
    account_exists: bool,
    mail: OtpMail,
) -> Result<(u64, bool), StoreError> {
    let unsent = txn
        .open_table(OUTBOX_BY_EMAIL)?
        .get(email)?
        .map(|v| v.value());
    let superseded = match unsent {
        Some(old) => delete_in(txn, old)?,
        None => false,
    };
    let kind = mail.kind(account_exists);
    let id = queue_plain_in(txn, email, now, kind, mail.deadline, mail.message_token)?;
    txn.open_table(OUTBOX_BY_EMAIL)?.insert(email, id)?;
    Ok((id, superseded))
}

/// Queues a message to `to` inside the caller's transaction without
/// replacing anything: notices and account-code mails. Returns its id.
pub(super) fn queue_plain_in(
    txn: &WriteTransaction,
    to: &str,
    now: UnixMillis,
    kind: MailKind,
    deadline: UnixMillis,
    message_token: String,
) -> Result<u64, StoreError> {
    let id = next_id_in(txn, IdCounter::Outbox)?;
    let entry = QueuedMail::queued(id, to, kind, message_token, now, deadline);
    txn.open_table(OUTBOX)?
        .insert(id, encode(&entry)?.as_slice())?;
    txn.open_table(OUTBOX_DUE)?.insert((now, id), ())?;
    Ok(id)
}

/// Ids of every queued message to `to` (a scan: the outbox is small).
pub(super) fn mail_to(
    outbox: &impl ReadableTable<u64, &'static [u8]>,
    to: &str,
) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::new();
    for row in outbox.iter()? {
        let (k, v) = row?;
        let entry: QueuedMail = decode(v.value())?;
        if entry.to == to {
            ids.push(k.value());
        }
    }
    Ok(ids)
}

/// Deletes every queued message to `to`; returns how many.
pub(super) fn delete_mail_to_in(txn: &WriteTransaction, to: &str) -> Result<usize, StoreError> {
    let ids = mail_to(&txn.open_table(OUTBOX)?, to)?;
    for id in &ids {
        delete_in(txn, *id)?;
    }
    Ok(ids.len())
}

/// Deletes message `id` and its index rows; `false` if it did not exist.
pub(super) fn delete_in(txn: &WriteTransaction, id: u64) -> Result<bool, StoreError> {
    let removed: Option<QueuedMail> = match txn.open_table(OUTBOX)?.remove(id)? {
        Some(v) => Some(decode(v.value())?),
        None => None,
    };
    let Some(entry) = removed else {
        return Ok(false);
    };
    txn.open_table(OUTBOX_DUE)?
        .remove((entry.next_attempt_at, id))?;
    let mut by_email = txn.open_table(OUTBOX_BY_EMAIL)?;
    let points_here = by_email
        .get(entry.to.as_str())?
        .is_some_and(|v| v.value() == id);
    if points_here {
        by_email.remove(entry.to.as_str())?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::traits::*;
    use crate::store::{OutboxBatch, PendingOtp, RedbStore, SendLimit, SendOutcome};

    const LIMIT: SendLimit = SendLimit {
        max: 100,
        window_ms: 1000,
    };

    fn temp_store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        (dir, store)
    }

    fn send(s: &RedbStore, email: &str, now: u64, code: &str) -> SendOutcome {
        let otp = PendingOtp {
            salt: [1; 16],
            code_hash: [2; 32],
            expires_at: now + 1000,
            attempts: 0,
        };
        let mail = OtpMail {
            code: code.into(),
            ttl_ms: 1000,
            deadline: now + 1000,
            message_token: format!("tok-{now}"),
        };
        s.record_otp_send(email, now, LIMIT, otp, mail).unwrap()
    }

    fn codes(batch: &OutboxBatch) -> Vec<String> {
        batch
            .due
            .iter()
            .map(|m| match &m.kind {
                MailKind::SignupCode { code, .. } => code.clone(),
                _ => "notice".into(),
            })
            .collect()
    }

    #[test]
    fn a_newer_send_replaces_the_unsent_mail() {
        let (_d, s) = temp_store();
        send(&s, "a@x.io", 10, "111111");
        send(&s, "b@x.io", 11, "222222");
        let outcome = send(&s, "a@x.io", 12, "333333");
        assert_eq!(
            outcome,
            SendOutcome::Accepted {
                account_exists: false,
                queued: 3,
                superseded: true
            }
        );
        let batch = s.outbox_due(100, 10).unwrap();
        assert_eq!(codes(&batch), ["222222", "333333"]);
        assert_eq!(batch.depth, 2);
        assert_eq!(batch.next_due, None);
    }

    #[test]
    fn reschedule_moves_a_message_and_remove_forgets_it() {
        let (_d, s) = temp_store();
        send(&s, "a@x.io", 10, "111111");
        send(&s, "b@x.io", 11, "222222");
        assert!(s.outbox_reschedule(1, 1, 500).unwrap());
        let batch = s.outbox_due(100, 10).unwrap();
        assert_eq!(codes(&batch), ["222222"]);
        assert_eq!(batch.next_due, Some(500));
        let later = s.outbox_due(500, 10).unwrap();
        assert_eq!(later.due[1].id, 1);
        assert_eq!(later.due[1].attempts, 1);
        assert_eq!(s.outbox_get(1, 0).unwrap().unwrap().next_attempt_at, 500);
        assert!(s.outbox_remove(1).unwrap());
        assert!(!s.outbox_remove(1).unwrap());
        assert_eq!(s.outbox_get(1, 0).unwrap(), None);
        assert!(!s.outbox_reschedule(1, 2, 900).unwrap());
        // The email's slot is free again: a new send supersedes nothing.
        assert!(matches!(
            send(&s, "a@x.io", 20, "444444"),
            SendOutcome::Accepted {
                superseded: false,
                ..
            }
        ));
        // `max` bounds the batch; the rest is reported as due now.
        let batch = s.outbox_due(1000, 1).unwrap();
        assert_eq!(batch.due.len(), 1);
        assert_eq!(batch.next_due, Some(20));
    }

    #[test]
    fn the_outbox_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            send(&s, "a@x.io", 10, "111111");
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(codes(&s.outbox_due(100, 10).unwrap()), ["111111"]);
        assert!(!format!("{:?}", s.outbox_due(100, 10).unwrap()).contains("111111"));
    }
}
