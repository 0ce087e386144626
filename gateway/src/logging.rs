//! Process-wide log output: `tracing` lines (JSON when configured), with Pingora's `log` records
//! bridged in so every line has one format.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `filter_override` (e.g. from `RUST_LOG`) wins over `log.level`.
pub fn init(log: &LogConfig, filter_override: Option<&str>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter_override.unwrap_or(&log.level))?;
    // Colour codes only for a terminal: in a log file they are noise, and cost formatting.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Json => tracing::subscriber::set_global_default(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish(),
        ),
        LogFormat::Text => tracing::subscriber::set_global_default(builder.finish()),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    tracing_log::LogTracer::init().map_err(|e| anyhow::anyhow!("bridging `log` records: {e}"))?;
    Ok(())
}
