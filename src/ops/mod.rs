//! Running Gatehouse as a service: the access log and request metrics
//! (`access`, lines formatted by `access_line`), the admin HTTP listener with health, readiness and metrics
//! (`health`), systemd notifications (`systemd`) and signal handling
//! (`signals`: SIGTERM drains, SIGHUP reloads the certificate) and the
//! log writer that buffers access lines (`log_writer`).

pub mod access;
pub mod access_line;
pub mod health;
pub mod log_writer;
pub mod signals;
pub mod systemd;
