//! Public ids are a type prefix and a lowercase ULID (`con_01jd...`): readable in logs, unique
//! across backends without coordination, and time-ordered, so `ORDER BY id` is creation order
//! and an id is a stable pagination cursor.

pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// Milliseconds since the Unix epoch: how every timestamp is stored (portable across SQLite and
/// PostgreSQL as a BIGINT).
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// RFC 3339 in UTC, how timestamps are shown in the API.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_ordered() {
        let a = new_id("con");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("con");
        assert!(a.starts_with("con_") && a.len() == 30);
        assert!(a < b);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_028_800_123), "2025-11-25T00:00:00.123Z");
    }
}
