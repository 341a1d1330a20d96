//! "Known device" marks: a browser that signed in successfully as an email
//! gets a cookie holding HMAC-SHA256(server secret, email). Presenting it
//! exempts sign-ins for that email from the per-email failure back-off, so an
//! attacker who fails on purpose cannot lock the owner out of their own
//! browser (see `throttle`). Nothing is stored per device.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub struct Devices {
    key: [u8; 32],
}

impl Devices {
    pub fn new(key: [u8; 32]) -> Devices {
        Devices { key }
    }

    fn mac(&self, email: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(b"gatehouse known-device v1\0");
        mac.update(email.as_bytes());
        mac
    }

    /// The cookie value marking a device as known for `email`.
    pub fn mark(&self, email: &str) -> String {
        crate::random::base64url(&self.mac(email).finalize().into_bytes())
    }

    /// Whether `value` marks a known device for `email` (constant time).
    pub fn is_known(&self, email: &str, value: &str) -> bool {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .is_ok_and(|tag| self.mac(email).verify_slice(&tag).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_verify_only_for_their_email_and_key() {
        let d = Devices::new([7; 32]);
        let m = d.mark("a@x.io");
        assert!(d.is_known("a@x.io", &m));
        assert!(!d.is_known("b@x.io", &m));
        assert!(!Devices::new([8; 32]).is_known("a@x.io", &m));
        assert!(!d.is_known("a@x.io", "not base64 !"));
        assert!(!d.is_known("a@x.io", ""));
    }
}
