//! Command-line interface: `serve`, `check-config`, `check-mail`, and the
//! operator commands (`user`, `session`, `backup`, `restore`, implemented in
//! [`admin`]). Parses arguments, loads the configuration, sets up logging and
//! the runtime, and reports failures as one line on stderr with a non-zero
//! exit status.

mod admin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Edge auth proxy: Flowtask auth API, cookie sessions, authenticated reverse proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and everything start-up checks with it
    /// (TLS files, mail templates and transport, store path), except
    /// binding ports; exit non-zero naming file, line and key on failure.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Send a test message through the configured mail transport now and
    /// report how the SMTP dialogue ended (non-zero exit on failure).
    CheckMail {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Recipient (default: the `mail.from` address).
        #[arg(long)]
        to: Option<String>,
    },
    /// Manage user accounts (works while the server runs).
    #[command(subcommand)]
    User(admin::UserCommand),
    /// List and revoke sessions (works while the server runs).
    #[command(subcommand)]
    Session(admin::SessionCommand),
    /// Sign-up invites for `[signup] mode = "invite"` (works while the
    /// server runs).
    #[command(subcommand)]
    Invite(admin::InviteCommand),
    /// Write a consistent copy of the store to FILE (works while serving).
    Backup {
        #[command(flatten)]
        common: admin::Common,
        /// Where to write the backup; must not exist yet.
        file: PathBuf,
    },
    /// Store maintenance (copy redb to PostgreSQL and back).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Replace the store with a backup. The server must be stopped.
    Restore {
        #[command(flatten)]
        common: admin::Common,
        /// A file written by `gatehouse backup`.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy everything the store of --from-config holds (users, sessions,
    /// codes, queued mail, throttles, secrets) into the empty store of
    /// --config, redb to PostgreSQL or back. Stop every server first.
    Migrate {
        /// The configuration naming the store to copy from.
        #[arg(long)]
        from_config: PathBuf,
        /// The configuration naming the (empty) store to copy into.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// `gatehouse store migrate`: prints what was copied.
fn store_migrate(from: &std::path::Path, to: &std::path::Path) -> ExitCode {
    let outcome = (|| -> Result<crate::store::MigrateCounts, String> {
        let from = Config::load(from).map_err(|e| e.to_string())?;
        let to = Config::load(to).map_err(|e| e.to_string())?;
        crate::store::migrate(&from.store, &to.store).map_err(|e| e.to_string())
    })();
    match outcome {
        Ok(c) => {
            println!(
                "copied: {} users, {} sessions, {} pending codes, {} send windows, {} throttles, {} secrets, {} queued mails, {} linked identities, {} users' groups, {} invites",
                c.users,
                c.sessions,
                c.pending_codes,
                c.send_windows,
                c.throttles,
                c.secrets,
                c.queued_mails,
                c.linked_identities,
                c.user_groups,
                c.invites
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Runs the command line; the process exit status follows the outcome.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => match crate::preflight::load(&config) {
            Ok(loaded) => match check_database(&loaded) {
                Ok(()) => {
                    println!("{}: ok", config.display());
                    println!("{}", loaded.access.signup.describe());
                    println!("{}", describe_access(&loaded));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            },
            Err(e) => fail(&e),
        },
        Command::CheckMail { config, to } => check_mail(&config, to.as_deref()),
        Command::User(cmd) => admin::user(cmd),
        Command::Session(cmd) => admin::session(cmd),
        Command::Invite(cmd) => admin::invite(cmd),
        Command::Backup { common, file } => admin::backup(&common, &file),
        Command::Restore { common, file } => admin::restore(&common, &file),
        Command::Store(StoreCommand::Migrate {
            from_config,
            config,
        }) => store_migrate(&from_config, &config),
    }
}

/// The access policy in one line for `check-config`: deny by default or
/// not, where the pages are, which routes carry rules.
fn describe_access(config: &Config) -> String {
    let default = match config.access.default_auth {
        crate::config::DefaultAuth::Required => "paths no route covers: session required",
        crate::config::DefaultAuth::NotServed => "paths no route covers: 404",
    };
    let pages = match &config.access.pages {
        Some(p) => format!("pages at {}/", p.prefix),
        None => "pages off".to_string(),
    };
    let ruled: Vec<&str> = config
        .routes
        .iter()
        .filter(|r| r.access.restricts_users() || r.access.methods.is_some())
        .map(|r| r.prefix.as_str())
        .collect();
    let rules = if ruled.is_empty() {
        "no route has access rules".to_string()
    } else {
        format!("access rules on {}", ruled.join(", "))
    };
    format!("access: {default}; {pages}; {rules}")
}

fn check_mail(path: &std::path::Path, to: Option<&str>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match runtime(1) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    match runtime.block_on(crate::mail::check::check(&config.mail, to)) {
        Ok(report) => {
            println!("mail ok: {report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse: mail check failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match crate::preflight::load(path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    init_logging(&config.log);
    // One process-wide crypto provider: ring (no aws-lc, no openssl).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    let runtime = match runtime(workers) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let outcome = runtime.block_on(async {
        // Installed before anything listens: an early SIGTERM still drains.
        let shutdown =
            crate::ops::signals::Shutdown::install().map_err(crate::server::ServeError::Signals)?;
        crate::server::serve(config, shutdown.recv()).await
    });
    // Buffered access lines go out before the process ends, either way.
    crate::log_writer::flush();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The runtime a command runs on, with timers and I/O. One worker:
/// tokio's single-threaded scheduler does the same job without
/// work-stealing bookkeeping, and runs tasks in FIFO order (no LIFO slot
/// letting a busy connection jump the queue), which keeps tail latency
/// even. argon2 and store writes still run on their own threads.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build()
}

/// For a PostgreSQL store: connects and compares the schema version with
/// this binary's (a newer one would refuse to start). Changes nothing.
fn check_database(config: &Config) -> Result<(), crate::store::StoreError> {
    let crate::config::StoreBackend::Postgres(pg) = &config.store.backend else {
        return Ok(());
    };
    let (found, supported) = crate::store::PostgresStore::check(pg)?;
    if found > supported {
        return Err(crate::store::StoreError::NewerSchema {
            found: found as u64,
            supported: supported as u64,
        });
    }
    if found < supported {
        println!(
            "database reachable; schema version {found}, `gatehouse serve` will migrate it to {supported}"
        );
    } else {
        println!("database reachable; schema version {found} (current)");
    }
    Ok(())
}

/// Colour when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("gatehouse: {e}");
    ExitCode::FAILURE
}

/// Logs go to stderr (journald under systemd) as text or one JSON object
/// per line, access lines buffered for up to 100 ms (see
/// [`crate::log_writer`]); `RUST_LOG` overrides `log.level`. Text is coloured only for a
/// person at a terminal: a file, a pipe or journald gets plain
/// `status=403`, which `grep` finds.
fn init_logging(cfg: &crate::config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.level));
    let ansi = colour_wanted(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(crate::log_writer::Logs);
    // Access lines skip tracing's field formatting (the same bytes, written
    // directly); coloured lines for a terminal keep going through tracing.
    if !ansi {
        crate::http::access_line::install(match cfg.format {
            crate::config::LogFormat::Text => crate::http::access_line::Style::Text,
            crate::config::LogFormat::Json => crate::http::access_line::Style::Json,
        });
    }
    crate::log_writer::Logs::start_flusher();
    match cfg.format {
        crate::config::LogFormat::Text => builder.init(),
        crate::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::colour_wanted;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_for_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(false, Some(OsStr::new("1"))));
    }
}
