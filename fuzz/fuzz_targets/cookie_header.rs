//! Cookie parsing and session-cookie stripping never panic, and stripping
//! always removes Gatehouse's cookie.
#![no_main]

use gatehouse::parsers::find_cookie;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else { return };
    let mut headers = http::HeaderMap::new();
    headers.append(http::header::COOKIE, value);
    let _ = find_cookie(&headers, "__Host-sid");
    gatehouse::parsers::strip_named_cookies(&mut headers, &["__Host-sid", "__Host-sid_device"]);
    assert_eq!(find_cookie(&headers, "__Host-sid"), None);
    assert_eq!(find_cookie(&headers, "__Host-sid_device"), None);
});
