//! Gatehouse: a single-binary edge auth proxy. It serves the Flowtask
//! authentication API itself (email-code sign-up, password sign-in, cookie
//! sessions in an embedded redb store) and reverse-proxies authenticated
//! requests to an existing backend.
//!
//! Module map:
//! - `config`: TOML → checked configuration;
//! - `store`: the persistence trait and its redb implementation;
//! - `auth`: flows, passwords, sessions, codes, throttles, known devices,
//!   account self-service (reset, password/email change, own sessions);
//! - `mail`: outbox, transports, templates;
//! - `http`: request pipeline, own endpoints, path canonicalisation,
//!   CORS/CSRF, forward-auth, errors → statuses;
//! - `oidc`: sign-in through OpenID Connect providers;
//! - `proxy`: upstream forwarding; `tls`; `net`: client address;
//! - `acme`: automatic certificates (`[tls.acme]`) and their renewal;
//! - `sync`: the lock-poisoning policy (recover and go on);
//! - `server`: listeners, connections, shutdown; `conn`: connection slots
//!   and deadlines; `cli`: commands;
//! - `preflight`: the start-up checks `serve` and `check-config` share;
//! - operating it: `admin` (admin socket), `ops` (access log, health and
//!   metrics listener, systemd, signals), `metrics`.

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
pub mod tls;

pub use config::Config;
pub use server::serve;
