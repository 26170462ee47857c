//! A flash sale fired at a running `coupon-http`: a crowd of distinct users, some of whom click
//! several times, arriving in shuffled order over `concurrency` keep-alive connections. Every
//! answer is counted by HTTP code and by the `status` word of its JSON body, the users answered
//! `success` are kept for the checks against MySQL, and every latency goes into a histogram.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use tokio::net::{TcpSocket, TcpStream};

/// Who applies, and how often.
#[derive(Debug, Clone)]
pub struct Crowd {
    /// Distinct users; their ids are `first_user..first_user + users`.
    pub users: u64,
    /// The first user id, so that several crowds can share a campaign without sharing users.
    pub first_user: u64,
    /// Share of the users (0.0 to 1.0) who click more than once, as impatient users do.
    pub repeat_share: f64,
    /// Most clicks one repeating user makes; each of them makes 2 to this many.
    pub max_clicks: u32,
    /// Seed of the clicks and their order, so that a run can be repeated exactly.
    pub seed: u64,
}

impl Crowd {
    /// `users` distinct users who click once each, from id 1.
    pub fn once_each(users: u64) -> Self {
        Self {
            users,
            first_user: 1,
            repeat_share: 0.0,
            max_clicks: 1,
            seed: 0,
        }
    }

    /// Every click as the user id it carries, in the order they arrive.
    pub fn clicks(&self) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut clicks = Vec::with_capacity(self.users as usize);
        for user in self.first_user..self.first_user + self.users {
            let times = if self.max_clicks > 1 && rng.random_bool(self.repeat_share.clamp(0.0, 1.0))
            {
                rng.random_range(2..=self.max_clicks)
            } else {
                1
            };
            clicks.extend(std::iter::repeat_n(user, times as usize));
        }
        clicks.shuffle(&mut rng);
        clicks
    }
}

/// One kind of answer: the HTTP code and the `status` word of the body. A request that got no
/// answer at all (connection refused or reset) is code 0, status `transport_error`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Answer {
    /// HTTP status code, 0 for no answer.
    pub code: u16,
    /// The body's `status` field (`success`, `sold_out`, ...), or what stood in its place.
    pub status: String,
}

/// What a sale got back.
#[derive(Debug, Clone)]
pub struct Tally {
    /// How many times each kind of answer came.
    pub answers: BTreeMap<Answer, u64>,
    /// Users answered `success`, once per such answer (a user twice here is a broken guarantee).
    pub winners: Vec<u64>,
    /// Users answered `duplicate`: they hold a coupon too (told so by a retry, say).
    pub duplicates: Vec<u64>,
    /// Users answered `queued` (in a draw's pre-queue), once per such answer, in answer order.
    pub queued: Vec<u64>,
    /// Users whose request got no decision: a 5xx or no answer. The gate may or may not have
    /// admitted them; a retry tells.
    pub undecided: Vec<u64>,
    /// Latency of every request, in microseconds.
    pub latency: Histogram<u64>,
    /// From the first request sent to the last answer received.
    pub elapsed: Duration,
}

impl Tally {
    /// No answers yet.
    pub fn empty() -> Self {
        Self {
            answers: BTreeMap::new(),
            winners: Vec::new(),
            duplicates: Vec::new(),
            queued: Vec::new(),
            undecided: Vec::new(),
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            elapsed: Duration::ZERO,
        }
    }

    /// Requests answered (or failed) in all.
    pub fn requests(&self) -> u64 {
        self.answers.values().sum()
    }

    /// Answers with this status word.
    pub fn count(&self, status: &str) -> u64 {
        self.answers
            .iter()
            .filter(|(answer, _)| answer.status == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Answers that were server errors (5xx) or no answer at all.
    pub fn errors(&self) -> u64 {
        self.answers
            .iter()
            .filter(|(answer, _)| answer.code == 0 || answer.code >= 500)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests per second over the whole sale.
    pub fn rate(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Adds the answers of another sale, e.g. one fired at a sibling server.
    pub fn merge(&mut self, other: Tally) {
        for (answer, n) in other.answers {
            *self.answers.entry(answer).or_default() += n;
        }
        self.winners.extend(other.winners);
        self.duplicates.extend(other.duplicates);
        self.queued.extend(other.queued);
        self.undecided.extend(other.undecided);
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds");
    }
}

/// How the crowd tells the server who applies.
#[derive(Clone)]
pub enum Identity {
    /// `{"userId":N}` in the body, for a server with `COUPON_IDENTITY=body`.
    Body,
    /// A bearer token per user, signed as the server's `COUPON_JWT_SECRET` expects; no body.
    Token(Box<Signer>),
}

/// Signs HS256 tokens for simulated users, as an identity provider would for real ones.
#[derive(Clone)]
pub struct Signer {
    key: jsonwebtoken::EncodingKey,
    header: jsonwebtoken::Header,
}

#[derive(serde::Serialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
}

impl Signer {
    /// Tokens signed with `secret` (HS256).
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            key: jsonwebtoken::EncodingKey::from_secret(secret),
            header: jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        }
    }

    /// Tokens signed with the private key of a PEM file, by `algorithm` (RS256, ES256, EdDSA).
    ///
    /// # Errors
    ///
    /// The file cannot be read, or holds no key for `algorithm`.
    pub fn from_pem(
        path: &std::path::Path,
        algorithm: jsonwebtoken::Algorithm,
    ) -> anyhow::Result<Self> {
        use jsonwebtoken::{Algorithm, EncodingKey};
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem)?,
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem)?,
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem)?,
            other => anyhow::bail!("{other:?} is not a public-key algorithm the server verifies"),
        };
        Ok(Self {
            key,
            header: jsonwebtoken::Header::new(algorithm),
        })
    }

    /// A token naming `user`, valid for an hour from now.
    pub fn token(&self, user: u64) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_string(),
            iat: now,
            exp: now + 3600,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).expect("plain claims sign")
    }
}

/// Where the sale goes: a `coupon-http` address and one of its campaigns.
#[derive(Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header to send.
    pub host: String,
    /// The campaign applied to.
    pub campaign: String,
    /// How users say who they are.
    pub identity: Identity,
}

impl Target {
    /// Resolves a base URL such as `http://127.0.0.1:8080`.
    ///
    /// # Errors
    ///
    /// The URL is not `http://host[:port]`, or the host does not resolve.
    pub async fn resolve(url: &str, campaign: &str) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "only http:// URLs are supported, not {url:?}"
        );
        let host = uri
            .host()
            .with_context(|| format!("no host in {url:?}"))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Self {
            addr,
            host: format!("{host}:{port}"),
            campaign: campaign.to_owned(),
            identity: Identity::Body,
        })
    }

    /// A target on a local address, users naming themselves in the body.
    pub fn local(addr: SocketAddr, campaign: &str) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            campaign: campaign.to_owned(),
            identity: Identity::Body,
        }
    }

    /// The same target, users saying who they are as `identity` does.
    pub fn with_identity(self, identity: Identity) -> Self {
        Self { identity, ..self }
    }
}

/// Sends every click to `target` over `concurrency` connections, each click as soon as a
/// connection is free, and tallies the answers. `progress` advances once per answer; pass
/// `ProgressBar::hidden()` for none.
pub async fn run(
    target: &Target,
    clicks: Vec<u64>,
    concurrency: usize,
    progress: &ProgressBar,
) -> Tally {
    run_at_rate(target, clicks, concurrency, None, progress).await
}

/// As [`run`], but with a `rate` (clicks per second) sends click `i` no earlier than `i / rate`
/// seconds after the start: a steady load, as long as `concurrency` connections keep up with it
/// (a click sent late is sent at once, and the rate catches up).
pub async fn run_at_rate(
    target: &Target,
    clicks: Vec<u64>,
    concurrency: usize,
    rate: Option<f64>,
    progress: &ProgressBar,
) -> Tally {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        addr: target.addr,
        host: HeaderValue::from_str(&target.host).expect("host:port is a valid header"),
        path: format!("/api/campaigns/{}/apply", target.campaign),
        identity: target.identity.clone(),
        clicks,
        next: AtomicUsize::new(0),
        pace: rate.map(|rate| (started, rate)),
    });
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|n| {
            let source = source_address(target.addr, n);
            tokio::spawn(worker(shared.clone(), progress.clone(), source))
        })
        .collect();
    let mut tally = Tally::empty();
    for worker in workers {
        tally.merge(worker.await.expect("a load worker panicked"));
    }
    tally.elapsed = started.elapsed();
    tally
}

/// What every worker reads: where to send, and the next click to take.
struct Shared {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    identity: Identity,
    clicks: Vec<u64>,
    /// Index of the next click not yet taken by a worker.
    next: AtomicUsize,
    /// The start and the clicks per second, for a paced run.
    pace: Option<(Instant, f64)>,
}

/// The address connection `n` sends from: toward a server on loopback, one of 127.1.0.1 onward
/// (every 127.x.y.z is this machine), so that a crowd of users comes from many addresses as it
/// would in the field, not all from one, which the server limits per address. `None`, the
/// system's choice, toward any other server.
fn source_address(target: SocketAddr, n: usize) -> Option<SocketAddr> {
    match target.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() => {
            let (high, low) = (n / 254, n % 254 + 1);
            let octets = [127, 1, u8::try_from(high).ok()?, u8::try_from(low).ok()?];
            Some(SocketAddr::from((octets, 0)))
        }
        _ => None,
    }
}

async fn worker(shared: Arc<Shared>, progress: ProgressBar, source: Option<SocketAddr>) -> Tally {
    let mut tally = Tally::empty();
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(&user) = shared.clicks.get(i) else {
            break;
        };
        if let Some((start, rate)) = shared.pace {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let started = Instant::now();
        let answer = match apply(&shared, &mut connection, source, user).await {
            Ok((code, body)) => Answer {
                code,
                status: status_word(&body),
            },
            Err(_) => {
                connection = None;
                Answer {
                    code: 0,
                    status: "transport_error".to_owned(),
                }
            }
        };
        tally
            .latency
            .saturating_record(started.elapsed().as_micros() as u64);
        match answer.status.as_str() {
            "success" => tally.winners.push(user),
            "duplicate" => tally.duplicates.push(user),
            "queued" => tally.queued.push(user),
            // No decision: the client is told to try again (503 and 429 say when).
            _ if answer.code == 0 || answer.code >= 500 || answer.code == 429 => {
                tally.undecided.push(user)
            }
            _ => {}
        }
        *tally.answers.entry(answer).or_default() += 1;
        // Every answer, so that the position is exact for tests that strike mid-burst; the bar
        // redraws at its own rate.
        progress.inc(1);
    }
    tally
}

/// One apply over the worker's connection, opening a new one if it has none or it was closed.
async fn apply(
    shared: &Shared,
    connection: &mut Option<SendRequest<Full<Bytes>>>,
    source: Option<SocketAddr>,
    user: u64,
) -> anyhow::Result<(u16, Bytes)> {
    if let Some(sender) = connection
        && sender.ready().await.is_err()
    {
        *connection = None;
    }
    let sender = match connection {
        Some(sender) => sender,
        None => connection.insert(connect(shared.addr, source).await?),
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(shared.path.as_str())
        .header(HOST, shared.host.clone());
    let request = match &shared.identity {
        Identity::Body => request
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(format!("{{\"userId\":{user}}}")))),
        Identity::Token(signer) => request
            .header(AUTHORIZATION, format!("Bearer {}", signer.token(user)))
            .body(Full::new(Bytes::new())),
    }
    .expect("a valid request");
    let response = sender.send_request(request).await?;
    let code = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((code, body))
}

async fn connect(
    addr: SocketAddr,
    source: Option<SocketAddr>,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = match source {
        Some(source) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(source)?;
            socket.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The `status` word of a JSON answer, `non_json` where the body is not such an answer.
fn status_word(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("status")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "non_json".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_clicks_at_least_once_and_repeaters_up_to_the_maximum() {
        let crowd = Crowd {
            users: 1000,
            first_user: 501,
            repeat_share: 0.3,
            max_clicks: 4,
            seed: 7,
        };
        let clicks = crowd.clicks();
        let mut per_user = BTreeMap::new();
        for user in &clicks {
            *per_user.entry(*user).or_insert(0) += 1;
        }
        assert_eq!(per_user.len(), 1000);
        assert_eq!(per_user.keys().next(), Some(&501));
        assert_eq!(per_user.keys().last(), Some(&1500));
        assert!(per_user.values().all(|&n| (1..=4).contains(&n)));
        let repeaters = per_user.values().filter(|&&n| n > 1).count();
        assert!((200..400).contains(&repeaters), "{repeaters} repeaters");
        assert_eq!(crowd.clicks(), clicks, "the same seed gives the same sale");
    }

    #[test]
    fn without_repeaters_each_user_clicks_once() {
        let mut clicks = Crowd::once_each(100).clicks();
        clicks.sort_unstable();
        assert_eq!(clicks, (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn status_words() {
        assert_eq!(
            status_word(br#"{"status":"sold_out","message":"x"}"#),
            "sold_out"
        );
        assert_eq!(status_word(b"<html>"), "non_json");
        assert_eq!(status_word(br#"{"status":3}"#), "non_json");
    }
}
