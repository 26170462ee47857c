//! Loopback ports, a TCP proxy a test can cut to make a server unreachable without stopping
//! it, and child processes that never outlive their test.

use std::net::TcpListener as StdListener;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A TCP proxy on a free loopback port. While cut, it closes every connection through it and
/// refuses new ones, as an unreachable broker would look to its clients.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    cut: watch::Sender<bool>,
    /// Connections refused while cut: proof that a client tried to get through.
    refused: Arc<AtomicUsize>,
}

impl Proxy {
    /// Starts forwarding a free port to `upstream` on loopback.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = watch::channel(false);
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *cut_rx.borrow() {
                    counter.fetch_add(1, Ordering::Relaxed);
                    continue; // dropping the stream closes it
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut, refused }
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// How many connections were refused while cut.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// A child process that is killed (SIGKILL) when dropped, also when a test fails early.
pub struct Process(
    /// The child.
    pub Child,
);

impl Process {
    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
