//! `coupon-http`: reads its settings from flags, the environment and the settings file, sets up
//! logging, binds, and runs the server and relay until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use coupon_cli::{LogTo, shutdown_signal};
use coupon_http::Config;

/// First-come-first-served coupon issuance over HTTP, with the relay from the Redis outbox to Kafka.
///
/// Every flag falls back to the environment variable named beside it, and that to the settings
/// file (--config): its keys are the flags' names with _ for - (the variables' names in lower
/// case without COUPON_). Logging follows RUST_LOG (default: info).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = coupon_cli::parse::<Args>().config;
    coupon_cli::init_logging("info", LogTo::Stdout);
    let listener = coupon_http::listen(config.addr)
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    coupon_http::serve(config, listener, shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_readme_and_the_example_file_document_these_settings() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let example = root.join("deploy/coupon-http.example.toml");
        coupon_cli::check_settings::<Args>(&root.join("README.md"), Some(&example))
            .unwrap_or_else(|err| panic!("{err}"));
    }

    #[test]
    fn the_declared_defaults_agree_with_the_libraries() {
        let config = Config::default();
        assert_eq!(config.redis.redis_url, coupon_gate::DEFAULT_REDIS_URL);
        assert_eq!(
            config.key_prefix.key_prefix,
            coupon_gate::DEFAULT_KEY_PREFIX
        );
        let (relay, library) = (config.relay(), coupon_http::RelayConfig::default());
        assert_eq!(relay.brokers, library.brokers);
        assert_eq!(relay.topic, library.topic);
        assert_eq!(relay.partitions, library.partitions);
        assert_eq!(relay.replication, library.replication);
        assert_eq!(relay.claim_idle, library.claim_idle);
        assert_eq!(relay.message_timeout, library.message_timeout);
        assert_eq!(
            config.apply_batch,
            coupon_gate::BatchConfig::default().max_batch
        );
    }
}
