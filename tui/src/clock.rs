//! Times as the chat UI writes them: clock times (`14:05`) and dates (`2024-06-03`) in the
//! user's time zone, and short ages (`2m`), from unix seconds and a UTC offset.
//!
//! The offset is found once at start-up ([`parse_utc_offset`] reads what `date +%z` prints)
//! and applied to every time, so a message from the other side of a daylight-saving change
//! shows an hour off; the dates and times are otherwise exact.

/// Seconds in a day.
const DAY: i64 = 86_400;

/// A moment in the user's time zone, split for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Days since 1970-01-01 in the user's time zone (to compare dates).
    pub day: i64,
    /// Year.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of the month, 1 to 31.
    pub mday: u32,
    /// Hour, 0 to 23.
    pub hour: u32,
    /// Minute, 0 to 59.
    pub minute: u32,
}

impl LocalTime {
    /// The local time of `unix` seconds at `utc_offset` seconds east of UTC.
    pub fn new(unix: u64, utc_offset: i32) -> Self {
        let secs = i64::try_from(unix).unwrap_or(i64::MAX - DAY) + i64::from(utc_offset);
        let day = secs.div_euclid(DAY);
        let in_day = secs.rem_euclid(DAY);
        let (year, month, mday) = civil_from_days(day);
        LocalTime {
            day,
            year,
            month,
            mday,
            hour: u32::try_from(in_day / 3600).unwrap_or(0),
            minute: u32::try_from(in_day % 3600 / 60).unwrap_or(0),
        }
    }

    /// `HH:MM`.
    pub fn hhmm(&self) -> String {
        format!("{:02}:{:02}", self.hour, self.minute)
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.mday)
    }
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), by Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
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

/// Parses a UTC offset as `date +%z` prints it (`+0200`, `-0530`) into seconds east of UTC.
pub fn parse_utc_offset(text: &str) -> Option<i32> {
    let text = text.trim();
    let (sign, digits) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_and_offsets() {
        // 2024-06-03 14:05:09 UTC.
        let t = 1_717_423_509;
        let utc = LocalTime::new(t, 0);
        assert_eq!(
            (utc.date(), utc.hhmm()),
            ("2024-06-03".into(), "14:05".into())
        );
        let tokyo = LocalTime::new(t, 9 * 3600);
        assert_eq!(
            (tokyo.date(), tokyo.hhmm()),
            ("2024-06-03".into(), "23:05".into())
        );
        let la = LocalTime::new(t, -15 * 3600);
        assert_eq!(
            (la.date(), la.hhmm()),
            ("2024-06-02".into(), "23:05".into())
        );
        assert_eq!(LocalTime::new(0, 0).date(), "1970-01-01");
        assert_eq!(LocalTime::new(951_782_400, 0).date(), "2000-02-29");
    }

    #[test]
    fn ages_use_one_unit() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(3 * 3600 + 5), "3h");
        assert_eq!(age(2 * 86_400), "2d");
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(parse_utc_offset("+0200\n"), Some(7200));
        assert_eq!(parse_utc_offset("-0530"), Some(-(5 * 3600 + 30 * 60)));
        assert_eq!(parse_utc_offset("+0000"), Some(0));
        assert_eq!(parse_utc_offset("0200"), None);
        assert_eq!(parse_utc_offset("+2500"), None);
        assert_eq!(parse_utc_offset("+02:00"), None);
    }
}
