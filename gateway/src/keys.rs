//! The in-memory key table: SHA-256(full key) → key record.
//!
//! Reads are the hot path (every `/v1` request) and must not block on the sync task's writes, so
//! the table is sharded behind an `ArcSwap`: a full snapshot builds a fresh table and swaps it in
//! atomically; incremental changes are upserted in place. A rotated key with a grace period is
//! found by its current and its previous key hash.
//!
//! The table may hold millions of keys, so each costs one allocation (its record, ids inline)
//! and one pointer in each index: ~280 bytes a key at 1,000,000 keys (`cargo bench --bench
//! gateway_checks` prints it).

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use hashbrown::hash_table::{Entry, HashTable};
use ipnet::IpNet;
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest. The table indexes it by its first 8 bytes as they are (`index_hash`): the
/// digest is already uniformly distributed, so hashing it again would be wasted work, and the
/// entries in the table are backend-generated keys, so an attacker cannot fill a bucket.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Parses 64 hex characters, as sent on the sync wire.
    pub fn from_hex(hex_str: &str) -> Option<Digest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_str, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({}…)", hex::encode(&self.0[..4]))
    }
}

impl Digest {
    fn index_hash(&self) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        u64::from_ne_bytes(word)
    }
}

/// A fast non-cryptographic hasher (the FxHash mix) for maps keyed by key ids. Key ids come from
/// the backend's table, never from clients, so flooding protection (SipHash) buys nothing here
/// while costing a noticeable share of the per-request budget.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for b in chunks.remainder() {
            self.add(u64::from(*b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

impl IdHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(FX_SEED);
    }
}

pub type IdHashBuilder = BuildHasherDefault<IdHasher>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Free,
    WizBot,
    WizPro,
}

impl Plan {
    pub fn parse(s: &str) -> Option<Plan> {
        match s {
            "free" => Some(Plan::Free),
            "wiz_bot" => Some(Plan::WizBot),
            "wiz_pro" => Some(Plan::WizPro),
            _ => None,
        }
    }

    pub fn allows_api(self) -> bool {
        !matches!(self, Plan::Free)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Revoked,
}

/// The old key + secret of a rotated key, valid until `valid_until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousPair {
    pub key_hash: Digest,
    pub secret_hash: Digest,
    pub valid_until_ms: i64,
}

/// Compiled IP whitelist. `None` nets means "any address". Cloning shares the list: keys with
/// the same whitelist hold one copy (see `sync::WhitelistCache`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Whitelist {
    nets: Option<Arc<[IpNet]>>,
}

impl Whitelist {
    pub fn any() -> Whitelist {
        Whitelist { nets: None }
    }

    /// Compiles whitelist entries (addresses or CIDRs). Entries that do not parse are dropped;
    /// if that leaves nothing from a non-empty list, the whitelist denies everything rather than
    /// silently turning into "any address".
    pub fn compile<S: AsRef<str>>(entries: &[S]) -> (Whitelist, Vec<String>) {
        if entries.is_empty() {
            return (Whitelist::any(), Vec::new());
        }
        let mut nets = Vec::with_capacity(entries.len());
        let mut rejected = Vec::new();
        for entry in entries {
            match parse_net(entry.as_ref()) {
                Some(net) => nets.push(net),
                None => rejected.push(entry.as_ref().to_owned()),
            }
        }
        (
            Whitelist {
                nets: Some(nets.into()),
            },
            rejected,
        )
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        match &self.nets {
            None => true,
            Some(nets) => {
                let ip = ip.to_canonical();
                nets.iter().any(|net| net.contains(&ip))
            }
        }
    }

    pub fn is_any(&self) -> bool {
        self.nets.is_none()
    }
}

/// Parses an address or CIDR into a network, mapping IPv4-mapped IPv6 (`::ffff:a.b.c.d`) to
/// plain IPv4 so both spellings of one client match.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    Some(canonical_net(net).trunc())
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

/// A short string kept inline: key and account ids as the backend issues them (`key_` or `acc_`
/// plus a 26-character ULID, 30 bytes) and key prefixes. A million-key table of heap strings
/// paid a separate allocation (and malloc's chunk overhead) per id; inline they cost no
/// allocation and no pointer to chase. Longer strings (never issued today) go to the heap.
/// Hand-written because the inline-string crates stop at 23–24 bytes (`smol_str`,
/// `compact_str`), and without `unsafe` the bytes are validated as UTF-8 on each read: for
/// 30 ASCII bytes that is a few nanoseconds.
#[derive(Clone)]
pub enum InlineStr {
    Inline { len: u8, bytes: [u8; INLINE_LEN] },
    Heap(Box<str>),
}

const INLINE_LEN: usize = 30;

impl InlineStr {
    pub fn new(s: &str) -> InlineStr {
        if s.len() <= INLINE_LEN {
            let mut bytes = [0u8; INLINE_LEN];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            InlineStr::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            InlineStr::Heap(s.into())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Built from a `&str` cut at its end, so always valid UTF-8.
            InlineStr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            InlineStr::Heap(s) => s,
        }
    }
}

impl std::ops::Deref for InlineStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for InlineStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for InlineStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for InlineStr {}

/// Hashes as the `str` it holds, so maps keyed by it can be searched with a `&str`.
impl Hash for InlineStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::fmt::Debug for InlineStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for InlineStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for InlineStr {
    fn from(s: &str) -> InlineStr {
        InlineStr::new(s)
    }
}

impl From<String> for InlineStr {
    fn from(s: String) -> InlineStr {
        InlineStr::new(&s)
    }
}

/// One API key as the gateway needs it: kept small, since the table may hold millions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: InlineStr,
    pub account_id: InlineStr,
    pub prefix: InlineStr,
    pub key_hash: Digest,
    pub secret_hash: Digest,
    pub previous: Option<Box<PreviousPair>>,
    pub status: KeyStatus,
    pub expires_at_ms: Option<i64>,
    pub plan: Plan,
    pub rate_limit_per_minute: u32,
    pub daily_limit: u32,
    pub whitelist: Whitelist,
}

impl KeyRecord {
    /// The secret hash that goes with `key_hash`, if that key hash is (still) valid for this record.
    pub fn secret_hash_for(&self, key_hash: &Digest, now_ms: i64) -> Option<&Digest> {
        if self.key_hash == *key_hash {
            return Some(&self.secret_hash);
        }
        match &self.previous {
            Some(p) if p.key_hash == *key_hash && now_ms < p.valid_until_ms => Some(&p.secret_hash),
            _ => None,
        }
    }
}

/// Shards of an index: writers (the sync task) lock one shard at a time, readers are never
/// blocked by a write elsewhere in the table.
const SHARDS: usize = 16;

/// A hash index over the records. A slot holds only the record's pointer (8 bytes): what it is
/// searched by is read from the record itself, where a map of (key, value) pairs spent 40 bytes
/// a slot. `key_hash` says which hash a record is filed under in this index.
struct Index {
    shards: Box<[RwLock<HashTable<Arc<KeyRecord>>>]>,
    key_hash: fn(&KeyRecord) -> u64,
}

impl Index {
    fn new(capacity: usize, key_hash: fn(&KeyRecord) -> u64) -> Index {
        Index {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashTable::with_capacity(capacity / SHARDS)))
                .collect(),
            key_hash,
        }
    }

    /// Bits 32–35 pick the shard: hashbrown uses the low bits for the bucket and the top seven
    /// for its tags, so these leave both their full spread within a shard.
    fn shard(&self, hash: u64) -> &RwLock<HashTable<Arc<KeyRecord>>> {
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    fn find(&self, hash: u64, eq: impl Fn(&KeyRecord) -> bool) -> Option<Arc<KeyRecord>> {
        let shard = self.shard(hash).read().unwrap_or_else(|p| p.into_inner());
        shard.find(hash, |r| eq(r)).cloned()
    }

    /// Files `record` under `hash`, replacing a record `eq` says is the same.
    fn insert(&self, hash: u64, record: Arc<KeyRecord>, eq: impl Fn(&KeyRecord) -> bool) {
        let mut shard = self.shard(hash).write().unwrap_or_else(|p| p.into_inner());
        match shard.entry(hash, |r| eq(r), |r| (self.key_hash)(r)) {
            Entry::Occupied(mut slot) => *slot.get_mut() = record,
            Entry::Vacant(slot) => {
                slot.insert(record);
            }
        }
    }

    /// Removes `record` itself (not another record filed under the same hash).
    fn remove(&self, hash: u64, record: &Arc<KeyRecord>) {
        let mut shard = self.shard(hash).write().unwrap_or_else(|p| p.into_inner());
        if let Ok(slot) = shard.find_entry(hash, |r| Arc::ptr_eq(r, record)) {
            slot.remove();
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

fn id_hash(id: &str) -> u64 {
    IdHashBuilder::default().hash_one(id)
}

fn by_key_hash(r: &KeyRecord) -> u64 {
    r.key_hash.index_hash()
}

fn by_previous_hash(r: &KeyRecord) -> u64 {
    r.previous.as_ref().map_or(0, |p| p.key_hash.index_hash())
}

fn by_id(r: &KeyRecord) -> u64 {
    id_hash(&r.id)
}

struct Tables {
    by_key: Index,
    /// Rotated keys in their grace period, by the previous key hash (few at any time).
    by_previous: Index,
    by_id: Index,
}

impl Tables {
    fn with_capacity(n: usize) -> Tables {
        Tables {
            by_key: Index::new(n, by_key_hash),
            by_previous: Index::new(0, by_previous_hash),
            by_id: Index::new(n, by_id),
        }
    }

    fn lookup(&self, key_hash: &Digest) -> Option<Arc<KeyRecord>> {
        let hash = key_hash.index_hash();
        self.by_key
            .find(hash, |r| r.key_hash == *key_hash)
            .or_else(|| {
                self.by_previous.find(hash, |r| {
                    r.previous.as_ref().is_some_and(|p| p.key_hash == *key_hash)
                })
            })
    }

    fn insert(&self, record: Arc<KeyRecord>) {
        let id = id_hash(&record.id);
        if let Some(old) = self.by_id.find(id, |r| r.id == record.id) {
            self.by_key.remove(by_key_hash(&old), &old);
            if old.previous.is_some() {
                self.by_previous.remove(by_previous_hash(&old), &old);
            }
        }
        if let Some(p) = &record.previous {
            let previous = p.key_hash;
            self.by_previous
                .insert(by_previous_hash(&record), record.clone(), |r| {
                    r.previous.as_ref().is_some_and(|p| p.key_hash == previous)
                });
        }
        let key_hash = record.key_hash;
        self.by_key
            .insert(by_key_hash(&record), record.clone(), |r| {
                r.key_hash == key_hash
            });
        let key_id = record.id.clone();
        self.by_id.insert(id, record, |r| r.id == key_id);
    }
}

/// The key table plus the sync bookkeeping the metrics report.
pub struct KeyTable {
    tables: ArcSwap<Tables>,
    version: AtomicU64,
    /// Unix ms of the last successful answer from the backend; 0 = never.
    last_sync_ms: AtomicI64,
    /// A whole table has been installed at least once: until then an unknown key proves nothing.
    loaded: AtomicBool,
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable::new()
    }
}

impl KeyTable {
    pub fn new() -> KeyTable {
        KeyTable {
            tables: ArcSwap::from_pointee(Tables::with_capacity(0)),
            version: AtomicU64::new(0),
            last_sync_ms: AtomicI64::new(0),
            loaded: AtomicBool::new(false),
        }
    }

    pub fn lookup(&self, key_hash: &Digest) -> Option<Arc<KeyRecord>> {
        self.tables.load().lookup(key_hash)
    }

    pub fn get_by_id(&self, id: &str) -> Option<Arc<KeyRecord>> {
        self.tables.load().by_id.find(id_hash(id), |r| &*r.id == id)
    }

    /// Replaces the whole table at once (a full snapshot).
    pub fn replace_all(&self, records: Vec<KeyRecord>, version: u64) {
        let tables = Tables::with_capacity(records.len());
        for r in records {
            tables.insert(Arc::new(r));
        }
        self.tables.store(Arc::new(tables));
        self.version.store(version, Ordering::Release);
        self.loaded.store(true, Ordering::Release);
    }

    /// Whether a full table has ever been installed.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Upserts changed records by id (an incremental sync answer).
    pub fn upsert(&self, records: Vec<KeyRecord>, version: u64) {
        let tables = self.tables.load();
        for r in records {
            tables.insert(Arc::new(r));
        }
        self.version.store(version, Ordering::Release);
    }

    /// Number of distinct keys (not counting grace-period aliases).
    pub fn len(&self) -> usize {
        self.tables.load().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn mark_synced(&self, now_ms: i64) {
        self.last_sync_ms.store(now_ms, Ordering::Release);
    }

    pub fn last_sync_ms(&self) -> Option<i64> {
        match self.last_sync_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(ms),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn record(id: &str, key: &str, secret: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            account_id: "acc_1".into(),
            prefix: key[..12].into(),
            key_hash: Digest::of(key.as_bytes()),
            secret_hash: Digest::of(secret.as_bytes()),
            previous: None,
            status: KeyStatus::Active,
            expires_at_ms: None,
            plan: Plan::WizPro,
            rate_limit_per_minute: 60,
            daily_limit: 1000,
            whitelist: Whitelist::any(),
        }
    }

    #[test]
    fn inline_strings_read_back_and_find_map_entries_by_str() {
        use std::collections::HashMap;
        let short = InlineStr::from("key_01jq3v4m5n6p7q8r9s0t1v2w3x");
        assert_eq!(short.len(), 30);
        assert!(matches!(short, InlineStr::Inline { .. }));
        let long_id = "key_".to_owned() + &"z".repeat(60);
        let long = InlineStr::from(long_id.as_str());
        assert!(matches!(long, InlineStr::Heap(_)));
        assert_eq!(&*long, long_id);
        assert_eq!(
            InlineStr::from("pk_live_äb"),
            InlineStr::from("pk_live_äb".to_owned())
        );
        assert_eq!(format!("{short}"), "key_01jq3v4m5n6p7q8r9s0t1v2w3x");
        let mut map: HashMap<InlineStr, u32, IdHashBuilder> = HashMap::default();
        map.insert(short.clone(), 1);
        map.insert(long, 2);
        assert_eq!(map.get("key_01jq3v4m5n6p7q8r9s0t1v2w3x"), Some(&1));
        assert_eq!(map.get(long_id.as_str()), Some(&2));
    }

    #[test]
    fn table_finds_many_keys_by_hash_and_id_and_forgets_replaced_ones() {
        let t = KeyTable::new();
        let key = |i: usize| format!("pk_live_{i:032}");
        let secret = "sk_live_0000000000000000000000000000000000000000";
        let records = (0..5_000)
            .map(|i| record(&format!("key_{i}"), &key(i), secret))
            .collect();
        t.replace_all(records, 1);
        assert_eq!(t.len(), 5_000);
        for i in (0..5_000).step_by(7) {
            let r = t.lookup(&Digest::of(key(i).as_bytes())).unwrap();
            assert_eq!(&*r.id, format!("key_{i}"));
            assert!(Arc::ptr_eq(&r, &t.get_by_id(&r.id).unwrap()));
        }
        assert!(t.lookup(&Digest::of(key(5_000).as_bytes())).is_none());
        assert!(t.get_by_id("key_5000").is_none());
        // Key 3 gets a new key without grace: its old hash finds nothing, its new one finds it.
        t.upsert(vec![record("key_3", &key(9_003), secret)], 2);
        assert!(t.lookup(&Digest::of(key(3).as_bytes())).is_none());
        assert_eq!(
            &*t.lookup(&Digest::of(key(9_003).as_bytes())).unwrap().id,
            "key_3"
        );
        assert_eq!(t.len(), 5_000);
    }

    #[test]
    fn sha256_matches_known_vector() {
        let d = Digest::of(b"abc");
        assert_eq!(
            hex::encode(d.0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::from_hex(&hex::encode(d.0)), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
    }

    #[test]
    fn whitelist_v4_v6_and_mapped() {
        let (wl, rejected) = Whitelist::compile(&["203.0.113.7", "10.0.0.0/8", "2001:db8::/32"]);
        assert!(rejected.is_empty());
        assert!(wl.allows("203.0.113.7".parse().unwrap()));
        assert!(!wl.allows("203.0.113.8".parse().unwrap()));
        assert!(wl.allows("10.200.3.4".parse().unwrap()));
        assert!(!wl.allows("11.0.0.1".parse().unwrap()));
        assert!(wl.allows("2001:db8:1::5".parse().unwrap()));
        assert!(!wl.allows("2001:db9::1".parse().unwrap()));
        // An IPv4 client seen through a dual-stack socket.
        assert!(wl.allows("::ffff:203.0.113.7".parse().unwrap()));
        assert!(wl.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!wl.allows("::ffff:203.0.113.9".parse().unwrap()));
        // A whitelist written in mapped form matches the plain IPv4 client.
        let (wl, _) = Whitelist::compile(&["::ffff:192.0.2.0/120"]);
        assert!(wl.allows("192.0.2.77".parse().unwrap()));
        assert!(!wl.allows("192.0.3.1".parse().unwrap()));
    }

    #[test]
    fn whitelist_empty_is_any_and_garbage_is_none() {
        let (wl, _) = Whitelist::compile::<&str>(&[]);
        assert!(wl.is_any());
        assert!(wl.allows("8.8.8.8".parse().unwrap()));
        let (wl, rejected) = Whitelist::compile(&["not-an-ip"]);
        assert_eq!(rejected, vec!["not-an-ip".to_string()]);
        assert!(!wl.allows("8.8.8.8".parse().unwrap()));
        // Host bits in a CIDR are ignored.
        let (wl, _) = Whitelist::compile(&["10.1.2.3/8"]);
        assert!(wl.allows("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn table_upsert_replaces_old_hashes_and_keeps_previous() {
        let t = KeyTable::new();
        let k1 = "pk_live_0000000000000000000000000000000a";
        let k2 = "pk_live_0000000000000000000000000000000b";
        let s = "sk_live_0000000000000000000000000000000000000000";
        t.replace_all(vec![record("key_1", k1, s)], 1);
        assert!(t.lookup(&Digest::of(k1.as_bytes())).is_some());

        // Rotation with grace: the new key is current, the old one previous.
        let mut rotated = record("key_1", k2, s);
        rotated.previous = Some(Box::new(PreviousPair {
            key_hash: Digest::of(k1.as_bytes()),
            secret_hash: Digest::of(s.as_bytes()),
            valid_until_ms: 1_000,
        }));
        t.upsert(vec![rotated], 2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.version(), 2);
        let via_old = t.lookup(&Digest::of(k1.as_bytes())).unwrap();
        assert!(via_old
            .secret_hash_for(&Digest::of(k1.as_bytes()), 999)
            .is_some());
        assert!(via_old
            .secret_hash_for(&Digest::of(k1.as_bytes()), 1_000)
            .is_none());

        // Grace over: the backend drops `previous` and the old hash leaves the table.
        t.upsert(vec![record("key_1", k2, s)], 3);
        assert!(t.lookup(&Digest::of(k1.as_bytes())).is_none());
        assert!(t.lookup(&Digest::of(k2.as_bytes())).is_some());
        assert_eq!(
            t.get_by_id("key_1").unwrap().key_hash,
            Digest::of(k2.as_bytes())
        );
    }
}
