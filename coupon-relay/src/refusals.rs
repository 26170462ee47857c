//! The relay's producer's context: it logs librdkafka's errors as the default context does, and
//! counts the ones that say the brokers refused the client (SASL authentication, the TLS
//! handshake), which would otherwise show only as requests that time out. The relay's start
//! ([`Relay::ensure_topic`](crate::Relay::ensure_topic)) fails at once with
//! [`Error::Refused`](crate::Error::Refused) on one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::Notify;

/// Refusals the producers of one relay have seen: how many, and what the last one said. Cheap
/// to clone; a replaced producer is given the same.
#[derive(Clone, Default)]
pub(crate) struct Refusals(Arc<Seen>);

#[derive(Default)]
struct Seen {
    count: AtomicU64,
    last: Mutex<String>,
    notify: Notify,
}

impl ClientContext for Refusals {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        ) {
            *self.0.last.lock().unwrap_or_else(PoisonError::into_inner) = reason.to_owned();
            self.0.count.fetch_add(1, Ordering::Relaxed);
            self.0.notify.notify_waiters();
        }
        DefaultClientContext.error(error, reason);
    }
}

impl Refusals {
    /// How many refusals so far, to wait for the next with [`Refusals::after`].
    pub(crate) fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// What the last refusal says, once there have been more than `count`.
    pub(crate) async fn after(&self, count: u64) -> String {
        loop {
            let seen = self.0.notify.notified();
            if self.count() > count {
                return self
                    .0
                    .last
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
            }
            seen.await;
        }
    }
}
