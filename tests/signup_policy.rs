//! The sign-up policy (issue 20), black-box: `[signup] mode = "invite" |
//! "domains" | "closed"` (and the default `open` elsewhere). A refused
//! address is answered exactly like a permitted one but gets no mail, and
//! its verify fails; invites are created, listed, revoked, expire and are
//! used up by the sign-up.

mod common;

use common::{Gatehouse, Options};

fn with_signup(section: &str) -> Options {
    let defaults = Options::default();
    Options {
        routes: format!("{section}\n{}", defaults.routes),
        ..defaults
    }
}

/// send-otp's status and body, for comparing answers.
async fn send_otp(g: &Gatehouse, email: &str) -> (u16, String) {
    let resp = g
        .post_json(
            "/api/v1/user/signup/send-otp",
            serde_json::json!({ "email": email }),
        )
        .await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn verify(g: &Gatehouse, email: &str, code: &str) -> (u16, String) {
    let resp = g
        .post_json(
            "/api/v1/user/signup/verify",
            serde_json::json!({ "email": email, "code": code, "password": "password1" }),
        )
        .await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn invite_mode_mails_only_invited_addresses_and_invites_expire_and_are_revoked() {
    // In-process on a manual clock: the invite's expiry is reached by moving
    // the server's clock (the CLI shows the server's verdict).
    let g = Gatehouse::start_with(Options {
        manual_clock: true,
        ..with_signup("[signup]\nmode = \"invite\"\n")
    })
    .await;
    let (_, out, _) = g.cli(&["check-config"], "");
    assert!(
        out.contains("sign-up: invite (only invited addresses)"),
        "{out}"
    );

    // Not invited: the same answer as for anyone, and no mail.
    let refused = send_otp(&g, "stranger@example.com").await;
    assert_eq!(refused.0, 200);
    let (ok, out, err) = g.cli(
        &["invite", "create", "ann@example.com", "--expires", "7d"],
        "",
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("ann@example.com") && out.contains("live"),
        "{out}"
    );
    // The invitation is mailed (a mail without a code).
    let invitation = g.smtp.wait_for_nth("ann@example.com", 1).await;
    assert!(
        invitation.contains("Subject: You are invited to Flowtask"),
        "{invitation}"
    );
    assert_eq!(common::extract_code(&invitation), None);
    let permitted = send_otp(&g, "ann@example.com").await;
    assert_eq!(refused, permitted, "the answers must not differ");
    let mail = g.smtp.wait_for_nth("ann@example.com", 2).await;
    let code = common::extract_code(&mail).unwrap_or_else(|| panic!("no code in:\n{mail}"));
    assert_eq!(g.smtp.count_to("stranger@example.com"), 0);
    // Guessing a code for an address without an invite fails like a wrong code.
    assert_eq!(verify(&g, "stranger@example.com", "123456").await.0, 400);

    // Revoked between code and verify: refused; invited again: accepted.
    let (ok, _, err) = g.cli(&["invite", "revoke", "ann@example.com"], "");
    assert!(ok, "{err}");
    let (status, body) = verify(&g, "ann@example.com", &code).await;
    assert_eq!(status, 400, "{body}");
    let (ok, _, err) = g.cli(&["invite", "revoke", "ann@example.com"], "");
    assert!(!ok && err.contains("no invite"), "{err}");
    g.cli(&["invite", "create", "ann@example.com"], "");
    let (status, body) = verify(&g, "ann@example.com", &code).await;
    assert_eq!(status, 200, "{body}");
    // The invite is used up, and an account cannot be invited.
    let (_, out, _) = g.cli(&["invite", "list", "--json"], "");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0, "{out}");
    let (ok, _, err) = g.cli(&["invite", "create", "ann@example.com"], "");
    assert!(!ok && err.contains("has an account"), "{err}");

    // An expired invite lets nobody in.
    let (ok, _, err) = g.cli(
        &["invite", "create", "bob@example.com", "--expires", "10m"],
        "",
    );
    assert!(ok, "{err}");
    let (_, out, _) = g.cli(&["invite", "list"], "");
    assert!(
        out.contains("bob@example.com") && out.contains("live") && !out.contains("expired"),
        "{out}"
    );
    g.advance(std::time::Duration::from_secs(11 * 60));
    let (_, out, _) = g.cli(&["invite", "list"], "");
    assert!(
        out.contains("bob@example.com") && out.contains("expired") && !out.contains("live"),
        "{out}"
    );
    assert_eq!(send_otp(&g, "bob@example.com").await.0, 200);
    // A live invite sent after it proves mail still flows…
    g.cli(&["invite", "create", "cy@example.com"], "");
    g.smtp.wait_for_nth("cy@example.com", 1).await;
    send_otp(&g, "cy@example.com").await;
    let code_mail = g.smtp.wait_for_nth("cy@example.com", 2).await;
    assert!(common::extract_code(&code_mail).is_some());
    // …while the expired one got no code (at most its invitation).
    let to_bob = g.smtp.mails_to("bob@example.com");
    assert!(to_bob.len() <= 1, "{} mails to bob", to_bob.len());
    assert!(
        to_bob
            .iter()
            .all(|m| common::extract_code(&m.data).is_none())
    );

    // `--expires` takes humantime's forms, and refuses what is no duration
    // without creating an invite.
    let (ok, _, err) = g.cli(
        &["invite", "create", "dee@example.com", "--expires", "soon"],
        "",
    );
    assert!(!ok, "{err}");
    assert!(
        err.contains("--expires \"soon\" is not a duration"),
        "{err}"
    );
    let (_, out, _) = g.cli(&["invite", "list"], "");
    assert!(!out.contains("dee@example.com"), "{out}");
    let (ok, out, err) = g.cli(
        &["invite", "create", "dee@example.com", "--expires", "1h 30m"],
        "",
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("dee@example.com") && out.contains("live"),
        "{out}"
    );
}

#[tokio::test]
async fn domains_and_closed_modes() {
    let g = Gatehouse::start_with(with_signup(
        "[signup]\nmode = \"domains\"\nallowed_domains = [\"corp.example\"]\n",
    ))
    .await;
    let (ok, out, err) = g.cli(&["check-config"], "");
    assert!(ok, "{err}");
    assert!(
        out.contains("sign-up: domains (only @corp.example)"),
        "{out}"
    );
    let refused = send_otp(&g, "eve@evilcorp.example").await;
    let permitted = send_otp(&g, "ann@corp.example").await;
    assert_eq!(refused, permitted);
    let mail = g.smtp.wait_for_nth("ann@corp.example", 1).await;
    assert_eq!(g.smtp.count_to("eve@evilcorp.example"), 0);
    let code = common::extract_code(&mail).unwrap();
    assert_eq!(verify(&g, "ann@corp.example", &code).await.0, 200);
    drop(g);

    let g = Gatehouse::start_with(with_signup("[signup]\nmode = \"closed\"\n")).await;
    let (_, out, _) = g.cli(&["check-config"], "");
    assert!(out.contains("sign-up: closed"), "{out}");
    assert_eq!(send_otp(&g, "ann@corp.example").await.0, 200);
    // Operators still add users; a notice mail to an existing account
    // proves the transport works, and the sign-up got nothing.
    let (ok, _, err) = g.cli(
        &["user", "add", "op@example.com", "--password", "password1"],
        "",
    );
    assert!(ok, "{err}");
    g.sign_in("op@example.com", "password1").await;
    g.smtp.wait_for_nth("op@example.com", 1).await;
    assert_eq!(verify(&g, "ann@corp.example", "123456").await.0, 400);
    assert_eq!(g.smtp.count_to("ann@corp.example"), 0);
}

#[tokio::test]
async fn a_refused_address_can_get_one_polite_notice_a_day() {
    let g = Gatehouse::start_with(with_signup(
        "[signup]\nmode = \"domains\"\nallowed_domains = [\"corp.example\"]\nrefusal_notice = true\n",
    ))
    .await;
    let (_, out, _) = g.cli(&["check-config"], "");
    assert!(
        out.contains("refused addresses get the usual answer and a notice"),
        "{out}"
    );
    let first = send_otp(&g, "eve@evilcorp.example").await;
    assert_eq!(first, send_otp(&g, "ann@corp.example").await);
    let notice = g.smtp.wait_for_nth("eve@evilcorp.example", 1).await;
    assert!(
        notice.contains("Subject: Your Flowtask sign-up"),
        "{notice}"
    );
    assert_eq!(common::extract_code(&notice), None, "no code");
    // Asking again: the same answer, but no second notice that day.
    assert_eq!(send_otp(&g, "eve@evilcorp.example").await, first);
    // Mail sent after it arrives, so the second notice would have too.
    g.smtp.wait_for_nth("ann@corp.example", 1).await;
    send_otp(&g, "ann@corp.example").await;
    g.smtp.wait_for_nth("ann@corp.example", 2).await;
    assert_eq!(g.smtp.count_to("eve@evilcorp.example"), 1);
}
