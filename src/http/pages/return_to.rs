//! The `rd` parameter: where the browser returns after signing in. Only a
//! same-origin relative path is accepted, so Gatehouse is never an open
//! redirect: one function decides, and refuses anything a browser could
//! read as another origin.

/// Longest `rd` accepted, in bytes.
const MAX_LEN: usize = 2048;

/// `rd` (already percent-decoded once, as a query value is) if it is a
/// safe same-origin path: printable ASCII starting with exactly one `/`,
/// and neither it nor any further percent-decoding of it starts with two
/// slashes (or slash-backslash), holds a backslash or a control character.
/// Everything else is refused (`None`), and the caller uses `/`.
pub fn safe_return_path(rd: &str) -> Option<&str> {
    if rd.is_empty() || rd.len() > MAX_LEN || !rd.bytes().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    // Decode up to three more times: "%252F%252F" must not slip past.
    let mut current = rd.as_bytes().to_vec();
    for _ in 0..4 {
        if !plain_path(&current) {
            return None;
        }
        let decoded = percent_decode(&current);
        if decoded == current {
            return Some(rd);
        }
        current = decoded;
    }
    // Still changing after four rounds: nobody needs that.
    None
}

fn plain_path(b: &[u8]) -> bool {
    b.first() == Some(&b'/')
        && b.get(1) != Some(&b'/')
        && b.get(1) != Some(&b'\\')
        && b.iter().all(|&c| c != b'\\' && !c.is_ascii_control())
}

/// One round of `%XX` decoding.
fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                b.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::safe_return_path;

    #[test]
    fn open_redirect_spellings_are_refused() {
        let refused = [
            "",
            "https://evil.example/",
            "http://evil.example",
            "//evil.example",
            "//evil.example/path",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "\\/evil.example",
            "/\\/evil.example",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%252F%252Fevil.example",
            "/%25252F%25252Fevil.example",
            "javascript:alert(1)",
            "data:text/html,hi",
            "evil.example",
            " /path",
            "/\t/evil.example",
            "/\n/evil.example",
            "/%09/evil.example",
            "/%0d%0aSet-Cookie:x=1",
            "/%00",
            "/ path",
            "/\u{3002}evil",
            "/path\\..\\x",
            "https:/evil.example",
            "/%5C%5Cevil.example",
            "/%2F%5Cevil.example",
        ];
        for rd in refused {
            assert_eq!(safe_return_path(rd), None, "accepted {rd:?}");
        }
        assert!(refused.len() >= 20);
        let long = format!("/{}", "a".repeat(2048));
        assert_eq!(safe_return_path(&long), None);
    }

    #[test]
    fn same_origin_paths_are_kept() {
        for rd in [
            "/",
            "/wiki/",
            "/wiki/Main_Page?action=edit&x=1",
            "/a/b/c#section",
            "/search?q=a%20b",
            "/path/with%2Dencoded-dash",
            "/path?next=%2Fother",
            "/x?u=https://example.com",
            "/caf%C3%A9",
            "/%E3%80%82",
            "/bytes/%ff",
        ] {
            assert_eq!(safe_return_path(rd), Some(rd), "refused {rd:?}");
        }
    }
}
