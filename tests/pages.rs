//! The built-in pages (issue 20), black-box over HTTP: the sign-in redirect
//! of page routes and its `rd` round trip, JSON for everything that is not
//! a top-level navigation, open-redirect attempts, CSRF of the forms, the
//! pages' security headers, sign-up / reset / sign-out through the forms,
//! and the "no access" page.

mod common;

use common::{Gatehouse, Options};

const FORM_COOKIE: &str = "__Host-gatehouse_form";

fn pages_options() -> Options {
    Options {
        routes: "[pages]\ntitle = \"Acme wiki\"\n\
                 [[route]]\nprefix = \"/api/v2/\"\nauth = \"required\"\n\
                 [[route]]\nprefix = \"/wiki/\"\nauth = \"required\"\n\
                 [[route]]\nprefix = \"/admin/\"\nauth = \"required\"\nallow_groups = [\"ops\"]\n\
                 [[route]]\nprefix = \"/\"\nauth = \"optional\"\n"
            .into(),
        ..Options::default()
    }
}

/// A browser's top-level navigation.
async fn navigate(g: &Gatehouse, path: &str, cookie: &str) -> reqwest::Response {
    let mut req = g
        .client()
        .get(g.url(path))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("sec-fetch-mode", "navigate");
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// The `value` of the hidden input `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in:\n{html}"))
        + needle.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].replace("&amp;", "&").replace("&#39;", "'")
}

/// A form page: its form cookie (`name=value`) and CSRF token.
async fn open_form(g: &Gatehouse, path: &str) -> (String, String, String) {
    let resp = navigate(g, path, "").await;
    assert_eq!(resp.status(), 200, "{path}");
    let cookie = common::session_cookie(&resp, FORM_COOKIE).expect("form cookie set");
    let html = resp.text().await.unwrap();
    let token = hidden(&html, "csrf");
    (cookie, token, html)
}

async fn post_form(
    g: &Gatehouse,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let body: String = fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    g.client()
        .post(g.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .header("origin", g.url("").trim_end_matches('/'))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Posts the sign-in form (`cookie` and `token` from [`open_form`]).
async fn post_sign_in(
    g: &Gatehouse,
    cookie: &str,
    token: &str,
    rd: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let fields = [
        ("csrf", token),
        ("rd", rd),
        ("email", email),
        ("password", password),
    ];
    post_form(g, "/_gatehouse/sign-in", cookie, &fields).await
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_browser_is_sent_to_sign_in_and_back_and_api_clients_get_json() {
    let g = Gatehouse::start_with(pages_options()).await;
    g.sign_up("ann@example.com", "password1").await;

    // A navigation to a page route goes to the sign-in page with rd.
    let resp = navigate(&g, "/wiki/Main_Page?action=edit&x=1", "").await;
    assert_eq!(resp.status(), 302);
    let to = location(&resp);
    assert_eq!(
        to,
        "/_gatehouse/sign-in?rd=/wiki/Main_Page%3Faction%3Dedit%26x%3D1"
    );
    assert_eq!(g.upstream.count(), 0);

    // Anything that is not a top-level navigation still gets 401 JSON.
    for (accept, mode) in [
        ("application/json", None),
        ("text/html", Some("cors")),
        ("text/html", Some("no-cors")),
        ("*/*", None),
    ] {
        let mut req = g.client().get(g.url("/wiki/x")).header("accept", accept);
        if let Some(mode) = mode {
            req = req.header("sec-fetch-mode", mode);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{accept} {mode:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["message"], "Authentication required");
    }
    // A POST navigation is not redirected either, and /api/ routes keep 401.
    let resp = g
        .client()
        .post(g.url("/wiki/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(navigate(&g, "/api/v2/tasks", "").await.status(), 401);

    // The sign-in page: security headers, labels, the rd carried along.
    let resp = navigate(&g, &to, "").await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    let csp = h["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let form_cookie = common::session_cookie(&resp, FORM_COOKIE).unwrap();
    let set = common::set_cookie_header(&resp, FORM_COOKIE).unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("<label for=\"email\">") && html.contains("<label for=\"password\">"));
    assert!(html.contains("Acme wiki"));
    // One script, Gatehouse's own static file (the passkey button); none
    // inline, and the CSP allows exactly that.
    assert_eq!(
        html.matches("<script").count(),
        1,
        "only the passkey script"
    );
    assert!(html.contains("<script src=\"/_gatehouse/passkey.js\" defer></script>"));
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    // The button is there for browsers with WebAuthn, hidden until the
    // script shows it; the alert region it reports into is present.
    assert!(html.contains("<div id=\"passkey\" hidden>"), "{html}");
    assert!(html.contains("id=\"passkey-button\""), "{html}");
    assert!(html.contains("<div id=\"form-error\" class=\"error\" role=\"alert\" hidden></div>"));
    assert!(!html.contains("style=\""), "no inline style");
    let token = hidden(&html, "csrf");
    let rd = hidden(&html, "rd");
    assert_eq!(rd, "/wiki/Main_Page?action=edit&x=1");

    // A wrong password: the form again, with an announced error.
    let resp = post_sign_in(
        &g,
        &form_cookie,
        &token,
        &rd,
        "ann@example.com",
        "wrong-password",
    )
    .await;
    assert_eq!(resp.status(), 400);
    let html = resp.text().await.unwrap();
    assert!(html.contains("role=\"alert\""), "{html}");
    assert!(html.contains("aria-describedby=\"form-error\""));
    assert!(
        html.contains("value=\"ann@example.com\""),
        "the email is kept"
    );

    // Without the form cookie, or with another token: refused, nothing signed in.
    for (cookie, tok) in [("", token.as_str()), (form_cookie.as_str(), "AAAA")] {
        let resp = post_sign_in(&g, cookie, tok, &rd, "ann@example.com", "password1").await;
        assert_eq!(resp.status(), 403);
        assert!(common::session_cookie(&resp, g.cookie_name()).is_none());
        assert!(resp.text().await.unwrap().contains("role=\"alert\""));
    }

    // The valid form signs in and returns to the original page.
    let resp = post_sign_in(
        &g,
        &form_cookie,
        &token,
        &rd,
        "ann@example.com",
        "password1",
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/wiki/Main_Page?action=edit&x=1");
    let session = common::session_cookie(&resp, g.cookie_name()).unwrap();
    let resp = navigate(&g, "/wiki/Main_Page?action=edit&x=1", &session).await;
    assert_eq!(resp.status(), 200);
    let last = g.upstream.last();
    assert_eq!(last.target, "/wiki/Main_Page?action=edit&x=1");
    assert_eq!(last.headers["x-auth-email"], "ann@example.com");

    // Pages without the passkey button keep the CSP without script.
    let resp = navigate(&g, "/_gatehouse/sign-up", "").await;
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!csp.contains("script-src"), "{csp}");
    assert!(!resp.text().await.unwrap().contains("<script"));
    // The passkey script is a static file, served as JavaScript.
    let resp = g
        .client()
        .get(g.url("/_gatehouse/passkey.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("/api/v1/user/passkeys/login/start")
    );

    // The stylesheet is Gatehouse's own.
    let resp = g
        .client()
        .get(g.url("/_gatehouse/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

#[tokio::test]
async fn open_redirect_spellings_all_land_on_the_root() {
    let g = Gatehouse::start_with(pages_options()).await;
    g.sign_up("ann@example.com", "password1").await;
    let evil = [
        "https://evil.example/",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/%2F/evil.example",
        "/%2f%2fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "javascript:alert(1)",
        "data:text/html,x",
        "evil.example",
        "/\t/evil.example",
        "/%09/evil.example",
        "/%0d%0aLocation:%20https://evil.example",
        " //evil.example",
        "https:/evil.example",
        "/\u{3002}evil.example",
        "//evil.example@good",
        "/%5C%5Cevil.example",
    ];
    assert!(evil.len() >= 20);
    for rd in evil {
        // The page does not even carry it…
        let html = navigate(&g, &format!("/_gatehouse/sign-in?rd={}", enc(rd)), "")
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(hidden(&html, "rd"), "", "{rd:?}");
        // …and a posted one is ignored: the browser lands on "/".
        let (cookie, token, _) = open_form(&g, "/_gatehouse/sign-in").await;
        let resp = post_sign_in(&g, &cookie, &token, rd, "ann@example.com", "password1").await;
        assert_eq!(resp.status(), 303, "{rd:?}");
        assert_eq!(location(&resp), "/", "{rd:?}");
    }
    // The accepted form round-trips.
    let (cookie, token, _) = open_form(&g, "/_gatehouse/sign-in").await;
    let resp = post_sign_in(
        &g,
        &cookie,
        &token,
        "/wiki/a%20b?q=1",
        "ann@example.com",
        "password1",
    )
    .await;
    assert_eq!(location(&resp), "/wiki/a%20b?q=1");
}

#[tokio::test]
async fn sign_up_reset_sign_out_and_the_no_access_page() {
    let g = Gatehouse::start_with(pages_options()).await;

    // Sign-up: email, then the emailed code with a password.
    let (cookie, token, html) = open_form(&g, "/_gatehouse/sign-up?rd=/wiki/").await;
    assert_eq!(hidden(&html, "rd"), "/wiki/");
    let resp = post_form(
        &g,
        "/_gatehouse/sign-up",
        &cookie,
        &[
            ("csrf", &token),
            ("rd", "/wiki/"),
            ("email", "bea@example.com"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("action=\"/_gatehouse/sign-up/verify\""),
        "{html}"
    );
    assert!(html.contains("<label for=\"code\">"));
    let mail = g.smtp.wait_for_nth("bea@example.com", 1).await;
    let code = common::extract_code(&mail).unwrap();
    let resp = post_form(
        &g,
        "/_gatehouse/sign-up/verify",
        &cookie,
        &[
            ("csrf", &token),
            ("rd", "/wiki/"),
            ("email", "bea@example.com"),
            ("code", &code),
            ("password", "password1"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/wiki/");
    let session = common::session_cookie(&resp, g.cookie_name()).unwrap();
    assert_eq!(g.auth_check(&session).await["isAuthenticated"], true);

    // Signed in but not in "ops": the no-access page for a browser, JSON
    // 403 for anything else.
    let resp = navigate(&g, "/admin/", &session).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("bea@example.com") && html.contains("No access"),
        "{html}"
    );
    let resp = g.get_with_cookie("/admin/", &session).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["message"],
        "Access denied"
    );

    // Sign-out through its form: the session ends, the signed-out page follows.
    let both = format!("{cookie}; {session}");
    let resp = navigate(&g, "/_gatehouse/sign-out", &both).await;
    let token = hidden(&resp.text().await.unwrap(), "csrf");
    let resp = post_form(&g, "/_gatehouse/sign-out", &both, &[("csrf", &token)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/_gatehouse/signed-out");
    let cleared = common::set_cookie_header(&resp, g.cookie_name()).unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(g.auth_check(&session).await["isAuthenticated"], false);
    let resp = navigate(&g, "/_gatehouse/signed-out", "").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("role=\"status\""));

    // Forgot / reset: a code by mail, a new password, signed in.
    let (cookie, token, _) = open_form(&g, "/_gatehouse/forgot").await;
    let resp = post_form(
        &g,
        "/_gatehouse/forgot",
        &cookie,
        &[("csrf", &token), ("email", "bea@example.com")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("action=\"/_gatehouse/reset\"")
    );
    let mail = g.smtp.wait_for_nth("bea@example.com", 2).await;
    let code = common::extract_code(&mail).unwrap();
    let resp = post_form(
        &g,
        "/_gatehouse/reset",
        &cookie,
        &[
            ("csrf", &token),
            ("email", "bea@example.com"),
            ("code", &code),
            ("password", "new-password-2"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/");
    g.sign_in("bea@example.com", "new-password-2").await;

    // A foreign site's form post is refused even with a valid token.
    let (cookie, token, _) = open_form(&g, "/_gatehouse/sign-in").await;
    let resp = g
        .client()
        .post(g.url("/_gatehouse/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .body(format!(
            "csrf={}&email=bea%40example.com&password=new-password-2",
            enc(&token)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(common::session_cookie(&resp, g.cookie_name()).is_none());
}

#[tokio::test]
async fn texts_colours_and_logo_come_from_the_templates_directory() {
    let files = tempfile::tempdir().unwrap();
    let templates = files.path().join("pages");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("texts.toml"),
        "sign_in_heading = \"Welcome to <Acme>\"\nemail_label = \"Work email\"\n",
    )
    .unwrap();
    std::fs::write(
        templates.join("style.css"),
        ":root { --accent: #0a6d3d; }\n",
    )
    .unwrap();
    let logo = files.path().join("logo.png");
    let png: &[u8] = b"\x89PNG\r\n\x1a\nnot really a picture";
    std::fs::write(&logo, png).unwrap();
    let mut opts = pages_options();
    opts.routes = opts.routes.replace(
        "[pages]\n",
        &format!(
            "[pages]\ntemplates_dir = \"{}\"\nlogo = \"{}\"\n",
            templates.display(),
            logo.display()
        ),
    );
    let g = Gatehouse::start_with(opts).await;
    let html = navigate(&g, "/_gatehouse/sign-in", "")
        .await
        .text()
        .await
        .unwrap();
    // Overridden texts, escaped like every value.
    assert!(
        html.contains("<h1 id=\"page-heading\">Welcome to &lt;Acme&gt;</h1>"),
        "{html}"
    );
    assert!(html.contains("<label for=\"email\">Work email</label>"));
    // Untouched texts keep their defaults.
    assert!(html.contains("<label for=\"password\">Password</label>"));
    assert!(html.contains("<img class=\"logo\" src=\"/_gatehouse/logo\" alt=\"\">"));
    let resp = g
        .client()
        .get(g.url("/_gatehouse/logo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), png);
    let css = g
        .client()
        .get(g.url("/_gatehouse/style.css"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        css.contains("--accent: #0a6d3d"),
        "appended to the built-in sheet"
    );
    assert!(css.contains(".card"), "the built-in sheet is still there");

    // A texts.toml with an unknown key is refused by check-config, naming it.
    std::fs::write(templates.join("texts.toml"), "sign_in_heding = \"x\"\n").unwrap();
    let (ok, _, err) = g.cli(&["check-config"], "");
    assert!(!ok, "an unknown text was accepted");
    assert!(err.contains("unknown text \"sign_in_heding\""), "{err}");
}

/// A user with TOTP (issue 19) signs in through the pages: the password
/// form leads to the second-factor page with only the pending cookie, a
/// wrong code is announced there, the right one signs in and returns to
/// `rd`; a recovery code works in the same field.
#[tokio::test]
async fn a_user_with_totp_passes_the_second_factor_page_and_returns_to_rd() {
    let g = Gatehouse::start_with(pages_options()).await;
    let email = "tom@example.com";
    let cookie = g.sign_up(email, "password1").await;
    let totp = g.enrol_totp(&cookie, "password1").await;
    let recovery = totp.recovery_codes[0].clone();
    let pending_name = format!("{}_mfa", g.cookie_name());

    let sign_in_with_password = || async {
        let (form_cookie, token, _) = open_form(&g, "/_gatehouse/sign-in?rd=/wiki/Page").await;
        let resp = post_sign_in(&g, &form_cookie, &token, "/wiki/Page", email, "password1").await;
        assert_eq!(resp.status(), 303);
        assert!(
            common::session_cookie(&resp, g.cookie_name()).is_none(),
            "no session before the second factor"
        );
        let to = location(&resp);
        assert_eq!(to, "/_gatehouse/second-factor?rd=/wiki/Page");
        let pending = common::session_cookie(&resp, &pending_name).expect("pending cookie");
        (form_cookie, token, pending, to)
    };

    // The page asks for the code; a wrong one is announced, no session.
    let (form_cookie, _, pending, to) = sign_in_with_password().await;
    let both = format!("{form_cookie}; {pending}");
    let resp = navigate(&g, &to, &both).await;
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let html = resp.text().await.unwrap();
    assert!(html.contains("<label for=\"code\">"), "{html}");
    // TOTP only: no passkey button, no script, and the CSP without one.
    assert!(!html.contains("passkey"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(!csp.contains("script-src"), "{csp}");
    let token = hidden(&html, "csrf");
    assert_eq!(hidden(&html, "rd"), "/wiki/Page");
    let wrong = if totp.code_at(0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let resp = post_form(
        &g,
        "/_gatehouse/second-factor",
        &both,
        &[("csrf", &token), ("rd", "/wiki/Page"), ("code", wrong)],
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(common::session_cookie(&resp, g.cookie_name()).is_none());
    assert!(resp.text().await.unwrap().contains("role=\"alert\""));

    // The right code signs in and returns to rd.
    let resp = post_form(
        &g,
        "/_gatehouse/second-factor",
        &both,
        &[
            ("csrf", &token),
            ("rd", "/wiki/Page"),
            ("code", &totp.code_at(0)),
        ],
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/wiki/Page");
    let session = common::session_cookie(&resp, g.cookie_name()).expect("session");
    let resp = navigate(&g, "/wiki/Page", &session).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(g.upstream.last().headers["x-auth-email"], email);

    // A recovery code works in the same field; the page without a pending
    // sign-in refuses.
    let (form_cookie, token, pending, _) = sign_in_with_password().await;
    let resp = post_form(
        &g,
        "/_gatehouse/second-factor",
        &format!("{form_cookie}; {pending}"),
        &[("csrf", &token), ("rd", "/wiki/Page"), ("code", &recovery)],
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert!(common::session_cookie(&resp, g.cookie_name()).is_some());
    let resp = post_form(
        &g,
        "/_gatehouse/second-factor",
        &form_cookie,
        &[
            ("csrf", &token),
            ("rd", "/wiki/Page"),
            ("code", &totp.code_at(1)),
        ],
    )
    .await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert!(common::session_cookie(&resp, g.cookie_name()).is_none());
}

/// The second-factor page without a pending sign-in (none, or used up)
/// offers no field and no passkey button: it says the step has expired and
/// links back to sign-in, keeping `rd`.
#[tokio::test]
async fn the_second_factor_page_without_a_pending_sign_in_leads_back_to_sign_in() {
    let g = Gatehouse::start_with(pages_options()).await;
    let pending_name = format!("{}_mfa", g.cookie_name());
    for cookie in ["".to_string(), format!("{pending_name}=unknown")] {
        let resp = navigate(&g, "/_gatehouse/second-factor?rd=/wiki/Page", &cookie).await;
        assert_eq!(resp.status(), 200);
        let html = resp.text().await.unwrap();
        assert!(html.contains("role=\"alert\""), "{html}");
        assert!(html.contains("has expired"), "{html}");
        assert!(!html.contains("name=\"code\""), "{html}");
        assert!(!html.contains("passkey"), "{html}");
        assert!(
            html.contains("href=\"/_gatehouse/sign-in?rd=/wiki/Page\""),
            "{html}"
        );
    }
}
