//! The metrics, end to end through both binaries: after a known burst, each counter of
//! coupon-http equals what the clients were told and the sink's rows written equal MySQL's rows;
//! `promtool check metrics` passes on a real scrape of each binary; every metric the dashboard
//! and the alert rules use is one the binaries export; a real Prometheus scrapes both; the
//! outbox backlog gauge rises while the broker is cut off and falls back to zero after; and the
//! alert rules pass `promtool check rules` and their unit tests.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use coupon_bench::sale::{self, Identity, Signer, Tally, Target};
use coupon_bench::scrape::Scrape;
use coupon_testkit::Broker;
use indicatif::ProgressBar;
use support::{ADMIN_TOKEN, Pipeline, Setup, eventually, free_port};

/// The repository's `deploy/` directory.
fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `promtool` with `args`, fed `stdin`; panics with its output unless it succeeds.
fn promtool(args: &[&str], stdin: &str) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run promtool ({err}): scripts/services up installs it (Debian's prometheus package)"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_and_the_prometheus_config_pass_promtool() {
    promtool(&["check", "rules", "alerts.yml"], "");
    promtool(&["test", "rules", "alerts.test.yml"], "");
    promtool(&["check", "config", "prometheus.yml"], "");
}

/// Every `coupon_*` metric name the dashboard and the alert rules query.
fn names_used() -> BTreeSet<String> {
    let dashboard =
        std::fs::read_to_string(deploy().join("grafana/coupon-gate.json")).expect("the dashboard");
    let alerts =
        std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).expect("the rules");
    let queries: Vec<String> = serde_json::from_str::<serde_json::Value>(&dashboard)
        .expect("the dashboard is JSON")["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect();
    let name = regex::Regex::new(r"coupon_[a-z_]+").expect("regex");
    queries
        .iter()
        .map(String::as_str)
        .chain(
            alerts
                .lines()
                .filter(|line| !line.trim_start().starts_with('#')),
        )
        .flat_map(|text| name.find_iter(text).map(|m| m.as_str().to_owned()))
        .collect()
}

/// Whether `name` (as a query uses it: a histogram by its `_bucket`, `_sum` or `_count`) is a
/// family of `families`.
fn exported(name: &str, families: &BTreeSet<String>) -> bool {
    families.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|family| families.contains(family))
        })
}

/// Answers with HTTP status `code`.
fn with_code(tally: &Tally, code: u16) -> u64 {
    tally
        .answers
        .iter()
        .filter(|(answer, _)| answer.code == code)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_equal_what_clients_were_told_and_what_mysql_holds() {
    let pipeline = Pipeline::start_with(Setup {
        // 5 a second, bursts of 10: one user clicking 30 times at once meets the limit.
        user_rate: 5,
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("metrics", 50).await;
    pipeline.sinks_hold_partitions().await;

    // User 7 clicks 30 times first (one coupon, then duplicates, then the user's limit); then
    // 200 users once each on the 49 coupons left (then sold out, from Redis or from memory).
    let mut clicks = vec![7; 30];
    clicks.extend(1..=200);
    let tally = pipeline.fire(0, &campaign, clicks, 16).await;
    // Tokens signed with a key the server does not hold: 401 each.
    let forger = Target::local(pipeline.http[0].addr, &campaign).with_identity(Identity::Token(
        Box::new(Signer::hs256(b"a key nobody gave the server, 32+ bytes")),
    ));
    let forged = sale::run(&forger, (300..320).collect(), 4, &ProgressBar::hidden()).await;
    assert_eq!(tally.errors(), 0, "{:?}", tally.answers);
    assert_eq!(tally.count("success"), 50, "{:?}", tally.answers);
    assert!(tally.count("duplicate") > 0, "{:?}", tally.answers);
    assert!(tally.count("rate_limited") > 0, "{:?}", tally.answers);
    assert_eq!(with_code(&forged, 401), 20, "{:?}", forged.answers);
    // A draw: three users join its pre-queue (202 each), and it runs by itself a second later.
    let server = &pipeline.http[0].server;
    let rfc3339 = |from_now: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(from_now))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    server
        .create_draw(
            "lottery",
            2,
            (&rfc3339(-60), &rfc3339(2)),
            Some(ADMIN_TOKEN),
        )
        .await
        .unwrap();
    let queued = pipeline.fire(0, "lottery", vec![1, 2, 3], 3).await;
    assert_eq!(queued.count("queued"), 3, "{:?}", queued.answers);
    eventually(Duration::from_secs(30), "the draw", || async {
        server.campaign("lottery").await.unwrap()["drawn"] == true
    })
    .await;

    let http_url = format!("http://{}/metrics", pipeline.http[0].addr);
    let http = Scrape::get(&http_url).await.expect("scrape coupon-http");
    let counted = |labels: &[(&str, &str)]| http.sum("coupon_applications_total", labels) as u64;
    for outcome in ["success", "duplicate", "sold_out"] {
        assert_eq!(
            counted(&[("campaign", &campaign), ("outcome", outcome)]),
            tally.count(outcome),
            "{outcome}: {:?}",
            tally.answers
        );
    }
    assert_eq!(
        counted(&[("campaign", ""), ("outcome", "rate_limited")]),
        tally.count("rate_limited")
    );
    assert_eq!(
        counted(&[("campaign", ""), ("outcome", "unauthorized")]),
        with_code(&forged, 401)
    );
    assert_eq!(
        counted(&[("campaign", "lottery"), ("outcome", "queued")]),
        3
    );
    assert_eq!(http.sum("coupon_draw_duration_seconds_count", &[]), 1.0);
    assert_eq!(
        http.sum("coupon_queue_size", &[("campaign", "lottery")]),
        0.0,
        "the queue is gone once drawn"
    );
    let requests = tally.requests() + forged.requests() + queued.requests();
    assert_eq!(counted(&[]), requests, "every answer counted once");
    assert_eq!(
        http.sum("coupon_apply_duration_seconds_count", &[]) as u64,
        requests,
        "every answer timed once"
    );
    let from_memory = http.sum("coupon_sold_out_memory_answers_total", &[]) as u64;
    assert!(from_memory <= tally.count("sold_out"));
    assert_eq!(
        http.sum("coupon_build_info", &[("binary", "coupon-http")]),
        1.0
    );

    // Every coupon reaches MySQL; the sinks' rows written are MySQL's rows.
    let stored = pipeline.wait_for_rows(&campaign, 50).await;
    assert_eq!(stored.rows, 50);
    // And the draw's two winners.
    let drawn = pipeline.wait_for_rows("lottery", 2).await;
    assert_eq!(drawn.rows, 2);
    let all_rows = stored.rows + drawn.rows;
    let sink_urls: Vec<String> = pipeline
        .sinks
        .iter()
        .map(|sink| format!("http://{}/metrics", sink.metrics))
        .collect();
    let sinks = || async {
        let mut scrapes = Vec::new();
        for url in &sink_urls {
            scrapes.push(Scrape::get(url).await.expect("scrape coupon-sink"));
        }
        scrapes
    };
    let rows_written = |scrapes: &[Scrape]| -> u64 {
        scrapes
            .iter()
            .map(|s| s.sum("coupon_sink_rows_written_total", &[]) as u64)
            .sum()
    };
    // The counter moves just after the commit MySQL showed; and the lag arrives with the
    // consumer's statistics, every few seconds.
    eventually(
        Duration::from_secs(30),
        "the sinks to count the rows MySQL holds, and to report their lag",
        || async {
            let scrapes = sinks().await;
            rows_written(&scrapes) == all_rows
                && scrapes
                    .iter()
                    .all(|s| s.has("coupon_sink_consumer_lag", &[]))
        },
    )
    .await;
    let sink_scrapes = sinks().await;
    assert_eq!(rows_written(&sink_scrapes), all_rows);
    let failed: f64 = sink_scrapes
        .iter()
        .map(|s| s.sum("coupon_sink_failed_events_total", &[]))
        .sum();
    assert_eq!(failed, 0.0);

    // Both expositions pass promtool's checks, and export what the dashboard and alerts use.
    let http = Scrape::get(&http_url).await.expect("scrape coupon-http");
    promtool(&["check", "metrics"], &http.text);
    for scrape in &sink_scrapes {
        promtool(&["check", "metrics"], &scrape.text);
    }
    let mut families = http.families();
    for scrape in &sink_scrapes {
        families.extend(scrape.families());
    }
    let missing: Vec<String> = names_used()
        .into_iter()
        .filter(|name| !exported(name, &families))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts use metrics no binary exports: {missing:?}; exported: {families:?}"
    );

    // A real Prometheus scrapes both binaries and sees the same figures.
    let prometheus = Prometheus::start(pipeline.http[0].addr, pipeline.sinks[0].metrics);
    let issued =
        format!("sum(coupon_applications_total{{campaign=\"{campaign}\",outcome=\"success\"}})");
    eventually(
        Duration::from_secs(60),
        "Prometheus to scrape both binaries",
        || async {
            prometheus.query("sum(up)").await == Some(2.0)
                && prometheus.query(&issued).await == Some(50.0)
                && prometheus
                    .query("sum(coupon_sink_rows_written_total)")
                    .await
                    == Some(all_rows as f64)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_rises_while_the_broker_is_cut_off_and_falls_to_zero_after() {
    let broker = Broker::behind_proxy().await;
    let pipeline = Pipeline::start_with(Setup {
        brokers: broker.brokers(),
        ..Setup::default()
    })
    .await;
    let campaign = pipeline.campaign("backlog", 100).await;
    pipeline.sinks_hold_partitions().await;
    let url = format!("http://{}/metrics", pipeline.http[0].addr);
    let gauge = |name: &'static str| {
        let (url, campaign) = (url.clone(), campaign.clone());
        async move {
            Scrape::get(&url)
                .await
                .expect("scrape coupon-http")
                .sum(name, &[("campaign", &campaign)])
        }
    };
    eventually(
        Duration::from_secs(10),
        "the backlog of the new campaign to be reported",
        || async {
            Scrape::get(&url)
                .await
                .expect("scrape")
                .has("coupon_outbox_backlog", &[("campaign", &campaign)])
        },
    )
    .await;
    assert_eq!(gauge("coupon_outbox_backlog").await, 0.0);

    broker.proxy().cut();
    let tally = pipeline.fire(0, &campaign, (1..=30).collect(), 8).await;
    assert_eq!(tally.count("success"), 30, "{:?}", tally.answers);
    eventually(
        Duration::from_secs(10),
        "the backlog gauge to show the 30 admissions waiting for the broker",
        || async { gauge("coupon_outbox_backlog").await == 30.0 },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the oldest admission's wait to be reported",
        || async { gauge("coupon_outbox_oldest_seconds").await >= 1.0 },
    )
    .await;

    broker.proxy().restore();
    eventually(
        Duration::from_secs(60),
        "the backlog to fall back to zero once the broker is back",
        || async {
            gauge("coupon_outbox_backlog").await == 0.0
                && gauge("coupon_outbox_oldest_seconds").await == 0.0
        },
    )
    .await;
    let stored = pipeline.wait_for_rows(&campaign, 30).await;
    assert_eq!(stored.rows, 30);
    let http = Scrape::get(&url).await.expect("scrape");
    assert!(http.sum("coupon_relay_delivered_total", &[]) >= 30.0);
}

/// A Prometheus server of the test's own (Debian's package), scraping one coupon-http and one
/// coupon-sink every second; killed on drop.
struct Prometheus {
    process: std::process::Child,
    addr: SocketAddr,
    _data: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Prometheus {
    fn start(http: SocketAddr, sink: SocketAddr) -> Self {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let data = tempdir::Dir(std::env::temp_dir().join(format!("prometheus-{}", addr.port())));
        std::fs::create_dir_all(&data.0).expect("data directory");
        let config = data.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: coupon-http\n    \
                 static_configs:\n      - targets: [\"{http}\"]\n  - job_name: coupon-sink\n    \
                 static_configs:\n      - targets: [\"{sink}\"]\n"
            ),
        )
        .expect("config");
        let log = std::fs::File::create(data.0.join("prometheus.log")).expect("log");
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.0.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run prometheus ({err}): scripts/services up installs it (Debian's prometheus package)")
            });
        Self {
            process,
            addr,
            _data: data,
        }
    }

    /// The single value of an instant query, if it has one.
    async fn query(&self, promql: &str) -> Option<f64> {
        let query: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        let url = format!("http://{}/api/v1/query?query={query}", self.addr);
        let body = coupon_bench::scrape::get_text(&url).await.ok()?;
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
