//! Hot reload of the configuration file, on change (notify) and on SIGHUP.
//!
//! Read → parse → validate → compile → store; a bad file is rejected, logged and counted in
//! `wiz_gateway_config_reload_errors_total`, and the running config stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use crate::config::{ConfigError, ConfigSource};
use crate::state::GatewayState;

/// Editors save in bursts (truncate, write, rename); one reload after the burst is enough.
const DEBOUNCE: Duration = Duration::from_millis(250);

pub struct ConfigReloader {
    state: Arc<GatewayState>,
    source: ConfigSource,
}

impl ConfigReloader {
    pub fn new(state: Arc<GatewayState>, source: ConfigSource) -> ConfigReloader {
        ConfigReloader { state, source }
    }

    /// One reload attempt.
    pub async fn reload(&self) -> Result<(), ConfigError> {
        let source = self.source.clone();
        // Validation resolves the backend host name, which blocks.
        let loaded = tokio::task::spawn_blocking(move || source.load_runtime())
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::Read {
                    path: "(reload task)".into(),
                    reason: e.to_string(),
                })
            });
        match loaded {
            Ok(new) => {
                let restart_only = self.state.apply_config(new);
                self.state.metrics.config_reloads.inc();
                if restart_only.is_empty() {
                    tracing::info!("configuration reloaded");
                } else {
                    tracing::warn!(
                        fields = ?restart_only,
                        "configuration reloaded; these fields take effect only after a restart"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.state.metrics.config_reload_errors.inc();
                tracing::error!(error = %e, "configuration reload rejected; keeping the running configuration");
                Err(e)
            }
        }
    }

    fn watch(&self, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
        let path = self.source.path.clone()?;
        let file_name = path.file_name()?.to_owned();
        // Watching the directory, not the file, survives editors that replace the file by rename.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut watcher =
            match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    if event.kind.is_access() {
                        return;
                    }
                    if event
                        .paths
                        .iter()
                        .any(|p| p.file_name() == Some(file_name.as_os_str()))
                    {
                        let _ = tx.send(());
                    }
                }
            }) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
                    return None;
                }
            };
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory; reload with SIGHUP");
            return None;
        }
        Some(watcher)
    }

    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = self.watch(tx);
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        loop {
            tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    tracing::info!("config file changed; reloading");
                    let _ = self.reload().await;
                }
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!("SIGHUP received; reloading configuration");
                    let _ = self.reload().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ConfigReloader {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}
