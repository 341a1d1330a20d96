//! What a new user hits while following the README, checked black-box
//! against the binary: `check-config` agrees with `serve`; every
//! configuration error names file, line and key; logs carry colour only for
//! a terminal; the `log` mail transport says in one line that it printed the
//! mail; access lines of the auth endpoints name the user.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Gatehouse, Options};

struct Case {
    dir: tempfile::TempDir,
    path: PathBuf,
}

/// A config file in a fresh directory; `{dir}` in `body` becomes that
/// directory. Plain HTTP on port 0, admin off, store inside the directory.
fn config(body: &str) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let body = body.replace("{dir}", &dir.path().display().to_string());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [store]\npath = \"{}/data/g.redb\"\n\
         [admin]\nlisten = \"off\"\n{body}",
        dir.path().display()
    );
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, text).unwrap();
    Case { dir, path }
}

fn run(args: &[&str], path: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::binary());
    cmd.args(args)
        .arg("--config")
        .arg(path)
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // `serve` on a good config would run: these cases all fail at start-up,
    // and a bounded wait turns a start into a clear failure.
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The 1-based line of `needle` in the case's config file.
fn line_of(case: &Case, needle: &str) -> usize {
    let text = std::fs::read_to_string(&case.path).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in\n{text}"))
        + 1
}

#[test]
fn check_config_refuses_what_serve_refuses_naming_file_line_and_key() {
    let smtp = "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = 2525\nsecurity = \"none\"\n";
    let cases = [
        // Missing TLS certificate / key files.
        (
            "[tls]\ncert = \"{dir}/missing-cert.pem\"\nkey = \"{dir}/key.pem\"\n".to_string(),
            "tls.cert",
            "cert = ",
            "missing-cert.pem",
        ),
        // An unreadable template.
        (
            "[mail.templates]\ntext = \"{dir}/no-such-template.txt\"\n".to_string(),
            "mail.templates.text",
            "text = ",
            "no-such-template.txt",
        ),
        // An SMTP password variable that is not set.
        (
            format!("{smtp}username = \"u\"\npassword_env = \"GATEHOUSE_TEST_UNSET_PASSWORD\"\n"),
            "mail.smtp.password_env",
            "password_env",
            "GATEHOUSE_TEST_UNSET_PASSWORD",
        ),
        // An SMTP CA file that does not exist.
        (
            "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"localhost\"\nsecurity = \"starttls\"\nca_file = \"{dir}/no-ca.pem\"\n".to_string(),
            "mail.smtp.ca_file",
            "ca_file",
            "no-ca.pem",
        ),
    ];
    let mut refused = 0;
    for (body, key, line_needle, detail) in &cases {
        let case = config(body);
        if key == &"tls.cert" {
            // A key file that exists, so only the certificate is missing.
            std::fs::write(case.dir.path().join("key.pem"), "not a key").unwrap();
        }
        let line = line_of(&case, line_needle);
        let want = format!("config {}, line {line}: key `{key}`", case.path.display());
        for command in ["check-config", "serve"] {
            let out = run(&[command], &case.path, &[]);
            let err = stderr(&out);
            assert!(!out.status.success(), "{command} accepted {body}: {err}");
            assert!(err.contains(&want), "{command}: {want:?} not in {err:?}");
            assert!(err.contains(detail), "{command}: {detail} not in {err:?}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
            refused += 1;
        }
    }
    assert_eq!(refused, 2 * cases.len());

    // And the valid forms pass check-config.
    let templates = tempfile::tempdir().unwrap();
    let template = templates.path().join("code.txt");
    std::fs::write(&template, "Your code: {{code}}\n").unwrap();
    for (body, env) in [
        (String::new(), vec![]),
        (
            format!("[mail.templates]\ntext = \"{}\"\n", template.display()),
            vec![],
        ),
        (
            format!("{smtp}username = \"u\"\npassword_env = \"GATEHOUSE_TEST_SET_PASSWORD\"\n"),
            vec![("GATEHOUSE_TEST_SET_PASSWORD", "hunter2")],
        ),
    ] {
        let case = config(&body);
        let out = run(&["check-config"], &case.path, &env);
        assert!(out.status.success(), "{body}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
    }
}

#[test]
fn every_config_error_names_file_line_and_key() {
    for (body, key, needle) in [
        (
            "[session]\nidle_timeout = \"soon\"\n",
            "session.idle_timeout",
            "idle_timeout",
        ),
        ("[otp]\nttl = \"5 fortnights\"\n", "otp.ttl", "ttl ="),
        (
            "[limits]\nfirst_backoff = \"10\"\n",
            "limits.first_backoff",
            "first_backoff",
        ),
        (
            "[otp]\nmax_attempts = 0\n",
            "otp.max_attempts",
            "max_attempts",
        ),
        (
            "[mail]\ntransport = \"pigeon\"\n",
            "mail.transport",
            "transport",
        ),
        ("[upstream]\nurl = \"ftp://x\"\n", "upstream.url", "url ="),
        (
            "[[route]]\nprefix = \"/a/\"\nauth = \"maybe\"\n",
            "route[0].auth",
            "auth =",
        ),
        (
            "[cors]\nallowed_origins = [\"https://a.example/path\"]\n",
            "cors.allowed_origins",
            "allowed_origins",
        ),
    ] {
        let case = config(body);
        let line = line_of(&case, needle);
        let out = run(&["check-config"], &case.path, &[]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{body}");
        let want = format!("config {}, line {line}: key `{key}`", case.path.display());
        assert!(err.contains(&want), "{want:?} not in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A syntax error names its line and the key or section there.
    let case = config("[server]\nworkers = 2\n");
    let err = stderr(&run(&["check-config"], &case.path, &[]));
    assert!(
        err.contains(&format!(
            "config {}, line 7: duplicate key `server`",
            case.path.display()
        )),
        "{err}"
    );
    let case = config("[otp]\nmax_attempts = \"five\"\n");
    let err = stderr(&run(&["check-config"], &case.path, &[]));
    assert!(
        err.contains(&format!(
            "config {}, line 8: key `otp.max_attempts`",
            case.path.display()
        )),
        "{err}"
    );
    // A required key that is missing points at its section.
    let case = config("[mail]\ntransport = \"smtp\"\n[mail.smtp]\nport = 25\n");
    let section = line_of(&case, "[mail.smtp]");
    let err = stderr(&run(&["check-config"], &case.path, &[]));
    assert!(
        err.contains(&format!(
            "config {}, line {section} (the key is not set in this section): key `mail.smtp.host`",
            case.path.display()
        )),
        "{err}"
    );
}

/// Runs `serve` for five seconds (through `script`, on a pseudo-terminal,
/// when `through_terminal`) and returns what it wrote.
fn serve_output(case: &Case, through_terminal: bool, no_color: Option<&str>) -> String {
    let bin = common::binary();
    let mut cmd = if through_terminal {
        // util-linux `script` runs the command on a pseudo-terminal.
        let mut c = Command::new("script");
        c.args(["-qefc"])
            .arg(format!(
                "timeout -s INT 5 {bin} serve --config {}",
                case.path.display()
            ))
            .arg("/dev/null");
        c
    } else {
        let mut c = Command::new("timeout");
        c.args(["-s", "INT", "5", bin, "serve", "--config"])
            .arg(&case.path);
        c
    };
    cmd.env_remove("NO_COLOR").env("RUST_LOG", "info");
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().expect("run serve");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("listening on"), "did not start:\n{text}");
    text
}

#[test]
fn logs_are_coloured_only_on_a_terminal_without_no_color() {
    let case = config("");
    let piped = serve_output(&case, false, None);
    assert!(
        !piped.contains('\u{1b}'),
        "ANSI codes in piped logs:\n{piped:?}"
    );
    let terminal = serve_output(&case, true, None);
    assert!(
        terminal.contains("\u{1b}["),
        "no colour on a terminal:\n{terminal:?}"
    );
    let refused = serve_output(&case, true, Some("1"));
    assert!(
        !refused.contains('\u{1b}'),
        "NO_COLOR ignored:\n{refused:?}"
    );
}

#[tokio::test]
async fn log_transport_says_in_one_line_that_it_printed_the_mail() {
    let g = Gatehouse::start_with(Options {
        transport: "log",
        ..Options::default()
    })
    .await;
    g.send_otp("newcomer@example.com").await;
    let line = g
        .wait_for_log(&[
            "mail printed here instead of sent",
            "development transport `log`",
        ])
        .await;
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("newcomer@example.com"), "{line}");
    // The code itself follows the line (that is the point of the transport).
    let code = g
        .log_lines()
        .iter()
        .find_map(|l| common::extract_code(&format!("h\r\n\r\n{l}")));
    assert!(code.is_some(), "no code printed:\n{}", g.logs());
    assert_eq!(g.count_log("mail printed here instead of sent"), 1);
    assert_eq!(g.count_log("mail not sent"), 0, "{}", g.logs());
    assert_eq!(g.count_log("outcome=\"sent\""), 0, "{}", g.logs());
}

#[tokio::test]
async fn auth_endpoint_access_lines_name_the_user() {
    let g = Gatehouse::start().await;
    let session = g.sign_up("who@example.com", "password1").await;
    let user_of = |route: &str| {
        g.log_lines()
            .iter()
            .filter(|l| l.contains("gatehouse::access") && l.contains(&format!("path={route} ")))
            .map(|l| {
                l.split("user=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or("?")
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    g.auth_check(&session).await;
    let resp = g
        .post_json_with_cookie("/api/v1/user/logout", serde_json::json!({}), &session)
        .await;
    assert_eq!(resp.status(), 200);
    let again = g.sign_in("who@example.com", "password1").await;
    let resp = g
        .post_json_with_cookie("/api/v1/user/logout-all", serde_json::json!({}), &again)
        .await;
    assert_eq!(resp.status(), 200);
    // Signed out: the same endpoints show no user.
    g.auth_check(&session).await;
    g.wait_for_log(&["path=/api/v1/user/logout-all ", "user="])
        .await;
    common::eventually(Duration::from_secs(10), || {
        (user_of("/api/v1/auth-check").len() == 2).then_some(())
    })
    .await
    .expect("two auth-check lines");
    assert_eq!(user_of("/api/v1/auth-check"), ["1", "-"]);
    assert_eq!(user_of("/api/v1/user/logout"), ["1"]);
    assert_eq!(user_of("/api/v1/user/logout-all"), ["1"]);
}
