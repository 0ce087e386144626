//! `wiz-gateway [--config FILE] [--check]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wiz_gateway::config::{self, ConfigSource};

#[derive(Parser, Debug)]
#[command(
    name = "wiz-gateway",
    version,
    about = "WizMessage Edge API gateway (Pingora)"
)]
struct Cli {
    /// Configuration file (YAML). The default path may be absent; an explicit one may not.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration (file + WIZ_GATEWAY__* variables) and exit.
    #[arg(long)]
    check: bool,
    /// Zero-downtime upgrade: take over the listening sockets of the running gateway (through
    /// `upgrade_sock`), then send it SIGQUIT; it stops accepting and drains.
    #[arg(long)]
    upgrade: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = ConfigSource {
        file_required: cli.config.is_some(),
        path: Some(
            cli.config
                .unwrap_or_else(|| config::default_path().to_path_buf()),
        ),
        env: Vec::new(),
    }
    .with_env(std::env::vars());

    let runtime = match source.load_runtime() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wiz-gateway: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(tls) = &runtime.tls {
        if let Err(e) = wiz_gateway::tls::load_pair(&tls.cert, &tls.key) {
            eprintln!("wiz-gateway: invalid configuration: tls.cert / tls.key: {e}");
            return ExitCode::FAILURE;
        }
    }
    if cli.check {
        println!("wiz-gateway: configuration OK");
        return ExitCode::SUCCESS;
    }
    let rust_log = std::env::var("RUST_LOG").ok();
    if let Err(e) = wiz_gateway::logging::init(&runtime.log, rust_log.as_deref()) {
        eprintln!("wiz-gateway: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!(
        listen = %runtime.listen,
        metrics_listen = %runtime.metrics_listen,
        backends = runtime.backends.len(),
        "starting wiz-gateway"
    );
    let start = wiz_gateway::StartOptions {
        upgrade: cli.upgrade,
    };
    wiz_gateway::build_server(runtime, Some(source), start)
        .server
        .run_forever()
}
