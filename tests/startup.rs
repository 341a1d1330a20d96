//! Start-up: bad configuration stops the binary with one clear line.

mod common;

use std::process::Command;

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(common::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
            "route.prefix",
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
    let out = Command::new(common::binary())
        .args(["check-config", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
