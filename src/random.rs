//! Random secrets: the operating system's CSPRNG and the unpadded base64url
//! text every token is written in. A leaf: auth, mail, the stores and the
//! proxy all make random ids and tokens, so this sits below all of them.

use base64::Engine;

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    // Without the OS RNG no secret can be made safely: stopping is the only
    // correct answer, and it does not happen on a working Linux system.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// Unpadded base64url.
pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
