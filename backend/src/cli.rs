//! The ops command line: `wiz-backend accounts create|set-plan|list`, run against the configured
//! database while the service runs. Plan changes reach the gateways through the key versions
//! (`accounts::set_plan`), which the serving backend's long poll reads from the database.

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::{
    accounts::{self, Plan},
    clock::rfc3339,
    config::Config,
    db,
};

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account and its first admin user; prints the account id on the last line.
    Create {
        #[arg(long)]
        name: String,
        /// free, wiz_bot or wiz_pro
        #[arg(long, value_parser = parse_plan)]
        plan: Plan,
        #[arg(long)]
        admin_email: String,
        #[arg(long)]
        admin_password: String,
    },
    /// Change an account's plan (free, wiz_bot, wiz_pro); gateways apply it within a second.
    SetPlan {
        account_id: String,
        #[arg(value_parser = parse_plan)]
        plan: Plan,
    },
    /// List accounts.
    List,
}

fn parse_plan(text: &str) -> Result<Plan, String> {
    text.parse()
}

/// Console passwords set from the command line: at least this long.
const MIN_PASSWORD_CHARS: usize = 8;

pub async fn accounts(config: Config, command: AccountsCommand) -> anyhow::Result<()> {
    let db = db::connect(&config.database_url).await?;
    let passwords = crate::auth::password::Hasher::new(&config.password_hashing);
    let result = run(&db, &passwords, command).await;
    db.close().await;
    result
}

async fn run(
    db: &db::Db,
    passwords: &crate::auth::password::Hasher,
    command: AccountsCommand,
) -> anyhow::Result<()> {
    match command {
        AccountsCommand::Create {
            name,
            plan,
            admin_email,
            admin_password,
        } => {
            if admin_password.chars().count() < MIN_PASSWORD_CHARS {
                bail!("--admin-password: at least {MIN_PASSWORD_CHARS} characters");
            }
            let mut tx = db.begin().await?;
            let (account, user) = accounts::create(
                &mut tx,
                passwords,
                &name,
                plan,
                &admin_email,
                &admin_password,
            )
            .await?;
            tx.commit().await.context("saving the account")?;
            println!(
                "created account {:?} on plan {} with admin {}",
                account.name, account.plan, user.email
            );
            println!("{}", account.id);
        }
        AccountsCommand::SetPlan { account_id, plan } => {
            let mut tx = db.begin().await?;
            let Some(version) = accounts::set_plan(&mut tx, &account_id, plan).await? else {
                bail!("no account with id {account_id}");
            };
            tx.commit().await.context("saving the plan")?;
            println!("account {account_id} is now on plan {plan} (key table version {version})");
        }
        AccountsCommand::List => {
            let mut conn = db.acquire().await?;
            let list = accounts::list(&mut conn).await?;
            println!("{:<30}  {:<8}  {:<24}  NAME", "ID", "PLAN", "CREATED");
            for account in list {
                println!(
                    "{:<30}  {:<8}  {:<24}  {}",
                    account.id,
                    account.plan,
                    rfc3339(account.created_at),
                    account.name
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_set_plan_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::testing::test_config(dir.path());
        let db = db::connect(&config.database_url).await.unwrap();
        let passwords = crate::auth::password::Hasher::new(&config.password_hashing);
        run(
            &db,
            &passwords,
            AccountsCommand::Create {
                name: "Acme".into(),
                plan: Plan::WizBot,
                admin_email: "ops@acme.test".into(),
                admin_password: "long-enough".into(),
            },
        )
        .await
        .unwrap();
        let mut conn = db.acquire().await.unwrap();
        let all = accounts::list(&mut conn).await.unwrap();
        drop(conn);
        assert_eq!(all.len(), 1);
        run(
            &db,
            &passwords,
            AccountsCommand::SetPlan {
                account_id: all[0].id.clone(),
                plan: Plan::Free,
            },
        )
        .await
        .unwrap();
        let mut conn = db.acquire().await.unwrap();
        let account = accounts::get(&mut conn, &all[0].id).await.unwrap().unwrap();
        drop(conn);
        assert_eq!(account.plan, Plan::Free);
        assert!(run(
            &db,
            &passwords,
            AccountsCommand::SetPlan {
                account_id: "acc_missing".into(),
                plan: Plan::Free
            }
        )
        .await
        .is_err());
        assert!(run(
            &db,
            &passwords,
            AccountsCommand::Create {
                name: "Short".into(),
                plan: Plan::Free,
                admin_email: "s@s.test".into(),
                admin_password: "short".into(),
            },
        )
        .await
        .is_err());
        run(&db, &passwords, AccountsCommand::List).await.unwrap();
    }
}
