//! One limit across every coupon-http on one Redis: a user, an address or a flood of forged
//! tokens spread over two or three processes gets through what one process would allow, on a
//! server and on a cluster; without Redis each process applies its own limits and shares them
//! again once Redis is back; the limits' keys expire once idle; a sold-out crowd clicking once
//! writes nothing to Redis. Allowances are counted, never timed: a request got through unless it
//! was answered 429.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coupon_http::{Config, Identity, JwtConfig, JwtKey};
use hyper::{Method, StatusCode};
use support::{
    RedisServer, TestApp, admissions_decided, call, call_from, command_calls, config, connect,
    eventually, status, until_answered_locally,
};

/// The limit under test: the default per-user limit's shape.
const PER_SECOND: u32 = 5;
const BURST: u32 = 10;
/// How long each flood runs.
const RUN: Duration = Duration::from_secs(10);
/// Requests in flight at once, per process flooded.
const PER_PROCESS: usize = 4;

/// [`config`] with the per-user limit under test, on `redis`.
fn per_user(redis: coupon_cli::Redis) -> Config {
    Config {
        redis,
        user_rate: PER_SECOND,
        user_burst: BURST.try_into().unwrap(),
        default_quota: support::quota(100_000),
        ..config()
    }
}

/// One test at a time: the fallback gauge is the process's, and every server's start sets it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a flood got: requests through the limits, requests answered 429, and how long it took
/// from the first request to the last answer.
#[derive(Debug)]
struct Tally {
    passed: u64,
    refused: u64,
    took: Duration,
}

impl Tally {
    /// What one process allows in the time the flood took: the burst, and one refill per
    /// interval of that time (see the README's rules for tests).
    fn allowed(&self, per_second: u32, burst: u32) -> f64 {
        f64::from(burst) + (self.took.as_secs_f64() * f64::from(per_second)).floor() + 1.0
    }

    /// Asserts that the flood got through what one process allows, +10 %, and at least the
    /// burst.
    fn within(&self, per_second: u32, burst: u32, what: &str) {
        let allowed = self.allowed(per_second, burst);
        println!("{what}: {self:?}, one process allows {allowed}");
        assert!(
            self.passed as f64 <= allowed * 1.1,
            "{what}: {} passed where the deployment allows {allowed} (+10 %)",
            self.passed
        );
        assert!(
            self.passed >= u64::from(burst),
            "{what}: only {} passed",
            self.passed
        );
        assert!(self.refused > 0, "{what}: nothing was refused");
    }
}

/// Sends `request(n)` (headers and body) to `POST /api/coupons/apply` for `run`, from
/// `source`, as fast as [`PER_PROCESS`] requests in flight per server allow, each request to
/// the next server of `servers` in turn. Every answer must be `expected` or 429.
async fn flood(
    servers: &[SocketAddr],
    run: Duration,
    source: Option<IpAddr>,
    expected: &[StatusCode],
    request: impl Fn(u64) -> (Vec<(&'static str, String)>, String) + Send + Sync + 'static,
) -> Tally {
    let servers: Arc<[SocketAddr]> = servers.into();
    let request = Arc::new(request);
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let expected: Arc<[StatusCode]> = expected.into();
    let started = Instant::now();
    let workers: Vec<_> = (0..servers.len() * PER_PROCESS)
        .map(|_| {
            let (servers, request, counts, expected) = (
                servers.clone(),
                request.clone(),
                counts.clone(),
                expected.clone(),
            );
            tokio::spawn(async move {
                while started.elapsed() < run {
                    let n = counts[2].fetch_add(1, Ordering::Relaxed);
                    let server = servers[n as usize % servers.len()];
                    let (headers, body) = request(n);
                    let headers: Vec<(&str, &str)> =
                        headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let path = "/api/coupons/apply";
                    let answer =
                        call_from(source, server, Method::POST, path, &headers, body).await;
                    if answer.status == StatusCode::TOO_MANY_REQUESTS {
                        assert!(answer.headers.contains_key("retry-after"));
                        counts[1].fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert!(
                            expected.contains(&answer.status),
                            "answered {} {}",
                            answer.status,
                            answer.body
                        );
                        counts[0].fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    Tally {
        passed: counts[0].load(Ordering::Relaxed),
        refused: counts[1].load(Ordering::Relaxed),
        took: started.elapsed(),
    }
}

/// An application of `user` in body mode.
fn as_user(user: u64) -> (Vec<(&'static str, String)>, String) {
    let json = ("content-type", "application/json".to_owned());
    (vec![json], format!(r#"{{"userId":{user}}}"#))
}

/// Admitted once, then told it holds a coupon.
const APPLIED: [StatusCode; 2] = [StatusCode::OK, StatusCode::CONFLICT];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_spread_over_two_and_three_processes_gets_the_limit_once() {
    let _serial = SERIAL.lock().await;
    let first = TestApp::start(per_user(config().redis)).await;
    let second = first.sibling(per_user(config().redis)).await;
    let two = flood(&[first.addr, second.addr], RUN, None, &APPLIED, |_| {
        as_user(7)
    })
    .await;
    two.within(PER_SECOND, BURST, "one user over two processes");

    let third = first.sibling(per_user(config().redis)).await;
    let servers = [first.addr, second.addr, third.addr];
    let three = flood(&servers, RUN, None, &APPLIED, |_| as_user(8)).await;
    three.within(PER_SECOND, BURST, "one user over three processes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_spread_over_two_processes_gets_the_limit_once() {
    let _serial = SERIAL.lock().await;
    let per_address = Config {
        ip_rate: Some(PER_SECOND.try_into().unwrap()),
        ip_burst: Some(BURST.try_into().unwrap()),
        default_quota: support::quota(100_000),
        ..config()
    };
    let first = TestApp::start(per_address.clone()).await;
    let second = first.sibling(per_address).await;
    let source = Some(IpAddr::from([127, 0, 0, 9]));
    // A new user every request: only the address's limit can refuse them.
    let tally = flood(&[first.addr, second.addr], RUN, source, &APPLIED, |n| {
        as_user(1_000 + n)
    })
    .await;
    tally.within(PER_SECOND, BURST, "one address over two processes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_spread_over_two_processes_spend_one_budget() {
    let _serial = SERIAL.lock().await;
    let budget = Config::default()
        .bad_token_limit()
        .expect("a bad-token budget by default");
    let jwt = Config {
        identity: Identity::Jwt,
        jwt: JwtConfig {
            key: Some(JwtKey::PublicKey(support::key_file("rsa-public.pem"))),
            ..JwtConfig::default()
        },
        ..config()
    };
    let first = TestApp::start(jwt.clone()).await;
    let second = first.sibling(jwt).await;
    let forged = support::forged(&support::rs256_token(1));
    let auth = format!("Bearer {forged}");
    let run = Duration::from_secs(5);
    let source = Some(IpAddr::from([127, 0, 0, 10]));
    let tally = flood(
        &[first.addr, second.addr],
        run,
        source,
        &[StatusCode::UNAUTHORIZED],
        move |_| (vec![("authorization", auth.clone())], String::new()),
    )
    .await;
    // Each 401 is a verification. The budget, the requests in flight when it ran out, and one
    // refill per interval of the time taken; one process alone would allow as much again.
    let in_flight = 2 * PER_PROCESS as u64;
    let allowed = u64::from(budget.burst.get())
        + in_flight
        + u64::from(budget.per_second.get()) * (tally.took.as_secs() + 1);
    println!("forged tokens over two processes: {tally:?}, {allowed} verifications allowed");
    assert!(
        tally.passed <= allowed,
        "{} verifications, {allowed} allowed",
        tally.passed
    );
    assert!(tally.passed >= u64::from(budget.burst.get()), "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_the_limit_too() {
    let _serial = SERIAL.lock().await;
    let cluster = coupon_testkit::RedisCluster::start_with(3, 0, &[]);
    let redis = coupon_cli::Redis::cluster(cluster.nodes());
    let mut servers = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..2 {
        let listener = coupon_http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = per_user(redis.clone());
        config.key_prefix.key_prefix = "limits".to_owned();
        config.topic.topic = format!("t_limits_{}", cluster.ports[0]);
        config.relay_consumer = Some(format!("relay-{}", addr.port()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(coupon_http::serve(config, listener, async {
            let _ = stopped.await;
        }));
        eventually(
            Duration::from_secs(30),
            "the server to be ready",
            || async { call(addr, Method::GET, "/ready", &[], "").await.0 == StatusCode::OK },
        )
        .await;
        servers.push(addr);
        stops.push(stop);
    }
    let tally = flood(&servers, RUN, None, &APPLIED, |_| as_user(7)).await;
    tally.within(
        PER_SECOND,
        BURST,
        "one user over two processes on a cluster",
    );
    let mut conn = cluster.connection().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("limits:limit:u:7")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "the user's bucket is in the cluster: PTTL {ttl}");
}

/// `coupon_rate_limit_local_fallback` as `server`'s `/metrics` says.
async fn fallback(server: SocketAddr) -> String {
    let (code, text) = call(server, Method::GET, "/metrics", &[], "").await;
    assert_eq!(code, StatusCode::OK);
    text.as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("coupon_rate_limit_local_fallback "))
        .expect("the fallback gauge")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_process_applies_its_own_limit_and_shares_again_once_back() {
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let with = || Config {
        redis_timeout: Duration::from_millis(300),
        ..per_user(coupon_cli::Redis::server(redis.url()))
    };
    let first = TestApp::start(with()).await;
    let second = first.sibling(with()).await;
    let servers = [first.addr, second.addr];
    let run = Duration::from_secs(3);
    let shared = flood(&servers, run, None, &APPLIED, |_| as_user(7)).await;
    shared.within(PER_SECOND, BURST, "shared, before redis went away");
    assert_eq!(fallback(first.addr).await, "0");

    redis.kill();
    // Answered 503 by the gate, but let through by each process's own limit: neither an open
    // door nor a closed one.
    let unavailable = [StatusCode::SERVICE_UNAVAILABLE];
    let alone = flood(&servers, run, None, &unavailable, |_| as_user(8)).await;
    let one = alone.allowed(PER_SECOND, BURST);
    println!("without redis: {alone:?}; one process allows {one}");
    assert!(
        alone.passed as f64 > one * 1.1 && alone.passed as f64 <= 2.0 * one * 1.1,
        "without redis two processes let through {} where each allows {one}",
        alone.passed
    );
    assert_eq!(fallback(first.addr).await, "1");

    redis.restart(false);
    // The next request that asks Redis finds it back.
    let mut user = 100;
    let (a, b) = (first.addr, second.addr);
    eventually(
        Duration::from_secs(30),
        "the limits to be shared again",
        || {
            user += 1;
            let user = user;
            async move {
                for server in servers {
                    for _ in 0..2 {
                        let (headers, body) = as_user(user);
                        let headers: Vec<(&str, &str)> =
                            headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        call(server, Method::POST, "/api/coupons/apply", &headers, body).await;
                    }
                }
                fallback(a).await == "0" && fallback(b).await == "0"
            }
        },
    )
    .await;
    // The restarted Redis starts empty: the default campaign is unknown now.
    let unknown = [StatusCode::NOT_FOUND];
    let again = flood(&servers, run, None, &unknown, |_| as_user(9)).await;
    again.within(PER_SECOND, BURST, "shared again, after redis came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limits_key_expires_once_its_bucket_is_full_again() {
    let _serial = SERIAL.lock().await;
    let app = TestApp::start(per_user(config().redis)).await;
    // The first request passes unasked, the second passes and asks Redis to charge both.
    for _ in 0..2 {
        let answer = app.apply(None, 7).await;
        assert!(APPLIED.contains(&answer.0), "{answer:?}");
    }
    let key = format!("{}:limit:u:7", app.prefix);
    let conn = connect(&app.config.redis.redis_url).await;
    let pttl = || {
        let mut conn = conn.clone();
        let key = key.clone();
        async move {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            ttl
        }
    };
    eventually(Duration::from_secs(5), "the ask to reach Redis", || async {
        pttl().await > 0
    })
    .await;
    let ttl = pttl().await;
    let refill = 1000 * i64::from(BURST) / i64::from(PER_SECOND);
    assert!(ttl > 0 && ttl <= refill, "PTTL {ttl} of {key}");
    let bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    println!("{key}: {bytes} bytes, PTTL {ttl} ms");
    // Gone within the refill time it was given (PTTL -2: no such key); the deadline leaves room
    // for a slow machine.
    eventually(Duration::from_secs(10), "the key to expire", || async {
        pttl().await == -2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_crowd_clicking_once_writes_nothing_and_clicking_again_one_key_each() {
    let _serial = SERIAL.lock().await;
    // An own Redis, so that no other test's calls move the counters.
    let redis = RedisServer::start();
    let app = TestApp::start(Config {
        // Remembered for a minute: only the change messages could make it forget.
        sold_out_ttl: Duration::from_secs(60),
        ..per_user(coupon_cli::Redis::server(redis.url()))
    })
    .await;
    app.create(serde_json::json!({"id": "flash", "quota": 1}))
        .await;
    assert_eq!(status(&app.apply(Some("flash"), 1).await).0, StatusCode::OK);
    let mut user = 1;
    until_answered_locally(app.addr, &redis.url(), "flash", &mut user).await;
    app.drained("flash").await;
    let mut conn = connect(&redis.url()).await;
    let writes = ["evalsha", "set", "hset", "xadd"];
    let (before, decided) = (
        command_calls(&mut conn, &writes).await,
        admissions_decided(&redis.url()).await,
    );
    const CROWD: u64 = 300;
    let crowd = 10_000..10_000 + CROWD;
    let sold_out = (StatusCode::GONE, "sold_out");
    for u in crowd.clone() {
        assert_eq!(status(&app.apply(Some("flash"), u).await), sold_out);
    }
    assert_eq!(
        command_calls(&mut conn, &writes).await,
        before,
        "300 users clicking once on a sold-out campaign wrote to Redis"
    );

    // Each clicks again: the limit asks Redis about each user once (batched), and writes one
    // key per user; still no admission script.
    let sets = command_calls(&mut conn, &["set"]).await;
    for u in crowd.clone() {
        assert_eq!(status(&app.apply(Some("flash"), u).await), sold_out);
    }
    let pattern = format!("{}:limit:u:*", app.prefix);
    eventually(Duration::from_secs(5), "a limiter key per user", || {
        let mut conn = conn.clone();
        let pattern = pattern.clone();
        async move { support::scan(&mut conn, &pattern).await.unwrap().len() as u64 == CROWD }
    })
    .await;
    assert_eq!(command_calls(&mut conn, &["set"]).await - sets, CROWD);
    assert_eq!(admissions_decided(&redis.url()).await, decided);
}
