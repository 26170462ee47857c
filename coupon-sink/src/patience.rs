//! Waiting for a dependency that is not there yet (the database, the broker, the topic): tried
//! again after 100 ms, then twice as long each time, at most a second, each failure logged with
//! what is waited for, until it is there or the sink is stopped.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

/// Runs `attempt` until it gives `Ok`; its `Err` names what is waited for (logged as
/// `waiting for <it>`). `None` once `stop` turns true first.
pub(crate) async fn patiently<T, F>(
    mut stop: watch::Receiver<bool>,
    mut attempt: impl FnMut() -> F,
) -> Option<T>
where
    F: Future<Output = Result<T, String>>,
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
        warn!(retry_in = ?pause, "waiting for {waiting}");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => return None,
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
