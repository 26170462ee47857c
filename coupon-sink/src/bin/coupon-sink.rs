//! `coupon-sink`: reads its settings, sets up logging, and either consumes the admissions topic
//! into MySQL (the default) or replays failed events.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coupon_cli::{LogTo, shutdown_signal};
use coupon_sink::Config;

/// Writes coupon admissions from Kafka into MySQL/MariaDB, exactly one row per admission.
///
/// Every flag falls back to the environment variable named beside it, and that to the settings
/// file (--config): its keys are the flags' names with _ for - (the variables' names in lower
/// case without COUPON_). Logging follows RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: Config,
    /// Address that serves the sink's Prometheus metrics (`GET /metrics`) while it consumes;
    /// `off` serves none.
    #[arg(long = "sink-metrics-addr", alias = "metrics-addr", global = true, env = "COUPON_SINK_METRICS_ADDR", default_value = Config::DEFAULT_METRICS_ADDR, value_parser = metrics_addr)]
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
async fn main() -> anyhow::Result<ExitCode> {
    let args = coupon_cli::parse::<Args>();
    coupon_cli::init_logging("info", LogTo::Stderr);
    match args.command.unwrap_or(Command::Run) {
        Command::Run => {
            if let MetricsAddr::On(addr) = args.metrics_addr {
                let served = coupon_metrics::install("coupon-sink", env!("CARGO_PKG_VERSION"), Some(addr))
                    .with_context(|| format!("COUPON_SINK_METRICS_ADDR={addr} cannot be served: choose another address, or off"))?;
                if served.is_some() {
                    tracing::info!(%addr, "serving metrics");
                }
            }
            coupon_sink::run(&args.config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay => {
            match coupon_sink::replay_failed(&args.config, &mut std::io::stdout()).await? {
                true => Ok(ExitCode::SUCCESS),
                false => Ok(ExitCode::from(1)),
            }
        }
    }
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

    use super::*;

    #[test]
    fn the_readme_and_the_example_file_document_these_settings() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let example = root.join("deploy/coupon-sink.example.toml");
        coupon_cli::check_settings::<Args>(&root.join("README.md"), Some(&example))
            .unwrap_or_else(|err| panic!("{err}"));
    }
}
