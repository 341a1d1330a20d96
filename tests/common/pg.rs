//! PostgreSQL for tests: `GATEHOUSE_TEST_PG_URL` names a server (a throwaway
//! cluster started by `.ci/postgres.sh`) on which each test gets a database
//! of its own. Unset, PostgreSQL tests are no-ops; set but unreachable, they
//! fail.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable naming the test server (a superuser URL).
pub const URL_VAR: &str = "GATEHOUSE_TEST_PG_URL";
/// `postgres` runs the whole black-box suite on PostgreSQL.
pub const BACKEND_VAR: &str = "GATEHOUSE_TEST_STORE";

/// The server URL, if PostgreSQL tests are to run.
pub fn server_url() -> Option<String> {
    std::env::var(URL_VAR).ok().filter(|v| !v.is_empty())
}

/// Whether the harness should put every gatehouse on PostgreSQL.
pub fn suite_on_postgres() -> bool {
    std::env::var(BACKEND_VAR).is_ok_and(|v| v == "postgres")
}

/// Creates an empty database on the test server; returns its URL.
pub async fn fresh_database() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = server_url().unwrap_or_else(|| panic!("{URL_VAR} is not set"));
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{URL_VAR} is set but the server is unreachable: {e}"));
    let driver = tokio::spawn(connection);
    let name = format!(
        "gh_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    with_database(&server, &name)
}

/// Drops the database `url` names (a test's own, from [`fresh_database`]),
/// closing what is still connected to it. Blocking, for `Drop`: runs on a
/// thread of its own so it works inside and outside a runtime. Failures are
/// ignored (the cluster is thrown away at the end anyway).
pub fn drop_database(url: &str) {
    let (Some(server), Some(name)) = (server_url(), url.rsplit('/').next()) else {
        return;
    };
    let name = name.split('?').next().unwrap_or(name).to_string();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
                .await
                .ok()?;
            let driver = tokio::spawn(connection);
            let dropped = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            drop(client);
            let _ = driver.await;
            dropped.ok()
        })
    })
    .join();
}

/// Whether this test is to be skipped because the suite runs on PostgreSQL
/// and it checks something only the redb store has (its file, backups).
/// Prints the reason to the test process's stderr directly (not captured by
/// the test harness), so `.ci/postgres.sh` can count the skips.
pub fn skip_on_postgres(test: &str, reason: &str) -> bool {
    if !suite_on_postgres() {
        return false;
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "skipped on PostgreSQL: {test}: {reason}"
    );
    true
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{name}{query}", &base[..host_end])
}

/// Runs one SQL statement on `url` and returns the first column of each row
/// as text.
pub async fn query(url: &str, sql: &str) -> Vec<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let rows = client.simple_query(sql).await.unwrap();
    drop(client);
    let _ = driver.await;
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .collect()
}
