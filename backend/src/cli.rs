//! The ops command line: `wiz-backend accounts create|set-plan|list`.

use clap::Subcommand;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// List accounts.
    List,
}

pub async fn accounts(_config: Config, _command: AccountsCommand) -> anyhow::Result<()> {
    Ok(())
}
