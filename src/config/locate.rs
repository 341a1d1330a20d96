//! Where a key is in the configuration text, so every configuration error
//! names the file, the line and the key (`config FILE, line N: key `k`: …`).
//! Positions come from the TOML parser's spans, not from scanning lines.

use toml::de::{DeTable, DeValue};

/// Where a dotted key (`session.idle_timeout`, `route.auth`) was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The line (1-based) that sets the key.
    Line(usize),
    /// The key is not set; this is the line of the section it belongs in.
    SectionLine(usize),
    /// Neither the key nor its section is in the file.
    NotInFile,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::SectionLine(n) => write!(f, "line {n} (the key is not set in this section)"),
            Place::NotInFile => write!(f, "key not set in the file"),
        }
    }
}

/// Finds `dotted_key` in `text`. A segment may pick one table of an array
/// of tables the way serde names it (`route[2].methods`); without an index
/// the first table that sets the key counts.
pub fn place_of(text: &str, dotted_key: &str) -> Place {
    let Ok(root) = DeTable::parse(text) else {
        return Place::NotInFile;
    };
    let mut section: Option<usize> = None;
    let mut table: &DeTable<'_> = root.get_ref();
    let parts: Vec<(&str, Option<usize>)> = dotted_key.split('.').map(indexed).collect();
    for (i, (part, index)) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let Some((key, value)) = table.get_key_value(*part) else {
            break;
        };
        if last && index.is_none() {
            return Place::Line(line_at(text, key.span().start));
        }
        // The table to descend into, and the line of its header.
        let next = match value.get_ref() {
            DeValue::Table(t) => Some((t, key.span().start)),
            DeValue::Array(items) => {
                let mut tables = items.iter().filter_map(|item| match item.get_ref() {
                    DeValue::Table(t) => Some((t, item.span().start)),
                    _ => None,
                });
                match index {
                    Some(n) => tables.nth(*n),
                    None => {
                        let rest = parts.get(i + 1).map_or("", |(k, _)| *k);
                        let mut first = None;
                        let mut with_key = None;
                        for (t, at) in tables {
                            first.get_or_insert((t, key.span().start));
                            if with_key.is_none() && t.contains_key(rest) {
                                with_key = Some((t, at));
                            }
                        }
                        with_key.or(first)
                    }
                }
            }
            _ => None,
        };
        let Some((next, header)) = next else { break };
        section = Some(line_at(text, header));
        table = next;
    }
    match section {
        Some(line) => Place::SectionLine(line),
        None => Place::NotInFile,
    }
}

/// `route[2]` → (`route`, Some(2)); `server` → (`server`, None).
fn indexed(segment: &str) -> (&str, Option<usize>) {
    segment
        .strip_suffix(']')
        .and_then(|s| s.split_once('['))
        .and_then(|(name, n)| Some((name, Some(n.parse().ok()?))))
        .unwrap_or((segment, None))
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# comment\n\
        [server]\n\
        listen = \"127.0.0.1:1\"\n\
        \n\
        [session]\n\
        idle_timeout = \"soon\"\n\
        [mail.smtp]\n\
        port = 25\n\
        [[route]]\n\
        prefix = \"/a/\"\n\
        [[route]]\n\
        prefix = \"/b/\"\n\
        auth = \"maybe\"\n";

    #[test]
    fn keys_are_found_on_their_lines() {
        assert_eq!(place_of(TEXT, "server.listen"), Place::Line(3));
        assert_eq!(place_of(TEXT, "session.idle_timeout"), Place::Line(6));
        assert_eq!(place_of(TEXT, "mail.smtp.port"), Place::Line(8));
        assert_eq!(place_of(TEXT, "route.prefix"), Place::Line(10));
        assert_eq!(place_of(TEXT, "route.auth"), Place::Line(13));
    }

    #[test]
    fn an_index_picks_its_own_table() {
        assert_eq!(place_of(TEXT, "route[0].prefix"), Place::Line(10));
        assert_eq!(place_of(TEXT, "route[1].prefix"), Place::Line(12));
        assert_eq!(place_of(TEXT, "route[1].auth"), Place::Line(13));
        // Not set in the first route: that route's header, not another's key.
        assert_eq!(place_of(TEXT, "route[0].auth"), Place::SectionLine(9));
        assert_eq!(place_of(TEXT, "route[5].auth"), Place::NotInFile);
    }

    #[test]
    fn missing_keys_point_at_their_section() {
        assert_eq!(place_of(TEXT, "mail.smtp.host"), Place::SectionLine(7));
        assert_eq!(place_of(TEXT, "server.workers"), Place::SectionLine(2));
        assert_eq!(place_of(TEXT, "tls.cert"), Place::NotInFile);
        assert_eq!(place_of("", "server.listen"), Place::NotInFile);
    }
}
