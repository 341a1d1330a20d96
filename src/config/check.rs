//! Turning the raw file into a checked [`Config`]: defaults, ranges and
//! cross-key rules, each failure naming the key to change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::mail::check_mail;
use super::raw::*;
use super::values::{
    ConfigCidr, ConfigDuration, RoutePrefix, duration_or, duration_or_zero, positive, show_duration,
};
use super::*;

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let default_auth = super::access::check_default_auth(raw.server.default_auth.as_deref())?;
        let server = check_server(raw.server)?;
        let tls = raw.tls.map(check_tls).transpose()?;
        super::acme::check_listeners(tls.as_ref(), &server)?;
        let upstream = check_upstream("upstream", raw.upstream)?;
        let upstreams = check_named_upstreams(raw.upstreams)?;
        let backend = check_store_backend(&raw.store)?;
        let store = StoreConfig {
            path: raw
                .store
                .path
                .unwrap_or_else(|| PathBuf::from("data/gatehouse.redb")),
            sweep_interval: duration_or(raw.store.sweep_interval, Duration::from_secs(60)),
            backend,
        };
        if store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        let session = check_session(raw.session)?;
        let otp = OtpConfig {
            ttl: duration_or(raw.otp.ttl, Duration::from_secs(300)),
            max_sends_per_day: positive("otp.max_sends_per_day", raw.otp.max_sends_per_day, 5)?,
            max_attempts: positive("otp.max_attempts", raw.otp.max_attempts, 5)?,
        };
        let mail = check_mail(raw.mail, otp.ttl)?;
        check_lease_outlives_smtp(&store, &mail)?;
        let password = check_password(raw.password)?;
        let pages = super::access::check_pages(raw.pages)?;
        let routes = check_routes(raw.route, &upstreams, pages.is_some())?;
        let cors = check_cors(raw.cors)?;
        let limits = check_limits(raw.limits)?;
        let admin = check_admin(raw.admin, &store)?;
        let log = check_log(raw.log)?;
        let oidc = super::oidc::check_oidc(raw.oidc)?;
        let oauth = super::oidc::check_oauth(raw.oauth)?;
        Ok(Config {
            server,
            tls,
            upstream,
            upstreams,
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
            notify: NotifyConfig {
                new_device: raw.notify.new_device.unwrap_or(true),
            },
            oidc,
            oauth,
            access: AccessConfig {
                default_auth,
                signup: super::access::check_signup(raw.signup)?,
                pages,
            },
            mfa: super::mfa::check_mfa(raw.mfa)?,
        })
    }
}

/// `[store] lease`: how long an instance holds an outbox message it is
/// sending. Too short and a slow SMTP dialogue outlives it (another instance
/// may send the mail again); too long and the mail of a dead instance waits.
fn check_outbox_lease(value: Option<ConfigDuration>) -> Result<Duration, ConfigError> {
    let lease = duration_or(value, Duration::from_secs(60));
    if !(MIN_OUTBOX_LEASE..=MAX_OUTBOX_LEASE).contains(&lease) {
        return Err(invalid(
            "store.lease",
            format!(
                "must be between {} (longer than one SMTP dialogue) and {} (a dead instance's mail waits that long)",
                show_duration(MIN_OUTBOX_LEASE),
                show_duration(MAX_OUTBOX_LEASE)
            ),
        ));
    }
    Ok(lease)
}

/// A leased mail must not be claimed again while its SMTP attempt (bounded
/// by three `mail.smtp.timeout`s, see `mail::outbox`) may still be running.
fn check_lease_outlives_smtp(store: &StoreConfig, mail: &MailConfig) -> Result<(), ConfigError> {
    if let (StoreBackend::Postgres(pg), MailTransport::Smtp(smtp)) =
        (&store.backend, &mail.transport)
        && pg.lease <= smtp.timeout.saturating_mul(3)
    {
        return Err(invalid(
            "store.lease",
            format!(
                "must be longer than three mail.smtp.timeout ({}), the longest one SMTP attempt takes",
                show_duration(smtp.timeout.saturating_mul(3))
            ),
        ));
    }
    Ok(())
}

/// Bounds of `[store] lease`.
const MIN_OUTBOX_LEASE: Duration = Duration::from_secs(5);
const MAX_OUTBOX_LEASE: Duration = Duration::from_secs(3600);

/// `[store] kind` and, for PostgreSQL, where the URL comes from (exactly
/// one of `url`, `url_file`, `url_env`), the pool size and the CA.
fn check_store_backend(raw: &RawStore) -> Result<StoreBackend, ConfigError> {
    let postgres_keys = [
        ("store.url", raw.url.is_some()),
        ("store.url_file", raw.url_file.is_some()),
        ("store.url_env", raw.url_env.is_some()),
        ("store.pool_size", raw.pool_size.is_some()),
        ("store.ca_file", raw.ca_file.is_some()),
        ("store.lease", raw.lease.is_some()),
    ];
    match raw.kind.as_deref().unwrap_or("redb") {
        "redb" => match postgres_keys.iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(invalid(key, "only applies with store.kind = \"postgres\"")),
            None => Ok(StoreBackend::Redb),
        },
        "postgres" => {
            let url = match (&raw.url, &raw.url_file, &raw.url_env) {
                (Some(url), None, None) => url.clone(),
                (None, Some(path), None) => std::fs::read_to_string(path)
                    .map_err(|e| invalid("store.url_file", format!("{}: {e}", path.display())))?
                    .trim()
                    .to_string(),
                (None, None, Some(var)) => std::env::var(var).map_err(|_| {
                    invalid(
                        "store.url_env",
                        format!("environment variable {var} is not set"),
                    )
                })?,
                (None, None, None) => {
                    return Err(invalid(
                        "store.url",
                        "is required with store.kind = \"postgres\" (or url_file / url_env)",
                    ));
                }
                _ => {
                    return Err(invalid(
                        "store.url",
                        "give only one of url, url_file and url_env",
                    ));
                }
            };
            if url.parse::<tokio_postgres::Config>().is_err() {
                // The parser's message may quote the URL (and its password).
                return Err(invalid(
                    "store.url",
                    "is not a valid PostgreSQL URL (postgres://user[:password]@host[:port]/database)",
                ));
            }
            let pool_size = raw.pool_size.unwrap_or(16);
            if !(1..=1024).contains(&pool_size) {
                return Err(invalid("store.pool_size", "must be between 1 and 1024"));
            }
            Ok(StoreBackend::Postgres(PostgresConfig {
                url: DatabaseUrl::new(url),
                pool_size,
                ca_file: raw.ca_file.clone(),
                lease: check_outbox_lease(raw.lease)?,
            }))
        }
        other => Err(invalid(
            "store.kind",
            format!("must be \"redb\" or \"postgres\", not {other:?}"),
        )),
    }
}

/// The admin listener's default: loopback, next to the public 8443, and off
/// the ports Prometheus (9090), its Pushgateway and Alertmanager (9091-9094)
/// and the exporters (9100 and up) use, so it starts on a VM that runs them.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8449";

fn check_admin(raw: RawAdmin, store: &StoreConfig) -> Result<AdminConfig, ConfigError> {
    let listen = match raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN) {
        "off" => None,
        text => Some(text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "admin.listen",
                format!(
                    "\"{text}\" is not an address like \"{DEFAULT_ADMIN_LISTEN}\" (or \"off\")"
                ),
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
        header_read_timeout: duration_or(raw.header_read_timeout, Duration::from_secs(10)),
        max_body_bytes,
        drain_timeout: duration_or(raw.drain_timeout, Duration::from_secs(30)),
        trusted_proxies: raw
            .trusted_proxies
            .unwrap_or_default()
            .into_iter()
            .map(|ConfigCidr(network)| network)
            .collect(),
        hygiene: check_hygiene(HygieneKeys {
            max_connections_per_ip: raw.max_connections_per_ip,
            keep_alive_timeout: raw.keep_alive_timeout,
            body_read_timeout: raw.body_read_timeout,
            min_body_rate: raw.min_body_rate,
            min_body_rate_grace: raw.min_body_rate_grace,
            underscores_in_headers: raw.underscores_in_headers,
            strip_response_headers: raw.strip_response_headers,
        })?,
    })
}

/// The `[server]` keys of [`HygieneConfig`], moved out of `RawServer`.
struct HygieneKeys {
    max_connections_per_ip: Option<usize>,
    keep_alive_timeout: Option<ConfigDuration>,
    body_read_timeout: Option<ConfigDuration>,
    min_body_rate: Option<u64>,
    min_body_rate_grace: Option<ConfigDuration>,
    underscores_in_headers: Option<String>,
    strip_response_headers: Option<Vec<String>>,
}

fn check_hygiene(raw: HygieneKeys) -> Result<HygieneConfig, ConfigError> {
    let max_connections_per_ip = raw.max_connections_per_ip.unwrap_or(256);
    if max_connections_per_ip == 0 {
        return Err(invalid(
            "server.max_connections_per_ip",
            "must be at least 1",
        ));
    }
    let underscores_in_headers = match raw.underscores_in_headers.as_deref() {
        None | Some("drop") => Underscores::Drop,
        Some("pass") => Underscores::Pass,
        Some(other) => {
            return Err(invalid(
                "server.underscores_in_headers",
                format!("\"{other}\" is not \"drop\" or \"pass\""),
            ));
        }
    };
    let strip_response_headers = raw
        .strip_response_headers
        .unwrap_or_else(|| vec!["X-Powered-By".into(), "Server".into()])
        .iter()
        .map(|name| {
            http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                invalid(
                    "server.strip_response_headers",
                    format!("\"{name}\" is not a header name"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HygieneConfig {
        max_connections_per_ip,
        keep_alive_timeout: duration_or(raw.keep_alive_timeout, Duration::from_secs(10)),
        body_read_timeout: duration_or(raw.body_read_timeout, Duration::from_secs(10)),
        min_body_rate: raw.min_body_rate.unwrap_or(1024),
        min_body_rate_grace: duration_or(raw.min_body_rate_grace, Duration::from_secs(10)),
        underscores_in_headers,
        strip_response_headers,
    })
}

fn check_tls(raw: RawTls) -> Result<TlsConfig, ConfigError> {
    let other_source = raw.cert.is_some() || raw.key.is_some() || raw.self_signed == Some(true);
    let source = match (
        raw.acme,
        raw.cert,
        raw.key,
        raw.self_signed.unwrap_or(false),
    ) {
        (Some(acme), ..) => super::acme::check_acme(acme, other_source)?,
        (None, cert, key, self_signed) => check_cert_files(cert, key, self_signed)?,
    };
    // Zero (`"0"`, `"0s"`) switches the header off.
    let hsts_max_age = duration_or_zero(raw.hsts_max_age, Duration::from_secs(365 * 86_400));
    Ok(TlsConfig {
        source,
        hsts_max_age,
    })
}

fn check_cert_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: bool,
) -> Result<CertSource, ConfigError> {
    Ok(match (cert, key, self_signed) {
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
                "set cert and key, self_signed = true, or a [tls.acme] section; remove [tls] to serve plain HTTP",
            ));
        }
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
        max_age: duration_or(raw.max_age, Duration::from_secs(600)),
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
        first_backoff: duration_or(raw.first_backoff, Duration::from_secs(1)),
        max_backoff: duration_or(raw.max_backoff, Duration::from_secs(15 * 60)),
        max_queued_hashes: match raw.max_queued_hashes.unwrap_or(64) {
            0 => return Err(invalid("limits.max_queued_hashes", "must be at least 1")),
            n => n,
        },
    })
}

/// `[upstream]` (`prefix` = "upstream") or `[upstreams.NAME]`
/// (`prefix` = "upstreams.NAME"); errors name the key under `prefix`.
fn check_upstream(prefix: &str, raw: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let bad = |field: &str, message: String| ConfigError::InvalidKey {
        key: format!("{prefix}.{field}"),
        message,
    };
    let text = match (prefix, raw.url.as_deref()) {
        (_, Some(text)) => text,
        ("upstream", None) => "http://127.0.0.1:3000",
        (_, None) => return Err(bad("url", "is required".into())),
    };
    let url: http::Uri = text
        .parse()
        .map_err(|_| bad("url", format!("\"{text}\" is not a URL")))?;
    let https = match url.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(bad(
                "url",
                format!("\"{text}\" must start with http:// or https://"),
            ));
        }
    };
    let Some(authority) = url.authority() else {
        return Err(bad(
            "url",
            format!("\"{text}\" needs a host, as in http://127.0.0.1:3000"),
        ));
    };
    if authority.as_str().contains('@') {
        return Err(bad("url", "must not carry user information".into()));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(bad(
            "url",
            "must not carry a path or query; requests keep their own path".into(),
        ));
    }
    let tls = if https {
        // `Uri::host` keeps an IPv6 literal's brackets; names are verified bare.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let (field, name) = match &raw.server_name {
            Some(name) => ("server_name", name.as_str()),
            None => ("url", host),
        };
        let server_name = rustls_pki_types::ServerName::try_from(name)
            .map_err(|_| bad(field, format!("\"{name}\" is not a DNS name or IP address")))?
            .to_owned();
        let ca_certs = raw
            .ca_file
            .as_deref()
            .map(|path| read_ca_file(path).map_err(|message| bad("ca_file", message)))
            .transpose()?;
        Some(UpstreamTls {
            server_name,
            ca_certs,
        })
    } else {
        if raw.ca_file.is_some() {
            return Err(bad("ca_file", "needs an https:// url".into()));
        }
        if raw.server_name.is_some() {
            return Err(bad("server_name", "needs an https:// url".into()));
        }
        None
    };
    Ok(UpstreamConfig {
        timeout: duration_or(raw.timeout, Duration::from_secs(30)),
        connect_timeout: duration_or(raw.connect_timeout, Duration::from_secs(5)),
        url,
        tls,
        preserve_host: raw.preserve_host.unwrap_or(false),
    })
}

/// The certificates of a PEM file of CAs; the message says what is wrong.
fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn check_named_upstreams(
    raw: std::collections::BTreeMap<String, RawUpstream>,
) -> Result<std::collections::BTreeMap<String, UpstreamConfig>, ConfigError> {
    let mut named = std::collections::BTreeMap::new();
    for (name, raw) in raw {
        // Names appear in metric labels and log lines.
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ConfigError::InvalidKey {
                key: format!("upstreams.{name}"),
                message: "name upstreams with letters, digits, '_' or '-' (at most 64)".into(),
            });
        }
        let checked = check_upstream(&format!("upstreams.{name}"), raw)?;
        named.insert(name, checked);
    }
    Ok(named)
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
    let idle_timeout = duration_or(raw.idle_timeout, Duration::from_secs(24 * 3600));
    let absolute_timeout = duration_or(raw.absolute_timeout, Duration::from_secs(7 * 24 * 3600));
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

fn check_routes(
    raw: Option<Vec<RawRoute>>,
    upstreams: &std::collections::BTreeMap<String, UpstreamConfig>,
    pages_enabled: bool,
) -> Result<Vec<Route>, ConfigError> {
    let raw = raw.unwrap_or_else(|| {
        vec![
            RawRoute {
                prefix: RoutePrefix("/api/v2/".into()),
                auth: RouteAuth::Required,
                upstream: None,
                methods: None,
                allow_emails: None,
                allow_domains: None,
                allow_groups: None,
                on_unauthenticated: None,
            },
            RawRoute {
                prefix: RoutePrefix("/".into()),
                auth: RouteAuth::Optional,
                upstream: None,
                methods: None,
                allow_emails: None,
                allow_domains: None,
                allow_groups: None,
                on_unauthenticated: None,
            },
        ]
    });
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for (index, r) in raw.into_iter().enumerate() {
        let route =
            check_route(r, &routes, upstreams, pages_enabled).map_err(|e| e.in_entry(index))?;
        routes.push(route);
    }
    Ok(routes)
}

/// One `[[route]]`, given the routes before it; errors name `route.KEY`
/// (the caller adds the entry's index).
fn check_route(
    r: RawRoute,
    earlier: &[Route],
    upstreams: &std::collections::BTreeMap<String, UpstreamConfig>,
    pages_enabled: bool,
) -> Result<Route, ConfigError> {
    let (RoutePrefix(prefix), auth) = (r.prefix, r.auth);
    if earlier.iter().any(|existing| existing.prefix == prefix) {
        return Err(invalid(
            "route.prefix",
            format!("\"{prefix}\" is listed twice"),
        ));
    }
    if let Some(name) = &r.upstream
        && !upstreams.contains_key(name)
    {
        return Err(invalid(
            "route.upstream",
            format!("\"{name}\" (route \"{prefix}\") is not defined; add [upstreams.{name}]"),
        ));
    }
    let access = super::access::check_route_access(
        super::access::RawRouteAccess {
            prefix: &prefix,
            auth,
            methods: r.methods,
            allow_emails: r.allow_emails,
            allow_domains: r.allow_domains,
            allow_groups: r.allow_groups,
            on_unauthenticated: r.on_unauthenticated,
        },
        pages_enabled,
    )?;
    Ok(Route {
        prefix,
        auth,
        upstream: r.upstream,
        access,
    })
}
