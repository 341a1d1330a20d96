//! Access log: one line per request with method, path (no query), status,
//! duration, bytes, user id or `-`, and request id; never a cookie, token or
//! code. Text and JSON formats.

mod common;

use std::time::Duration;

use common::{Gatehouse, Options};

#[tokio::test]
async fn one_text_line_per_request_and_no_secrets() {
    let g = Gatehouse::start().await;
    let code = g.request_code("ola@example.com").await;
    let resp = g
        .post_json(
            "/api/v1/user/signup/verify",
            serde_json::json!({ "email": "ola@example.com", "code": code, "password": "password1" }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let cookie = common::session_cookie(&resp, g.cookie_name()).unwrap();
    let token = cookie.split_once('=').unwrap().1.to_string();

    let resp = g
        .get_with_cookie("/api/v2/tasks?api_key=SECRET-QUERY", &cookie)
        .await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body_len = resp.bytes().await.unwrap().len();

    let line = g
        .wait_for_log_line(&format!("request_id={request_id}"), Duration::from_secs(5))
        .await;
    assert!(line.contains("gatehouse::access"), "{line}");
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("path=/api/v2/tasks "), "{line}");
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("user=1"), "{line}");
    assert!(line.contains(&format!("bytes={body_len}")), "{line}");
    assert!(line.contains("duration_ms="), "{line}");

    // Anonymous requests and Gatehouse's own answers are logged too.
    let resp = g.client().get(g.url("/api/v2/tasks")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let line = g
        .wait_for_log_line(&format!("request_id={id}"), Duration::from_secs(5))
        .await;
    assert!(
        line.contains("status=401") && line.contains("user=-"),
        "{line}"
    );

    let access: Vec<String> = g
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("gatehouse::access"))
        .collect();
    // send-otp, verify, proxied, refused.
    assert_eq!(access.len(), 4, "{access:#?}");
    let all = g.logs();
    assert!(!all.contains(&token), "session token in the log");
    assert!(!all.contains(&code), "sign-up code in the log");
    assert!(!all.contains("SECRET-QUERY"), "query string in the log");
    assert!(!all.contains("password1"));
}

#[tokio::test]
async fn json_format_writes_one_object_per_line() {
    let g = Gatehouse::start_with(Options {
        extra_toml: "[log]\nformat = \"json\"".into(),
        ..Options::default()
    })
    .await;
    let resp = g
        .client()
        .get(g.url("/dashboard?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let line = g.wait_for_log_line(&id, Duration::from_secs(5)).await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["target"], "gatehouse::access");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/dashboard");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["user"], "-");
    assert_eq!(entry["request_id"], id.as_str());
    for line in g.log_lines() {
        serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}
