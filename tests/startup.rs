//! Start-up: bad configuration stops the binary with one clear line.

mod common;

use std::process::Command;

/// `serve` on `config`; returns (success, stderr).
fn check(config: &str) -> (bool, String) {
    let (ok, _, stderr) = common::run_cli_on(config, &["serve"]);
    (ok, stderr)
}

#[test]
fn bad_configs_fail_with_one_line_naming_the_key() {
    for (config, key) in [
        ("[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n", "lisen"),
        (
            "[session]\nidle_timeout = \"forever\"\n",
            "session.idle_timeout",
        ),
        ("[otp]\nmax_attempts = -1\n", "otp.max_attempts"),
        ("[mail]\ntransport = \"carrier-pigeon\"\n", "mail.transport"),
        ("[tls]\ncert = \"/nonexistent.pem\"\n", "tls.key"),
        (
            "[[route]]\nprefix = \"api\"\nauth = \"required\"\n",
            "route[0].prefix",
        ),
        ("this is not toml", "line 1"),
    ] {
        let (ok, stderr) = check(config);
        assert!(!ok, "{config}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key), "{key} not in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn unreadable_file_and_missing_certificate_are_reported() {
    let out = Command::new(common::binary())
        .args(["serve", "--config", "/nonexistent/gatehouse.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gatehouse.toml"));

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n[store]\npath = \"{}\"\n",
        dir.path().join("s.redb").display()
    );
    let (ok, stderr) = check(&config);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/c.pem"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let (ok, _, stderr) = common::run_cli(example.as_ref(), &["check-config"], "");
    assert!(ok, "{stderr}");
}

/// Password hashing must never compete with proxied traffic: its threads run
/// in Linux's idle scheduling class (policy 5, `SCHED_IDLE`).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn password_hashing_threads_run_at_idle_priority() {
    let g = common::Gatehouse::start().await;
    // Each thread lowers its own priority as it starts; allow it a moment.
    let mut policies = Vec::new();
    for _ in 0..50 {
        policies = hash_thread_policies(g.pid());
        if !policies.is_empty() && policies.iter().all(|p| *p == 5) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    panic!("gatehouse-hash thread policies: {policies:?}");
}

#[cfg(target_os = "linux")]
fn hash_thread_policies(pid: u32) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with("gatehouse-hash") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name; `policy` is field 41 overall.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        policies.push(after_name.split(' ').nth(41 - 3).unwrap().parse().unwrap());
    }
    policies
}
