//! Time as Cofre stores it: ISO 8601 UTC strings, `YYYY-MM-DDTHH:MM:SSZ`.
//!
//! That format sorts lexically in time order, so indexes on date columns work
//! for range queries without conversion.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The last second of year 9999: past it the four-digit year (and with it
/// lexical order) breaks.
const MAX_TS: i64 = 253_402_300_799;

/// Formats Unix seconds as an ISO 8601 UTC string; times before 1970 or
/// after 9999 (a client may send anything) are clamped to that range.
pub fn iso(ts: i64) -> String {
    mail_parser::DateTime::from_timestamp(ts.clamp(0, MAX_TS)).to_rfc3339()
}

/// Parses an ISO 8601 / RFC 3339 string into Unix seconds.
pub fn parse_iso(s: &str) -> Option<i64> {
    mail_parser::DateTime::parse_rfc3339(s)
        .filter(|d| d.is_valid())
        .map(|d| d.to_timestamp())
}

/// Formats Unix seconds as C's `asctime` does (`Thu Jan  1 00:00:00
/// 1970`, UTC): the date of an mbox `From ` line.
pub fn asctime(ts: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let ts = ts.clamp(0, MAX_TS);
    let d = mail_parser::DateTime::from_timestamp(ts);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[(ts.div_euclid(86_400) % 7) as usize],
        MONTHS[(d.month.clamp(1, 12) - 1) as usize],
        d.day,
        d.hour,
        d.minute,
        d.second,
        d.year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asctime_is_cs() {
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(1_700_000_000), "Tue Nov 14 22:13:20 2023");
    }

    #[test]
    fn iso_round_trips_and_sorts() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_iso("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert!(iso(999_999_999) < iso(1_000_000_000));
    }

    #[test]
    fn out_of_range_times_clamp_and_still_sort() {
        assert_eq!(iso(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(iso(i64::MIN), "1970-01-01T00:00:00Z");
        assert!(iso(i64::MAX) > iso(4_000_000_000));
    }
}
