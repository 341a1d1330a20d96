//! The path canonicaliser never panics, and whatever it accepts is a clean,
//! lower-case path without dot segments, empty segments or escapes, on which
//! it is idempotent.
#![no_main]

use gatehouse::parsers::canonical;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Ok(c) = canonical(path) {
        assert!(c.starts_with('/'));
        assert!(!c.contains("//"));
        assert!(!c.split('/').any(|s| s == "." || s == ".."));
        assert!(!c.contains('\\'));
        assert_eq!(c, c.to_ascii_lowercase());
        if !c.contains('%') && !c.contains(';') {
            assert_eq!(canonical(&c).as_deref(), Ok(&*c));
        }
    }
});
