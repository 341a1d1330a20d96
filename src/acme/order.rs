//! One ACME order, start to finish, with `instant-acme` doing the protocol
//! (JWS, nonces, polling): load or register the account, order the names,
//! publish and announce the challenges, finalise with our own CSR, download
//! and store the chain. Also the HTTPS client it talks through (ring, the
//! configured CA or the system roots) and the CA's `Retry-After`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::AcmeError;
use super::resolver::{AcmeResolver, tls_alpn_certificate};
use super::state::{AcmeDir, ChallengeKind, StoredCert};
use crate::config::{AcmeChallenge, AcmeConfig};

/// Connecting to the CA.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for other instances to pick up a shared challenge answer.
const SHARED_ANSWER_GRACE: Duration = Duration::from_millis(600);
/// How long the CA may take to validate, and to issue.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

/// The latest `Retry-After` the CA sent with an error or a 503.
#[derive(Debug, Default, Clone)]
pub struct RetryAfter(Arc<Mutex<Option<SystemTime>>>);

impl RetryAfter {
    /// Takes the recorded time, leaving none.
    pub fn take(&self) -> Option<SystemTime> {
        crate::sync::lock(&self.0).take()
    }

    fn record(&self, at: SystemTime) {
        *crate::sync::lock(&self.0) = Some(at);
    }
}

/// The HTTPS client for the CA: hyper with rustls (ring), trusting the
/// configured CA file or else the system roots; notes `Retry-After`.
struct CaClient {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: RetryAfter,
}

impl CaClient {
    fn new(
        cfg: &AcmeConfig,
        provider: Arc<CryptoProvider>,
        retry_after: RetryAfter,
    ) -> Result<CaClient, AcmeError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?;
        let tls = match &cfg.ca_file {
            Some(path) => {
                let ca_error = |message: String| AcmeError::CaFile {
                    path: path.clone(),
                    message,
                };
                let mut roots = rustls::RootCertStore::empty();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<_, _>>())
                    .map_err(|e| ca_error(e.to_string()))?;
                if certs.is_empty() {
                    return Err(ca_error("contains no certificate".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => {
                let mut roots = rustls::RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(AcmeError::CaFile {
                        path: "(system roots)".into(),
                        message: "no system CA certificates found; install ca-certificates or set tls.acme.ca_file".into(),
                    });
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(CaClient {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            retry_after,
        })
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = HttpClient::request(&self.inner, req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let response = fut.await?;
            let status = response.parts.status;
            if (status.is_client_error() || status.is_server_error())
                && let Some(at) = response
                    .parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
            {
                retry_after.record(at);
            }
            Ok(response)
        })
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date.
fn parse_retry_after(value: &str) -> Option<SystemTime> {
    match value.trim().parse::<u64>() {
        Ok(secs) => Some(SystemTime::now() + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value.trim()).ok(),
    }
}

/// Checks that the CA trust can be set up (`ca_file` readable and holding
/// certificates); used at start-up and by `check-config`.
pub fn check_trust(cfg: &AcmeConfig, provider: Arc<CryptoProvider>) -> Result<(), AcmeError> {
    CaClient::new(cfg, provider, RetryAfter::default()).map(|_| ())
}

/// Withdraws the published challenges however the order ends (the shared
/// files are removed by the manager when the order is over).
struct Published<'a>(&'a AcmeResolver);

impl Drop for Published<'_> {
    fn drop(&mut self) {
        self.0.clear_challenges();
    }
}

/// Runs one order to the end and stores the certificate.
pub async fn obtain(
    cfg: &AcmeConfig,
    dir: &AcmeDir,
    resolver: &AcmeResolver,
    provider: Arc<CryptoProvider>,
    retry_after: &RetryAfter,
) -> Result<StoredCert, AcmeError> {
    // 1. The account: stored credentials, or a new registration.
    let client = || CaClient::new(cfg, provider.clone(), retry_after.clone());
    let stored = blocking({
        let (dir, url) = (dir.clone(), cfg.directory.clone());
        move || dir.load_account(&url)
    })
    .await?;
    let account = match stored {
        Some(credentials) => {
            Account::builder_with_http(Box::new(client()?))
                .from_credentials(credentials)
                .await?
        }
        None => register(cfg, dir, Box::new(client()?)).await?,
    };

    // 2. The order. A CA that lost the stored account (a test CA restarted,
    //    an account deactivated elsewhere) gets a new registration, once.
    let identifiers: Vec<Identifier> = cfg
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
        Err(instant_acme::Error::Api(problem))
            if problem.r#type.as_deref()
                == Some("urn:ietf:params:acme:error:accountDoesNotExist") =>
        {
            tracing::warn!(
                directory = %cfg.directory,
                "the CA does not know the stored account; registering a new one"
            );
            register(cfg, dir, Box::new(client()?))
                .await?
                .new_order(&NewOrder::new(&identifiers))
                .await?
        }
        other => other?,
    };
    tracing::info!(
        order = order.url(),
        domains = ?cfg.domains,
        "ACME order created"
    );

    // 3. Challenges: publish each answer, then tell the CA to check it.
    let published = Published(resolver);
    let challenge_type = match cfg.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(AcmeError::Order(format!(
                    "authorisation for {} is {other:?}",
                    authz.identifier()
                )));
            }
        }
        let name = authz.identifier().to_string();
        let mut challenge = authz.challenge(challenge_type.clone()).ok_or_else(|| {
            AcmeError::Order(format!(
                "the CA offers no {} challenge for {name}",
                challenge_name(cfg.challenge)
            ))
        })?;
        let key_authorization = challenge.key_authorization();
        // Published here and in the store directory, for the instances
        // sharing it: the CA may reach any of them.
        let shared = match cfg.challenge {
            AcmeChallenge::TlsAlpn01 => {
                let (loaded, pem) =
                    tls_alpn_certificate(&name, key_authorization.digest().as_ref(), &provider)?;
                resolver.publish_tls_alpn(&name, loaded);
                (ChallengeKind::TlsAlpn01, name.clone(), pem.into_bytes())
            }
            AcmeChallenge::Http01 => {
                resolver.publish_http01(&challenge.token, key_authorization.as_str());
                (
                    ChallengeKind::Http01,
                    challenge.token.clone(),
                    key_authorization.as_str().as_bytes().to_vec(),
                )
            }
        };
        blocking({
            let dir = dir.clone();
            move || dir.publish_challenge(shared.0, &shared.1, &shared.2)
        })
        .await?;
        // Instances sharing the store directory re-read the shared answers
        // every 250 ms; give them time before the CA starts validating.
        tokio::time::sleep(SHARED_ANSWER_GRACE).await;
        challenge.set_ready().await?;
    }
    let polling = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(POLL_TIMEOUT);
    let status = order.poll_ready(&polling).await?;
    if status != OrderStatus::Ready {
        let problem = order
            .state()
            .error
            .as_ref()
            .map_or_else(|| format!("{status:?}"), |p| p.to_string());
        return Err(AcmeError::Order(format!(
            "the CA did not validate the names: {problem}"
        )));
    }
    drop(published);

    // 4. Finalise with a fresh key (ECDSA P-256) and download the chain.
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(cfg.domains.clone())?.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&polling).await?;
    let key_pem = key.serialize_pem();
    blocking({
        let dir = dir.clone();
        move || dir.save_certificate(&chain, &key_pem, &provider)
    })
    .await
}

/// Registers a new account (terms of service agreed) and stores its
/// credentials for the next orders.
async fn register(
    cfg: &AcmeConfig,
    dir: &AcmeDir,
    client: Box<dyn HttpClient>,
) -> Result<Account, AcmeError> {
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(client)
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            None,
        )
        .await?;
    tracing::info!(directory = %cfg.directory, "ACME account registered");
    blocking({
        let (dir, url) = (dir.clone(), cfg.directory.clone());
        move || dir.save_account(&url, &credentials)
    })
    .await?;
    Ok(account)
}

pub fn challenge_name(challenge: AcmeChallenge) -> &'static str {
    match challenge {
        AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        AcmeChallenge::Http01 => "http-01",
    }
}

/// Runs blocking file work off the reactor.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AcmeError> + Send + 'static,
) -> Result<T, AcmeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AcmeError::Order(format!("file task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let soon = parse_retry_after("120").unwrap();
        let d = soon.duration_since(SystemTime::now()).unwrap();
        assert!(d <= Duration::from_secs(120) && d > Duration::from_secs(100));
        let date = parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT").unwrap();
        assert_eq!(super::super::state::unix_seconds(date), 946_684_799);
        assert!(parse_retry_after("soon").is_none());
    }
}
