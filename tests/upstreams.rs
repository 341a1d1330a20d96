//! Several upstreams: routes naming `[upstreams.NAME]`, an HTTPS upstream
//! verified against its own CA and a configured name, pooled keep-alive
//! over TLS, untrusted and wrong-name certificates refused with 502, and
//! configuration mistakes stopping start-up and `check-config`.

mod common;

use common::backends::{HttpBackend, Pki};
use common::{Gatehouse, Options};

struct Setup {
    g: Gatehouse,
    api: HttpBackend,
    web: HttpBackend,
    wrong_name: HttpBackend,
    untrusted: HttpBackend,
}

/// The route table (`/api/` → api over TLS, required; `/` → web,
/// optional), plus routes to two misconfigured HTTPS upstreams.
async fn setup() -> Setup {
    let pki = Pki::new("Backend Test CA");
    let stranger = Pki::new("Nobody's CA");
    let api = HttpBackend::start("api", Some(pki.acceptor(&["api.internal"]))).await;
    let web = HttpBackend::start("web", None).await;
    let wrong_name = HttpBackend::start("wrong", Some(pki.acceptor(&["other.internal"]))).await;
    let untrusted =
        HttpBackend::start("untrusted", Some(stranger.acceptor(&["api.internal"]))).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("backend-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let upstreams = format!(
        "[upstreams.api]\nurl = \"https://{api}\"\nca_file = \"{ca}\"\nserver_name = \"api.internal\"\ntimeout = \"5s\"\n\
         [upstreams.web]\nurl = \"http://{web}\"\n\
         [upstreams.wrongname]\nurl = \"https://{wrong}\"\nca_file = \"{ca}\"\nserver_name = \"api.internal\"\n\
         [upstreams.untrusted]\nurl = \"https://{untrusted}\"\nca_file = \"{ca}\"\nserver_name = \"api.internal\"\n",
        api = api.addr,
        web = web.addr,
        wrong = wrong_name.addr,
        untrusted = untrusted.addr,
        ca = ca_file.display(),
    );
    let routes = "[[route]]\nprefix = \"/api/\"\nauth = \"required\"\nupstream = \"api\"\n\
                  [[route]]\nprefix = \"/wrong/\"\nauth = \"none\"\nupstream = \"wrongname\"\n\
                  [[route]]\nprefix = \"/untrusted/\"\nauth = \"none\"\nupstream = \"untrusted\"\n\
                  [[route]]\nprefix = \"/\"\nauth = \"optional\"\nupstream = \"web\"\n";
    let g = Gatehouse::start_with(Options {
        extra_toml: upstreams,
        routes: routes.into(),
        ..Default::default()
    })
    .await;
    // The CA file must outlive start-up only; the config was read by then.
    drop(dir);
    Setup {
        g,
        api,
        web,
        wrong_name,
        untrusted,
    }
}

async fn get(g: &Gatehouse, path: &str, cookie: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = g.client().get(g.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn routes_reach_their_upstreams_and_https_is_verified_and_pooled() {
    let s = setup().await;
    let g = &s.g;

    // `required` on the HTTPS upstream: no session, nothing reaches it.
    let (status, body) = get(g, "/api/items", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(s.api.count(), 0);

    let session = g.sign_up("ann@example.com", "password1").await;
    for _ in 0..3 {
        let (status, body) = get(g, "/api/items?x=1", Some(&session)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["upstream"], "api");
        assert_eq!(body["path"], "/api/items");
        // Host is the upstream's URL authority (server_name only verifies).
        assert_eq!(body["host"], s.api.addr.to_string());
    }
    let seen = s.api.requests().pop().unwrap();
    assert!(seen.headers.contains_key("x-auth-user-id"));
    assert_eq!(seen.headers["x-auth-email"], "ann@example.com");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert!(seen.headers.contains_key("x-request-id"));
    assert!(
        seen.headers.get("cookie").is_none(),
        "session cookie stripped"
    );
    // Three requests, one TLS connection: keep-alive pooling works over TLS.
    assert_eq!(s.api.count(), 3);
    assert_eq!(s.api.connections(), 1);

    // `/` goes to the plain web upstream, with or without a session.
    let (status, body) = get(g, "/about", None).await;
    assert_eq!((status, body["upstream"].as_str()), (200, Some("web")));
    let (status, body) = get(g, "/", Some(&session)).await;
    assert_eq!((status, body["upstream"].as_str()), (200, Some("web")));
    assert_eq!(s.web.count(), 2);
    // Gatehouse's own endpoints are still its own.
    assert_eq!(g.auth_check(&session).await["email"], "ann@example.com");
    // The default upstream got nothing: every route names another one.
    assert_eq!(g.upstream.count(), 0);

    // Readiness probes the upstreams routes use (not the unused default).
    let ready: serde_json::Value = g
        .client()
        .get(g.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok", "{ready}");
    let probed = ready["upstreams"].as_object().unwrap();
    let mut names: Vec<&str> = probed.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["api", "untrusted", "web", "wrongname"], "{ready}");
    drop(s.web);
    let ready = g.client().get(g.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["upstreams"]["web"], "failing", "{ready}");
    assert_eq!(ready["upstreams"]["api"], "ok", "{ready}");

    let metrics = g.metrics().await;
    assert!(
        metrics.contains("gatehouse_upstream_requests_total{upstream=\"api\",outcome=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_upstream_requests_total{upstream=\"web\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn untrusted_and_wrong_name_certificates_are_502_with_a_clear_log_line() {
    let s = setup().await;
    let g = &s.g;
    for (path, backend, upstream, hint) in [
        ("/wrong/x", &s.wrong_name, "wrongname", "set server_name"),
        (
            "/untrusted/x",
            &s.untrusted,
            "untrusted",
            "not signed by a CA",
        ),
    ] {
        let (status, body) = get(g, path, None).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert_eq!(body["message"], "Upstream unavailable", "{body}");
        // The TCP connection was made, but no request got through.
        assert!(backend.connections() >= 1);
        assert_eq!(backend.count(), 0, "{path} reached the upstream");
        let line = g
            .wait_for_log(&["upstream request failed", upstream, "TLS handshake"])
            .await;
        assert!(line.contains("invalid peer certificate"), "{line}");
        assert!(line.contains("api.internal"), "{line}");
        assert!(line.contains(hint), "{line}");
    }
    // A verified upstream next to them works (the refusals are not blanket).
    let session = g.sign_up("bo@example.com", "password1").await;
    assert_eq!(get(g, "/api/ok", Some(&session)).await.0, 200);

    let metrics = g.metrics().await;
    for upstream in ["wrongname", "untrusted"] {
        let series = format!(
            "gatehouse_upstream_requests_total{{upstream=\"{upstream}\",outcome=\"tls_error\"}} 1"
        );
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
}

#[tokio::test]
async fn preserve_host_forwards_the_clients_host() {
    let web = HttpBackend::start("web", None).await;
    let g = Gatehouse::start_with(Options {
        extra_toml: format!(
            "[upstreams.web]\nurl = \"http://{}\"\npreserve_host = true\n",
            web.addr
        ),
        routes: "[[route]]\nprefix = \"/kept/\"\nauth = \"none\"\nupstream = \"web\"\n\
                 [[route]]\nprefix = \"/\"\nauth = \"none\"\n"
            .into(),
        ..Default::default()
    })
    .await;
    let (status, body) = get(&g, "/kept/x", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["host"], format!("localhost:{}", g.addr.port()));
    // The default upstream (no preserve_host) still gets its own authority.
    let resp = g.client().get(g.url("/other")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        g.upstream.last().headers["host"],
        g.upstream.addr.to_string()
    );
}

/// `check-config` on `text`; returns (success, stderr).
fn check_config(text: &str) -> (bool, String) {
    let (ok, _, stderr) = common::run_cli_on(text, &["check-config"]);
    (ok, stderr)
}

#[test]
fn upstream_mistakes_stop_check_config_with_one_line_naming_the_key() {
    let good = "[upstreams.web]\nurl = \"http://127.0.0.1:5173\"\n\
                [[route]]\nprefix = \"/\"\nauth = \"optional\"\nupstream = \"web\"\n";
    let (ok, err) = check_config(good);
    assert!(ok, "{err}");
    // A PEM block that is no certificate: read fine, refused as a CA.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk-ca.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let junk_ca = format!(
        "[upstreams.api]\nurl = \"https://x\"\nca_file = \"{}\"\n",
        junk.display()
    );
    for (text, key) in [
        (
            "[[route]]\nprefix = \"/\"\nauth = \"optional\"\nupstream = \"nope\"\n",
            "route[0].upstream",
        ),
        (junk_ca.as_str(), "upstreams.api.ca_file"),
        ("[upstreams.api]\nurl = \"https//x\"\n", "upstreams.api.url"),
        (
            "[upstreams.api]\nurl = \"https://x\"\nca_file = \"/nonexistent/ca.pem\"\n",
            "upstreams.api.ca_file",
        ),
    ] {
        let (ok, err) = check_config(text);
        assert!(!ok, "{text} was accepted");
        assert!(err.contains(key), "{key} not named: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
