//! `jwt-tokens`: prints a signed bearer token per user, one per line, for load tools that cannot
//! sign (wrk in `scripts/bench`): HS256 with `--secret`, or RS256, ES256 or EdDSA with the
//! private key of `--pem`. Users are numbered from `--first-user`; each token is valid for an
//! hour.
//!
//! Usage: `jwt-tokens --users N [--first-user F] (--secret S | --pem FILE --algorithm ES256)`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use coupon_bench::sale::Signer;

/// Prints a signed token per user, one per line.
#[derive(Parser, Debug)]
struct Args {
    /// Tokens to print.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// The first token's user; the others follow it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    first_user: u64,
    /// HS256 secret (the server's COUPON_JWT_SECRET).
    #[arg(
        long,
        env = "COUPON_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "pem"
    )]
    secret: Option<String>,
    /// PEM file of a private key (the server holds its public key).
    #[arg(long, requires = "algorithm")]
    pem: Option<PathBuf>,
    /// The algorithm of --pem: RS256, ES256 or EdDSA.
    #[arg(long, value_parser = ["RS256", "ES256", "EdDSA"])]
    algorithm: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let signer = match (&args.secret, &args.pem, &args.algorithm) {
        (Some(secret), None, _) => Signer::hs256(secret.as_bytes()),
        (None, Some(pem), Some(algorithm)) => {
            let algorithm = algorithm.parse().context("--algorithm")?;
            Signer::from_pem(pem, algorithm)?
        }
        _ => anyhow::bail!("give --secret, or --pem with --algorithm"),
    };
    // Signed on every core, in chunks written in order: ES256 signing takes about 0.3 ms a token.
    let threads = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let chunk = args.users.div_ceil(threads);
    let chunks: Vec<String> = std::thread::scope(|scope| {
        let signing: Vec<_> = (0..threads)
            .map(|t| {
                let signer = &signer;
                let first = args.first_user + t * chunk;
                let last = (args.first_user + args.users).min(first + chunk);
                scope.spawn(move || {
                    let mut text = String::new();
                    for user in first..last {
                        text.push_str(&signer.token(user));
                        text.push('\n');
                    }
                    text
                })
            })
            .collect();
        signing
            .into_iter()
            .map(|thread| thread.join().expect("a signing thread"))
            .collect()
    });
    let mut out = BufWriter::new(std::io::stdout().lock());
    for text in chunks {
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
