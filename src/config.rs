//! Configuration: the TOML file's raw shape (serde, unknown keys refused) and
//! the checked [`Config`] the rest of the program uses.
//!
//! Reading the file is separate from parsing it so tests can parse strings
//! inline. Every failure names the key the operator has to change.

use std::net::SocketAddr;

use crate::net::Cidr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------
// Raw shape of the file.

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    tls: Option<RawTls>,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    mail: RawMail,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    otp: RawOtp,
    #[serde(default)]
    password: RawPassword,
    #[serde(default)]
    route: Option<Vec<RawRoute>>,
    #[serde(default)]
    cors: RawCors,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    workers: Option<usize>,
    max_connections: Option<usize>,
    header_read_timeout: Option<String>,
    max_body_bytes: Option<usize>,
    drain_timeout: Option<String>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: Option<bool>,
    hsts_max_age: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<String>,
    timeout: Option<String>,
    connect_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
    sweep_interval: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMail {
    transport: Option<String>,
    from: Option<String>,
    product_name: Option<String>,
    dir: Option<PathBuf>,
    code_in_subject: Option<bool>,
    deadline: Option<String>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    smtp: Option<RawSmtp>,
    templates: Option<RawTemplates>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    subject: Option<PathBuf>,
    text: Option<PathBuf>,
    html: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: Option<String>,
    port: Option<u16>,
    security: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSession {
    cookie_name: Option<String>,
    idle_timeout: Option<String>,
    absolute_timeout: Option<String>,
    same_site: Option<String>,
    domain: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOtp {
    ttl: Option<String>,
    max_sends_per_day: Option<u32>,
    max_attempts: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPassword {
    min_length: Option<usize>,
    max_length: Option<usize>,
    argon2_memory_kib: Option<u32>,
    argon2_iterations: Option<u32>,
    argon2_parallelism: Option<u32>,
    max_concurrent_hashes: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allowed_origins: Option<Vec<String>>,
    max_age: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    send_otp_per_ip_per_hour: Option<u32>,
    verify_per_ip_per_hour: Option<u32>,
    signin_per_ip_per_minute: Option<u32>,
    signin_failures_per_email: Option<u32>,
    signin_failures_per_ip: Option<u32>,
    max_backoff: Option<String>,
    max_queued_hashes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    auth: String,
}

// ---------------------------------------------------------------------------
// Checked configuration.

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: Option<TlsConfig>,
    pub upstream: UpstreamConfig,
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
    pub trusted_proxies: Vec<Cidr>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub source: CertSource,
    /// `Strict-Transport-Security` max-age; zero disables the header.
    pub hsts_max_age: Duration,
}

#[derive(Debug, Clone)]
pub enum CertSource {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `scheme://host:port`, without a path.
    pub url: http::Uri,
    /// How long to wait for the upstream's response headers before a 504.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub sweep_interval: Duration,
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start.min(text.len()));
            let line = text[..offset].matches('\n').count() + 1;
            let mut message = e.message().trim().replace('\n', " ");
            if let Some(key) = key_at(text, line).filter(|k| !message.contains(k.as_str())) {
                message = format!("`{key}`: {message}");
            }
            ConfigError::Syntax {
                origin: origin.to_string(),
                line,
                message,
            }
        })?;
        Config::try_from(raw)
    }
}

/// The dotted key assigned on `line` (1-based), qualified by its `[section]`.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (key, _) = lines.get(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim();
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let server = check_server(raw.server)?;
        let tls = raw.tls.map(check_tls).transpose()?;
        let upstream = check_upstream(raw.upstream)?;
        let store = StoreConfig {
            path: raw
                .store
                .path
                .unwrap_or_else(|| PathBuf::from("data/gatehouse.redb")),
            sweep_interval: duration_or(
                "store.sweep_interval",
                raw.store.sweep_interval,
                Duration::from_secs(60),
            )?,
        };
        if store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        let session = check_session(raw.session)?;
        let otp = OtpConfig {
            ttl: duration_or("otp.ttl", raw.otp.ttl, Duration::from_secs(300))?,
            max_sends_per_day: positive("otp.max_sends_per_day", raw.otp.max_sends_per_day, 5)?,
            max_attempts: positive("otp.max_attempts", raw.otp.max_attempts, 5)?,
        };
        let mail = check_mail(raw.mail, otp.ttl)?;
        let password = check_password(raw.password)?;
        let routes = check_routes(raw.route)?;
        let cors = check_cors(raw.cors)?;
        let limits = check_limits(raw.limits)?;
        let admin = check_admin(raw.admin, &store)?;
        let log = check_log(raw.log)?;
        Ok(Config {
            server,
            tls,
            upstream,
            store,
            mail,
            session,
            otp,
            password,
            routes,
            cors,
            limits,
            admin,
            log,
        })
    }
}

fn check_admin(raw: RawAdmin, store: &StoreConfig) -> Result<AdminConfig, ConfigError> {
    let listen = match raw.listen.as_deref().unwrap_or("127.0.0.1:9090") {
        "off" => None,
        text => Some(text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "admin.listen",
                format!("\"{text}\" is not an address like \"127.0.0.1:9090\" (or \"off\")"),
            )
        })?),
    };
    let socket = raw
        .socket
        .unwrap_or_else(|| store.data_dir().join("admin.sock"));
    if socket.as_os_str().is_empty() {
        return Err(invalid("admin.socket", "must not be empty"));
    }
    // sockaddr_un holds 108 bytes including the terminating NUL.
    if socket.as_os_str().len() > 107 {
        return Err(invalid(
            "admin.socket",
            "is longer than the 107 bytes a Unix socket path may have",
        ));
    }
    Ok(AdminConfig { listen, socket })
}

fn check_log(raw: RawLog) -> Result<LogConfig, ConfigError> {
    let format = match raw.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "log.format",
                format!("\"{other}\" is not one of \"text\", \"json\""),
            ));
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(invalid(
            "log.level",
            format!("\"{level}\" is not a filter like \"info\" or \"gatehouse=debug\""),
        ));
    }
    Ok(LogConfig { format, level })
}

fn check_trusted_proxies(raw: Option<Vec<String>>) -> Result<Vec<Cidr>, ConfigError> {
    raw.unwrap_or_default()
        .iter()
        .map(|text| {
            Cidr::parse(text).ok_or_else(|| {
                invalid(
                    "server.trusted_proxies",
                    format!("\"{text}\" is not an address or CIDR like \"10.0.0.0/8\""),
                )
            })
        })
        .collect()
}

fn check_server(raw: RawServer) -> Result<ServerConfig, ConfigError> {
    let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:8443");
    let listen: SocketAddr = listen.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!("\"{listen}\" is not an address like \"127.0.0.1:8443\""),
        )
    })?;
    let max_connections = raw.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        return Err(invalid("server.max_connections", "must be at least 1"));
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(16 * 1024);
    if !(256..=16 * 1024 * 1024).contains(&max_body_bytes) {
        return Err(invalid(
            "server.max_body_bytes",
            "must be between 256 and 16777216",
        ));
    }
    Ok(ServerConfig {
        listen,
        workers: raw.workers.unwrap_or(0),
        max_connections,
        header_read_timeout: duration_or(
            "server.header_read_timeout",
            raw.header_read_timeout,
            Duration::from_secs(10),
        )?,
        max_body_bytes,
        drain_timeout: duration_or(
            "server.drain_timeout",
            raw.drain_timeout,
            Duration::from_secs(30),
        )?,
        trusted_proxies: check_trusted_proxies(raw.trusted_proxies)?,
    })
}

fn check_tls(raw: RawTls) -> Result<TlsConfig, ConfigError> {
    let source = match (raw.cert, raw.key, raw.self_signed.unwrap_or(false)) {
        (Some(cert), Some(key), false) => CertSource::Files { cert, key },
        (None, None, true) => CertSource::SelfSigned,
        (Some(_), Some(_), true) => {
            return Err(invalid(
                "tls.self_signed",
                "set either cert and key, or self_signed = true, not both",
            ));
        }
        (Some(_), None, _) => return Err(invalid("tls.key", "is required when tls.cert is set")),
        (None, Some(_), _) => return Err(invalid("tls.cert", "is required when tls.key is set")),
        (None, None, false) => {
            return Err(invalid(
                "tls",
                "set cert and key, or self_signed = true; remove [tls] to serve plain HTTP",
            ));
        }
    };
    let hsts_max_age = match raw.hsts_max_age.as_deref().map(str::trim) {
        Some("0" | "0s") => Duration::ZERO,
        _ => duration_or(
            "tls.hsts_max_age",
            raw.hsts_max_age,
            Duration::from_secs(365 * 86_400),
        )?,
    };
    Ok(TlsConfig {
        source,
        hsts_max_age,
    })
}

fn check_cors(raw: RawCors) -> Result<CorsConfig, ConfigError> {
    let mut allowed_origins = Vec::new();
    for origin in raw.allowed_origins.unwrap_or_default() {
        let lower = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let valid = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"))
            .is_some_and(|host| !host.is_empty() && !host.contains(['/', '*', ' ', '?', '#']));
        if !valid {
            return Err(invalid(
                "cors.allowed_origins",
                format!("\"{origin}\" is not an origin like \"https://app.example.com\""),
            ));
        }
        allowed_origins.push(lower);
    }
    Ok(CorsConfig {
        allowed_origins,
        max_age: duration_or("cors.max_age", raw.max_age, Duration::from_secs(600))?,
    })
}

fn check_limits(raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
    Ok(LimitsConfig {
        send_otp_per_ip_per_hour: positive(
            "limits.send_otp_per_ip_per_hour",
            raw.send_otp_per_ip_per_hour,
            20,
        )?,
        verify_per_ip_per_hour: positive(
            "limits.verify_per_ip_per_hour",
            raw.verify_per_ip_per_hour,
            60,
        )?,
        signin_per_ip_per_minute: positive(
            "limits.signin_per_ip_per_minute",
            raw.signin_per_ip_per_minute,
            30,
        )?,
        signin_failures_per_email: positive(
            "limits.signin_failures_per_email",
            raw.signin_failures_per_email,
            5,
        )?,
        signin_failures_per_ip: positive(
            "limits.signin_failures_per_ip",
            raw.signin_failures_per_ip,
            20,
        )?,
        max_backoff: duration_or(
            "limits.max_backoff",
            raw.max_backoff,
            Duration::from_secs(15 * 60),
        )?,
        max_queued_hashes: match raw.max_queued_hashes.unwrap_or(64) {
            0 => return Err(invalid("limits.max_queued_hashes", "must be at least 1")),
            n => n,
        },
    })
}

fn check_upstream(raw: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let text = raw.url.as_deref().unwrap_or("http://127.0.0.1:3000");
    let url: http::Uri = text
        .parse()
        .map_err(|_| invalid("upstream.url", format!("\"{text}\" is not a URL")))?;
    if url.scheme_str() != Some("http") {
        return Err(invalid(
            "upstream.url",
            "must start with http:// (the upstream is reached over plain HTTP on the same host or network)",
        ));
    }
    if url.authority().is_none() {
        return Err(invalid(
            "upstream.url",
            "needs a host, as in http://127.0.0.1:3000",
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(invalid(
            "upstream.url",
            "must not carry a path or query; requests keep their own path",
        ));
    }
    Ok(UpstreamConfig {
        url,
        timeout: duration_or("upstream.timeout", raw.timeout, Duration::from_secs(30))?,
        connect_timeout: duration_or(
            "upstream.connect_timeout",
            raw.connect_timeout,
            Duration::from_secs(5),
        )?,
    })
}

fn check_mail(raw: RawMail, otp_ttl: Duration) -> Result<MailConfig, ConfigError> {
    let from = raw
        .from
        .unwrap_or_else(|| "Flowtask <no-reply@example.com>".to_string());
    if !from.contains('@') || from.contains(['\r', '\n']) {
        return Err(invalid(
            "mail.from",
            "must be an address, as in \"Flowtask <no-reply@example.com>\"",
        ));
    }
    let transport = match raw.transport.as_deref().unwrap_or("log") {
        "log" => MailTransport::Log,
        "file" => {
            let dir = raw
                .dir
                .filter(|d| !d.as_os_str().is_empty())
                .ok_or_else(|| invalid("mail.dir", "is required when mail.transport = \"file\""))?;
            MailTransport::File(dir)
        }
        "smtp" => {
            let smtp = raw.smtp.ok_or_else(|| {
                invalid("mail.smtp", "is required when mail.transport = \"smtp\"")
            })?;
            MailTransport::Smtp(check_smtp(smtp)?)
        }
        other => {
            return Err(invalid(
                "mail.transport",
                format!("\"{other}\" is not one of \"smtp\", \"log\", \"file\""),
            ));
        }
    };
    let deadline = duration_or("mail.deadline", raw.deadline, otp_ttl)?;
    if deadline > otp_ttl {
        return Err(invalid(
            "mail.deadline",
            "must not be longer than otp.ttl (a code that expired is not worth sending)",
        ));
    }
    let retry_initial = duration_or(
        "mail.retry_initial",
        raw.retry_initial,
        Duration::from_secs(1),
    )?;
    let retry_max = duration_or("mail.retry_max", raw.retry_max, Duration::from_secs(10))?;
    if retry_max < retry_initial {
        return Err(invalid(
            "mail.retry_max",
            "must be at least mail.retry_initial",
        ));
    }
    let templates = raw.templates.unwrap_or_default();
    let product_name = raw.product_name.unwrap_or_else(|| "Flowtask".to_string());
    if product_name.contains(['\r', '\n']) {
        return Err(invalid("mail.product_name", "must be a single line"));
    }
    Ok(MailConfig {
        transport,
        from,
        product_name,
        code_in_subject: raw.code_in_subject.unwrap_or(false),
        deadline,
        retry_initial,
        retry_max,
        templates: TemplatePaths {
            subject: templates.subject,
            text: templates.text,
            html: templates.html,
        },
    })
}

fn check_smtp(raw: RawSmtp) -> Result<SmtpConfig, ConfigError> {
    let host = raw
        .host
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| invalid("mail.smtp.host", "is required"))?;
    let security = match raw.security.as_deref().unwrap_or("starttls") {
        "none" => SmtpSecurity::None,
        "starttls" => SmtpSecurity::StartTls,
        "tls" => SmtpSecurity::Tls,
        other => {
            return Err(invalid(
                "mail.smtp.security",
                format!("\"{other}\" is not one of \"none\", \"starttls\", \"tls\""),
            ));
        }
    };
    let default_port = match security {
        SmtpSecurity::None => 25,
        SmtpSecurity::StartTls => 587,
        SmtpSecurity::Tls => 465,
    };
    let password = match (raw.password, raw.password_env, raw.password_file) {
        (None, None, None) => None,
        (Some(p), None, None) => Some(PasswordSource::Inline(p)),
        (None, Some(var), None) if !var.is_empty() => Some(PasswordSource::Env(var)),
        (None, None, Some(path)) if !path.as_os_str().is_empty() => {
            Some(PasswordSource::File(path))
        }
        (None, Some(_), None) => {
            return Err(invalid("mail.smtp.password_env", "must name a variable"));
        }
        (None, None, Some(_)) => {
            return Err(invalid("mail.smtp.password_file", "must name a file"));
        }
        _ => {
            return Err(invalid(
                "mail.smtp.password",
                "set only one of password, password_env and password_file",
            ));
        }
    };
    if password.is_some() && raw.username.is_none() {
        return Err(invalid(
            "mail.smtp.username",
            "is required when an SMTP password is set",
        ));
    }
    if raw.username.is_some() && password.is_none() {
        return Err(invalid(
            "mail.smtp.password",
            "is required when mail.smtp.username is set (or use password_env / password_file)",
        ));
    }
    if security == SmtpSecurity::None && raw.ca_file.is_some() {
        return Err(invalid(
            "mail.smtp.ca_file",
            "has no effect with security = \"none\"; remove it or use \"starttls\" / \"tls\"",
        ));
    }
    Ok(SmtpConfig {
        host,
        port: raw.port.unwrap_or(default_port),
        security,
        username: raw.username,
        password,
        ca_file: raw.ca_file,
        timeout: duration_or("mail.smtp.timeout", raw.timeout, Duration::from_secs(30))?,
    })
}

fn check_session(raw: RawSession) -> Result<SessionConfig, ConfigError> {
    let cookie_name = raw
        .cookie_name
        .unwrap_or_else(|| "gatehouse_session".to_string());
    let valid_name = !cookie_name.is_empty()
        && cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !valid_name {
        return Err(invalid(
            "session.cookie_name",
            "use letters, digits, '_', '-' or '.' only",
        ));
    }
    let idle_timeout = duration_or(
        "session.idle_timeout",
        raw.idle_timeout,
        Duration::from_secs(24 * 3600),
    )?;
    let absolute_timeout = duration_or(
        "session.absolute_timeout",
        raw.absolute_timeout,
        Duration::from_secs(7 * 24 * 3600),
    )?;
    let same_site = match raw
        .same_site
        .as_deref()
        .unwrap_or("lax")
        .to_ascii_lowercase()
        .as_str()
    {
        "lax" => cookie::SameSite::Lax,
        "strict" => cookie::SameSite::Strict,
        "none" => cookie::SameSite::None,
        other => {
            return Err(invalid(
                "session.same_site",
                format!("\"{other}\" is not one of \"lax\", \"strict\", \"none\""),
            ));
        }
    };
    if let Some(domain) = &raw.domain
        && (domain.is_empty() || domain.contains([' ', ';', ',', '/']))
    {
        return Err(invalid("session.domain", "is not a domain name"));
    }
    Ok(SessionConfig {
        cookie_name,
        idle_timeout,
        absolute_timeout,
        same_site,
        domain: raw.domain,
    })
}

fn check_password(raw: RawPassword) -> Result<PasswordConfig, ConfigError> {
    let min_length = raw.min_length.unwrap_or(8);
    let max_length = raw.max_length.unwrap_or(128);
    if min_length == 0 {
        return Err(invalid("password.min_length", "must be at least 1"));
    }
    if max_length < min_length || max_length > 4096 {
        return Err(invalid(
            "password.max_length",
            "must be at least password.min_length and at most 4096",
        ));
    }
    let cfg = PasswordConfig {
        min_length,
        max_length,
        argon2_memory_kib: raw.argon2_memory_kib.unwrap_or(19 * 1024),
        argon2_iterations: raw.argon2_iterations.unwrap_or(2),
        argon2_parallelism: raw.argon2_parallelism.unwrap_or(1),
        max_concurrent_hashes: raw.max_concurrent_hashes.unwrap_or(0),
    };
    argon2::Params::new(
        cfg.argon2_memory_kib,
        cfg.argon2_iterations,
        cfg.argon2_parallelism,
        None,
    )
    .map_err(|e| {
        invalid(
            "password.argon2_memory_kib",
            format!("argon2 parameters: {e}"),
        )
    })?;
    Ok(cfg)
}

fn check_routes(raw: Option<Vec<RawRoute>>) -> Result<Vec<Route>, ConfigError> {
    let raw = raw.unwrap_or_else(|| {
        vec![
            RawRoute {
                prefix: "/api/v2/".into(),
                auth: "required".into(),
            },
            RawRoute {
                prefix: "/".into(),
                auth: "optional".into(),
            },
        ]
    });
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for r in raw {
        if !r.prefix.starts_with('/')
            || r.prefix.contains(['?', '#', '%', '\\', ';'])
            || r.prefix.split('/').any(|s| s == "." || s == "..")
            || r.prefix.contains("//")
        {
            return Err(invalid(
                "route.prefix",
                format!("\"{}\" must be a plain path starting with '/'", r.prefix),
            ));
        }
        let auth = match r.auth.as_str() {
            "required" => RouteAuth::Required,
            "optional" => RouteAuth::Optional,
            "none" => RouteAuth::None,
            other => {
                return Err(invalid(
                    "route.auth",
                    format!("\"{other}\" is not one of \"required\", \"optional\", \"none\""),
                ));
            }
        };
        let prefix = r.prefix.to_ascii_lowercase();
        if routes.iter().any(|existing| existing.prefix == prefix) {
            return Err(invalid(
                "route.prefix",
                format!("\"{prefix}\" is listed twice"),
            ));
        }
        routes.push(Route { prefix, auth });
    }
    Ok(routes)
}

fn positive(key: &'static str, value: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(invalid(key, "must be at least 1")),
        n => Ok(n),
    }
}

fn duration_or(
    key: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => match parse_duration(&text) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(invalid(
                key,
                format!("\"{text}\" is not a duration like \"30s\", \"5m\", \"24h\" or \"7d\""),
            )),
        },
    }
}

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"24h"`, `"7d"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(seconds).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.session.idle_timeout, Duration::from_secs(86_400));
        assert_eq!(c.session.absolute_timeout, Duration::from_secs(7 * 86_400));
        assert_eq!(c.otp.ttl, Duration::from_secs(300));
        assert_eq!(c.otp.max_sends_per_day, 5);
        assert_eq!(c.password.min_length, 8);
        assert_eq!(c.routes.len(), 2);
        assert!(c.tls.is_none());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5 weeks"), None);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n");
        assert!(e.contains("listn"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(err("[session]\nidle_timeout = \"soon\"").contains("session.idle_timeout"));
        assert!(err("[server]\nlisten = \"nowhere\"").contains("server.listen"));
        assert!(err("[mail]\ntransport = \"pigeon\"").contains("mail.transport"));
        assert!(err("[mail]\ntransport = \"smtp\"").contains("mail.smtp"));
        assert!(err("[upstream]\nurl = \"https://x\"").contains("upstream.url"));
        assert!(err("[tls]\ncert = \"a.pem\"").contains("tls.key"));
        assert!(err("[[route]]\nprefix = \"/a\"\nauth = \"maybe\"").contains("route.auth"));
        assert!(err("[[route]]\nprefix = \"/a/../b\"\nauth = \"none\"").contains("route.prefix"));
        assert!(err("[otp]\nmax_attempts = 0").contains("otp.max_attempts"));
        let e = err("[otp]\nmax_attempts = \"five\"");
        assert!(
            e.contains("line 2") && e.contains("otp.max_attempts"),
            "{e}"
        );
    }

    #[test]
    fn operations_keys_have_defaults_and_are_checked() {
        let c = Config::parse("[store]\npath = \"/var/lib/g/s.redb\"", "t").unwrap();
        assert_eq!(c.admin.listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.admin.socket, PathBuf::from("/var/lib/g/admin.sock"));
        assert_eq!(c.server.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(c.server.trusted_proxies.is_empty());
        let c = Config::parse(
            "[admin]\nlisten = \"off\"\n[log]\nformat = \"json\"\n\
             [server]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1\"]",
            "t",
        )
        .unwrap();
        assert_eq!(c.admin.listen, None);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert!(err("[admin]\nlisten = \"9090\"").contains("admin.listen"));
        assert!(err("[log]\nformat = \"xml\"").contains("log.format"));
        assert!(
            err("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]").contains("server.trusted_proxies")
        );
        assert!(err("[server]\ndrain_timeout = \"soon\"").contains("server.drain_timeout"));
    }

    #[test]
    fn smtp_password_is_not_in_debug_output() {
        let c = Config::parse(
            "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"h\"\nusername = \"u\"\npassword = \"hunter2\"",
            "t",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn mail_keys_are_checked() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.mail.deadline, c.otp.ttl);
        assert!(!c.mail.code_in_subject);
        let c = Config::parse("[otp]\nttl = \"10m\"", "t").unwrap();
        assert_eq!(c.mail.deadline, Duration::from_secs(600));
        assert!(err("[mail]\ntransport = \"file\"").contains("mail.dir"));
        assert!(err("[mail]\ndeadline = \"1h\"").contains("mail.deadline"));
        assert!(
            err("[mail]\nretry_initial = \"5s\"\nretry_max = \"1s\"").contains("mail.retry_max")
        );
        let smtp = "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"h\"\nusername = \"u\"\n";
        let e = err(&format!("{smtp}password = \"a\"\npassword_env = \"B\""));
        assert!(e.contains("mail.smtp.password"), "{e}");
        assert!(err(smtp).contains("mail.smtp.password"));
        let c = Config::parse(&format!("{smtp}password_file = \"smtp-pass\""), "t").unwrap();
        let MailTransport::Smtp(s) = c.mail.transport else {
            panic!()
        };
        assert_eq!(s.password, Some(PasswordSource::File("smtp-pass".into())));
        let e = err(
            "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"h\"\nsecurity = \"none\"\nca_file = \"ca.pem\"",
        );
        assert!(e.contains("mail.smtp.ca_file"), "{e}");
    }
}
