//! The mail outbox in redb: queued messages, a due-time index for the
//! delivery worker, and at most one unsent message per email so a newer
//! send-otp replaces (drops) the older unsent mail.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::redb_store::{META, RedbStore, db_err, decode, encode};
use super::{MailKind, OtpMail, OutboxBatch, QueuedMail, StoreError, UnixMillis};

/// outbox id → JSON [`QueuedMail`].
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// (next attempt time, outbox id) → (): the worker's schedule.
pub(super) const OUTBOX_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("outbox_due");
/// normalised email → id of its unsent message.
pub(super) const OUTBOX_BY_EMAIL: TableDefinition<&str, u64> =
    TableDefinition::new("outbox_by_email");

/// Creates the outbox tables (read transactions cannot open missing ones).
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(OUTBOX).map_err(db_err)?;
    txn.open_table(OUTBOX_DUE).map_err(db_err)?;
    txn.open_table(OUTBOX_BY_EMAIL).map_err(db_err)?;
    Ok(())
}

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
        .open_table(OUTBOX_BY_EMAIL)
        .map_err(db_err)?
        .get(email)
        .map_err(db_err)?
        .map(|v| v.value());
    let superseded = match unsent {
        Some(old) => delete_in(txn, old)?,
        None => false,
    };
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let id = meta
        .get("next_outbox_id")
        .map_err(db_err)?
        .map(|v| v.value())
        .unwrap_or(1);
    meta.insert("next_outbox_id", id + 1).map_err(db_err)?;
    let kind = if account_exists {
        MailKind::AccountExists
    } else {
        MailKind::SignupCode {
            code: mail.code,
            ttl_ms: mail.ttl_ms,
        }
    };
    let entry = QueuedMail {
        id,
        to: email.to_string(),
        kind,
        message_token: mail.message_token,
        queued_at: now,
        deadline: mail.deadline,
        attempts: 0,
        next_attempt_at: now,
    };
    txn.open_table(OUTBOX)
        .map_err(db_err)?
        .insert(id, encode(&entry)?.as_slice())
        .map_err(db_err)?;
    txn.open_table(OUTBOX_DUE)
        .map_err(db_err)?
        .insert((now, id), ())
        .map_err(db_err)?;
    txn.open_table(OUTBOX_BY_EMAIL)
        .map_err(db_err)?
        .insert(email, id)
        .map_err(db_err)?;
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
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let id = meta
        .get("next_outbox_id")
        .map_err(db_err)?
        .map(|v| v.value())
        .unwrap_or(1);
    meta.insert("next_outbox_id", id + 1).map_err(db_err)?;
    let entry = QueuedMail {
        id,
        to: to.to_string(),
        kind,
        message_token,
        queued_at: now,
        deadline,
        attempts: 0,
        next_attempt_at: now,
    };
    txn.open_table(OUTBOX)
        .map_err(db_err)?
        .insert(id, encode(&entry)?.as_slice())
        .map_err(db_err)?;
    txn.open_table(OUTBOX_DUE)
        .map_err(db_err)?
        .insert((now, id), ())
        .map_err(db_err)?;
    Ok(id)
}

/// Ids of every queued message to `to` (a scan: the outbox is small).
pub(super) fn mail_to(
    outbox: &impl ReadableTable<u64, &'static [u8]>,
    to: &str,
) -> Result<Vec<u64>, StoreError> {
    let mut ids = Vec::new();
    for row in outbox.iter().map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        let entry: QueuedMail = decode(v.value())?;
        if entry.to == to {
            ids.push(k.value());
        }
    }
    Ok(ids)
}

/// Deletes every queued message to `to`; returns how many.
pub(super) fn delete_mail_to_in(txn: &WriteTransaction, to: &str) -> Result<usize, StoreError> {
    let ids = mail_to(&txn.open_table(OUTBOX).map_err(db_err)?, to)?;
    for id in &ids {
        delete_in(txn, *id)?;
    }
    Ok(ids.len())
}

/// Deletes message `id` and its index rows; `false` if it did not exist.
fn delete_in(txn: &WriteTransaction, id: u64) -> Result<bool, StoreError> {
    let removed: Option<QueuedMail> = match txn
        .open_table(OUTBOX)
        .map_err(db_err)?
        .remove(id)
        .map_err(db_err)?
    {
        Some(v) => Some(decode(v.value())?),
        None => None,
    };
    let Some(entry) = removed else {
        return Ok(false);
    };
    txn.open_table(OUTBOX_DUE)
        .map_err(db_err)?
        .remove((entry.next_attempt_at, id))
        .map_err(db_err)?;
    let mut by_email = txn.open_table(OUTBOX_BY_EMAIL).map_err(db_err)?;
    let points_here = by_email
        .get(entry.to.as_str())
        .map_err(db_err)?
        .is_some_and(|v| v.value() == id);
    if points_here {
        by_email.remove(entry.to.as_str()).map_err(db_err)?;
    }
    Ok(true)
}

impl RedbStore {
    pub(super) fn outbox_due_at(
        &self,
        now: UnixMillis,
        max: usize,
    ) -> Result<OutboxBatch, StoreError> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().map_err(db_err)?;
        let schedule = txn.open_table(OUTBOX_DUE).map_err(db_err)?;
        let outbox = txn.open_table(OUTBOX).map_err(db_err)?;
        let mut batch = OutboxBatch {
            depth: outbox.len().map_err(db_err)?,
            ..OutboxBatch::default()
        };
        for row in schedule.iter().map_err(db_err)? {
            let (key, _) = row.map_err(db_err)?;
            let (at, id) = key.value();
            if at > now || batch.due.len() >= max {
                batch.next_due = Some(at);
                break;
            }
            if let Some(v) = outbox.get(id).map_err(db_err)? {
                batch.due.push(decode(v.value())?);
            }
        }
        Ok(batch)
    }

    pub(super) fn outbox_entry(&self, id: u64) -> Result<Option<QueuedMail>, StoreError> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().map_err(db_err)?;
        let outbox = txn.open_table(OUTBOX).map_err(db_err)?;
        match outbox.get(id).map_err(db_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    pub(super) fn outbox_set_next_attempt(
        &self,
        id: u64,
        attempts: u32,
        next_attempt_at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let txn = self.write_txn()?;
        {
            let mut outbox = txn.open_table(OUTBOX).map_err(db_err)?;
            let current: Option<QueuedMail> = match outbox.get(id).map_err(db_err)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            let Some(mut entry) = current else {
                return Ok(false);
            };
            let mut schedule = txn.open_table(OUTBOX_DUE).map_err(db_err)?;
            schedule
                .remove((entry.next_attempt_at, id))
                .map_err(db_err)?;
            schedule.insert((next_attempt_at, id), ()).map_err(db_err)?;
            entry.attempts = attempts;
            entry.next_attempt_at = next_attempt_at;
            outbox
                .insert(id, encode(&entry)?.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(true)
    }

    pub(super) fn outbox_delete(&self, id: u64) -> Result<bool, StoreError> {
        let txn = self.write_txn()?;
        let existed = delete_in(&txn, id)?;
        txn.commit().map_err(db_err)?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PendingOtp, SendLimit, SendOutcome, Store};

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
        assert_eq!(s.outbox_get(1).unwrap().unwrap().next_attempt_at, 500);
        assert!(s.outbox_remove(1).unwrap());
        assert!(!s.outbox_remove(1).unwrap());
        assert_eq!(s.outbox_get(1).unwrap(), None);
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
