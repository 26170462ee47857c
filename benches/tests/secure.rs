//! The pipeline against services that require TLS and authentication, as production's do: a
//! TLS-only Redis that asks for a client certificate and an ACL user, a MariaDB that requires
//! secure transport and is verified by name, and a broker that serves TLS only and requires
//! SASL SCRAM-SHA-512, each of the test's own with certificates the test makes. The secrets come
//! from files. A burst lands exactly in MySQL, `coupon-admin audit` over the same settings finds
//! nothing, and no log holds a secret. Then the bad weather: a wrong certificate, a plaintext
//! URL, a wrong password; each named in the log, each put right without a restart.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coupon_bench::admin::Server;
use coupon_bench::check;
use coupon_bench::sale::{self, Crowd, Identity, Target};
use coupon_cli::{Database, SslMode};
use coupon_testkit::{Broker, Pki, Process, TlsMariaDb, TlsRedis, eventually, free_port};
use indicatif::ProgressBar;
use support::{ADMIN_TOKEN, binary, log_path, spawn};

const KAFKA_USER: &str = "coupon-app";
const KAFKA_PASSWORD: &str = "Kafka-pa55word";

/// The secrets of a deployment, each in a file, as Docker and Kubernetes hand them over.
struct Secrets {
    redis_url: PathBuf,
    kafka_properties: PathBuf,
    database_url: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

/// The properties of a Confluent-Cloud-style SASL_SSL connection, one a line.
fn kafka_properties(ca: &Path, password: &str) -> String {
    [
        "security.protocol=SASL_SSL".to_owned(),
        "sasl.mechanisms=SCRAM-SHA-512".to_owned(),
        format!("sasl.username={KAFKA_USER}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={}", ca.display()),
    ]
    .join("\n")
}

fn redis_env(pki: &Pki, url_file: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_URL_FILE", url_file.display().to_string()),
        ("COUPON_REDIS_CA_FILE", pki.ca.display().to_string()),
        (
            "COUPON_REDIS_CLIENT_CERT_FILE",
            pki.client.cert.display().to_string(),
        ),
        (
            "COUPON_REDIS_CLIENT_KEY_FILE",
            pki.client.key.display().to_string(),
        ),
    ]
}

fn kafka_env(broker: &Broker, properties: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_BROKERS", broker.brokers()),
        (
            "COUPON_KAFKA_PROPERTIES_FILE",
            properties.display().to_string(),
        ),
    ]
}

fn database_env(pki: &Pki, url_file: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL_FILE", url_file.display().to_string()),
        ("COUPON_DATABASE_SSL_MODE", "verify_identity".to_owned()),
        ("COUPON_DATABASE_CA_FILE", pki.ca.display().to_string()),
    ]
}

/// A coupon-http on `topic` (and a key prefix of its name) with `env` added; not waited for.
fn start_http(
    tag: &str,
    topic: &str,
    env: &[(&'static str, String)],
) -> (Process, Server, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut all = vec![
        ("COUPON_HTTP_ADDR", addr.to_string()),
        ("COUPON_KEY_PREFIX", format!("secure-{topic}")),
        ("COUPON_TOPIC", topic.to_owned()),
        ("COUPON_TOPIC_PARTITIONS", "3".to_owned()),
        ("COUPON_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("COUPON_IDENTITY", "body".to_owned()),
        ("COUPON_USER_RATE", "0".to_owned()),
        ("COUPON_REDIS_TIMEOUT_MS", "1000".to_owned()),
    ];
    all.extend(env.iter().cloned());
    let process = spawn("coupon-http", tag, &all);
    (
        process,
        Server::new(&format!("http://{addr}")).unwrap(),
        addr,
    )
}

fn log_of(name: &str, tag: &str) -> String {
    std::fs::read_to_string(log_path(name, tag)).unwrap_or_default()
}

async fn log_says(name: &str, tag: &str, words: &[&str]) {
    eventually(
        Duration::from_secs(30),
        &format!("{name}'s log to say {words:?}"),
        || async { words.iter().all(|word| log_of(name, tag).contains(word)) },
    )
    .await;
}

/// `GET /ready` answers 503 now.
async fn unready(server: &Server) -> bool {
    server.wait_ready(Duration::ZERO).await.is_err()
}

fn topic_name() -> String {
    format!("secure_{}_{}", std::process::id(), free_port())
}

#[test]
fn librdkafka_is_built_with_tls_and_every_sasl_mechanism_but_gssapi() {
    let config = rdkafka::ClientConfig::new().create_native_config().unwrap();
    let features = config.get("builtin.features").unwrap();
    for feature in ["ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer"] {
        assert!(
            features.split(',').any(|f| f == feature),
            "{feature} in {features}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_is_exact_over_tls_and_sasl() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, &pki.server);
    let mariadb = TlsMariaDb::start(&pki, &pki.server);
    let broker = Broker::start_secured(&pki.server, KAFKA_USER, KAFKA_PASSWORD).await;
    let secrets = Secrets {
        redis_url: write(pki.dir(), "redis-url", &redis.url()),
        kafka_properties: write(
            pki.dir(),
            "kafka.properties",
            &kafka_properties(&pki.ca, KAFKA_PASSWORD),
        ),
        database_url: write(pki.dir(), "database-url", &mariadb.url("coupon")),
    };
    let topic = topic_name();
    let redis_env = redis_env(&pki, &secrets.redis_url);
    let kafka_env = kafka_env(&broker, &secrets.kafka_properties);
    let database_env = database_env(&pki, &secrets.database_url);

    let http_env: Vec<_> = redis_env.iter().chain(&kafka_env).cloned().collect();
    let (_http, server, addr) = start_http(&topic, &topic, &http_env);
    server.wait_ready(Duration::from_secs(60)).await.unwrap();
    let mut sink_env: Vec<_> = database_env.iter().chain(&kafka_env).cloned().collect();
    sink_env.extend([
        ("COUPON_TOPIC", topic.clone()),
        ("COUPON_SINK_GROUP", format!("{topic}-sink")),
    ]);
    let _sink = spawn("coupon-sink", &topic, &sink_env);

    let campaign = "over-tls";
    let quota = 60;
    server
        .create_campaign(campaign, quota, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    let crowd = Crowd::once_each(200);
    let target = Target::local(addr, campaign).with_identity(Identity::Body);
    let tally = sale::run(&target, crowd.clicks(), 16, &ProgressBar::hidden()).await;
    assert_eq!(tally.count("success"), u64::from(quota), "{tally:?}");
    assert_eq!(tally.errors(), 0, "{tally:?}");

    // MySQL over verified TLS, as the sink reaches it.
    let database = Database {
        database_url: mariadb.url("coupon"),
        database_ssl_mode: Some(SslMode::VerifyIdentity),
        database_ca_file: Some(pki.ca.clone()),
    };
    eventually(
        Duration::from_secs(60),
        "the sink to create its database",
        || async { database.connect(database.opts().unwrap()).await.is_ok() },
    )
    .await;
    let (conn, opts) = database.connect(database.opts().unwrap()).await.unwrap();
    conn.disconnect().await.unwrap();
    let pool = mysql_async::Pool::new(opts);
    let (stored, took) =
        check::wait_for_rows(&pool, campaign, u64::from(quota), Duration::from_secs(120))
            .await
            .unwrap();
    assert!(
        took.is_some(),
        "MySQL holds {} of {quota} coupons; sink log:\n{}",
        stored.rows,
        log_of("coupon-sink", &topic)
    );
    let verdict = check::verdict(u64::from(quota), 200, &tally, &stored);
    assert!(verdict.passed(), "{verdict:?}");
    pool.disconnect().await.unwrap();

    // coupon-admin over the same settings: the audit finds nothing; the prefix is bound to
    // the topic.
    let admin_env: Vec<_> = redis_env
        .iter()
        .chain(&kafka_env)
        .chain(&database_env)
        .cloned()
        .chain([
            ("COUPON_TOPIC", topic.clone()),
            ("COUPON_KEY_PREFIX", format!("secure-{topic}")),
        ])
        .collect();
    let admin = |args: &[&str]| {
        let out = Command::new(binary("coupon-admin"))
            .args(args)
            .envs(admin_env.iter().map(|(k, v)| (k, v.as_str())))
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!("coupon-admin {args:?}:\n{stdout}{stderr}");
        (out.status.code(), stdout + &stderr)
    };
    let (code, _) = admin(&["audit", "--campaign", campaign]);
    assert_eq!(code, Some(0), "the audit finds nothing");
    let (code, said) = admin(&["destination"]);
    assert_eq!(code, Some(0));
    assert!(said.contains(&format!("bound to topic {topic}")), "{said}");
    // Moved elsewhere, the relay stops and coupon-http is unready; moved back, ready again.
    let (code, said) = admin(&["destination", "move", "--to", "somewhere_else"]);
    assert_eq!(code, Some(0));
    assert!(said.contains("to topic somewhere_else"), "{said}");
    eventually(
        Duration::from_secs(20),
        "coupon-http to refuse its destination",
        || async { unready(&server).await },
    )
    .await;
    log_says("coupon-http", &topic, &["bound to another destination"]).await;
    let (code, _) = admin(&["destination", "move", "--to", &topic]);
    assert_eq!(code, Some(0));
    server.wait_ready(Duration::from_secs(20)).await.unwrap();

    // No secret in any log.
    for (name, tag) in [("coupon-http", topic.as_str()), ("coupon-sink", &topic)] {
        let log = log_of(name, tag);
        for secret in [TlsRedis::PASSWORD, KAFKA_PASSWORD, TlsMariaDb::PASSWORD] {
            assert!(!log.contains(secret), "{name}'s log holds a secret");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_certificate_or_a_plaintext_url_keeps_coupon_http_unready_and_named() {
    let pki = Pki::new();
    // The server shows a certificate of another authority.
    let mut redis = TlsRedis::start(&pki, &pki.stranger);
    let url = write(pki.dir(), "redis-url", &redis.url());
    let topic = topic_name();
    let kafka = [("KAFKA_BROKERS", coupon_testkit::brokers())];
    let env: Vec<_> = redis_env(&pki, &url)
        .into_iter()
        .chain(kafka.iter().cloned())
        .collect();
    let tag = format!("{topic}-wrong-ca");
    let (_http, server, _) = start_http(&tag, &topic, &env);
    log_says(
        "coupon-http",
        &tag,
        &[
            "cannot connect to Redis at rediss://127.0.0.1",
            "COUPON_REDIS_CA_FILE",
        ],
    )
    .await;
    assert!(
        unready(&server).await,
        "unready while Redis cannot be verified"
    );

    // A plaintext URL against the TLS-only server.
    let plain = format!(
        "redis://{}:{}@127.0.0.1:{}",
        TlsRedis::USER,
        TlsRedis::PASSWORD,
        redis.port
    );
    let plain_tag = format!("{topic}-plaintext");
    let (_plain_http, plain_server, _) = start_http(
        &plain_tag,
        &format!("{topic}_plain"),
        &[
            ("REDIS_URL", plain),
            ("KAFKA_BROKERS", coupon_testkit::brokers()),
        ],
    );
    log_says(
        "coupon-http",
        &plain_tag,
        &[
            "cannot connect to Redis at redis://127.0.0.1",
            "(REDIS_URL)",
        ],
    )
    .await;
    assert!(unready(&plain_server).await);

    // The server's certificate put right: coupon-http recovers by itself.
    redis.restart_with(&pki.server);
    server.wait_ready(Duration::from_secs(30)).await.unwrap();
    server
        .create_campaign("recovered", 1, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    for tag in [&tag, &plain_tag] {
        assert!(!log_of("coupon-http", tag).contains(TlsRedis::PASSWORD));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sasl_password_or_ca_keeps_the_relay_refused_and_named_until_put_right() {
    let pki = Pki::new();
    let mut broker = Broker::start_secured(&pki.server, "someone-else", "whatever").await;
    let properties = write(
        pki.dir(),
        "kafka.properties",
        &kafka_properties(&pki.ca, KAFKA_PASSWORD),
    );
    let topic = topic_name();
    let env: Vec<_> = kafka_env(&broker, &properties)
        .into_iter()
        .chain([("REDIS_URL", coupon_testkit::redis_url())])
        .collect();
    let (_http, server, _) = start_http(&topic, &topic, &env);
    log_says(
        "coupon-http",
        &topic,
        &[
            "(KAFKA_BROKERS, COUPON_KAFKA_PROPERTIES)",
            "refused the relay's client",
            "SASL authentication error",
        ],
    )
    .await;
    assert!(
        unready(&server).await,
        "unready while the broker refuses the relay"
    );

    // A CA that did not sign the broker's certificate: refused at the handshake, named.
    let wrong_ca = write(
        pki.dir(),
        "kafka-wrong-ca.properties",
        &kafka_properties(&pki.other_ca, KAFKA_PASSWORD),
    );
    let wrong_tag = format!("{topic}-wrong-ca");
    let env: Vec<_> = kafka_env(&broker, &wrong_ca)
        .into_iter()
        .chain([("REDIS_URL", coupon_testkit::redis_url())])
        .collect();
    let (_wrong, wrong_server, _) = start_http(&wrong_tag, &format!("{topic}_ca"), &env);
    log_says(
        "coupon-http",
        &wrong_tag,
        &["refused the relay's client", "certificate verify failed"],
    )
    .await;
    assert!(unready(&wrong_server).await);

    // The user is created with that password: the relay starts by itself.
    broker.add_user(KAFKA_USER, KAFKA_PASSWORD).await;
    server.wait_ready(Duration::from_secs(60)).await.unwrap();
    assert!(!log_of("coupon-http", &topic).contains(KAFKA_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_waits_on_an_expired_mysql_certificate_and_goes_on_once_it_is_renewed() {
    let pki = Pki::new();
    let mut mariadb = TlsMariaDb::start(&pki, &pki.expired);
    let url = write(pki.dir(), "database-url", &mariadb.url("coupon"));
    let topic = topic_name();
    coupon_relay::ensure_topic(&coupon_testkit::brokers(), &topic, 1, 1)
        .await
        .unwrap();
    let mut env = database_env(&pki, &url);
    env.extend([
        ("KAFKA_BROKERS", coupon_testkit::brokers()),
        ("COUPON_TOPIC", topic.clone()),
        ("COUPON_SINK_GROUP", format!("{topic}-sink")),
    ]);
    let mut sink = spawn("coupon-sink", &topic, &env);
    log_says(
        "coupon-sink",
        &topic,
        &[
            "COUPON_DATABASE_SSL_MODE=verify_identity",
            "COUPON_DATABASE_CA_FILE",
            "certificate has expired",
        ],
    )
    .await;
    assert!(sink.0.try_wait().unwrap().is_none(), "the sink stays up");

    mariadb.restart_with(&pki.server);
    eventually(Duration::from_secs(30), "the sink to migrate its database", || async {
        mariadb
            .sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'coupon' AND table_name = 'coupon'")
            .trim()
            == "1"
    })
    .await;
    assert!(!log_of("coupon-sink", &topic).contains(TlsMariaDb::PASSWORD));
}

/// A Redis Cluster whose nodes serve TLS (`tls-port`, `tls-cluster yes`) and ask for client
/// certificates: coupon-http given two TLS seeds finds the rest over TLS, admits exactly the
/// quota, watches changes over a TLS subscription, and its relay delivers every admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupon_http_admits_exactly_over_a_tls_cluster() {
    let pki = Pki::new();
    let cluster = coupon_testkit::RedisCluster::start_tls(3, 0, &pki);
    let seeds = cluster.tls_nodes()[..2].join(",");
    let topic = topic_name();
    let env = vec![
        ("REDIS_CLUSTER_NODES", seeds),
        ("COUPON_REDIS_CA_FILE", pki.ca.display().to_string()),
        (
            "COUPON_REDIS_CLIENT_CERT_FILE",
            pki.client.cert.display().to_string(),
        ),
        (
            "COUPON_REDIS_CLIENT_KEY_FILE",
            pki.client.key.display().to_string(),
        ),
        ("KAFKA_BROKERS", coupon_testkit::brokers()),
    ];
    let (_http, server, addr) = start_http(&topic, &topic, &env);
    server.wait_ready(Duration::from_secs(60)).await.unwrap();
    let quota = 25;
    let mut campaigns = Vec::new();
    // Campaigns on every master: each slot's node is reached over TLS.
    for (id, _) in cluster.campaigns_on_every_master("tls", 3) {
        server
            .create_campaign(&id, quota, Some(ADMIN_TOKEN))
            .await
            .unwrap();
        let target = Target::local(addr, &id).with_identity(Identity::Body);
        let tally = sale::run(
            &target,
            Crowd::once_each(60).clicks(),
            8,
            &ProgressBar::hidden(),
        )
        .await;
        assert_eq!(tally.count("success"), u64::from(quota), "{id}: {tally:?}");
        assert_eq!(tally.errors(), 0, "{id}: {tally:?}");
        campaigns.push(id);
    }
    let expected = i64::from(quota) * campaigns.len() as i64;
    let brokers = coupon_testkit::brokers();
    eventually(
        Duration::from_secs(60),
        "every admission on the topic",
        || async {
            let (brokers, topic) = (brokers.clone(), topic.clone());
            tokio::task::spawn_blocking(move || coupon_testkit::topic_records(&brokers, &topic))
                .await
                .unwrap()
                == expected
        },
    )
    .await;
    let log = log_of("coupon-http", &topic);
    assert!(
        log.contains("watching campaign changes and outbox announcements"),
        "the subscription runs over TLS"
    );
    assert!(!log.contains("BEGIN"), "no certificate in the log");
}

/// `security.protocol=SSL` without SASL, against a broker that serves TLS only: coupon-http's
/// relay delivers, and the sink writes every admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_delivers_over_ssl_without_sasl() {
    let pki = Pki::new();
    let broker = Broker::start_tls(&pki.server).await;
    let properties = write(
        pki.dir(),
        "kafka.properties",
        &format!(
            "security.protocol=SSL\nssl.ca.location={}",
            pki.ca.display()
        ),
    );
    let topic = topic_name();
    let kafka_env = kafka_env(&broker, &properties);
    let env: Vec<_> = kafka_env
        .iter()
        .cloned()
        .chain([("REDIS_URL", coupon_testkit::redis_url())])
        .collect();
    let (_http, server, addr) = start_http(&topic, &topic, &env);
    server.wait_ready(Duration::from_secs(60)).await.unwrap();
    let db = coupon_testkit::ScratchDb::new();
    let mut sink_env = kafka_env.clone();
    sink_env.extend([
        ("DATABASE_URL", db.url()),
        ("COUPON_TOPIC", topic.clone()),
        ("COUPON_SINK_GROUP", format!("{topic}-sink")),
    ]);
    let _sink = spawn("coupon-sink", &topic, &sink_env);
    let campaign = "over-ssl";
    server
        .create_campaign(campaign, 20, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    let target = Target::local(addr, campaign).with_identity(Identity::Body);
    let tally = sale::run(
        &target,
        Crowd::once_each(30).clicks(),
        4,
        &ProgressBar::hidden(),
    )
    .await;
    assert_eq!(tally.count("success"), 20, "{tally:?}");
    let pool = mysql_async::Pool::new(db.url().as_str());
    let (stored, took) = check::wait_for_rows(&pool, campaign, 20, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(took.is_some(), "MySQL holds {} of 20 coupons", stored.rows);
    assert!(check::verdict(20, 30, &tally, &stored).passed());
    pool.disconnect().await.unwrap();
}
