//! TLS to the database (issue 17): with `[store] ca_file`, Gatehouse
//! verifies the PostgreSQL server's certificate and host name (verify-full).
//!
//! Needs `GATEHOUSE_TEST_PG_URL` and `GATEHOUSE_TEST_PG_TLS_CA`: the CA
//! (PEM) that signed the test cluster's certificate, which names only
//! `localhost` (both set by `.ci/postgres.sh`, which runs the cluster with
//! `ssl = on`). Unset URL: no-op; URL set without the CA: fails rather than
//! skip.

mod common;

use common::{Gatehouse, Options, TestCa, pg, run_cli};

/// The test cluster's CA file; `None` when PostgreSQL tests are off.
fn cluster_ca() -> Option<String> {
    pg::server_url()?;
    Some(
        std::env::var("GATEHOUSE_TEST_PG_TLS_CA").unwrap_or_else(|_| {
            panic!("GATEHOUSE_TEST_PG_TLS_CA is not set: run this test through .ci/postgres.sh")
        }),
    )
}

/// `url` with its host replaced by `host`.
fn with_host(url: &str, host: &str) -> String {
    let after_scheme = url.find("://").unwrap() + 3;
    let at = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    let port = at + url[at..].find(':').unwrap();
    format!("{}{host}{}", &url[..at], &url[port..])
}

fn store_keys(url: &str, ca_file: &str) -> String {
    format!("kind = \"postgres\"\nurl = \"{url}\"\nca_file = \"{ca_file}\"\npool_size = 2\n")
}

#[tokio::test]
async fn with_the_right_ca_and_host_every_connection_is_tls_and_sign_up_works() {
    let Some(ca) = cluster_ca() else { return };
    let db = pg::fresh_database().await;
    let g = Gatehouse::start_with(Options {
        store: store_keys(&with_host(&db, "localhost"), &ca),
        ..Options::default()
    })
    .await;
    let cookie = g.sign_up("tls@example.com", "correct horse battery").await;
    assert_eq!(g.auth_check(&cookie).await["email"], "tls@example.com");
    // Gatehouse's connections to its database: there are some, and all use
    // TLS (the server also accepts plain connections, so this is the client's
    // doing).
    let name = db.rsplit('/').next().unwrap();
    let rows = pg::query(
        &pg::server_url().unwrap(),
        &format!(
            "SELECT s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{name}' AND a.pid <> pg_backend_pid()"
        ),
    )
    .await;
    assert!(!rows.is_empty(), "no connection from gatehouse seen");
    assert!(rows.iter().all(|ssl| ssl == "true"), "{rows:?}");
}

#[tokio::test]
async fn a_wrong_ca_or_a_wrong_host_name_is_refused_at_start_up_with_a_clear_error() {
    let Some(ca) = cluster_ca() else { return };
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, TestCa::create(dir.path()).ca_pem).unwrap();
    let cases = [
        // Signed by a CA we do not trust.
        (with_host(&db, "localhost"), other_ca.display().to_string()),
        // The right CA, but the certificate does not name 127.0.0.1.
        (with_host(&db, "127.0.0.1"), ca.clone()),
    ];
    for (url, ca_file) in &cases {
        let config = dir.path().join("gatehouse.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n\
                 [store]\npath = \"{}\"\n{}",
                dir.path().join("data/g.redb").display(),
                store_keys(url, ca_file)
            ),
        )
        .unwrap();
        let out = std::process::Command::new(common::binary())
            .args(["serve", "--config"])
            .arg(&config)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url} {ca_file}: started\n{stderr}");
        assert!(
            stderr.contains("certificate") && !stderr.contains("panicked"),
            "{url} {ca_file}: unclear error\n{stderr}"
        );
        // check-config connects the same way and reports the same refusal.
        let (ok, _, err) = run_cli(&config, &["check-config"], "");
        assert!(!ok && err.contains("certificate"), "{err}");
    }
    // The valid form (right CA, the named host) is accepted by check-config.
    let config = dir.path().join("good.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n\
             [store]\npath = \"{}\"\n{}",
            dir.path().join("data/g.redb").display(),
            store_keys(&with_host(&db, "localhost"), &ca)
        ),
    )
    .unwrap();
    // The schema is not there yet (nothing started on this database).
    let (_, out, err) = run_cli(&config, &["check-config"], "");
    assert!(!err.contains("certificate"), "{out}\n{err}");
}
