//! Running Gatehouse as a service (the access log itself is part of the
//! request pipeline, `http::access`): the admin HTTP listener with health, readiness and metrics
//! (`health`), systemd notifications (`systemd`) and signal handling
//! (`signals`: SIGTERM drains, SIGHUP reloads the certificate). The log
//! writer that buffers log lines is the leaf `crate::log_writer`.

pub mod health;
pub mod signals;
pub mod systemd;
