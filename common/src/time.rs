//! Timestamps as the API and the subscribers see them: RFC 3339, UTC, millisecond precision.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The current time, formatted for a JSON field.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(at: OffsetDateTime) -> String {
    let millis = at.millisecond();
    let truncated = at
        .replace_nanosecond(u32::from(millis) * 1_000_000)
        .unwrap_or(at);
    // Formatting a UTC date between years 0 and 9999 cannot fail; the fallback keeps the
    // function total without a panic path.
    truncated
        .format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
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
