//! Coalescing: concurrent applications for one campaign go to Redis together, as one
//! [`Gate::apply_many`] call, so that Redis pays the script's fixed cost once per batch
//! instead of once per user.
//!
//! Each campaign with traffic has a queue and a task. Woken by an application, the task lets the
//! runtime run once (or waits [`BatchConfig::window`], when one is set) so that applications
//! already on their way join, then takes whatever is queued (up to [`BatchConfig::max_batch`])
//! and sends the batch; while it is in flight the next one gathers, so batches grow with the
//! load by themselves. One batch per campaign is in flight at a time, which keeps arrival order
//! across batches as well as within them. After [`BatchConfig::idle`] without traffic the task
//! ends.
//!
//! Outcomes are exactly those of one [`Gate::apply`] per user in queue order: the script decides
//! a batch's users in order, as if each had called alone.
//!
//! Each batch's size is recorded in the histogram `coupon_gate_batch_size` through the
//! [`metrics`] facade (nothing is recorded until the process installs a recorder).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionLike;
use tokio::sync::{mpsc, oneshot};

use crate::outbox::ENTRY_RECORDS;
use crate::{CampaignId, Error, Gate, Outcome, UserId};

/// How applications are coalesced; [`BatchConfig::default`] suits an HTTP server.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most users in one script call. 1 turns coalescing off (one call per application).
    pub max_batch: usize,
    /// How long a batch that is not full waits for more applications before it is sent. Zero
    /// (the default) sets no timer: the batch takes what is queued after one turn of the
    /// runtime, and batches grow by themselves while the previous one is in flight, which costs
    /// an application no added latency. (Tokio's timers have millisecond granularity: a shorter
    /// window still waits up to about a millisecond.)
    pub window: Duration,
    /// A campaign's task ends after this long without applications.
    pub idle: Duration,
}

impl BatchConfig {
    /// Default of [`BatchConfig::max_batch`].
    pub const DEFAULT_MAX_BATCH: usize = ENTRY_RECORDS;
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: Self::DEFAULT_MAX_BATCH,
            window: Duration::ZERO,
            idle: Duration::from_secs(60),
        }
    }
}

type Reply = oneshot::Sender<Result<Outcome, Error>>;
/// One application waiting in a campaign's queue.
type Job = (UserId, Reply);

/// A [`Gate`] whose applications are coalesced per campaign. Cheap to clone; clones share the
/// queues. Needs a Tokio runtime.
#[derive(Clone)]
pub struct Batcher<C> {
    gate: Gate<C>,
    config: Arc<BatchConfig>,
    /// The queue of every campaign with a running task.
    queues: Arc<Mutex<HashMap<CampaignId, mpsc::UnboundedSender<Job>>>>,
}

impl<C> Batcher<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Coalesces the applications made through it to `gate`.
    pub fn new(gate: Gate<C>, config: BatchConfig) -> Self {
        Self {
            gate,
            config: Arc::new(BatchConfig {
                max_batch: config.max_batch.max(1),
                ..config
            }),
            queues: Arc::default(),
        }
    }

    /// The gate underneath, for everything but applications.
    pub fn gate(&self) -> &Gate<C> {
        &self.gate
    }

    /// Applies as [`Gate::apply`] does, in one script call with the other applications to
    /// `campaign` queued at the same time.
    ///
    /// # Errors
    ///
    /// As for [`Gate::apply`]; when a batch's call fails, every application in it gets the
    /// error (and, as always, may or may not have been decided).
    /// The user is taken by value, as it waits in the campaign's queue.
    pub async fn apply(&self, campaign: &CampaignId, user: UserId) -> Result<Outcome, Error> {
        if self.config.max_batch == 1 {
            return self.gate.apply(campaign, &user).await;
        }
        let (reply, answer) = oneshot::channel();
        let mut job = (user, reply);
        loop {
            let queue = self.queue(campaign);
            match queue.send(job) {
                Ok(()) => break,
                // The task ended for idleness between the lookup and the send: start another.
                Err(mpsc::error::SendError(back)) => job = back,
            }
        }
        answer.await.unwrap_or_else(|_| Err(Error::BatchEnded))
    }

    fn queue(&self, campaign: &CampaignId) -> mpsc::UnboundedSender<Job> {
        let mut queues = self.queues.lock().expect("queues lock");
        if let Some(queue) = queues.get(campaign).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (queue, jobs) = mpsc::unbounded_channel();
        queues.insert(campaign.clone(), queue.clone());
        tokio::spawn(drain(self.clone(), campaign.clone(), jobs));
        queue
    }
}

/// The task of one campaign: batches from its queue, one in flight while the next gathers.
async fn drain<C>(batcher: Batcher<C>, campaign: CampaignId, mut jobs: mpsc::UnboundedReceiver<Job>)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let config = batcher.config.clone();
    loop {
        let first = match tokio::time::timeout(config.idle, jobs.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(_) => {
                // Idle: leave the map, then finish whatever slipped in before the removal.
                batcher
                    .queues
                    .lock()
                    .expect("queues lock")
                    .remove(&campaign);
                jobs.close();
                match jobs.recv().await {
                    Some(job) => job,
                    None => return,
                }
            }
        };
        let mut batch = vec![first];
        if config.window.is_zero() {
            // One turn of the runtime before collecting: the applications that other tasks of
            // this worker are about to queue (their requests already read, or readable) join
            // this batch instead of waiting for the next. Fewer, larger batches cost Redis and
            // the workers less per application; on an idle runtime the turn takes microseconds.
            tokio::task::yield_now().await;
        } else {
            let deadline = tokio::time::Instant::now() + config.window;
            while batch.len() < config.max_batch {
                match tokio::time::timeout_at(deadline, jobs.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        while batch.len() < config.max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("coupon_gate_batch_size").record(batch.len() as f64);
        let (users, replies): (Vec<UserId>, Vec<Reply>) = batch.into_iter().unzip();
        match batcher.gate.apply_many(&campaign, &users).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
