//! Sign-up codes: six digits from the OS CSPRNG, stored as a salted SHA-256
//! and compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{PendingOtp, UnixMillis};

/// A freshly generated code: the digits to mail and the record to store.
pub struct NewCode {
    pub code: String,
    pub pending: PendingOtp,
}

/// Makes a uniformly random six-digit code valid until `expires_at`.
pub fn generate(expires_at: UnixMillis) -> NewCode {
    let code = format!("{:06}", random_below(1_000_000));
    let mut salt = [0u8; 16];
    crate::random::random_bytes(&mut salt);
    let pending = PendingOtp {
        salt,
        code_hash: hash(&salt, &code),
        expires_at,
        attempts: 0,
    };
    NewCode { code, pending }
}

/// Whether `submitted` is the code behind `pending`, in constant time.
pub fn matches(pending: &PendingOtp, submitted: &str) -> bool {
    hash(&pending.salt, submitted)
        .ct_eq(&pending.code_hash)
        .into()
}

/// A code is exactly six ASCII digits; anything else cannot be right.
pub fn is_well_formed(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

fn hash(salt: &[u8; 16], code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(code.as_bytes());
    h.finalize().into()
}

/// Uniform in `0..bound` by rejection sampling (no modulo bias).
fn random_below(bound: u32) -> u32 {
    let zone = u32::MAX - (u32::MAX % bound);
    loop {
        let mut b = [0u8; 4];
        crate::random::random_bytes(&mut b);
        let v = u32::from_le_bytes(b);
        if v < zone {
            return v % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_verify_only_themselves() {
        let c = generate(1);
        assert!(is_well_formed(&c.code), "{}", c.code);
        assert!(matches(&c.pending, &c.code));
        let other = format!("{:06}", (c.code.parse::<u32>().unwrap() + 1) % 1_000_000);
        assert!(!matches(&c.pending, &other));
        assert_ne!(c.pending.code_hash, [0; 32]);
    }

    #[test]
    fn codes_vary() {
        let codes: std::collections::HashSet<_> = (0..50).map(|_| generate(1).code).collect();
        assert!(codes.len() > 40);
    }

    #[test]
    fn well_formedness() {
        assert!(is_well_formed("012345"));
        for bad in ["12345", "1234567", "12345a", " 12345", "１２３４５６"] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }
}
