//! WizMessage Edge backend: owns all state (accounts, API keys, contacts, messages, webhooks)
//! and serves the public `/v1` API (through the gateway), the console's `/admin` API, the console
//! itself, and the gateway's `/internal` API.

pub mod accounts;
pub mod auth;
pub mod background;
pub mod batches;
pub mod channel;
pub mod chatbot;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod contacts;
pub mod db;
pub mod error;
pub mod events;
pub mod examples;
pub mod idempotency;
pub mod ids;
pub mod internal;
pub mod keys;
pub mod messages;
pub mod metrics;
pub mod openapi;
pub mod refusal;
pub mod request_id;
pub mod routes;
pub mod secrets;
pub mod state;
pub mod telemetry;
pub mod templates;
#[cfg(test)]
pub mod testing;
pub mod tls;
pub mod unit_of_work;
pub mod webhooks;

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{config::Config, state::AppState};

/// Opens the database (applying migrations) and creates the demo account on first start.
pub async fn open(mut config: Config) -> anyhow::Result<AppState> {
    config.secrets_key =
        secrets::load_or_create_key(&config.secrets_key, &config.secrets_key_file)?;
    let db = db::connect(&config.database_url).await?;
    let state = AppState::new(db, config);
    webhooks::endpoints::seal_plaintext_secrets(&state.db, &state.secrets).await?;
    accounts::bootstrap(&state).await?;
    examples::seed_existing_accounts(&state.db)
        .await
        .context("seeding the examples of existing accounts")?;
    Ok(state)
}

/// Runs the service on the configured listener until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let state = open(config).await?;
    serve(state, listener, shutdown_signal()).await
}

/// Serves on a listener the caller bound (tests bind `127.0.0.1:0`), with the background
/// workers running, until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "wiz-backend listening");
    let app = routes::router(state.clone());
    // Every background task in one lifecycle, stopped gracefully after the listener closes.
    let mut background = background::Background::new();
    channel::worker::spawn(&state, &mut background);
    webhooks::spawn(&state, &mut background);
    // Graceful shutdown waits for requests in flight, and a gateway's key-sync long poll can
    // wait up to 30 s: tell such waits to answer now.
    let stopping = state.shutting_down.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    let make_service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = match (&state.config.listen_tls.cert, &state.config.listen_tls.key) {
        (Some(cert), Some(key)) => {
            let tls = tls::server_config(cert.as_ref(), key.as_ref())
                .map_err(|reason| anyhow::anyhow!("listen_tls: {reason}"))?;
            tracing::info!("serving HTTPS");
            // `tap_io` gives the listener axum's ConnectInfo<SocketAddr> support.
            use axum::serve::ListenerExt;
            let listener = tls::TlsListener::new(listener, tls)?.tap_io(|_| {});
            axum::serve(listener, make_service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        _ => {
            axum::serve(listener, make_service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
    .context("serving HTTP");
    background
        .stop(webhooks::stop_grace(&state.config.webhooks))
        .await;
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
