//! The HTTP `Date` header (`docs/spec.md` §11.1, clock skew): the one form servers must send,
//! RFC 9110's IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), read into Unix seconds, so that
//! a client can compare its clock with an authority's. Pure; anything else is `None`.

/// Unix seconds of an IMF-fixdate, or `None` if `text` is not one (the obsolete RFC 850 and
/// asctime forms included: an authority sends the fixed form).
pub fn parse_http_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = DAYS.iter().position(|d| d.as_bytes() == &b[..3])?;
    let num = |from: usize, len: usize| -> Option<u64> {
        let digits = b.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(sep(7, b' ') && sep(11, b' ') && sep(16, b' ') && sep(19, b':') && sep(22, b':')) {
        return None;
    }
    let day = num(5, 2)?;
    let month = 1 + MONTHS.iter().position(|m| m.as_bytes() == &b[8..11])? as u64;
    let year = num(12, 4)?;
    let (hour, min, sec) = (num(17, 2)?, num(20, 2)?, num(23, 2)?);
    // A leap second (60) is read as the next second.
    if year < 1970 || day == 0 || day > days_in_month(year, month) || hour > 23 || min > 59 {
        return None;
    }
    if sec > 60 {
        return None;
    }
    let days = days_since_epoch(year, month, day);
    // 1970-01-01 was a Thursday.
    if (days + 3) % 7 != weekday as u64 {
        return None;
    }
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the date (year ≥ 1970, month 1–12).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let years: u64 = (1970..year)
        .map(|y| if is_leap(y) { 366 } else { 365 })
        .sum();
    let months: u64 = (1..month).map(|m| days_in_month(year, m)).sum();
    years + months + day - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixdates_read_as_unix_seconds() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        // RFC 9110's example.
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT"),
            Some(1_709_251_199)
        );
        assert_eq!(
            parse_http_date("Tue, 01 Dec 2026 03:30:00 GMT"),
            Some(1_796_095_800)
        );
    }

    #[test]
    fn anything_else_is_none() {
        for bad in [
            "",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Fri, 29 Feb 2023 00:00:00 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Xyz 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:3x GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT ",
            "Wed, 31 Dec 1969 23:59:59 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }
}
