//! `coupon-admin`: operator tools for one campaign. `audit` compares Redis, the topic and MySQL
//! and names every discrepancy (exit 0: none, 1: some, 2: could not audit); `rebuild` restores
//! the gate state in Redis from MySQL, the topic and the outbox after Redis lost it (exit 0:
//! rebuilt, 1: refused, 2: failed).

use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};
use coupon_admin::{audit, rebuild, sources};
use coupon_gate::{Campaign, CampaignId, CampaignState, Gate, RedisConnection, RedisTarget};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Operator tools for one campaign of coupon-gate. Every flag falls back to the environment
/// variable named beside it, the same ones coupon-http and coupon-sink read, and that to the
/// settings file (--config), whose keys are the variables' names in lower case without COUPON_.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Redis URL (one server).
    #[arg(long, global = true, env = "REDIS_URL", default_value = coupon_gate::DEFAULT_REDIS_URL)]
    redis_url: String,
    /// Nodes of a Redis Cluster, host:port, comma separated; when set, it takes precedence over
    /// REDIS_URL.
    #[arg(
        long,
        global = true,
        env = "REDIS_CLUSTER_NODES",
        value_delimiter = ','
    )]
    redis_cluster_nodes: Vec<String>,
    /// Prefix of every Redis key.
    #[arg(long, global = true, env = "COUPON_KEY_PREFIX", default_value = coupon_gate::DEFAULT_KEY_PREFIX)]
    key_prefix: String,
    /// MySQL database the sink writes to.
    #[arg(long, global = true, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, global = true, env = "KAFKA_BROKERS", default_value = coupon_event::DEFAULT_BROKERS)]
    kafka_brokers: String,
    /// Topic of admissions.
    #[arg(long, global = true, env = "COUPON_TOPIC", default_value = coupon_event::DEFAULT_TOPIC)]
    topic: String,
    /// Reading the topic (to where each partition ends when reading starts) fails if it takes
    /// longer than this many milliseconds.
    #[arg(long, global = true, env = "COUPON_TOPIC_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    topic_timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compare the campaign in Redis, its outbox, the topic and MySQL; list every discrepancy.
    Audit {
        /// The campaign.
        #[arg(long)]
        campaign: String,
        /// Do not read the topic (admissions on it then show as not persisted).
        #[arg(long)]
        no_topic: bool,
    },
    /// Restore the campaign's gate state in Redis (holders, issued count, next seq, free seqs)
    /// from MySQL rows, the topic and the outbox. Refused while the campaign is open to
    /// traffic, unless --force.
    Rebuild {
        /// The campaign.
        #[arg(long)]
        campaign: String,
        /// Quota (default: the campaign's, if Redis still knows it).
        #[arg(long)]
        quota: Option<NonZeroU32>,
        /// Window start, RFC 3339 (default: the campaign's, if Redis still knows it; else none).
        #[arg(long)]
        opens_at: Option<String>,
        /// Window end, RFC 3339 (default as for --opens-at).
        #[arg(long)]
        closes_at: Option<String>,
        /// Rebuild even though the campaign is open to traffic.
        #[arg(long)]
        force: bool,
        /// Work out and print the state, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = coupon_cli::parse::<Args>();
    match run(args).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("coupon-admin: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The database coupon-sink writes to by default (its `Config::DEFAULT_DATABASE_URL`).
const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306/coupon";

/// How long connecting to Redis, and each of its answers, may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(10);

/// Where every command reads from and writes to.
struct Stores<'a> {
    args: &'a Args,
    gate: Gate<RedisConnection>,
    pool: mysql_async::Pool,
    /// How long reading the topic to its end may take.
    topic_limit: Duration,
}

/// What `rebuild` was asked for.
struct RebuildRequest {
    id: CampaignId,
    quota: Option<NonZeroU32>,
    window: (Option<SystemTime>, Option<SystemTime>),
    force: bool,
    dry_run: bool,
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = RedisTarget::from_config(&args.redis_url, &args.redis_cluster_nodes);
    let conn = target
        .connect(REDIS_TIMEOUT)
        .await
        .with_context(|| format!("cannot connect to redis at {target}"))?;
    let stores = Stores {
        args: &args,
        gate: Gate::with_key_prefix(conn, args.key_prefix.clone()).context("invalid key prefix")?,
        pool: mysql_async::Pool::new(
            mysql_async::Opts::from_url(&args.database_url).context("invalid DATABASE_URL")?,
        ),
        topic_limit: Duration::from_millis(args.topic_timeout_ms),
    };
    let code = match &args.command {
        Command::Audit { campaign, no_topic } => {
            audit(&stores, &CampaignId::new(campaign.as_str())?, !no_topic).await?
        }
        Command::Rebuild {
            campaign,
            quota,
            opens_at,
            closes_at,
            force,
            dry_run,
        } => {
            let request = RebuildRequest {
                id: CampaignId::new(campaign.as_str())?,
                quota: *quota,
                window: (
                    time_arg(opens_at.as_deref())?,
                    time_arg(closes_at.as_deref())?,
                ),
                force: *force,
                dry_run: *dry_run,
            };
            rebuild(&stores, &request).await?
        }
    };
    stores.pool.disconnect().await.ok();
    Ok(code)
}

async fn audit(stores: &Stores<'_>, id: &CampaignId, read_topic: bool) -> anyhow::Result<ExitCode> {
    let Stores {
        args, gate, pool, ..
    } = stores;
    let status = gate.status(id).await?;
    let holders = gate.recovery().holders(id).await?;
    let outbox = gate.outbox().peek(id).await?;
    let topic = if read_topic {
        Some(sources::topic_events(&args.kafka_brokers, &args.topic, id, stores.topic_limit).await?)
    } else {
        None
    };
    let rows = sources::coupon_rows(pool, id).await?;
    let failed_events = sources::unresolved_failures(pool, id).await?;
    println!("campaign {id}");
    match &status {
        Some(s) => println!(
            "  redis   quota {}, issued {}, {} holders, {} in the outbox",
            s.quota,
            s.issued,
            holders.len(),
            outbox.len()
        ),
        None => println!("  redis   no such campaign"),
    }
    match &topic {
        Some(events) => println!(
            "  topic   {} events of the campaign on {}",
            events.len(),
            args.topic
        ),
        None => println!("  topic   not read"),
    }
    println!(
        "  mysql   {} coupons, {failed_events} unresolved failed events",
        rows.len()
    );
    let findings = audit::audit(&audit::Inputs {
        issued: status.map(|s| s.issued),
        holders: &holders,
        outbox: &outbox,
        topic: topic.as_deref(),
        rows: &rows,
        failed_events,
    });
    for finding in &findings {
        println!("  {finding}");
    }
    let problems = findings.iter().filter(|f| f.is_problem()).count();
    let in_flight = findings.len() - problems;
    if problems == 0 {
        println!("OK: Redis and MySQL agree ({in_flight} on their way)");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("DISCREPANCIES: {problems} ({in_flight} more on their way)");
        Ok(ExitCode::from(1))
    }
}

/// Validates the request, works out the state the other stores imply, and writes it (unless a
/// dry run). Every refusal prints why and exits 1, having written nothing.
async fn rebuild(stores: &Stores<'_>, request: &RebuildRequest) -> anyhow::Result<ExitCode> {
    let refused = |why: String| {
        println!("refused: {why}");
        Ok(ExitCode::from(1))
    };
    let definition = match definition(&stores.gate, request).await? {
        Ok(definition) => definition,
        Err(why) => return refused(why),
    };
    let plan = match plan(stores, &request.id).await? {
        Ok(plan) => plan,
        Err(conflict) => return refused(conflict.to_string()),
    };
    let quota = definition.quota();
    if plan.holders.len() > quota.get() as usize {
        return refused(format!(
            "{} holders exceed the quota {quota}",
            plan.holders.len()
        ));
    }
    let state = match CampaignState::new(definition, plan.holders) {
        Ok(state) => state,
        Err(invalid) => return refused(invalid.to_string()),
    };
    if request.dry_run {
        println!("dry run: nothing written");
        return Ok(ExitCode::SUCCESS);
    }
    stores.gate.recovery().restore(&state).await?;
    let now = stores
        .gate
        .status(&request.id)
        .await?
        .context("the campaign after restoring")?;
    println!(
        "rebuilt: quota {}, issued {}, remaining {}",
        now.quota,
        now.issued,
        now.remaining()
    );
    Ok(ExitCode::SUCCESS)
}

/// The definition to restore: the request's quota and window, else what Redis still knows.
/// `Err` says why the rebuild is refused: the campaign is open to traffic (without `--force`),
/// or nothing gives its quota.
async fn definition(
    gate: &Gate<RedisConnection>,
    request: &RebuildRequest,
) -> anyhow::Result<Result<Campaign, String>> {
    let id = &request.id;
    let status = gate.status(id).await?;
    if let Some(s) = &status {
        let now = SystemTime::now();
        let open = s.opens_at.is_none_or(|t| t <= now) && s.closes_at.is_none_or(|t| now < t);
        if open && !request.force {
            return Ok(Err(format!(
                "campaign {id} is open to traffic in Redis (issued {} of {}). Close its window \
                 first (POST /api/campaigns with closesAt in the past) and rebuild with \
                 --closes-at, or pass --force.",
                s.issued, s.quota
            )));
        }
    }
    let Some(quota) = request
        .quota
        .or_else(|| status.as_ref().and_then(|s| NonZeroU32::new(s.quota)))
    else {
        return Ok(Err(format!(
            "Redis does not know campaign {id}; give its --quota"
        )));
    };
    let (opens, closes) = match (&status, request.window) {
        (Some(s), (None, None)) => (s.opens_at, s.closes_at),
        (_, window) => window,
    };
    Ok(Ok(
        Campaign::new(id.clone(), quota).with_window(opens, closes)?
    ))
}

/// Reads MySQL, the topic and the outbox, works out the holders they imply and prints how.
async fn plan(
    stores: &Stores<'_>,
    id: &CampaignId,
) -> anyhow::Result<Result<rebuild::Plan, rebuild::Conflict>> {
    let args = stores.args;
    let rows = sources::coupon_rows(&stores.pool, id).await?;
    eprintln!("reading topic {} to its end…", args.topic);
    let topic =
        sources::topic_events(&args.kafka_brokers, &args.topic, id, stores.topic_limit).await?;
    let outbox = stores.gate.outbox().peek(id).await?;
    let plan = match rebuild::plan(&rows, &topic, &outbox) {
        Ok(plan) => plan,
        Err(conflict) => return Ok(Err(conflict)),
    };
    println!(
        "campaign {id}: {} rows in MySQL, {} events on the topic, {} in the outbox",
        plan.rows, plan.topic_events, plan.outbox_entries
    );
    println!(
        "  → {} holders ({} not yet in MySQL, {} rows released since), highest seq {}",
        plan.holders.len(),
        plan.not_yet_in_mysql,
        plan.released,
        plan.holders.values().max().copied().unwrap_or(0)
    );
    Ok(Ok(plan))
}

fn time_arg(text: Option<&str>) -> anyhow::Result<Option<SystemTime>> {
    text.map(|t| {
        OffsetDateTime::parse(t, &Rfc3339)
            .map(SystemTime::from)
            .with_context(|| format!("{t:?} is not an RFC 3339 time"))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_readme_lists_these_settings() {
        let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        coupon_cli::check_readme(&Args::command(), &readme).unwrap_or_else(|err| panic!("{err}"));
    }
}
