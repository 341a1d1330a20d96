//! What ACME keeps in the store directory (`<data dir>/acme/`), and the pure
//! decision of whether the certificate there can be served or must be
//! (re)ordered.
//!
//! - `certificate.pem`: the chain followed by its private key, one file
//!   written atomically (temporary file, then rename), mode 0600, so a
//!   reader never sees a chain with the wrong key;
//! - `account-<hash of the directory URL>.json`: the ACME account's
//!   credentials (its private key included), mode 0600, one per CA;
//! - `order.lock`: held (advisory `flock`) by the instance that is ordering,
//!   so several instances sharing the directory order once between them;
//! - `challenges/`: the answers of the order in progress (HTTP-01 key
//!   authorisations, TLS-ALPN-01 validation certificates), so the instances
//!   that are not ordering can answer the CA too (it may reach any of them).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

use super::AcmeError;
use crate::config::show_duration;

/// The ACME files of one store directory.
#[derive(Debug, Clone)]
pub struct AcmeDir {
    dir: PathBuf,
}

/// A certificate read from disk, with what the renewal logic needs.
#[derive(Debug, Clone)]
pub struct StoredCert {
    pub key: Arc<CertifiedKey>,
    /// DNS names in the leaf's subjectAltName, lower-case.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// SHA-256 of the leaf, to tell whether the file changed.
    pub fingerprint: [u8; 32],
}

/// What to do with the certificate on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Serve it; start renewing at `renew_at`.
    Serve { renew_at: SystemTime },
    /// Order a new one, for this reason (a log line).
    Order(String),
}

/// The held order lock; dropping it releases the lock.
#[derive(Debug)]
pub struct OrderLock {
    _file: File,
}

impl AcmeDir {
    /// `data_dir/acme`, created (mode 0700) on first use.
    pub fn new(data_dir: &Path) -> AcmeDir {
        AcmeDir {
            dir: data_dir.join("acme"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join("certificate.pem")
    }

    fn account_path(&self, directory_url: &str) -> PathBuf {
        let hash = sha2::Sha256::digest(directory_url.as_bytes());
        let short: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("account-{short}.json"))
    }

    fn ensure_dir(&self) -> Result<(), AcmeError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| AcmeError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    /// The stored certificate, `None` if there is none yet. A file that
    /// does not parse is an error (the caller orders a new one).
    pub fn load_certificate(
        &self,
        provider: &CryptoProvider,
    ) -> Result<Option<StoredCert>, AcmeError> {
        let path = self.certificate_path();
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(AcmeError::Io { path, source }),
        };
        parse_certificate(&pem, provider)
            .map(Some)
            .map_err(|message| AcmeError::BadCertificate { path, message })
    }

    /// Checks the chain and key belong together, then stores them.
    pub fn save_certificate(
        &self,
        chain_pem: &str,
        key_pem: &str,
        provider: &CryptoProvider,
    ) -> Result<StoredCert, AcmeError> {
        let mut combined = String::with_capacity(chain_pem.len() + key_pem.len() + 1);
        combined.push_str(chain_pem.trim_end());
        combined.push('\n');
        combined.push_str(key_pem);
        let path = self.certificate_path();
        let stored = parse_certificate(combined.as_bytes(), provider).map_err(|message| {
            AcmeError::BadCertificate {
                path: path.clone(),
                message,
            }
        })?;
        self.write_atomically(&path, combined.as_bytes())?;
        Ok(stored)
    }

    /// The account credentials for `directory_url`, if stored.
    pub fn load_account(
        &self,
        directory_url: &str,
    ) -> Result<Option<instant_acme::AccountCredentials>, AcmeError> {
        let path = self.account_path(directory_url);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(AcmeError::Io { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| AcmeError::BadCertificate {
                path,
                message: format!("account file does not parse: {e}"),
            })
    }

    pub fn save_account(
        &self,
        directory_url: &str,
        credentials: &instant_acme::AccountCredentials,
    ) -> Result<(), AcmeError> {
        let path = self.account_path(directory_url);
        let json = serde_json::to_vec(credentials).map_err(|e| AcmeError::BadCertificate {
            path: path.clone(),
            message: format!("cannot serialise the account: {e}"),
        })?;
        self.write_atomically(&path, &json)
    }

    /// Takes the order lock without waiting; `None` if another process
    /// (or another start of this one) holds it.
    pub fn try_lock(&self) -> Result<Option<OrderLock>, AcmeError> {
        self.ensure_dir()?;
        let path = self.dir.join("order.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| AcmeError::Io {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(OrderLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(AcmeError::Io { path, source }),
        }
    }

    fn challenges_dir(&self) -> PathBuf {
        self.dir.join("challenges")
    }

    /// Shares one challenge answer with the other instances. `name` is a
    /// token or DNS name (checked: it becomes a file name).
    pub fn publish_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        contents: &[u8],
    ) -> Result<(), AcmeError> {
        if !is_safe_file_name(name) {
            return Err(AcmeError::Order(format!(
                "the CA sent a challenge name unfit for a file: {name:?}"
            )));
        }
        let dir = self.challenges_dir();
        self.ensure_dir()?;
        std::fs::create_dir_all(&dir).map_err(|source| AcmeError::Io {
            path: dir.clone(),
            source,
        })?;
        self.write_atomically(&dir.join(format!("{}{name}", kind.prefix())), contents)
    }

    /// The challenge answers another instance published (bounded in count
    /// and size).
    pub fn read_challenges(&self) -> Vec<(ChallengeKind, String, Vec<u8>)> {
        let Ok(entries) = std::fs::read_dir(self.challenges_dir()) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten().take(MAX_SHARED_CHALLENGES) {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some((kind, name)) = [ChallengeKind::Http01, ChallengeKind::TlsAlpn01]
                .into_iter()
                .find_map(|k| {
                    file_name
                        .strip_prefix(k.prefix())
                        .map(|n| (k, n.to_string()))
                })
            else {
                continue;
            };
            if name.ends_with(".tmp") || !is_safe_file_name(&name) {
                continue;
            }
            let small = entry
                .metadata()
                .is_ok_and(|m| m.len() <= MAX_CHALLENGE_BYTES);
            if let (true, Ok(contents)) = (small, std::fs::read(entry.path())) {
                found.push((kind, name, contents));
            }
        }
        found
    }

    /// Removes the shared answers (the order is over).
    pub fn clear_challenges(&self) {
        let _ = std::fs::remove_dir_all(self.challenges_dir());
    }

    fn write_atomically(&self, path: &Path, contents: &[u8]) -> Result<(), AcmeError> {
        self.ensure_dir()?;
        crate::private_file::write_atomically(path, contents).map_err(|source| AcmeError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Most shared challenge files read; an order has one per name.
const MAX_SHARED_CHALLENGES: usize = 128;
/// Largest shared challenge file read (a validation certificate and key).
const MAX_CHALLENGE_BYTES: u64 = 16 * 1024;

/// Which challenge a shared answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    Http01,
    TlsAlpn01,
}

impl ChallengeKind {
    fn prefix(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01.",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01.",
        }
    }
}

/// Tokens are base64url and names are DNS names: nothing else is written.
fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Parses a PEM chain plus key into a servable certificate.
pub fn parse_certificate(pem: &[u8], provider: &CryptoProvider) -> Result<StoredCert, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    let leaf = chain.first().ok_or("no certificate in the file")?.clone();
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("private key PEM: {e}"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    let validity = parsed.validity();
    let to_time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let (not_before, not_after) = (to_time(validity.not_before), to_time(validity.not_after));
    let fingerprint: [u8; 32] = sha2::Sha256::digest(leaf.as_ref()).into();
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("certificate and key do not belong together: {e}"))?;
    Ok(StoredCert {
        key: Arc::new(key),
        names,
        not_before,
        not_after,
        fingerprint,
    })
}

/// Whether `stored` can be served for `domains`, and until when.
///
/// `renew_before` is clamped to half the certificate's lifetime, so a CA
/// issuing shorter certificates than the margin (a test CA, or a future
/// short-lived profile) does not make every fresh certificate look due.
pub fn plan(
    stored: Option<&StoredCert>,
    domains: &[String],
    renew_before: Duration,
    now: SystemTime,
) -> Plan {
    let Some(cert) = stored else {
        return Plan::Order("no certificate yet".into());
    };
    if let Some(missing) = domains.iter().find(|d| !cert.names.contains(d)) {
        return Plan::Order(format!("the stored certificate does not cover {missing}"));
    }
    let lifetime = cert
        .not_after
        .duration_since(cert.not_before)
        .unwrap_or_default();
    let margin = renew_before.min(lifetime / 2);
    let renew_at = cert
        .not_after
        .checked_sub(margin)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if now >= renew_at {
        let left = cert.not_after.duration_since(now).unwrap_or_default();
        return Plan::Order(if left.is_zero() {
            "the stored certificate has expired".into()
        } else {
            format!(
                "the stored certificate expires in {} (renew_before {})",
                show_duration(left),
                show_duration(margin)
            )
        });
    }
    Plan::Serve { renew_at }
}

/// Seconds since the Unix epoch, for metrics and logs.
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    /// A self-signed certificate for `names`, valid from `from` for `days`.
    fn issue(names: &[&str], from_days_ago: i64, days: i64) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let start = unix_seconds(SystemTime::now()) - from_days_ago * 86_400;
        params.not_before = offset(start);
        params.not_after = offset(start + days * 86_400);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn offset(unix: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn domains(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn stored_certificate_survives_a_reload_with_owner_only_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AcmeDir::new(tmp.path());
        assert!(dir.load_certificate(&provider()).unwrap().is_none());
        let (chain, key) = issue(&["a.example.com"], 1, 90);
        let saved = dir.save_certificate(&chain, &key, &provider()).unwrap();
        let loaded = dir.load_certificate(&provider()).unwrap().unwrap();
        assert_eq!(saved.fingerprint, loaded.fingerprint);
        assert_eq!(loaded.names, ["a.example.com"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.certificate_path()), 0o600);
        assert_eq!(mode(dir.path()), 0o700);
    }

    #[test]
    fn a_key_that_does_not_fit_is_refused_and_the_old_file_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AcmeDir::new(tmp.path());
        let (chain, key) = issue(&["a.example.com"], 1, 90);
        dir.save_certificate(&chain, &key, &provider()).unwrap();
        let before = std::fs::read(dir.certificate_path()).unwrap();
        let (other_chain, _) = issue(&["a.example.com"], 1, 90);
        let e = dir
            .save_certificate(&other_chain, &key, &provider())
            .unwrap_err();
        assert!(e.to_string().contains("do not belong together"), "{e}");
        assert_eq!(before, std::fs::read(dir.certificate_path()).unwrap());
        std::fs::write(dir.certificate_path(), "garbage").unwrap();
        assert!(dir.load_certificate(&provider()).is_err());
    }

    #[test]
    fn a_valid_certificate_is_reused_and_renewed_at_the_margin() {
        let (chain, key) = issue(&["a.example.com", "b.example.com"], 10, 90);
        let cert = parse_certificate(format!("{chain}{key}").as_bytes(), &provider()).unwrap();
        let now = SystemTime::now();
        let want = domains(&["a.example.com", "b.example.com"]);
        let thirty = Duration::from_secs(30 * 86_400);
        let Plan::Serve { renew_at } = plan(Some(&cert), &want, thirty, now) else {
            panic!("a fresh certificate must be served");
        };
        assert_eq!(renew_at, cert.not_after - thirty);
        // 61 days later it is inside the 30-day margin.
        let later = now + Duration::from_secs(61 * 86_400);
        assert!(
            matches!(plan(Some(&cert), &want, thirty, later), Plan::Order(r) if r.contains("expires in") && r.contains("(renew_before 30days)"))
        );
        let expired = now + Duration::from_secs(81 * 86_400);
        assert!(
            matches!(plan(Some(&cert), &want, thirty, expired), Plan::Order(r) if r.contains("expired"))
        );
    }

    #[test]
    fn missing_certificate_or_new_name_orders() {
        let want = domains(&["a.example.com", "c.example.com"]);
        let day = Duration::from_secs(86_400);
        assert!(
            matches!(plan(None, &want, day, SystemTime::now()), Plan::Order(r) if r.contains("no certificate"))
        );
        let (chain, key) = issue(&["a.example.com"], 0, 90);
        let cert = parse_certificate(format!("{chain}{key}").as_bytes(), &provider()).unwrap();
        assert!(
            matches!(plan(Some(&cert), &want, day, SystemTime::now()), Plan::Order(r) if r.contains("c.example.com"))
        );
    }

    #[test]
    fn a_margin_longer_than_the_lifetime_is_halved() {
        // A 2-day certificate with renew_before = 30 days: renew after 1 day,
        // not at once (which would order on every loop).
        let (chain, key) = issue(&["a.example.com"], 0, 2);
        let cert = parse_certificate(format!("{chain}{key}").as_bytes(), &provider()).unwrap();
        let want = domains(&["a.example.com"]);
        let plan = plan(
            Some(&cert),
            &want,
            Duration::from_secs(30 * 86_400),
            SystemTime::now(),
        );
        assert_eq!(
            plan,
            Plan::Serve {
                renew_at: cert.not_after - Duration::from_secs(86_400)
            }
        );
    }

    #[test]
    fn the_order_lock_is_exclusive_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AcmeDir::new(tmp.path());
        let other = AcmeDir::new(tmp.path());
        let held = dir.try_lock().unwrap().expect("first lock");
        assert!(other.try_lock().unwrap().is_none());
        drop(held);
        assert!(other.try_lock().unwrap().is_some());
    }

    #[test]
    fn challenges_are_shared_through_the_directory_and_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let (ordering, waiting) = (AcmeDir::new(tmp.path()), AcmeDir::new(tmp.path()));
        assert!(waiting.read_challenges().is_empty());
        ordering
            .publish_challenge(ChallengeKind::Http01, "tok-EN_1", b"tok-EN_1.thumb")
            .unwrap();
        ordering
            .publish_challenge(ChallengeKind::TlsAlpn01, "a.example.com", b"pem")
            .unwrap();
        let mut seen = waiting.read_challenges();
        seen.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0],
            (
                ChallengeKind::TlsAlpn01,
                "a.example.com".into(),
                b"pem".to_vec()
            )
        );
        assert_eq!(
            seen[1],
            (
                ChallengeKind::Http01,
                "tok-EN_1".into(),
                b"tok-EN_1.thumb".to_vec()
            )
        );
        for bad in ["../x", "a/b", "", ".hidden"] {
            assert!(
                ordering
                    .publish_challenge(ChallengeKind::Http01, bad, b"x")
                    .is_err()
            );
        }
        ordering.clear_challenges();
        assert!(waiting.read_challenges().is_empty());
    }

    #[test]
    fn accounts_are_kept_per_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AcmeDir::new(tmp.path());
        assert_ne!(
            dir.account_path("https://a/dir"),
            dir.account_path("https://b/dir")
        );
        assert!(dir.load_account("https://a/dir").unwrap().is_none());
    }
}
