//! Start-up checks that need the file system but not the network: what
//! `serve` would refuse before binding a port, checked by `check-config`
//! too, so "ok" means `serve` will start (ports aside). Each failure names
//! the file, the line and the key to change.
//!
//! Checked: the configuration itself; the TLS certificate and key (or an
//! existing self-signed pair, or the CA trust of `[tls.acme]`); the mail
//! templates and transport (SMTP password source, CA file, `file`
//! directory); the store path's directory; each `https://` upstream's trust
//! roots (its `ca_file`, or the system's); the `[pages]` template files.
//! Not checked: binding the listeners and the admin socket, opening the
//! store (a running server holds its lock), reaching the upstream or SMTP
//! server (`check-mail` does that).

use std::path::Path;

use crate::config::{Config, ConfigError, at_key};

/// Reads, parses and checks the configuration at `path`, then runs the
/// start-up checks above.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    let config = Config::parse(&text, &origin)?;
    // The SMTP client's system-roots verifier needs the process's provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    check(&config, &text, &origin)?;
    Ok(config)
}

/// The start-up checks for a parsed `config` read from `text`.
pub fn check(config: &Config, text: &str, origin: &str) -> Result<(), ConfigError> {
    if let Some(tls) = &config.tls {
        crate::tls::check(&tls.source, &config.store.data_dir())
            .map_err(|e| at_key(text, origin, tls_key(&e, &tls.source), e.to_string()))?;
        if let crate::config::CertSource::Acme(acme) = &tls.source {
            crate::acme::check(acme).map_err(|e| {
                // The error names its key itself; say it once.
                let full = e.to_string();
                let message = full.strip_prefix("tls.acme.ca_file ").unwrap_or(&full);
                at_key(text, origin, "tls.acme.ca_file", message.to_string())
            })?;
        }
    }
    crate::mail::check_setup(&config.mail).map_err(|e| {
        let key = e.config_key();
        let full = e.to_string();
        // MailError names its key itself; say it once.
        let message = full
            .strip_prefix(&format!("config key `{key}`: "))
            .unwrap_or(&full)
            .to_string();
        at_key(text, origin, key, message)
    })?;
    check_store_dir(&config.store.path).map_err(|m| at_key(text, origin, "store.path", m))?;
    // OIDC client secrets are read too, so a missing file or variable shows now.
    for provider in &config.oidc {
        provider.read_client_secret()?;
    }
    // The pages' template files (layout, stylesheet, texts), as serve loads them.
    if let Some(pages) = &config.access.pages {
        crate::http::pages::html::Templates::load(pages.templates_dir.as_deref())
            .map_err(|e| at_key(text, origin, "pages.templates_dir", e.to_string()))?;
    }
    let upstreams = std::iter::once((crate::proxy::DEFAULT_UPSTREAM, &config.upstream))
        .chain(config.upstreams.iter().map(|(n, c)| (n.as_str(), c)));
    for (name, upstream) in upstreams {
        if let Some(tls) = &upstream.tls {
            crate::proxy::check_upstream_tls(name, tls)
                .map_err(|e| at_key(text, origin, e.config_key(), e.message()))?;
        }
    }
    Ok(())
}

/// Which `[tls]` key a TLS failure is about.
fn tls_key(e: &crate::tls::TlsError, source: &crate::config::CertSource) -> &'static str {
    use crate::config::CertSource;
    use crate::tls::TlsError;
    match (e, source) {
        (TlsError::Pem { path, .. }, CertSource::Files { key, .. }) if path == key => "tls.key",
        (_, CertSource::Files { .. }) => "tls.cert",
        (_, CertSource::SelfSigned) => "tls.self_signed",
        (_, CertSource::Acme(_)) => "tls.acme",
    }
}

/// The store file, if it exists, is a readable regular file; if not, its
/// directory exists or can be created (its nearest existing ancestor is a
/// directory).
fn check_store_dir(path: &Path) -> Result<(), String> {
    if path.exists() {
        if !path.is_file() {
            return Err(format!("{} is not a regular file", path.display()));
        }
        return std::fs::File::open(path)
            .map(|_| ())
            .map_err(|e| format!("cannot open {}: {e}", path.display()));
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        if d.exists() {
            return if d.is_dir() {
                Ok(())
            } else {
                Err(format!(
                    "{} is not a directory, so {} cannot be created",
                    d.display(),
                    path.display()
                ))
            };
        }
        dir = d.parent();
    }
    Ok(())
}
