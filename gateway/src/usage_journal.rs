//! The usage journal: with the in-process `memory` limit store, accepted requests not yet
//! reported to the backend live only in this process. A gateway killed with SIGKILL would lose
//! them, and its successor, seeded from the backend's usage, could admit them again. So each
//! key's unreported count is also written to a small file before the request goes upstream: a
//! `pwrite` of 16 bytes into the page cache, which the kernel keeps when the process dies. At
//! start the successor reads the file and reports what was left to the backend before its first
//! key snapshot (whose usage seeds the daily counters): the cap stays exact across a SIGKILL.
//! (Not across a power loss: pages not yet written back go with the machine; the README says so.)
//!
//! Written here rather than taken from a crate: it is a fixed-size table of counters at known
//! offsets of one file. A shared memory mapping would spare the syscall, but needs `unsafe`,
//! which this workspace forbids.
//!
//! Layout: a 64-byte header (magic), then `SLOTS` slots of 64 bytes: key length (1 byte), key id
//! (up to 40 bytes), then at offset 48 the minute of the latest change and the count (i64 each,
//! little endian). A slot belongs to one key id until the file is reset, which happens when a
//! process starts with nothing left to replay. Key ids beyond `SLOTS` distinct ones in one
//! process lifetime go unjournaled (the bounded loss of a flush interval applies to them).

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::Path,
    sync::Mutex,
};

use crate::sync::wire::UsageEntry;

const SLOTS: usize = 65_536;
const SLOT_BYTES: usize = 64;
const KEY_BYTES: usize = 40;
const VALUES_AT: usize = 48;
const MAGIC: &[u8; 8] = b"WIZUSE01";
const HEADER_BYTES: usize = SLOT_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("another process holds the journal")]
    Locked,
}

struct Counter {
    slot: usize,
    minute: i64,
    count: i64,
}

pub struct UsageJournal {
    /// Locked for this process: one writer per journal file.
    file: File,
    /// The file's slots as this process knows them; the lock also orders each key's writes.
    slots: Mutex<HashMap<String, Counter>>,
    /// Counts found at open, before any change by this process.
    found: Vec<UsageEntry>,
}

impl UsageJournal {
    /// Opens (or creates) the journal at `path`, locked for this process.
    pub fn open(path: &Path) -> Result<UsageJournal, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)?
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(JournalError::Locked),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let size = (HEADER_BYTES + SLOTS * SLOT_BYTES) as u64;
        let mut bytes = Vec::new();
        if file.metadata()?.len() == size {
            bytes = vec![0; size as usize];
            file.read_exact_at(&mut bytes, 0)?;
        }
        if bytes.len() != size as usize || &bytes[..MAGIC.len()] != MAGIC {
            file.set_len(0)?;
            file.set_len(size)?;
            file.write_all_at(MAGIC, 0)?;
            bytes = vec![0; size as usize];
        }
        let mut slots = HashMap::new();
        let mut found = Vec::new();
        for (index, slot) in bytes[HEADER_BYTES..].chunks(SLOT_BYTES).enumerate() {
            let len = slot[0] as usize;
            if len == 0 || len > KEY_BYTES {
                continue;
            }
            let Ok(key_id) = std::str::from_utf8(&slot[1..1 + len]) else {
                continue;
            };
            let minute = i64::from_le_bytes(slot[VALUES_AT..VALUES_AT + 8].try_into().unwrap());
            let count = i64::from_le_bytes(slot[VALUES_AT + 8..VALUES_AT + 16].try_into().unwrap());
            if count > 0 {
                found.push(UsageEntry {
                    key_id: key_id.to_owned(),
                    minute,
                    accepted: count as u64,
                    refused: Default::default(),
                    last_used_at_ms: minute * 1000,
                });
            }
            slots.insert(
                key_id.to_owned(),
                Counter {
                    slot: index,
                    minute,
                    count,
                },
            );
        }
        Ok(UsageJournal {
            file,
            slots: Mutex::new(slots),
            found,
        })
    }

    fn offset(slot: usize) -> u64 {
        (HEADER_BYTES + slot * SLOT_BYTES) as u64
    }

    /// Adds `delta` accepted requests for `key_id` (negative: taken back); false if the key could
    /// not be journaled (table full, id too long, or the write failed).
    pub fn add(&self, key_id: &str, minute: i64, delta: i64) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let taken = slots.len();
        let counter = match slots.get_mut(key_id) {
            Some(counter) => counter,
            None => {
                if taken >= SLOTS || key_id.is_empty() || key_id.len() > KEY_BYTES {
                    return false;
                }
                let mut slot = [0u8; SLOT_BYTES];
                slot[0] = key_id.len() as u8;
                slot[1..1 + key_id.len()].copy_from_slice(key_id.as_bytes());
                if self.file.write_all_at(&slot, Self::offset(taken)).is_err() {
                    return false;
                }
                slots.entry(key_id.to_owned()).or_insert(Counter {
                    slot: taken,
                    minute,
                    count: 0,
                })
            }
        };
        counter.minute = counter.minute.max(minute);
        counter.count += delta;
        let mut values = [0u8; 16];
        values[..8].copy_from_slice(&counter.minute.to_le_bytes());
        values[8..].copy_from_slice(&counter.count.to_le_bytes());
        self.file
            .write_all_at(&values, Self::offset(counter.slot) + VALUES_AT as u64)
            .is_ok()
    }

    /// The backend acknowledged these entries: they are no longer at risk.
    pub fn acknowledge(&self, entries: &[UsageEntry]) {
        for e in entries.iter().filter(|e| e.accepted > 0) {
            self.add(&e.key_id, e.minute, -(e.accepted as i64));
        }
    }

    /// What a previous process left unreported, one entry per key.
    pub fn unreported(&self) -> Vec<UsageEntry> {
        self.found.clone()
    }

    /// Empties the table (nothing left to replay), so its slots serve this process's keys.
    pub fn reset(&mut self) -> Result<(), JournalError> {
        let size = self.file.metadata()?.len();
        self.file.set_len(HEADER_BYTES as u64)?;
        self.file.set_len(size)?;
        self.slots
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.found.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key_id: &str, minute: i64, accepted: u64) -> UsageEntry {
        UsageEntry {
            key_id: key_id.into(),
            minute,
            accepted,
            refused: Default::default(),
            last_used_at_ms: 0,
        }
    }

    #[test]
    fn counts_survive_reopening_and_acknowledgements_subtract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/usage.journal");
        {
            let journal = UsageJournal::open(&path).unwrap();
            assert!(journal.unreported().is_empty());
            for _ in 0..5 {
                assert!(journal.add("key_a", 60, 1));
            }
            assert!(journal.add("key_b", 120, 1));
            journal.add("key_b", 120, -1);
            journal.acknowledge(&[entry("key_a", 60, 2)]);
            // A second process cannot take the journal while this one holds it.
            assert!(matches!(
                UsageJournal::open(&path),
                Err(JournalError::Locked)
            ));
            // Dropped without any shutdown step, as a SIGKILL would leave it.
        }
        let journal = UsageJournal::open(&path).unwrap();
        let left = journal.unreported();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(
            (left[0].key_id.as_str(), left[0].accepted, left[0].minute),
            ("key_a", 3, 60)
        );
        // Counting goes on in the same slot until the replay is acknowledged.
        journal.add("key_a", 180, 1);
        journal.acknowledge(&[entry("key_a", 180, 4)]);
        drop(journal);
        let journal = UsageJournal::open(&path).unwrap();
        assert!(journal.unreported().is_empty());
        drop(journal);
        let mut journal = UsageJournal::open(&path).unwrap();
        journal.add("key_c", 60, 2);
        journal.reset().unwrap();
        drop(journal);
        assert!(UsageJournal::open(&path).unwrap().unreported().is_empty());
    }

    #[test]
    fn many_keys_and_too_long_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let journal = UsageJournal::open(&path).unwrap();
        for i in 0..5_000 {
            assert!(journal.add(&format!("key_{i:026}"), 60, 1));
        }
        assert!(!journal.add(&"k".repeat(KEY_BYTES + 1), 60, 1));
        drop(journal);
        assert_eq!(UsageJournal::open(&path).unwrap().unreported().len(), 5_000);
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, b"something else").unwrap();
        let journal = UsageJournal::open(&path).unwrap();
        assert!(journal.unreported().is_empty());
        assert!(journal.add("key_a", 60, 1));
    }
}
