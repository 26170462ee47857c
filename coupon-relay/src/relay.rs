//! The relay loop: moves admissions from the campaigns' Redis outbox streams to a Kafka topic.
//!
//! Each round reads new outbox entries through the gate's consumer group: of every campaign, or,
//! while [`Announcements`] are live, of the campaigns announced or found with work only,
//! produces them with an idempotent producer (`enable.idempotence=true`, `acks=all`), and
//! acknowledges (which deletes) only the entries the broker confirmed. An entry whose delivery
//! failed stays pending in the outbox; so does every entry a crashed relay had read. Every relay
//! periodically takes over entries left pending longer than
//! [`RelayConfig::claim_idle`], its own included, so each admission reaches the topic at least
//! once while any relay runs. A relay holds the entries of the round it delivers (see
//! [`Outbox::hold`]) three times per `claim_idle`, so a round that outlasts `claim_idle` on a
//! slow broker is not taken over and produced twice by another relay. What is produced is
//! [`Event`](crate::Event)'s form.
//!
//! The relay records through the [`metrics`] facade (nothing is recorded until the process
//! installs a recorder): `coupon_relay_delivered_total`, `coupon_relay_failures_total{reason}`
//! (`delivery`: a record the broker did not confirm; `redis`: a round that could not read or
//! acknowledge its outbox), `coupon_relay_delivery_seconds` (from admission to the broker's
//! confirmation), `coupon_relay_producer_replacements_total`, and once a second
//! `coupon_outbox_backlog{campaign}` (events of the campaign not yet confirmed by the broker,
//! read by a relay or not; see [`Outbox::backlog`]).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use coupon_event::Encoder;
use coupon_gate::{CampaignId, Gate, Outbox, OutboxRecord};
use futures_util::FutureExt;
use futures_util::future::Fuse;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use redis::aio::ConnectionLike;
use tracing::{debug, error, info, warn};

use crate::announcements::Announcements;
use crate::topic::{client_config, create_topic};
use crate::{Error, RelayConfig};

/// How often the list of campaigns is read again, to find new outboxes.
const CAMPAIGN_REFRESH: Duration = Duration::from_secs(1);
/// How long an idle relay waits before it looks at the outboxes again.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// How long a relay with announcements live and no outbox with work waits for an announcement
/// before it looks whether a sweep or a claim is due.
const REST: Duration = Duration::from_secs(1);
/// How often a relay with announcements live reads every campaign's outbox anyway, in case an
/// announcement was lost without the subscription noticing.
const SWEEP: Duration = Duration::from_secs(30);
/// How long the relay waits after Redis failed before it tries again.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// How long the relay waits before it hands the producer a record again when the producer's
/// queue is full of records already delivered but not yet freed.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(1);

/// Whether a relay's loop runs; cheap to clone, for readiness checks.
#[derive(Clone, Debug, Default)]
pub struct Running(Arc<AtomicBool>);

impl Running {
    /// True from the relay's first round until it stops.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, running: bool) {
        self.0.store(running, Ordering::Relaxed);
    }
}

/// A relay over one gate's outboxes and one producer.
pub struct Relay<C> {
    /// The campaigns, whose outboxes are read.
    gate: Gate<C>,
    /// Where the outboxes are read and acknowledged.
    outbox: Outbox<C>,
    /// The idempotent producer; shared by every send of a round.
    producer: FutureProducer,
    /// What one handover to the producer may hold before the relay awaits it (see
    /// [`Handover`]).
    handover: Handover,
    /// Topic, batch size and timeouts.
    config: RelayConfig,
    /// Set while [`Relay::run`] runs.
    running: Running,
    /// Which outboxes hold work, when a subscription tells; without, every campaign is read
    /// each round.
    announcements: Option<Announcements>,
}

impl<C> Relay<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// A relay delivering the outboxes of `gate`'s campaigns as `config` says.
    ///
    /// # Errors
    ///
    /// [`Error::Config`]: a producer configuration librdkafka refuses.
    pub fn new(gate: &Gate<C>, config: RelayConfig) -> Result<Self, Error> {
        let client = producer_config(&config);
        let producer = client.create().map_err(Error::Config)?;
        Ok(Self {
            gate: gate.clone(),
            outbox: gate.outbox(),
            producer,
            handover: Handover::of(&client),
            config,
            running: Running::default(),
            announcements: None,
        })
    }

    /// Reads only the outboxes with work while `announcements` are live (see [`Announcements`]):
    /// the relay's work per round then grows with the campaigns that have undelivered events,
    /// not with every campaign ever created, and an announced admission wakes it at once.
    #[must_use]
    pub fn with_announcements(mut self, announcements: Announcements) -> Self {
        self.announcements = Some(announcements);
        self
    }

    /// Creates the topic with the configured partitions and replication, unless it exists.
    ///
    /// # Errors
    ///
    /// The broker is unreachable or refuses the topic.
    pub async fn ensure_topic(&self) -> Result<(), Error> {
        create_topic(
            &self.config.brokers,
            &self.config.kafka_properties,
            &self.config.topic,
            self.config.partitions,
            self.config.replication,
        )
        .await
    }

    /// A handle that tells whether this relay's loop runs.
    pub fn running(&self) -> Running {
        self.running.clone()
    }

    /// Runs rounds until `shutdown` resolves, then finishes the round in progress, flushes the
    /// producer and returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let shutdown = shutdown.fuse();
        tokio::pin!(shutdown);
        self.running.set(true);
        info!(topic = %self.config.topic, consumer = %self.config.consumer, "relay started");
        for reason in ["delivery", "redis"] {
            metrics::counter!("coupon_relay_failures_total", "reason" => reason).increment(0);
        }
        metrics::counter!("coupon_relay_delivered_total").increment(0);
        metrics::counter!("coupon_relay_producer_replacements_total").increment(0);
        // Beside the rounds, which may wait on the broker for as long as a message may take.
        let watched = Watched::default();
        let backlogs = report_backlogs(
            self.gate.clone(),
            self.outbox.clone(),
            watched.clone(),
            self.announcements.clone(),
        );
        tokio::select! {
            () = self.rounds(shutdown, &watched) => {}
            never = backlogs => match never {},
        }
        if let Err(err) = self
            .producer
            .flush(Timeout::After(self.config.message_timeout))
        {
            warn!(cause = %err, "relay could not flush the producer on shutdown");
        }
        self.running.set(false);
        info!("relay stopped");
    }

    /// Rounds until `shutdown` resolves: over the campaigns [`Relay::choose`] gives, resting
    /// while nothing moves.
    async fn rounds(
        &mut self,
        mut shutdown: Pin<&mut Fuse<impl Future<Output = ()>>>,
        watched: &Watched,
    ) {
        let mut targets = Targets::default();
        // Claim at once on start, to pick up what a crashed predecessor left behind.
        let mut next_claim = Instant::now();
        while shutdown.as_mut().now_or_never().is_none() {
            let marked_only = self.choose(&mut targets).await;
            let campaigns: Vec<CampaignId> = if marked_only {
                targets.marked.iter().cloned().collect()
            } else {
                targets.all.clone()
            };
            watched.set(marked_only.then(|| campaigns.clone()));
            let claim = Instant::now() >= next_claim;
            if claim {
                next_claim =
                    Instant::now() + (self.config.claim_idle / 2).max(Duration::from_millis(50));
            }
            let (moved, failed) = self
                .round_each(&campaigns, claim, &mut targets, marked_only)
                .await;
            if moved > 0 && !failed {
                continue;
            }
            // With announcements live and nothing to read, an announcement ends the rest;
            // the periodic sweep and claims come around within REST.
            let pause = match (failed, marked_only && targets.marked.is_empty()) {
                (true, _) => ERROR_BACKOFF,
                (false, true) => REST,
                (false, false) => IDLE_POLL,
            };
            let announced = async {
                match (&self.announcements, marked_only) {
                    (Some(announcements), true) => announcements.arrived().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = announced => {}
                () = shutdown.as_mut() => break,
            }
        }
    }

    /// Which campaigns to read this round, into `targets`; true when they are the marked ones
    /// (announcements live: those announced, and those a sweep found with work, read every
    /// campaign when the subscription went live and every [`SWEEP`]), false when they are all.
    async fn choose(&self, targets: &mut Targets) -> bool {
        let taken = self.announcements.as_ref().map(Announcements::take);
        if let Some(taken) = taken.filter(|taken| taken.live) {
            targets.marked.extend(taken.ready);
            let due = targets.epoch != Some(taken.epoch)
                || targets.next_sweep.is_none_or(|at| Instant::now() >= at);
            if due && self.sweep(&mut targets.marked).await {
                targets.epoch = Some(taken.epoch);
                targets.next_sweep = Some(Instant::now() + SWEEP);
            }
            return true;
        }
        targets.epoch = None;
        if targets
            .all_read
            .is_none_or(|t| t.elapsed() >= CAMPAIGN_REFRESH)
        {
            match self.gate.campaigns().await {
                Ok(ids) => {
                    targets.all = ids;
                    targets.all_read = Some(Instant::now());
                }
                Err(err) => warn!(cause = %err, "relay cannot list campaigns"),
            }
        }
        false
    }

    /// Marks every campaign whose outbox holds an entry, or could not be looked at (its rounds
    /// then try it, and say why they fail); false when the campaigns could not be listed.
    async fn sweep(&self, marked: &mut HashSet<CampaignId>) -> bool {
        let campaigns = match self.gate.campaigns().await {
            Ok(ids) => ids,
            Err(err) => {
                warn!(cause = %err, "relay cannot list campaigns");
                return false;
            }
        };
        for campaign in campaigns {
            if !matches!(self.outbox.oldest(&campaign).await, Ok(None)) {
                marked.insert(campaign);
            }
        }
        true
    }

    /// One round for each of `campaigns`; when `marked_only`, a campaign whose outbox turned out
    /// empty leaves `targets.marked` (an announcement brings it back). Returns the records
    /// delivered, and whether anything failed.
    async fn round_each(
        &mut self,
        campaigns: &[CampaignId],
        claim: bool,
        targets: &mut Targets,
        marked_only: bool,
    ) -> (usize, bool) {
        let mut moved = 0;
        let mut failed = false;
        let mut rejected = false;
        for campaign in campaigns {
            match self.round(campaign, claim).await {
                Ok(sent) => {
                    moved += sent.delivered;
                    failed |= sent.failed > 0;
                    rejected |= sent.producer_rejected;
                    // Read nothing: the outbox is empty unless another relay holds entries.
                    if marked_only
                        && sent.read == 0
                        && matches!(self.outbox.oldest(campaign).await, Ok(None))
                    {
                        targets.marked.remove(campaign);
                    }
                }
                Err(err) => {
                    warn!(cause = %err, campaign = %campaign, "relay round failed; entries stay in the outbox");
                    metrics::counter!("coupon_relay_failures_total", "reason" => "redis")
                        .increment(1);
                    failed = true;
                }
            }
        }
        self.replace_failed_producer(rejected);
        (moved, failed)
    }

    /// One round for one campaign: take over stale entries (when `claim`), read new ones,
    /// deliver, acknowledge what was delivered.
    async fn round(&self, campaign: &CampaignId, claim: bool) -> Result<Sent, coupon_gate::Error> {
        let (consumer, batch) = (&self.config.consumer, self.config.batch);
        let mut records = Vec::new();
        if claim {
            records = self
                .outbox
                .claim(campaign, consumer, self.config.claim_idle, batch)
                .await?;
            if !records.is_empty() {
                info!(campaign = %campaign, count = records.len(), "relay took over pending outbox entries");
            }
        }
        records.extend(self.outbox.read(campaign, consumer, batch).await?);
        if records.is_empty() {
            return Ok(Sent::default());
        }
        let mut sent = self.deliver_held(campaign, &records).await;
        sent.read = records.len();
        self.outbox
            .ack(campaign, delivered(&records, &sent.failed_entries))
            .await?;
        debug!(campaign = %campaign, read = records.len(), delivered = sent.delivered, "relay round");
        Ok(sent)
    }

    /// Replaces the producer when librdkafka marked it fatally failed, or when the broker
    /// `rejected` its identity.
    ///
    /// An idempotent producer whose messages timed out must reset its epoch with the broker.
    /// When that goes wrong, the broker refuses every later message of this producer id
    /// (`ProducerFenced`, `InvalidProducerEpoch`, ...), whether or not librdkafka calls the
    /// state fatal, and the only way out is a new producer instance with a new id. Entries whose
    /// delivery failed are still pending in the outbox; the new producer sends them again.
    fn replace_failed_producer(&mut self, rejected: bool) {
        let fatal = self.producer.client().fatal_error();
        if fatal.is_none() && !rejected {
            return;
        }
        let reason = fatal.map_or_else(
            || "the broker rejected its producer id".to_owned(),
            |(code, why)| format!("{code}: {why}"),
        );
        error!(%reason, "the Kafka producer cannot deliver any more; creating a new one");
        match producer(&self.config) {
            Ok(fresh) => {
                self.producer = fresh;
                metrics::counter!("coupon_relay_producer_replacements_total").increment(1);
            }
            Err(err) => {
                error!(cause = %err, "cannot create a new Kafka producer; retrying next round")
            }
        }
    }

    /// [`Relay::deliver`]s `records` of `campaign`, and while the broker has not confirmed them
    /// all, tells the outbox every [`hold_every`] that this relay still holds their entries, so
    /// that no other relay takes over a round that is merely slow and delivers it a second time.
    async fn deliver_held(&self, campaign: &CampaignId, records: &[OutboxRecord]) -> Sent {
        let delivery = self.deliver(records);
        tokio::pin!(delivery);
        let every = hold_every(self.config.claim_idle);
        let mut hold = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        hold.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                sent = &mut delivery => return sent,
                _ = hold.tick() => {
                    // Missing one is harmless while the next comes in time: at worst another
                    // relay delivers the entries too.
                    if let Err(err) = self.outbox.hold(campaign, &self.config.consumer, records).await {
                        warn!(cause = %err, campaign = %campaign, "relay could not hold the entries it delivers");
                    }
                }
            }
        }
    }

    /// Produces every record and says which outbox entries the broker confirmed whole.
    ///
    /// The records are handed to the producer in [`Handover`]s (librdkafka copies key and
    /// value, so one buffer of each serves every record), and each handover's deliveries are
    /// awaited in order before the next.
    async fn deliver(&self, records: &[OutboxRecord]) -> Sent {
        let topic = self.config.topic.as_str();
        let mut results: Vec<Option<KafkaError>> = Vec::with_capacity(records.len());
        let mut pending: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(records.len());
        let mut encoder = Encoder::default();
        let (mut since, mut bytes) = (Instant::now(), 0);
        for (i, outbox_record) in records.iter().enumerate() {
            results.push(None);
            if self.handover.is_full(since, bytes) && !pending.is_empty() {
                settle(&mut pending, &mut results).await;
            }
            if pending.is_empty() {
                (since, bytes) = (Instant::now(), 0);
            }
            let (key, payload) = encoder.encode(
                outbox_record.kind,
                &outbox_record.campaign,
                &outbox_record.user,
                outbox_record.seq,
                outbox_record.at,
            );
            bytes += key.len() + payload.len();
            let mut full_since = None;
            loop {
                let record = FutureRecord::to(topic).key(key).payload(payload);
                match self.producer.send_result(record) {
                    Ok(delivery) => pending.push((i, delivery)),
                    // The producer's queue is full of this round's records: wait for them to
                    // be delivered, then try again.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if !pending.is_empty() =>
                    {
                        settle(&mut pending, &mut results).await;
                        continue;
                    }
                    // Every record handed over has had its delivery report, yet the queue still
                    // counts some: librdkafka frees a message only after its report, on its own
                    // thread. Wait for that, as long as a message may take to deliver.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if full_since.get_or_insert_with(Instant::now).elapsed()
                            < self.config.message_timeout =>
                    {
                        tokio::time::sleep(QUEUE_FULL_RETRY).await;
                        continue;
                    }
                    Err((err, _)) => results[i] = Some(err),
                }
                break;
            }
        }
        settle(&mut pending, &mut results).await;

        let mut sent = Sent::default();
        let mut first_error = None;
        let confirmed = SystemTime::now();
        let latency = metrics::histogram!("coupon_relay_delivery_seconds");
        for (record, result) in records.iter().zip(results) {
            match result {
                None => {
                    sent.delivered += 1;
                    let waited = confirmed.duration_since(record.at).unwrap_or_default();
                    latency.record(waited.as_secs_f64());
                }
                Some(err) => {
                    sent.failed += 1;
                    sent.failed_entries.insert(record.entry.clone());
                    sent.producer_rejected |= matches!(err.rdkafka_error_code(), Some(code) if PRODUCER_REJECTED.contains(&code));
                    first_error.get_or_insert(err);
                }
            }
        }
        metrics::counter!("coupon_relay_delivered_total").increment(sent.delivered as u64);
        metrics::counter!("coupon_relay_failures_total", "reason" => "delivery")
            .increment(sent.failed as u64);
        if let Some(err) = first_error {
            let campaign = &records[0].campaign;
            warn!(cause = %err, campaign = %campaign, failed = sent.failed, "deliveries failed; the entries stay in the outbox");
        }
        sent
    }
}

/// The campaigns a relay reads.
#[derive(Default)]
struct Targets {
    /// Every campaign, read again every [`CAMPAIGN_REFRESH`] while announcements are not live.
    all: Vec<CampaignId>,
    all_read: Option<Instant>,
    /// Campaigns announced or found with work, until their outbox is seen empty.
    marked: HashSet<CampaignId>,
    /// The announcements' epoch of the last sweep; `None` while they are not live.
    epoch: Option<u64>,
    next_sweep: Option<Instant>,
}

/// The campaigns whose backlog gauges are kept: `None` for every campaign, else those the
/// rounds have marked. Written by the rounds, read by [`report_backlogs`].
#[derive(Clone, Default)]
struct Watched(Arc<std::sync::Mutex<Option<Vec<CampaignId>>>>);

impl Watched {
    fn set(&self, campaigns: Option<Vec<CampaignId>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = campaigns;
    }

    fn get(&self) -> Option<Vec<CampaignId>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Sets `coupon_outbox_backlog{campaign}` and `coupon_outbox_oldest_seconds{campaign}` once every
/// [`CAMPAIGN_REFRESH`], forever: read for every campaign, or, while the rounds read only the
/// marked ones, read for those and for the ones announced but not yet taken, and set to zero once
/// for every other (an outbox is let rest only once seen empty, and any event to it is
/// announced). A campaign whose figures cannot be read keeps its last ones (Redis failing is the
/// rounds' failure too, counted there).
async fn report_backlogs<C>(
    gate: Gate<C>,
    outbox: Outbox<C>,
    watched: Watched,
    announcements: Option<Announcements>,
) -> std::convert::Infallible
where
    C: ConnectionLike + Clone + Send + Sync,
{
    let mut zeroed: HashSet<CampaignId> = HashSet::new();
    loop {
        if let Ok(campaigns) = gate.campaigns().await {
            match watched.get() {
                None => {
                    for campaign in &campaigns {
                        report_backlog(&outbox, campaign).await;
                    }
                    zeroed.clear();
                }
                Some(marked) => {
                    let mut read: HashSet<CampaignId> = marked.into_iter().collect();
                    read.extend(announcements.iter().flat_map(Announcements::pending));
                    for campaign in &campaigns {
                        if read.contains(campaign) {
                            report_backlog(&outbox, campaign).await;
                            zeroed.remove(campaign);
                        } else if zeroed.insert(campaign.clone()) {
                            let label = campaign.as_str().to_owned();
                            metrics::gauge!("coupon_outbox_backlog", "campaign" => label.clone())
                                .set(0.0);
                            metrics::gauge!("coupon_outbox_oldest_seconds", "campaign" => label)
                                .set(0.0);
                        }
                    }
                }
            }
        }
        tokio::time::sleep(CAMPAIGN_REFRESH).await;
    }
}

async fn report_backlog<C>(outbox: &Outbox<C>, campaign: &CampaignId)
where
    C: ConnectionLike + Clone + Send + Sync,
{
    let label = campaign.as_str().to_owned();
    if let Ok(backlog) = outbox.backlog(campaign).await {
        metrics::gauge!("coupon_outbox_backlog", "campaign" => label.clone()).set(backlog as f64);
    }
    if let Ok(oldest) = outbox.oldest(campaign).await {
        let waited = oldest.map_or(Duration::ZERO, |at| {
            SystemTime::now().duration_since(at).unwrap_or_default()
        });
        metrics::gauge!("coupon_outbox_oldest_seconds", "campaign" => label)
            .set(waited.as_secs_f64());
    }
}

/// Awaits the `pending` deliveries in order and writes each one's error, if any, to its place
/// in `results`.
async fn settle(pending: &mut Vec<(usize, DeliveryFuture)>, results: &mut [Option<KafkaError>]) {
    for (i, delivery) in pending.drain(..) {
        results[i] = match delivery.await {
            Ok(Ok(_)) => None,
            Ok(Err((err, _))) => Some(err),
            Err(_canceled) => Some(KafkaError::Canceled),
        };
    }
}

/// The records of the outbox entries whose records were all delivered, to acknowledge.
///
/// The records of one stream entry (the admissions of one script call) share its id; an entry
/// with any record `failed` stays pending and is delivered again as a whole (the consumers are
/// idempotent).
fn delivered<'a>(
    records: &'a [OutboxRecord],
    failed: &'a HashSet<String>,
) -> impl Iterator<Item = &'a OutboxRecord> {
    records
        .iter()
        .filter(move |record| !failed.contains(&record.entry))
}

/// How often a relay holds the entries it delivers ([`Outbox::hold`]): three times within
/// `claim_idle`, so that one missed or late hold does not yet let the entries be taken over.
fn hold_every(claim_idle: Duration) -> Duration {
    (claim_idle / 3).max(Duration::from_millis(10))
}

/// What one round of sends came to.
#[derive(Default)]
struct Sent {
    /// Records read (new or taken over).
    read: usize,
    /// Ids of the outbox entries with a record the broker did not confirm: they stay pending.
    failed_entries: HashSet<String>,
    /// Records the broker confirmed.
    delivered: usize,
    /// Records it did not; their entries stay in the outbox.
    failed: usize,
    /// Whether the broker refused this producer's identity, so that it must be replaced.
    producer_rejected: bool,
}

/// Broker answers that reject the producer's id or epoch: no later message of this producer
/// instance can succeed.
const PRODUCER_REJECTED: [RDKafkaErrorCode; 5] = [
    RDKafkaErrorCode::ProducerFenced,
    RDKafkaErrorCode::InvalidProducerEpoch,
    RDKafkaErrorCode::UnknownProducerId,
    RDKafkaErrorCode::OutOfOrderSequenceNumber,
    RDKafkaErrorCode::InvalidProducerIdMapping,
];

impl RelayConfig {
    /// Checks the producer configuration (brokers, extra librdkafka properties) as the relay
    /// will use it, without reaching any broker: for a service that refuses a bad configuration
    /// at start but starts while the broker is away.
    ///
    /// # Errors
    ///
    /// [`Error::Config`]: a producer configuration librdkafka refuses.
    pub fn check(&self) -> Result<(), Error> {
        producer(self).map(drop)
    }
}

/// How long the producer waits for more records before it sends a batch (`linger.ms`): the
/// time a record may wait for the next, at most, before its produce request leaves.
const LINGER_MS: &str = "20";
/// Most records in one produce request (`batch.num.messages`); `batch.size` (1 MB) still bounds
/// its bytes.
const BATCH_MESSAGES: &str = "100000";

/// What the relay's idempotent producer is created from.
///
/// Its batching defaults ([`LINGER_MS`], [`BATCH_MESSAGES`]), which the configured properties
/// may override (under either of librdkafka's names), make few large produce requests;
/// [`Handover`] keeps a round's records within what leaves in them.
fn producer_config(config: &RelayConfig) -> ClientConfig {
    let configured = |names: &[&str]| {
        config
            .kafka_properties
            .iter()
            .any(|(name, _)| names.contains(&name.as_str()))
    };
    let mut client = ClientConfig::new();
    if !configured(&["linger.ms", "queue.buffering.max.ms"]) {
        client.set("linger.ms", LINGER_MS);
    }
    if !configured(&["batch.num.messages"]) {
        client.set("batch.num.messages", BATCH_MESSAGES);
    }
    client_config(&mut client, &config.brokers, &config.kafka_properties)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            config.message_timeout.as_millis().to_string(),
        );
    client
}

/// The relay's idempotent producer.
fn producer(config: &RelayConfig) -> Result<FutureProducer, Error> {
    producer_config(config).create().map_err(Error::Config)
}

/// librdkafka's default `batch.size`: the most bytes of records in one produce request.
const BATCH_BYTES: usize = 1_000_000;

/// How much of a round the relay hands to the producer before it awaits what it handed over.
///
/// An idempotent librdkafka producer has one produce request per partition in flight at a time
/// (it counts the records in flight against its limit of five requests). A record handed over
/// after that request left waits for its answer, and once the record's linger has passed,
/// librdkafka's broker thread polls its socket without pause until the broker answers
/// (`rd_kafka_msgq_allow_wakeup_at`, then `rd_kafka_toppar_producer_serve`): on a loaded machine,
/// where handing over a round of 15,000 records took longer than the linger, that polling was a
/// quarter to two fifths of coupon-http's CPU per admission (BENCHMARKS.md, "The relay's
/// handovers"). So a handover ends when half the linger has passed since its first record,
/// or when its records hold as many bytes as one request of one partition (`batch.size`); the
/// relay then awaits their delivery before it hands over the rest of the round. On a quick
/// machine a round of the default 500 entries is usually one handover.
#[derive(Clone, Copy, Debug)]
struct Handover {
    /// Half the producer's linger; none when the linger is 0, where records leave at once.
    window: Option<Duration>,
    /// The producer's `batch.size`.
    bytes: usize,
}

impl Handover {
    /// The handover for the producer `client` creates (its linger and batch size as
    /// configured, librdkafka's defaults where unset).
    fn of(client: &ClientConfig) -> Self {
        let number = |key| client.get(key).and_then(|v| v.parse::<f64>().ok());
        let linger_ms = number("queue.buffering.max.ms")
            .or_else(|| number("linger.ms"))
            .unwrap_or(5.0);
        Self {
            window: Duration::try_from_secs_f64(linger_ms / 2e3)
                .ok()
                .filter(|window| !window.is_zero()),
            bytes: number("batch.size").map_or(BATCH_BYTES, |bytes| bytes as usize),
        }
    }

    /// Whether a handover begun `since`, of records holding `bytes`, should be awaited before
    /// more records are handed over.
    fn is_full(&self, since: Instant, bytes: usize) -> bool {
        bytes >= self.bytes || self.window.is_some_and(|window| since.elapsed() >= window)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use coupon_gate::{EventKind, UserId};

    use super::*;

    #[test]
    fn an_entry_is_acknowledged_only_when_all_its_records_were_delivered() {
        let record = |id: &str, user: u64| OutboxRecord {
            entry: id.into(),
            kind: EventKind::Admitted,
            campaign: CampaignId::new("spring-sale").unwrap(),
            user: UserId::from_number(user).unwrap(),
            seq: u32::try_from(user).unwrap(),
            at: UNIX_EPOCH + Duration::from_millis(1),
        };
        let records = [
            record("1-0", 1),
            record("1-0", 2),
            record("2-0", 3),
            record("2-0", 4),
            record("2-0", 5),
            record("3-0", 6),
        ];
        let entries = |failed: &[&str]| {
            let failed = failed.iter().map(|id| (*id).to_owned()).collect();
            delivered(&records, &failed)
                .map(|r| (r.entry.clone(), r.seq))
                .collect::<Vec<_>>()
        };
        assert_eq!(entries(&[]).len(), 6);
        assert_eq!(
            entries(&["2-0"]),
            [("1-0".into(), 1), ("1-0".into(), 2), ("3-0".into(), 6)]
        );
    }

    #[test]
    fn a_handover_lasts_half_the_producers_linger_and_holds_one_request() {
        let handover = |properties: &[(&str, &str)]| {
            let config = RelayConfig {
                kafka_properties: properties
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..RelayConfig::default()
            };
            let handover = Handover::of(&producer_config(&config));
            (handover.window, handover.bytes)
        };
        let ms = |ms| Some(Duration::from_millis(ms));
        assert_eq!(handover(&[]), (ms(10), 1_000_000));
        assert_eq!(handover(&[("linger.ms", "50")]), (ms(25), 1_000_000));
        assert_eq!(
            handover(&[("queue.buffering.max.ms", "8")]),
            (ms(4), 1_000_000)
        );
        assert_eq!(
            handover(&[("linger.ms", "0"), ("batch.size", "65536")]),
            (None, 65_536)
        );

        let quick = Handover {
            window: ms(10),
            bytes: 1000,
        };
        assert!(!quick.is_full(Instant::now(), 999));
        assert!(quick.is_full(Instant::now(), 1000));
        let long_ago = Instant::now() - Duration::from_millis(10);
        assert!(quick.is_full(long_ago, 0));
        let at_once = Handover {
            window: None,
            bytes: 1000,
        };
        assert!(!at_once.is_full(long_ago, 999));
    }
}
