//! Email address normalisation: one mailbox is one account.

/// Longest address accepted (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;

/// Trims and lower-cases `raw` and checks it looks like a deliverable
/// address (`local@domain.tld`, no spaces or control characters).
pub fn normalise(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() || email.len() > MAX_EMAIL_LEN {
        return None;
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"".contains(c))
    {
        return None;
    }
    let (local, domain) = email.split_once('@')?;
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with(['.', '-'])
        && !domain.contains("..");
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    (domain_ok && local_ok).then_some(email)
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn one_mailbox_one_spelling() {
        assert_eq!(
            normalise("  Alice@Example.COM ").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            normalise("a.b+tag@sub.example.org").as_deref(),
            Some("a.b+tag@sub.example.org")
        );
    }

    #[test]
    fn rejects_non_addresses() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a@b@c.com",
            "al ice@example.com",
            "alice@exa mple.com",
            "alice@.example.com",
            "alice@example..com",
            "a\u{0}@x.com",
            "<a@x.com>",
            "a@x.com,b@y.com",
            ".a@x.com",
            "a..b@x.com",
        ] {
            assert_eq!(normalise(bad), None, "{bad:?}");
        }
        assert_eq!(normalise(&format!("{}@x.com", "a".repeat(300))), None);
    }
}
