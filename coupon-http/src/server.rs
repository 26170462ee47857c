//! The accept loop: the connection cap, each connection served with its watchdog, and graceful
//! shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::Config;
use crate::api;
use crate::poll_again::PollAgain;
use crate::state::AppState;
use crate::watchdog::Watchdog;

/// What the requests of one connection share. Each request holds a clone of this `Arc`, which
/// only that connection's worker touches, rather than of the state's, whose count every worker
/// would bounce between cores on every request.
struct ConnectionScope {
    state: Arc<AppState>,
    /// Closes the connection when its client is too slow.
    watchdog: Watchdog,
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, lets requests
/// in flight finish for up to `config.shutdown_grace`, and returns.
///
/// At most `config.max_connections` connections are served at once; further clients wait in
/// the listen backlog until one closes. A connection whose next answer is not ready within
/// `config.request_timeout` of the server starting to wait for its request (silent, dribbling
/// or idle clients) is closed.
pub(crate) async fn run(
    listener: TcpListener,
    state: AppState,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) {
    let (request_timeout, grace) = (config.request_timeout, config.shutdown_grace);
    // Shared by every connection: cloning the state itself (a Redis client with its connection
    // info, the connection handles) would allocate.
    let state = Arc::new(state);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let scope = Arc::new(ConnectionScope {
            state: state.clone(),
            watchdog: Watchdog::new(request_timeout),
        });
        let watchdog = scope.clone();
        let service = service_fn(move |req| {
            let scope = scope.clone();
            async move {
                let answer = api::handle(&scope.state, req).await;
                scope.watchdog.answered();
                answer
            }
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                ended = PollAgain::new(conn.as_mut()) => if let Err(err) = ended {
                    debug!(cause = %err, %peer, "connection ended with an error");
                },
                () = watchdog.watchdog.expired() => {
                    debug!(%peer, ?request_timeout, "closing a connection that sent no complete request in time");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    info!("shutting down: no new connections; waiting for requests in flight");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            ?grace,
            "requests still in flight after the grace period; closing them"
        );
    }
}
