//! Gatehouse: a single-binary edge auth proxy. It serves the Flowtask
//! authentication API itself (email-code sign-up, password sign-in, cookie
//! sessions in an embedded redb store) and reverse-proxies authenticated
//! requests to an existing backend.
//!
//! Module map (arrows point one way; `.ci/module-graph.py` checks that no
//! two modules, nor two siblings inside one, import each other in a
//! circle):
//!
//! ```text
//! cli → server → http → {proxy, oidc, auth} → mail → store
//!          ↘ ops (health/metrics listener, signals, systemd) → http
//!          ↘ admin, acme, tls, conn, preflight
//! below everything: request, config, net, metrics, random, sync, tasks,
//! private_file, log_writer, clock
//! ```
//!
//! - `config`: TOML → checked configuration (`config::values`: the value
//!   parsers every section shares, on humantime and ipnet; serde names the
//!   key path of a refused value);
//! - `store`: the persistence traits; redb (`redb_tables` holds every table,
//!   the codec and the `From` conversions of redb errors; `redb_snapshot` writes backups, `backup`
//!   restores) and PostgreSQL (`pg_conn` connects); `store::run_blocking`
//!   bridges async callers to the blocking store;
//! - `auth`: flows, passwords, sessions, codes, throttles, known devices,
//!   account self-service (reset, password/email change, own sessions),
//!   route access rules, the sign-up policy and second factors (`auth::mfa`:
//!   TOTP, recovery codes, the pending sign-in; `auth::passkeys`: WebAuthn);
//! - `mail`: outbox, transports, templates;
//! - `request`: what is known about a request before any decision (peer,
//!   client address, authority, site, the body with deadlines, header-name
//!   rules), shared by the pipeline and the proxy;
//! - `http`: request pipeline, own endpoints, path canonicalisation,
//!   CORS/CSRF, forward-auth, the access log (`http::access`), errors →
//!   statuses (`http::error`, the one place);
//! - `oidc`: sign-in through OpenID Connect providers;
//! - `proxy`: upstream forwarding, its pool, the response `Body`
//!   (`proxy::body`) and its own `ProxyError`; `tls`; `net`: client address;
//! - `http::pages`: the built-in sign-in pages (`[pages]`) and the sign-in
//!   redirect of protected routes;
//! - `random`: the CSRNG and base64url tokens;
//! - `tasks`: the one accept loop (permit, back-off) every listener uses
//!   and the background-task groups under one cancellation token;
//! - `log_writer`: the buffered log output (flushed every 100 ms and at
//!   shutdown) that log and access lines are written into;
//! - `private_file`: owner-only (0600) files, created new or replaced
//!   atomically;
//! - `acme`: automatic certificates (`[tls.acme]`) and their renewal;
//! - `sync`: the lock-poisoning policy (recover and go on);
//! - `clock`: the injected clock every expiry decision reads (the wall
//!   clock in the binary; a manual one only for in-process tests);
//! - `server`: listeners, connections, shutdown; `conn`: connection slots
//!   and deadlines; `cli`: commands;
//! - `preflight`: the start-up checks `serve` and `check-config` share;
//! - operating it: `admin` (admin socket), `ops` (health and metrics
//!   listener, systemd, signals, log writer), `metrics`.

#![forbid(unsafe_code)]

mod acme;
mod admin;
mod auth;
mod cli;
mod clock;
mod config;
mod conn;
mod http;
mod log_writer;
mod mail;
mod metrics;
mod net;
mod oidc;
mod ops;
mod preflight;
mod private_file;
mod proxy;
mod random;
mod request;
mod server;
mod store;
mod sync;
mod tasks;
mod tls;

// The crate's surface: what the binary, the tests, the fuzz targets and the
// bench tools use. Everything else is private, so the compiler reports
// what nothing uses.

/// The `gatehouse` command line (the binary's whole `main`).
pub use cli::main;
/// Loading and checking `config.toml`; running the server.
pub use config::{Config, Route, RouteAuth};
pub use server::serve;

/// For the integration harness only: the server in-process on a clock the
/// test moves (see the `clock` module). Not part of the supported surface.
#[doc(hidden)]
pub use clock::Clock;
#[doc(hidden)]
pub use server::serve_with_clock;

/// Pure parsers that fuzz targets and property tests drive directly.
pub mod parsers {
    pub use crate::auth::sessions::{find_cookie, strip_named_cookies};
    pub use crate::http::path::{auth_for, canonical};
    pub use crate::http::{parse_object, required_str};
}

/// What `examples/bench_seed_store.rs` needs to fill a store with accounts
/// and sessions for the benchmarks.
pub mod seed {
    pub use crate::auth::passwords::Passwords;
    pub use crate::auth::sessions::{Sessions, hash_token};
    pub use crate::store::traits::*;
    pub use crate::store::{RedbStore, Session, User, now_millis};
}
