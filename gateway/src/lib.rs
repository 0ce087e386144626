//! WizMessage Edge gateway: a Pingora reverse proxy that authenticates every `/v1` request by API
//! key + secret, checks the key's IP whitelist and limits, and forwards it to the backend with a
//! proof of having done so.
//!
//! `main.rs` only parses the command line, sets up logging and calls [`build_server`]; tests call
//! [`spawn`] to run a whole gateway in-process and stop it again.

pub mod admin_http;
pub mod auth;
pub mod backend_auth;
pub mod checks;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod errors;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod playground;
pub mod proxy;
pub mod reload;
pub mod state;
pub mod sync;
pub mod throttle;
pub mod tls;
pub mod upstream;
pub mod usage;
pub mod usage_journal;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::sync::oneshot;

use crate::config::StoreKind;

pub use config::{ConfigSource, GatewayConfig, RuntimeConfig};
pub use proxy::Gateway;
pub use state::GatewayState;

/// A configured Pingora server plus a handle on the gateway's shared state.
pub struct BuiltGateway {
    pub server: Server,
    pub state: Arc<GatewayState>,
}

/// How the process starts, beyond its configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Take over the listening sockets of a running gateway through `upgrade_sock` (Pingora's
    /// graceful upgrade) instead of binding them.
    pub upgrade: bool,
}

/// Builds the Pingora server with all gateway services: the public proxy on `listen` (and on
/// `tls.listen` when a certificate is configured), the metrics listener on `metrics_listen`,
/// the key sync, the usage reporter, the limit store housekeeping, the certificate reloader and,
/// if `reload_from` is given, the config hot reloader.
///
/// The server is bootstrapped (with `upgrade`, that is when the old process's sockets arrive);
/// call `run_forever()` (or `run`) on it. Panics if the TLS pair cannot be loaded: `main`
/// checks it first with [`tls::load_pair`] to report the problem cleanly.
pub fn build_server(
    config: RuntimeConfig,
    reload_from: Option<ConfigSource>,
    start: StartOptions,
) -> BuiltGateway {
    let server_conf = ServerConf {
        threads: config.threads,
        work_stealing: config.work_stealing,
        grace_period_seconds: Some(config.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: config.upgrade_sock.display().to_string(),
        // Upstream TLS: `https://` backends are verified against this bundle, else the system
        // roots.
        ca_file: config.backend_ca.as_ref().map(|p| p.display().to_string()),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: start.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf);
    server.bootstrap();

    let state = GatewayState::new(config.clone());
    if let (StoreKind::Memory, Some(path)) = (config.limits.store, &config.usage.journal) {
        match usage_journal::UsageJournal::open(path) {
            Ok(journal) => state.usage.attach_journal(journal),
            Err(e) => tracing::warn!(
                error = %e,
                path = %path.display(),
                "no usage journal: a SIGKILL can lose up to one flush interval of usage"
            ),
        }
    }

    let mut proxy = pingora::proxy::http_proxy(&server.configuration, Gateway::new(state.clone()));
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.clients.keepalive_timeout);
    proxy.server_options = Some(options);
    let proxy = Arc::new(proxy);
    let budget = connections::ConnectionBudget::new(config.clients.max_connections);

    let mut public = Service::new(
        "wiz-gateway proxy".to_string(),
        connections::PublicListener::new(proxy.clone(), None, budget.clone(), state.clone()),
    );
    public.add_tcp(&config.listen.to_string());

    let mut https = None;
    if let Some(tls) = &config.tls {
        let pair = tls::load_pair(&tls.cert, &tls.key)
            .unwrap_or_else(|e| panic!("tls.cert / tls.key: {e}"));
        tracing::info!(listen = %tls.listen, certificate = %pair.summary, "HTTPS listener");
        let resolver = tls::CertResolver::new(pair.key.clone());
        let mut service = Service::new(
            "wiz-gateway proxy (TLS)".to_string(),
            connections::PublicListener::new(
                proxy.clone(),
                Some(tls::acceptor(resolver.clone())),
                budget.clone(),
                state.clone(),
            ),
        );
        // A plain TCP listener: the TLS handshake runs inside the app (see `connections`).
        service.add_tcp(&tls.listen.to_string());
        let reloader = tls::CertReloader::new(
            tls.cert.clone(),
            tls.key.clone(),
            &pair,
            resolver,
            state.clone(),
        );
        https = Some((
            service,
            background_service("TLS certificate reload", reloader),
        ));
    }

    let mut metrics = Service::new(
        "wiz-gateway metrics".to_string(),
        admin_http::MetricsApp::new(state.clone()),
    );
    metrics.threads = Some(1);
    metrics.add_tcp(&config.metrics_listen.to_string());

    let key_sync = background_service("key sync", sync::KeySync::new(state.clone()));
    let usage = background_service("usage reporter", usage::UsageReporter::new(state.clone()));
    let housekeeping = background_service(
        "limits housekeeping",
        limits::LimitsMaintenance::new(state.limits.clone()),
    );

    let guardian = background_service(
        "limit store guardian",
        limits::guardian::Guardian::new(state.clone()),
    );

    let sync_handle = server.add_service(key_sync);
    let guardian_handle = server.add_service(guardian);
    let proxy_handle = server.add_service(public);
    // Serving before the first key snapshot would refuse every key; the sync service reports
    // ready after the snapshot, or after a short wait if the backend is down. Likewise a shared
    // limit store that must be re-seeded first: the guardian reports ready once it is usable
    // (or known to be down), again with a bounded wait.
    proxy_handle.add_dependency(&sync_handle);
    proxy_handle.add_dependency(&guardian_handle);
    if let Some((service, reloader)) = https {
        let https_handle = server.add_service(service);
        https_handle.add_dependency(&sync_handle);
        https_handle.add_dependency(&guardian_handle);
        server.add_service(reloader);
    }
    server.add_service(metrics);
    server.add_service(state.upstreams.health_service());
    server.add_service(usage);
    server.add_service(housekeeping);
    if let Some(source) = reload_from {
        server.add_service(background_service(
            "config reload",
            reload::ConfigReloader::new(state.clone(), source),
        ));
    }
    BuiltGateway { server, state }
}

struct ChannelShutdown(Mutex<Option<oneshot::Receiver<ShutdownSignal>>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match rx {
            Some(rx) => rx.await.unwrap_or(ShutdownSignal::FastShutdown),
            None => std::future::pending().await,
        }
    }
}

/// A gateway running in a background thread of this process (for tests and benches).
/// Dropping it shuts the gateway down.
pub struct RunningGateway {
    pub state: Arc<GatewayState>,
    stop: Option<oneshot::Sender<ShutdownSignal>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningGateway {
    /// Graceful stop: in-flight requests finish, the usage reporter flushes.
    pub fn shutdown(mut self) {
        self.stop_with(ShutdownSignal::GracefulTerminate);
    }

    fn stop_with(&mut self, signal: ShutdownSignal) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(signal);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop_with(ShutdownSignal::FastShutdown);
    }
}

/// Starts a whole gateway in a background thread. Listeners are bound by Pingora on
/// `config.listen` / `config.metrics_listen`; poll `/healthz` for readiness.
pub fn spawn(config: RuntimeConfig) -> RunningGateway {
    let BuiltGateway { server, state } = build_server(config, None, StartOptions::default());
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("wiz-gateway".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(ChannelShutdown(Mutex::new(Some(rx)))),
            })
        })
        .expect("spawning the gateway thread");
    RunningGateway {
        state,
        stop: Some(tx),
        thread: Some(thread),
    }
}
