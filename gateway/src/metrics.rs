//! The gateway's Prometheus metrics, in one explicit registry owned by the running gateway.
//!
//! Labels are low-cardinality only (route class, status class, error code): never a key, a
//! secret, a phone number or a raw path.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::errors::Refusal;
use crate::keys::KeyTable;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    /// `requests{route_class="v1",status_class="2xx"}`, resolved once: the series nearly every
    /// request counts into, without a label lookup per request.
    pub requests_v1_2xx: IntCounter,
    pub refusals: IntCounterVec,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub key_table_size: IntGauge,
    pub key_table_age: prometheus::Gauge,
    pub key_table_version: IntGauge,
    pub key_sync_errors: IntCounter,
    pub limiter_store_errors: IntCounter,
    pub config_reload_errors: IntCounter,
    pub config_reloads: IntCounter,
    pub usage_flush_errors: IntCounter,
    /// Per backend, labelled by its index in `backends` (never its URL).
    pub backend_requests: IntCounterVec,
    pub backend_errors: IntCounterVec,
    pub backend_healthy: IntGaugeVec,
    /// 0 available, 1 refusing (`on_store_error: refuse`), 2 serving on local shares, 3 re-seeding.
    pub limiter_state: IntGauge,
    pub limiter_local_admits: IntCounter,
    pub limiter_reseeds: IntCounter,
    /// Live gateways on the shared store as of this gateway's last heartbeat (N of the shares).
    pub limiter_gateways: IntGauge,
    pub tls_cert_reloads: IntCounter,
    pub tls_cert_reload_errors: IntCounter,
    pub tls_handshake_failures: IntCounter,
    pub client_connections: IntGauge,
    pub client_limit_hits: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "wiz_gateway_requests_total",
                "Requests handled by the gateway, by route class and status class.",
            ),
            &["route_class", "status_class"],
        )
        .expect("valid metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "wiz_gateway_refusals_total",
                "Requests the gateway answered itself with an error, by error code.",
            ),
            &["code"],
        )
        .expect("valid metric");
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "wiz_gateway_request_duration_seconds",
                "Time from request start to the end of the response, in seconds.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let upstream_duration = Histogram::with_opts(
            HistogramOpts::new(
                "wiz_gateway_upstream_duration_seconds",
                "Time from sending a request to the backend to its response header, in seconds.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let key_table_size = IntGauge::new(
            "wiz_gateway_key_table_size",
            "API keys in the gateway's in-memory table.",
        )
        .expect("valid metric");
        let key_table_age = prometheus::Gauge::new(
            "wiz_gateway_key_table_age_seconds",
            "Seconds since the key table last synced successfully with the backend (-1: never).",
        )
        .expect("valid metric");
        let key_table_version = IntGauge::new(
            "wiz_gateway_key_table_version",
            "Backend version of the key table held in memory.",
        )
        .expect("valid metric");
        let key_sync_errors = IntCounter::new(
            "wiz_gateway_key_sync_errors_total",
            "Failed key table sync calls to the backend.",
        )
        .expect("valid metric");
        let limiter_store_errors = IntCounter::new(
            "wiz_gateway_limiter_store_errors_total",
            "Errors from the rate-limit counter store.",
        )
        .expect("valid metric");
        let config_reload_errors = IntCounter::new(
            "wiz_gateway_config_reload_errors_total",
            "Configuration reloads rejected because the new configuration was invalid.",
        )
        .expect("valid metric");
        let config_reloads = IntCounter::new(
            "wiz_gateway_config_reloads_total",
            "Configuration reloads applied.",
        )
        .expect("valid metric");
        let usage_flush_errors = IntCounter::new(
            "wiz_gateway_usage_flush_errors_total",
            "Failed usage reports to the backend (kept and retried).",
        )
        .expect("valid metric");
        let backend_requests = IntCounterVec::new(
            Opts::new(
                "wiz_gateway_backend_requests_total",
                "Attempts to send a request to a backend, by backend index (retries included).",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let backend_errors = IntCounterVec::new(
            Opts::new(
                "wiz_gateway_backend_errors_total",
                "Attempts that failed to connect to a backend or broke before its answer, by \
                 backend index.",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let backend_healthy = IntGaugeVec::new(
            Opts::new(
                "wiz_gateway_backend_healthy",
                "1 if the backend passed its last /healthz check, else 0, by backend index.",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let limiter_state = IntGauge::new(
            "wiz_gateway_limiter_state",
            "Shared limit store: 0 available, 1 unreachable and refusing, 2 unreachable and \
             serving local shares, 3 re-seeding after it lost its data.",
        )
        .expect("valid metric");
        let limiter_local_admits = IntCounter::new(
            "wiz_gateway_limiter_local_admits_total",
            "Requests admitted on this gateway's local share while the shared store was \
             unreachable.",
        )
        .expect("valid metric");
        let limiter_reseeds = IntCounter::new(
            "wiz_gateway_limiter_reseeds_total",
            "Times this gateway re-seeded the shared store's daily counters from the backend.",
        )
        .expect("valid metric");
        let limiter_gateways = IntGauge::new(
            "wiz_gateway_limiter_gateways",
            "Gateways sharing the limit store as of the last heartbeat (0: unknown); each one's \
             local share is what was left divided by this.",
        )
        .expect("valid metric");

        let tls_cert_reloads = IntCounter::new(
            "wiz_gateway_tls_cert_reloads_total",
            "TLS certificate/key pairs re-read from disk and installed.",
        )
        .expect("valid metric");
        let tls_cert_reload_errors = IntCounter::new(
            "wiz_gateway_tls_cert_reload_errors_total",
            "Changed TLS certificate/key files refused (unreadable, mismatched, expired); the running pair stays.",
        )
        .expect("valid metric");
        let tls_handshake_failures = IntCounter::new(
            "wiz_gateway_tls_handshake_failures_total",
            "Client TLS handshakes that failed (old protocol version, no common cipher, garbage).",
        )
        .expect("valid metric");
        let client_connections = IntGauge::new(
            "wiz_gateway_client_connections",
            "Client connections open on the public listeners (plain and TLS).",
        )
        .expect("valid metric");
        let client_limit_hits = IntCounterVec::new(
            Opts::new(
                "wiz_gateway_client_limit_hits_total",
                "Client connections closed by a slow/greedy-client bound, by limit \
                 (max_connections, handshake_timeout, header_timeout, max_header_bytes, body_timeout).",
            ),
            &["limit"],
        )
        .expect("valid metric");

        // Every series exists from the start, so a dashboard shows 0 rather than nothing.
        for limit in [
            "max_connections",
            "handshake_timeout",
            "header_timeout",
            "max_header_bytes",
            "body_timeout",
        ] {
            client_limit_hits.with_label_values(&[limit]);
        }

        let m = Metrics {
            registry,
            requests_v1_2xx: requests.with_label_values(&["v1", "2xx"]),
            requests,
            refusals,
            request_duration,
            upstream_duration,
            key_table_size,
            key_table_age,
            key_table_version,
            key_sync_errors,
            limiter_store_errors,
            config_reload_errors,
            config_reloads,
            usage_flush_errors,
            backend_requests,
            backend_errors,
            backend_healthy,
            limiter_state,
            limiter_local_admits,
            limiter_reseeds,
            limiter_gateways,
            tls_cert_reloads,
            tls_cert_reload_errors,
            tls_handshake_failures,
            client_connections,
            client_limit_hits,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.refusals.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.upstream_duration.clone()),
            Box::new(m.key_table_size.clone()),
            Box::new(m.key_table_age.clone()),
            Box::new(m.key_table_version.clone()),
            Box::new(m.key_sync_errors.clone()),
            Box::new(m.limiter_store_errors.clone()),
            Box::new(m.config_reload_errors.clone()),
            Box::new(m.config_reloads.clone()),
            Box::new(m.usage_flush_errors.clone()),
            Box::new(m.backend_requests.clone()),
            Box::new(m.backend_errors.clone()),
            Box::new(m.backend_healthy.clone()),
            Box::new(m.limiter_state.clone()),
            Box::new(m.limiter_local_admits.clone()),
            Box::new(m.limiter_reseeds.clone()),
            Box::new(m.limiter_gateways.clone()),
            Box::new(m.tls_cert_reloads.clone()),
            Box::new(m.tls_cert_reload_errors.clone()),
            Box::new(m.tls_handshake_failures.clone()),
            Box::new(m.client_connections.clone()),
            Box::new(m.client_limit_hits.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        // Pre-create every refusal series so dashboards see zeros rather than gaps.
        for r in Refusal::ALL {
            m.refusals.with_label_values(&[r.code()]);
        }
        m
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Refreshes the gauges derived from the key table, then renders the text format.
    pub fn render(&self, keys: &KeyTable, now_ms: i64) -> Vec<u8> {
        self.key_table_size.set(keys.len() as i64);
        self.key_table_version.set(keys.version() as i64);
        self.key_table_age.set(match keys.last_sync_ms() {
            Some(t) => (now_ms - t).max(0) as f64 / 1000.0,
            None => -1.0,
        });
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Counts one finished request.
    pub fn count_request(&self, route_class: &str, status: u16) {
        if route_class == "v1" && (200..300).contains(&status) {
            self.requests_v1_2xx.inc();
        } else {
            self.requests
                .with_label_values(&[route_class, status_class(status)])
                .inc();
        }
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_names() {
        let m = Metrics::new();
        m.requests.with_label_values(&["v1", "2xx"]).inc();
        m.request_duration.observe(0.01);
        m.upstream_duration.observe(0.01);
        let text = String::from_utf8(m.render(&KeyTable::new(), 0)).unwrap();
        for name in [
            "wiz_gateway_requests_total",
            "wiz_gateway_refusals_total",
            "wiz_gateway_request_duration_seconds",
            "wiz_gateway_upstream_duration_seconds",
            "wiz_gateway_key_table_size",
            "wiz_gateway_key_table_age_seconds",
            "wiz_gateway_limiter_store_errors_total",
            "wiz_gateway_config_reload_errors_total",
            "wiz_gateway_usage_flush_errors_total",
            "wiz_gateway_limiter_state",
            "wiz_gateway_limiter_local_admits_total",
            "wiz_gateway_limiter_reseeds_total",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
        assert!(text.contains("code=\"too_many_failed_attempts\""));
    }
}
