//! Access rules (issue 20), black-box: per-route `methods`, `allow_emails`,
//! `allow_domains`, `allow_groups`, groups set by `gatehouse user groups`
//! and forwarded as `X-Auth-Groups` (also by forward-auth), and
//! `[server] default_auth = "required"`.

mod common;

use common::{Gatehouse, Options};

const RULES: &str = "[[route]]\nprefix = \"/api/v2/\"\nauth = \"required\"\n\
    [[route]]\nprefix = \"/reports/\"\nauth = \"required\"\nmethods = [\"GET\"]\n\
    [[route]]\nprefix = \"/admin/\"\nauth = \"required\"\nallow_groups = [\"ops\"]\n\
    [[route]]\nprefix = \"/team/\"\nauth = \"required\"\nallow_domains = [\"corp.example\"]\nallow_emails = [\"guest@example.com\"]\n\
    [[route]]\nprefix = \"/public/\"\nauth = \"none\"\n";

async fn get(g: &Gatehouse, path: &str, cookie: &str) -> reqwest::Response {
    let mut req = g.client().get(g.url(path));
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn methods_emails_domains_and_groups_decide_and_groups_are_forwarded() {
    let g = Gatehouse::start_with(Options {
        routes: RULES.into(),
        extra_toml: "trusted_proxies = [\"127.0.0.1/32\"]".into(),
        ..Options::default()
    })
    .await;
    let ann = g.sign_up("ann@corp.example", "password1").await;
    let guest = g.sign_up("guest@example.com", "password1").await;
    let eve = g.sign_up("eve@example.org", "password1").await;

    // methods: GET (and HEAD) pass, others get 405 with the route's Allow.
    assert_eq!(get(&g, "/reports/q1", &ann).await.status(), 200);
    let resp = g
        .client()
        .post(g.url("/reports/q1"))
        .header("cookie", &ann)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Method not allowed");
    let seen = g.upstream.count();

    // allow_domains / allow_emails: exact domain or address.
    assert_eq!(get(&g, "/team/board", &ann).await.status(), 200);
    assert_eq!(get(&g, "/team/board", &guest).await.status(), 200);
    let refused = get(&g, "/team/board", &eve).await;
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["message"], "Access denied");
    // Not signed in at all: 401, not 403.
    assert_eq!(get(&g, "/team/board", "").await.status(), 401);

    // allow_groups: nobody is in "ops" yet.
    assert_eq!(get(&g, "/admin/", &ann).await.status(), 403);
    assert_eq!(
        g.upstream.count(),
        seen + 2,
        "refused requests reach nothing"
    );
    let (ok, out, err) = g.cli(
        &["user", "groups", "ann@corp.example", "--set", "ops,wiki"],
        "",
    );
    assert!(ok, "{out}{err}");
    // The change takes effect on the very next request (cached session).
    let resp = get(&g, "/admin/", &ann).await;
    assert_eq!(resp.status(), 200);
    let last = g.upstream.last();
    assert_eq!(last.headers["x-auth-groups"], "ops,wiki");
    assert_eq!(last.headers["x-auth-email"], "ann@corp.example");
    let (ok, out, _) = g.cli(&["user", "show", "ann@corp.example"], "");
    assert!(ok && out.contains("groups: ops, wiki"), "{out}");
    // Invalid names are refused and change nothing.
    let (ok, _, err) = g.cli(
        &["user", "groups", "ann@corp.example", "--set", "Bad Name"],
        "",
    );
    assert!(!ok && err.contains("not a group name"), "{err}");

    // A client cannot claim groups: its X-Auth-Groups never arrives.
    let resp = g
        .client()
        .get(g.url("/public/x"))
        .header("x-auth-groups", "ops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(g.upstream.last().headers.get("x-auth-groups").is_none());
    let resp = g
        .client()
        .get(g.url("/api/v2/x"))
        .header("cookie", &eve)
        .header("x-auth-groups", "ops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(g.upstream.last().headers.get("x-auth-groups").is_none());

    // Forward-auth applies the same rules and answers the groups.
    let fa = |cookie: &str, uri: &str| {
        g.client()
            .get(g.url("/api/v1/auth/verify"))
            .header("cookie", cookie.to_string())
            .header("x-forwarded-uri", uri.to_string())
            .send()
    };
    let resp = fa(&ann, "/admin/panel").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-groups"], "ops,wiki");
    assert_eq!(fa(&eve, "/admin/panel").await.unwrap().status(), 403);
    assert_eq!(fa(&eve, "/team/x").await.unwrap().status(), 403);
    assert_eq!(fa(&guest, "/team/x").await.unwrap().status(), 200);
    let resp = g
        .client()
        .get(g.url("/api/v1/auth/verify"))
        .header("cookie", &ann)
        .header("x-forwarded-uri", "/reports/q1")
        .header("x-forwarded-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Removing the group closes the door again at once.
    let (ok, _, err) = g.cli(&["user", "groups", "ann@corp.example", "--clear"], "");
    assert!(ok, "{err}");
    assert_eq!(get(&g, "/admin/", &ann).await.status(), 403);
    assert_eq!(get(&g, "/api/v2/x", &ann).await.status(), 200);
    assert!(g.upstream.last().headers.get("x-auth-groups").is_none());
}

#[tokio::test]
async fn default_auth_required_denies_uncovered_paths_without_a_session() {
    let routes = "[[route]]\nprefix = \"/public/\"\nauth = \"none\"\n";
    let open = Gatehouse::start_with(Options {
        routes: routes.into(),
        ..Options::default()
    })
    .await;
    // Without default_auth, a path no route covers is not served.
    assert_eq!(get(&open, "/wiki/page", "").await.status(), 404);
    drop(open);

    let g = Gatehouse::start_with(Options {
        routes: routes.into(),
        extra_toml: "default_auth = \"required\"\ntrusted_proxies = [\"127.0.0.1/32\"]".into(),
        ..Options::default()
    })
    .await;
    let cookie = g.sign_up("fay@example.com", "password1").await;
    let before = g.upstream.count();
    let resp = get(&g, "/wiki/page", "").await;
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Authentication required");
    assert_eq!(g.upstream.count(), before, "nothing reached the upstream");
    // A route that says otherwise still does.
    assert_eq!(get(&g, "/public/a", "").await.status(), 200);
    // With a session, the default upstream gets it, with identity headers.
    assert_eq!(get(&g, "/wiki/page", &cookie).await.status(), 200);
    let last = g.upstream.last();
    assert_eq!(last.target, "/wiki/page");
    assert_eq!(last.headers["x-auth-email"], "fay@example.com");
    // Forward-auth: an uncovered path needs a session too (no longer 403).
    let resp = g
        .client()
        .get(g.url("/api/v1/auth/verify"))
        .header("x-forwarded-uri", "/wiki/page")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
