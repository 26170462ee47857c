//! `hello`: the reference for the HTTP benchmarks, a hyper 1.x hello-world server built like
//! `coupon-http` (same runtime, same hyper settings, keep-alive), answering every request with a
//! small JSON body and nothing else. `scripts/bench` measures `coupon-http` against it.
//!
//! Usage: `hello [ADDR]` (default 127.0.0.1:8081).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:8081")
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    eprintln!("hello: listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(b"{\"status\":\"hello\"}")))
                        .expect("a valid response"),
                )
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
