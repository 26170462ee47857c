//! Waiting for a dependency that is not there yet (Redis, the database, the broker, the topic):
//! tried again after 100 ms, then twice as long each time, at most a second, so that a
//! dependency that appears is used within a second; each failure is logged with what is waited
//! for, until it is there or the process is stopped.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

/// What an attempt of [`patiently`] is still waiting for, and why, if it knows.
#[derive(Debug)]
pub struct Waiting {
    what: String,
    cause: Option<String>,
}

impl Waiting {
    /// Waiting for `what` (e.g. `the database`), which failed with `cause`.
    pub fn on(what: impl Into<String>, cause: impl fmt::Display) -> Self {
        Self {
            what: what.into(),
            cause: Some(format!("{cause:#}")),
        }
    }

    /// Waiting for `what` (e.g. `topic t to be created`), which needs no cause.
    pub fn for_(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            cause: None,
        }
    }
}

/// Runs `attempt` until it gives `Ok`; each `Err` is logged as a warning, `waiting for <what>`
/// with its cause. `None` once `stop` turns true first.
pub async fn patiently<T, F>(
    mut stop: watch::Receiver<bool>,
    mut attempt: impl FnMut() -> F,
) -> Option<T>
where
    F: Future<Output = Result<T, Waiting>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        let waiting = tokio::select! {
            result = attempt() => match result {
                Ok(value) => return Some(value),
                Err(waiting) => waiting,
            },
            _ = stop.wait_for(|stop| *stop) => return None,
        };
        match waiting.cause {
            Some(cause) => warn!(cause, retry_in = ?pause, "waiting for {}", waiting.what),
            None => warn!(retry_in = ?pause, "waiting for {}", waiting.what),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => return None,
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
