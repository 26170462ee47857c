//! Closing connections whose client is too slow, without a timer per request.
//!
//! A connection's clock starts when the server begins waiting for a request (on connecting, and
//! each time an answer is ready), and the next answer must be ready within the limit. So a client
//! that connects and sends nothing, dribbles a request's head or body, stops reading answers, or
//! leaves a keep-alive connection idle, is disconnected once the limit has passed; a client that
//! keeps sending requests keeps its connection however long it lasts.
//!
//! An answer only stores a timestamp. One timer per connection sleeps until the earliest moment
//! the limit could pass, and sleeps again if an answer moved the clock meanwhile: a busy
//! connection costs about one timer wake per limit, not an armed and cancelled timer per request
//! (which hyper's own header timeout costs, several percent of a busy server's time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The clock of one connection.
pub(crate) struct Watchdog {
    /// When the connection was accepted; the clock is kept as milliseconds since then.
    origin: Instant,
    /// How long an answer may take, counted from when the server began waiting for the request.
    limit: Duration,
    /// Milliseconds after `origin` at which the server began waiting for the current request.
    waiting_since: AtomicU64,
}

impl Watchdog {
    /// A clock for a connection accepted now.
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            origin: Instant::now(),
            limit,
            waiting_since: AtomicU64::new(0),
        }
    }

    /// An answer is ready: the wait for the next request starts now.
    pub(crate) fn answered(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.waiting_since.store(now, Ordering::Relaxed);
    }

    /// Resolves once the limit has passed without an answer.
    pub(crate) async fn expired(&self) {
        loop {
            let since = Duration::from_millis(self.waiting_since.load(Ordering::Relaxed));
            let deadline = self.origin + since + self.limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_push_the_deadline_and_silence_reaches_it() {
        let limit = Duration::from_millis(100);
        let dog = Watchdog::new(limit);
        let mut last_answer = Instant::now();
        tokio::select! {
            () = dog.expired() => {}
            () = async {
                // Five answers 40 ms apart: 200 ms in all, twice the limit.
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    dog.answered();
                    last_answer = Instant::now();
                }
                std::future::pending::<()>().await;
            } => unreachable!(),
        }
        assert!(
            last_answer.elapsed() >= limit - Duration::from_millis(1),
            "expired {:?} after the last answer",
            last_answer.elapsed()
        );
        assert!(
            dog.origin.elapsed() >= limit * 2,
            "never before the answers stopped"
        );
    }
}
