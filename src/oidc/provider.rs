//! One configured OpenID provider: its discovery document and key set
//! (fetched on first use, cached, the key set refreshed when a token names an
//! unknown key), the authorization URL, and the code exchange with ID-token
//! verification — all done by the `openidconnect` crate over our own
//! [`HttpClient`]. No JWT is parsed or checked here by hand.

use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    TokenResponse,
};

use super::http_client::{HttpClient, TrustError};
use crate::config::OidcProviderConfig;
use crate::store::OidcClaims;

/// How long a discovery document is used before it is fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// A token naming an unknown key refreshes the key set at most this often,
/// so forged tokens cannot make Gatehouse hammer the provider.
const MIN_JWKS_REFRESH: Duration = Duration::from_secs(30);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a step with the provider failed. Logged with the reason; the
/// browser only learns `error=oauth_failed`. Never carries a token.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Discovery failed (unreachable, bad document, issuer mismatch).
    #[error("discovery at {issuer}: {message}")]
    Discovery { issuer: String, message: String },
    /// The key set could not be refreshed.
    #[error("key set: {0}")]
    Jwks(String),
    /// The provider has no token endpoint.
    #[error("provider metadata has no token endpoint")]
    NoTokenEndpoint,
    /// The code exchange failed (provider error, transport, bad response).
    #[error("code exchange: {0}")]
    Exchange(String),
    /// The token response carried no ID token.
    #[error("token response without an ID token")]
    NoIdToken,
    /// The ID token failed verification (signature, issuer, audience,
    /// expiry, nonce).
    #[error("ID token rejected: {0}")]
    IdToken(#[source] ClaimsVerificationError),
    /// The userinfo request failed or its subject did not match.
    #[error("userinfo: {0}")]
    UserInfo(String),
    /// The redirect URL in the configuration is not a URL.
    #[error("redirect_url: {0}")]
    RedirectUrl(String),
}

impl ProviderError {
    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ProviderError::Discovery { .. } | ProviderError::Jwks(_) => "provider_unavailable",
            ProviderError::NoTokenEndpoint | ProviderError::RedirectUrl(_) => "misconfigured",
            ProviderError::Exchange(_) | ProviderError::UserInfo(_) => "exchange_failed",
            ProviderError::NoIdToken | ProviderError::IdToken(_) => "invalid_id_token",
        }
    }
}

struct Cached {
    metadata: CoreProviderMetadata,
    fetched: Instant,
    /// Last refresh caused by an unknown key (`None`: none yet).
    jwks_refreshed: Option<Instant>,
}

/// A provider ready to use.
pub struct Provider {
    pub cfg: OidcProviderConfig,
    secret: Option<ClientSecret>,
    http: HttpClient,
    /// Discovery and key set; the lock also serialises refetching.
    cached: tokio::sync::Mutex<Option<Cached>>,
}

/// What the browser is sent to, and what must be kept to finish the flow.
pub struct Authorization {
    pub url: String,
    pub pkce_verifier: String,
}

impl Provider {
    /// Sets up trust and reads nothing from the network yet (the provider
    /// may be down while Gatehouse starts).
    pub fn new(cfg: OidcProviderConfig, secret: Option<String>) -> Result<Provider, TrustError> {
        let http = HttpClient::new(cfg.ca_file.as_deref())?;
        Ok(Provider {
            cfg,
            secret: secret.map(ClientSecret::new),
            http,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The provider metadata (with its key set), from cache when fresh.
    async fn metadata(&self, refresh_keys: bool) -> Result<CoreProviderMetadata, ProviderError> {
        let mut cached = self.cached.lock().await;
        let http = &self.http;
        if let Some(c) = cached.as_mut() {
            let may_refresh = c
                .jwks_refreshed
                .is_none_or(|at| at.elapsed() >= MIN_JWKS_REFRESH);
            if refresh_keys && may_refresh {
                let keys = CoreJsonWebKeySet::fetch_async(c.metadata.jwks_uri(), http)
                    .await
                    .map_err(|e| ProviderError::Jwks(error_chain(&e)))?;
                c.metadata = c.metadata.clone().set_jwks(keys);
                c.jwks_refreshed = Some(Instant::now());
                tracing::info!(provider = %self.cfg.name, "identity provider key set refreshed");
            }
            if c.fetched.elapsed() < METADATA_TTL {
                return Ok(c.metadata.clone());
            }
        }
        let issuer =
            IssuerUrl::new(self.cfg.issuer.clone()).map_err(|e| ProviderError::Discovery {
                issuer: self.cfg.issuer.clone(),
                message: e.to_string(),
            })?;
        match CoreProviderMetadata::discover_async(issuer, http).await {
            Ok(metadata) => {
                let jwks_refreshed = cached.as_ref().and_then(|c| c.jwks_refreshed);
                *cached = Some(Cached {
                    metadata: metadata.clone(),
                    fetched: Instant::now(),
                    jwks_refreshed,
                });
                tracing::info!(provider = %self.cfg.name, "identity provider discovered");
                Ok(metadata)
            }
            Err(e) => {
                let error = ProviderError::Discovery {
                    issuer: self.cfg.issuer.clone(),
                    message: error_chain(&e),
                };
                // A stale document beats none while the provider is down.
                match cached.as_ref() {
                    Some(c) => {
                        tracing::warn!(provider = %self.cfg.name, %error, "using the cached discovery document");
                        Ok(c.metadata.clone())
                    }
                    None => Err(error),
                }
            }
        }
    }

    fn client(&self, metadata: CoreProviderMetadata) -> Result<Client, ProviderError> {
        let redirect = RedirectUrl::new(self.cfg.redirect_url.clone())
            .map_err(|e| ProviderError::RedirectUrl(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.cfg.client_id.clone()),
            self.secret.clone(),
        )
        .set_redirect_uri(redirect))
    }

    /// The authorization URL for a new sign-in (code flow, PKCE S256).
    pub async fn authorize(
        &self,
        state: &str,
        nonce: &str,
    ) -> Result<Authorization, ProviderError> {
        let client = self.client(self.metadata(false).await?)?;
        let mut verifier_bytes = [0u8; 32];
        crate::random::random_bytes(&mut verifier_bytes);
        let verifier = PkceCodeVerifier::new(crate::random::base64url(&verifier_bytes));
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        let (state, nonce) = (state.to_string(), nonce.to_string());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for scope in self.cfg.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, _, _) = request.url();
        Ok(Authorization {
            url: url.to_string(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code and verifies the ID token (signature against the
    /// key set, issuer, audience, expiry, nonce).
    pub async fn finish(
        &self,
        code: String,
        pkce_verifier: String,
        nonce: &str,
    ) -> Result<OidcClaims, ProviderError> {
        let client = self.client(self.metadata(false).await?)?;
        let http = &self.http;
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| ProviderError::NoTokenEndpoint)?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(http)
            .await
            .map_err(|e| ProviderError::Exchange(error_chain(&e)))?;
        let id_token = response.id_token().ok_or(ProviderError::NoIdToken)?;
        let nonce = Nonce::new(nonce.to_string());
        let verified = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => Ok(claims.clone()),
            // A key the cached set does not know: the provider may have
            // rotated keys. Refresh once and check again.
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let client = self.client(self.metadata(true).await?)?;
                id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .cloned()
            }
            Err(e) => Err(e),
        };
        let claims = verified.map_err(ProviderError::IdToken)?;
        let mut email = claims.email().map(|e| e.as_str().to_string());
        let mut email_verified = claims.email_verified().unwrap_or(false);
        // Providers that keep the ID token small (oidc-provider, Authelia)
        // give the email at the userinfo endpoint instead; its `sub` must
        // be the ID token's.
        let userinfo = email.is_none().then(|| {
            client.user_info(
                response.access_token().clone(),
                Some(claims.subject().clone()),
            )
        });
        // No userinfo endpoint: the claims stay as the ID token gave them.
        if let Some(Ok(request)) = userinfo {
            let info: CoreUserInfoClaims = request
                .request_async(&self.http)
                .await
                .map_err(|e| ProviderError::UserInfo(error_chain(&e)))?;
            email = info.email().map(|e| e.as_str().to_string());
            email_verified = info.email_verified().unwrap_or(false);
        }
        Ok(OidcClaims {
            provider: self.cfg.name.clone(),
            issuer: claims.issuer().as_str().to_string(),
            subject: claims.subject().as_str().to_string(),
            email: email.and_then(|e| crate::auth::email::normalise(&e)),
            email_verified,
        })
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
