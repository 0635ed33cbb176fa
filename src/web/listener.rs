//! Serving the web listener: our own accept loop over hyper, because `axum::serve` has no
//! header-read timeout and no connection cap. A client that sends its headers slowly (or
//! never) is cut off after [`ListenerLimits::header_timeout`], an idle keep-alive connection
//! likewise; a request that takes longer than [`ListenerLimits::request_timeout`] gets 408;
//! and at most [`ListenerLimits::max_connections`] connections are open at once: beyond that
//! the listener stops accepting and new connections wait in the kernel's backlog.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Limits of the web listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections served at once; each holds one file descriptor (the unit's `LimitNOFILE`
    /// leaves room for them besides the database, media files and provider connections).
    pub max_connections: usize,
    /// Time a connection may take to send a request's headers, counted from the moment the
    /// server waits for them (a new connection, or an idle keep-alive one).
    pub header_timeout: Duration,
    /// Time from the headers to the response headers, body upload included (408 after it).
    /// Above the emulator's longest getUpdates poll (`telegram.poll_timeout_secs` < 17 s).
    pub request_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then stops accepting, lets requests
/// in flight finish and returns once every connection is closed. Each request carries the
/// peer's `ConnectInfo<SocketAddr>` (the login limiter and `/metrics` read it).
pub async fn serve(listener: TcpListener, router: Router, limits: ListenerLimits, shutdown: CancellationToken) {
    // Every request is logged (method, path, status, latency; DEBUG) and none runs longer
    // than the request timeout.
    let router = router
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        // A slot first: at the cap nothing is accepted, so no descriptor is spent on a
        // connection that could not be served.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; resets are per client.
                    tracing::warn!(error = %e, "web listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "web connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: ListenerLimits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new()
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .route("/slow", axum::routing::get(|| async { tokio::time::sleep(Duration::from_secs(30)).await }))
            .route(
                "/peer",
                axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            );
        let token = CancellationToken::new();
        let task = tokio::spawn(serve(listener, router, limits, token.clone()));
        (addr, token, task)
    }

    /// A connection that has sent `bytes`.
    async fn open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        s
    }

    /// Shuts the listener down; it must return promptly.
    async fn stop(token: CancellationToken, task: tokio::task::JoinHandle<()>) {
        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops").expect("join");
    }

    /// Reads until the server closes; `None` if it is still open after `secs`.
    async fn read_to_close(s: &mut TcpStream, secs: u64) -> Option<String> {
        let mut buf = Vec::new();
        match tokio::time::timeout(Duration::from_secs(secs), s.read_to_end(&mut buf)).await {
            Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn slow_headers_are_cut_off() {
        let limits = ListenerLimits { header_timeout: Duration::from_millis(500), ..ListenerLimits::default() };
        let (addr, token, task) = start(limits).await;
        // Half a request line and one header, then nothing: before the fix this waited forever.
        let mut slow = open(addr, b"GET /ok HTTP/1.1\r\nHost: x\r\n").await;
        let mut idle = open(addr, b"").await;
        assert!(read_to_close(&mut slow, 20).await.is_some(), "slow-header connection closed");
        assert_eq!(read_to_close(&mut idle, 20).await.as_deref(), Some(""), "silent connection closed too");
        // The listener still serves, with the peer address attached.
        let mut ok = open(addr, b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let answer = read_to_close(&mut ok, 20).await.expect("answered");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("127.0.0.1:"), "{answer}");
        stop(token, task).await;
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_a_slot_frees() {
        let limits =
            ListenerLimits { max_connections: 2, header_timeout: Duration::from_secs(2), ..ListenerLimits::default() };
        let (addr, token, task) = start(limits).await;
        let _held = [open(addr, b"GET /ok HTTP/1.1\r\n").await, open(addr, b"GET /ok HTTP/1.1\r\n").await];
        // Give the listener time to accept the two; the third then sits in the backlog.
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The kernel completes the handshake and queues it.
        let mut third = open(addr, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut [0u8; 1])).await;
        assert!(early.is_err(), "not served while both slots are taken");
        // The held connections time out (header timeout), which frees slots.
        let answer = read_to_close(&mut third, 30).await.expect("served once a slot is free");
        assert!(answer.contains("200 OK"), "{answer}");
        stop(token, task).await;
    }

    #[tokio::test]
    async fn slow_requests_get_408() {
        let limits = ListenerLimits { request_timeout: Duration::from_millis(300), ..ListenerLimits::default() };
        let (addr, token, task) = start(limits).await;
        let mut s = open(addr, b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let answer = read_to_close(&mut s, 20).await.expect("answered");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        stop(token, task).await;
    }
}
