//! Time as the backend stores and shows it: milliseconds since the Unix epoch in the database
//! (a BIGINT, portable across SQLite and PostgreSQL), RFC 3339 in the API, seconds where the
//! gateway's proofs count them.

/// Now, in milliseconds since the Unix epoch: how every timestamp is stored.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// Now, in whole seconds since the Unix epoch (the gateway's request proofs carry these).
pub fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 in UTC with exactly three fractional digits, how timestamps are shown in the API.
/// Fixed width, so timestamps sort as text the way they sort in time.
pub fn rfc3339(ms: i64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_028_800_123), "2025-11-25T00:00:00.123Z");
    }
}
