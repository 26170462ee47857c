//! `coupon-sink`: reads configuration from flags and the environment, sets up logging, and
//! either consumes the admissions topic into MySQL (the default) or replays failed events.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use clap::{Parser, Subcommand};
use coupon_cli::{kafka_property, shutdown_signal};
use coupon_event::{DEFAULT_BROKERS, DEFAULT_TOPIC};
use coupon_sink::{Config, consumer, db, replay};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// Writes coupon admissions from Kafka into MySQL/MariaDB, exactly one row per admission.
///
/// Every flag falls back to the environment variable named beside it, and that to the settings
/// file (--config): its keys are the variables' names in lower case without COUPON_. Logging
/// follows RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Database; created if missing. Migrations are applied at start.
    #[arg(long, global = true, env = "DATABASE_URL", default_value = Config::DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, global = true, env = "KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
    kafka_brokers: String,
    /// Topic of admissions.
    #[arg(long, global = true, env = "COUPON_TOPIC", default_value = DEFAULT_TOPIC)]
    topic: String,
    /// Consumer group.
    #[arg(long, global = true, env = "COUPON_SINK_GROUP", default_value = Config::DEFAULT_GROUP)]
    group: String,
    /// Most messages written per transaction.
    #[arg(long, global = true, env = "COUPON_SINK_BATCH", default_value_t = Config::DEFAULT_BATCH_SIZE as u32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch_size: u32,
    /// Milliseconds a batch waits for more messages after its first.
    #[arg(long, global = true, env = "COUPON_SINK_LINGER_MS", default_value_t = Config::DEFAULT_LINGER.as_millis() as u64)]
    linger_ms: u64,
    /// Milliseconds the group waits for a silent member before moving its partitions.
    #[arg(long, global = true, env = "COUPON_SINK_SESSION_TIMEOUT_MS", default_value_t = Config::DEFAULT_SESSION_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1_000..=300_000))]
    session_timeout_ms: u64,
    /// Stable name of this sink in the group (static membership): a restart under the same
    /// name takes its partitions back at once. Give each sink of a group its own.
    #[arg(long, global = true, env = "COUPON_SINK_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Milliseconds the broker may hold a fetch open waiting for new messages.
    #[arg(long, global = true, env = "COUPON_SINK_FETCH_WAIT_MS", default_value_t = Config::DEFAULT_FETCH_WAIT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    fetch_wait_ms: u64,
    /// More librdkafka properties, key=value (repeat the flag, or comma-separate in the
    /// environment): TLS and SASL settings, fetch sizes. group.id, enable.auto.commit and
    /// auto.offset.reset stay as the sink sets them.
    #[arg(long = "kafka-property", global = true, env = "COUPON_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = kafka_property)]
    kafka_properties: Vec<(String, String)>,
    /// Address that serves the sink's Prometheus metrics (`GET /metrics`) while it consumes;
    /// `off` serves none.
    #[arg(long, global = true, env = "COUPON_SINK_METRICS_ADDR", default_value = Config::DEFAULT_METRICS_ADDR, value_parser = metrics_addr)]
    metrics_addr: MetricsAddr,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume the topic into the database until SIGTERM or Ctrl-C (the default).
    Run,
    /// Write unresolved failed events again, after their cause was fixed; mark those written
    /// as resolved. Exits 1 if some still fail.
    Replay,
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = coupon_cli::parse::<Args>();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = Config {
        database_url: args.database_url,
        brokers: args.kafka_brokers,
        topic: args.topic,
        group: args.group,
        batch_size: args.batch_size as usize,
        linger: Duration::from_millis(args.linger_ms),
        max_backoff: Config::DEFAULT_MAX_BACKOFF,
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        instance_id: args.instance_id.filter(|id| !id.is_empty()),
        fetch_wait: Duration::from_millis(args.fetch_wait_ms),
        kafka_properties: args.kafka_properties,
    };
    let database = db::Database::parse(&config.database_url)?;
    let code = match args.command.unwrap_or(Command::Run) {
        Command::Run => {
            if let MetricsAddr::On(addr) = args.metrics_addr {
                let served = coupon_metrics::install("coupon-sink", env!("CARGO_PKG_VERSION"), Some(addr))
                    .with_context(|| format!("COUPON_SINK_METRICS_ADDR={addr} cannot be served: choose another address, or off"))?;
                if served.is_some() {
                    tracing::info!(%addr, "serving metrics");
                }
            }
            // Started before its database or broker, the sink waits for them.
            let (stop_tx, stop) = watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            let Some(pool) = database.open_patiently(stop.clone()).await else {
                return Ok(std::process::ExitCode::SUCCESS);
            };
            let mut stopped = stop;
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            consumer::run(&config, &pool, shutdown).await?;
            pool.disconnect().await.ok();
            std::process::ExitCode::SUCCESS
        }
        Command::Replay => {
            let pool = database.open().await?;
            let done = replay::replay(&pool, &mut std::io::stdout()).await?;
            pool.disconnect().await.ok();
            if done.still_failing == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
    };
    Ok(code)
}

/// Where the metrics are served, if anywhere.
#[derive(Clone, Copy, Debug)]
enum MetricsAddr {
    On(SocketAddr),
    Off,
}

fn metrics_addr(value: &str) -> Result<MetricsAddr, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr::Off);
    }
    value
        .parse()
        .map(MetricsAddr::On)
        .map_err(|_| format!("{value:?} is neither host:port (e.g. 127.0.0.1:9464) nor off"))
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

    #[test]
    fn the_example_settings_file_names_only_settings_with_valid_values() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/coupon-sink.example.toml");
        coupon_cli::check_settings_file::<Args>(&example).unwrap_or_else(|err| panic!("{err}"));
    }
}
