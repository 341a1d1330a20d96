//! Several Gatehouse instances on one PostgreSQL database (issue 17).
//!
//! Needs `GATEHOUSE_TEST_PG_URL` (set by `.ci/postgres.sh`, which starts a
//! throwaway cluster). Unset, every test here returns at once; set but
//! unreachable, they fail. A is the harness's gatehouse (its upstream, SMTP
//! sink, CA); B is a second process on a copy of A's configuration with its
//! own admin socket, so both share the upstream, the mailbox and the
//! database.

mod common;

use std::time::{Duration, Instant};

use common::peer::{Peer, post, status_of};
use common::{Gatehouse, Options, pg, session_cookie};
use serde_json::json;

/// A and B on one fresh database, plain HTTP; `None` when PostgreSQL tests
/// are not enabled.
async fn pair_with(mut opts: Options) -> Option<(Gatehouse, Peer, String)> {
    pg::server_url()?;
    let db = pg::fresh_database().await;
    opts.tls = false;
    opts.store = format!("kind = \"postgres\"\nurl = \"{db}\"\npool_size = 4\n");
    let a = Gatehouse::start_with(opts).await;
    let b = Peer::start(&a, |c| c);
    Some((a, b, db))
}

async fn pair() -> Option<(Gatehouse, Peer, String)> {
    pair_with(Options::default()).await
}

#[tokio::test]
async fn an_account_made_on_a_signs_in_on_b_and_its_session_holds_on_both() {
    let Some((a, b, _db)) = pair().await else {
        return;
    };
    // The code is sent through A and verified through B.
    let code = a.request_code("ann@example.com").await;
    let resp = post(
        b.url("/api/v1/user/signup/verify"),
        json!({"email": "ann@example.com", "code": code, "password": "password1"}),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let from_b = session_cookie(&resp, "sid").unwrap();
    // B's session is valid on A; a sign-in on B is valid on A too.
    assert_eq!(status_of(a.url("/api/v2/tasks"), &from_b).await, 200);
    let resp = post(
        b.url("/api/v1/user/signin"),
        json!({"email": "ann@example.com", "password": "password1"}),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let signed_in = session_cookie(&resp, "sid").unwrap();
    assert_eq!(status_of(a.url("/api/v2/tasks"), &signed_in).await, 200);
    // A session made on A is valid on B.
    let on_a = a.sign_in("ann@example.com", "password1").await;
    assert_eq!(status_of(b.url("/api/v2/tasks"), &on_a).await, 200);
    // The code was used: verifying it again on A fails.
    assert_eq!(a.verify("ann@example.com", &code).await, 400);
}

#[tokio::test]
async fn a_logout_on_b_ends_the_session_on_a_within_a_second() {
    let Some((a, b, _db)) = pair().await else {
        return;
    };
    let cookie = a.sign_up("bob@example.com", "password1").await;
    // Both caches hold the session.
    assert_eq!(status_of(a.url("/api/v2/x"), &cookie).await, 200);
    assert_eq!(status_of(b.url("/api/v2/x"), &cookie).await, 200);
    let resp = post(b.url("/api/v1/user/logout"), json!({}), Some(&cookie)).await;
    assert_eq!(resp.status(), 200);
    let logged_out = Instant::now();
    loop {
        let status = status_of(a.url("/api/v2/x"), &cookie).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            logged_out.elapsed() < Duration::from_secs(1),
            "A still served the session a second after the logout on B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_of(b.url("/api/v2/x"), &cookie).await, 401);
}

#[tokio::test]
async fn a_cli_revoke_through_a_ends_the_session_on_b() {
    let Some((a, b, _db)) = pair().await else {
        return;
    };
    let cookie = a.sign_up("cat@example.com", "password1").await;
    let other = a.sign_up("dan@example.com", "password1").await;
    assert_eq!(status_of(b.url("/api/v2/x"), &cookie).await, 200);
    assert_eq!(status_of(b.url("/api/v2/x"), &other).await, 200);
    let (ok, out, err) = a.cli(&["session", "revoke-all", "cat@example.com"], "");
    assert!(ok, "{out}{err}");
    let revoked = Instant::now();
    while status_of(b.url("/api/v2/x"), &cookie).await != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "B still served a revoked session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Only that user's sessions ended.
    assert_eq!(status_of(b.url("/api/v2/x"), &other).await, 200);
    // The CLI without a running server (database only) sees the same users.
    let (ok, out, err) = common::run_cli(&b.config_path, &["user", "list"], "");
    assert!(ok, "{err}");
    assert!(
        out.contains("cat@example.com") && out.contains("dan@example.com"),
        "{out}"
    );
}

#[tokio::test]
async fn the_daily_send_limit_counts_across_instances() {
    let Some((a, b, _db)) = pair().await else {
        return;
    };
    let send = |url: String| post(url, json!({"email": "eve@example.com"}), None);
    for n in 0..5 {
        let url = if n % 2 == 0 {
            a.url("/api/v1/user/signup/send-otp")
        } else {
            b.url("/api/v1/user/signup/send-otp")
        };
        assert_eq!(send(url).await.status(), 200, "send {n}");
    }
    for url in [
        a.url("/api/v1/user/signup/send-otp"),
        b.url("/api/v1/user/signup/send-otp"),
    ] {
        let resp = send(url).await;
        assert_eq!(resp.status(), 429);
        assert!(resp.headers().contains_key("retry-after"));
    }
    // Another address is not affected.
    let resp = send_other(&b).await;
    assert_eq!(resp.status(), 200);
}

async fn send_other(b: &Peer) -> reqwest::Response {
    post(
        b.url("/api/v1/user/signup/send-otp"),
        json!({"email": "other@example.com"}),
        None,
    )
    .await
}

#[tokio::test]
async fn wrong_codes_count_across_instances_and_one_code_makes_one_account() {
    let Some((a, b, db)) = pair().await else {
        return;
    };
    let code = a.request_code("fay@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    // Two wrong guesses on each instance: 4 of the 5 attempts.
    for _ in 0..2 {
        assert_eq!(a.verify("fay@example.com", wrong).await, 400);
        let resp = post(
            b.url("/api/v1/user/signup/verify"),
            json!({"email": "fay@example.com", "code": wrong, "password": "password1"}),
            None,
        )
        .await;
        assert_eq!(resp.status(), 400);
    }
    // The right code, submitted to both at once: one account, one winner.
    let body = json!({"email": "fay@example.com", "code": code, "password": "password1"});
    let (ra, rb) = tokio::join!(
        post(a.url("/api/v1/user/signup/verify"), body.clone(), None),
        post(b.url("/api/v1/user/signup/verify"), body.clone(), None),
    );
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
    assert_eq!(
        pg::query(
            &db,
            "SELECT count(*) FROM gh_users WHERE email = 'fay@example.com'"
        )
        .await,
        ["1"]
    );
    // A fresh code with five wrong guesses spread over both is exhausted.
    let code = a.request_code("gus@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for n in 0..5 {
        let url = if n % 2 == 0 {
            a.url("/api/v1/user/signup/verify")
        } else {
            b.url("/api/v1/user/signup/verify")
        };
        let body = json!({"email": "gus@example.com", "code": wrong, "password": "password1"});
        assert_eq!(post(url, body, None).await.status(), 400);
    }
    let resp = post(
        b.url("/api/v1/user/signup/verify"),
        json!({"email": "gus@example.com", "code": code, "password": "password1"}),
        None,
    )
    .await;
    assert_ne!(resp.status(), 200, "an exhausted code still worked");
}

#[tokio::test]
async fn mail_queued_during_an_smtp_outage_is_sent_exactly_once_by_two_workers() {
    let Some((mut a, b, db)) = pair_with(Options {
        mail: "retry_initial = \"200ms\"\nretry_max = \"500ms\"\n".into(),
        extra_toml: "[limits]\nsend_otp_per_ip_per_hour = 1000\n".into(),
        ..Options::default()
    })
    .await
    else {
        return;
    };
    a.smtp.stop().await;
    let emails: Vec<String> = (0..20).map(|n| format!("user{n}@example.com")).collect();
    for (n, email) in emails.iter().enumerate() {
        let url = if n % 2 == 0 {
            a.url("/api/v1/user/signup/send-otp")
        } else {
            b.url("/api/v1/user/signup/send-otp")
        };
        let resp = post(url, json!({"email": email}), None).await;
        let status = resp.status();
        assert_eq!(status, 200, "{email}: {}", resp.text().await.unwrap());
    }
    // Both workers fail and retry for a while; nothing is lost meanwhile.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(a.smtp.mails().len(), 0);
    a.smtp.resume().await;
    for email in &emails {
        a.smtp.wait_for_nth(email, 1).await;
    }
    // The outbox drains, then no duplicate arrives.
    let drained = Instant::now();
    while pg::query(&db, "SELECT count(*) FROM gh_outbox").await != ["0"] {
        assert!(
            drained.elapsed() < Duration::from_secs(20),
            "outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for email in &emails {
        assert_eq!(a.smtp.count_to(email), 1, "{email}");
    }
    assert_eq!(a.smtp.mails().len(), 20);
    drop(b);
}

#[tokio::test]
async fn a_brute_force_spread_over_both_instances_hits_one_back_off() {
    let Some((a, b, _db)) = pair_with(Options {
        extra_toml: "[limits]\nsignin_failures_per_email = 4\nsignin_failures_per_ip = 100\n\
                     signin_per_ip_per_minute = 100\nfirst_backoff = \"10m\"\n"
            .into(),
        ..Options::default()
    })
    .await
    else {
        return;
    };
    a.sign_up("hal@example.com", "password1").await;
    let signin = |url: String, password: &str| {
        post(
            url,
            json!({"email": "hal@example.com", "password": password}),
            None,
        )
    };
    // Two wrong passwords on each instance: four failures in all.
    for _ in 0..2 {
        assert_eq!(
            signin(a.url("/api/v1/user/signin"), "guess").await.status(),
            400
        );
        assert_eq!(
            signin(b.url("/api/v1/user/signin"), "guess").await.status(),
            400
        );
    }
    // Both now make the attacker (an unknown device) wait, even with the
    // right password; neither instance alone saw the threshold.
    for url in [a.url("/api/v1/user/signin"), b.url("/api/v1/user/signin")] {
        let resp = signin(url, "password1").await;
        assert_eq!(resp.status(), 429);
        assert!(resp.headers().contains_key("retry-after"));
    }
    // Another account is not affected.
    a.sign_up("ida@example.com", "password1").await;
    let resp = post(
        b.url("/api/v1/user/signin"),
        json!({"email": "ida@example.com", "password": "password1"}),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_database_with_a_newer_schema_is_refused_and_check_config_reports_it() {
    if pg::server_url().is_none() {
        return;
    }
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n\
             [store]\npath = \"{}/data/x.redb\"\nkind = \"postgres\"\nurl = \"{db}\"\n\
             [mail]\ntransport = \"log\"\nfrom = \"a@example.com\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // A fresh database: check-config connects and says it will be migrated.
    let (ok, stdout, stderr) = common::run_cli(&config, &["check-config"], "");
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("schema version 0"), "{stdout}");
    // Written by a newer gatehouse: refused by both.
    pg::query(&db, "CREATE TABLE gh_schema (version bigint NOT NULL)").await;
    pg::query(&db, "INSERT INTO gh_schema VALUES (99)").await;
    for command in ["check-config", "serve"] {
        let (ok, _, stderr) = common::run_cli(&config, &[command], "");
        assert!(!ok, "{command} accepted a newer schema");
        assert!(
            stderr.contains("schema version 99") && stderr.contains("understands up to 3"),
            "{command}: {stderr}"
        );
    }
    // Nothing was changed.
    assert_eq!(
        pg::query(&db, "SELECT version FROM gh_schema").await,
        ["99"]
    );
}

#[tokio::test]
async fn store_migrate_copies_redb_to_postgres_and_back_and_backup_points_to_pg_dump() {
    if pg::server_url().is_none() {
        return;
    }
    // A redb gatehouse with an account, a session and a queued mail.
    let mut a = Gatehouse::start_with(Options {
        tls: false,
        store: "kind = \"redb\"\n".into(),
        mail: "retry_initial = \"200ms\"\nretry_max = \"500ms\"\n".into(),
        ..Options::default()
    })
    .await;
    let cookie = a.sign_up("joy@example.com", "password1").await;
    a.smtp.stop().await;
    a.send_otp("kay@example.com").await;
    a.stop();
    let redb_config = std::fs::read_to_string(&a.config_path).unwrap();
    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let pg_config = dir.path().join("pg.toml");
    std::fs::write(
        &pg_config,
        redb_config.replace(
            "kind = \"redb\"\n",
            &format!("kind = \"postgres\"\nurl = \"{db}\"\n"),
        ),
    )
    .unwrap();
    let old = a.config_path.display().to_string();
    let (ok, out, err) =
        common::run_cli(&pg_config, &["store", "migrate", "--from-config", &old], "");
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("copied: 1 users, 1 sessions,") && out.contains("1 queued mails"),
        "{out}"
    );
    // Into a store that is not empty: refused.
    let (ok, _, err) =
        common::run_cli(&pg_config, &["store", "migrate", "--from-config", &old], "");
    assert!(!ok && err.contains("not empty"), "{err}");

    // On PostgreSQL: the session still holds, the password still works,
    // the queued mail goes out once the mail server is back.
    let edit_to_pg = |c: String| {
        c.replace(
            "kind = \"redb\"\n",
            &format!("kind = \"postgres\"\nurl = \"{db}\"\n"),
        )
    };
    let mut on_pg = Peer::start(&a, edit_to_pg);
    assert_eq!(status_of(on_pg.url("/api/v2/x"), &cookie).await, 200);
    let resp = post(
        on_pg.url("/api/v1/user/signin"),
        json!({"email": "joy@example.com", "password": "password1"}),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    // `backup` refuses on PostgreSQL and names the right tool.
    let file = dir.path().join("copy.redb");
    let (ok, out, err) = common::run_cli(&pg_config, &["backup", &file.display().to_string()], "");
    assert!(!ok, "{out}");
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!file.exists());
    on_pg.kill();

    // And back into a new redb file.
    let back = dir.path().join("back.redb");
    let back_config = dir.path().join("back.toml");
    std::fs::write(
        &back_config,
        redb_config.replace(
            &a.dir
                .path()
                .join("data/gatehouse.redb")
                .display()
                .to_string(),
            &back.display().to_string(),
        ),
    )
    .unwrap();
    let from = pg_config.display().to_string();
    let (ok, out, err) = common::run_cli(
        &back_config,
        &["store", "migrate", "--from-config", &from],
        "",
    );
    assert!(ok, "{out}{err}");
    // (the sign-in on PostgreSQL added a session and its notice.)
    assert!(
        out.contains("copied: 1 users, 2 sessions,") && out.contains("2 queued mails"),
        "{out}"
    );
    let back_path = back.display().to_string();
    let original = a
        .dir
        .path()
        .join("data/gatehouse.redb")
        .display()
        .to_string();
    let on_redb = Peer::start(&a, |c| c.replace(&original, &back_path));
    assert_eq!(status_of(on_redb.url("/api/v2/x"), &cookie).await, 200);
    a.smtp.resume().await;
    a.smtp.wait_for_nth("kay@example.com", 1).await;
    assert_eq!(a.smtp.count_to("kay@example.com"), 1);
}

/// Issue 20: groups live in each instance's session cache; a change made
/// through A reaches B's cache too (announced like a revocation).
#[tokio::test]
async fn a_group_change_through_a_applies_on_b() {
    let Some((a, b, _db)) = pair_with(Options {
        routes: "[[route]]\nprefix = \"/ops/\"\nauth = \"required\"\nallow_groups = [\"ops\"]\n\
                 [[route]]\nprefix = \"/api/v2/\"\nauth = \"required\"\n"
            .into(),
        ..Options::default()
    })
    .await
    else {
        return;
    };
    let cookie = a.sign_up("gil@example.com", "password1").await;
    // B caches the session (without groups) and refuses.
    assert_eq!(status_of(b.url("/ops/x"), &cookie).await, 403);
    assert_eq!(status_of(b.url("/ops/x"), &cookie).await, 403);
    let (ok, out, err) = a.cli(&["user", "groups", "gil@example.com", "--set", "ops"], "");
    assert!(ok, "{out}{err}");
    let set = Instant::now();
    while status_of(b.url("/ops/x"), &cookie).await != 200 {
        assert!(
            set.elapsed() < Duration::from_secs(5),
            "B kept the old groups"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, _, err) = a.cli(&["user", "groups", "gil@example.com", "--clear"], "");
    assert!(ok, "{err}");
    let cleared = Instant::now();
    while status_of(b.url("/ops/x"), &cookie).await != 403 {
        assert!(
            cleared.elapsed() < Duration::from_secs(5),
            "B kept a removed group"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The session itself lives on.
    assert_eq!(status_of(b.url("/api/v2/x"), &cookie).await, 200);
}

/// TOTP enrolled through A is required, checked and single-use through B:
/// the factor, its sealed secret (under the shared `[mfa] key_file`), the
/// pending sign-in and the used time step all live in the database.
#[tokio::test]
async fn totp_enrolled_on_a_is_required_on_b_and_a_code_works_once_across_both() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("mfa.key");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).unwrap();
    let opts = Options {
        extra_toml: format!("[mfa]\nkey_file = \"{}\"\n", key_file.display()),
        ..Options::default()
    };
    let Some((a, b, _db)) = pair_with(opts).await else {
        return;
    };
    let cookie = a.sign_up("tia@example.com", "password1").await;
    let totp = a.enrol_totp(&cookie, "password1").await;

    // B asks for the second factor and accepts the code …
    let sign_in = || {
        post(
            b.url("/api/v1/user/signin"),
            json!({"email": "tia@example.com", "password": "password1"}),
            None,
        )
    };
    let resp = sign_in().await;
    assert_eq!(resp.status(), 200);
    assert!(session_cookie(&resp, "sid").is_none());
    let pending = session_cookie(&resp, "sid_mfa").expect("pending cookie from B");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["mfaRequired"], true);
    // … and the pending sign-in made on B completes on A.
    let resp = post(
        a.url("/api/v1/user/signin/2fa"),
        json!({"code": totp.code_at(0)}),
        Some(&pending),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let session = session_cookie(&resp, "sid").unwrap();
    assert_eq!(status_of(b.url("/api/v2/x"), &session).await, 200);
    // The same code is refused on B: the used step is shared.
    let resp = sign_in().await;
    let pending = session_cookie(&resp, "sid_mfa").unwrap();
    let resp = post(
        b.url("/api/v1/user/signin/2fa"),
        json!({"code": totp.code_at(0)}),
        Some(&pending),
    )
    .await;
    assert_eq!(resp.status(), 400);
}

/// `store migrate` carries second factors over: a user with TOTP on redb
/// still has to give a code on PostgreSQL (a migration must never quietly
/// remove a factor), and the sealed secret still opens there.
#[tokio::test]
async fn store_migrate_keeps_second_factors() {
    if pg::server_url().is_none() {
        return;
    }
    let mut a = Gatehouse::start_with(Options {
        tls: false,
        store: "kind = \"redb\"\n".into(),
        ..Options::default()
    })
    .await;
    let cookie = a.sign_up("max@example.com", "password1").await;
    let totp = a.enrol_totp(&cookie, "password1").await;
    a.stop();

    let db = pg::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let pg_config = dir.path().join("pg.toml");
    let to_pg = |c: String| {
        c.replace(
            "kind = \"redb\"\n",
            &format!("kind = \"postgres\"\nurl = \"{db}\"\n"),
        )
    };
    std::fs::write(
        &pg_config,
        to_pg(std::fs::read_to_string(&a.config_path).unwrap()),
    )
    .unwrap();
    let old = a.config_path.display().to_string();
    let (ok, out, err) =
        common::run_cli(&pg_config, &["store", "migrate", "--from-config", &old], "");
    assert!(ok, "{out}{err}");

    // Same data directory, so the same mfa.key.
    let mut on_pg = Peer::start(&a, to_pg);
    let resp = post(
        on_pg.url("/api/v1/user/signin"),
        json!({"email": "max@example.com", "password": "password1"}),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        session_cookie(&resp, "sid").is_none(),
        "no session before the code"
    );
    let pending = session_cookie(&resp, "sid_mfa").expect("second factor still required");
    let resp = post(
        on_pg.url("/api/v1/user/signin/2fa"),
        json!({"code": totp.code_at(0)}),
        Some(&pending),
    )
    .await;
    assert_eq!(resp.status(), 200);
    on_pg.kill();
}

#[tokio::test]
async fn an_instance_with_one_worker_thread_serves_from_the_shared_database() {
    // `[server] workers = 1` runs on a current-thread runtime, where the
    // store may not block the way it does on a multi-threaded one.
    if pg::server_url().is_none() {
        return;
    }
    let db = pg::fresh_database().await;
    let a = Gatehouse::start_with(Options {
        tls: false,
        store: format!("kind = \"postgres\"\nurl = \"{db}\"\npool_size = 4\n"),
        ..Options::default()
    })
    .await;
    let mut b = Peer::start(&a, |c| {
        assert!(c.contains("workers = 2\n"));
        c.replacen("workers = 2\n", "workers = 1\n", 1)
    });
    // Signed up on A, signed in on the single-threaded B, proxied on B.
    a.sign_up("one@example.com", "password1").await;
    let resp = post(
        b.url("/api/v1/user/signin"),
        json!({"email": "one@example.com", "password": "password1"}),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", b.logs());
    let cookie = session_cookie(&resp, "sid").unwrap();
    assert_eq!(status_of(b.url("/api/v2/tasks"), &cookie).await, 200);
    assert_eq!(status_of(a.url("/api/v2/tasks"), &cookie).await, 200);
    // A wrong password on B is refused as on any instance (400, not 5xx).
    let resp = post(
        b.url("/api/v1/user/signin"),
        json!({"email": "one@example.com", "password": "wrong-password"}),
        None,
    )
    .await;
    assert_eq!(resp.status(), 400);
    b.kill();
}
