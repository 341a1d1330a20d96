//! Who may reach what (issue 20): the per-route access rules (`methods`,
//! `allow_emails`, `allow_domains`, `allow_groups`, `on_unauthenticated`),
//! `[server] default_auth`, the sign-up policy (`[signup]`) and the built-in
//! pages (`[pages]`). Raw shapes and their checks live together here so the
//! shared `raw.rs`/`check.rs` only gain a field and a call each.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, RouteAuth, invalid};

/// `[signup]`: who may create an account through the API and the pages.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignup {
    pub(super) mode: Option<String>,
    pub(super) allowed_domains: Option<Vec<String>>,
    pub(super) refusal_notice: Option<bool>,
}

/// `[pages]`: the built-in sign-in pages.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPages {
    pub(super) enabled: Option<bool>,
    pub(super) prefix: Option<String>,
    pub(super) templates_dir: Option<PathBuf>,
    pub(super) title: Option<String>,
    pub(super) logo: Option<PathBuf>,
}

/// What an unauthenticated (or refused) browser navigation gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnauthenticated {
    /// A JSON 401 (403 for a refused user), whoever asks.
    Status401,
    /// Top-level navigations go to the sign-in page (`?rd=` back here), or
    /// get the "no access" page; other requests still get JSON.
    Redirect,
}

/// A route's access rules beyond `auth`. Any `allow_*` list makes the route
/// need a session; a user passes when any list names them (email, its
/// domain, or one of their groups).
#[derive(Debug, Clone)]
pub struct RouteAccess {
    /// Upper-case methods served; `None` = all. `GET` brings `HEAD`.
    pub methods: Option<Vec<http::Method>>,
    /// The `Allow` value for the 405 answer.
    pub allow_header: Option<http::HeaderValue>,
    /// Lower-cased addresses.
    pub allow_emails: Vec<String>,
    /// Lower-cased domains (exact match of the part after `@`).
    pub allow_domains: Vec<String>,
    pub allow_groups: Vec<String>,
    pub on_unauthenticated: OnUnauthenticated,
}

impl Default for RouteAccess {
    fn default() -> RouteAccess {
        RouteAccess {
            methods: None,
            allow_header: None,
            allow_emails: Vec::new(),
            allow_domains: Vec::new(),
            allow_groups: Vec::new(),
            on_unauthenticated: OnUnauthenticated::Status401,
        }
    }
}

impl RouteAccess {
    /// Whether some `allow_*` list restricts the route to named users.
    pub fn restricts_users(&self) -> bool {
        !(self.allow_emails.is_empty()
            && self.allow_domains.is_empty()
            && self.allow_groups.is_empty())
    }
}

/// `[server] default_auth`: what a path no route covers gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAuth {
    /// 404, as before (and forward-auth answers 403).
    NotServed,
    /// Deny by default: a valid session is needed, then `[upstream]` gets it.
    Required,
}

/// `[signup] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupMode {
    Open,
    /// Only addresses with a live invite (`gatehouse invite create`).
    Invite,
    /// Only addresses in `allowed_domains`.
    Domains,
    /// Nobody; operators add users with `gatehouse user add`.
    Closed,
}

impl SignupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SignupMode::Open => "open",
            SignupMode::Invite => "invite",
            SignupMode::Domains => "domains",
            SignupMode::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SignupConfig {
    pub mode: SignupMode,
    /// Lower-cased; only with `mode = "domains"`.
    pub allowed_domains: Vec<String>,
    /// Mail a refused address a polite "sign-up is not open to you" notice
    /// (at most one a day per address) instead of nothing. The API answers
    /// the same either way.
    pub refusal_notice: bool,
}

impl SignupConfig {
    /// One line for `check-config`.
    pub fn describe(&self) -> String {
        let mut s = format!("sign-up: {}", self.mode.as_str());
        match self.mode {
            SignupMode::Open => s.push_str(" (anyone with a mailbox)"),
            SignupMode::Invite => s.push_str(" (only invited addresses)"),
            SignupMode::Domains => {
                s.push_str(&format!(" (only @{})", self.allowed_domains.join(", @")))
            }
            SignupMode::Closed => s.push_str(" (operators add users)"),
        }
        if self.mode != SignupMode::Open {
            s.push_str(if self.refusal_notice {
                "; refused addresses get the usual answer and a notice"
            } else {
                "; refused addresses get the usual answer and no mail"
            });
        }
        s
    }
}

#[derive(Debug, Clone)]
pub struct PagesConfig {
    /// Starts with `/`, no trailing slash (default `/_gatehouse`).
    pub prefix: String,
    pub templates_dir: Option<PathBuf>,
    pub title: String,
    pub logo: Option<PathBuf>,
}

/// Everything of issue 20 that is not per route.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub default_auth: DefaultAuth,
    pub signup: SignupConfig,
    /// `None`: no built-in pages.
    pub pages: Option<PagesConfig>,
}

pub(super) fn check_default_auth(raw: Option<&str>) -> Result<DefaultAuth, ConfigError> {
    match raw.unwrap_or("none") {
        "none" => Ok(DefaultAuth::NotServed),
        "required" => Ok(DefaultAuth::Required),
        other => Err(invalid(
            "server.default_auth",
            format!("\"{other}\" is not one of \"none\", \"required\""),
        )),
    }
}

fn domain(key: &'static str, raw: &str) -> Result<String, ConfigError> {
    let d = raw.trim().trim_start_matches('@').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !d.starts_with('.')
        && !d.ends_with('.');
    if ok {
        Ok(d)
    } else {
        Err(invalid(key, format!("\"{raw}\" is not a domain name")))
    }
}

/// A group name: 1 to 64 of `a-z 0-9 - _ .` (what `user groups` accepts).
pub fn is_group_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

pub(super) fn check_signup(raw: RawSignup) -> Result<SignupConfig, ConfigError> {
    let mode = match raw.mode.as_deref().unwrap_or("open") {
        "open" => SignupMode::Open,
        "invite" => SignupMode::Invite,
        "domains" => SignupMode::Domains,
        "closed" => SignupMode::Closed,
        other => {
            return Err(invalid(
                "signup.mode",
                format!("\"{other}\" is not one of \"open\", \"invite\", \"domains\", \"closed\""),
            ));
        }
    };
    let allowed_domains = raw
        .allowed_domains
        .unwrap_or_default()
        .iter()
        .map(|d| domain("signup.allowed_domains", d))
        .collect::<Result<Vec<_>, _>>()?;
    match (mode, allowed_domains.is_empty()) {
        (SignupMode::Domains, true) => {
            return Err(invalid(
                "signup.allowed_domains",
                "is required with mode = \"domains\" (e.g. [\"example.com\"])",
            ));
        }
        (SignupMode::Open | SignupMode::Invite | SignupMode::Closed, false) => {
            return Err(invalid(
                "signup.allowed_domains",
                "only applies with mode = \"domains\"",
            ));
        }
        _ => {}
    }
    Ok(SignupConfig {
        mode,
        allowed_domains,
        refusal_notice: raw.refusal_notice.unwrap_or(false),
    })
}

pub(super) fn check_pages(raw: Option<RawPages>) -> Result<Option<PagesConfig>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    if !raw.enabled.unwrap_or(true) {
        return Ok(None);
    }
    let prefix = raw.prefix.unwrap_or_else(|| "/_gatehouse".to_string());
    let prefix = prefix.trim_end_matches('/').to_ascii_lowercase();
    let plain = prefix.starts_with('/')
        && prefix.len() > 1
        && prefix[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    if !plain || prefix.starts_with("/api/") {
        return Err(invalid(
            "pages.prefix",
            format!(
                "\"{prefix}\" must be a plain path like \"/_gatehouse\" (letters, digits, - _ .), outside /api/"
            ),
        ));
    }
    if let Some(dir) = &raw.templates_dir
        && !dir.is_dir()
    {
        return Err(invalid(
            "pages.templates_dir",
            format!("{} is not a directory", dir.display()),
        ));
    }
    if let Some(logo) = &raw.logo {
        if !logo.is_file() {
            return Err(invalid(
                "pages.logo",
                format!("{} is not a file", logo.display()),
            ));
        }
        if logo_type(logo).is_none() {
            return Err(invalid(
                "pages.logo",
                "must be a .png, .svg, .jpg, .jpeg or .webp file",
            ));
        }
    }
    let title = raw.title.unwrap_or_else(|| "Sign in".to_string());
    if title.trim().is_empty() || title.len() > 200 {
        return Err(invalid("pages.title", "must be 1 to 200 characters"));
    }
    Ok(Some(PagesConfig {
        prefix,
        templates_dir: raw.templates_dir,
        title,
        logo: raw.logo,
    }))
}

/// The `Content-Type` of a logo file, by extension.
pub fn logo_type(path: &std::path::Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        _ => return None,
    })
}

/// The access keys of one `[[route]]`.
pub(super) struct RawRouteAccess<'a> {
    pub(super) prefix: &'a str,
    pub(super) auth: RouteAuth,
    pub(super) methods: Option<Vec<String>>,
    pub(super) allow_emails: Option<Vec<String>>,
    pub(super) allow_domains: Option<Vec<String>>,
    pub(super) allow_groups: Option<Vec<String>>,
    pub(super) on_unauthenticated: Option<String>,
}

pub(super) fn check_route_access(
    raw: RawRouteAccess<'_>,
    pages_enabled: bool,
) -> Result<RouteAccess, ConfigError> {
    let methods = match raw.methods {
        None => None,
        Some(list) => {
            if list.is_empty() {
                return Err(invalid(
                    "route.methods",
                    "must name at least one method (leave it out to allow all)",
                ));
            }
            let mut methods: Vec<http::Method> = Vec::new();
            for m in &list {
                let upper = m.trim().to_ascii_uppercase();
                let ok = !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_uppercase());
                let method = ok
                    .then(|| http::Method::from_bytes(upper.as_bytes()).ok())
                    .flatten()
                    .ok_or_else(|| {
                        invalid("route.methods", format!("\"{m}\" is not an HTTP method"))
                    })?;
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
            if methods.contains(&http::Method::GET) && !methods.contains(&http::Method::HEAD) {
                methods.push(http::Method::HEAD);
            }
            Some(methods)
        }
    };
    let allow_header = methods.as_ref().map(|m| {
        let text = m.iter().map(http::Method::as_str).collect::<Vec<_>>();
        http::HeaderValue::from_str(&text.join(", ")).expect("method names are header-safe")
    });
    let allow_emails = raw
        .allow_emails
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let e = e.trim().to_ascii_lowercase();
            match e.split_once('@') {
                Some((local, d))
                    if !local.is_empty() && domain("route.allow_emails", d).is_ok() =>
                {
                    Ok(e)
                }
                _ => Err(invalid(
                    "route.allow_emails",
                    format!("\"{e}\" is not an email address"),
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let allow_domains = raw
        .allow_domains
        .unwrap_or_default()
        .iter()
        .map(|d| domain("route.allow_domains", d))
        .collect::<Result<Vec<_>, _>>()?;
    let allow_groups = raw.allow_groups.unwrap_or_default();
    if let Some(bad) = allow_groups.iter().find(|g| !is_group_name(g)) {
        return Err(invalid(
            "route.allow_groups",
            format!("\"{bad}\" is not a group name (1-64 of a-z 0-9 - _ .)"),
        ));
    }
    let access = RouteAccess {
        methods,
        allow_header,
        allow_emails,
        allow_domains,
        allow_groups,
        on_unauthenticated: OnUnauthenticated::Status401,
    };
    if access.restricts_users() && raw.auth == RouteAuth::None {
        return Err(invalid(
            "route.auth",
            format!(
                "route \"{}\" has allow_* rules, which need a session: use auth = \"required\"",
                raw.prefix
            ),
        ));
    }
    let on_unauthenticated = match raw.on_unauthenticated.as_deref() {
        Some("401") => OnUnauthenticated::Status401,
        Some("redirect") if pages_enabled => OnUnauthenticated::Redirect,
        Some("redirect") => {
            return Err(invalid(
                "route.on_unauthenticated",
                "\"redirect\" needs the built-in pages: add [pages]",
            ));
        }
        Some(other) => {
            return Err(invalid(
                "route.on_unauthenticated",
                format!("\"{other}\" is not one of \"401\", \"redirect\""),
            ));
        }
        None if pages_enabled && !raw.prefix.starts_with("/api/") => OnUnauthenticated::Redirect,
        None => OnUnauthenticated::Status401,
    };
    Ok(RouteAccess {
        on_unauthenticated,
        ..access
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DefaultAuth, OnUnauthenticated, SignupMode};

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn route_rules_parse_and_default() {
        let c = Config::parse(
            "[pages]\n[[route]]\nprefix = \"/wiki/\"\nauth = \"required\"\nmethods = [\"get\", \"POST\"]\nallow_domains = [\"@Example.com\"]\nallow_groups = [\"ops\"]\n[[route]]\nprefix = \"/api/\"\nauth = \"required\"\n",
            "t",
        )
        .unwrap();
        let wiki = &c.routes[0].access;
        assert_eq!(wiki.allow_header.as_ref().unwrap(), "GET, POST, HEAD");
        assert_eq!(wiki.allow_domains, ["example.com"]);
        assert_eq!(wiki.on_unauthenticated, OnUnauthenticated::Redirect);
        assert_eq!(
            c.routes[1].access.on_unauthenticated,
            OnUnauthenticated::Status401
        );
        assert_eq!(c.access.default_auth, DefaultAuth::NotServed);
        assert_eq!(c.access.signup.mode, SignupMode::Open);
        // Without [pages], nothing redirects.
        let c = Config::parse("[[route]]\nprefix = \"/\"\nauth = \"required\"\n", "t").unwrap();
        assert_eq!(
            c.routes[0].access.on_unauthenticated,
            OnUnauthenticated::Status401
        );
    }

    #[test]
    fn bad_rules_name_their_key() {
        for (text, key) in [
            (
                "[[route]]\nprefix = \"/\"\nauth = \"required\"\nmethods = [\"GE T\"]\n",
                "route[0].methods",
            ),
            (
                "[[route]]\nprefix = \"/\"\nauth = \"required\"\nallow_groups = [\"Ops\"]\n",
                "route[0].allow_groups",
            ),
            (
                "[[route]]\nprefix = \"/\"\nauth = \"none\"\nallow_emails = [\"a@b.co\"]\n",
                "route[0].auth",
            ),
            (
                "[[route]]\nprefix = \"/\"\nauth = \"required\"\non_unauthenticated = \"redirect\"\n",
                "route[0].on_unauthenticated",
            ),
            ("[signup]\nmode = \"domains\"\n", "signup.allowed_domains"),
            ("[signup]\nmode = \"invite-only\"\n", "signup.mode"),
            ("[server]\ndefault_auth = \"deny\"\n", "server.default_auth"),
            ("[pages]\nprefix = \"/api/x\"\n", "pages.prefix"),
        ] {
            let e = err(text);
            assert!(e.contains(key), "{text}: {e}");
        }
        let ok = Config::parse(
            "[signup]\nmode = \"domains\"\nallowed_domains = [\"corp.example\"]\n[server]\ndefault_auth = \"required\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(ok.access.signup.allowed_domains, ["corp.example"]);
        assert_eq!(ok.access.default_auth, DefaultAuth::Required);
    }
}
