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
//! below everything: request, config, net, metrics, random, sync
//! ```
//!
//! - `config`: TOML → checked configuration (`config::values`: the value
//!   parsers every section shares);
//! - `store`: the persistence traits; redb (`redb_tables` holds every table,
//!   the codec and `db_err`; `redb_snapshot` writes backups, `backup`
//!   restores) and PostgreSQL (`pg_conn` connects); `store::run_blocking`
//!   bridges async callers to the blocking store;
//! - `auth`: flows, passwords, sessions, codes, throttles, known devices,
//!   account self-service (reset, password/email change, own sessions);
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
//! - `random`: the CSRNG and base64url tokens;
//! - `acme`: automatic certificates (`[tls.acme]`) and their renewal;
//! - `sync`: the lock-poisoning policy (recover and go on);
//! - `server`: listeners, connections, shutdown; `conn`: connection slots
//!   and deadlines; `cli`: commands;
//! - `preflight`: the start-up checks `serve` and `check-config` share;
//! - operating it: `admin` (admin socket), `ops` (health and metrics
//!   listener, systemd, signals, log writer), `metrics`.

#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conn;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod oidc;
pub mod ops;
pub mod preflight;
pub mod proxy;
pub mod random;
pub mod request;
pub mod server;
pub mod store;
mod sync;
pub mod tasks;
pub mod tls;

pub use config::Config;
pub use server::serve;
