//! Timestamps. Internally Werk uses milliseconds since the Unix epoch ([`Millis`]); on the wire
//! it writes RFC 3339 in UTC with `Z` and up to nine fractional digits, and reads RFC 3339 with
//! any offset.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// The latest time RFC 3339 can write (`9999-12-31T23:59:59.999Z`): later times have no
/// four-digit year and would not parse back.
pub const MAX_MILLIS: Millis = 253_402_300_799_999;

/// The current wall-clock time.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// Formats a time as the server writes it, e.g. `2025-03-04T05:06:07.891Z`.
pub fn format_millis(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => Utc
            .timestamp_millis_opt(0)
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
    }
}

/// Formats the time of an event that happened at `now` (milliseconds, as the caller read its
/// clock when the request arrived) the way Faktory writes `created_at`, `enqueued_at` and
/// `failed_at`: RFC 3339 with nine fractional digits.
///
/// Werk orders and schedules by milliseconds, but a client that reads its clock just before a
/// request must never be told the request happened earlier, which truncating to `now` would
/// do. So the sub-millisecond digits come from the wall clock read now, kept within `now`'s
/// millisecond: the result is a real instant between the request's arrival and this call,
/// never before the arrival, and parses back to `now` ([`parse_rfc3339`]). A `now` that is
/// not the current time (a test's, or the clock stepped back) gets the end of its millisecond
/// when it is past, its start when it is in the future.
pub fn format_stamp(now: Millis) -> String {
    format_stamp_at(now, Utc::now())
}

/// [`format_stamp`] with the wall clock given.
pub fn format_stamp_at(now: Millis, clock: DateTime<Utc>) -> String {
    let start = i128::from(now) * 1_000_000;
    let clock = clock.timestamp_nanos_opt().map_or(start, i128::from);
    let t = clock.clamp(start, start + 999_999);
    let secs = t.div_euclid(1_000_000_000) as i64;
    let nanos = t.rem_euclid(1_000_000_000) as u32;
    match Utc.timestamp_opt(secs, nanos).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Nanos, true),
        None => format_millis(now),
    }
}

/// Formats a time with nanosecond precision (INFO's `now`).
pub fn format_nanos(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Parses an RFC 3339 timestamp (`Z` or `±hh:mm` offset, optional fraction).
pub fn parse_rfc3339(s: &str) -> Result<Millis, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .map_err(|e| e.to_string())
}

/// The day (in the server's local time zone) that daily statistics are counted under.
pub fn local_day(ms: Millis) -> String {
    match chrono::Local.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => "1970-01-01".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_trimmed_fraction() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_millis(1_741_064_767_891), "2025-03-04T05:06:07.891Z");
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(
            parse_rfc3339("2025-03-04T05:06:07.891Z").unwrap(),
            1_741_064_767_891
        );
        assert_eq!(
            parse_rfc3339("2025-03-04T06:06:07.891+01:00").unwrap(),
            1_741_064_767_891
        );
        assert_eq!(
            parse_rfc3339("2025-03-04T05:06:07.891234567Z").unwrap(),
            1_741_064_767_891
        );
        assert!(parse_rfc3339("2025-03-04 05:06:07").is_err());
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn max_millis_is_the_last_writable_time() {
        assert_eq!(format_millis(MAX_MILLIS), "9999-12-31T23:59:59.999Z");
        assert_eq!(parse_rfc3339(&format_millis(MAX_MILLIS)), Ok(MAX_MILLIS));
        assert!(parse_rfc3339(&format_millis(MAX_MILLIS + 1)).is_err());
    }

    #[test]
    fn stamps_have_nanoseconds_within_the_millisecond() {
        let at = |ns: i64| Utc.timestamp_nanos(ns);
        let ms = 1_741_064_767_891;
        // The clock within `now`'s millisecond: its digits.
        assert_eq!(
            format_stamp_at(ms, at(ms * 1_000_000 + 234_567)),
            "2025-03-04T05:06:07.891234567Z"
        );
        // The clock already past it (the request waited): the end of that millisecond.
        assert_eq!(
            format_stamp_at(ms, at(ms * 1_000_000 + 5_000_000)),
            "2025-03-04T05:06:07.891999999Z"
        );
        // A `now` ahead of the clock: its start.
        assert_eq!(
            format_stamp_at(ms, at(ms * 1_000_000 - 1)),
            "2025-03-04T05:06:07.891000000Z"
        );
        assert_eq!(parse_rfc3339(&format_stamp(ms)), Ok(ms));
    }

    #[test]
    fn a_stamp_is_never_before_the_clock_read_before_the_request() {
        for _ in 0..1000 {
            let before = Utc::now();
            let now = now_millis(); // the request arrives
            let stamp = format_stamp(now);
            let t = DateTime::parse_from_rfc3339(&stamp).unwrap();
            assert!(t >= before, "{stamp} is before {before:?}");
            assert!(t <= Utc::now(), "{stamp} is in the future");
            assert_eq!(
                stamp.len(),
                "2025-03-04T05:06:07.891234567Z".len(),
                "{stamp}"
            );
        }
    }

    #[test]
    fn round_trips() {
        for ms in [0i64, 1, 999, 1_000, 1_741_064_767_891, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339(&format_millis(ms)).unwrap(), ms);
        }
    }
}

/// The local-time-zone days (`YYYY-MM-DD`) of the `n` days ending with the day of `today`,
/// oldest first.
pub fn local_days_back(today: Millis, n: u32) -> Vec<String> {
    let Some(t) = chrono::Local.timestamp_millis_opt(today).single() else {
        return Vec::new();
    };
    let date = t.date_naive();
    (0..n)
        .rev()
        .filter_map(|i| date.checked_sub_days(chrono::Days::new(u64::from(i))))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect()
}

#[cfg(test)]
mod day_tests {
    use super::*;

    #[test]
    fn days_back_oldest_first() {
        let days = local_days_back(1_700_000_000_000, 3);
        assert_eq!(days.len(), 3);
        assert_eq!(days[2], local_day(1_700_000_000_000));
        assert!(days[0] < days[1] && days[1] < days[2]);
    }
}
