//! Value parsers shared by the checks of every config section (durations,
//! CIDR ranges, positive counts). A leaf inside `config`: `check` and the section
//! checkers (`acme`, `mail`, `oidc`) all call it, and it calls none of them.
//!
//! Durations are humantime's grammar (`"500ms"`, `"30s"`, `"5m"`, `"24h"`,
//! `"7d"`, `"1h 30m"`, `"2days"`). They are parsed while the TOML is read
//! ([`ConfigDuration`] implements `Deserialize`), so a bad one is reported
//! by serde with its exact key path and line, like a value of the wrong type.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

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

/// The longest duration any key accepts: 100 years as humantime counts
/// them (`"100y"`). Longer values overflow millisecond deadlines.
const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

/// A duration key's value; zero is refused (every such key is a timeout,
/// a lifetime or an interval, where zero means "broken", not "off").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConfigDuration(Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        parse_duration(&text)
            .map(ConfigDuration)
            .map_err(D::Error::custom)
    }
}

/// A duration key where zero is meaningful and switches the feature off
/// (`tls.hsts_max_age = "0"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConfigDurationOrZero(Duration);

impl<'de> Deserialize<'de> for ConfigDurationOrZero {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        parse_duration_or_zero(&text)
            .map(ConfigDurationOrZero)
            .map_err(D::Error::custom)
    }
}

/// The key's duration, or `default` when the key is not set.
pub(super) fn duration_or(value: Option<ConfigDuration>, default: Duration) -> Duration {
    value.map_or(default, |ConfigDuration(d)| d)
}

/// Like [`duration_or`], for keys where zero is allowed.
pub(super) fn duration_or_zero(value: Option<ConfigDurationOrZero>, default: Duration) -> Duration {
    value.map_or(default, |ConfigDurationOrZero(d)| d)
}

/// Parses a duration longer than zero in humantime's grammar (also what
/// the admin CLI's duration arguments take). The error is a sentence
/// fragment quoting `text`, to follow a key or argument name.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match parse_duration_or_zero(text)? {
        d if d.is_zero() => Err(format!(
            "\"{text}\" is zero; give a duration such as \"30s\""
        )),
        d => Ok(d),
    }
}

fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let like = "a duration like \"30s\", \"5m\", \"1h 30m\" or \"7d\"";
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d > LONGEST => Err(format!("\"{text}\" is longer than 100 years")),
        Ok(d) => Ok(d),
        // Unit and overflow mistakes are worth naming; humantime's other
        // messages give byte offsets, which the quoted value shows better.
        Err(
            e @ (humantime::DurationError::UnknownUnit { .. }
            | humantime::DurationError::NumberOverflow),
        ) => Err(format!("\"{text}\" is not {like} ({e})")),
        Err(_) => Err(format!("\"{text}\" is not {like}")),
    }
}

/// An address or CIDR range (`"10.0.0.0/8"`, `"::1"`), parsed while the
/// TOML is read so a bad one is named by its place in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConfigCidr(pub(super) ipnet::IpNet);

impl<'de> Deserialize<'de> for ConfigCidr {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        crate::net::parse_cidr(&text)
            .map(ConfigCidr)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "\"{text}\" is not an address or CIDR like \"10.0.0.0/8\""
                ))
            })
    }
}

/// `[[route]] auth`, read while the TOML is read so a mistake is named by
/// its route (`route[2].auth`).
impl<'de> Deserialize<'de> for super::RouteAuth {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use super::RouteAuth;
        match String::deserialize(de)?.as_str() {
            "required" => Ok(RouteAuth::Required),
            "optional" => Ok(RouteAuth::Optional),
            "none" => Ok(RouteAuth::None),
            other => Err(D::Error::custom(format!(
                "\"{other}\" is not one of \"required\", \"optional\", \"none\""
            ))),
        }
    }
}

/// `[[route]] prefix`: a plain path starting with `/`, lower-cased; read
/// while the TOML is read so a mistake is named by its route
/// (`route[2].prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RoutePrefix(pub(super) String);

impl<'de> Deserialize<'de> for RoutePrefix {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        let plain = text.starts_with('/')
            && !text.contains(['?', '#', '%', '\\', ';'])
            && !text.split('/').any(|s| s == "." || s == "..")
            && !text.contains("//");
        if !plain {
            return Err(D::Error::custom(format!(
                "\"{text}\" must be a plain path starting with '/'"
            )));
        }
        Ok(RoutePrefix(text.to_ascii_lowercase()))
    }
}

/// A duration as people read it in messages and command output:
/// `"1m 30s"`, `"7days"` (humantime's formatter, whole seconds and
/// milliseconds only).
pub fn show_duration(d: Duration) -> String {
    let whole_millis = Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    humantime::format_duration(whole_millis).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Result<Duration, String> {
        Ok(Duration::from_secs(n))
    }

    #[test]
    fn the_forms_operators_already_write_still_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), secs(30));
        assert_eq!(parse_duration("5m"), secs(300));
        assert_eq!(parse_duration("24h"), secs(86_400));
        assert_eq!(parse_duration("7d"), secs(604_800));
        assert_eq!(parse_duration(" 10m "), secs(600));
    }

    #[test]
    fn humantimes_longer_forms_parse() {
        assert_eq!(parse_duration("1h 30m"), secs(5400));
        assert_eq!(parse_duration("2days"), secs(172_800));
        assert_eq!(parse_duration("5 weeks"), secs(35 * 86_400));
        assert_eq!(parse_duration("1min 30s"), secs(90));
        assert_eq!(parse_duration("1.5h"), secs(5400));
        assert_eq!(parse_duration("100y"), Ok(LONGEST));
    }

    #[test]
    fn mistakes_are_refused_with_the_value_quoted() {
        for bad in [
            "5",
            "m",
            "soon",
            "",
            "5 fortnights",
            "-1s",
            "1.h",
            "0s",
            "0",
            "101y",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains(&format!("\"{bad}\"")), "{bad}: {e}");
        }
        assert!(
            parse_duration("10")
                .unwrap_err()
                .contains("time unit needed")
        );
        assert!(
            parse_duration("5 fortnights")
                .unwrap_err()
                .contains("unknown time unit")
        );
        assert!(parse_duration("0s").unwrap_err().contains("is zero"));
        let huge = "99999999999999999999999s";
        assert!(parse_duration(huge).unwrap_err().contains("too large"));
    }

    #[test]
    fn zero_is_a_value_only_where_it_means_off() {
        assert_eq!(parse_duration_or_zero("0"), secs(0));
        assert_eq!(parse_duration_or_zero("0s"), secs(0));
        assert_eq!(parse_duration_or_zero("365d"), secs(365 * 86_400));
        assert!(parse_duration_or_zero("never").is_err());
    }

    #[test]
    fn durations_are_shown_the_way_they_are_written() {
        assert_eq!(show_duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(show_duration(Duration::from_secs(7 * 86_400)), "7days");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(show_duration(Duration::from_nanos(1_000_001)), "1ms");
        // What is shown parses back to the same value.
        for d in [Duration::from_secs(5400), Duration::from_millis(250)] {
            assert_eq!(parse_duration(&show_duration(d)), Ok(d));
        }
    }
}
