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
//! confirmation), `coupon_relay_producer_replacements_total`, `coupon_relay_bound_elsewhere` (1
//! while the key prefix is bound to another destination, see [`Outbox::bind`]), and once a second
//! `coupon_outbox_backlog{campaign}` (events of the campaign not yet confirmed by the broker,
//! read by a relay or not; see [`Outbox::backlog`]).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coupon_gate::{CampaignId, Destination, Gate, Outbox};
use futures_util::FutureExt;
use futures_util::future::Fuse;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;
use redis::aio::ConnectionLike;
use tracing::{error, info, warn};

mod bound;
mod delivery;

use crate::announcements::Announcements;
use crate::backlog::{Watched, report_backlogs};
use crate::config::CAMPAIGN_REFRESH;
use crate::producer::Handover;
use crate::refusals::Refusals;
use crate::topic::create_topic;
use crate::{Error, RelayConfig};

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

/// Whether a relay's loop runs, and whether it is refused; cheap to clone, for readiness checks.
#[derive(Clone, Debug, Default)]
pub struct Running(Arc<Status>);

#[derive(Debug, Default)]
struct Status {
    running: AtomicBool,
    /// Set while the key prefix's outboxes are bound to another destination.
    bound_elsewhere: AtomicBool,
}

impl Running {
    /// True from the relay's first round until it stops (or finds its prefix bound elsewhere).
    pub fn get(&self) -> bool {
        self.0.running.load(Ordering::Relaxed)
    }

    /// True while the relay delivers nothing because its key prefix's outboxes are bound to
    /// another destination (see [`Outbox::bind`]): a misconfiguration, which only an operator
    /// mends.
    pub fn bound_elsewhere(&self) -> bool {
        self.0.bound_elsewhere.load(Ordering::Relaxed)
    }

    fn set(&self, running: bool) {
        self.0.running.store(running, Ordering::Relaxed);
    }

    fn set_bound_elsewhere(&self, elsewhere: bool) {
        self.0.bound_elsewhere.store(elsewhere, Ordering::Relaxed);
    }
}

/// A relay over one gate's outboxes and one producer.
pub struct Relay<C> {
    /// The campaigns, whose outboxes are read.
    gate: Gate<C>,
    /// Where the outboxes are read and acknowledged.
    outbox: Outbox<C>,
    /// The idempotent producer; shared by every send of a round.
    producer: FutureProducer<Refusals>,
    /// The brokers' refusals of the producer's credentials or TLS.
    refusals: Refusals,
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
        let client = config.producer_config();
        let refusals = Refusals::default();
        let producer = config.producer(&refusals)?;
        Ok(Self {
            gate: gate.clone(),
            outbox: gate.outbox(),
            producer,
            refusals,
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
    /// The broker is unreachable or refuses the topic; [`Error::Refused`] as soon as the
    /// brokers refuse the relay's producer (its SASL credentials or its TLS handshake).
    pub async fn ensure_topic(&self) -> Result<(), Error> {
        let refusals = &self.refusals;
        let before = refusals.count();
        tokio::select! {
            created = create_topic(
                &self.config.brokers,
                &self.config.kafka_properties,
                &self.config.topic,
                self.config.partitions,
                self.config.replication,
            ) => created,
            reason = refusals.after(before) => Err(Error::Refused {
                brokers: self.config.brokers.clone(),
                reason,
            }),
        }
    }

    /// A handle that tells whether this relay's loop runs.
    pub fn running(&self) -> Running {
        self.running.clone()
    }

    /// Runs rounds until `shutdown` resolves, then finishes the round in progress, flushes the
    /// producer and returns. Delivers only while the key prefix's outboxes are bound to this
    /// relay's topic (see [`Outbox::bind`]): bound elsewhere, it waits and is not running.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let shutdown = shutdown.fuse();
        tokio::pin!(shutdown);
        for reason in ["delivery", "redis"] {
            metrics::counter!("coupon_relay_failures_total", "reason" => reason).increment(0);
        }
        metrics::counter!("coupon_relay_delivered_total").increment(0);
        metrics::counter!("coupon_relay_producer_replacements_total").increment(0);
        let ours = self.destination().await;
        // Beside the rounds, which may wait on the broker for as long as a message may take.
        let watched = Watched::default();
        let backlogs = report_backlogs(
            self.gate.clone(),
            self.outbox.clone(),
            watched.clone(),
            self.announcements.clone(),
        );
        tokio::pin!(backlogs);
        loop {
            let bound = tokio::select! {
                bound = self.wait_bound(&ours, shutdown.as_mut()) => bound,
                never = &mut backlogs => match never {},
            };
            if !bound {
                break;
            }
            self.running.set(true);
            info!(destination = %ours, consumer = %self.config.consumer, "relay started");
            let ended = tokio::select! {
                ended = self.rounds(shutdown.as_mut(), &watched, &ours) => ended,
                never = &mut backlogs => match never {},
            };
            self.running.set(false);
            match ended {
                Ended::Shutdown => break,
                Ended::BoundElsewhere => {
                    warn!(ours = %ours, "the key prefix's outboxes were moved to another destination; the relay stops delivering");
                }
            }
        }
        if let Err(err) = self
            .producer
            .flush(Timeout::After(self.config.message_timeout))
        {
            warn!(cause = %err, "relay could not flush the producer on shutdown");
        }
        info!("relay stopped");
    }

    /// Rounds until `shutdown` resolves, or the prefix's outboxes are bound to a destination
    /// other than `ours`: over the campaigns [`Relay::choose`] gives, resting while nothing
    /// moves.
    async fn rounds(
        &mut self,
        mut shutdown: Pin<&mut Fuse<impl Future<Output = ()>>>,
        watched: &Watched,
        ours: &Destination,
    ) -> Ended {
        let mut targets = Targets::default();
        // Claim at once on start, to pick up what a crashed predecessor left behind.
        let mut next_claim = Instant::now();
        let mut next_binding_check = Instant::now() + bound::BINDING_CHECK;
        while shutdown.as_mut().now_or_never().is_none() {
            if Instant::now() >= next_binding_check {
                next_binding_check = Instant::now() + bound::BINDING_CHECK;
                if !self.still_bound(ours).await {
                    return Ended::BoundElsewhere;
                }
            }
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
            let pause = pause.min(next_binding_check.saturating_duration_since(Instant::now()));
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
        Ended::Shutdown
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
        match self.config.producer(&self.refusals) {
            Ok(fresh) => {
                self.producer = fresh;
                metrics::counter!("coupon_relay_producer_replacements_total").increment(1);
            }
            Err(err) => {
                error!(cause = %err, "cannot create a new Kafka producer; retrying next round")
            }
        }
    }
}

/// Why [`Relay::rounds`] ended.
enum Ended {
    Shutdown,
    BoundElsewhere,
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
