//! SMTP security and authentication against a real server on loopback:
//! STARTTLS and implicit TLS with a test CA, certificates checked, AUTH
//! PLAIN and LOGIN, wrong credentials not retried, the password never logged.

mod common;

use common::{Gatehouse, Options, SinkOptions, SinkTlsMode, extract_code};

fn with_auth(mechs: &'static str, password_line: &str) -> Options {
    Options {
        sink: SinkOptions {
            auth: Some(("mailer".into(), "s3cret-pw".into(), mechs)),
            ..SinkOptions::default()
        },
        smtp: format!("username = \"mailer\"\n{password_line}\n"),
        sink_tls: SinkTlsMode::StartTls,
        ..Options::default()
    }
}

async fn code_arrives(g: &Gatehouse, email: &str) {
    g.send_otp(email).await;
    let mail = g.smtp.wait_for_nth(email, 1).await;
    let code = extract_code(&mail).unwrap();
    assert_eq!(g.verify(email, &code).await, 200);
}

#[tokio::test]
async fn starttls_with_the_configured_ca() {
    let g = Gatehouse::start_with(Options {
        sink_tls: SinkTlsMode::StartTls,
        ..Options::default()
    })
    .await;
    code_arrives(&g, "amy@example.com").await;
}

#[tokio::test]
async fn implicit_tls_with_the_configured_ca() {
    let g = Gatehouse::start_with(Options {
        sink_tls: SinkTlsMode::Implicit,
        ..Options::default()
    })
    .await;
    code_arrives(&g, "bea@example.com").await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_nothing_is_sent() {
    // Without ca_file the system roots apply, and they do not know the test CA.
    let g = Gatehouse::start_with(Options {
        sink_tls: SinkTlsMode::StartTls,
        trust_test_ca: false,
        ..Options::default()
    })
    .await;
    g.send_otp("cal@example.com").await;
    let line = g.wait_for_log(&["outbox_id=1", "outcome=\"failed\""]).await;
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    assert_eq!(g.smtp.mails().len(), 0);
}

#[tokio::test]
async fn auth_plain_with_the_right_password() {
    let g = Gatehouse::start_with(with_auth("PLAIN", "password = \"s3cret-pw\"")).await;
    code_arrives(&g, "dee@example.com").await;
    assert_eq!(g.smtp.auth_failures(), 0);
    assert!(!g.logs().contains("s3cret-pw"));
}

#[tokio::test]
async fn auth_login_with_the_password_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("smtp-password");
    std::fs::write(&file, "s3cret-pw\n").unwrap();
    let line = format!("password_file = \"{}\"", file.display());
    let g = Gatehouse::start_with(with_auth("LOGIN", &line)).await;
    code_arrives(&g, "eli@example.com").await;
    assert_eq!(g.smtp.auth_failures(), 0);
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_failure_and_is_not_logged() {
    let g = Gatehouse::start_with(Options {
        mail: "retry_initial = \"100ms\"\nretry_max = \"200ms\"\n".into(),
        ..with_auth("PLAIN LOGIN", "password = \"not-the-pw\"")
    })
    .await;
    g.send_otp("fin@example.com").await;
    let line = g
        .wait_for_log(&["outbox_id=1", "outcome=\"failed\"", "535"])
        .await;
    assert!(line.contains("Authentication"), "{line}");
    g.send_otp("gil@example.com").await;
    g.wait_for_log(&["outbox_id=2", "outcome=\"failed\""]).await;
    assert_eq!(g.smtp.mails().len(), 0);
    // One connection per message: no retries after a 535.
    assert_eq!(g.smtp.connections(), 2);
    assert!(!g.logs().contains("not-the-pw"));
}
