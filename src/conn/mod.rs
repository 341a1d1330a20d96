//! Client connections from accept to close: who may hold a connection slot
//! and for how long. `registry` counts connections (global and per-address
//! caps, longest-idle eviction, drain); `driver` runs one hyper connection
//! under its deadlines (first request, keep-alive idle, graceful close);
//! `tracked` keeps a request counted as in flight until its response has
//! been sent; `linger` closes connections without destroying a response the
//! client has not read yet.
//!
//! This module knows nothing about requests' meaning; `server` wires it to
//! the listener and `http` serves what arrives.

pub mod driver;
pub mod linger;
pub mod registry;
pub mod tracked;

pub use driver::{Deadlines, drive};
pub use linger::Lingering;
pub use registry::{ConnState, Registry, Slot};
pub use tracked::{Serving, Tracked};
