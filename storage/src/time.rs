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

#[cfg(test)]
mod tests {
    use super::*;

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
