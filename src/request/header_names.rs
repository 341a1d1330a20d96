//! Header names spelled with `_`. CGI/WSGI-style backends (Python's
//! wsgiref, many PHP and Ruby stacks) map `-` and `_` to the same variable,
//! so `X_Auth_User_Id` reads there as `X-Auth-User-Id`. By default every
//! request header whose name contains `_` is dropped on arrival (as nginx
//! does); with `server.underscores_in_headers = "pass"` they are kept, but a
//! spelling that would equal a protected name is still removed before
//! forwarding (see [`is_spelling_of`]).

use http::HeaderMap;
use http::header::HeaderName;

/// Removes every header whose name contains `_`. Allocates only when one
/// is present.
pub fn drop_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|n| has_underscore(n.as_str())) {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| has_underscore(n.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

fn has_underscore(name: &str) -> bool {
    name.as_bytes().contains(&b'_')
}

/// Whether `name` (lower case, as `http` stores it) contains `_` and, with
/// every `_` read as `-`, is a name `protected` selects. Names without `_`
/// are not this function's business.
pub fn is_spelling_of(name: &str, protected: fn(&str) -> bool) -> bool {
    if !has_underscore(name) {
        return false;
    }
    let dashed = name.replace('_', "-");
    protected(&dashed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn underscored_names_go_and_others_stay() {
        let mut h = HeaderMap::new();
        for name in ["x_auth_user_id", "x-forwarded_for", "my_header", "accept"] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        drop_underscored(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn spellings_map_underscores_to_dashes() {
        let protected = |n: &str| n == "x-real-ip" || n.starts_with("x-auth-");
        assert!(is_spelling_of("x_real_ip", protected));
        assert!(is_spelling_of("x-auth_email", protected));
        assert!(!is_spelling_of("x-real-ip", protected), "no underscore");
        assert!(!is_spelling_of("my_header", protected));
    }
}
