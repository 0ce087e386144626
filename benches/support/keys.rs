//! Synthetic keys for the gateway benches: key `i` has a known API key and secret, belongs to
//! account `i / 10`, is active on Wiz Pro, and has limits high enough that every benched request
//! is admitted and counted.

use wiz_gateway::keys::{Digest, KeyRecord, KeyStatus, Plan, Whitelist};

pub fn api_key(i: usize) -> String {
    format!("pk_live_{i:032}")
}

pub fn api_secret(i: usize) -> String {
    format!("sk_live_{i:040}")
}

pub fn record(i: usize, whitelist: &Whitelist) -> KeyRecord {
    KeyRecord {
        id: format!("key_{i:026}").as_str().into(),
        account_id: format!("acc_{:026}", i / 10).as_str().into(),
        prefix: api_key(i)[..12].into(),
        key_hash: Digest::of(api_key(i).as_bytes()),
        secret_hash: Digest::of(api_secret(i).as_bytes()),
        previous: None,
        status: KeyStatus::Active,
        expires_at_ms: None,
        plan: Plan::WizPro,
        rate_limit_per_minute: u32::MAX,
        daily_limit: u32::MAX,
        whitelist: whitelist.clone(),
    }
}
