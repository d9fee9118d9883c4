//! Timestamps as the API and the subscribers see them: RFC 3339, UTC, millisecond precision.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The current time, formatted for a JSON field.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// Always the same width (`2026-05-01T10:00:00.000Z`), so these strings also sort in time order.
pub fn format_rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Unix milliseconds as [`format_rfc3339`] writes them.
pub fn rfc3339_from_millis(millis: u64) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    format_rfc3339(
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH),
    )
}

/// An RFC 3339 date-time as Unix milliseconds; `None` when it does not parse or is before 1970.
pub fn millis_from_rfc3339(text: &str) -> Option<u64> {
    let at = parse_rfc3339(text)?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

pub fn unix_millis_now() -> u64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    u64::try_from(nanos / 1_000_000).unwrap_or(0)
}

/// Parses an RFC 3339 timestamp (any offset).
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

pub fn unix_seconds_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millisecond_precision_in_utc() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_614_265_330_123_456_789).unwrap();
        assert_eq!(format_rfc3339(at), "2021-02-25T15:02:10.123Z");
        let whole = OffsetDateTime::from_unix_timestamp(1_614_265_330).unwrap();
        assert_eq!(format_rfc3339(whole), "2021-02-25T15:02:10.000Z");
        let offset = parse_rfc3339("2026-05-01T10:00:00+02:00").unwrap();
        assert_eq!(format_rfc3339(offset), "2026-05-01T08:00:00.000Z");
    }

    #[test]
    fn parses_offsets_and_rejects_garbage() {
        let at = parse_rfc3339("2026-05-01T10:00:00+02:00").unwrap();
        assert_eq!(
            at.unix_timestamp(),
            parse_rfc3339("2026-05-01T08:00:00Z")
                .unwrap()
                .unix_timestamp()
        );
        assert!(parse_rfc3339("2026-05-01 10:00").is_none());
        assert!(parse_rfc3339("tomorrow").is_none());
    }
}
