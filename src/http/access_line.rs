//! Access lines formatted straight into the log buffer, byte for byte what
//! tracing-subscriber's `fmt` layer writes for the same event (text or
//! JSON, no colour), without its per-field `Display` and `Visit` chains:
//! that formatting was most of the access log's cost per request.
//!
//! Used only once [`install`] was called (plain text or JSON on a
//! non-terminal); otherwise, with colours at a terminal, `access` falls
//! back to a `tracing` event. Whether the line is wanted at all is still
//! tracing's filter (`RUST_LOG`, `[log] level`), checked per request in
//! [`crate::ops::access`].

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// The layout of the lines written directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `2026-11-28T21:24:20.600128Z  INFO gatehouse::access: request method=GET …`
    Text,
    /// One flattened JSON object per line, as `fmt().json().flatten_event(true)`.
    Json,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// Access lines are formatted here from now on, in `style`.
pub fn install(style: Style) {
    let _ = STYLE.set(style);
}

/// One request's access line.
pub struct Fields<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: u64,
    pub bytes: u64,
    pub user: Option<u64>,
    pub request_id: &'a str,
    pub complete: bool,
}

/// Writes `fields` as a line to the access-log buffer. False when direct
/// formatting is not installed (the caller logs through `tracing`).
pub fn write(fields: &Fields<'_>) -> bool {
    let Some(style) = STYLE.get() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    crate::log_writer::append_access(|out| match style {
        Style::Text => text(out, now.as_secs(), now.subsec_micros(), fields),
        Style::Json => json(out, now.as_secs(), now.subsec_micros(), fields),
    });
    true
}

fn text(out: &mut Vec<u8>, secs: u64, micros: u32, f: &Fields<'_>) {
    timestamp(out, secs, micros);
    out.extend_from_slice(b"  INFO gatehouse::access: request method=");
    out.extend_from_slice(f.method.as_bytes());
    out.extend_from_slice(b" path=");
    out.extend_from_slice(f.path.as_bytes());
    out.extend_from_slice(b" status=");
    decimal(out, u64::from(f.status));
    out.extend_from_slice(b" duration_ms=");
    decimal(out, f.duration_ms);
    out.extend_from_slice(b" bytes=");
    decimal(out, f.bytes);
    out.extend_from_slice(b" user=");
    match f.user {
        Some(id) => decimal(out, id),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" request_id=");
    out.extend_from_slice(f.request_id.as_bytes());
    out.extend_from_slice(if f.complete {
        b" complete=true\n"
    } else {
        b" complete=false\n"
    });
}

fn json(out: &mut Vec<u8>, secs: u64, micros: u32, f: &Fields<'_>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, secs, micros);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":\"");
    json_str(out, f.method);
    out.extend_from_slice(b"\",\"path\":\"");
    json_str(out, f.path);
    out.extend_from_slice(b"\",\"status\":");
    decimal(out, u64::from(f.status));
    out.extend_from_slice(b",\"duration_ms\":");
    decimal(out, f.duration_ms);
    out.extend_from_slice(b",\"bytes\":");
    decimal(out, f.bytes);
    out.extend_from_slice(b",\"user\":\"");
    match f.user {
        Some(id) => decimal(out, id),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\",\"request_id\":\"");
    json_str(out, f.request_id);
    out.extend_from_slice(if f.complete {
        b"\",\"complete\":true,\"target\":\"gatehouse::access\"}\n"
    } else {
        b"\",\"complete\":false,\"target\":\"gatehouse::access\"}\n"
    });
}

/// The contents of a JSON string: `"`, `\` and control characters escaped
/// as serde_json does.
fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut plain = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[plain..i]);
        out.extend_from_slice(escaped);
        plain = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[plain..]);
}

fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), as tracing-subscriber
/// writes it. The part up to the seconds changes once a second and is
/// formatted once per second per thread.
fn timestamp(out: &mut Vec<u8>, secs: u64, micros: u32) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = date_time(secs);
        SECOND.set((secs, text));
    }
    out.extend_from_slice(&text);
    out.push(b'.');
    let mut frac = [b'0'; 6];
    let mut m = micros;
    for d in frac.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&frac);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` for seconds since the Unix epoch (UTC). Called
/// once a second per thread (see [`timestamp`]), so the `time` crate's
/// formatter costs nothing per request.
fn date_time(secs: u64) -> [u8; 19] {
    const LAYOUT: &[BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    // Past the year 9999 (out of `time`'s range) the epoch is written.
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut out = *b"1970-01-01T00:00:00";
    // Cannot fail: every year in range has four digits, so 19 bytes fit.
    let _ = at.format_into(&mut &mut out[..], LAYOUT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(path: &str, user: Option<u64>) -> Fields<'_> {
        Fields {
            method: "GET",
            path,
            status: 200,
            duration_ms: 4,
            bytes: 5,
            user,
            request_id: "SbuSEQb1UsaxIPW2-0",
            complete: true,
        }
    }

    /// 2026-11-28T21:24:20Z
    const SECS: u64 = 1_795_901_060;

    #[test]
    fn text_matches_tracing_subscribers_line() {
        let mut out = Vec::new();
        text(&mut out, SECS, 600_128, &fields("/hello", None));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-28T21:24:20.600128Z  INFO gatehouse::access: request method=GET \
             path=/hello status=200 duration_ms=4 bytes=5 user=- \
             request_id=SbuSEQb1UsaxIPW2-0 complete=true\n"
        );
    }

    #[test]
    fn json_matches_tracing_subscribers_line_and_parses() {
        let mut out = Vec::new();
        json(&mut out, SECS, 7, &fields("/hello", Some(12)));
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "{\"timestamp\":\"2026-11-28T21:24:20.000007Z\",\"level\":\"INFO\",\
             \"message\":\"request\",\"method\":\"GET\",\"path\":\"/hello\",\"status\":200,\
             \"duration_ms\":4,\"bytes\":5,\"user\":\"12\",\
             \"request_id\":\"SbuSEQb1UsaxIPW2-0\",\"complete\":true,\
             \"target\":\"gatehouse::access\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["user"], "12");
    }

    #[test]
    fn json_strings_are_escaped() {
        let awkward = "/a\"b\\c\u{1}d\ne/é";
        let mut out = Vec::new();
        json(&mut out, SECS, 0, &fields(awkward, None));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["path"], awkward);
    }

    #[test]
    fn dates_across_years_and_leap_days() {
        let at = |s| String::from_utf8(date_time(s).to_vec()).unwrap();
        assert_eq!(at(0), "1970-01-01T00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00");
        assert_eq!(at(SECS), "2026-11-28T21:24:20");
        assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59");
    }

    #[test]
    fn decimals() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 12_345, u64::MAX] {
            decimal(&mut out, n);
            out.push(b' ');
        }
        assert_eq!(out, format!("0 7 10 12345 {} ", u64::MAX).into_bytes());
    }
}
