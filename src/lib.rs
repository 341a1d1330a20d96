//! Gatehouse: a single-binary edge auth proxy. It serves the Flowtask
//! authentication API itself (email-code sign-up, password sign-in, cookie
//! sessions in an embedded redb store) and reverse-proxies authenticated
//! requests to an existing backend.
//!
//! Module map: `config` (TOML → checked config), `store` (persistence trait
//! and redb), `auth` (flows, passwords, sessions, codes), `mail` (transports),
//! `http` (pipeline, endpoints, errors), `proxy` (upstream forwarding),
//! `tls`, `server` (listener, connections, shutdown), `cli`; for operating
//! it: `admin` (admin socket protocol and commands), `ops` (access log,
//! health/metrics listener, systemd, signals), `metrics`, `net` (CIDRs).

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
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
