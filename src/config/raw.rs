//! The configuration file's raw shape: serde structs that refuse unknown
//! keys. Values are checked and turned into [`super::Config`] in `check`;
//! durations are parsed here already (see `super::values`).

use std::path::PathBuf;

use serde::Deserialize;

use super::values::{ConfigCidr, ConfigDuration, ConfigDurationOrZero, RoutePrefix};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    /// `[upstreams.NAME]`: further upstreams routes may name.
    #[serde(default)]
    pub(super) upstreams: std::collections::BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) mail: RawMail,
    #[serde(default)]
    pub(super) session: RawSession,
    #[serde(default)]
    pub(super) otp: RawOtp,
    #[serde(default)]
    pub(super) password: RawPassword,
    #[serde(default)]
    pub(super) route: Option<Vec<RawRoute>>,
    #[serde(default)]
    pub(super) cors: RawCors,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) notify: RawNotify,
    #[serde(default)]
    pub(super) oidc: Vec<RawOidc>,
    #[serde(default)]
    pub(super) oauth: RawOAuth,
    /// `[signup]`: who may sign up (see `super::access`).
    #[serde(default)]
    pub(super) signup: super::access::RawSignup,
    /// `[pages]`: the built-in sign-in pages (see `super::access`).
    #[serde(default)]
    pub(super) pages: Option<super::access::RawPages>,
    /// `[mfa]`: second factors.
    pub(super) mfa: Option<super::mfa::RawMfa>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
    pub(super) socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) workers: Option<usize>,
    pub(super) max_connections: Option<usize>,
    pub(super) header_read_timeout: Option<ConfigDuration>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) drain_timeout: Option<ConfigDuration>,
    pub(super) trusted_proxies: Option<Vec<ConfigCidr>>,
    // Connection hygiene (issue 18).
    pub(super) max_connections_per_ip: Option<usize>,
    pub(super) keep_alive_timeout: Option<ConfigDuration>,
    pub(super) body_read_timeout: Option<ConfigDuration>,
    pub(super) min_body_rate: Option<u64>,
    pub(super) min_body_rate_grace: Option<ConfigDuration>,
    pub(super) underscores_in_headers: Option<String>,
    pub(super) strip_response_headers: Option<Vec<String>>,
    // Deny by default (issue 20).
    pub(super) default_auth: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) self_signed: Option<bool>,
    pub(super) hsts_max_age: Option<ConfigDurationOrZero>,
    pub(super) acme: Option<RawAcme>,
}

/// `[tls.acme]`: certificates ordered from an ACME CA (see `super::acme`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    pub(super) domains: Option<Vec<String>>,
    pub(super) email: Option<String>,
    pub(super) directory: Option<String>,
    pub(super) challenge: Option<String>,
    pub(super) http_listen: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) renew_before: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: Option<String>,
    pub(super) timeout: Option<ConfigDuration>,
    pub(super) connect_timeout: Option<ConfigDuration>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) server_name: Option<String>,
    pub(super) preserve_host: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<PathBuf>,
    pub(super) sweep_interval: Option<ConfigDuration>,
    // PostgreSQL backend (`kind = "postgres"`).
    pub(super) kind: Option<String>,
    pub(super) url: Option<String>,
    pub(super) url_file: Option<PathBuf>,
    pub(super) url_env: Option<String>,
    pub(super) pool_size: Option<usize>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) lease: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMail {
    pub(super) transport: Option<String>,
    pub(super) from: Option<String>,
    pub(super) product_name: Option<String>,
    pub(super) dir: Option<PathBuf>,
    pub(super) code_in_subject: Option<bool>,
    pub(super) deadline: Option<ConfigDuration>,
    pub(super) retry_initial: Option<ConfigDuration>,
    pub(super) retry_max: Option<ConfigDuration>,
    pub(super) smtp: Option<RawSmtp>,
    pub(super) templates: Option<RawTemplates>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplates {
    pub(super) subject: Option<PathBuf>,
    pub(super) text: Option<PathBuf>,
    pub(super) html: Option<PathBuf>,
    // Account mails (`[mail.templates.<kind>]`).
    pub(super) reset_code: Option<RawTemplateSet>,
    pub(super) email_change_code: Option<RawTemplateSet>,
    pub(super) password_changed: Option<RawTemplateSet>,
    pub(super) email_changing: Option<RawTemplateSet>,
    pub(super) email_in_use: Option<RawTemplateSet>,
    pub(super) new_sign_in: Option<RawTemplateSet>,
}

/// Template files for one kind of account mail.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplateSet {
    pub(super) subject: Option<PathBuf>,
    pub(super) text: Option<PathBuf>,
    pub(super) html: Option<PathBuf>,
}

/// `[notify]`: which security notices are mailed.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) new_device: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) security: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    pub(super) cookie_name: Option<String>,
    pub(super) idle_timeout: Option<ConfigDuration>,
    pub(super) absolute_timeout: Option<ConfigDuration>,
    pub(super) same_site: Option<String>,
    pub(super) domain: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOtp {
    pub(super) ttl: Option<ConfigDuration>,
    pub(super) max_sends_per_day: Option<u32>,
    pub(super) max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassword {
    pub(super) min_length: Option<usize>,
    pub(super) max_length: Option<usize>,
    pub(super) argon2_memory_kib: Option<u32>,
    pub(super) argon2_iterations: Option<u32>,
    pub(super) argon2_parallelism: Option<u32>,
    pub(super) max_concurrent_hashes: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    pub(super) allowed_origins: Option<Vec<String>>,
    pub(super) max_age: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) send_otp_per_ip_per_hour: Option<u32>,
    pub(super) verify_per_ip_per_hour: Option<u32>,
    pub(super) signin_per_ip_per_minute: Option<u32>,
    pub(super) signin_failures_per_email: Option<u32>,
    pub(super) signin_failures_per_ip: Option<u32>,
    pub(super) first_backoff: Option<ConfigDuration>,
    pub(super) max_backoff: Option<ConfigDuration>,
    pub(super) max_queued_hashes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) prefix: RoutePrefix,
    pub(super) auth: super::RouteAuth,
    #[serde(default)]
    pub(super) upstream: Option<String>,
    // Access rules (issue 20, see `super::access`).
    #[serde(default)]
    pub(super) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(super) allow_emails: Option<Vec<String>>,
    #[serde(default)]
    pub(super) allow_domains: Option<Vec<String>>,
    #[serde(default)]
    pub(super) allow_groups: Option<Vec<String>>,
    #[serde(default)]
    pub(super) on_unauthenticated: Option<String>,
}

/// One `[[oidc]]` identity provider (see `config::oidc`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    pub(super) name: Option<String>,
    pub(super) issuer: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<String>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) client_secret_env: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) redirect_url: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) allowed_domains: Option<Vec<String>>,
    pub(super) create_users: Option<bool>,
}

/// `[oauth]`: where the OIDC callback sends the browser.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth {
    pub(super) frontend_url: Option<String>,
    pub(super) success_path: Option<String>,
    pub(super) new_user_path: Option<String>,
    pub(super) error_path: Option<String>,
    pub(super) state_ttl: Option<ConfigDuration>,
}
