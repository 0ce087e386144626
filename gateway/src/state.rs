//! Everything a running gateway shares between its services: config snapshot, key table,
//! counters, metrics. One value per gateway (no process-wide statics), so several gateways can
//! run in one test process.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::RuntimeConfig;
use crate::keys::KeyTable;
use crate::limits::{Limiter, LimiterMetrics};
use crate::metrics::Metrics;
use crate::throttle::AuthThrottle;
use crate::upstream::Upstreams;
use crate::usage::UsageRecorder;

pub struct GatewayState {
    pub config: ArcSwap<RuntimeConfig>,
    pub keys: KeyTable,
    pub limits: Arc<Limiter>,
    pub throttle: AuthThrottle,
    pub metrics: Metrics,
    pub usage: UsageRecorder,
    pub upstreams: Arc<Upstreams>,
    /// `hostname:pid`, sent with usage reports.
    pub gateway_id: String,
}

impl GatewayState {
    /// A gateway with the limit store its config names (`limits.store`, memory by default).
    /// Panics on a Redis URL that does not parse, which `validate` already rules out; the
    /// message never contains the URL (it may hold a password).
    pub fn new(config: RuntimeConfig) -> Arc<GatewayState> {
        let metrics = Metrics::new();
        let limiter_metrics = LimiterMetrics {
            errors: metrics.limiter_store_errors.clone(),
            local_admits: metrics.limiter_local_admits.clone(),
            state: metrics.limiter_state.clone(),
        };
        let limits = crate::limits::limiter_for(&config, limiter_metrics)
            .unwrap_or_else(|e| panic!("limits.redis_url: {e}"));
        let upstreams = Upstreams::new(&config.backends, config.backend_ca.as_deref(), &metrics);
        Arc::new(GatewayState {
            throttle: AuthThrottle::new(config.auth_throttle),
            config: ArcSwap::from_pointee(config),
            keys: KeyTable::new(),
            limits: Arc::new(limits),
            metrics,
            usage: UsageRecorder::new(),
            upstreams,
            gateway_id: gateway_id(),
        })
    }

    /// Installs a reloaded configuration; fields that need a restart are reported, not applied.
    pub fn apply_config(&self, new: RuntimeConfig) -> Vec<&'static str> {
        let restart_only = self.config.load().restart_only_changes(&new);
        self.throttle.reconfigure(new.auth_throttle);
        self.config.store(Arc::new(new));
        restart_only
    }
}

fn gateway_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned());
    format!("{host}:{}", std::process::id())
}
