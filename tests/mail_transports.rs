//! The `file` transport with template overrides, and `gatehouse check-mail`
//! reporting the outcome of a real SMTP dialogue.

mod common;

use common::{Gatehouse, Options, binary, extract_code};

async fn check_mail(g: &Gatehouse, to: &str) -> std::process::Output {
    tokio::process::Command::new(binary())
        .args(["check-mail", "--config"])
        .arg(&g.config_path)
        .args(["--to", to])
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn file_transport_writes_one_eml_per_message_from_the_templates() {
    let outbox = tempfile::tempdir().unwrap();
    let templates = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = templates.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let subject = write("subject.txt", "{{product}}: confirm {{email}}\n");
    let text = write("text.txt", "Use {{code}} within {{lifetime}}.\n");
    let html = write("html.html", "<p>Use <b>{{code}}</b> ({{product}})</p>\n");
    let g = Gatehouse::start_with(Options {
        transport: "file",
        mail: format!(
            "dir = \"{}\"\nproduct_name = \"Acme <Tasks>\"\n\
             [mail.templates]\nsubject = \"{subject}\"\ntext = \"{text}\"\nhtml = \"{html}\"\n",
            outbox.path().display()
        ),
        ..Options::default()
    })
    .await;
    g.send_otp("jon@example.com").await;
    let files = common::eventually(std::time::Duration::from_secs(10), || {
        // Written as a hidden .tmp file, then renamed: only .eml files count.
        let names: Vec<_> = std::fs::read_dir(outbox.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        (!names.is_empty()).then_some(names)
    })
    .await
    .expect("an .eml file");
    assert_eq!(files.len(), 1, "{files:?}");
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        eml.contains("Subject: Acme <Tasks>: confirm jon@example.com"),
        "{eml}"
    );
    assert!(eml.contains("To: <jon@example.com>"), "{eml}");
    assert!(eml.contains("within 5 minutes."), "{eml}");
    assert!(eml.contains("(Acme &lt;Tasks&gt;)"), "{eml}");
    let code = extract_code(&eml).unwrap();
    assert_eq!(g.verify("jon@example.com", &code).await, 200);
    assert_eq!(g.smtp.mails().len(), 0);
}

#[tokio::test]
async fn check_mail_sends_a_test_message_and_reports_failure() {
    let mut g = Gatehouse::start().await;
    let out = check_mail(&g, "ops@example.com").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("accepted by smtp 127.0.0.1"), "{stdout}");
    let mail = g.smtp.wait_for_nth("ops@example.com", 1).await;
    assert!(mail.contains("check-mail"), "{mail}");

    g.smtp.stop().await;
    let out = check_mail(&g, "ops@example.com").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("mail check failed"), "{stderr}");
    assert!(stderr.contains("temporary"), "{stderr}");
}

#[tokio::test]
async fn a_bad_mail_setup_stops_start_up_with_the_key_named() {
    let g = Gatehouse::start().await;
    let config = std::fs::read_to_string(&g.config_path)
        .unwrap()
        // Its own store: the running instance holds the first one.
        .replace("data/gatehouse.redb", "other/gatehouse.redb")
        .replace(
            "timeout = \"5s\"\n",
            "timeout = \"5s\"\nusername = \"u\"\npassword_env = \"GATEHOUSE_TEST_NO_SUCH_VAR\"\n",
        );
    let path = g.dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = tokio::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("GATEHOUSE_TEST_NO_SUCH_VAR")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("mail.smtp.password_env"), "{stderr}");
}
