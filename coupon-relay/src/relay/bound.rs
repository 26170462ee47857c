//! The relay's side of its key prefix's destination (see [`coupon_gate::Destination`]): the
//! first relay on a prefix records its topic and broker cluster; a relay configured otherwise
//! delivers nothing and is not running (so its service is unready), says why, and looks again
//! every second, so that it starts once its topic or the binding is put right. A relay also
//! looks every second while it runs, and stops delivering when an operator moved the binding
//! elsewhere.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use coupon_gate::Destination;
use futures_util::future::Fuse;
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;
use redis::aio::ConnectionLike;
use tracing::{error, warn};

use super::Relay;

/// How often a relay looks at the binding, running or waiting.
pub(super) const BINDING_CHECK: Duration = Duration::from_secs(1);
/// How long a relay waits for the broker to tell its cluster id.
const CLUSTER_ID_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a relay that is bound elsewhere says so again.
const REPEAT: Duration = Duration::from_secs(30);

impl<C> Relay<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// This relay's destination: its topic, and the id of the cluster its producer reaches
    /// (`None` when the broker does not tell within [`CLUSTER_ID_TIMEOUT`]).
    pub(super) async fn destination(&self) -> Destination {
        let producer = self.producer.clone();
        let cluster = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_cluster_id(Timeout::After(CLUSTER_ID_TIMEOUT))
        })
        .await
        .ok()
        .flatten();
        Destination {
            topic: self.config.topic.clone(),
            cluster,
        }
    }

    /// Waits until the prefix's outboxes are bound to `ours` (binding them if nobody did);
    /// false once `shutdown` resolves first.
    pub(super) async fn wait_bound(
        &self,
        ours: &Destination,
        mut shutdown: Pin<&mut Fuse<impl Future<Output = ()>>>,
    ) -> bool {
        let mut said: Option<Instant> = None;
        loop {
            match self.outbox.bind(ours).await {
                Ok(bound) if bound.admits(ours) => {
                    metrics::gauge!("coupon_relay_bound_elsewhere").set(0.0);
                    self.running.set_bound_elsewhere(false);
                    return true;
                }
                Ok(bound) => {
                    metrics::gauge!("coupon_relay_bound_elsewhere").set(1.0);
                    self.running.set_bound_elsewhere(true);
                    if said.is_none_or(|at| at.elapsed() >= REPEAT) {
                        said = Some(Instant::now());
                        error!(
                            bound = %bound,
                            ours = %ours,
                            "the key prefix's outboxes are bound to another destination: this \
                             relay delivers nothing and its service stays unready, until \
                             COUPON_TOPIC (and KAFKA_BROKERS) name the bound destination or an \
                             operator moves the binding (`coupon-admin destination move`)"
                        );
                    }
                }
                Err(err) => warn!(
                    cause = %err,
                    "relay cannot read its key prefix's destination; retrying"
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(BINDING_CHECK) => {}
                () = shutdown.as_mut() => return false,
            }
        }
    }

    /// Whether the prefix's outboxes are still bound to `ours`; true when Redis cannot tell
    /// (the rounds then fail and say so on their own).
    pub(super) async fn still_bound(&self, ours: &Destination) -> bool {
        match self.outbox.destination().await {
            Ok(Some(bound)) => bound.admits(ours),
            // Removed (by hand): bind it again.
            Ok(None) => self
                .outbox
                .bind(ours)
                .await
                .map_or(true, |bound| bound.admits(ours)),
            Err(_) => true,
        }
    }
}
