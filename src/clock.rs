//! Wall-clock time as Unix seconds, and the timestamp formats operators and clients write.
//!
//! Owns parsing and formatting of timestamps (RFC 3339, the bentoml client's `%Y-%m-%d %H:%M:%S.%f`,
//! a bare date) and of relative expiries (`30d`). Must never read anything but the system clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, the unit every expiry and timestamp is kept in.
pub type UnixSeconds = i64;

/// The current time in Unix seconds; a clock before 1970 counts as 0 rather than failing a request.
pub fn now() -> UnixSeconds {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Why a timestamp or expiry could not be read; the text says which forms are accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{input}` is not a time: use RFC 3339 (2026-12-31T23:59:59Z), `2026-12-31 23:59:59.000000`, a date (2026-12-31) or a duration from now (30d, 1w, 24h)")]
pub struct BadTime {
    input: String,
}

/// Formats Unix seconds as RFC 3339 in UTC (`2026-11-28T12:00:00Z`).
pub fn format(t: UnixSeconds) -> String {
    rfc3339(t).to_string()
}

/// [`format`] without the allocation: for serializers that write it straight out (the token
/// file's writer formats two times per record).
pub fn rfc3339(t: UnixSeconds) -> impl std::fmt::Display {
    let t = u64::try_from(t).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t))
}

/// Parses an absolute time: RFC 3339 (with `Z` or a numeric offset), the bentoml client's naive
/// `%Y-%m-%d %H:%M:%S.%f` (read as UTC), or a bare date meaning 00:00:00 UTC of that day.
pub fn parse_absolute(input: &str) -> Result<UnixSeconds, BadTime> {
    let bad = || BadTime {
        input: input.to_owned(),
    };
    let s = input.trim();
    if s.len() == 10 {
        let with_time = format!("{s}T00:00:00Z");
        return humantime::parse_rfc3339_weak(&with_time)
            .map(to_unix)
            .map_err(|_| bad());
    }
    // Split off a numeric offset (+02:00 / -05:30), which humantime does not read.
    let (body, offset) = split_offset(s).ok_or_else(bad)?;
    let t = humantime::parse_rfc3339_weak(body).map_err(|_| bad())?;
    Ok(to_unix(t) - offset)
}

/// Parses an expiry as written on the command line: a duration from `now` (`30d`, `1w`, `24h`) or
/// an absolute time accepted by [`parse_absolute`].
pub fn parse_expiry(input: &str, now: UnixSeconds) -> Result<UnixSeconds, BadTime> {
    if let Ok(d) = humantime::parse_duration(input.trim()) {
        return Ok(now.saturating_add(d.as_secs() as i64));
    }
    parse_absolute(input)
}

fn to_unix(t: SystemTime) -> UnixSeconds {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Returns the timestamp without its numeric offset and the offset in seconds east of UTC.
fn split_offset(s: &str) -> Option<(&str, i64)> {
    let bytes = s.as_bytes();
    if bytes.len() > 6 {
        let at = bytes.len() - 6;
        let sign = bytes[at];
        if (sign == b'+' || sign == b'-') && bytes[at + 3] == b':' && at >= 19 {
            let hours: i64 = s.get(at + 1..at + 3)?.parse().ok()?;
            let minutes: i64 = s.get(at + 4..)?.parse().ok()?;
            let offset = hours * 3600 + minutes * 60;
            return Some((&s[..at], if sign == b'+' { offset } else { -offset }));
        }
    }
    Some((s.strip_suffix('Z').unwrap_or(s), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_accepted_form() {
        let z = parse_absolute("2026-12-31T00:00:00Z").unwrap();
        assert_eq!(parse_absolute("2026-12-31").unwrap(), z);
        assert_eq!(parse_absolute("2026-12-31 00:00:00.000000").unwrap(), z);
        assert_eq!(parse_absolute("2026-12-31T02:00:00+02:00").unwrap(), z);
        assert_eq!(parse_absolute("2026-12-30T19:00:00-05:00").unwrap(), z);
        assert_eq!(format(z), "2026-12-31T00:00:00Z");
    }

    #[test]
    fn relative_expiry_counts_from_now() {
        assert_eq!(parse_expiry("30d", 1000).unwrap(), 1000 + 30 * 86400);
        assert_eq!(parse_expiry("1w", 0).unwrap(), 7 * 86400);
        assert_eq!(parse_expiry("24h", 5).unwrap(), 5 + 86400);
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let e = parse_absolute("next tuesday").unwrap_err();
        assert!(e.to_string().contains("RFC 3339"));
        assert!(parse_absolute("2026-13-45").is_err());
    }
}
