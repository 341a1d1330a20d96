//! Request-path canonicalisation and route matching — pure functions.
//!
//! The upstream may read paths leniently (Express routes case-insensitively,
//! treats `/api/v2` like `/api/v2/`, others decode `%xx`, drop `;params` or
//! merge `//`). So routes are matched on the most lenient reading of the path,
//! and spellings whose meaning differs between servers — dot segments,
//! encoded `/`, `\`, `.` or `%`, control bytes — are refused outright.

use std::borrow::Cow;

use crate::config::{Route, RouteAuth};

/// Longest request path accepted.
pub const MAX_PATH_LEN: usize = 4096;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form path (`/…`).
    #[error("request path must start with '/'")]
    NotAbsolute,
    /// Longer than [`MAX_PATH_LEN`].
    #[error("request path is too long")]
    TooLong,
    /// `%` not followed by two hex digits.
    #[error("request path has a malformed percent-escape")]
    BadEscape,
    /// An escape that hides a separator, dot, percent or control byte.
    #[error("request path has an encoded separator, dot or control character")]
    EncodedSpecial,
    /// A `.` or `..` segment (possibly with parameters or trailing dots).
    #[error("request path has a '.' or '..' segment")]
    DotSegment,
    /// A raw backslash, control byte or `#`.
    #[error("request path has a forbidden character")]
    ForbiddenChar,
}

/// The lenient, lower-cased reading of `path` used for every routing
/// decision, or why the path is refused.
///
/// `/API//v2;x=1/Items%41/` → `/api/v2/itemsa/`
pub fn canonical(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if is_already_canonical(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes())?;
    let mut out = String::with_capacity(decoded.len());
    let ends_with_slash = decoded.len() > 1 && decoded.ends_with(b"/");
    for raw_segment in decoded.split(|&b| b == b'/') {
        // `;params` are dropped by servlet-style servers: match without them.
        let segment = match raw_segment.iter().position(|&b| b == b';') {
            Some(i) => &raw_segment[..i],
            None => raw_segment,
        };
        // Some servers ignore trailing dots and spaces in a segment.
        let trimmed = trim_end(segment, b" .");
        if trimmed.is_empty() {
            if !raw_segment.is_empty() {
                // `.`, `..`, `...;x`, ` ` — all ambiguous.
                return Err(PathError::DotSegment);
            }
            continue; // empty segment from `//` or the leading `/`
        }
        out.push('/');
        out.push_str(&String::from_utf8_lossy(trimmed).to_ascii_lowercase());
    }
    if out.is_empty() || ends_with_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The common case — lower-case letters, digits, `_`, `-` and single
/// slashes — reads the same to every server, so it is used as is.
fn is_already_canonical(path: &str) -> bool {
    // One pass, the `//` check included (a substring search would set up a
    // searcher per request for a two-byte pattern).
    let mut previous = 0u8;
    path.bytes().all(|b| {
        let plain = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'_'
            || b == b'-'
            || (b == b'/' && previous != b'/');
        previous = b;
        plain
    })
}

fn trim_end<'a>(mut s: &'a [u8], chars: &[u8]) -> &'a [u8] {
    while let [rest @ .., last] = s {
        if chars.contains(last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn decode(path: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' => {
                let hex = path.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let hi = hex_value(hex[0]).ok_or(PathError::BadEscape)?;
                let lo = hex_value(hex[1]).ok_or(PathError::BadEscape)?;
                let d = hi << 4 | lo;
                if matches!(d, b'/' | b'\\' | b'.' | b'%' | b';' | b'?' | b'#') || is_control(d) {
                    return Err(PathError::EncodedSpecial);
                }
                out.push(d);
                i += 3;
            }
            b'\\' | b'#' => return Err(PathError::ForbiddenChar),
            _ if is_control(b) => return Err(PathError::ForbiddenChar),
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Whether canonical `path` falls under canonical `prefix`. A prefix ending
/// in `/` also covers the bare directory (`/api/v2/` covers `/api/v2`).
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix)
        || (prefix.len() > 1 && prefix.ends_with('/') && path == &prefix[..prefix.len() - 1])
}

/// The route with the longest prefix covering canonical `path`.
pub fn match_route<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .filter(|r| under_prefix(path, &r.prefix))
        .max_by_key(|r| r.prefix.len())
}

/// The auth mode for canonical `path`; unmatched paths get `None` (not served).
pub fn auth_for(routes: &[Route], path: &str) -> Option<RouteAuth> {
    match_route(routes, path).map(|r| r.auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<Route> {
        vec![
            Route::new("/api/v2/", RouteAuth::Required),
            Route::new("/api/v2/public/", RouteAuth::None),
            Route::new("/", RouteAuth::Optional),
        ]
    }

    fn auth(path: &str) -> Result<Option<RouteAuth>, PathError> {
        canonical(path).map(|c| auth_for(&routes(), &c))
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical("/").unwrap(), "/");
        assert_eq!(
            canonical("/API//v2;x=1/Items%41/").unwrap(),
            "/api/v2/itemsa/"
        );
        assert_eq!(canonical("//api///v2").unwrap(), "/api/v2");
        assert_eq!(canonical("/api/v2./x").unwrap(), "/api/v2/x");
        assert_eq!(canonical("/caf%C3%A9").unwrap(), "/café");
    }

    #[test]
    fn every_spelling_of_a_protected_path_is_protected_or_refused() {
        let spellings = [
            "/api/v2/tasks",
            "/api/v2",
            "/api/v2/",
            "/API/V2/tasks",
            "/Api/v2",
            "//api/v2/tasks",
            "/api//v2/tasks",
            "/api/v2//tasks",
            "/api/v2;a=b/tasks",
            "/api;/v2/tasks",
            "/api/v2;/",
            "/%61pi/v2/tasks",
            "/api/%76%32/tasks",
            "/api/V%32",
            "/api/v2./tasks",
            "/api/v2%20/tasks",
            "/api./v2/tasks",
            "/api/v2/public/../tasks",
            "/api/v2/public/%2e%2e/tasks",
            "/api/v2/public/%2E%2E/tasks",
            "/api/v2/public/..;/tasks",
            "/api/v2/public/.%2e/tasks",
            "/api/v2/public%2f..%2ftasks",
            "/api/v2/public%2F../tasks",
            "/api/v2/public\\..\\tasks",
            "/api/v2/public/%5c../tasks",
            "/api/v2/public/%252e%252e/tasks",
            "/x/../api/v2/tasks",
            "/./api/v2/tasks",
            "/api/./v2/tasks",
            "/api/v2/public/...",
            "/api/v2/public/..%00/tasks",
            "/api/v2%00/tasks",
            "/api/v2%09/tasks",
            "/api/v2%3btasks",
            "/api/v2%3f/tasks",
            "/api/v2%23/tasks",
            "/api/v2#/tasks",
            "/api/v2/%",
            "/api/v2/%zz",
        ];
        assert!(spellings.len() >= 40);
        for s in spellings {
            let a = auth(s);
            assert!(
                matches!(a, Ok(Some(RouteAuth::Required)) | Err(_)),
                "{s:?} → {a:?}"
            );
        }
    }

    #[test]
    fn longest_prefix_wins_and_unrelated_paths_are_optional() {
        assert_eq!(auth("/api/v2/public/x"), Ok(Some(RouteAuth::None)));
        assert_eq!(auth("/api/v2/public"), Ok(Some(RouteAuth::None)));
        assert_eq!(auth("/api/v2public"), Ok(Some(RouteAuth::Optional)));
        assert_eq!(auth("/api/v3/x"), Ok(Some(RouteAuth::Optional)));
        assert_eq!(auth("/"), Ok(Some(RouteAuth::Optional)));
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_reading() {
        for path in ["/", "/api/v2/tasks", "/api/v2/", "/a-b_c/0/", "/x"] {
            assert!(matches!(canonical(path), Ok(Cow::Borrowed(_))), "{path}");
            // Spelled in capitals it takes the slow path to the same result.
            assert_eq!(canonical(&path.to_ascii_uppercase()).unwrap(), path);
        }
        for path in ["/Api", "/a//b", "/a.b", "/a;b", "/a%62"] {
            assert!(matches!(canonical(path), Ok(Cow::Owned(_))), "{path}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(canonical("*"), Err(PathError::NotAbsolute));
        assert_eq!(canonical("/a/../b"), Err(PathError::DotSegment));
        assert_eq!(canonical("/a/%2e/b"), Err(PathError::EncodedSpecial));
        assert_eq!(canonical("/a%2fb"), Err(PathError::EncodedSpecial));
        assert_eq!(canonical("/a%"), Err(PathError::BadEscape));
        assert_eq!(canonical("/a\\b"), Err(PathError::ForbiddenChar));
        assert_eq!(
            canonical(&format!("/{}", "a".repeat(5000))),
            Err(PathError::TooLong)
        );
    }
}
