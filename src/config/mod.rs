//! Configuration: the TOML file's raw shape (serde, unknown keys refused) and
//! the checked [`Config`] the rest of the program uses.
//!
//! Reading the file is separate from parsing it so tests can parse strings
//! inline. Every failure names the key the operator has to change.

use std::net::SocketAddr;

use ipnet::IpNet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration could not be used. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("config {origin}, line {line}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
    /// A key has a value of the right type that is still unusable.
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    /// Like `Invalid`, for a key whose name is built from the file (a named
    /// upstream's, such as `upstreams.api.url`).
    #[error("config key `{key}`: {message}")]
    InvalidKey { key: String, message: String },
    /// A key's value is unusable, with where the key is in the file: what
    /// [`Config::parse`] and start-up report instead of `Invalid`.
    #[error("config {origin}, {place}: key `{key}`: {message}")]
    Located {
        origin: String,
        place: locate::Place,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The error of one `[[table]]` entry (`index`, 0-based) names the
    /// key the way serde does: `route.methods` becomes `route[2].methods`.
    fn in_entry(self, index: usize) -> ConfigError {
        let key = match &self {
            ConfigError::Invalid { key, .. } => key.to_string(),
            ConfigError::InvalidKey { key, .. } => key.clone(),
            _ => return self,
        };
        let Some((table, rest)) = key.split_once('.') else {
            return self;
        };
        match self {
            ConfigError::Invalid { message, .. } | ConfigError::InvalidKey { message, .. } => {
                ConfigError::InvalidKey {
                    key: format!("{table}[{index}].{rest}"),
                    message,
                }
            }
            other => other,
        }
    }

    /// Names the file and line of an `Invalid` key; other errors already
    /// say where they are.
    pub fn located(self, text: &str, origin: &str) -> ConfigError {
        match self {
            ConfigError::Invalid { key, message } => at_key(text, origin, key, message),
            ConfigError::InvalidKey { key, message } => at_key(text, origin, &key, message),
            other @ (ConfigError::Read { .. }
            | ConfigError::Syntax { .. }
            | ConfigError::Located { .. }) => other,
        }
    }
}

/// An error about `key` of the configuration `text` read from `origin`,
/// naming the file, the line and the key.
pub fn at_key(text: &str, origin: &str, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Located {
        origin: origin.to_string(),
        place: locate::place_of(text, key),
        key: key.to_string(),
        message: message.into(),
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

mod access;
mod acme;
mod check;
pub mod locate;
mod mail;
mod mfa;
pub use mfa::MfaConfig;
mod oidc;
mod raw;
#[cfg(test)]
mod tests;
mod values;

pub use access::{
    AccessConfig, DefaultAuth, OnUnauthenticated, RouteAccess, SignupConfig, SignupMode,
    is_group_name, logo_type,
};
pub use oidc::{OAuthConfig, OidcProviderConfig, is_local_path};
pub use values::{parse_duration, show_duration};

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: Option<TlsConfig>,
    pub upstream: UpstreamConfig,
    /// `[upstreams.NAME]`, by name.
    pub upstreams: std::collections::BTreeMap<String, UpstreamConfig>,
    pub store: StoreConfig,
    pub mail: MailConfig,
    pub session: SessionConfig,
    pub otp: OtpConfig,
    pub password: PasswordConfig,
    pub routes: Vec<Route>,
    pub cors: CorsConfig,
    pub limits: LimitsConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub notify: NotifyConfig,
    /// `[[oidc]]`: sign-in through OpenID Connect providers.
    pub oidc: Vec<OidcProviderConfig>,
    /// `[oauth]`: where the OIDC callback redirects.
    pub oauth: OAuthConfig,
    /// Deny by default, sign-up policy, built-in pages (issue 20).
    pub access: AccessConfig,
    /// `[mfa]`: TOTP and passkeys.
    pub mfa: MfaConfig,
}

/// Cross-origin access to the auth endpoints and proxied routes.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// Lower-cased `scheme://host[:port]` origins allowed to make
    /// credentialed cross-origin requests.
    pub allowed_origins: Vec<String>,
    pub max_age: Duration,
}

/// Abuse limits; see `[limits]` in config.example.toml.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub send_otp_per_ip_per_hour: u32,
    pub verify_per_ip_per_hour: u32,
    pub signin_per_ip_per_minute: u32,
    /// Failed sign-ins for one email before back-off starts.
    pub signin_failures_per_email: u32,
    /// Failed sign-ins from one address before back-off starts.
    pub signin_failures_per_ip: u32,
    /// Longest back-off after repeated failures.
    /// Back-off after the threshold is reached; it doubles with each failure.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Password checks allowed to wait for a hashing slot; beyond that, 503.
    pub max_queued_hashes: usize,
}

/// The operator's side door: health/metrics over HTTP and the CLI socket.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Plain-HTTP listener for `/healthz`, `/readyz`, `/metrics`; `None` = off.
    pub listen: Option<SocketAddr>,
    /// Unix socket (mode 0600) the CLI talks to while the server runs.
    pub socket: PathBuf,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Default filter (`RUST_LOG` overrides it), e.g. "info" or "gatehouse=debug".
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Runtime worker threads; 0 means one per core.
    pub workers: usize,
    pub max_connections: usize,
    /// Time a client has to deliver a request's headers (and the TLS handshake).
    pub header_read_timeout: Duration,
    /// Largest request body accepted by Gatehouse's own endpoints.
    pub max_body_bytes: usize,
    /// How long in-flight requests may run after SIGTERM before being cut.
    pub drain_timeout: Duration,
    /// Peers whose `X-Forwarded-Uri` / `X-Original-URI` are believed
    /// (forward-auth); everyone else's are ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Connection hygiene: per-address caps, idle and body deadlines,
    /// header-name rules (see `[server]` in config.example.toml).
    pub hygiene: HygieneConfig,
}

/// Limits that keep any one client from holding connection slots or
/// smuggling header spellings (issue 18).
#[derive(Debug, Clone)]
pub struct HygieneConfig {
    /// Concurrent connections from one address (IPv6: one /64), counted on
    /// the TCP peer address — never on `X-Forwarded-For`.
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight (HTTP/1.1 between requests,
    /// HTTP/2 with no open stream) is closed after this long.
    pub keep_alive_timeout: Duration,
    /// Whole-body deadline for Gatehouse's own endpoints.
    pub body_read_timeout: Duration,
    /// Bytes per second a request body must average once the grace period
    /// is over (time spent waiting on the upstream does not count); 0 = off.
    pub min_body_rate: u64,
    pub min_body_rate_grace: Duration,
    /// Request header names containing `_`: dropped (default) or passed.
    pub underscores_in_headers: Underscores,
    /// Lower-cased names removed from every proxied response.
    pub strip_response_headers: Vec<http::HeaderName>,
}

/// What happens to request headers whose names contain an underscore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underscores {
    /// Removed before the request is handled (nginx's default).
    Drop,
    /// Passed on, except spellings of protected names (always removed).
    Pass,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub source: CertSource,
    /// `Strict-Transport-Security` max-age; zero disables the header.
    pub hsts_max_age: Duration,
}

#[derive(Debug, Clone)]
pub enum CertSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    SelfSigned,
    /// Ordered and renewed over ACME (`[tls.acme]`); see `crate::acme`.
    Acme(AcmeConfig),
}

/// `[tls.acme]`: one certificate for `domains`, ordered from `directory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// Lower-case DNS names, no wildcards, at least one; the first is the
    /// name redirects fall back to.
    pub domains: Vec<String>,
    /// Account contact, without the `mailto:`.
    pub email: Option<String>,
    /// The CA's directory URL (https).
    pub directory: String,
    pub challenge: AcmeChallenge,
    /// Plain-HTTP listener: HTTP-01 answers and 308 redirects to HTTPS.
    /// Always set for `http-01`; optional for `tls-alpn-01`.
    pub http_listen: Option<SocketAddr>,
    /// PEM CA certificate(s) to trust for the directory instead of the
    /// system roots.
    pub ca_file: Option<PathBuf>,
    /// Renew once the certificate expires within this long.
    pub renew_before: Duration,
}

/// How the CA checks that we control the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// RFC 8737: answered on the TLS listener itself (`acme-tls/1` ALPN).
    TlsAlpn01,
    /// RFC 8555 §8.3: answered on `http_listen` under `/.well-known/acme-challenge/`.
    Http01,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `scheme://host:port`, without a path.
    pub url: http::Uri,
    /// How long to wait for the upstream's response headers before a 504.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Set for `https://` upstreams.
    pub tls: Option<UpstreamTls>,
    /// Forward the client's `Host` instead of the upstream's authority.
    pub preserve_host: bool,
}

/// How an `https://` upstream's certificate is verified (always).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The name verified and sent as SNI: `server_name`, or the URL's host.
    pub server_name: rustls_pki_types::ServerName<'static>,
    /// CA certificates read from `ca_file`; `None` means the system roots.
    pub ca_certs: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub sweep_interval: Duration,
    /// Which database holds the state (`kind`).
    pub backend: StoreBackend,
}

/// `[store] kind`.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// The embedded redb file at `path` (the default).
    Redb,
    /// A PostgreSQL database shared by several instances.
    Postgres(PostgresConfig),
}

/// `[store] kind = "postgres"`.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Connection URL (may hold a password: hidden from `Debug`).
    pub url: DatabaseUrl,
    /// Connections kept at most.
    pub pool_size: usize,
    /// CA to verify the server with (TLS, verify-full) when set.
    pub ca_file: Option<PathBuf>,
    /// How long a worker holds an outbox message it claimed (`[store] lease`);
    /// a dead instance's mail is sent by another one after this.
    pub lease: Duration,
}

/// A database URL; `Debug` never shows it, since it may carry a password.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: String) -> DatabaseUrl {
        DatabaseUrl(url)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

impl StoreConfig {
    /// The directory that holds the store; generated files (the self-signed
    /// certificate) live next to it.
    pub fn data_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: MailTransport,
    pub from: String,
    pub product_name: String,
    /// Whether the sign-up code also appears in the subject line.
    pub code_in_subject: bool,
    /// How long a queued message may wait for delivery before it is dropped;
    /// never longer than `otp.ttl` (an expired code is not worth sending).
    pub deadline: Duration,
    /// First retry delay after a temporary failure; doubles per attempt.
    pub retry_initial: Duration,
    /// Upper bound of the retry delay.
    pub retry_max: Duration,
    pub templates: TemplatePaths,
}

/// Template files that replace the built-in subject / text / HTML.
#[derive(Debug, Clone, Default)]
pub struct TemplatePaths {
    pub subject: Option<PathBuf>,
    pub text: Option<PathBuf>,
    pub html: Option<PathBuf>,
    /// Account mails, one `[mail.templates.<kind>]` table each.
    pub reset_code: TemplateSetPaths,
    pub email_change_code: TemplateSetPaths,
    pub password_changed: TemplateSetPaths,
    pub email_changing: TemplateSetPaths,
    pub email_in_use: TemplateSetPaths,
    pub new_sign_in: TemplateSetPaths,
}

/// Template files replacing one account mail's subject / text / HTML.
#[derive(Debug, Clone, Default)]
pub struct TemplateSetPaths {
    pub subject: Option<PathBuf>,
    pub text: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

/// `[notify]`: which security notices are mailed.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// "New sign-in to your account" for a browser without the
    /// known-device mark (default on).
    pub new_device: bool,
}

#[derive(Debug, Clone)]
pub enum MailTransport {
    /// Development only: the message, code included, goes to the log.
    Log,
    /// Each message becomes an `.eml` file in this directory.
    File(PathBuf),
    Smtp(SmtpConfig),
}

#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<PasswordSource>,
    /// PEM file of the CA(s) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// Where the SMTP password comes from; read at start-up, never logged.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// Written in the config file itself.
    Inline(String),
    /// The named environment variable.
    Env(String),
    /// A file (relative paths are looked up in `$CREDENTIALS_DIRECTORY`).
    File(PathBuf),
}

impl std::fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            PasswordSource::Env(name) => f.debug_tuple("Env").field(name).finish(),
            PasswordSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    None,
    StartTls,
    Tls,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub same_site: cookie::SameSite,
    pub domain: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OtpConfig {
    pub ttl: Duration,
    pub max_sends_per_day: u32,
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct PasswordConfig {
    pub min_length: usize,
    pub max_length: usize,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub max_concurrent_hashes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    /// No valid session: 401 and nothing reaches the upstream.
    Required,
    /// Forwarded either way, with identity headers when a session is valid.
    Optional,
    /// Forwarded without looking at the session at all.
    None,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Lower-cased, starts with `/`.
    pub prefix: String,
    pub auth: RouteAuth,
    /// A `[upstreams.NAME]` name; `None` means `[upstream]`.
    pub upstream: Option<String>,
    /// Methods, allowed users, what unauthenticated browsers get.
    pub access: RouteAccess,
}

impl Route {
    /// A route to the default upstream (`prefix` as written in the
    /// configuration, lower-case); for tables in tests and tools.
    pub fn new(prefix: &str, auth: RouteAuth) -> Route {
        Route {
            prefix: prefix.to_ascii_lowercase(),
            auth,
            upstream: None,
            access: RouteAccess::default(),
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw = toml::de::Deserializer::parse(text)
            .map_err(|e| syntax_error(text, origin, &e))
            .and_then(|document| {
                serde_path_to_error::deserialize::<_, raw::RawConfig>(document)
                    .map_err(|e| value_error(text, origin, e))
            })?;
        Config::try_from(raw).map_err(|e| e.located(text, origin))
    }
}

/// Malformed TOML: the parser's message, its line, and the text it points
/// at when that is a short piece of one line (`duplicate key `server``).
fn syntax_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let mut message = e.message().trim().replace('\n', " ");
    if let Some(quoted) = text
        .get(span.clone())
        .filter(|q| !q.trim().is_empty() && q.len() <= 64 && !q.contains('\n'))
        .filter(|q| !message.contains(*q))
    {
        message = format!("{message} `{}`", quoted.trim());
    }
    ConfigError::Syntax {
        origin: origin.to_string(),
        line: locate::line_at(text, span.start),
        message,
    }
}

/// Well-formed TOML that does not fit the configuration (an unknown key, a
/// value of the wrong type, a bad duration): serde's path to the value and
/// the TOML parser's position of it.
fn value_error(
    text: &str,
    origin: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let key = e.path().to_string();
    let inner = e.into_inner();
    let line = locate::line_at(text, inner.span().map_or(0, |s| s.start));
    let message = inner.message().trim().replace('\n', " ");
    if key == "." {
        return ConfigError::Syntax {
            origin: origin.to_string(),
            line,
            message,
        };
    }
    ConfigError::Located {
        origin: origin.to_string(),
        place: locate::Place::Line(line),
        key,
        message,
    }
}
