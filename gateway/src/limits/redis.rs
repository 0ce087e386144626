//! The shared limit store: the counters of every gateway live in one Redis, so with several
//! gateways their sum never exceeds a key's quota (SPEC §2, §5).
//!
//! One Lua script per decision: Redis runs a script without interleaving any other command, so
//! "check both limits, count only if both pass" is atomic across all gateways, exactly like the
//! per-key mutex of the memory store within one process. Per key:
//!
//! - `wiz:{key_id}:m`: a hash of the rolling window, field = Unix second, value = requests
//!   accepted in that second, plus the field `last` = the latest second seen. Fields older than
//!   60 s are pruned by every script run; the hash expires 120 s after the last write, so idle
//!   keys leave nothing behind.
//! - `wiz:{key_id}:d:YYYY-MM-DD`: requests accepted on that UTC day; it expires after 2 days.
//!
//! - `wiz:limits:epoch`: the marker of a seeded store: the `run_id` of the Redis server that was
//!   seeded. Redis without persistence loses it with the counters; a decision that finds it
//!   missing answers "unseeded" instead of counting from zero, and the gateways re-seed before
//!   admitting again (`guardian`). A marker naming another server's `run_id` means the data came
//!   from elsewhere (a replica promoted by a failover, which may lag behind the lost primary, or a
//!   restart from a snapshot): the guardian removes it, which re-seeds the same way.
//! - `wiz:limits:gateways`: a sorted set of live gateways (score = last heartbeat, Unix ms), so
//!   that each knows N, the number its local share divides by.
//!
//! One Redis (or a primary with replicas), not Redis Cluster: every decision reads the marker,
//! which lives outside the key's slot. Key ids are not secrets; API keys and secrets never reach
//! Redis.
//!
//! Time comes from the gateway's clock (`now_ms`, as for the memory store), not from Redis
//! `TIME`: it keeps the decision a pure function of its inputs, so tests can drive the window
//! with fixed instants, and it keeps the day key consistent with the day the backend's usage
//! seeding speaks about. Gateways sharing a Redis are assumed to agree on the time within about
//! a second (NTP); the script never lets the window go backwards (a gateway whose clock lags
//! counts into the latest second any gateway has seen, as the memory store does when the clock
//! steps back), so a lagging clock can only make the window refuse a little early, never admit
//! more than N in 60 s.

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::time::Duration;
use tokio::sync::OnceCell;

use super::{
    secs_until_utc_midnight, utc_day, Decision, LimitState, LimitStore, Quota, StoreError,
    DAY_SECS, WINDOW_SECS,
};

/// How long the window hash outlives its last write: the window plus slack for clock skew.
const WINDOW_TTL_SECS: u64 = 2 * WINDOW_SECS;
/// How long a day counter outlives its day's start: the day itself plus a day for gateways whose
/// clocks are still on the previous day, and for restarts around midnight.
const DAY_TTL_SECS: u64 = 2 * DAY_SECS;
/// A request waits at most this long for Redis; the first one that times out opens the breaker
/// (`guard`), after which no request waits for Redis at all until a probe finds it back.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
pub const EPOCH_KEY: &str = "wiz:limits:epoch";
const GATEWAYS_KEY: &str = "wiz:limits:gateways";
const RESEED_LOCK_KEY: &str = "wiz:limits:reseed-lock";

/// KEYS: window hash, day counter, epoch marker. ARGV: now (Unix s), per-minute, per-day, mode
/// (`count` or `peek`), window TTL, day TTL, window length.
/// Returns {outcome (0 allowed, 1 rate limited, 2 daily limit, 3 store not seeded), window total,
/// day count, minute reset secs, retry-after secs}, all after counting.
const DECIDE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 0 then return {3, 0, 0, 0, 0} end
local now = tonumber(ARGV[1])
local per_minute = tonumber(ARGV[2])
local per_day = tonumber(ARGV[3])
local mode = ARGV[4]
local window = tonumber(ARGV[7])

-- The window never goes backwards: see the module comment on clock skew.
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
if last > now then now = last end

local flat = redis.call('HGETALL', KEYS[1])
local secs, counts, stale = {}, {}, {}
local total = 0
for i = 1, #flat, 2 do
  local field = flat[i]
  if field ~= 'last' then
    local s = tonumber(field)
    if s <= now - window then
      stale[#stale + 1] = field
    else
      local c = tonumber(flat[i + 1])
      secs[#secs + 1] = s
      counts[s] = c
      total = total + c
    end
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
table.sort(secs)

local day = tonumber(redis.call('GET', KEYS[2]) or '0')

-- Seconds until enough of the oldest requests leave the window for `excess` more to fit.
local function until_freed(excess)
  if excess <= 0 then return 0 end
  local freed = 0
  for _, s in ipairs(secs) do
    freed = freed + counts[s]
    if freed >= excess then return s + window - now end
  end
  return window
end

local function reset()
  if total == 0 then return 0 end
  return until_freed(1)
end

if mode == 'peek' then
  return {0, total, day, reset(), 0}
end
if total >= per_minute then
  local retry = until_freed(total + 1 - per_minute)
  if retry < 1 then retry = 1 end
  return {1, total, day, reset(), retry}
end
if day >= per_day then
  return {2, total, day, reset(), 0}
end

local field = string.format('%d', now)
redis.call('HINCRBY', KEYS[1], field, 1)
redis.call('HSET', KEYS[1], 'last', field)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
if counts[now] == nil then
  secs[#secs + 1] = now
  counts[now] = 0
end
counts[now] = counts[now] + 1
total = total + 1
day = day + 1
return {0, total, day, reset(), 0}
"#;

/// KEYS: window hash, day counter. ARGV: the second the request was counted in. Takes back one
/// accepted request (the gateway answered it 502/503/504 itself), never below zero.
const REFUND_LUA: &str = r#"
local c = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if c > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], -1) end
local d = tonumber(redis.call('GET', KEYS[2]) or '0')
if d > 0 then redis.call('DECR', KEYS[2]) end
return 0
"#;

/// KEYS: gateways set, epoch marker. ARGV: now (Unix ms), gateway id, liveness (ms).
/// Registers this gateway, forgets silent ones; returns {live gateways, epoch or false}.
const PROBE_LUA: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[3]))
return {redis.call('ZCARD', KEYS[1]), redis.call('GET', KEYS[2])}
"#;

/// KEYS: day counter. ARGV: count, TTL. Adds requests admitted while the store was unreachable.
const ADD_LUA: &str = r#"
redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 0
"#;

/// KEYS: day counter. ARGV: count, TTL. Raises the counter to at least `count`, atomically, so a
/// request counted by another gateway between a read and a write is never lost.
const SEED_LUA: &str = r#"
local count = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > current then
  redis.call('SET', KEYS[1], count, 'EX', tonumber(ARGV[2]))
end
return 0
"#;

pub struct RedisStore {
    client: redis::Client,
    /// Connected on first use: `build_server` is synchronous and runs before any runtime, and a
    /// Redis that is down at start-up should cost 503s, not a gateway that refuses to start.
    /// A failed connect leaves the cell empty, so the next request tries again.
    connection: OnceCell<ConnectionManager>,
    decide: Script,
    seed: Script,
    refund: Script,
    probe: Script,
    add: Script,
}

/// What a probe of the store found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Gateways that sent a heartbeat recently, this one included.
    pub gateways: u32,
    /// The seeded store's marker; `None`: the store lost (or never had) its counters.
    pub epoch: Option<String>,
    /// The answering server's `run_id`; a marker naming another one is stale.
    pub run_id: String,
}

impl RedisStore {
    /// Parses the URL; connects lazily. The error never contains the URL (it may hold a password).
    pub fn open(url: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unreachable(format!("invalid Redis URL ({:?})", e.kind())))?;
        Ok(RedisStore {
            client,
            connection: OnceCell::new(),
            decide: Script::new(DECIDE_LUA),
            seed: Script::new(SEED_LUA),
            refund: Script::new(REFUND_LUA),
            probe: Script::new(PROBE_LUA),
            add: Script::new(ADD_LUA),
        })
    }

    /// A handle on the shared connection. `ConnectionManager` reconnects by itself after an
    /// error; cloning it is cheap and all clones multiplex one connection.
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            // Requests wait on the first connect; retrying for long would hold them all.
            .set_number_of_retries(1)
            .set_max_delay(200);
        self.connection
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .cloned()
            .map_err(store_error)
    }

    async fn run(
        &self,
        key_id: &str,
        quota: Quota,
        now_ms: i64,
        mode: &str,
    ) -> Result<(i64, LimitState, u64), StoreError> {
        let mut conn = self.connection().await?;
        let now_sec = now_ms.max(0) / 1000;
        let (outcome, total, day, reset, retry): (i64, u64, u64, u64, u64) = self
            .decide
            .key(window_key(key_id))
            .key(day_key(key_id, utc_day(now_ms)))
            .key(EPOCH_KEY)
            .arg(now_sec)
            .arg(quota.per_minute)
            .arg(quota.per_day)
            .arg(mode)
            .arg(WINDOW_TTL_SECS)
            .arg(DAY_TTL_SECS)
            .arg(WINDOW_SECS)
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        let state = LimitState {
            minute_limit: quota.per_minute,
            minute_remaining: quota.per_minute.saturating_sub(clamp_u32(total)),
            minute_reset_secs: reset,
            day_limit: quota.per_day,
            day_remaining: quota.per_day.saturating_sub(clamp_u32(day)),
            day_reset_secs: secs_until_utc_midnight(now_ms),
        };
        if outcome == 3 {
            return Err(StoreError::Unseeded);
        }
        Ok((outcome, state, retry))
    }

    /// Registers this gateway's heartbeat and reads the marker.
    pub async fn probe(
        &self,
        gateway_id: &str,
        now_ms: i64,
        liveness_ms: u64,
    ) -> Result<Probe, StoreError> {
        let mut conn = self.connection().await?;
        let (gateways, epoch): (u32, Option<String>) = self
            .probe
            .key(GATEWAYS_KEY)
            .key(EPOCH_KEY)
            .arg(now_ms)
            .arg(gateway_id)
            .arg(liveness_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        let run_id = run_id(&mut conn).await?;
        Ok(Probe {
            gateways,
            epoch,
            run_id,
        })
    }

    /// Removes the marker if it still says `stale`, so that every gateway re-seeds.
    pub async fn forget_marker(&self, stale: &str) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let _: i64 = Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 0",
        )
        .key(EPOCH_KEY)
        .arg(stale)
        .invoke_async(&mut conn)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    /// Leaves the set of live gateways (a graceful stop), so the others' shares grow at once.
    pub async fn deregister(&self, gateway_id: &str) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        redis::cmd("ZREM")
            .arg(GATEWAYS_KEY)
            .arg(gateway_id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(store_error)
    }

    /// Takes the re-seed lock for `ttl`; `false` if another gateway holds it.
    pub async fn lock_reseed(&self, gateway_id: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(RESEED_LOCK_KEY)
            .arg(gateway_id)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(set.is_some())
    }

    /// Raises today's counters to the given counts (pipelined, in chunks), then sets the marker
    /// and releases the lock: from then on the store admits again.
    pub async fn reseed(&self, seeds: &[(String, u32)], now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let epoch = run_id(&mut conn).await?;
        let day = utc_day(now_ms);
        for chunk in seeds.chunks(500) {
            let mut pipe = redis::pipe();
            for (key_id, count) in chunk.iter().filter(|(_, c)| *c > 0) {
                pipe.cmd("EVAL")
                    .arg(SEED_LUA)
                    .arg(1)
                    .arg(day_key(key_id, day))
                    .arg(*count)
                    .arg(DAY_TTL_SECS)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(store_error)?;
        }
        redis::pipe()
            .cmd("SET")
            .arg(EPOCH_KEY)
            .arg(epoch)
            .ignore()
            .cmd("DEL")
            .arg(RESEED_LOCK_KEY)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(store_error)
    }

    /// Marks the store as seeded without seeding anything (tests).
    pub async fn mark_seeded(&self) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let epoch = run_id(&mut conn).await?;
        redis::cmd("SET")
            .arg(EPOCH_KEY)
            .arg(epoch)
            .query_async::<()>(&mut conn)
            .await
            .map_err(store_error)
    }

    /// Adds what a gateway admitted on its own while the store was unreachable.
    pub async fn add_daily(&self, key_id: &str, day: u32, count: u32) -> Result<(), StoreError> {
        self.day_script(&self.add, key_id, day, count).await
    }

    /// Runs one of the day-counter scripts (`add`, `seed`) on a key's counter for `day`.
    async fn day_script(
        &self,
        script: &redis::Script,
        key_id: &str,
        day: u32,
        count: u32,
    ) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let _: i64 = script
            .key(day_key(key_id, day))
            .arg(count)
            .arg(DAY_TTL_SECS)
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[async_trait]
impl LimitStore for RedisStore {
    async fn check_and_count(
        &self,
        key_id: &str,
        quota: Quota,
        now_ms: i64,
    ) -> Result<Decision, StoreError> {
        let (outcome, state, retry_after_secs) = self.run(key_id, quota, now_ms, "count").await?;
        Ok(match outcome {
            0 => Decision::Allowed(state),
            1 => Decision::RateLimited {
                state,
                retry_after_secs,
            },
            2 => Decision::DailyLimitExceeded {
                state,
                retry_after_secs: secs_until_utc_midnight(now_ms),
            },
            other => {
                return Err(StoreError::Unreachable(format!(
                    "unexpected script outcome {other}"
                )))
            }
        })
    }

    async fn peek(
        &self,
        key_id: &str,
        quota: Quota,
        now_ms: i64,
    ) -> Result<LimitState, StoreError> {
        Ok(self.run(key_id, quota, now_ms, "peek").await?.1)
    }

    async fn seed_daily(
        &self,
        key_id: &str,
        day: u32,
        count: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        // As in the memory store: only today's usage matters.
        if count == 0 || day != utc_day(now_ms) {
            return Ok(());
        }
        self.day_script(&self.seed, key_id, day, count).await
    }

    async fn refund(&self, key_id: &str, counted_at_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let _: i64 = self
            .refund
            .key(window_key(key_id))
            .key(day_key(key_id, utc_day(counted_at_ms)))
            .arg(counted_at_ms.max(0) / 1000)
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

/// The server's `run_id` (`INFO server`): it changes with every restart and differs between a
/// primary and its replicas.
async fn run_id(conn: &mut ConnectionManager) -> Result<String, StoreError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(store_error)?;
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .ok_or_else(|| StoreError::Unreachable("redis: INFO has no run_id".into()))
}

fn window_key(key_id: &str) -> String {
    format!("wiz:{{{key_id}}}:m")
}

fn day_key(key_id: &str, day: u32) -> String {
    format!("wiz:{{{key_id}}}:d:{}", super::format_day(day))
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Redis errors name the failure (refused, timeout, auth failed, script error), not the URL.
fn store_error(e: redis::RedisError) -> StoreError {
    StoreError::Unreachable(format!("redis: {e}"))
}

/// The URL with any password replaced, for logs and config errors.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable Redis URL>".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
