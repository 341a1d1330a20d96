//! Gatehouse: a single-binary edge auth proxy. It serves the Flowtask
//! authentication API itself (email-code sign-up, password sign-in, cookie
//! sessions in an embedded redb store) and reverse-proxies authenticated
//! requests to an existing backend.
//!
//! Module map:
//! - `config`: TOML → checked configuration;
//! - `store`: the persistence trait and its redb implementation;
//! - `auth`: flows, passwords, sessions, codes, throttles, known devices;
//! - `mail`: outbox, transports, templates;
//! - `http`: request pipeline, own endpoints, path canonicalisation,
//!   CORS/CSRF, forward-auth, errors → statuses;
//! - `proxy`: upstream forwarding; `tls`; `net`: client address;
//! - `server`: listeners, connections, shutdown; `conn`: connection slots
//!   and deadlines; `cli`: commands;
//! - operating it: `admin` (admin socket), `ops` (access log, health and
//!   metrics listener, systemd, signals), `metrics`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conn;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod proxy;
pub mod server;
pub mod store;
pub mod tls;

pub use config::Config;
pub use server::serve;
