//! The operator CLI: every `user` and `session` command against a running
//! server (over the admin socket), `check-config`, and the same commands
//! against a stopped server (store opened directly).

mod common;

use common::Gatehouse;
use serde_json::Value;

fn json_ok(out: (bool, String, String)) -> Value {
    let (ok, stdout, stderr) = out;
    assert!(ok, "command failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn signed_in(g: &Gatehouse, cookie: &str) -> bool {
    g.auth_check(cookie).await["isAuthenticated"] == true
}

async fn sign_in_status(g: &Gatehouse, email: &str, password: &str) -> u16 {
    g.post_json(
        "/api/v1/user/signin",
        serde_json::json!({ "email": email, "password": password }),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn every_cli_command_works_against_a_running_server() {
    let g = Gatehouse::start().await;

    // user add: from stdin and from --password; duplicates refused.
    let added = json_ok(g.cli(
        &[
            "user",
            "add",
            "Alice@Example.com",
            "--password-stdin",
            "--json",
        ],
        "alice-pass-1\n",
    ));
    assert_eq!(added["email"], "alice@example.com");
    json_ok(g.cli(
        &[
            "user",
            "add",
            "bob@example.com",
            "--password",
            "bob-pass-1",
            "--json",
        ],
        "",
    ));
    let (ok, _, err) = g.cli(
        &["user", "add", "bob@example.com", "--password", "x-pass-12"],
        "",
    );
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, _, err) = g.cli(&["user", "add", "c@example.com", "--password", "short"], "");
    assert!(!ok && err.contains("characters"), "{err}");

    // user list: JSON for scripts, a table for people; no hashes anywhere.
    let users = json_ok(g.cli(&["user", "list", "--json"], ""));
    assert_eq!(users.as_array().unwrap().len(), 2);
    let (ok, table, _) = g.cli(&["user", "list"], "");
    assert!(ok);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("alice@example.com") && table.contains("active"));
    assert!(!table.contains("argon2") && !users.to_string().contains("argon2"));

    // Accounts made by the CLI can sign in at once.
    let a1 = g.sign_in("alice@example.com", "alice-pass-1").await;
    let a2 = g.sign_in("alice@example.com", "alice-pass-1").await;
    let b1 = g.sign_in("bob@example.com", "bob-pass-1").await;

    // session list, per user and overall.
    let mine = json_ok(g.cli(
        &["session", "list", "--user", "alice@example.com", "--json"],
        "",
    ));
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 2);
    for s in mine {
        let id = s["id"].as_str().unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        // The handle is not the token.
        assert!(!a1.contains(id) && !a2.contains(id));
    }
    let all = json_ok(g.cli(&["session", "list", "--json"], ""));
    assert_eq!(all.as_array().unwrap().len(), 3);

    // session revoke ID: exactly that session ends.
    let id = mine[0]["id"].as_str().unwrap();
    json_ok(g.cli(&["session", "revoke", id, "--json"], ""));
    let alive = [signed_in(&g, &a1).await, signed_in(&g, &a2).await];
    assert_eq!(alive.iter().filter(|a| **a).count(), 1, "{alive:?}");
    let (ok, _, err) = g.cli(&["session", "revoke", id], "");
    assert!(!ok && err.contains("no session"), "{err}");

    // user show.
    let shown = json_ok(g.cli(&["user", "show", "alice@example.com", "--json"], ""));
    assert_eq!(shown["sessions"], 1);
    assert_eq!(shown["session_list"].as_array().unwrap().len(), 1);

    // session revoke-all.
    let revoked = json_ok(g.cli(
        &["session", "revoke-all", "alice@example.com", "--json"],
        "",
    ));
    assert_eq!(revoked["revoked"], 1);
    assert!(!signed_in(&g, &a1).await && !signed_in(&g, &a2).await);

    // user disable: the session ends at once, sign-in looks like a wrong
    // password; enable lets the user back in.
    assert!(signed_in(&g, &b1).await);
    json_ok(g.cli(&["user", "disable", "bob@example.com", "--json"], ""));
    assert!(!signed_in(&g, &b1).await);
    let resp = g
        .post_json(
            "/api/v1/user/signin",
            serde_json::json!({ "email": "bob@example.com", "password": "bob-pass-1" }),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Invalid email or password");
    let (_, table, _) = g.cli(&["user", "list"], "");
    assert!(table.contains("disabled"), "{table}");
    json_ok(g.cli(&["user", "enable", "bob@example.com", "--json"], ""));
    let b2 = g.sign_in("bob@example.com", "bob-pass-1").await;

    // user set-password: old password out, new one in, sessions ended.
    let a3 = g.sign_in("alice@example.com", "alice-pass-1").await;
    json_ok(g.cli(
        &[
            "user",
            "set-password",
            "alice@example.com",
            "--password-stdin",
            "--json",
        ],
        "alice-pass-2\n",
    ));
    assert!(!signed_in(&g, &a3).await);
    assert_eq!(
        sign_in_status(&g, "alice@example.com", "alice-pass-1").await,
        400
    );
    assert_eq!(
        sign_in_status(&g, "alice@example.com", "alice-pass-2").await,
        200
    );

    // user delete: sessions end, the account is gone.
    json_ok(g.cli(&["user", "delete", "bob@example.com", "--json"], ""));
    assert!(!signed_in(&g, &b2).await);
    assert_eq!(
        sign_in_status(&g, "bob@example.com", "bob-pass-1").await,
        400
    );
    let users = json_ok(g.cli(&["user", "list", "--json"], ""));
    assert_eq!(users.as_array().unwrap().len(), 1);
    let (ok, _, err) = g.cli(&["user", "show", "bob@example.com"], "");
    assert!(!ok && err.contains("no user"), "{err}");

    // check-config.
    let (ok, out, _) = g.cli(&["check-config"], "");
    assert!(ok && out.contains(": ok"), "{out}");

    // The commands went through the socket: the server logged them.
    assert!(
        g.logs().contains("user disabled by operator"),
        "{}",
        g.logs()
    );
    // Passwords never reach the server's log.
    assert!(!g.logs().contains("alice-pass"));
}

#[tokio::test]
async fn user_commands_work_with_the_server_stopped() {
    let mut g = Gatehouse::start().await;
    json_ok(g.cli(
        &[
            "user",
            "add",
            "dana@example.com",
            "--password",
            "dana-pass-1",
            "--json",
        ],
        "",
    ));
    g.stop();
    let socket = g.dir.path().join("data/admin.sock");
    assert!(!socket.exists(), "the socket file is removed on shutdown");

    let users = json_ok(g.cli(&["user", "list", "--json"], ""));
    assert_eq!(users[0]["email"], "dana@example.com");
    json_ok(g.cli(
        &[
            "user",
            "add",
            "eve@example.com",
            "--password",
            "eve-pass-12",
            "--json",
        ],
        "",
    ));
    json_ok(g.cli(&["user", "disable", "dana@example.com", "--json"], ""));
    let (ok, table, _) = g.cli(&["user", "list"], "");
    assert!(ok && table.contains("eve@example.com"), "{table}");

    // What was done offline holds once the server is back.
    g.restart();
    g.sign_in("eve@example.com", "eve-pass-12").await;
    assert_eq!(
        sign_in_status(&g, "dana@example.com", "dana-pass-1").await,
        400
    );
}
