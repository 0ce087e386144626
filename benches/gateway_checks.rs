//! The gateway's per-request check path for `/v1`, as the proxy runs it (the failed-auth
//! throttle is only touched by failures): credential parsing, SHA-256 of key and secret, lookup among 1,000,000 keys,
//! constant-time secret compare, status/plan/whitelist checks, both limiters (rolling minute
//! window + daily counter, counted) and the usage record — one call to
//! `wiz_gateway::checks::check_v1`. Target: under 1 µs.
//!
//! Besides criterion's report it prints the median of 200 batches of 2,000 calls, timed by the
//! thread's CPU clock (and, beside it, by the wall clock, which on a shared machine also counts
//! the time other processes held the core: criterion's figure is wall time), and the memory the
//! 1M-key table costs, measured as the growth of the process's resident set (/proc/self/statm)
//! while the table is built, divided by the number of keys.

use std::future::Future;
use std::hint::black_box;
use std::net::IpAddr;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[path = "support/keys.rs"]
mod bench_keys;

use bench_keys::{api_key, api_secret};
use criterion::{criterion_group, criterion_main, Criterion};
use wiz_gateway::checks::check_v1;
use wiz_gateway::clock::unix_ms;
use wiz_gateway::config::{GatewayConfig, Secret};
use wiz_gateway::keys::{Digest, KeyRecord, Whitelist};
use wiz_gateway::GatewayState;

const KEYS: usize = 1_000_000;
/// Requests rotate over this many keys, spread across the table, so lookups touch cold memory.
const HOT_KEYS: usize = 4096;

/// The memory store never awaits, so its futures complete on the first poll; no runtime needed.
fn poll_now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("check path awaited"),
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn build_state() -> (std::sync::Arc<GatewayState>, wiz_gateway::RuntimeConfig) {
    let config = GatewayConfig {
        internal_token: Some(Secret::new("b".repeat(32))),
        ..GatewayConfig::default()
    }
    .validate()
    .expect("bench config is valid");
    let state = GatewayState::new(config.clone());
    let (whitelist, _) =
        Whitelist::compile(&["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]);

    let before = rss_bytes();
    let records: Vec<KeyRecord> = (0..KEYS)
        .map(|i| bench_keys::record(i, &whitelist))
        .collect();
    state.keys.replace_all(records, 1);
    let after = rss_bytes();
    println!(
        "key table: {} keys, resident set grew {:.1} MiB => {:.0} bytes per key",
        state.keys.len(),
        (after.saturating_sub(before)) as f64 / (1024.0 * 1024.0),
        after.saturating_sub(before) as f64 / KEYS as f64
    );
    (state, config)
}

fn bench(c: &mut Criterion) {
    let (state, config) = build_state();
    let requests: Vec<(Vec<u8>, Vec<u8>)> = (0..HOT_KEYS)
        .map(|j| {
            let i = (j * 244_140 + 7) % KEYS;
            (
                format!("Bearer {}", api_key(i)).into_bytes(),
                api_secret(i).into_bytes(),
            )
        })
        .collect();
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let now_ms = unix_ms();
    let check = |n: usize| {
        let (auth, secret) = &requests[n % HOT_KEYS];
        poll_now(check_v1(
            &state,
            &config,
            Some(auth),
            Some(secret),
            ip,
            now_ms,
        ))
    };
    let first = check(0);
    assert!(
        first.refusal().is_none(),
        "bench request must pass every check: {first:?}"
    );

    // Warm the limiter entries and caches, then take the median of batch averages.
    for n in 0..HOT_KEYS * 4 {
        black_box(check(n));
    }
    let (cpu, wall) = batches(|n| {
        black_box(check(n));
    });
    println!(
        "check_v1 over 1M keys: median {:.0} ns per request on CPU (p10 {:.0}, p90 {:.0}); \
         wall clock median {:.0} ns",
        cpu[100], cpu[20], cpu[180], wall[100]
    );

    breakdown(&state, &requests, ip, now_ms);

    let mut n = 0usize;
    c.bench_function("check_v1 (1M keys, full path)", |b| {
        b.iter(|| {
            n += 1;
            black_box(check(n))
        })
    });
}

fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// ns per call of `f` in each of 200 batches of 2,000 calls, sorted: (by the thread's CPU
/// clock, by the wall clock).
fn batches(mut f: impl FnMut(usize)) -> (Vec<f64>, Vec<f64>) {
    let (mut cpu, mut wall): (Vec<f64>, Vec<f64>) = (0..200)
        .map(|b| {
            let start = Instant::now();
            let start_cpu = thread_cpu_ns();
            for n in 0..2_000 {
                f(b * 2_000 + n);
            }
            let cpu = thread_cpu_ns() - start_cpu;
            (
                cpu as f64 / 2_000.0,
                start.elapsed().as_nanos() as f64 / 2_000.0,
            )
        })
        .unzip();
    cpu.sort_by(|a, b| a.total_cmp(b));
    wall.sort_by(|a, b| a.total_cmp(b));
    (cpu, wall)
}

/// Median ns per call of `f` on CPU over 200 batches of 2,000 calls.
fn median_ns(f: impl FnMut(usize)) -> f64 {
    batches(f).0[100]
}

/// Where the time goes: each stage of the path on its own, same keys, same table.
fn breakdown(state: &GatewayState, requests: &[(Vec<u8>, Vec<u8>)], ip: IpAddr, now_ms: i64) {
    use wiz_gateway::{auth, credentials, limits::Quota};
    let req = |n: usize| &requests[n % HOT_KEYS];
    let parse = median_ns(|n| {
        let (a, s) = req(n);
        black_box(credentials::parse(Some(a), Some(s)).ok());
    });
    let creds: Vec<_> = requests
        .iter()
        .map(|(a, s)| credentials::parse(Some(a), Some(s)).unwrap())
        .collect();
    let hashes = median_ns(|n| {
        let c = &creds[n % HOT_KEYS];
        black_box((Digest::of(c.key()), Digest::of(c.secret())));
    });
    let digests: Vec<_> = creds.iter().map(|c| Digest::of(c.key())).collect();
    let lookup = median_ns(|n| {
        black_box(state.keys.lookup(&digests[n % HOT_KEYS]));
    });
    let auth_check = median_ns(|n| {
        black_box(auth::check(&state.keys, &creds[n % HOT_KEYS], ip, now_ms));
    });
    let records: Vec<_> = digests
        .iter()
        .map(|d| state.keys.lookup(d).unwrap())
        .collect();
    let quota = Quota {
        per_minute: u32::MAX,
        per_day: u32::MAX,
    };
    let limiter = median_ns(|n| {
        let id = &records[n % HOT_KEYS].id;
        black_box(poll_now(wiz_gateway::limits::decide(
            state.limits.store().as_ref(),
            id,
            quota,
            now_ms,
        )))
        .ok();
    });
    let usage = median_ns(|n| {
        state
            .usage
            .record_accepted(&records[n % HOT_KEYS].id, now_ms);
    });
    // The memory store's usage journal adds one 16-byte pwrite per accepted request.
    let journal_dir = tempfile::tempdir().unwrap();
    let journaled = wiz_gateway::usage::UsageRecorder::new();
    journaled.attach_journal(
        wiz_gateway::usage_journal::UsageJournal::open(&journal_dir.path().join("journal"))
            .unwrap(),
    );
    let usage_journaled = median_ns(|n| {
        journaled.record_accepted(&records[n % HOT_KEYS].id, now_ms);
    });
    println!(
        "breakdown (median ns on CPU): parse {parse:.0}, 2x sha256 {hashes:.0}, table lookup {lookup:.0}, \
         auth::check (hashes+lookup+checks) {auth_check:.0}, \
         limiters {limiter:.0}, usage record {usage:.0}, usage record + journal {usage_journaled:.0}"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
