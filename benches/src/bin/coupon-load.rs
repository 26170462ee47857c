//! `coupon-load`: fires a flash sale at a running `coupon-http`, waits until the sink has written
//! every coupon into MySQL, and prints a report with a PASS/FAIL verdict on the guarantees.
//! Exit code: 0 PASS, 1 FAIL, 2 the sale could not be run.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use coupon_bench::admin::Server;
use coupon_bench::check::{self, Stored};
use coupon_bench::sale::{self, Crowd, Identity, Signer, Tally, Target};
use coupon_bench::scrape::Scrape;
use indicatif::{ProgressBar, ProgressStyle};

/// Fires a flash sale at coupon-http: distinct users, some clicking several times, arriving
/// concurrently; then checks the coupons in MySQL against the answers.
///
/// Every flag falls back to the environment variable named beside it (a secret's also to
/// <VARIABLE>_FILE, a file holding it), and that to the settings file (--config).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Base URL of coupon-http.
    #[arg(long, env = "COUPON_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Campaign to apply to (default: a new one, `flash-<unix time>`).
    #[arg(long)]
    campaign: Option<String>,
    /// Create the campaign with this quota first (needs --admin-token); without it the
    /// campaign must exist.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    quota: Option<u32>,
    /// How the created campaign opens: race (first come, first served from now) or draw (a
    /// pre-queue of --queue-secs from now, then a draw; the report adds the draw's figures).
    #[arg(long, default_value = "race", value_parser = ["race", "draw"])]
    opening: String,
    /// With --opening draw: seconds the pre-queue stays open before the draw.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    queue_secs: u64,
    /// Bearer token of coupon-http's admin endpoints.
    #[arg(long, env = "COUPON_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How users say who they are: jwt (a bearer token per user, signed with --jwt-secret), or
    /// body ({"userId":N}, for a server with COUPON_IDENTITY=body).
    #[arg(long, env = "COUPON_IDENTITY", default_value = "jwt", value_parser = ["jwt", "body"])]
    identity: String,
    /// The HS256 secret coupon-http verifies tokens with (its COUPON_JWT_SECRET).
    #[arg(long, env = "COUPON_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Distinct users in the crowd.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Id of the first user; the others follow it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    first_user: u64,
    /// Share of users (0 to 1) who click more than once.
    #[arg(long, default_value_t = 0.2)]
    repeat_share: f64,
    /// Most clicks one repeating user makes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_clicks: u32,
    /// Connections sending at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Clicks per second, sent at a steady pace (default: each click as soon as a connection is
    /// free). Give enough --concurrency to keep up: a connection waits for its answer.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    /// Seed of the clicks and their order (default: from the clock; printed, to repeat a run).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    database: coupon_cli::Database,
    /// Only fire the sale and report the answers; do not check MySQL.
    #[arg(long)]
    no_verify: bool,
    /// Seconds to wait for MySQL to hold every coupon after the last answer.
    #[arg(long, default_value_t = 120)]
    drain_timeout_secs: u64,
    /// Seconds to wait for coupon-http to be ready before the sale.
    #[arg(long, default_value_t = 60)]
    ready_timeout_secs: u64,
    /// A `/metrics` URL of coupon-http or coupon-sink (repeat the flag for each process): the
    /// report ends with the figures that matter from their metrics.
    #[arg(long = "metrics")]
    metrics: Vec<String>,
}

/// A `--rate`: a finite number of clicks per second above zero.
fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{value:?} is not a number of clicks per second above 0"
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = coupon_cli::parse::<Args>();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("coupon-load: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.repeat_share),
        "--repeat-share must be between 0 and 1"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?;
    let campaign = args
        .campaign
        .clone()
        .unwrap_or_else(|| format!("flash-{}", now.as_secs()));
    let server = Server::new(&args.url)?;
    server
        .wait_ready(Duration::from_secs(args.ready_timeout_secs))
        .await?;
    let draw = args.opening == "draw";
    anyhow::ensure!(
        !draw || args.quota.is_some(),
        "--opening draw creates the campaign: give its --quota"
    );
    if let Some(quota) = args.quota {
        if draw {
            let at = |from_now: Duration| -> anyhow::Result<String> {
                let t = time::OffsetDateTime::now_utc() + from_now;
                Ok(t.format(&time::format_description::well_known::Rfc3339)?)
            };
            let times = (
                at(Duration::ZERO)?,
                at(Duration::from_secs(args.queue_secs))?,
            );
            server
                .create_draw(
                    &campaign,
                    quota,
                    (&times.0, &times.1),
                    args.admin_token.as_deref(),
                )
                .await?;
        } else {
            server
                .create_campaign(&campaign, quota, args.admin_token.as_deref())
                .await?;
        }
    }
    let quota = server.quota(&campaign).await?;
    let crowd = Crowd {
        users: args.users,
        first_user: args.first_user,
        repeat_share: args.repeat_share,
        max_clicks: args.max_clicks,
        seed: args.seed.unwrap_or(now.as_nanos() as u64),
    };
    let clicks = crowd.clicks();
    println!(
        "flash sale: campaign {campaign} (quota {quota}) at {}",
        args.url
    );
    println!(
        "  {} users, {} clicks ({} repeats), {} connections, seed {}",
        group(args.users),
        group(clicks.len() as u64),
        group(clicks.len() as u64 - args.users),
        args.concurrency,
        crowd.seed
    );
    if let Some(rate) = args.rate {
        println!("  paced at {rate} clicks/s");
    }
    if draw {
        println!(
            "  opening: a pre-queue of {} s, then a draw",
            args.queue_secs
        );
    }

    let identity = match (args.identity.as_str(), &args.jwt_secret) {
        ("body", _) => Identity::Body,
        (_, Some(secret)) => Identity::Token(Box::new(Signer::hs256(secret.as_bytes()))),
        (_, None) => anyhow::bail!(
            "--identity jwt signs a token per user: give the server's secret with --jwt-secret \
             (or COUPON_JWT_SECRET), or use --identity body against a server in body mode"
        ),
    };
    let target = Target::resolve(&args.url, &campaign)
        .await?
        .with_identity(identity);
    let bar = ProgressBar::new(clicks.len() as u64).with_style(
        ProgressStyle::with_template(
            "  {bar:40.cyan/blue} {pos:>9}/{len} requests {per_sec:>12} {elapsed}",
        )
        .expect("valid template"),
    );
    let mut tally =
        sale::run_at_rate(&target, clicks, args.concurrency as usize, args.rate, &bar).await;
    bar.finish_and_clear();
    print_answers(&tally);
    if draw {
        // After the draw every queued user comes back once, as Retry-After tells it to.
        let joiners = first_joins(&tally);
        let after = after_the_draw(&server, &campaign, &target, &joiners, args.concurrency).await?;
        print_answers(&after);
        let drawn = report_draw(&tally, &joiners, &after);
        tally.merge(after);
        // Drawn users are told they hold a coupon by `duplicate` with their seq: for the checks
        // they are told success.
        tally.winners.extend(drawn);
    }

    if args.no_verify {
        return Ok(tally.errors() == 0);
    }
    let (conn, opts) = args.database.connect(args.database.opts()?).await?;
    conn.disconnect().await.ok();
    let pool = mysql_async::Pool::new(opts);
    let winners = tally
        .winners
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let spinner = ProgressBar::new_spinner().with_message(format!(
        "waiting for {winners} coupons in MySQL (up to {} s)",
        args.drain_timeout_secs
    ));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let (stored, took) = check::wait_for_rows(
        &pool,
        &campaign,
        winners,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await?;
    spinner.finish_and_clear();
    print_stored(&stored, took, args.drain_timeout_secs);
    pool.disconnect().await.ok();

    let verdict = check::verdict(quota, args.users, &tally, &stored);
    if !args.metrics.is_empty() {
        print_metrics(&args.metrics, stored.rows).await?;
    }
    println!("checks\n{verdict}");
    Ok(verdict.passed())
}

/// Waits until the draw of `campaign` has run, then sends each of `joiners` (every user the sale
/// answered `queued`, in the order they first joined) once more.
async fn after_the_draw(
    server: &Server,
    campaign: &str,
    target: &Target,
    joiners: &[u64],
    concurrency: u32,
) -> anyhow::Result<Tally> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = server.campaign(campaign).await?;
        if status["drawn"] == true {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the draw of {campaign} has not run 60 s after the sale: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "after the draw: the {} queued users come back once",
        group(joiners.len() as u64)
    );
    Ok(sale::run_at_rate(
        target,
        joiners.to_vec(),
        concurrency as usize,
        None,
        &ProgressBar::hidden(),
    )
    .await)
}

/// Distinct users answered `queued`, in the order of their first such answer.
fn first_joins(tally: &Tally) -> Vec<u64> {
    let mut seen = std::collections::BTreeSet::new();
    tally
        .queued
        .iter()
        .copied()
        .filter(|user| seen.insert(*user))
        .collect()
}

/// Prints what the draw did: queued, drawn, first come after the draw, and a fairness line (the
/// win rate of the earliest fifth of joiners and of those who joined more than once, beside the
/// overall rate). `joiners` are the users the sale queued, in the order they first joined.
/// Returns the drawn users: queued, and answered `duplicate` after the draw.
fn report_draw(sale: &Tally, joiners: &[u64], after: &Tally) -> Vec<u64> {
    use std::collections::{BTreeMap, BTreeSet};
    let holders: BTreeSet<u64> = after.duplicates.iter().copied().collect();
    let won = |users: &[u64]| users.iter().filter(|u| holders.contains(u)).count();
    let drawn: Vec<u64> = joiners
        .iter()
        .copied()
        .filter(|u| holders.contains(u))
        .collect();
    let mut joins: BTreeMap<u64, u32> = BTreeMap::new();
    for user in &sale.queued {
        *joins.entry(*user).or_default() += 1;
    }
    let repeaters: Vec<u64> = joins
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(u, _)| *u)
        .collect();
    let earliest = &joiners[..joiners.len() / 5];
    let rate = |users: &[u64]| {
        if users.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1} %", 100.0 * won(users) as f64 / users.len() as f64)
        }
    };
    println!("draw");
    println!(
        "  queued {}, drawn {}, first come after the draw {}",
        group(joiners.len() as u64),
        group(drawn.len() as u64),
        group((sale.winners.len() + after.winners.len()) as u64)
    );
    println!(
        "  fairness: win rate {} overall, {} of the earliest fifth of joiners ({}), {} of those who joined more than once ({})",
        rate(joiners),
        rate(earliest),
        group(earliest.len() as u64),
        rate(&repeaters),
        group(repeaters.len() as u64)
    );
    drawn
}

/// The figures that matter from the processes' metrics, summed over `urls`. The sinks count a
/// batch just after committing it, and the relay gauges the outbox once a second, so the scrape
/// waits (up to 5 s) until they count `rows` and an empty outbox.
async fn print_metrics(urls: &[String], rows: u64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let scrapes = loop {
        let mut scrapes = Vec::new();
        for url in urls {
            scrapes.push(
                Scrape::get(url)
                    .await
                    .with_context(|| format!("--metrics {url}"))?,
            );
        }
        let written = total(&scrapes, "coupon_sink_rows_written_total", &[]);
        // Every row stored means every event left the outbox; the gauge says so within a second.
        let backlog = total(&scrapes, "coupon_outbox_backlog", &[]);
        if (written as u64 >= rows && backlog == 0.0) || std::time::Instant::now() >= deadline {
            break scrapes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sum = |name: &str, labels: &[(&str, &str)]| total(&scrapes, name, labels) as u64;
    let quantile = |name: &str, q: f64| -> String {
        scrapes
            .iter()
            .find_map(|s| s.quantile(name, q))
            .map_or_else(|| "-".to_owned(), |bound| format!("<= {}", seconds(bound)))
    };
    println!("metrics   (from {})", urls.join(", "));
    let outcomes = [
        "success",
        "duplicate",
        "queued",
        "sold_out",
        "not_open",
        "closed",
        "unknown_campaign",
        "rate_limited",
        "unauthorized",
        "invalid",
        "unavailable",
        "error",
    ];
    let counted: Vec<String> = outcomes
        .iter()
        .map(|outcome| {
            (
                outcome,
                sum("coupon_applications_total", &[("outcome", outcome)]),
            )
        })
        .filter(|(_, n)| *n > 0)
        .map(|(outcome, n)| format!("{outcome} {}", group(n)))
        .collect();
    println!("  answers       {}", counted.join(", "));
    println!(
        "  answer time   p50 {}  p99 {}  ({} sold out from memory)",
        quantile("coupon_apply_duration_seconds", 0.5),
        quantile("coupon_apply_duration_seconds", 0.99),
        group(sum("coupon_sold_out_memory_answers_total", &[]))
    );
    let calls = sum("coupon_gate_batch_size_count", &[]);
    println!(
        "  gate          {} script calls, {:.1} applications each",
        group(calls),
        total(&scrapes, "coupon_gate_batch_size_sum", &[]) / calls.max(1) as f64
    );
    println!(
        "  relay         {} delivered, {} failures, delivery p99 {}, outbox backlog {}",
        group(sum("coupon_relay_delivered_total", &[])),
        group(sum("coupon_relay_failures_total", &[])),
        quantile("coupon_relay_delivery_seconds", 0.99),
        group(sum("coupon_outbox_backlog", &[]))
    );
    println!(
        "  sink          {} rows written, {} redeliveries, {} failed events, lag {}, batch p99 {}",
        group(sum("coupon_sink_rows_written_total", &[])),
        group(sum("coupon_sink_redeliveries_total", &[])),
        group(sum("coupon_sink_failed_events_total", &[])),
        group(sum("coupon_sink_consumer_lag", &[])),
        quantile("coupon_sink_batch_seconds", 0.99)
    );
    Ok(())
}

/// The sum of the samples of `name` with `labels` over every scrape.
fn total(scrapes: &[Scrape], name: &str, labels: &[(&str, &str)]) -> f64 {
    scrapes.iter().map(|s| s.sum(name, labels)).sum()
}

/// A bucket bound in seconds, as milliseconds (or `+Inf`).
fn seconds(bound: f64) -> String {
    if bound.is_infinite() {
        "+Inf".to_owned()
    } else {
        format!("{} ms", bound * 1000.0)
    }
}

fn print_answers(tally: &Tally) {
    println!("answers");
    for (answer, n) in &tally.answers {
        println!(
            "  {:>3} {:<16} {:>10}",
            answer.code,
            answer.status,
            group(*n)
        );
    }
    println!(
        "requests  {} in {:.2} s = {}/s",
        group(tally.requests()),
        tally.elapsed.as_secs_f64(),
        group(tally.rate() as u64)
    );
    let l = &tally.latency;
    println!(
        "latency   p50 {}  p90 {}  p99 {}  max {}",
        ms(l.value_at_quantile(0.5)),
        ms(l.value_at_quantile(0.9)),
        ms(l.value_at_quantile(0.99)),
        ms(l.max())
    );
}

fn print_stored(stored: &Stored, took: Option<Duration>, limit: u64) {
    match took {
        Some(took) => println!(
            "MySQL     every coupon stored {:.2} s after the last answer",
            took.as_secs_f64()
        ),
        None => println!("MySQL     not every coupon stored within {limit} s"),
    }
    println!(
        "          {} coupons, {} duplicate users, {} failed events",
        group(stored.rows),
        stored.duplicate_users(),
        stored.failed_events
    );
}

fn ms(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

/// `12345` as `12,345`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_a_finite_number_of_clicks_above_zero() {
        assert_eq!(positive_rate("5000"), Ok(5000.0));
        assert_eq!(positive_rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "fast", ""] {
            let err = positive_rate(bad).expect_err(bad);
            assert!(err.contains("clicks per second"), "{err}");
        }
    }
}
