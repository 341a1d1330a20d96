//! Value parsers shared by the checks of every config section (durations,
//! positive counts). A leaf inside `config`: `check` and the section
//! checkers (`acme`, `mail`, `oidc`) all call it, and it calls none of them.

use std::time::Duration;

use super::{ConfigError, invalid};

pub(super) fn positive(
    key: &'static str,
    value: Option<u32>,
    default: u32,
) -> Result<u32, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(invalid(key, "must be at least 1")),
        n => Ok(n),
    }
}

pub(super) fn duration_or(
    key: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => match parse_duration(&text) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(invalid(
                key,
                format!("\"{text}\" is not a duration like \"30s\", \"5m\", \"24h\" or \"7d\""),
            )),
        },
    }
}

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"24h"`, `"7d"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(seconds).map(Duration::from_secs)
}
