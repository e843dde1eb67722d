//! Calendar arithmetic for IMAP dates (proleptic Gregorian, UTC).

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn parts(ts: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (y, m, d) = civil_from_days(ts.div_euclid(86_400));
    let s = ts.rem_euclid(86_400);
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

/// IMAP `date-time`: `"17-Jul-1996 09:44:25 +0000"` (without the quotes).
pub fn imap_date_time(ts: i64) -> String {
    let (y, m, d, h, mi, s) = parts(ts);
    format!(
        "{d:02}-{}-{y:04} {h:02}:{mi:02}:{s:02} +0000",
        MONTHS[m as usize - 1]
    )
}

/// RFC 5322 date: `Wed, 17 Jul 1996 09:44:25 +0000`.
pub fn rfc5322(ts: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let (y, m, d, h, mi, s) = parts(ts);
    let wd = DAYS[ts.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{wd}, {d} {} {y:04} {h:02}:{mi:02}:{s:02} +0000",
        MONTHS[m as usize - 1]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for z in [-800_000, -1, 0, 1, 10_957, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y as i32, m, d), z);
        }
        assert_eq!(imap_date_time(837_596_665), "17-Jul-1996 09:44:25 +0000");
        assert_eq!(rfc5322(0), "Thu, 1 Jan 1970 00:00:00 +0000");
    }
}
