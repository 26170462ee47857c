//! `coupon-admin`: operator tools for one campaign. `audit` compares Redis, the topic and MySQL
//! and names every discrepancy (exit 0: none, 1: some, 2: could not audit); `rebuild` restores
//! the gate state in Redis from MySQL, the topic and the outbox after Redis lost it (exit 0:
//! rebuilt, 1: refused, 2: failed); `destination` shows or moves the topic the key prefix's
//! outboxes are delivered to; `list`, `release`, `close` and `archive` take campaigns through
//! their life.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coupon_admin::Config;
use coupon_admin::commands::{self, RebuildRequest, Stores};
use coupon_cli::LogTo;
use coupon_gate::{CampaignId, UserId};

/// Operator tools for the campaigns of coupon-gate. Every flag falls back to the environment
/// variable named beside it, the same ones coupon-http and coupon-sink read, and that to the
/// settings file (--config), whose keys are the flags' names with _ for -.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compare the campaign in Redis, its outbox, the topic and MySQL; list every discrepancy.
    Audit {
        /// The campaign.
        #[arg(long)]
        campaign: CampaignId,
        /// Do not read the topic (admissions on it then show as not persisted).
        #[arg(long)]
        no_topic: bool,
    },
    /// Restore the campaign's gate state in Redis (holders, issued count, next seq, free seqs)
    /// from MySQL rows, the topic and the outbox. Refused while the campaign is open to
    /// traffic, unless --force.
    Rebuild(RebuildRequest),
    /// Show the topic (and broker cluster) the key prefix's outboxes are bound to, or move the
    /// binding: relays bound elsewhere stop delivering within a second, and relays of the new
    /// destination start.
    Destination {
        #[command(subcommand)]
        action: Option<DestinationAction>,
    },
    /// List every campaign of the key prefix with its state, quota, issued coupons and window.
    List,
    /// Take a user's coupon back (a refund, a fraud): the seq goes back to the pool, and the
    /// release reaches the topic and MySQL. Exit 1 when the user holds nothing.
    Release {
        /// The campaign.
        #[arg(long)]
        campaign: CampaignId,
        /// The user.
        #[arg(long)]
        user: UserId,
    },
    /// End the campaign now: later applications are told closed, holders keep their coupons,
    /// a draw not run is cancelled, and the definition is kept for good.
    Close {
        /// The campaign.
        #[arg(long)]
        campaign: CampaignId,
    },
    /// Remove a settled campaign's state from Redis, keeping a tombstone that answers
    /// `archived`: refused (exit 1, with the reason) unless it is closed, its outbox is
    /// delivered, MySQL holds exactly its holders and no failed event of it waits.
    Archive {
        /// The campaign.
        #[arg(long)]
        campaign: CampaignId,
    },
}

#[derive(Subcommand, Debug)]
enum DestinationAction {
    /// Print the binding (the default).
    Show,
    /// Bind the key prefix's outboxes to another topic; what is still in them goes there.
    Move(commands::Move),
}

#[tokio::main]
async fn main() -> ExitCode {
    coupon_cli::init_logging("warn", LogTo::Stderr);
    let args = coupon_cli::parse::<Args>();
    match run(args).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("coupon-admin: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = &args.config;
    match args.command {
        // Redis alone.
        Command::Destination { action } => {
            let to = match &action {
                None | Some(DestinationAction::Show) => None,
                Some(DestinationAction::Move(to)) => Some(to),
            };
            commands::destination(config, to).await
        }
        Command::List => commands::list(config).await,
        Command::Release { campaign, user } => commands::release(config, &campaign, &user).await,
        Command::Close { campaign } => commands::close(config, &campaign).await,
        // Every store.
        Command::Audit { campaign, no_topic } => {
            with_stores(args.config, async |s| {
                commands::audit(s, &campaign, !no_topic).await
            })
            .await
        }
        Command::Archive { campaign } => {
            with_stores(args.config, async |s| commands::archive(s, &campaign).await).await
        }
        Command::Rebuild(request) => {
            with_stores(args.config, async |s| commands::rebuild(s, &request).await).await
        }
    }
}

/// Runs `command` on the stores of `config`, then closes the database's connections.
async fn with_stores(
    config: Config,
    command: impl AsyncFnOnce(&Stores) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let stores = Stores::connect(config).await?;
    let code = command(&stores).await;
    stores.close().await;
    code
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_readme_documents_these_settings() {
        let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        coupon_cli::check_settings::<Args>(&readme, None).unwrap_or_else(|err| panic!("{err}"));
    }
}
