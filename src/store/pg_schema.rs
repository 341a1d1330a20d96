//! The PostgreSQL schema: versioned migrations applied at start-up under an
//! advisory lock, so several instances starting together migrate once, and a
//! database written by a newer binary is refused.
//!
//! Tables are prefixed `gh_` so Gatehouse can share a database with others.
//! Deleting a row of `gh_sessions` (for whatever reason: logout, revoke,
//! disable, delete, password change, sweep) fires a trigger that appends the
//! token hash to `gh_revocations` and sends `NOTIFY gatehouse_revocations`;
//! every instance drops the session from its cache (see `pg_revocations`).

use super::StoreError;

/// The schema version this binary writes; migrations are numbered from 1.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// Arbitrary but fixed key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6761_7465_686f_7573; // "gatehous"

/// The channel revocations are announced on.
pub(super) const REVOCATION_CHANNEL: &str = "gatehouse_revocations";

/// Migration `n` is `MIGRATIONS[n - 1]`; never edit one that shipped.
const MIGRATIONS: [&str; 3] = [
    r#"
CREATE TABLE gh_users (
    id bigint PRIMARY KEY,
    email text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at bigint NOT NULL,
    disabled boolean NOT NULL DEFAULT false
);
CREATE SEQUENCE gh_user_ids;
CREATE TABLE gh_sessions (
    token bytea PRIMARY KEY,
    user_id bigint NOT NULL,
    email text NOT NULL,
    created_at bigint NOT NULL,
    last_seen bigint NOT NULL,
    ip text,
    user_agent text
);
CREATE INDEX gh_sessions_by_user ON gh_sessions (user_id);
-- Sign-up codes: JSON PendingOtp.
CREATE TABLE gh_otps (
    email text PRIMARY KEY,
    expires_at bigint NOT NULL,
    record text NOT NULL
);
-- Send-rate windows: JSON list of send times.
CREATE TABLE gh_otp_sends (key text PRIMARY KEY, sends text NOT NULL);
-- Throttle counters: JSON ThrottleRecord.
CREATE TABLE gh_throttles (key text PRIMARY KEY, record text NOT NULL);
CREATE TABLE gh_secrets (name text PRIMARY KEY, value bytea NOT NULL);
-- The mail outbox: JSON QueuedMail; `slot` is the email whose unsent
-- sign-up mail this is (a newer one replaces it), NULL for notices.
CREATE TABLE gh_outbox (
    id bigint PRIMARY KEY,
    to_addr text NOT NULL,
    slot text UNIQUE,
    next_attempt_at bigint NOT NULL,
    -- The instance whose delivery worker claimed it (until next_attempt_at).
    leased_by text,
    record text NOT NULL
);
CREATE SEQUENCE gh_outbox_ids;
CREATE INDEX gh_outbox_due ON gh_outbox (next_attempt_at, id);
-- Reset and email-change codes: JSON AccountCode.
CREATE TABLE gh_account_codes (
    key text PRIMARY KEY,
    expires_at bigint NOT NULL,
    record text NOT NULL
);
-- OpenID Connect: started sign-ins (JSON OidcState) and linked identities.
CREATE TABLE gh_oidc_states (
    key bytea PRIMARY KEY,
    expires_at bigint NOT NULL,
    record text NOT NULL
);
CREATE TABLE gh_identities (
    issuer text NOT NULL,
    subject text NOT NULL,
    user_id bigint NOT NULL,
    provider text NOT NULL,
    record text NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX gh_identities_by_user ON gh_identities (user_id);
CREATE TABLE gh_revocations (
    seq bigserial PRIMARY KEY,
    token bytea NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION gh_session_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
BEGIN
    INSERT INTO gh_revocations (token) VALUES (OLD.token) RETURNING seq INTO s;
    PERFORM pg_notify('gatehouse_revocations', s::text || ':' || encode(OLD.token, 'hex'));
    RETURN OLD;
END
$$;
CREATE TRIGGER gh_sessions_ended AFTER DELETE ON gh_sessions
    FOR EACH ROW EXECUTE FUNCTION gh_session_ended();
"#,
    // 2: second factors (issue 19).
    r#"
-- Each user's factors: JSON MfaRecord (TOTP secret sealed by the key file).
CREATE TABLE gh_mfa (user_id bigint PRIMARY KEY, record text NOT NULL);
-- Passkey credential id -> owner, for discoverable sign-in.
CREATE TABLE gh_passkey_owners (credential_id bytea PRIMARY KEY, user_id bigint NOT NULL);
CREATE INDEX gh_passkey_owners_by_user ON gh_passkey_owners (user_id);
-- Pending second-factor sign-ins and WebAuthn ceremonies: JSON MfaChallenge.
CREATE TABLE gh_mfa_challenges (
    key bytea PRIMARY KEY,
    expires_at bigint NOT NULL,
    record text NOT NULL
);
"#,
    // Version 3 (issue 20): operator-set user groups (JSON list) and sign-up
    // invites.
    r#"
CREATE TABLE gh_user_groups (user_id bigint PRIMARY KEY, groups text NOT NULL);
CREATE TABLE gh_invites (
    email text PRIMARY KEY,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
"#,
];

/// Brings the schema up to [`SCHEMA_VERSION`], holding the advisory lock so
/// concurrent starts apply each migration once.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let outcome = migrate_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(StoreError::from);
    outcome.and(unlocked.map(|_| ()))
}

async fn migrate_locked(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS gh_schema (version bigint NOT NULL)")
        .await?;
    let found: i64 = client
        .query_opt("SELECT version FROM gh_schema", &[])
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: found as u64,
            supported: SCHEMA_VERSION as u64,
        });
    }
    for version in found + 1..=SCHEMA_VERSION {
        let tx = client.transaction().await?;
        tx.batch_execute(MIGRATIONS[(version - 1) as usize]).await?;
        tx.execute("DELETE FROM gh_schema", &[]).await?;
        tx.execute("INSERT INTO gh_schema (version) VALUES ($1)", &[&version])
            .await?;
        tx.commit().await?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}

/// The schema version the database holds (0 before the first start), for
/// `check-config`.
pub(super) async fn version(client: &tokio_postgres::Client) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('gh_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_opt("SELECT version FROM gh_schema", &[])
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0))
}
