//! The OAuth endpoints without a provider (these run in plain `cargo test`;
//! the flow against a real provider is in `oidc_flow.rs`): connect's
//! refusals, callback refusals that need no provider, the provider being
//! down, method and routing, metrics, and configuration errors that name
//! the key.

mod common;

use common::{Gatehouse, Options};

/// An `[[oidc]]` provider whose issuer nothing listens on.
fn unreachable_provider() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The listener is dropped: connections to the port are refused.
    format!(
        "[[oidc]]\nname = \"down\"\nissuer = \"https://127.0.0.1:{port}\"\nclient_id = \"c\"\n\
         client_secret = \"s\"\nredirect_url = \"https://localhost/api/v1/oauth/down/callback\"\n"
    )
}

async fn start() -> Gatehouse {
    Gatehouse::start_with(Options {
        extra_toml: unreachable_provider(),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn connect_refuses_unknown_providers_bad_callback_urls_and_reports_an_unreachable_provider() {
    let g = start().await;
    let get = |path: &str| g.client().get(g.url(path)).send();

    let unknown = get("/api/v1/oauth/nope/connect").await.unwrap();
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["message"], "Unknown identity provider");

    // callbackUrl is checked before the provider is contacted.
    for evil in [
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%255Cevil",
        "x",
    ] {
        let resp = g
            .client()
            .get(g.url(&format!("/api/v1/oauth/down/connect?callbackUrl={evil}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{evil}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains("callbackUrl"));
    }

    // A valid request reaches the provider, which is down: 502, JSON, and
    // the reason in the log.
    let down = g
        .client()
        .get(g.url("/api/v1/oauth/down/connect?callbackUrl=%2Fapp%2Ftoday"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 502);
    let body: serde_json::Value = down.json().await.unwrap();
    assert_eq!(body["message"], "Identity provider unavailable");
    g.wait_for_log(&["discovery at https://127.0.0.1:"]).await;

    // Only GET; and spellings of the path reach the same endpoint.
    let post = g
        .client()
        .post(g.url("/api/v1/oauth/down/connect"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    let upper = get("/API/v1/OAuth/NOPE/connect").await.unwrap();
    assert_eq!(upper.status(), 404);
    assert_eq!(
        g.upstream.count(),
        0,
        "nothing under /api/v1/oauth is proxied"
    );
}

#[tokio::test]
async fn callback_refusals_redirect_with_the_flowtask_codes() {
    let g = start().await;
    let redirect = |path: &'static str| {
        let client = g.client();
        let url = g.url(path);
        async move {
            let resp = client.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 302, "{path}");
            let cookies: Vec<String> = resp
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            // No session is set; the binding is left alone (a sign-in
            // pending in another tab may still finish).
            assert!(cookies.is_empty(), "{cookies:?}");
            resp.headers()["location"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(
        redirect("/api/v1/oauth/down/callback?error=access_denied&state=x").await,
        "/signin?error=access_denied"
    );
    assert_eq!(
        redirect("/api/v1/oauth/down/callback?error=server_error").await,
        "/signin?error=oauth_failed"
    );
    assert_eq!(
        redirect("/api/v1/oauth/down/callback?state=abc").await,
        "/signin?error=missing_code"
    );
    assert_eq!(
        redirect("/api/v1/oauth/down/callback?code=abc&state=never-issued").await,
        "/signin?error=invalid_state"
    );
    assert_eq!(
        redirect("/api/v1/oauth/down/callback?code=abc").await,
        "/signin?error=invalid_state"
    );
    assert_eq!(
        redirect("/api/v1/oauth/other/callback?code=abc&state=x").await,
        "/signin?error=oauth_failed"
    );
    // Counted by provider and outcome; unknown names are not labels.
    let metrics = g.metrics().await;
    for line in [
        "gatehouse_oidc_signins_total{provider=\"down\",outcome=\"access_denied\"} 1",
        "gatehouse_oidc_signins_total{provider=\"down\",outcome=\"invalid_state\"} 2",
        "gatehouse_oidc_signins_total{provider=\"down\",outcome=\"missing_code\"} 1",
        "gatehouse_oidc_signins_total{provider=\"unknown\",outcome=\"oauth_failed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(!metrics.contains("provider=\"other\""));
}

#[tokio::test]
async fn connect_is_rate_limited_per_address() {
    let g = Gatehouse::start_with(Options {
        extra_toml: format!(
            "{}[limits]\nsignin_per_ip_per_minute = 3\n",
            unreachable_provider()
        ),
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        let resp = g
            .client()
            .get(g.url("/api/v1/oauth/down/connect"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
    }
    let limited = g
        .client()
        .get(g.url("/api/v1/oauth/down/connect"))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}

#[test]
fn configuration_errors_name_the_key_in_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let check = |toml: &str| {
        let (ok, stdout, stderr) = common::run_cli_on(toml, &["check-config"]);
        (ok, stdout + &stderr)
    };
    let provider = |secret: &str| {
        format!(
            "[[oidc]]\nname = \"google\"\nissuer = \"https://accounts.google.com\"\n\
             client_id = \"c\"\n{secret}\n\
             redirect_url = \"https://app.example.com/api/v1/oauth/google/callback\"\n"
        )
    };
    let (ok, out) = check(&provider("client_secret_file = \"/nonexistent/secret\""));
    assert!(!ok);
    assert!(out.contains("oidc.client_secret_file"), "{out}");
    let (ok, out) = check(&provider(
        "client_secret_env = \"GATEHOUSE_TEST_NO_SUCH_VAR\"",
    ));
    assert!(!ok);
    assert!(out.contains("oidc.client_secret_env"), "{out}");
    let (ok, out) = check(&provider(
        "client_secret = \"s\"\nclient_secret_env = \"X\"",
    ));
    assert!(!ok);
    assert!(out.contains("oidc.client_secret"), "{out}");
    let (ok, out) = check(&provider("client_secret = \"s\"").replace("/google/callback", "/x"));
    assert!(!ok);
    assert!(out.contains("oidc.redirect_url"), "{out}");
    let (ok, out) = check(&format!(
        "{}[oauth]\nsuccess_path = \"//evil.example\"\n",
        provider("client_secret = \"s\"")
    ));
    assert!(!ok);
    assert!(out.contains("oauth.success_path"), "{out}");
    // And the valid form is accepted, secret file included.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let (ok, out) = check(&format!(
        "{}[oauth]\nfrontend_url = \"https://app.example.com\"\n",
        provider(&format!("client_secret_file = \"{}\"", secret.display()))
    ));
    assert!(ok, "{out}");
}
