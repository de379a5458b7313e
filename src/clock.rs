//! Wall-clock helpers: milliseconds since the epoch and UTC calendar arithmetic.
//!
//! Only the server and the CLI read the clock; dialect decoders get the receive time passed in,
//! so they stay pure and testable with a fixed clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const MS_PER_DAY: i64 = 86_400_000;

/// A UTC calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// The UTC date that contains `ms`.
    pub fn from_ms(ms: i64) -> Date {
        civil_from_days(ms.div_euclid(MS_PER_DAY))
    }

    /// `YYYY-MM-DD`.
    pub fn iso(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// Milliseconds at 00:00 UTC of this date.
    pub fn start_ms(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * MS_PER_DAY
    }
}

/// The calendar month (UTC) as `year * 100 + month`, e.g. `202611`: the key of quota counters.
pub fn month_key(ms: u64) -> u32 {
    let d = Date::from_ms(ms as i64);
    (d.year as u32) * 100 + d.month
}

/// Milliseconds at 00:00 UTC on the first day of the month after the one holding `ms`.
pub fn next_month_start_ms(ms: u64) -> u64 {
    let d = Date::from_ms(ms as i64);
    let (y, m) = if d.month == 12 {
        (d.year + 1, 1)
    } else {
        (d.year, d.month + 1)
    };
    (days_from_civil(y, m, 1) * MS_PER_DAY) as u64
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01.
pub fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    Date { year, month, day }
}

/// RFC 3339 UTC timestamp with millisecond precision, e.g. `2026-11-26T06:13:50.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let ms = ms as i64;
    let d = Date::from_ms(ms);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (h, mi, s, frac) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!("{}T{h:02}:{mi:02}:{s:02}.{frac:03}Z", d.iso())
}

/// Parses an RFC 3339 timestamp (`2026-11-26T06:13:50Z`, `...50.123+02:00`) or a plain UTC
/// date (`2026-11-26`, meaning its midnight) into milliseconds since the epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let num = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let date = t.get(..10)?;
    let (y, m, d) = (
        num(date.get(..4)?)?,
        num(date.get(5..7)?)?,
        num(date.get(8..10)?)?,
    );
    if date.as_bytes()[4] != b'-' || date.as_bytes()[7] != b'-' || !(1..=12).contains(&m) {
        return None;
    }
    let days_in_month = days_from_civil(
        if m == 12 { y as i32 + 1 } else { y as i32 },
        if m == 12 { 1 } else { m as u32 + 1 },
        1,
    ) - days_from_civil(y as i32, m as u32, 1);
    if d < 1 || d > days_in_month {
        return None;
    }
    let day_ms = days_from_civil(y as i32, m as u32, d as u32) * MS_PER_DAY;
    let rest = &t[10..];
    if rest.is_empty() {
        return Some(day_ms);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (h, mi, s) = (
        num(rest.get(..2)?)?,
        num(rest.get(3..5)?)?,
        num(rest.get(6..8)?)?,
    );
    if rest.as_bytes()[2] != b':' || rest.as_bytes()[5] != b':' || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &rest[8..];
    let mut frac_ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms3: String = f[..digits].chars().chain("00".chars()).take(3).collect();
        frac_ms = num(&ms3)?;
        rest = &f[digits..];
    }
    let offset_ms = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = (num(rest.get(1..3)?)?, num(rest.get(4..6)?)?);
            if rest.len() != 6 || rest.as_bytes()[3] != b':' || oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3_600_000 + om * 60_000)
        }
    };
    Some(day_ms + h * 3_600_000 + mi * 60_000 + s * 1000 + frac_ms - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_days() {
        for days in [-800_000, -1, 0, 1, 59, 365, 10_957, 20_000, 2_932_896] {
            let d = civil_from_days(days);
            assert_eq!(days_from_civil(d.year, d.month, d.day), days, "{d:?}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(Date::from_ms(0).iso(), "1970-01-01");
        // 1735999999000 is 2025-01-04T14:13:19Z
        assert_eq!(Date::from_ms(1_735_999_999_000).iso(), "2025-01-04");
        assert_eq!(month_key(1_735_999_999_000), 202501);
        assert_eq!(Date::from_ms(951_782_400_000).iso(), "2000-02-29");
        assert_eq!(rfc3339_ms(1_735_999_999_123), "2025-01-04T14:13:19.123Z");
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(
            parse_rfc3339_ms("2025-01-04T14:13:19.123Z"),
            Some(1_735_999_999_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-01-04T16:13:19.1+02:00"),
            Some(1_735_999_999_100)
        );
        assert_eq!(parse_rfc3339_ms("2025-01-04"), Some(1_735_948_800_000));
        for bad in [
            "",
            "2025-13-01",
            "2025-02-30",
            "2025-01-04T25:00:00Z",
            "2025-01-04T14:13:19",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn next_month_wraps_the_year() {
        let dec = days_from_civil(2026, 12, 31) as u64 * 86_400_000 + 5;
        assert_eq!(
            next_month_start_ms(dec),
            days_from_civil(2027, 1, 1) as u64 * 86_400_000
        );
        let feb = days_from_civil(2028, 2, 10) as u64 * 86_400_000;
        assert_eq!(
            next_month_start_ms(feb),
            days_from_civil(2028, 3, 1) as u64 * 86_400_000
        );
    }
}
