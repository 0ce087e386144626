//! Prometheus metrics of the backend, in one explicit registry (no process-wide globals, so
//! every test's backend has its own). Labels are low-cardinality only: matched route templates,
//! status classes, outcomes; never ids, keys or phone numbers.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "wiz_backend_http_requests_total",
                "HTTP requests handled, by matched route, method and status class",
            ),
            &["route", "method", "status_class"],
        )
        .expect("metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "wiz_backend_http_request_duration_seconds",
                "Time to answer an HTTP request, by matched route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route"],
        )
        .expect("metric");
        registry
            .register(Box::new(http_requests.clone()))
            .expect("register");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("register");
        Self {
            registry,
            http_requests,
            http_duration,
        }
    }

    /// Registers a metric created elsewhere (messaging, webhooks) in this registry.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, collector: &C) -> C {
        self.registry
            .register(Box::new(collector.clone()))
            .expect("metric names are unique");
        collector.clone()
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
