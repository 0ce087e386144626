//! Public ids are a type prefix and a lowercase ULID (`con_01jd...`): readable in logs, unique
//! across backends without coordination, and time-ordered, so `ORDER BY id` is creation order
//! and an id is a stable pagination cursor.

use std::sync::Mutex;

/// A process-wide generator, because ULIDs minted independently in the same millisecond come
/// out in random order, and events, messages and list cursors rely on `ORDER BY id` being
/// creation order. The generator increments the random part within a millisecond instead.
/// It holds no configuration or per-test state, so sharing it across tests is harmless.
static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

pub fn new_id(prefix: &str) -> String {
    let ulid = {
        let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        generator
            .get_or_insert_with(ulid::Generator::new)
            .generate()
            // Only fails after 2^80 ids in one millisecond; a fresh random ULID is still unique.
            .unwrap_or_else(|_| ulid::Ulid::new())
    };
    format!("{prefix}_{}", ulid.to_string().to_ascii_lowercase())
}

/// Milliseconds since the Unix epoch: how every timestamp is stored (portable across SQLite and
/// PostgreSQL as a BIGINT).
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
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
    fn ids_are_prefixed_and_ordered() {
        let a = new_id("con");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("con");
        assert!(a.starts_with("con_") && a.len() == 30);
        assert!(a < b);
        // Within one millisecond too.
        let many: Vec<_> = (0..1000).map(|_| new_id("evt")).collect();
        assert!(many.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_028_800_123), "2025-11-25T00:00:00.123Z");
    }
}
