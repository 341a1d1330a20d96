//! The operator subcommands: `user …`, `session …`, `backup`, `restore`.
//!
//! Each command goes to the running server over the admin socket; when no
//! server runs (no socket, or nobody accepting on it) it opens the store
//! directly and runs the same [`crate::admin::execute`]. Output is a table
//! for people, or the reply's JSON with `--json` for scripts.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use crate::admin::client::{self, ClientError};
use crate::admin::{IdentityView, Reply, Request, SessionView, UserView, execute};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// Options every operator command takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Configuration file (TOML); names the store and the admin socket.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where a new password comes from.
#[derive(Debug, Args)]
pub struct PasswordInput {
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password itself (visible to `ps` and shell history; for scripts).
    #[arg(long)]
    pub password: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List every user.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Show one user and their sessions.
    Show {
        #[command(flatten)]
        common: Common,
        email: String,
    },
    /// Create an account (no email code needed).
    Add {
        #[command(flatten)]
        common: Common,
        email: String,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Delete an account and end its sessions.
    Delete {
        #[command(flatten)]
        common: Common,
        email: String,
    },
    /// Block sign-in and end every session at once.
    Disable {
        #[command(flatten)]
        common: Common,
        email: String,
    },
    /// Allow sign-in again.
    Enable {
        #[command(flatten)]
        common: Common,
        email: String,
    },
    /// What the store still holds that names an address: account,
    /// sessions, pending codes, queued mail, send counters. After a
    /// deletion every count is zero.
    Traces {
        #[command(flatten)]
        common: Common,
        email: String,
    },
    /// Remove the link between an account and an OIDC provider (the next
    /// sign-in through it links again only by verified email).
    Unlink {
        #[command(flatten)]
        common: Common,
        email: String,
        /// The `[[oidc]]` name, e.g. google.
        provider: String,
    },
    /// Remove every second factor (TOTP, recovery codes, passkeys) of a
    /// user who lost them; ends every session and mails a notice.
    #[command(name = "reset-2fa")]
    Reset2fa {
        #[command(flatten)]
        common: Common,
        email: String,
    },
    /// Replace the password; ends every session of the account.
    SetPassword {
        #[command(flatten)]
        common: Common,
        email: String,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Set the user's groups (forwarded as X-Auth-Groups, matched by
    /// `allow_groups`); takes effect on their next request.
    Groups {
        #[command(flatten)]
        common: Common,
        email: String,
        /// Comma-separated group names (a-z 0-9 - _ .), replacing the old ones.
        #[arg(long, value_delimiter = ',', required_unless_present = "clear")]
        set: Vec<String>,
        /// Remove every group.
        #[arg(long, conflicts_with = "set")]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Let EMAIL sign up under `[signup] mode = "invite"` (send them to the
    /// sign-up page or your app's sign-up form).
    Create {
        #[command(flatten)]
        common: Common,
        email: String,
        /// How long the invite is valid, e.g. 7d, 12h, "1h 30m".
        #[arg(long, default_value = "7d")]
        expires: String,
    },
    /// List invites and when they expire.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Withdraw an invite; a sign-up in progress then fails.
    Revoke {
        #[command(flatten)]
        common: Common,
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List sessions. IDs are the first 16 hex digits of the token's hash:
    /// enough to name a session, useless for using it.
    List {
        #[command(flatten)]
        common: Common,
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
    },
    /// End one session by its ID.
    Revoke {
        #[command(flatten)]
        common: Common,
        id: String,
    },
    /// End every session of one user.
    RevokeAll {
        #[command(flatten)]
        common: Common,
        email: String,
    },
}

/// Why an operator command failed before or after talking to the store.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The admin socket misbehaved.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Opening or using the store directly failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The command itself was refused (unknown user, bad input, …).
    #[error("{0}")]
    Refused(String),
    /// The password could not be read or does not meet the policy.
    #[error("{0}")]
    Password(String),
}

/// What a reply holds, to pick its table.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Users,
    User,
    Sessions,
    Summary,
    Invite,
    Invites,
}

pub fn user(cmd: UserCommand) -> ExitCode {
    let (common, request, shape) = match cmd {
        UserCommand::List { common } => (common, Ok(Request::UserList), Shape::Users),
        UserCommand::Show { common, email } => {
            (common, Ok(Request::UserShow { email }), Shape::User)
        }
        UserCommand::Add {
            common,
            email,
            password,
        } => {
            let hashed = hash_password(&common.config, &password);
            let request = hashed.map(|password_hash| Request::UserAdd {
                email,
                password_hash,
            });
            (common, request, Shape::Summary)
        }
        UserCommand::Traces { common, email } => summary(common, Request::UserTraces { email }),
        UserCommand::Delete { common, email } => summary(common, Request::UserDelete { email }),
        UserCommand::Disable { common, email } => summary(common, Request::UserDisable { email }),
        UserCommand::Reset2fa { common, email } => summary(common, Request::UserReset2fa { email }),
        UserCommand::Enable { common, email } => summary(common, Request::UserEnable { email }),
        UserCommand::Unlink {
            common,
            email,
            provider,
        } => summary(common, Request::UserUnlink { email, provider }),
        UserCommand::SetPassword {
            common,
            email,
            password,
        } => {
            let hashed = hash_password(&common.config, &password);
            let request = hashed.map(|password_hash| Request::UserSetPassword {
                email,
                password_hash,
            });
            (common, request, Shape::Summary)
        }
        UserCommand::Groups {
            common,
            email,
            set,
            clear: _,
        } => summary(common, Request::UserGroups { email, groups: set }),
    };
    run_and_print(&common, request, shape)
}

pub fn invite(cmd: InviteCommand) -> ExitCode {
    let (common, request, shape) = match cmd {
        InviteCommand::Create {
            common,
            email,
            expires,
        } => {
            let request = crate::config::parse_duration(&expires)
                .map(|d| Request::InviteCreate {
                    email,
                    expires_in_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                })
                .map_err(|why| CommandError::Refused(format!("--expires {why}")));
            (common, request, Shape::Invite)
        }
        InviteCommand::List { common } => (common, Ok(Request::InviteList), Shape::Invites),
        InviteCommand::Revoke { common, email } => summary(common, Request::InviteRevoke { email }),
    };
    run_and_print(&common, request, shape)
}

pub fn session(cmd: SessionCommand) -> ExitCode {
    let (common, request, shape) = match cmd {
        SessionCommand::List { common, user } => (
            common,
            Ok(Request::SessionList { email: user }),
            Shape::Sessions,
        ),
        SessionCommand::Revoke { common, id } => summary(common, Request::SessionRevoke { id }),
        SessionCommand::RevokeAll { common, email } => {
            summary(common, Request::SessionRevokeAll { email })
        }
    };
    run_and_print(&common, request, shape)
}

/// A command whose reply is printed as `key: value` lines.
fn summary(common: Common, request: Request) -> (Common, Result<Request, CommandError>, Shape) {
    (common, Ok(request), Shape::Summary)
}

/// Runs a user, invite or session command (unless building its request
/// failed already) and prints the reply as `shape` or JSON.
fn run_and_print(
    common: &Common,
    request: Result<Request, CommandError>,
    shape: Shape,
) -> ExitCode {
    finish(common, request.and_then(|r| run(common, r)), shape)
}

pub fn backup(common: &Common, file: &Path) -> ExitCode {
    let outcome = (|| -> Result<serde_json::Value, CommandError> {
        let config = Config::load(&common.config)?;
        if file.exists() {
            return Err(CommandError::Refused(format!(
                "{} exists already; choose a new file",
                file.display()
            )));
        }
        match client::connect(&config.admin.socket)? {
            Some(stream) => match client::receive_backup(&config.admin.socket, stream, file)? {
                Reply::Ok { data } => Ok(data),
                Reply::Error { message } => Err(CommandError::Refused(message)),
            },
            None => {
                let store = open_store(&config)?;
                let counts = store.backup_to(file)?;
                Ok(serde_json::json!({ "users": counts.users, "sessions": counts.sessions }))
            }
        }
    })();
    let outcome = outcome.map(|mut data| {
        data["file"] = serde_json::Value::from(file.display().to_string());
        data
    });
    finish(common, outcome, Shape::Summary)
}

pub fn restore(common: &Common, file: &Path) -> ExitCode {
    let outcome = (|| -> Result<serde_json::Value, CommandError> {
        let config = Config::load(&common.config)?;
        if let Some(stream) = client::connect(&config.admin.socket)? {
            // Something accepts on the socket: make sure it is a server.
            if let (Reply::Ok { .. }, _) =
                client::call(&config.admin.socket, stream, &Request::Ping)?
            {
                return Err(CommandError::Refused(
                    "the server is running; stop it (systemctl stop gatehouse) before restoring"
                        .into(),
                ));
            }
        }
        let counts = crate::store::restore(file, &config.store.path)?;
        Ok(serde_json::json!({
            "restored": config.store.path.display().to_string(),
            "users": counts.users,
            "sessions": counts.sessions,
        }))
    })();
    finish(common, outcome, Shape::Summary)
}

/// Sends `request` to the running server, or runs it on the store directly.
fn run(common: &Common, request: Request) -> Result<serde_json::Value, CommandError> {
    let config = Config::load(&common.config)?;
    let reply = match client::connect(&config.admin.socket)? {
        Some(stream) => client::call(&config.admin.socket, stream, &request)?.0,
        None => {
            let store = open_store(&config)?;
            match execute(store.as_ref(), crate::store::now_millis(), request) {
                Ok(done) => Reply::Ok { data: done.data },
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            }
        }
    };
    match reply {
        Reply::Ok { data } => Ok(data),
        Reply::Error { message } => Err(CommandError::Refused(message)),
    }
}

fn open_store(config: &Config) -> Result<std::sync::Arc<dyn Store>, CommandError> {
    crate::store::open(&config.store).map_err(|e| match e {
        StoreError::Locked(path) => CommandError::Refused(format!(
            "the store {path} is held by another process, but the admin socket {} does not answer",
            config.admin.socket.display()
        )),
        other => CommandError::Store(other),
    })
}

/// Reads the new password, checks the configured policy and hashes it with
/// the configured argon2 parameters. Only the hash leaves this process.
fn hash_password(config_path: &Path, input: &PasswordInput) -> Result<String, CommandError> {
    let config = Config::load(config_path)?;
    let password = match (&input.password, input.password_stdin) {
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| CommandError::Password(format!("reading standard input: {e}")))?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) | (Some(_), true) => {
            return Err(CommandError::Password(
                "give the password with --password-stdin (or --password PW in scripts)".into(),
            ));
        }
    };
    let len = password.chars().count();
    let (min, max) = (config.password.min_length, config.password.max_length);
    if len < min || len > max {
        return Err(CommandError::Password(format!(
            "the password must be {min} to {max} characters long"
        )));
    }
    let runtime = super::runtime(1).map_err(|e| CommandError::Password(e.to_string()))?;
    runtime
        .block_on(async {
            let hasher = crate::auth::passwords::Passwords::new(
                &config.password,
                config.limits.max_queued_hashes,
            )?;
            hasher.hash(password).await
        })
        .map_err(|e| CommandError::Password(e.to_string()))
}

fn finish(
    common: &Common,
    outcome: Result<serde_json::Value, CommandError>,
    shape: Shape,
) -> ExitCode {
    match outcome {
        Ok(data) => {
            if common.json {
                println!("{data}");
            } else {
                print!("{}", render(&data, shape));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(data: &serde_json::Value, shape: Shape) -> String {
    match shape {
        Shape::Users => {
            let users: Vec<UserView> = serde_json::from_value(data.clone()).unwrap_or_default();
            users_table(&users)
        }
        Shape::User => {
            let mut out = String::new();
            if let Ok(user) = serde_json::from_value::<UserView>(data.clone()) {
                out.push_str(&users_table(std::slice::from_ref(&user)));
            }
            let pending = &data["pending_codes"];
            for (field, what) in [
                ("password_reset", "a password-reset code is pending"),
                ("email_change", "an email-change code is pending"),
            ] {
                if pending[field] == true {
                    out.push_str(what);
                    out.push('\n');
                }
            }
            out.push_str(&factors_line(&data["factors"]));
            let sessions: Vec<SessionView> =
                serde_json::from_value(data["session_list"].clone()).unwrap_or_default();
            if !sessions.is_empty() {
                out.push('\n');
                out.push_str(&sessions_table(&sessions));
            }
            if let Some(groups) = data["groups"].as_array().filter(|g| !g.is_empty()) {
                let names: Vec<&str> = groups.iter().filter_map(|g| g.as_str()).collect();
                out.push_str(&format!("groups: {}\n", names.join(", ")));
            }
            let identities: Vec<IdentityView> =
                serde_json::from_value(data["identities"].clone()).unwrap_or_default();
            if !identities.is_empty() {
                out.push('\n');
                out.push_str(&identities_table(&identities));
            }
            out
        }
        Shape::Invite | Shape::Invites => {
            let values: Vec<serde_json::Value> = match shape {
                Shape::Invite => vec![data.clone()],
                _ => data.as_array().cloned().unwrap_or_default(),
            };
            // `live` is the server's verdict (its clock); computed here only
            // for a reply without it.
            let now = crate::store::now_millis();
            let rows: Vec<Vec<String>> = values
                .iter()
                .filter_map(|v| {
                    let i: crate::store::Invite = serde_json::from_value(v.clone()).ok()?;
                    let live = v["live"].as_bool().unwrap_or_else(|| i.is_live(now));
                    Some(vec![
                        i.email.clone(),
                        utc(i.created_at),
                        utc(i.expires_at),
                        if live { "live" } else { "expired" }.to_string(),
                    ])
                })
                .collect();
            table(&["EMAIL", "CREATED", "EXPIRES", "STATE"], &rows)
        }
        Shape::Sessions => {
            let sessions: Vec<SessionView> =
                serde_json::from_value(data.clone()).unwrap_or_default();
            sessions_table(&sessions)
        }
        Shape::Summary => match data.as_object() {
            Some(fields) => fields
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}: {s}\n"),
                    other => format!("{k}: {other}\n"),
                })
                .collect(),
            None => format!("{data}\n"),
        },
    }
}

/// `second factors: TOTP (since …), 9 recovery codes left, passkeys: a, b`.
fn factors_line(factors: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if factors["totp"] == true {
        let since = factors["totp_enabled_at"]
            .as_u64()
            .map(utc)
            .unwrap_or_default();
        parts.push(format!("TOTP (since {since})"));
    }
    if let Some(passkeys) = factors["passkeys"].as_array().filter(|p| !p.is_empty()) {
        let names: Vec<&str> = passkeys.iter().filter_map(|p| p["name"].as_str()).collect();
        parts.push(format!("passkeys: {}", names.join(", ")));
    }
    if parts.is_empty() {
        return "second factors: none\n".into();
    }
    let left = factors["recovery_codes_left"].as_u64().unwrap_or(0);
    parts.push(format!("{left} recovery codes left"));
    format!("second factors: {}\n", parts.join(", "))
}

fn users_table(users: &[UserView]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.id.to_string(),
                u.email.clone(),
                if u.disabled { "disabled" } else { "active" }.to_string(),
                u.sessions.to_string(),
                utc(u.created_at),
            ]
        })
        .collect();
    table(&["ID", "EMAIL", "STATUS", "SESSIONS", "CREATED"], &rows)
}

fn identities_table(identities: &[IdentityView]) -> String {
    let rows: Vec<Vec<String>> = identities
        .iter()
        .map(|i| {
            vec![
                i.provider.clone(),
                i.issuer.clone(),
                i.subject.clone(),
                i.email.clone(),
                utc(i.linked_at),
            ]
        })
        .collect();
    table(&["PROVIDER", "ISSUER", "SUBJECT", "EMAIL", "LINKED"], &rows)
}

fn sessions_table(sessions: &[SessionView]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.user_id.to_string(),
                s.email.clone(),
                utc(s.created_at),
                utc(s.last_seen),
                s.ip.clone().unwrap_or_else(|| "-".into()),
                s.user_agent.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "USER",
            "EMAIL",
            "CREATED",
            "LAST SEEN",
            "IP",
            "USER AGENT",
        ],
        &rows,
    )
}

/// Left-aligned columns separated by two spaces.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `2026-11-26 09:30:00Z` for Unix milliseconds.
fn utc(ms: u64) -> String {
    const LAYOUT: &[BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    let at = i64::try_from(ms / 1000)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok());
    match at.and_then(|at| at.format(LAYOUT).ok()) {
        Some(text) => text,
        // Beyond the year 9999: not a time the store writes.
        None => format!("@{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_795_000_000_123), "2026-11-18 11:06:40Z");
        assert_eq!(utc(u64::MAX), format!("@{}ms", u64::MAX));
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONG\nxyz  1\n");
    }
}
