//! systemd `Type=notify`: READY=1 once serving, WATCHDOG=1 pings when
//! systemd asks for them, STOPPING=1 when the drain begins — checked with a
//! real notification socket standing in for systemd.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Gatehouse, Options};

/// Receives notification datagrams until one contains `needle`.
fn wait_for(sock: &UnixDatagram, needle: &str, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.lines().any(|l| l == needle) {
                return true;
            }
        }
    }
    false
}

#[tokio::test]
async fn notifies_ready_pings_the_watchdog_and_announces_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut g = Gatehouse::start_with(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..Options::default()
    })
    .await;
    let mut seen = Vec::new();
    assert!(wait_for(&sock, "READY=1", &mut seen), "{seen:?}");
    // Serving by the time READY=1 arrives.
    let resp = g.client().get(g.url("/dashboard")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(wait_for(&sock, "WATCHDOG=1", &mut seen), "{seen:?}");
    assert!(wait_for(&sock, "WATCHDOG=1", &mut seen), "{seen:?}");

    g.signal("TERM");
    assert!(wait_for(&sock, "STOPPING=1", &mut seen), "{seen:?}");
    let status = g.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(status.success());
}
