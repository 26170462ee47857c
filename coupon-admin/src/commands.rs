//! The commands of `coupon-admin` as an operator runs them: each reads the stores, prints what
//! it found and did, and says how the process should exit.

use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use coupon_gate::{
    Campaign, CampaignId, CampaignState, Close, Destination, Gate, Listed, RedisConnection,
    RedisTarget, Release, UserId,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Config, archive, audit, rebuild, sources};

/// How long connecting to Redis, and each of its answers, may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(10);

/// The stores a command reads from and writes to, connected.
pub struct Stores {
    config: Config,
    gate: Gate<RedisConnection>,
    pool: mysql_async::Pool,
}

impl Stores {
    /// Connects to the Redis and the database of `config`.
    ///
    /// # Errors
    ///
    /// Redis or the database unreachable (the error names the settings in use), an invalid key
    /// prefix or `DATABASE_URL`, a TLS file that cannot be read.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let gate = connect_gate(&config).await?;
        Ok(Self {
            gate,
            pool: sources::database(&config.database).await?,
            config,
        })
    }

    /// Closes the database's connections.
    pub async fn close(self) {
        self.pool.disconnect().await.ok();
    }

    async fn topic_events(&self, id: &CampaignId) -> anyhow::Result<Vec<coupon_event::Event>> {
        let config = &self.config;
        let kafka = config.kafka_client();
        sources::topic_events(&kafka, &config.topic.topic, id, config.topic_timeout).await
    }
}

/// The gate over the Redis and key prefix of `config`.
async fn connect_gate(config: &Config) -> anyhow::Result<Gate<RedisConnection>> {
    let redis = &config.redis;
    let tls = redis.tls()?;
    let target = RedisTarget::from_config(&redis.redis_url, &redis.redis_cluster_nodes)
        .with_tls(tls.ca, tls.client);
    let conn = target.connect(REDIS_TIMEOUT).await.with_context(|| {
        format!(
            "cannot connect to Redis at {target} ({})",
            redis.settings_in_use()
        )
    })?;
    Gate::with_key_prefix(conn, config.key_prefix.key_prefix.clone()).context("invalid key prefix")
}

/// Where `coupon-admin destination move` binds the key prefix's outboxes.
#[derive(clap::Args, Debug)]
pub struct Move {
    /// The topic.
    #[arg(long = "to")]
    pub topic: String,
    /// The broker cluster's id (Kafka's `cluster.id`); without it, the binding admits the
    /// topic on any cluster until the first relay of it records its cluster's id.
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Prints the destination the key prefix of `config` is bound to, after moving it to `to` when
/// given. Exit 0.
///
/// # Errors
///
/// Redis unreachable.
pub async fn destination(config: &Config, to: Option<&Move>) -> anyhow::Result<ExitCode> {
    let outbox = connect_gate(config).await?.outbox();
    let prefix = &config.key_prefix.key_prefix;
    if let Some(to) = to {
        let to = Destination {
            topic: to.topic.clone(),
            cluster: to.cluster.clone(),
        };
        let before = outbox.move_destination(&to).await?;
        match before {
            Some(before) => println!("key prefix {prefix}: moved from {before} to {to}"),
            None => println!("key prefix {prefix}: bound to {to} (it was not bound)"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    match outbox.destination().await? {
        Some(bound) => println!("key prefix {prefix}: bound to {bound}"),
        None => println!(
            "key prefix {prefix}: not bound yet (the first relay that runs binds it to its topic)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints every campaign of the key prefix of `config` as a table, in the order of their ids,
/// read a page of a thousand at a time. Exit 0.
///
/// # Errors
///
/// Redis unreachable.
pub async fn list(config: &Config) -> anyhow::Result<ExitCode> {
    const PAGE: usize = 1000;
    let gate = connect_gate(config).await?;
    let now = SystemTime::now();
    println!(
        "{:<24} {:<10} {:>10} {:>10}  {:<20} {:<20} {:<7} {:>8}",
        "CAMPAIGN", "STATE", "QUOTA", "ISSUED", "OPENS", "CLOSES", "OPENING", "QUEUED"
    );
    let (mut after, mut count) = (None, 0);
    loop {
        let page = gate.campaign_page(after.as_ref(), PAGE).await?;
        for (id, listed) in &page {
            let row = match listed {
                Listed::Live(s) => [
                    s.quota.to_string(),
                    s.issued.to_string(),
                    time_text(s.opens_at),
                    time_text(s.closes_at),
                    s.opening.name().to_owned(),
                    s.queued.to_string(),
                ],
                // The tombstone keeps neither the start nor the opening.
                Listed::Archived(t) => [
                    t.quota.to_string(),
                    t.holders.to_string(),
                    "-".to_owned(),
                    time_text(Some(t.closed_at)),
                    "-".to_owned(),
                    "-".to_owned(),
                ],
            };
            let [quota, issued, opens, closes, opening, queued] = row;
            println!(
                "{:<24} {:<10} {quota:>10} {issued:>10}  {opens:<20} {closes:<20} {opening:<7} {queued:>8}",
                id.as_str(),
                listed.stage(now).name(),
            );
        }
        count += page.len();
        if page.len() < PAGE {
            break;
        }
        after = page.last().map(|(id, _)| id.clone());
    }
    println!(
        "{count} campaigns under key prefix {}",
        config.key_prefix.key_prefix
    );
    Ok(ExitCode::SUCCESS)
}

/// A bound of a window for the table: RFC 3339 to the second, `-` for none.
fn time_text(at: Option<SystemTime>) -> String {
    at.and_then(|at| {
        let at = OffsetDateTime::from(at).replace_nanosecond(0).ok()?;
        at.format(&Rfc3339).ok()
    })
    .unwrap_or_else(|| "-".to_owned())
}

/// Takes `user`'s coupon of `campaign` back: the seq goes back to the pool and the release
/// flows through the outbox to the topic and MySQL. Exit 0 when released, 1 when there was
/// nothing to release (no such campaign, or the user holds nothing); nothing changed then.
///
/// # Errors
///
/// Redis unreachable; the release may or may not have happened, and running it again is safe.
pub async fn release(config: &Config, id: &CampaignId, user: &UserId) -> anyhow::Result<ExitCode> {
    let gate = connect_gate(config).await?;
    match gate.release(id, user).await? {
        Release::Released { seq } => {
            println!(
                "campaign {id}: user {user} gave back seq {seq}; the next applicant may get it"
            );
            Ok(ExitCode::SUCCESS)
        }
        Release::NotAdmitted => {
            println!("campaign {id}: user {user} holds no coupon; nothing changed");
            Ok(ExitCode::from(1))
        }
        Release::UnknownCampaign => {
            println!(
                "no campaign {id} under key prefix {}",
                config.key_prefix.key_prefix
            );
            Ok(ExitCode::from(1))
        }
        Release::Archived => {
            println!("campaign {id} is archived; nothing changed");
            Ok(ExitCode::from(1))
        }
    }
}

/// Ends `campaign` now: later applications are told closed, and a draw not run is cancelled.
/// Exit 0 when closed (now or before), 1 when there is no such campaign.
///
/// # Errors
///
/// Redis unreachable; running it again is safe.
pub async fn close(config: &Config, id: &CampaignId) -> anyhow::Result<ExitCode> {
    let gate = connect_gate(config).await?;
    match gate.close(id).await? {
        Close::Closed { at } => {
            println!("campaign {id}: closed at {}", time_text(Some(at)));
            Ok(ExitCode::SUCCESS)
        }
        Close::AlreadyClosed { at } => {
            println!(
                "campaign {id}: had already closed at {}; nothing changed",
                time_text(Some(at))
            );
            Ok(ExitCode::SUCCESS)
        }
        Close::UnknownCampaign => {
            println!(
                "no campaign {id} under key prefix {}",
                config.key_prefix.key_prefix
            );
            Ok(ExitCode::from(1))
        }
        Close::Archived => {
            println!("campaign {id} is archived (it had closed); nothing changed");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Archives `campaign` if it is settled: its state leaves Redis but for a tombstone. Exit 0 when
/// archived (now or before), 1 when refused (the reason printed) or there is no such campaign.
///
/// # Errors
///
/// A store unreachable; running it again finishes whatever was cut short.
pub async fn archive(stores: &Stores, id: &CampaignId) -> anyhow::Result<ExitCode> {
    match archive::archive(&stores.gate, &stores.pool, id).await? {
        archive::Run::Archived { tombstone, now } => {
            let when = time_text(Some(tombstone.archived_at));
            match now {
                true => println!(
                    "campaign {id}: archived at {when}; {} holders, all in MySQL",
                    tombstone.holders
                ),
                false => println!("campaign {id}: already archived at {when}; nothing changed"),
            }
            Ok(ExitCode::SUCCESS)
        }
        archive::Run::Refused(why) => {
            println!("refused: campaign {id} is not settled: {why}");
            Ok(ExitCode::from(1))
        }
        archive::Run::UnknownCampaign => {
            println!(
                "no campaign {id} under key prefix {}",
                stores.config.key_prefix.key_prefix
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// Compares the campaign in Redis, its outbox, the topic (unless `read_topic` is false) and
/// MySQL, and prints every discrepancy: exit 0 when there is none, 1 when there are some.
///
/// # Errors
///
/// A store that cannot be read.
pub async fn audit(stores: &Stores, id: &CampaignId, read_topic: bool) -> anyhow::Result<ExitCode> {
    let gate = &stores.gate;
    let status = gate.status(id).await?;
    let tombstone = match status {
        Some(_) => None,
        None => gate.tombstone(id).await?,
    };
    let holders = gate.recovery().holders(id).await?;
    let outbox = gate.outbox().peek(id).await?;
    let topic = match read_topic {
        true => Some(stores.topic_events(id).await?),
        false => None,
    };
    let rows = sources::coupon_rows(&stores.pool, id).await?;
    let failed_events = sources::unresolved_failures(&stores.pool, id).await?;
    println!("campaign {id}");
    match &status {
        Some(s) => println!(
            "  redis   quota {}, issued {}, {} holders, {} in the outbox",
            s.quota,
            s.issued,
            holders.len(),
            outbox.len()
        ),
        None => match &tombstone {
            Some(t) => println!(
                "  redis   archived at {} with {} holders (MySQL holds its coupons)",
                time_text(Some(t.archived_at)),
                t.holders
            ),
            None => println!("  redis   no such campaign"),
        },
    }
    match &topic {
        Some(events) => println!(
            "  topic   {} events of the campaign on {}",
            events.len(),
            stores.config.topic.topic
        ),
        None => println!("  topic   not read"),
    }
    println!(
        "  mysql   {} coupons, {failed_events} unresolved failed events",
        rows.len()
    );
    let findings = audit::audit(&audit::Inputs {
        issued: status.map(|s| s.issued),
        archived: tombstone.map(|t| t.holders),
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

/// What `rebuild` was asked for: the flags of `coupon-admin rebuild`.
#[derive(clap::Args, Debug)]
pub struct RebuildRequest {
    /// The campaign.
    #[arg(long = "campaign", value_name = "CAMPAIGN")]
    pub id: CampaignId,
    /// Quota (default: the campaign's, if Redis still knows it).
    #[arg(long)]
    pub quota: Option<NonZeroU32>,
    /// Window start, RFC 3339 (default: the campaign's, if Redis still knows it; else none).
    #[arg(long, value_parser = rfc3339)]
    pub opens_at: Option<SystemTime>,
    /// Window end, RFC 3339 (default as for --opens-at).
    #[arg(long, value_parser = rfc3339)]
    pub closes_at: Option<SystemTime>,
    /// Rebuild even though the campaign is open to traffic.
    #[arg(long)]
    pub force: bool,
    /// Work out and print the state, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Bring an archived campaign back into Redis from MySQL and the topic (its quota and end
    /// default to the tombstone's). Without it, rebuilding an archived campaign is refused.
    #[arg(long)]
    pub restore: bool,
}

/// A time given as RFC 3339.
fn rfc3339(text: &str) -> Result<SystemTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time"))
}

/// Validates the request, works out the state the other stores imply, and writes it (unless a
/// dry run): exit 0 when rebuilt. Every refusal prints why and exits 1, having written nothing.
///
/// # Errors
///
/// A store that cannot be read or written.
pub async fn rebuild(stores: &Stores, request: &RebuildRequest) -> anyhow::Result<ExitCode> {
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
    let tombstone = match status {
        Some(_) => None,
        None => gate.tombstone(id).await?,
    };
    match &tombstone {
        Some(t) if !request.restore => {
            return Ok(Err(format!(
                "campaign {id} is archived (at {}, with {} holders, which MySQL holds); pass \
                 --restore to bring it back into Redis",
                time_text(Some(t.archived_at)),
                t.holders
            )));
        }
        None if request.restore => {
            return Ok(Err(format!(
                "campaign {id} is not archived: --restore is for archived campaigns"
            )));
        }
        _ => {}
    }
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
    let Some(quota) = request.quota.or_else(|| {
        let known = status.as_ref().map(|s| s.quota);
        NonZeroU32::new(known.or(tombstone.map(|t| t.quota))?)
    }) else {
        return Ok(Err(format!(
            "Redis does not know campaign {id}; give its --quota"
        )));
    };
    let (opens, closes) = match (&status, &tombstone, (request.opens_at, request.closes_at)) {
        (Some(s), _, (None, None)) => (s.opens_at, s.closes_at),
        // Restored closed, as it was archived.
        (_, Some(t), (opens, None)) => (opens, Some(t.closed_at)),
        (_, _, window) => window,
    };
    Ok(Ok(
        Campaign::new(id.clone(), quota).with_window(opens, closes)?
    ))
}

/// Reads MySQL, the topic and the outbox, works out the holders they imply and prints how.
async fn plan(
    stores: &Stores,
    id: &CampaignId,
) -> anyhow::Result<Result<rebuild::Plan, rebuild::Conflict>> {
    let rows = sources::coupon_rows(&stores.pool, id).await?;
    eprintln!("reading topic {} to its end…", stores.config.topic.topic);
    let topic = stores.topic_events(id).await?;
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
