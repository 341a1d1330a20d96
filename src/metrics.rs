//! Prometheus metrics: one process-wide registry, counters the rest of the
//! code bumps, and the text rendering served on the admin listener.
//!
//! The registry is a process-wide static because the places that count
//! (auth flows, error mapping, throttles, the mail queue) should not need a
//! handle threaded through them. Label values come from small fixed sets
//! (`&'static str` route names, status codes), so a request costs a few
//! atomic increments and one read-locked map lookup, never an allocation
//! storm or unbounded label growth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets (seconds): 1 ms to 30 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Which part of Gatehouse answered a request. Every own endpoint is an
/// `Endpoint`, so its latency is recorded without a list to keep in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteLabel {
    /// Refused before routing (bad path, CSRF, no route…).
    Refused,
    /// Forwarded to the upstream.
    Proxy,
    /// One of Gatehouse's own endpoints, by its metric name.
    Endpoint(&'static str),
}

impl RouteLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Refused => "refused",
            RouteLabel::Proxy => "proxy",
            RouteLabel::Endpoint(name) => name,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// OIDC sign-ins: provider (a configured name, or "unknown") and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OidcLabel {
    pub provider: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOutcome {
    /// `default` or a `[upstreams.NAME]` name (a fixed set from the config).
    pub upstream: String,
    /// `ok`, `unavailable`, `tls_error` or `timeout`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric Gatehouse exports.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route (`proxy`, an endpoint name, or `refused`)
    /// and status.
    pub requests: Family<RouteStatus, Counter>,
    /// The `proxy`/200 series of `requests`, held directly: it is counted on
    /// nearly every request, and the family lookup (lock and hash) is not free.
    proxied_ok: Counter,
    /// Time to response headers for proxied requests.
    pub proxy_latency: Histogram,
    /// Time to answer Gatehouse's own auth endpoints, by endpoint.
    pub auth_latency: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    /// Stored sessions, refreshed on every scrape.
    pub active_sessions: Gauge,
    /// Accounts created through sign-up.
    pub signups: Counter,
    /// Password sign-ins by result (`ok`, `failed`).
    pub signins: Family<ResultLabel, Counter>,
    /// Sign-up codes (or account-exists notices) handed to the mailer.
    pub otp_sends: Counter,
    /// Requests refused with 429 by any throttle.
    pub throttled: Counter,
    /// Mails waiting in the outbox; set from the outbox's counters on
    /// every scrape ([`Metrics::set_mail`]).
    pub mail_queue_depth: Gauge,
    /// Mail outbox events by outcome (`queued`, `sent`, `retried`,
    /// `failed`, `dropped`), mirrored from the outbox's own counters.
    mail_messages: Family<OutcomeLabel, Counter>,
    /// Serialises [`Metrics::set_mail`], which raises counters by the
    /// difference to the outbox's totals.
    mail_sync: Mutex<()>,
    /// Upstream failures by kind (`unavailable`, `timeout`).
    pub upstream_errors: Family<KindLabel, Counter>,
    /// Admin socket commands served.
    pub admin_commands: Counter,
    /// Requests sent upstream (WebSocket handshakes included), by upstream
    /// and outcome.
    pub upstream_requests: Family<UpstreamOutcome, Counter>,
    /// Proxied WebSocket connections open now.
    pub websocket_connections: Gauge,
    /// Live connections (WebSockets, streams) closed because their session
    /// ended.
    pub live_connections_ended: Counter,
    /// Unix time at which the served certificate expires (ACME); 0 before
    /// the first one.
    pub tls_certificate_expiry: Gauge,
    /// ACME certificates issued to this process.
    pub acme_certificates: Counter,
    /// Failed ACME orders and renewals.
    pub acme_failures: Counter,
    /// Account self-service by event (`reset_requested`, `reset_completed`,
    /// `password_changed`, `email_changed`, `account_deleted`).
    pub account_events: Family<EventLabel, Counter>,
    /// OIDC callbacks by provider and outcome (`ok`, `created`, or the
    /// Flowtask error code).
    pub oidc_signins: Family<OidcLabel, Counter>,
    scrapes: AtomicU64,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let proxied_ok = requests
            .get_or_create(&RouteStatus {
                route: "proxy",
                status: 200,
            })
            .clone();
        let proxy_latency = latency_histogram();
        registry.register(
            "proxy_request_duration_seconds",
            "Time from request to upstream response headers, proxied requests",
            proxy_latency.clone(),
        );
        let auth_latency =
            Family::<EndpointLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "auth_request_duration_seconds",
            "Time to answer Gatehouse's own auth endpoints",
            auth_latency.clone(),
        );
        let active_sessions = Gauge::default();
        registry.register(
            "active_sessions",
            "Sessions held in the store (expired ones until the next sweep)",
            active_sessions.clone(),
        );
        let signups = Counter::default();
        registry.register("signups", "Accounts created by sign-up", signups.clone());
        let signins = Family::<ResultLabel, Counter>::default();
        registry.register("signins", "Password sign-ins by result", signins.clone());
        let otp_sends = Counter::default();
        registry.register(
            "otp_sends",
            "Sign-up mails handed to the mail transport",
            otp_sends.clone(),
        );
        let throttled = Counter::default();
        registry.register(
            "throttled_requests",
            "Requests refused with 429",
            throttled.clone(),
        );
        let mail_queue_depth = Gauge::default();
        registry.register(
            "mail_queue_depth",
            "Mails waiting to be sent",
            mail_queue_depth.clone(),
        );
        let mail_messages = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "mail_messages",
            "Mail outbox events by outcome since start",
            mail_messages.clone(),
        );
        let upstream_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by kind",
            upstream_errors.clone(),
        );
        let admin_commands = Counter::default();
        registry.register(
            "admin_commands",
            "Commands served on the admin socket",
            admin_commands.clone(),
        );
        let upstream_requests = Family::<UpstreamOutcome, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests sent upstream, by upstream and outcome",
            upstream_requests.clone(),
        );
        let websocket_connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "Proxied WebSocket connections open now",
            websocket_connections.clone(),
        );
        let live_connections_ended = Counter::default();
        registry.register(
            "live_connections_ended",
            "WebSockets and streaming responses closed because their session ended",
            live_connections_ended.clone(),
        );
        let tls_certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_seconds",
            "Unix time at which the served TLS certificate expires (ACME; 0 until one is served)",
            tls_certificate_expiry.clone(),
        );
        let acme_certificates = Counter::default();
        registry.register(
            "acme_certificates_issued",
            "Certificates this process obtained over ACME",
            acme_certificates.clone(),
        );
        let acme_failures = Counter::default();
        registry.register(
            "acme_order_failures",
            "ACME orders or renewals that failed (the current certificate, if any, stays in service)",
            acme_failures.clone(),
        );
        let account_events = Family::<EventLabel, Counter>::default();
        registry.register(
            "account_events",
            "Account self-service: resets requested and completed, password and email changes, deletions",
            account_events.clone(),
        );
        let oidc_signins = Family::<OidcLabel, Counter>::default();
        registry.register(
            "oidc_signins",
            "OIDC sign-ins by provider and outcome",
            oidc_signins.clone(),
        );
        Metrics {
            account_events,
            oidc_signins,
            registry,
            upstream_requests,
            websocket_connections,
            live_connections_ended,
            tls_certificate_expiry,
            acme_certificates,
            acme_failures,
            requests,
            proxy_latency,
            auth_latency,
            active_sessions,
            signups,
            signins,
            otp_sends,
            throttled,
            mail_queue_depth,
            mail_messages,
            mail_sync: Mutex::new(()),
            upstream_errors,
            admin_commands,
            proxied_ok,
            scrapes: AtomicU64::new(0),
        }
    }

    /// Counts a sign-in attempt that reached the password check.
    pub fn sign_in(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.signins.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts an account self-service event (see `account_events`).
    pub fn account(&self, event: &'static str) {
        self.account_events
            .get_or_create(&EventLabel { event })
            .inc();
    }

    /// Counts one OIDC callback by provider and outcome.
    pub fn oidc_sign_in(&self, provider: String, outcome: &'static str) {
        self.oidc_signins
            .get_or_create(&OidcLabel { provider, outcome })
            .inc();
    }

    /// Counts one answered request.
    pub fn request(&self, route: RouteLabel, status: u16) {
        if status == 200 && route == RouteLabel::Proxy {
            self.proxied_ok.inc();
            return;
        }
        self.requests
            .get_or_create(&RouteStatus {
                route: route.as_str(),
                status,
            })
            .inc();
    }

    /// The counter of one upstream's requests with one outcome.
    pub fn upstream_outcome(&self, upstream: &str, outcome: &'static str) -> Counter {
        self.upstream_requests
            .get_or_create(&UpstreamOutcome {
                upstream: upstream.to_string(),
                outcome,
            })
            .clone()
    }

    /// Mirrors the mail outbox's state: its current depth and its event
    /// totals since start (`(outcome, total)` pairs; totals only grow).
    pub fn set_mail(&self, depth: u64, totals: &[(&'static str, u64)]) {
        self.mail_queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        let _serial = crate::sync::lock(&self.mail_sync);
        for &(outcome, total) in totals {
            let counter = self.mail_messages.get_or_create(&OutcomeLabel { outcome });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        self.scrapes.fetch_add(1, Ordering::Relaxed);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_total_suffix_and_labels() {
        let m = Metrics::new();
        m.request(RouteLabel::Proxy, 200);
        m.request(RouteLabel::Proxy, 200);
        m.sign_in(false);
        m.auth_latency
            .get_or_create(&EndpointLabel { endpoint: "signin" })
            .observe(0.02);
        let text = m.render();
        assert!(
            text.contains("gatehouse_http_requests_total{route=\"proxy\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("gatehouse_signins_total{result=\"failed\"} 1"));
        assert!(
            text.contains(
                "gatehouse_auth_request_duration_seconds_bucket{le=\"0.025\",endpoint=\"signin\"} 1"
            ) || text.contains(
                "gatehouse_auth_request_duration_seconds_bucket{endpoint=\"signin\",le=\"0.025\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn mail_state_is_mirrored_and_counters_never_go_back() {
        let m = Metrics::new();
        m.set_mail(3, &[("queued", 4), ("sent", 1)]);
        m.set_mail(2, &[("queued", 5), ("sent", 2)]);
        let text = m.render();
        assert!(text.contains("gatehouse_mail_queue_depth 2"), "{text}");
        assert!(
            text.contains("gatehouse_mail_messages_total{outcome=\"queued\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("gatehouse_mail_messages_total{outcome=\"sent\"} 2"),
            "{text}"
        );
    }
}
