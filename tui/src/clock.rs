//! Times as the chat UI writes them: clock times (`14:05`) and dates (`2024-06-03`) in the
//! user's time zone, and short ages (`2m`), from unix seconds.
//!
//! The calendar and the time zone are `jiff`'s: the zone is the system's (`TZ`, else
//! `/etc/localtime`), looked up once at start-up, and its rules are applied to each moment, so
//! a message from the other side of a daylight-saving change shows the time it had then.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A moment in the user's time zone, split for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime(DateTime);

impl LocalTime {
    /// The local time of `unix` seconds in time zone `tz`; a moment beyond what the calendar
    /// holds (the end of year 9999) is shown as the last one it holds.
    pub fn new(unix: u64, tz: &TimeZone) -> Self {
        let at = i64::try_from(unix)
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok())
            .unwrap_or(Timestamp::MAX);
        LocalTime(at.to_zoned_datetime(tz.clone()).datetime())
    }

    /// The calendar day (to compare dates).
    pub fn day(&self) -> Date {
        self.0.date()
    }

    /// `HH:MM`.
    pub fn hhmm(&self) -> String {
        format!("{:02}:{:02}", self.0.hour(), self.0.minute())
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        self.0.date().to_string()
    }
}

/// A duration in one short unit: `45s`, `2m`, `3h`, `2d`.
pub fn age(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::offset;

    #[test]
    fn a_fixed_timestamp_renders_in_utc() {
        // 2024-06-03 14:05:09 UTC.
        let utc = LocalTime::new(1_717_423_509, &TimeZone::UTC);
        assert_eq!(
            (utc.date(), utc.hhmm()),
            ("2024-06-03".into(), "14:05".into())
        );
        assert_eq!(LocalTime::new(0, &TimeZone::UTC).date(), "1970-01-01");
        assert_eq!(
            LocalTime::new(951_782_400, &TimeZone::UTC).date(),
            "2000-02-29"
        );
        assert!(LocalTime::new(u64::MAX, &TimeZone::UTC)
            .date()
            .starts_with("9999-12-"));
    }

    #[test]
    fn offsets_move_the_time_and_the_date() {
        let t = 1_717_423_509;
        let tokyo = LocalTime::new(t, &TimeZone::fixed(offset(9)));
        assert_eq!(
            (tokyo.date(), tokyo.hhmm()),
            ("2024-06-03".into(), "23:05".into())
        );
        let west = LocalTime::new(t, &TimeZone::fixed(offset(-15)));
        assert_eq!(
            (west.date(), west.hhmm()),
            ("2024-06-02".into(), "23:05".into())
        );
        assert_ne!(west.day(), tokyo.day());
    }

    #[test]
    fn daylight_saving_applies_at_each_moment() {
        // New York's rules as a POSIX TZ string, so the test needs no zone database.
        let new_york = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        // 2024-06-03 14:05 UTC is summer time (UTC-4); 2024-12-03 14:05 UTC is winter (UTC-5).
        assert_eq!(LocalTime::new(1_717_423_509, &new_york).hhmm(), "10:05");
        assert_eq!(LocalTime::new(1_733_234_709, &new_york).hhmm(), "09:05");
    }

    #[test]
    fn ages_use_one_unit() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(3 * 3600 + 5), "3h");
        assert_eq!(age(2 * 86_400), "2d");
    }
}
