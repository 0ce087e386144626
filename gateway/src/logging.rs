//! Process-wide log output: `tracing` lines (JSON when configured), with Pingora's `log` records
//! bridged in so every line has one format.

use std::io::IsTerminal;

use tracing_log::AsLog;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `filter_override` (e.g. from `RUST_LOG`) wins over `log.level`.
pub fn init(log: &LogConfig, filter_override: Option<&str>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter_override.unwrap_or(&log.level))?;
    // Pingora logs through `log`, many `debug!` records a request. With the bridge's default
    // (every level) each one is built and offered to the filter only to be dropped; capped at the
    // filter's most verbose level, `log`'s own static check drops them first.
    let bridge_max = filter
        .max_level_hint()
        .map_or(tracing_log::log::LevelFilter::Trace, |level| level.as_log());
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
    tracing_log::LogTracer::builder()
        .with_max_level(bridge_max)
        .init()
        .map_err(|e| anyhow::anyhow!("bridging `log` records: {e}"))?;
    Ok(())
}
