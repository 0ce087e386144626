//! The SPEC §4 pipeline for one `/v1` request, as one call: credentials, key + secret (failures
//! counted by the failed-auth throttle), key status, plan, whitelist, minute limit, daily
//! limit. The proxy calls it from `request_filter`; the bench calls it directly.

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::{self, AuthOutcome};
use crate::config::RuntimeConfig;
use crate::credentials::{self, CredentialError};
use crate::errors::Refusal;
use crate::keys::{InlineStr, KeyRecord};
use crate::limits::{Admission, Decision, LimitState, Quota};
use crate::playground;
use crate::state::GatewayState;
use crate::throttle::FailureVerdict;

/// What the checks decided, plus what the response headers and the access log need.
#[derive(Debug, Clone)]
pub enum CheckOutcome {
    /// Every check passed and the request was counted: forward it.
    Admitted {
        key: Arc<KeyRecord>,
        limits: LimitState,
        admitted: Admitted,
    },
    /// Refused for a key the credentials proved: its limit state goes into the headers when the
    /// store could tell it.
    KeyRefused {
        key: Arc<KeyRecord>,
        refusal: Refusal,
        retry_after_secs: Option<u64>,
        limits: Option<LimitState>,
    },
    /// Refused before any key was proved (missing, malformed or wrong credentials, throttled,
    /// no key table yet).
    Refused {
        refusal: Refusal,
        retry_after_secs: Option<u64>,
        /// The 12-character prefix of presented credentials that matched no key, for the log.
        presented_prefix: Option<InlineStr>,
    },
}

/// When a request was admitted and counted, and whether on the local share. A request the
/// gateway then answers itself with 502/503/504 is refunded with this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub at_ms: i64,
    pub local: bool,
}

impl CheckOutcome {
    fn refused(refusal: Refusal, retry_after_secs: Option<u64>) -> CheckOutcome {
        CheckOutcome::Refused {
            refusal,
            retry_after_secs,
            presented_prefix: None,
        }
    }

    /// The refusal and its `Retry-After`, or `None` when the request goes on.
    pub fn refusal(&self) -> Option<(Refusal, Option<u64>)> {
        match self {
            CheckOutcome::Admitted { .. } => None,
            CheckOutcome::KeyRefused {
                refusal,
                retry_after_secs,
                ..
            }
            | CheckOutcome::Refused {
                refusal,
                retry_after_secs,
                ..
            } => Some((*refusal, *retry_after_secs)),
        }
    }
}

/// `Retry-After` while the gateway has no key table: the key sync retries faster than this.
pub const KEY_TABLE_RETRY_SECS: u64 = 2;

pub fn quota_of(key: &KeyRecord) -> Quota {
    Quota {
        per_minute: key.rate_limit_per_minute,
        per_day: key.daily_limit,
    }
}

/// Runs every check for a `/v1` request and records its usage. Counts the request against the
/// key's limits only if every check passes.
pub async fn check_v1(
    state: &GatewayState,
    config: &RuntimeConfig,
    authorization: Option<&[u8]>,
    api_secret: Option<&[u8]>,
    client_ip: IpAddr,
    now_ms: i64,
) -> CheckOutcome {
    // The failed-auth throttle only answers failures (see `throttle`): valid credentials are
    // served whatever their IP did before.
    let failed = |refusal: Refusal| match state.throttle.record_failure(client_ip, now_ms) {
        FailureVerdict::Counted => CheckOutcome::refused(refusal, None),
        FailureVerdict::Throttled { retry_after_secs } => {
            CheckOutcome::refused(Refusal::TooManyFailedAttempts, Some(retry_after_secs))
        }
    };
    // A Playground credential (console, issue 13) stands for a key; from here on the request is
    // that key's, with the same checks and limits.
    let (outcome, presented) = match playground::presented(authorization) {
        Some(token) => (
            playground::check(
                &state.keys,
                config.internal_token.expose(),
                token,
                client_ip,
                now_ms,
            ),
            None,
        ),
        None => {
            let creds = match credentials::parse(authorization, api_secret) {
                Ok(c) => c,
                Err(CredentialError::Missing) => {
                    return CheckOutcome::refused(Refusal::MissingCredentials, None)
                }
                Err(CredentialError::Malformed) => return failed(Refusal::MalformedCredentials),
            };
            (
                auth::check(&state.keys, &creds, client_ip, now_ms),
                Some(creds),
            )
        }
    };
    // Without a table every key would look unknown: a 401 would tell the client its key is
    // gone (and count as a failed authentication). 503 says "retry", which is the truth.
    if !state.keys.is_loaded() {
        return CheckOutcome::refused(Refusal::KeyTableUnavailable, Some(KEY_TABLE_RETRY_SECS));
    }
    let key = match outcome {
        AuthOutcome::Granted(key) => key,
        AuthOutcome::Invalid => {
            let mut out = failed(Refusal::InvalidCredentials);
            if let CheckOutcome::Refused {
                presented_prefix, ..
            } = &mut out
            {
                *presented_prefix = presented.map(|c| c.key_prefix().into());
            }
            return out;
        }
        AuthOutcome::Denied(key, refusal) => {
            state.usage.record_refused(&key.id, refusal, now_ms);
            let limits = state.limits.peek(&key.id, quota_of(&key), now_ms).await;
            return CheckOutcome::KeyRefused {
                key,
                refusal,
                retry_after_secs: None,
                limits,
            };
        }
    };
    let (decision, local) = match state.limits.decide(&key.id, quota_of(&key), now_ms).await {
        Admission::Decided { decision, local } => (Ok(decision), local),
        Admission::Unavailable => (Err(()), false),
    };
    let (refusal, retry_after_secs, limits) = match decision {
        Ok(Decision::Allowed(limits)) => {
            state.usage.record_accepted(&key.id, now_ms);
            return CheckOutcome::Admitted {
                key,
                limits,
                admitted: Admitted {
                    at_ms: now_ms,
                    local,
                },
            };
        }
        Ok(Decision::RateLimited {
            state: s,
            retry_after_secs,
        }) => (Refusal::RateLimited, retry_after_secs, Some(s)),
        Ok(Decision::DailyLimitExceeded {
            state: s,
            retry_after_secs,
        }) => (Refusal::DailyLimitExceeded, retry_after_secs, Some(s)),
        // Failing closed keeps the daily cap a hard cap while the store is down or re-seeded.
        Err(()) => (Refusal::LimiterUnavailable, 1, None),
    };
    // A store that could not decide refused nothing on the key's account.
    if refusal != Refusal::LimiterUnavailable {
        state.usage.record_refused(&key.id, refusal, now_ms);
    }
    CheckOutcome::KeyRefused {
        key,
        refusal,
        retry_after_secs: Some(retry_after_secs),
        limits,
    }
}
