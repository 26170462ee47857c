//! The accept loop: the connection caps, each connection served with its watchdog, and graceful
//! shutdown.
//!
//! Recorded through the [`metrics`] facade: `coupon_http_connections_open` (served now),
//! `coupon_http_connections_refused_total` (answered 429 for the per-address cap), and
//! `coupon_http_connections_closed_total{reason}` (`evicted` for a new client at the global cap,
//! `timeout` for a request not complete in time).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::Config;
use crate::api;
use crate::body::MAX_BODY;
use crate::connections::{Connections, Ticket};
use crate::poll_again::PollAgain;
use crate::state::{AppState, ConnectionScope};
use crate::stream::Stream;
use crate::watchdog::{Expiry, Watchdog};

/// The answer to a connection from an address that holds its share already, written before the
/// connection is closed.
fn too_many_connections() -> Vec<u8> {
    let body =
        r#"{"status":"rate_limited","message":"too many connections from this client address"}"#;
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How many finished handshakes a listener from [`listen`] holds for the acceptor (the kernel
/// caps it at `net.core.somaxconn`). A crowd arrives at once, and connections waiting for a slot
/// wait here: past the backlog, the kernel drops their SYNs and clients retry only after one,
/// three, seven seconds.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with a backlog of [`LISTEN_BACKLOG`] (`TcpListener::bind` gives 128).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long the acceptor at the cap waits for a slot before it looks for an idle connection to
/// evict again.
const EVICTION_WAIT: Duration = Duration::from_millis(50);

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, lets requests
/// in flight finish for up to `config.shutdown_grace`, and returns.
///
/// At most `config.max_connections` connections are served at once, and
/// `config.max_connections_per_address` from one client address (beyond it, a connection is
/// answered 429 and closed). When every slot is taken, the connection idle the longest is
/// closed for the new one; when none is idle, new clients wait in the listen backlog. A
/// connection whose next answer is not ready within `config.request_timeout` of the server
/// starting to wait for its request, or whose request head takes longer than
/// `config.header_timeout` from its first byte, is closed.
pub(crate) async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let connections = Connections::new(
        config.max_connections_per_address,
        config.trusted_proxies.clone(),
    );
    let server = Server::new(state, config);
    tokio::pin!(shutdown);
    loop {
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
        let Ok(ticket) = connections.admit(peer.ip()) else {
            debug!(%peer, "refusing a connection: its address holds its share");
            server.counters.refused.increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let permit = tokio::select! {
            permit = slot(&permits, &connections) => permit,
            () = &mut shutdown => break,
        };
        server.serve(stream, peer, (permit, ticket));
    }
    drop(listener);
    server.drain(config.shutdown_grace).await;
}

/// How every connection is served: the HTTP settings, the watchdog's limits, the graceful
/// shutdown that watches them all, and their counters.
struct Server {
    state: Arc<AppState>,
    http: http1::Builder,
    graceful: GracefulShutdown,
    counters: Counters,
    request_timeout: Duration,
    header_timeout: Duration,
    max_head_bytes: usize,
}

/// The connection metrics, registered once and cloned into each connection's task.
#[derive(Clone)]
struct Counters {
    open: metrics::Gauge,
    refused: metrics::Counter,
    evicted: metrics::Counter,
    timed_out: metrics::Counter,
}

impl Server {
    fn new(state: Arc<AppState>, config: &Config) -> Self {
        let mut http = http1::Builder::new();
        http.max_header_size(config.max_head_bytes)
            // The head, a body, and room to read the next request's start.
            .max_buf_size((config.max_head_bytes + MAX_BODY).max(8 * 1024));
        let closed = |reason: &'static str| metrics::counter!("coupon_http_connections_closed_total", "reason" => reason);
        Self {
            state,
            http,
            graceful: GracefulShutdown::new(),
            counters: Counters {
                open: metrics::gauge!("coupon_http_connections_open"),
                refused: metrics::counter!("coupon_http_connections_refused_total"),
                evicted: closed("evicted"),
                timed_out: closed("timeout"),
            },
            request_timeout: config.request_timeout,
            header_timeout: config.header_timeout,
            max_head_bytes: config.max_head_bytes,
        }
    }

    /// Serves one connection in a task of its own, which keeps `hold` (its slot and its
    /// address's share) until the connection ends or its watchdog closes it.
    fn serve(&self, stream: TcpStream, peer: SocketAddr, hold: (OwnedSemaphorePermit, Ticket)) {
        // The clock starts when the connection is served, not while it waited for a slot.
        let watchdog = Arc::new(Watchdog::new(self.request_timeout, self.header_timeout));
        hold.1.serving(watchdog.clone());
        let _ = stream.set_nodelay(true);
        let scope = Arc::new(ConnectionScope {
            state: self.state.clone(),
            watchdog: watchdog.clone(),
            peer,
        });
        let service = service_fn(move |req| {
            let scope = scope.clone();
            async move {
                scope.watchdog.head_complete();
                let answer = api::handle(&scope, req).await;
                scope.watchdog.answered();
                answer
            }
        });
        let io = Stream::new(stream, watchdog.clone(), self.max_head_bytes);
        let conn = self.http.serve_connection(TokioIo::new(io), service);
        let conn = self.graceful.watch(conn);
        let counters = self.counters.clone();
        counters.open.increment(1);
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                ended = PollAgain::new(conn.as_mut()) => if let Err(err) = ended {
                    debug!(cause = %err, %peer, "connection ended with an error");
                },
                expiry = watchdog.expired() => match expiry {
                    Expiry::Evicted => {
                        debug!(%peer, "closing an idle connection for a new client");
                        counters.evicted.increment(1);
                    }
                    expiry => {
                        debug!(%peer, ?expiry, "closing a connection that sent no complete request in time");
                        counters.timed_out.increment(1);
                    }
                },
            }
            counters.open.decrement(1);
            drop(hold);
        });
    }

    /// Waits up to `grace` for the requests in flight, then closes what is left.
    async fn drain(self, grace: Duration) {
        info!("shutting down: no new connections; waiting for requests in flight");
        if tokio::time::timeout(grace, self.graceful.shutdown())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "requests still in flight after the grace period; closing them"
            );
        }
    }
}

/// A connection slot: a free one, else the one of the connection idle the longest, once it has
/// closed; while every connection is busy, the first to come free or to fall idle.
async fn slot(permits: &Arc<Semaphore>, connections: &Connections) -> OwnedSemaphorePermit {
    loop {
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return permit;
        }
        // Evicted, the connection closes and gives its slot back within the wait; with none
        // idle, the wait ends when one closes, or passes and the connections are looked at
        // again (one may have fallen idle).
        connections.evict_longest_idle();
        if let Ok(Ok(permit)) =
            tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned()).await
        {
            return permit;
        }
    }
}

/// How long a refused connection may take to send its request's first bytes, and then to read
/// the answer and close.
const REFUSAL_WAIT: Duration = Duration::from_millis(200);

/// Answers a connection the server will not serve, and closes it. The answer goes out once the
/// client has sent something (or after [`REFUSAL_WAIT`]): an HTTP client that gets an answer
/// before it has written its request takes it for a broken connection, not for a 429. Then the
/// write side is shut and what else the client sends is read away for a moment, so that closing
/// with unread bytes does not reset the connection before the client has read the answer.
async fn refuse(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(REFUSAL_WAIT, stream.read(&mut buf)).await;
    let answer = too_many_connections();
    if let Ok(Ok(())) = tokio::time::timeout(REFUSAL_WAIT, stream.write_all(&answer)).await {
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(REFUSAL_WAIT, async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_json_answer() {
        let answer = too_many_connections();
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["status"], "rate_limited");
    }
}
