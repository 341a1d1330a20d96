//! Benchmark helper (used by `bench/run`, scenario "scale"): fills a fresh
//! Gatehouse store with many users and live sessions before Gatehouse starts,
//! and writes some of the session tokens to a file so a load generator can
//! spread requests over them.
//!
//! Going through `Store::insert_session` would cost one durable commit per
//! session (minutes for a million), so rows are written in large redb
//! transactions using the store's table layout, then the result is checked
//! through the library's own `RedbStore`/`Store` API: if the layout ever
//! drifts from `src/store/redb_store.rs`, seeding fails loudly instead of
//! producing a store Gatehouse cannot read.
//!
//! Usage:
//!   cargo run --release --example bench_seed_store -- \
//!       --config bench.toml --users 100000 --sessions 1000000 \
//!       --tokens-out tokens.txt --tokens-count 100000

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use gatehouse::seed::Passwords;
use gatehouse::seed::{RedbStore, Session, SessionStore, User, UserStore, now_millis};
use gatehouse::seed::{Sessions, hash_token};
use redb::{Database, Durability, MultimapTableDefinition, TableDefinition};

// Mirrors of the table definitions in src/store/redb_store.rs (private there).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const USERS_BY_EMAIL: TableDefinition<&str, u64> = TableDefinition::new("users_by_email");
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const USER_SESSIONS: MultimapTableDefinition<u64, &[u8]> =
    MultimapTableDefinition::new("user_sessions");

/// Rows written per transaction: large enough to amortise commits, small
/// enough to keep the dirty set modest.
const BATCH: u64 = 50_000;

/// The password every seeded user has (only its argon2 hash is stored).
const SEEDED_PASSWORD: &str = "bench-password-1";

struct Args {
    config: PathBuf,
    users: u64,
    sessions: u64,
    tokens_out: Option<PathBuf>,
    tokens_count: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: PathBuf::new(),
        users: 100_000,
        sessions: 1_000_000,
        tokens_out: None,
        tokens_count: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--config" => args.config = PathBuf::from(value()?),
            "--users" => args.users = number(value()?)?,
            "--sessions" => args.sessions = number(value()?)?,
            "--tokens-out" => args.tokens_out = Some(PathBuf::from(value()?)),
            "--tokens-count" => args.tokens_count = number(value()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.config.as_os_str().is_empty() {
        return Err("--config FILE is required".into());
    }
    if args.users == 0 {
        return Err("--users must be at least 1".into());
    }
    Ok(args)
}

fn email_of(id: u64) -> String {
    format!("seeded-{id:07}@bench.invalid")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_seed_store: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let config = gatehouse::Config::load(&args.config).map_err(|e| e.to_string())?;
    let path = config.store.path.clone();
    if path.exists() {
        return Err(format!(
            "{} exists; seed only a fresh store",
            path.display()
        ));
    }

    // Create the file with Gatehouse's own schema (tables, schema version).
    drop(RedbStore::open(&path).map_err(|e| e.to_string())?);

    // One real argon2 hash shared by every seeded user: hashing 100k
    // passwords would take half an hour and measure nothing.
    let passwords = Passwords::new(&config.password, 1).map_err(|e| e.to_string())?;
    let password_hash = passwords
        .hash(SEEDED_PASSWORD.to_string())
        .await
        .map_err(|e| e.to_string())?;

    let started = Instant::now();
    let now = now_millis();
    let db = Database::open(&path).map_err(|e| e.to_string())?;
    let mut tokens_file = match &args.tokens_out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => None,
    };

    let mut next = 1u64;
    while next <= args.users {
        let end = (next + BATCH - 1).min(args.users);
        write_batch(&db, |txn| {
            let mut users = txn.open_table(USERS)?;
            let mut by_email = txn.open_table(USERS_BY_EMAIL)?;
            for id in next..=end {
                let user = User {
                    id,
                    email: email_of(id),
                    password_hash: password_hash.clone(),
                    disabled: false,
                    created_at: now,
                };
                let json = serde_json::to_vec(&user).expect("a user serialises");
                users.insert(id, json.as_slice())?;
                by_email.insert(user.email.as_str(), id)?;
            }
            Ok(())
        })?;
        next = end + 1;
    }

    let mut first_token = None;
    let mut next = 0u64;
    while next < args.sessions {
        let end = (next + BATCH).min(args.sessions);
        let mut lines = Vec::new();
        write_batch(&db, |txn| {
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut by_user = txn.open_multimap_table(USER_SESSIONS)?;
            for n in next..end {
                let user_id = n % args.users + 1;
                let token = Sessions::new_token();
                let session = Session {
                    user_id,
                    email: email_of(user_id),
                    created_at: now,
                    last_seen: now,
                    ip: None,
                    user_agent: None,
                };
                let json = serde_json::to_vec(&session).expect("a session serialises");
                sessions.insert(token.hash.as_slice(), json.as_slice())?;
                by_user.insert(user_id, token.hash.as_slice())?;
                if n < args.tokens_count {
                    lines.push(token.token.clone());
                }
                if first_token.is_none() {
                    first_token = Some((token.token, user_id));
                }
            }
            Ok(())
        })?;
        if let Some(f) = tokens_file.as_mut() {
            for line in lines {
                writeln!(f, "{line}").map_err(|e| e.to_string())?;
            }
        }
        next = end;
    }

    // Set the id counter past the seeded users, with a durable commit.
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| e.to_string())?;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        meta.insert("next_user_id", args.users + 1)
            .map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())?;
    drop(db);
    if let Some(mut f) = tokens_file {
        f.flush().map_err(|e| e.to_string())?;
    }
    let seeded_in = started.elapsed();

    // Read back through the library: the layout must be what Gatehouse reads.
    let store = RedbStore::open(&path).map_err(|e| e.to_string())?;
    let user = store
        .user_by_email(&email_of(args.users))
        .map_err(|e| e.to_string())?
        .ok_or("seeded user not found through Store::user_by_email")?;
    if user.id != args.users {
        return Err(format!(
            "seeded user has id {}, expected {}",
            user.id, args.users
        ));
    }
    if let Some((token, user_id)) = first_token {
        let session = store
            .session(&hash_token(&token))
            .map_err(|e| e.to_string())?
            .ok_or("seeded session not found through Store::session")?;
        if session.user_id != user_id {
            return Err("seeded session belongs to the wrong user".into());
        }
    }
    drop(store);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "seeded {} users and {} sessions into {} in {:.1}s ({} bytes)",
        args.users,
        args.sessions,
        path.display(),
        seeded_in.as_secs_f64(),
        size
    );
    Ok(())
}

/// Runs `fill` in one write transaction committed without fsync; the final
/// durable commit in `run` makes everything durable at once.
fn write_batch(
    db: &Database,
    fill: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(Durability::None)
        .map_err(|e| e.to_string())?;
    fill(&txn).map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())
}
