//! The admin listener: `/healthz`, `/readyz`, and `/metrics` in Prometheus
//! text format counting what the test did. The public listener does not
//! answer these paths itself.

mod common;

use std::collections::HashMap;

use common::{Gatehouse, Options};

/// Parses Prometheus text format 0.0.4 strictly enough to catch a broken
/// exposition: every line is a `# HELP`/`# TYPE` comment or a sample
/// `name{label="value",…} number`. Returns samples keyed by `name{labels}`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("metric name in comment");
            assert!(valid_name(name), "bad name in {line:?}");
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().expect("type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line:?}"
                    );
                    typed.insert(name.to_string());
                }
                other => panic!("unknown comment {other} in {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("closing brace");
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(valid_name(k), "bad label name in {line:?}");
                    assert!(v.starts_with('"') && v.ends_with('"'), "{line:?}");
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "bad sample name in {line:?}");
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(
            typed.contains(family) || typed.contains(name),
            "untyped sample {line:?}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

async fn scrape(g: &Gatehouse) -> HashMap<String, f64> {
    let resp = reqwest::get(g.admin_url("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    parse_prometheus(&resp.text().await.unwrap())
}

fn sample(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have {:#?}", m.keys()))
}

#[tokio::test]
async fn metrics_parse_and_count_what_the_test_did() {
    let g = Gatehouse::start().await;
    let cookie = g.sign_up("mia@example.com", "password1").await;
    for _ in 0..2 {
        let resp = g
            .post_json(
                "/api/v1/user/signin",
                serde_json::json!({ "email": "mia@example.com", "password": "wrong-one" }),
            )
            .await;
        assert_eq!(resp.status(), 400);
    }
    g.sign_in("mia@example.com", "password1").await;
    for _ in 0..3 {
        let resp = g.get_with_cookie("/api/v2/tasks", &cookie).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = g.client().get(g.url("/api/v2/tasks")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    let m = scrape(&g).await;

    // The public listener does not serve the admin paths: they are ordinary
    // proxied paths there (and, being unrouted for the admin listener's
    // counters, are not part of the numbers checked below).
    let resp = g.client().get(g.url("/healthz")).send().await.unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["upstream"], true);
    assert_eq!(g.upstream.last().target, "/healthz");
    let resp = g.client().get(g.url("/metrics")).send().await.unwrap();
    assert!(!resp.text().await.unwrap().contains("gatehouse_"));

    assert_eq!(sample(&m, "gatehouse_signups_total"), 1.0);
    assert_eq!(sample(&m, "gatehouse_otp_sends_total"), 1.0);
    assert_eq!(
        sample(&m, "gatehouse_signins_total{result=\"failed\"}"),
        2.0
    );
    assert_eq!(sample(&m, "gatehouse_signins_total{result=\"ok\"}"), 1.0);
    assert_eq!(
        sample(
            &m,
            "gatehouse_http_requests_total{route=\"proxy\",status=\"200\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &m,
            "gatehouse_http_requests_total{route=\"proxy\",status=\"401\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "gatehouse_http_requests_total{route=\"signin\",status=\"400\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(&m, "gatehouse_proxy_request_duration_seconds_count"),
        4.0
    );
    assert_eq!(
        sample(
            &m,
            "gatehouse_auth_request_duration_seconds_count{endpoint=\"signin\"}"
        ),
        3.0
    );
    // The sign-up session and the sign-in session.
    assert_eq!(sample(&m, "gatehouse_active_sessions"), 2.0);
    assert_eq!(sample(&m, "gatehouse_throttled_requests_total"), 0.0);
    // Two mails were queued: the sign-up code and the new-sign-in notice
    // (the test client has no known-device mark). Both go out and nothing
    // waits once the worker is done.
    assert_eq!(
        sample(&m, "gatehouse_mail_messages_total{outcome=\"queued\"}"),
        2.0
    );
    let mut last = (f64::NAN, f64::NAN);
    for _ in 0..200 {
        let m = scrape(&g).await;
        last = (
            sample(&m, "gatehouse_mail_messages_total{outcome=\"sent\"}"),
            sample(&m, "gatehouse_mail_queue_depth"),
        );
        if last == (2.0, 0.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last, (2.0, 0.0), "(sent, depth)");
}

/// The mail queue's depth and retries, and every auth endpoint's latency
/// (logout-all included), reach the exposition.
#[tokio::test]
async fn mail_queue_and_logout_all_metrics_move() {
    let mut g = Gatehouse::start_with(Options {
        mail: "retry_initial = \"100ms\"\nretry_max = \"500ms\"\n".into(),
        ..Options::default()
    })
    .await;
    let cookie = g.sign_up("lea@example.com", "password1").await;
    let resp = g
        .post_json_with_cookie("/api/v1/user/logout-all", serde_json::json!({}), &cookie)
        .await;
    assert_eq!(resp.status(), 200);

    // SMTP down: a new code waits in the outbox and its attempts are retried.
    g.smtp.stop().await;
    g.send_otp("max@example.com").await;
    g.wait_for_log(&["outbox_id=2", "outcome=\"retry\""]).await;
    let m = scrape(&g).await;
    assert_eq!(sample(&m, "gatehouse_mail_queue_depth"), 1.0);
    assert!(sample(&m, "gatehouse_mail_messages_total{outcome=\"retried\"}") >= 1.0);
    assert_eq!(
        sample(
            &m,
            "gatehouse_auth_request_duration_seconds_count{endpoint=\"logout-all\"}"
        ),
        1.0
    );

    // SMTP back: the mail goes out and the queue drains.
    g.smtp.resume().await;
    g.smtp.wait_for_nth("max@example.com", 1).await;
    let mut depth = f64::NAN;
    for _ in 0..100 {
        let m = scrape(&g).await;
        depth = sample(&m, "gatehouse_mail_queue_depth");
        if depth == 0.0 {
            assert_eq!(
                sample(&m, "gatehouse_mail_messages_total{outcome=\"sent\"}"),
                2.0
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(depth, 0.0, "the outbox never drained");
}

#[tokio::test]
async fn health_readiness_throttles_and_upstream_errors() {
    let g = Gatehouse::start_with(Options {
        otp: "max_sends_per_day = 1".into(),
        ..Options::default()
    })
    .await;
    let health = reqwest::get(g.admin_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(g.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "ok");

    // A throttled send-otp is counted.
    g.request_code("ned@example.com").await;
    let resp = g
        .post_json(
            "/api/v1/user/signup/send-otp",
            serde_json::json!({ "email": "ned@example.com" }),
        )
        .await;
    assert_eq!(resp.status(), 429);

    // Upstream down (no request was proxied yet, so no pooled connection
    // survives): readiness fails, proxied requests fail and are counted.
    g.upstream.stop();
    let ready = reqwest::get(g.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["upstream"], "failing");
    let resp = g.client().get(g.url("/dashboard")).send().await.unwrap();
    assert_eq!(resp.status(), 502);

    let m = scrape(&g).await;
    assert_eq!(sample(&m, "gatehouse_throttled_requests_total"), 1.0);
    assert_eq!(
        sample(&m, "gatehouse_upstream_errors_total{kind=\"unavailable\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "gatehouse_http_requests_total{route=\"send-otp\",status=\"429\"}"
        ),
        1.0
    );
}
