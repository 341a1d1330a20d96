//! Checks for the `[tls.acme]` section: names, account contact, directory,
//! challenge type, the plain-HTTP listener and the renewal margin. ACME
//! excludes `tls.cert`/`tls.key`/`tls.self_signed`.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::RawAcme;
use super::values::duration_or;
use super::*;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Checks `[tls.acme]`; `other_source` says whether `[tls]` also names
/// certificate files or `self_signed = true`.
pub(super) fn check_acme(raw: RawAcme, other_source: bool) -> Result<CertSource, ConfigError> {
    if other_source {
        return Err(invalid(
            "tls.acme",
            "excludes tls.cert, tls.key and tls.self_signed: either Gatehouse orders its certificate over ACME, or you give it one; remove one of them",
        ));
    }
    let domains = check_domains(raw.domains.unwrap_or_default())?;
    let email = match raw.email {
        None => None,
        Some(e) => {
            let e = e.trim().trim_start_matches("mailto:").to_string();
            let valid = e.split_once('@').is_some_and(|(local, host)| {
                !local.is_empty() && host.contains('.') && !host.starts_with('.')
            }) && !e.contains([' ', ',', '<', '>', '\r', '\n']);
            if !valid {
                return Err(invalid(
                    "tls.acme.email",
                    format!("\"{e}\" is not an address like \"ops@example.com\""),
                ));
            }
            Some(e)
        }
    };
    let directory = raw
        .directory
        .unwrap_or_else(|| LETS_ENCRYPT_DIRECTORY.to_string());
    let valid_directory = directory
        .parse::<http::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("https") && u.authority().is_some());
    if !valid_directory {
        return Err(invalid(
            "tls.acme.directory",
            format!("\"{directory}\" is not an https:// URL like \"{LETS_ENCRYPT_DIRECTORY}\""),
        ));
    }
    let challenge = match raw.challenge.as_deref().unwrap_or("tls-alpn-01") {
        "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
        "http-01" => AcmeChallenge::Http01,
        other => {
            return Err(invalid(
                "tls.acme.challenge",
                format!("\"{other}\" is not one of \"tls-alpn-01\", \"http-01\""),
            ));
        }
    };
    let http_listen = match (raw.http_listen.as_deref(), challenge) {
        (None, AcmeChallenge::Http01) => Some(SocketAddr::from(([0, 0, 0, 0], 80))),
        (None | Some("off"), AcmeChallenge::TlsAlpn01) => None,
        (Some("off"), AcmeChallenge::Http01) => {
            return Err(invalid(
                "tls.acme.http_listen",
                "cannot be \"off\" with challenge = \"http-01\": the CA checks the names on it",
            ));
        }
        (Some(text), _) => Some(text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "tls.acme.http_listen",
                format!("\"{text}\" is not an address like \"0.0.0.0:80\""),
            )
        })?),
    };
    if let Some(path) = &raw.ca_file
        && path.as_os_str().is_empty()
    {
        return Err(invalid("tls.acme.ca_file", "must not be empty"));
    }
    let renew_before = duration_or(raw.renew_before, Duration::from_secs(30 * 86_400));
    Ok(CertSource::Acme(AcmeConfig {
        domains,
        email,
        directory,
        challenge,
        http_listen,
        ca_file: raw.ca_file,
        renew_before,
    }))
}

/// `tls.acme.http_listen` and `server.listen` cannot share an address.
pub(super) fn check_listeners(
    tls: Option<&TlsConfig>,
    server: &ServerConfig,
) -> Result<(), ConfigError> {
    if let Some(TlsConfig {
        source: CertSource::Acme(acme),
        ..
    }) = tls
        && let Some(http) = acme.http_listen
        && http.port() == server.listen.port()
        && (http.ip() == server.listen.ip()
            || http.ip().is_unspecified()
            || server.listen.ip().is_unspecified())
    {
        return Err(invalid(
            "tls.acme.http_listen",
            format!(
                "{http} overlaps server.listen ({}); plain HTTP needs its own port, usually 80",
                server.listen
            ),
        ));
    }
    Ok(())
}

/// Lower-cases the names and refuses what an HTTP-01/TLS-ALPN-01 order
/// cannot cover: wildcards, IP addresses, malformed or repeated names.
fn check_domains(raw: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            "tls.acme.domains",
            "needs at least one DNS name, as in [\"app.example.com\"]",
        ));
    }
    if raw.len() > 100 {
        return Err(invalid(
            "tls.acme.domains",
            "lists more than the 100 names one certificate may carry",
        ));
    }
    let mut domains: Vec<String> = Vec::with_capacity(raw.len());
    for name in raw {
        let lower = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if lower.starts_with("*.") {
            return Err(invalid(
                "tls.acme.domains",
                format!(
                    "\"{name}\": wildcard names need the DNS-01 challenge, which Gatehouse does not do; list each name"
                ),
            ));
        }
        if lower.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid(
                "tls.acme.domains",
                format!("\"{name}\" is an IP address; list DNS names"),
            ));
        }
        if !is_dns_name(&lower) {
            return Err(invalid(
                "tls.acme.domains",
                format!("\"{name}\" is not a DNS name like \"app.example.com\""),
            ));
        }
        if domains.contains(&lower) {
            return Err(invalid(
                "tls.acme.domains",
                format!("\"{lower}\" is listed twice"),
            ));
        }
        domains.push(lower);
    }
    Ok(domains)
}

fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tls: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("[tls]\n{tls}"), "t.toml")
    }

    fn acme(tls: &str) -> AcmeConfig {
        match parse(tls).unwrap().tls.unwrap().source {
            CertSource::Acme(a) => a,
            other => panic!("not acme: {other:?}"),
        }
    }

    fn err(tls: &str) -> String {
        parse(tls).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_lets_encrypt_tls_alpn_and_30_days() {
        let a = acme("[tls.acme]\ndomains = [\"App.Example.com\"]\n");
        assert_eq!(a.domains, ["app.example.com"]);
        assert_eq!(a.directory, LETS_ENCRYPT_DIRECTORY);
        assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(a.http_listen, None);
        assert_eq!(a.renew_before, Duration::from_secs(30 * 86_400));
        assert_eq!(a.email, None);
    }

    #[test]
    fn every_key_is_read() {
        let a = acme(
            "[tls.acme]\ndomains = [\"a.example.com\", \"b.example.com\"]\nemail = \"ops@example.com\"\n\
             directory = \"https://127.0.0.1:14000/dir\"\nchallenge = \"http-01\"\n\
             http_listen = \"127.0.0.1:8080\"\nca_file = \"/etc/ca.pem\"\nrenew_before = \"10m\"\n",
        );
        assert_eq!(a.domains, ["a.example.com", "b.example.com"]);
        assert_eq!(a.email.as_deref(), Some("ops@example.com"));
        assert_eq!(a.directory, "https://127.0.0.1:14000/dir");
        assert_eq!(a.challenge, AcmeChallenge::Http01);
        assert_eq!(a.http_listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(
            a.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(a.renew_before, Duration::from_secs(600));
    }

    #[test]
    fn http_01_listens_on_port_80_unless_told_otherwise() {
        let a = acme("[tls.acme]\ndomains = [\"a.example.com\"]\nchallenge = \"http-01\"\n");
        assert_eq!(a.http_listen, Some("0.0.0.0:80".parse().unwrap()));
        let e = err(
            "[tls.acme]\ndomains = [\"a.example.com\"]\nchallenge = \"http-01\"\nhttp_listen = \"off\"\n",
        );
        assert!(e.contains("tls.acme.http_listen"), "{e}");
    }

    #[test]
    fn acme_excludes_files_and_self_signed() {
        for other in [
            "cert = \"c.pem\"\nkey = \"k.pem\"\n",
            "cert = \"c.pem\"\n",
            "self_signed = true\n",
        ] {
            let e = err(&format!(
                "{other}[tls.acme]\ndomains = [\"a.example.com\"]\n"
            ));
            assert!(e.contains("tls.acme") && e.contains("excludes"), "{e}");
        }
        // self_signed = false says nothing against ACME.
        acme("self_signed = false\n[tls.acme]\ndomains = [\"a.example.com\"]\n");
        // Without [tls.acme] the file pair still works.
        let c = parse("cert = \"c.pem\"\nkey = \"k.pem\"\n").unwrap();
        assert!(matches!(c.tls.unwrap().source, CertSource::Files { .. }));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[tls.acme]\n", "tls.acme.domains"),
            ("[tls.acme]\ndomains = []\n", "tls.acme.domains"),
            ("[tls.acme]\ndomains = [\"*.example.com\"]\n", "DNS-01"),
            ("[tls.acme]\ndomains = [\"127.0.0.1\"]\n", "IP address"),
            ("[tls.acme]\ndomains = [\"a b.com\"]\n", "not a DNS name"),
            ("[tls.acme]\ndomains = [\"a.com\", \"A.com\"]\n", "twice"),
            (
                "[tls.acme]\ndomains = [\"a.com\"]\nemail = \"nobody\"\n",
                "tls.acme.email",
            ),
            (
                "[tls.acme]\ndomains = [\"a.com\"]\ndirectory = \"http://ca/dir\"\n",
                "tls.acme.directory",
            ),
            (
                "[tls.acme]\ndomains = [\"a.com\"]\nchallenge = \"dns-01\"\n",
                "tls.acme.challenge",
            ),
            (
                "[tls.acme]\ndomains = [\"a.com\"]\nhttp_listen = \"80\"\n",
                "tls.acme.http_listen",
            ),
            (
                "[tls.acme]\ndomains = [\"a.com\"]\nrenew_before = \"soon\"\n",
                "tls.acme.renew_before",
            ),
            (
                "[tls.acme]\ndomains = [\"a.com\"]\nrenew = \"1d\"\n",
                "renew",
            ),
            (
                "[tls.acme]\ndomains = [\"a.com\"]\nhttp_listen = \"0.0.0.0:8443\"\n",
                "overlaps server.listen",
            ),
        ];
        for (text, expected) in cases {
            let e = err(text);
            assert!(e.contains(expected), "{text:?} gave {e}");
        }
    }
}
