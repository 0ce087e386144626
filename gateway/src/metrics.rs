//! The gateway's Prometheus metrics, in one explicit registry owned by the running gateway.
//!
//! Labels are low-cardinality only (route class, status class, error code): never a key, a
//! secret, a phone number or a raw path.

use prometheus::core::Collector;
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

/// Each metric is named, described and registered in one call, where its field is set.
struct Registrar<'r>(&'r Registry);

impl Registrar<'_> {
    fn add<C: Collector + Clone + 'static>(&self, metric: C) -> C {
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn float_gauge(&self, name: &str, help: &str) -> prometheus::Gauge {
        self.add(prometheus::Gauge::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn latency(&self, name: &str, help: &str) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let requests = r.counter_vec(
            "wiz_gateway_requests_total",
            "Requests handled by the gateway, by route class and status class.",
            &["route_class", "status_class"],
        );
        let m = Metrics {
            requests_v1_2xx: requests.with_label_values(&["v1", "2xx"]),
            requests,
            refusals: r.counter_vec(
                "wiz_gateway_refusals_total",
                "Requests the gateway answered itself with an error, by error code.",
                &["code"],
            ),
            request_duration: r.latency(
                "wiz_gateway_request_duration_seconds",
                "Time from request start to the end of the response, in seconds.",
            ),
            upstream_duration: r.latency(
                "wiz_gateway_upstream_duration_seconds",
                "Time from sending a request to the backend to its response header, in seconds.",
            ),
            key_table_size: r.gauge(
                "wiz_gateway_key_table_size",
                "API keys in the gateway's in-memory table.",
            ),
            key_table_age: r.float_gauge(
                "wiz_gateway_key_table_age_seconds",
                "Seconds since the key table last synced successfully with the backend (-1: never).",
            ),
            key_table_version: r.gauge(
                "wiz_gateway_key_table_version",
                "Backend version of the key table held in memory.",
            ),
            key_sync_errors: r.counter(
                "wiz_gateway_key_sync_errors_total",
                "Failed key table sync calls to the backend.",
            ),
            limiter_store_errors: r.counter(
                "wiz_gateway_limiter_store_errors_total",
                "Errors from the rate-limit counter store.",
            ),
            config_reload_errors: r.counter(
                "wiz_gateway_config_reload_errors_total",
                "Configuration reloads rejected because the new configuration was invalid.",
            ),
            config_reloads: r.counter(
                "wiz_gateway_config_reloads_total",
                "Configuration reloads applied.",
            ),
            usage_flush_errors: r.counter(
                "wiz_gateway_usage_flush_errors_total",
                "Failed usage reports to the backend (kept and retried).",
            ),
            backend_requests: r.counter_vec(
                "wiz_gateway_backend_requests_total",
                "Attempts to send a request to a backend, by backend index (retries included).",
                &["backend"],
            ),
            backend_errors: r.counter_vec(
                "wiz_gateway_backend_errors_total",
                "Attempts that failed to connect to a backend or broke before its answer, by \
                 backend index.",
                &["backend"],
            ),
            backend_healthy: r.gauge_vec(
                "wiz_gateway_backend_healthy",
                "1 if the backend passed its last /healthz check, else 0, by backend index.",
                &["backend"],
            ),
            limiter_state: r.gauge(
                "wiz_gateway_limiter_state",
                "Shared limit store: 0 available, 1 unreachable and refusing, 2 unreachable and \
                 serving local shares, 3 re-seeding after it lost its data.",
            ),
            limiter_local_admits: r.counter(
                "wiz_gateway_limiter_local_admits_total",
                "Requests admitted on this gateway's local share while the shared store was \
                 unreachable.",
            ),
            limiter_reseeds: r.counter(
                "wiz_gateway_limiter_reseeds_total",
                "Times this gateway re-seeded the shared store's daily counters from the backend.",
            ),
            limiter_gateways: r.gauge(
                "wiz_gateway_limiter_gateways",
                "Gateways sharing the limit store as of the last heartbeat (0: unknown); each one's \
                 local share is what was left divided by this.",
            ),
            tls_cert_reloads: r.counter(
                "wiz_gateway_tls_cert_reloads_total",
                "TLS certificate/key pairs re-read from disk and installed.",
            ),
            tls_cert_reload_errors: r.counter(
                "wiz_gateway_tls_cert_reload_errors_total",
                "Changed TLS certificate/key files refused (unreadable, mismatched, expired); the running pair stays.",
            ),
            tls_handshake_failures: r.counter(
                "wiz_gateway_tls_handshake_failures_total",
                "Client TLS handshakes that failed (old protocol version, no common cipher, garbage).",
            ),
            client_connections: r.gauge(
                "wiz_gateway_client_connections",
                "Client connections open on the public listeners (plain and TLS).",
            ),
            client_limit_hits: r.counter_vec(
                "wiz_gateway_client_limit_hits_total",
                "Client connections closed by a slow/greedy-client bound, by limit \
                 (max_connections, handshake_timeout, header_timeout, max_header_bytes, body_timeout).",
                &["limit"],
            ),
            registry,
        };
        // Every series exists from the start, so a dashboard shows 0 rather than nothing.
        for limit in [
            "max_connections",
            "handshake_timeout",
            "header_timeout",
            "max_header_bytes",
            "body_timeout",
        ] {
            m.client_limit_hits.with_label_values(&[limit]);
        }
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
