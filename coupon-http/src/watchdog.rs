//! Closing connections whose client is too slow, or that the server needs back, without a timer
//! per request.
//!
//! A connection's clock starts when the server begins waiting for a request (on connecting, and
//! each time an answer is ready). From then on:
//!
//! - the next answer must be ready within the request timeout, so a client that connects and
//!   sends nothing, dribbles a body, stops reading answers, or leaves a keep-alive connection
//!   idle, is disconnected once it has passed;
//! - once the first byte of a request has arrived, its head must be complete within the header
//!   timeout, so a client cannot hold a connection by sending a head slowly.
//!
//! A client that keeps sending requests keeps its connection however long it lasts. A connection
//! that waits for a request without having received a byte of it is idle, and the server may
//! close the one idle the longest when it needs a slot for a new client ([`Watchdog::evict`]).
//!
//! An answer and a byte only store a timestamp. One timer per connection sleeps until the
//! earliest moment a limit could pass, and sleeps again if the clock moved meanwhile: a busy
//! connection costs about one timer wake per header timeout, not an armed and cancelled timer
//! per request (which hyper's own header timeout costs, several percent of a busy server's
//! time).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Waiting for a request, nothing of it received yet.
const IDLE: u8 = 0;
/// Part of a request's head received.
const RECEIVING: u8 = 1;
/// The head is complete; the request is being read or answered.
const HANDLING: u8 = 2;

/// The clock of one connection.
pub(crate) struct Watchdog {
    /// When the connection was accepted; the clock is kept as milliseconds since then.
    origin: Instant,
    /// How long an answer may take, counted from when the server began waiting for the request.
    request_timeout: Duration,
    /// How long a request's head may take, counted from its first byte.
    header_timeout: Duration,
    /// Milliseconds after `origin` at which the server began waiting for the current request.
    waiting_since: AtomicU64,
    /// Milliseconds after `origin` at which the current request's first byte arrived.
    head_started: AtomicU64,
    /// `IDLE`, `RECEIVING` or `HANDLING`.
    phase: AtomicU8,
    /// Signalled when the server wants the connection back.
    evicted: Notify,
}

impl Watchdog {
    /// A clock for a connection accepted now.
    pub(crate) fn new(request_timeout: Duration, header_timeout: Duration) -> Self {
        Self {
            origin: Instant::now(),
            request_timeout,
            header_timeout,
            waiting_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            phase: AtomicU8::new(IDLE),
            evicted: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: the first of a request starts its header timeout.
    pub(crate) fn received(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.head_started.store(self.now(), Ordering::Relaxed);
            self.phase.store(RECEIVING, Ordering::Relaxed);
        }
    }

    /// A request's head is complete.
    pub(crate) fn head_complete(&self) {
        self.phase.store(HANDLING, Ordering::Relaxed);
    }

    /// An answer is ready: the wait for the next request starts now.
    pub(crate) fn answered(&self) {
        self.waiting_since.store(self.now(), Ordering::Relaxed);
        self.phase.store(IDLE, Ordering::Relaxed);
    }

    /// How long the connection has waited without receiving a byte; `None` when it is busy.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        (self.phase.load(Ordering::Relaxed) == IDLE).then(|| {
            let since = self.waiting_since.load(Ordering::Relaxed);
            Duration::from_millis(self.now().saturating_sub(since))
        })
    }

    /// Asks the connection to close, which it does if it is still idle (the server needs its
    /// slot).
    pub(crate) fn evict(&self) {
        self.evicted.notify_one();
    }

    /// Resolves once a limit has passed, or the connection was evicted; says which.
    pub(crate) async fn expired(&self) -> Expiry {
        loop {
            let since = self.waiting_since.load(Ordering::Relaxed);
            let request_deadline = since + millis(self.request_timeout);
            let deadline = match self.phase.load(Ordering::Relaxed) {
                HANDLING => request_deadline,
                RECEIVING => {
                    let head = self.head_started.load(Ordering::Relaxed);
                    request_deadline.min(head + millis(self.header_timeout))
                }
                // A byte may arrive at any moment and start the header timeout: look again
                // within one header timeout.
                _ => request_deadline.min(self.now() + millis(self.header_timeout)),
            };
            let now = self.now();
            if now >= deadline {
                return if now >= request_deadline {
                    Expiry::Request
                } else {
                    Expiry::Header
                };
            }
            let wake = self.origin + Duration::from_millis(deadline);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                // A request that began arriving meanwhile is served; the slot comes from
                // another connection.
                () = self.evicted.notified() => if self.idle_for().is_some() {
                    return Expiry::Evicted;
                },
            }
        }
    }
}

/// Why a connection's watchdog fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No answer within the request timeout.
    Request,
    /// A request's head was not complete within the header timeout of its first byte.
    Header,
    /// The server took the idle connection's slot for a new client.
    Evicted,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_push_the_deadline_and_silence_reaches_it() {
        let limit = Duration::from_millis(100);
        let dog = Watchdog::new(limit, limit);
        let mut last_answer = Instant::now();
        let expiry = tokio::select! {
            expiry = dog.expired() => expiry,
            () = async {
                // Five requests and answers 40 ms apart: 200 ms in all, twice the limit.
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    dog.received();
                    dog.head_complete();
                    dog.answered();
                    last_answer = Instant::now();
                }
                std::future::pending::<()>().await;
            } => unreachable!(),
        };
        assert_eq!(expiry, Expiry::Request);
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

    #[tokio::test]
    async fn a_head_must_be_complete_within_the_header_timeout_of_its_first_byte() {
        let dog = Watchdog::new(Duration::from_secs(10), Duration::from_millis(100));
        // Idle for longer than the header timeout: not a reason to close.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            dog.idle_for()
                .is_some_and(|idle| idle >= Duration::from_millis(150))
        );
        dog.received();
        assert_eq!(dog.idle_for(), None);
        let started = Instant::now();
        assert_eq!(dog.expired().await, Expiry::Header);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(99),
            "not before the header timeout: {took:?}"
        );
    }

    #[tokio::test]
    async fn an_evicted_connection_expires_at_once() {
        let dog = Watchdog::new(Duration::from_secs(10), Duration::from_secs(5));
        dog.evict();
        assert_eq!(dog.expired().await, Expiry::Evicted);
    }
}
