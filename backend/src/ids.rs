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
}
