//! `wiz-backend`: parses the command line, sets up tracing, loads config and hands over to the
//! library. Everything with logic lives in the library so tests can drive it directly.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use wiz_backend::{cli, config::Config};

#[derive(Parser)]
#[command(name = "wiz-backend", version, about = "WizMessage Edge backend")]
struct Args {
    /// YAML config file; a missing default file means "all defaults".
    #[arg(long, global = true, default_value = "config/backend.yaml")]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Manage accounts (tenants) in the configured database.
    Accounts {
        #[command(subcommand)]
        command: cli::AccountsCommand,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config, std::env::vars()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("wiz-backend: invalid configuration: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.check {
        println!("configuration ok");
        return std::process::ExitCode::SUCCESS;
    }
    wiz_backend::telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match args.command.unwrap_or(Command::Serve) {
            Command::Serve => wiz_backend::run(config).await,
            Command::Accounts { command } => cli::accounts(config, command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wiz-backend: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
