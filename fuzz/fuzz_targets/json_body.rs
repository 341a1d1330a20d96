//! The JSON body parser and field extraction never panic on any bytes.
#![no_main]

use gatehouse::parsers::{parse_object, required_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = parse_object(data) {
        for field in ["email", "code", "password"] {
            if let Ok(s) = required_str(&body, field) {
                assert!(!s.is_empty() && !s.contains('\0'));
            }
        }
    }
});
