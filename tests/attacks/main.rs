//! The attack suite: each known bypass and abuse case against the real
//! binary. A request that reaches the upstream unauthenticated on a
//! protected route is a failure.

#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod browser;
mod cookies;
mod early;
mod paths;
mod protocol;
mod slots;
mod smuggling;
mod timeouts;
mod underscores;

use common::{Gatehouse, Options};

/// Gatehouse over plain HTTP, so attack bytes go on the wire exactly as written.
pub async fn plain() -> Gatehouse {
    Gatehouse::start_with(Options {
        tls: false,
        ..Options::default()
    })
    .await
}

/// Fails if the upstream ever saw a request for a protected path.
pub fn assert_nothing_protected_reached_upstream(g: &Gatehouse) {
    for r in g.upstream.requests() {
        let path = r.target.split('?').next().unwrap_or("");
        let lenient = path.to_ascii_lowercase().replace("//", "/");
        assert!(
            !lenient.starts_with("/api/v2") || lenient.starts_with("/api/v2/public/"),
            "upstream received a protected request: {} {}",
            r.method,
            r.target
        );
    }
}
