//! The in-memory key table: SHA-256(full key) → key record.
//!
//! Reads are the hot path (every `/v1` request) and must not block on the sync task's writes, so
//! the table is a sharded `DashMap` behind an `ArcSwap`: a full snapshot builds a fresh table and
//! swaps it in atomically; incremental changes are upserted in place. A rotated key with a grace
//! period has two entries (current and previous key hash) pointing at the same record.

use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use ipnet::IpNet;
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest. Its `Hash` feeds only its first 8 bytes to an identity hasher: the digest is
/// already uniformly distributed, so running SipHash over it again would be wasted work, and the
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

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_ne_bytes(word));
    }
}

#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if someone hashes something other than a Digest with this hasher.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByHash = DashMap<Digest, Arc<KeyRecord>, BuildHasherDefault<DigestHasher>>;

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

/// Compiled IP whitelist. `None` nets means "any address".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Whitelist {
    nets: Option<Box<[IpNet]>>,
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
                nets: Some(nets.into_boxed_slice()),
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

/// One API key as the gateway needs it: kept small, since the table may hold millions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: Arc<str>,
    pub account_id: Box<str>,
    pub prefix: Box<str>,
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

struct Tables {
    by_hash: ByHash,
    by_id: DashMap<Arc<str>, Arc<KeyRecord>>,
}

impl Tables {
    fn with_capacity(n: usize) -> Tables {
        Tables {
            by_hash: ByHash::with_capacity_and_hasher(n, BuildHasherDefault::default()),
            by_id: DashMap::with_capacity(n),
        }
    }

    fn insert(&self, record: Arc<KeyRecord>) {
        if let Some(old) = self.by_id.insert(record.id.clone(), record.clone()) {
            self.by_hash.remove(&old.key_hash);
            if let Some(p) = &old.previous {
                self.by_hash.remove(&p.key_hash);
            }
        }
        if let Some(p) = &record.previous {
            self.by_hash.insert(p.key_hash, record.clone());
        }
        self.by_hash.insert(record.key_hash, record);
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
        self.tables
            .load()
            .by_hash
            .get(key_hash)
            .map(|r| r.value().clone())
    }

    pub fn get_by_id(&self, id: &str) -> Option<Arc<KeyRecord>> {
        self.tables.load().by_id.get(id).map(|r| r.value().clone())
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
