//! `[mfa]`: second factors (TOTP and passkeys) — the TOTP issuer name, the
//! WebAuthn relying party (RP ID and allowed origins), and where the key
//! that seals TOTP secrets at rest lives.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// The raw `[mfa]` table.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMfa {
    pub(super) issuer: Option<String>,
    pub(super) rp_id: Option<String>,
    pub(super) rp_origins: Option<Vec<String>>,
    pub(super) key_file: Option<PathBuf>,
}

/// Checked `[mfa]`.
#[derive(Debug, Clone)]
pub struct MfaConfig {
    /// Shown by authenticator apps next to the account (`otpauth://` issuer).
    pub issuer: String,
    /// WebAuthn RP ID (a registrable domain); `None`: the request's host,
    /// with a start-up warning.
    pub rp_id: Option<String>,
    /// Origins (`https://host[:port]`) WebAuthn responses may come from;
    /// empty: the request's own origin.
    pub rp_origins: Vec<String>,
    /// The 32-byte key sealing TOTP secrets; `None`: `mfa.key` in the data
    /// directory, created (mode 0600) on first start.
    pub key_file: Option<PathBuf>,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            issuer: "Gatehouse".into(),
            rp_id: None,
            rp_origins: Vec::new(),
            key_file: None,
        }
    }
}

pub(super) fn check_mfa(raw: Option<RawMfa>) -> Result<MfaConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(MfaConfig::default());
    };
    let issuer = raw.issuer.unwrap_or_else(|| "Gatehouse".into());
    if issuer.is_empty() || issuer.contains(':') || issuer.len() > 100 {
        return Err(invalid(
            "mfa.issuer",
            "must be 1 to 100 characters without ':' (authenticator apps split on it)",
        ));
    }
    let rp_id = match raw.rp_id {
        Some(id) => {
            let id = id.to_ascii_lowercase();
            if id.is_empty() || id.contains(['/', ':', ' ']) {
                return Err(invalid(
                    "mfa.rp_id",
                    "must be a bare host name such as \"example.com\" (no scheme, port or path)",
                ));
            }
            Some(id)
        }
        None => None,
    };
    let mut rp_origins = Vec::new();
    for origin in raw.rp_origins.unwrap_or_default() {
        let lower = origin.trim_end_matches('/').to_ascii_lowercase();
        let ok = (lower.starts_with("https://") || lower.starts_with("http://"))
            && !lower
                .split_once("://")
                .is_some_and(|(_, rest)| rest.is_empty() || rest.contains('/'));
        if !ok {
            return Err(invalid(
                "mfa.rp_origins",
                format!("{origin:?} is not an origin like \"https://example.com\""),
            ));
        }
        rp_origins.push(lower);
    }
    Ok(MfaConfig {
        issuer,
        rp_id,
        rp_origins,
        key_file: raw.key_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let d = check_mfa(None).unwrap();
        assert_eq!(d.issuer, "Gatehouse");
        let raw = |issuer: &str| RawMfa {
            issuer: Some(issuer.into()),
            ..RawMfa::default()
        };
        assert!(check_mfa(Some(raw("Acme: prod"))).is_err());
        assert_eq!(check_mfa(Some(raw("Acme"))).unwrap().issuer, "Acme");
        let origins = RawMfa {
            rp_origins: Some(vec!["https://a.example/".into()]),
            ..RawMfa::default()
        };
        assert_eq!(
            check_mfa(Some(origins)).unwrap().rp_origins,
            vec!["https://a.example"]
        );
        let bad = RawMfa {
            rp_origins: Some(vec!["a.example".into()]),
            ..RawMfa::default()
        };
        assert!(check_mfa(Some(bad)).is_err());
    }
}
