//! Polling a connection again at once when it wakes itself, instead of through the scheduler.
//!
//! hyper's HTTP/1 dispatcher hands a request body to the handler through a channel, and the
//! handler, polled by that same dispatcher, wakes the dispatcher's task as it takes the body
//! out. So every request with a body wakes its own connection task while it runs. Tokio treats
//! such a wake as a yield: it queues the task again and unparks an idle worker to share the
//! work, which on a loaded two-core machine is a futex wake, a context switch and a worker
//! that searches, usually in vain, for every request. [`PollAgain`] hands the connection a
//! waker of its own: a wake that arrives while the connection is being polled only marks it,
//! and the connection is polled again straight away; a wake at any other time goes to the
//! task's waker as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// How many times in a row a future that keeps waking itself is polled before the task yields
/// to the scheduler, so that it cannot hold a worker for ever (hyper yields this way after 16
/// pipelined requests, for fairness).
const MAX_POLLS: usize = 8;

/// `F`, polled again at once when it wakes itself during a poll.
pub(crate) struct PollAgain<F> {
    inner: F,
    flag: Arc<Flag>,
    waker: Waker,
}

/// The waker handed to the inner future.
struct Flag {
    /// Whether the inner future is being polled right now.
    polling: AtomicBool,
    /// Whether a wake arrived since the current poll began.
    woken: AtomicBool,
    /// The task's own waker, for wakes that arrive between polls.
    task: AtomicWaker,
}

impl<F> PollAgain<F> {
    pub(crate) fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Self { inner, flag, waker }
    }
}

impl<F: Future + Unpin> Future for PollAgain<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.flag.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..MAX_POLLS {
            this.flag.woken.store(false, Ordering::SeqCst);
            this.flag.polling.store(true, Ordering::SeqCst);
            let polled = Pin::new(&mut this.inner).poll(&mut inner_cx);
            this.flag.polling.store(false, Ordering::SeqCst);
            if polled.is_ready() {
                return polled;
            }
            // A wake from another thread after `polling` was cleared went to the task as
            // well; polling again here as well is harmless.
            if !this.flag.woken.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
            // Out of Tokio's budget, every resource answers `Pending` and wakes the task at
            // once: only the scheduler renews the budget.
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Marked first, then checked: either the poller sees the mark after its poll, or this
        // sees that no poll is running and wakes the task (both, at worst: one spare poll).
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A future that wakes itself `wakes` times during its polls, then is ready.
    struct SelfWaking {
        wakes: usize,
        polls: usize,
    }

    impl Future for SelfWaking {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.wakes == 0 {
                return Poll::Ready(self.polls);
            }
            self.wakes -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_during_the_poll_polls_again_without_waking_the_task() {
        let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let mut future = PollAgain::new(SelfWaking { wakes: 3, polls: 0 });
        let polled = Pin::new(&mut future).poll(&mut Context::from_waker(&task));
        assert_eq!(polled, Poll::Ready(4));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_to_the_task() {
        let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let mut future = PollAgain::new(SelfWaking {
            wakes: MAX_POLLS + 2,
            polls: 0,
        });
        let mut cx = Context::from_waker(&task);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert_eq!(future.inner.polls, MAX_POLLS);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the task is woken to poll again"
        );
        assert_eq!(
            Pin::new(&mut future).poll(&mut cx),
            Poll::Ready(MAX_POLLS + 3)
        );
    }

    #[tokio::test]
    async fn out_of_budget_it_yields_instead_of_polling_again() {
        let mut future = PollAgain::new(SelfWaking { wakes: 3, polls: 0 });
        std::future::poll_fn(|cx| {
            while tokio::task::coop::has_budget_remaining() {
                let _ = std::pin::pin!(tokio::task::coop::consume_budget()).poll(cx);
            }
            assert!(Pin::new(&mut future).poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        assert_eq!(
            future.inner.polls, 1,
            "one poll, then back to the scheduler"
        );
        assert_eq!(future.await, 4);
    }

    #[test]
    fn a_wake_between_polls_wakes_the_task() {
        let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let mut future = PollAgain::new(std::future::pending::<()>());
        assert!(
            Pin::new(&mut future)
                .poll(&mut Context::from_waker(&task))
                .is_pending()
        );
        let inner_waker = future.waker.clone();
        std::thread::spawn(move || inner_waker.wake())
            .join()
            .expect("the waking thread");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
