//! The store's id counters (user ids, outbox message ids) and where each
//! backend keeps them: a row of the redb `meta` table holding the next id,
//! or a PostgreSQL sequence. Ids start at 1 and are never handed out twice,
//! so a deleted user's id cannot come to name a new account. The backends
//! take ids through their own `next_id_in`, the migration copies counters
//! by these names.

/// One id counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdCounter {
    /// Ids of [`super::User`]s.
    User,
    /// Ids of [`super::QueuedMail`]s.
    Outbox,
}

impl IdCounter {
    /// The key of the redb `meta` row that holds the next id.
    pub(super) fn meta_key(self) -> &'static str {
        match self {
            IdCounter::User => "next_user_id",
            IdCounter::Outbox => "next_outbox_id",
        }
    }

    /// The PostgreSQL sequence (created in `pg_schema`).
    pub(super) fn sequence(self) -> &'static str {
        match self {
            IdCounter::User => "gh_user_ids",
            IdCounter::Outbox => "gh_outbox_ids",
        }
    }
}
