//! Backup while serving and under write load, restore with the server
//! stopped: every user whose creation was acknowledged before the backup
//! began is in the restored store, with a working password.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::{Gatehouse, run_cli};
use serde_json::Value;

#[tokio::test]
async fn backup_under_write_load_restores_every_acknowledged_user() {
    if common::pg::skip_on_postgres(
        "backup_under_write_load_restores_every_acknowledged_user",
        "gatehouse backup copies the redb file; PostgreSQL is backed up with pg_dump (tests/postgres.rs checks the refusal)",
    ) {
        return;
    }
    let mut g = Gatehouse::start().await;
    let config = g.config_path.clone();
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));

    // Writer: creates accounts one after another through the admin socket.
    let writer = {
        let (config, acked) = (config.clone(), acked.clone());
        std::thread::spawn(move || {
            for i in 0..40 {
                let email = format!("load{i}@example.com");
                let pw = format!("password-{i}");
                let (ok, _, err) = run_cli(
                    &config,
                    &["user", "add", &email, "--password", &pw, "--json"],
                    "",
                );
                assert!(ok, "user add failed: {err}");
                acked.lock().unwrap().push(email);
            }
        })
    };
    // Take the backup mid-way through the writes.
    common::eventually(std::time::Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= 10).then_some(())
    })
    .await
    .expect("writer makes progress");
    let before_backup: Vec<String> = acked.lock().unwrap().clone();
    let file = g.dir.path().join("backup.redb");
    let (ok, out, err) = g.cli(&["backup", file.to_str().unwrap(), "--json"], "");
    assert!(ok, "backup failed: {err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    writer.join().unwrap();
    assert!(summary["users"].as_u64().unwrap() >= before_backup.len() as u64);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "backup is private to its owner");
    }
    // An existing file is never overwritten.
    let (ok, _, err) = g.cli(&["backup", file.to_str().unwrap()], "");
    assert!(!ok && err.contains("exists"), "{err}");

    // Restore is refused while the server runs.
    let (ok, _, err) = g.cli(&["restore", file.to_str().unwrap()], "");
    assert!(!ok && err.contains("running"), "{err}");

    // Stop, restore, start: the store is the snapshot.
    g.stop();
    let (ok, out, err) = g.cli(&["restore", file.to_str().unwrap(), "--json"], "");
    assert!(ok, "restore failed: {err}");
    let restored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(restored["users"], summary["users"]);
    g.restart();

    let (ok, out, err) = g.cli(&["user", "list", "--json"], "");
    assert!(ok, "{err}");
    let users: Vec<Value> = serde_json::from_str(&out).unwrap();
    let present: HashSet<String> = users
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(present.len() as u64, summary["users"].as_u64().unwrap());
    for email in &before_backup {
        assert!(present.contains(email), "{email} missing after restore");
    }
    let all_written: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(present.is_subset(&all_written));
    // Password hashes came back intact.
    g.sign_in(&before_backup[3], "password-3").await;
}
