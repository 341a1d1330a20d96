//! CSRF protection of the page forms: a random pre-session cookie
//! (`HttpOnly`, `SameSite=Strict`) and, in each form, a token that is
//! HMAC-SHA256(server secret, cookie). A POST passes only with both, and
//! the token is checked in constant time. Another site can neither read
//! the token nor set the cookie (`__Host-` under TLS).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha256;

use crate::auth::sessions::find_cookie;

/// Lifetime of the pre-session cookie.
const MAX_AGE_SECS: i64 = 86_400;

pub struct Csrf {
    key: [u8; 32],
    cookie_name: String,
    secure: bool,
}

/// The cookie a form page is bound to, and whether it has to be set.
pub struct Binding {
    pub cookie: String,
    pub set_cookie: Option<String>,
}

impl Csrf {
    pub fn new(key: [u8; 32], tls: bool) -> Csrf {
        Csrf {
            key,
            cookie_name: if tls {
                "__Host-gatehouse_form".to_string()
            } else {
                "gatehouse_form".to_string()
            },
            secure: tls,
        }
    }

    fn mac(&self, cookie: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(b"gatehouse page form v1\0");
        mac.update(cookie.as_bytes());
        mac
    }

    /// The request's pre-session cookie, or a fresh one to set.
    pub fn binding(&self, headers: &HeaderMap) -> Binding {
        match find_cookie(headers, &self.cookie_name).filter(|v| v.len() == 43) {
            Some(cookie) => Binding {
                cookie: cookie.to_string(),
                set_cookie: None,
            },
            None => {
                let mut raw = [0u8; 32];
                crate::random::random_bytes(&mut raw);
                let cookie = crate::random::base64url(&raw);
                let set_cookie = Some(self.set_cookie(&cookie));
                Binding { cookie, set_cookie }
            }
        }
    }

    fn set_cookie(&self, value: &str) -> String {
        cookie::Cookie::build((self.cookie_name.clone(), value.to_string()))
            .http_only(true)
            .secure(self.secure)
            .same_site(cookie::SameSite::Strict)
            .path("/")
            .max_age(cookie::time::Duration::seconds(MAX_AGE_SECS))
            .build()
            .to_string()
    }

    /// The form token for a binding.
    pub fn token(&self, binding: &Binding) -> String {
        crate::random::base64url(&self.mac(&binding.cookie).finalize().into_bytes())
    }

    /// Whether the request's cookie and the submitted token belong together.
    pub fn check(&self, headers: &HeaderMap, submitted: &str) -> bool {
        let Some(cookie) = find_cookie(headers, &self.cookie_name) else {
            return false;
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(submitted)
            .is_ok_and(|tag| self.mac(cookie).verify_slice(&tag).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn token_passes_only_with_its_cookie() {
        let csrf = Csrf::new([3; 32], true);
        let fresh = csrf.binding(&HeaderMap::new());
        let set = fresh.set_cookie.clone().unwrap();
        assert!(set.starts_with("__Host-gatehouse_form="), "{set}");
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure")
        );
        let token = csrf.token(&fresh);
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("__Host-gatehouse_form={}", fresh.cookie)).unwrap(),
        );
        assert!(csrf.check(&h, &token));
        assert!(csrf.binding(&h).set_cookie.is_none());
        assert!(!csrf.check(&h, "AAAA"));
        assert!(!csrf.check(&HeaderMap::new(), &token));
        assert!(!Csrf::new([4; 32], true).check(&h, &token));
    }
}
