//! Checks for `[[oidc]]` (OpenID Connect providers) and `[oauth]` (where the
//! callback sends the browser), and reading a provider's client secret from
//! its configured source.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawOAuth, RawOidc};
use super::values::duration_or;
use super::{ConfigError, PasswordSource, invalid};

/// Longest accepted `oauth.state_ttl`: a sign-in the user abandoned should
/// not stay redeemable for long.
const MAX_STATE_TTL: Duration = Duration::from_secs(3600);

/// One OpenID Connect provider.
#[derive(Debug, Clone)]
pub struct OidcProviderConfig {
    /// Path segment: `/api/v1/oauth/{name}/connect` and `/callback`.
    pub name: String,
    /// Issuer URL exactly as the provider writes it in its ID tokens.
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client (PKCE only, no client authentication).
    pub client_secret: Option<PasswordSource>,
    pub scopes: Vec<String>,
    pub redirect_url: String,
    /// PEM file of the CA(s) trusted for the provider instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Lower-cased email domains allowed to sign in; empty = any.
    pub allowed_domains: Vec<String>,
    /// Whether a first sign-in without a matching account creates one.
    pub create_users: bool,
}

/// Redirect targets of the callback.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// `scheme://host[:port]` prepended to every redirect; `None` keeps the
    /// redirects relative (the frontend is served on Gatehouse's origin).
    pub frontend_url: Option<String>,
    pub success_path: String,
    pub new_user_path: String,
    pub error_path: String,
    /// How long a started sign-in (state, nonce, PKCE verifier) stays valid.
    pub state_ttl: Duration,
}

impl OidcProviderConfig {
    /// Reads the client secret from its source (at start-up and in
    /// `check-config`); the error names the key to fix.
    pub fn read_client_secret(&self) -> Result<Option<String>, ConfigError> {
        let Some(source) = &self.client_secret else {
            return Ok(None);
        };
        let secret = match source {
            PasswordSource::Inline(s) => s.clone(),
            PasswordSource::Env(var) => match std::env::var(var) {
                Ok(s) if !s.is_empty() => s,
                _ => {
                    return Err(invalid(
                        "oidc.client_secret_env",
                        format!(
                            "environment variable {var} (provider \"{}\") is not set or empty",
                            self.name
                        ),
                    ));
                }
            },
            PasswordSource::File(path) => {
                let path = credential_path(path);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        "oidc.client_secret_file",
                        format!(
                            "cannot read {} (provider \"{}\"): {e}",
                            path.display(),
                            self.name
                        ),
                    )
                })?;
                let secret = text.trim_end_matches(['\r', '\n']).to_string();
                if secret.is_empty() {
                    return Err(invalid(
                        "oidc.client_secret_file",
                        format!("{} is empty (provider \"{}\")", path.display(), self.name),
                    ));
                }
                secret
            }
        };
        Ok(Some(secret))
    }
}

/// Relative secret files are looked up in systemd's `$CREDENTIALS_DIRECTORY`.
fn credential_path(path: &std::path::Path) -> PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if path.is_relative() => PathBuf::from(dir).join(path),
        _ => path.to_path_buf(),
    }
}

/// Whether `path` is a same-origin relative path that is safe to redirect
/// to: one leading `/` (not `//`, which browsers read as another host), no
/// backslash (read as `/`), no control characters or spaces, and none of
/// that hidden behind percent-encoding. Bounded length.
pub fn is_local_path(path: &str) -> bool {
    fn plain(p: &str) -> bool {
        p.starts_with('/')
            && !p.starts_with("//")
            && !p.contains('\\')
            && !p
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80)
    }
    if path.is_empty() || path.len() > 2048 || !plain(path) {
        return false;
    }
    // Decode repeatedly: `/%2F%2Fevil` or `/%252F…` must not become `//evil`
    // in some later hop.
    let mut current = path.to_string();
    for _ in 0..3 {
        let decoded = percent_decode(&current);
        if decoded == current {
            return true;
        }
        let safe = decoded.starts_with('/')
            && !decoded.starts_with("//")
            && !decoded.contains('\\')
            && !decoded.chars().any(char::is_control);
        if !safe {
            return false;
        }
        current = decoded;
    }
    false
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn check_oidc(raw: Vec<RawOidc>) -> Result<Vec<OidcProviderConfig>, ConfigError> {
    let mut providers: Vec<OidcProviderConfig> = Vec::with_capacity(raw.len());
    for entry in raw {
        let provider = check_provider(entry)?;
        if providers.iter().any(|p| p.name == provider.name) {
            return Err(invalid(
                "oidc.name",
                format!("\"{}\" is used by two providers", provider.name),
            ));
        }
        providers.push(provider);
    }
    Ok(providers)
}

fn check_provider(raw: RawOidc) -> Result<OidcProviderConfig, ConfigError> {
    let name = raw
        .name
        .ok_or_else(|| invalid("oidc.name", "is required for every [[oidc]] provider"))?;
    let name_ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(invalid(
            "oidc.name",
            format!("\"{name}\" must be 1-32 characters of a-z, 0-9, - and _"),
        ));
    }
    let issuer = raw
        .issuer
        .ok_or_else(|| invalid("oidc.issuer", format!("is required (provider \"{name}\")")))?;
    check_https_url("oidc.issuer", &issuer, &name)?;
    if issuer.contains(['?', '#']) {
        return Err(invalid(
            "oidc.issuer",
            format!("\"{issuer}\" must not have a query or fragment (provider \"{name}\")"),
        ));
    }
    let client_id = raw
        .client_id
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                "oidc.client_id",
                format!("is required (provider \"{name}\")"),
            )
        })?;
    let client_secret = match (
        raw.client_secret,
        raw.client_secret_env,
        raw.client_secret_file,
    ) {
        (None, None, None) => None,
        (Some(s), None, None) if !s.is_empty() => Some(PasswordSource::Inline(s)),
        (None, Some(var), None) if !var.is_empty() => Some(PasswordSource::Env(var)),
        (None, None, Some(path)) if !path.as_os_str().is_empty() => {
            Some(PasswordSource::File(path))
        }
        (Some(_), None, None) => {
            return Err(invalid("oidc.client_secret", "must not be empty"));
        }
        (None, Some(_), None) => {
            return Err(invalid("oidc.client_secret_env", "must name a variable"));
        }
        (None, None, Some(_)) => {
            return Err(invalid("oidc.client_secret_file", "must name a file"));
        }
        _ => {
            return Err(invalid(
                "oidc.client_secret",
                format!(
                    "set only one of client_secret, client_secret_env and client_secret_file (provider \"{name}\")"
                ),
            ));
        }
    };
    let scopes = raw
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(invalid(
            "oidc.scopes",
            format!("must include \"openid\" (provider \"{name}\")"),
        ));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.is_empty() || s.bytes().any(|b| !(0x21..0x7f).contains(&b) || b == b'"'))
    {
        return Err(invalid(
            "oidc.scopes",
            format!("\"{bad}\" is not a scope token (provider \"{name}\")"),
        ));
    }
    let redirect_url = raw.redirect_url.ok_or_else(|| {
        invalid(
            "oidc.redirect_url",
            format!(
                "is required (provider \"{name}\"), e.g. \"https://app.example.com/api/v1/oauth/{name}/callback\""
            ),
        )
    })?;
    check_http_url("oidc.redirect_url", &redirect_url, &name)?;
    let expected_path = format!("/api/v1/oauth/{name}/callback");
    let path_ok = redirect_url
        .parse::<http::Uri>()
        .ok()
        .is_some_and(|u| u.path() == expected_path && u.query().is_none());
    if !path_ok {
        return Err(invalid(
            "oidc.redirect_url",
            format!("must end with the path {expected_path} (provider \"{name}\")"),
        ));
    }
    let mut allowed_domains = Vec::new();
    for domain in raw.allowed_domains.unwrap_or_default() {
        let domain = domain.trim().trim_start_matches('@').to_ascii_lowercase();
        if domain.is_empty() || domain.contains(['@', '/', ' ']) || !domain.contains('.') {
            return Err(invalid(
                "oidc.allowed_domains",
                format!("\"{domain}\" is not a domain like \"example.com\" (provider \"{name}\")"),
            ));
        }
        allowed_domains.push(domain);
    }
    if raw
        .ca_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(invalid("oidc.ca_file", "must name a file"));
    }
    Ok(OidcProviderConfig {
        name,
        issuer,
        client_id,
        client_secret,
        scopes,
        redirect_url,
        ca_file: raw.ca_file,
        allowed_domains,
        create_users: raw.create_users.unwrap_or(true),
    })
}

fn check_https_url(key: &'static str, url: &str, name: &str) -> Result<(), ConfigError> {
    let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
        u.scheme_str() == Some("https") && u.host().is_some_and(|h| !h.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("\"{url}\" must be an https:// URL (provider \"{name}\")"),
        ))
    }
}

fn check_http_url(key: &'static str, url: &str, name: &str) -> Result<(), ConfigError> {
    let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
        matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some_and(|h| !h.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("\"{url}\" must be an absolute http(s) URL (provider \"{name}\")"),
        ))
    }
}

pub(super) fn check_oauth(raw: RawOAuth) -> Result<OAuthConfig, ConfigError> {
    let frontend_url = match raw.frontend_url {
        None => None,
        Some(url) => {
            let trimmed = url.trim_end_matches('/').to_string();
            let ok = trimmed.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("https" | "http"))
                    && u.host().is_some_and(|h| !h.is_empty())
                    && u.path() == "/"
                    && u.query().is_none()
            }) && !trimmed.ends_with(':');
            if !ok {
                return Err(invalid(
                    "oauth.frontend_url",
                    format!(
                        "\"{url}\" must be an origin like \"https://app.example.com\" (no path)"
                    ),
                ));
            }
            Some(trimmed)
        }
    };
    let path = |key: &'static str, value: Option<String>, default: &str| {
        let value = value.unwrap_or_else(|| default.to_string());
        if is_local_path(&value) {
            Ok(value)
        } else {
            Err(invalid(
                key,
                format!("\"{value}\" must be a path starting with a single /"),
            ))
        }
    };
    let state_ttl = duration_or(raw.state_ttl, Duration::from_secs(600));
    if state_ttl > MAX_STATE_TTL {
        return Err(invalid("oauth.state_ttl", "must be at most 1h"));
    }
    Ok(OAuthConfig {
        frontend_url,
        success_path: path("oauth.success_path", raw.success_path, "/app/today")?,
        new_user_path: path(
            "oauth.new_user_path",
            raw.new_user_path,
            "/onboarding/welcome",
        )?,
        error_path: path("oauth.error_path", raw.error_path, "/signin")?,
        state_ttl,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    const GOOD: &str = r#"
[[oidc]]
name = "google"
issuer = "https://accounts.google.com"
client_id = "abc"
client_secret_env = "GOOGLE_SECRET"
redirect_url = "https://app.example.com/api/v1/oauth/google/callback"
allowed_domains = ["Example.com"]
"#;

    #[test]
    fn a_provider_and_defaults() {
        let c = Config::parse(GOOD, "t").unwrap();
        let p = &c.oidc[0];
        assert_eq!(p.name, "google");
        assert_eq!(p.scopes, ["openid", "email", "profile"]);
        assert_eq!(p.allowed_domains, ["example.com"]);
        assert!(p.create_users);
        assert_eq!(c.oauth.success_path, "/app/today");
        assert_eq!(c.oauth.new_user_path, "/onboarding/welcome");
        assert_eq!(c.oauth.error_path, "/signin");
        assert!(c.oauth.frontend_url.is_none());
        assert!(Config::parse("", "t").unwrap().oidc.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        assert!(
            err(&GOOD.replace("name = \"google\"", "name = \"Goo gle\"")).contains("oidc.name")
        );
        assert!(
            err(&GOOD.replace("https://accounts.google.com", "http://accounts.google.com"))
                .contains("oidc.issuer")
        );
        assert!(err(&GOOD.replace("client_id = \"abc\"", "")).contains("oidc.client_id"));
        assert!(
            err(&GOOD.replace(
                "client_id = \"abc\"",
                "client_id = \"abc\"\nclient_secret = \"x\""
            ))
            .contains("oidc.client_secret")
        );
        assert!(
            err(&GOOD.replace("/api/v1/oauth/google/callback", "/callback"))
                .contains("oidc.redirect_url")
        );
        assert!(err(&format!("{GOOD}scopes = [\"email\"]\n")).contains("oidc.scopes"));
        assert!(err(&format!("{GOOD}{GOOD}")).contains("used by two providers"));
        assert!(err(&format!("{GOOD}bogus = 1\n")).contains("bogus"));
        assert!(
            err("[oauth]\nfrontend_url = \"https://app.example.com/x\"\n")
                .contains("oauth.frontend_url")
        );
        assert!(err("[oauth]\nsuccess_path = \"//evil.com\"\n").contains("oauth.success_path"));
        assert!(err("[oauth]\nerror_path = \"https://evil.com\"\n").contains("oauth.error_path"));
        assert!(err("[oauth]\nstate_ttl = \"2h\"\n").contains("oauth.state_ttl"));
        let ok = Config::parse(
            "[oauth]\nfrontend_url = \"https://app.example.com/\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            ok.oauth.frontend_url.as_deref(),
            Some("https://app.example.com")
        );
    }

    #[test]
    fn secret_sources() {
        let c = Config::parse(GOOD, "t").unwrap();
        let e = c.oidc[0].read_client_secret().unwrap_err().to_string();
        assert!(e.contains("oidc.client_secret_env"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let text = GOOD.replace(
            "client_secret_env = \"GOOGLE_SECRET\"",
            &format!("client_secret_file = {:?}", file.display().to_string()),
        );
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(
            c.oidc[0].read_client_secret().unwrap().as_deref(),
            Some("s3cret")
        );
        let missing = text.replace("secret\"", "nope\"");
        let c = Config::parse(&missing, "t").unwrap();
        assert!(
            c.oidc[0]
                .read_client_secret()
                .unwrap_err()
                .to_string()
                .contains("oidc.client_secret_file")
        );
    }
}
