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
//! The `{key_id}` hash tag puts both keys of one API key in one Redis Cluster slot, which a
//! multi-key script needs. Key ids are not secrets; API keys and secrets never reach Redis.
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
/// A request waits at most this long for Redis before the gateway answers 503; a limiter that
/// hangs would hold every request of every key.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// KEYS: window hash, day counter. ARGV: now (Unix s), per-minute, per-day, mode (`count` or
/// `peek`), window TTL, day TTL, window length.
/// Returns {outcome (0 allowed, 1 rate limited, 2 daily limit), window total, day count,
/// minute reset secs, retry-after secs}, all after counting.
const DECIDE_LUA: &str = r#"
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
}

impl RedisStore {
    /// Parses the URL; connects lazily. The error never contains the URL (it may hold a password).
    pub fn open(url: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError(format!("invalid Redis URL ({:?})", e.kind())))?;
        Ok(RedisStore {
            client,
            connection: OnceCell::new(),
            decide: Script::new(DECIDE_LUA),
            seed: Script::new(SEED_LUA),
        })
    }

    /// A handle on the shared connection. `ConnectionManager` reconnects by itself after an
    /// error; cloning it is cheap and all clones multiplex one connection.
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            // Requests wait on the first connect; retrying for long would hold them all.
            .set_number_of_retries(1);
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
        Ok((outcome, state, retry))
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
            other => return Err(StoreError(format!("unexpected script outcome {other}"))),
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
        let mut conn = self.connection().await?;
        let _: i64 = self
            .seed
            .key(day_key(key_id, day))
            .arg(count)
            .arg(DAY_TTL_SECS)
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }
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
    StoreError(format!("redis: {e}"))
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
mod tests;
