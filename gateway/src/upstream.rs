//! The backend pool (SPEC §10 "Several backends"): every configured backend, its health from an
//! active check of `GET /healthz` about once a second, and the choice of backend for a request,
//! a key sync poll or a usage report.
//!
//! Selection and health are Pingora's `pingora-load-balancing` (round robin over the backends
//! its health checks call ready). The check itself is ours, because each backend needs its own
//! peer (its own `Host`, and once backends can be `https://`, its own TLS settings), while the
//! crate's `HttpHealthCheck` has one peer template for all; both the check and the proxy build
//! their peer in [`peer_for`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::http::Connector as HttpConnector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend as LbBackend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::services::background::GenBackgroundService;
use pingora::{Error, ErrorType, Result};
use prometheus::{IntCounter, IntGaugeVec};

use crate::config::Backend;
use crate::metrics::Metrics;

/// How often every backend's `/healthz` is called.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A check that takes longer fails: a backend that slow is no place for new requests.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The peer for one backend: address, and the transport settings every connection to it uses.
/// The one place where a backend's connection settings are decided; callers only adjust
/// timeouts. `https://` backends: TLS with SNI, the chain verified against `backend_ca` (the
/// connector's CA file, see [`connector_options`]) or the system roots, and the name against
/// the URL's host.
pub fn peer_for(backend: &Backend) -> HttpPeer {
    if backend.tls {
        HttpPeer::new(backend.addr, true, backend.host.clone())
    } else {
        HttpPeer::new(backend.addr, false, String::new())
    }
}

/// Connector settings for talking to backends outside the proxy (health checks): the same CA
/// as the proxy's connector, which Pingora builds from `ServerConf::ca_file`.
pub fn connector_options(backend_ca: Option<&std::path::Path>) -> ConnectorOptions {
    let mut options = ConnectorOptions::new(1);
    options.ca_file = backend_ca.map(|p| p.display().to_string());
    options
}

/// The backend's position in the pool, carried in the load balancer's `Backend::ext`.
#[derive(Debug, Clone, Copy)]
struct Index(usize);

pub struct Upstreams {
    lb: Arc<LoadBalancer<RoundRobin>>,
    backends: Arc<[Backend]>,
    /// Where the control calls (key sync, usage reports) start their round.
    next_control: AtomicUsize,
    /// By backend index.
    requests: Box<[IntCounter]>,
    errors: Box<[IntCounter]>,
}

impl Upstreams {
    pub fn new(
        backends: &[Backend],
        backend_ca: Option<&std::path::Path>,
        metrics: &Metrics,
    ) -> Arc<Upstreams> {
        let backends: Arc<[Backend]> = backends.into();
        let set: BTreeSet<LbBackend> = backends
            .iter()
            .map(|b| {
                let mut lb_backend = LbBackend {
                    addr: pingora::protocols::l4::socket::SocketAddr::Inet(b.addr),
                    weight: 1,
                    ext: Default::default(),
                };
                lb_backend.ext.insert(Index(b.index));
                lb_backend
            })
            .collect();
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Static::new(set)));
        lb.set_health_check(Box::new(HealthzCheck {
            backends: backends.clone(),
            connector: HttpConnector::new(Some(connector_options(backend_ca))),
            healthy: metrics.backend_healthy.clone(),
        }));
        lb.health_check_frequency = Some(HEALTH_CHECK_INTERVAL);
        lb.parallel_health_check = true;
        // Static discovery answers at once; the selector must exist before the first request.
        futures::FutureExt::now_or_never(lb.update())
            .expect("static discovery does not wait")
            .expect("static discovery does not fail");
        // Handles resolved once: a label lookup (and formatting the index) per request showed in
        // the profile.
        let mut requests = Vec::with_capacity(backends.len());
        let mut errors = Vec::with_capacity(backends.len());
        for b in backends.iter() {
            let label = b.index.to_string();
            requests.push(metrics.backend_requests.with_label_values(&[&label]));
            errors.push(metrics.backend_errors.with_label_values(&[&label]));
            // Pingora starts every backend as healthy until a check says otherwise.
            metrics.backend_healthy.with_label_values(&[&label]).set(1);
        }
        Arc::new(Upstreams {
            lb: Arc::new(lb),
            backends,
            next_control: AtomicUsize::new(0),
            requests: requests.into_boxed_slice(),
            errors: errors.into_boxed_slice(),
        })
    }

    /// The background service that runs the health checks.
    pub fn health_service(&self) -> GenBackgroundService<LoadBalancer<RoundRobin>> {
        GenBackgroundService::new("backend health checks".into(), self.lb.clone())
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Backend> {
        self.backends.get(index)
    }

    fn is_healthy(&self, b: &Backend) -> bool {
        let lb_backend = LbBackend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(b.addr),
            weight: 1,
            ext: Default::default(),
        };
        self.lb.backends().ready(&lb_backend)
    }

    /// Whether any backend passed its last health check.
    pub fn any_healthy(&self) -> bool {
        self.backends.iter().any(|b| self.is_healthy(b))
    }

    /// The backend for the next attempt of a request: a healthy one not tried yet, in round
    /// robin. If every healthy one was tried, any untried one (its health check may lag behind a
    /// restart). `None` when every backend was tried.
    pub fn pick(&self, tried: &[usize]) -> Option<&Backend> {
        let untried = |b: &LbBackend| b.ext.get::<Index>().is_some_and(|i| !tried.contains(&i.0));
        let chosen = self
            .lb
            .select_with(b"", self.backends.len() * 2, |b, healthy| {
                healthy && untried(b)
            })
            .or_else(|| {
                self.lb
                    .select_with(b"", self.backends.len() * 2, |b, _| untried(b))
            })?;
        let index = chosen.ext.get::<Index>()?.0;
        self.backends.get(index)
    }

    /// The order in which control calls (key sync, usage reports) try the backends: healthy ones
    /// first, starting one further each call so that load spreads, then the others.
    pub fn control_order(&self) -> Vec<&Backend> {
        let n = self.backends.len();
        let start = self.next_control.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let rotated = (0..n).map(|i| &self.backends[(start + i) % n]);
        let (mut healthy, down): (Vec<&Backend>, Vec<&Backend>) =
            rotated.partition(|b| self.is_healthy(b));
        healthy.extend(down);
        healthy
    }

    pub fn record_attempt(&self, index: usize) {
        if let Some(c) = self.requests.get(index) {
            c.inc();
        }
    }

    pub fn record_error(&self, index: usize) {
        if let Some(c) = self.errors.get(index) {
            c.inc();
        }
    }
}

/// `GET /healthz` answered 200 within a second.
struct HealthzCheck {
    backends: Arc<[Backend]>,
    connector: HttpConnector,
    healthy: IntGaugeVec,
}

#[async_trait]
impl HealthCheck for HealthzCheck {
    async fn check(&self, target: &LbBackend) -> Result<()> {
        let backend = target
            .ext
            .get::<Index>()
            .and_then(|i| self.backends.get(i.0))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "unknown backend"))?;
        let mut peer = peer_for(backend);
        peer.options.connection_timeout = Some(HEALTH_CHECK_TIMEOUT);
        peer.options.total_connection_timeout = Some(HEALTH_CHECK_TIMEOUT);
        peer.options.read_timeout = Some(HEALTH_CHECK_TIMEOUT);
        peer.options.write_timeout = Some(HEALTH_CHECK_TIMEOUT);
        let (mut session, _reused) = self.connector.get_http_session(&peer).await?;
        let mut req = RequestHeader::build("GET", b"/healthz", None)?;
        req.insert_header(http::header::HOST, backend.host.as_str())?;
        session.write_request_header(Box::new(req)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let status = session
            .response_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(0);
        if status != 200 {
            return Error::e_explain(
                ErrorType::CustomCode("healthz status", status),
                "backend health check",
            );
        }
        Ok(())
    }

    async fn health_status_change(&self, target: &LbBackend, healthy: bool) {
        let Some(Index(index)) = target.ext.get::<Index>().copied() else {
            return;
        };
        self.healthy
            .with_label_values(&[&index.to_string()])
            .set(i64::from(healthy));
        if healthy {
            tracing::info!(backend = index, "backend is healthy again");
        } else {
            tracing::warn!(
                backend = index,
                "backend failed its health check; no new requests go to it"
            );
        }
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}
