//! Connections per listener (production only: madsim's server takes an
//! address, not a stream of connections).
//!
//! A listener accepts at most `max_total` connections at once, and at most
//! `max_per_ip` from one source address. A connection over either cap is
//! accepted and closed at once (the client sees the connection reset: a
//! clear, immediate refusal, never a hang), and a warning is logged at most
//! once per REFUSAL_LOG_EVERY. A connection that sends nothing for
//! IDLE_TIMEOUT is closed. So one client holding connections open
//! (stalled TLS handshakes, a connection flood) exhausts its own share,
//! not the node: others keep being served. tonic applies TLS and HTTP/2 to
//! the connections `CappedListener::into_stream` yields
//! (`serve_with_incoming_shutdown`); axum serves the HTTP listener on a
//! `CappedListener` directly.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tonic::transport::server::{Connected, TcpConnectInfo};

const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// After an accept error (e.g. out of file descriptors), wait this long.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Open connections, by source address.
#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection from which nothing arrives for this long is closed. A live
/// client never gets there: the node pings every HTTP/2 connection every
/// `limits::KEEPALIVE_INTERVAL` and the answers arrive as reads. A client
/// that connects and sends nothing (or stops mid-request) is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One accepted connection; its slot frees when it is dropped.
pub struct Limited {
    io: TcpStream,
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
    /// When bytes last arrived, and a timer that fires at most
    /// IDLE_TIMEOUT later: reads only note the time; the timer is moved
    /// when it fires (not on every read, a hot path).
    last_read: Instant,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
    }
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last_read = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => loop {
                if self.idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = self.last_read + IDLE_TIMEOUT;
                if due <= Instant::now() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle: closed",
                    )));
                }
                self.idle.as_mut().reset(due);
            },
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Binds `addr` (failing the start with one line naming `what`).
pub fn bind(what: &str, given: &str, addr: SocketAddr) -> crate::Result<TcpListener> {
    let err =
        |e: io::Error| crate::Error::Config(format!("cannot serve {what} address {given}: {e}"));
    let std = std::net::TcpListener::bind(addr).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    TcpListener::from_std(std).map_err(err)
}

/// A listener that admits connections under the caps.
pub struct CappedListener {
    listener: TcpListener,
    what: &'static str,
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
    logged: Option<Instant>,
}

impl CappedListener {
    /// At most `max_total` connections, a quarter of them per address.
    pub fn new(listener: TcpListener, what: &'static str, max_total: usize) -> Self {
        CappedListener {
            listener,
            what,
            max_total,
            max_per_ip: (max_total / 4).max(1),
            counts: Arc::default(),
            logged: None,
        }
    }

    /// The next admitted connection (refused ones are closed on the way).
    pub async fn next(&mut self) -> (Limited, SocketAddr) {
        loop {
            let (io, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(listener = self.what, %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let ip = peer.ip();
            let admitted = {
                let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
                let from_ip = c.by_ip.get(&ip).copied().unwrap_or(0);
                if c.total >= self.max_total || from_ip >= self.max_per_ip {
                    false
                } else {
                    c.total += 1;
                    *c.by_ip.entry(ip).or_insert(0) += 1;
                    true
                }
            };
            if !admitted {
                drop(io);
                if self.logged.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
                    self.logged = Some(Instant::now());
                    tracing::warn!(listener = self.what, %peer, max_total = self.max_total,
                        max_per_ip = self.max_per_ip, "connection refused: too many open connections");
                }
                continue;
            }
            let _ = io.set_nodelay(true);
            let conn = Limited {
                io,
                ip,
                counts: self.counts.clone(),
                last_read: Instant::now(),
                idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            };
            return (conn, peer);
        }
    }

    /// The admitted connections as a stream (for tonic).
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<Limited>> + Send + 'static {
        futures::stream::unfold(self, |mut l| async move {
            let (conn, _) = l.next().await;
            Some((Ok(conn), l))
        })
    }
}

/// The HTTP listener (axum) takes the same caps.
impl axum::serve::Listener for CappedListener {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Limited, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
