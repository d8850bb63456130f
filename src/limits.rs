//! Connection limits shared by the listeners (SMTP/LMTP and HTTP): connections per
//! client address, and an HTTP connection that closes when its client goes quiet.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Sessions per client address.
#[derive(Clone, Default)]
pub struct PerIp(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One session's place in its address's count, given back when dropped.
pub struct IpSlot {
    map: PerIp,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut std::collections::HashMap<std::net::IpAddr, usize>) -> T,
    ) -> T {
        match self.0.lock() {
            Ok(mut m) => f(&mut m),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// A slot for `ip` when it holds fewer than `max` sessions.
    pub fn take(&self, ip: std::net::IpAddr, max: usize) -> Option<IpSlot> {
        self.with(|m| {
            let n = m.entry(ip).or_insert(0);
            if *n >= max {
                return None;
            }
            *n += 1;
            Some(IpSlot {
                map: self.clone(),
                ip,
            })
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let ip = self.ip;
        self.map.with(|m| {
            if let Some(n) = m.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        });
    }
}

/// The HTTP listener with limits: at most `max` connections at once and `per_ip` from one
/// address (beyond them a connection is closed at once, before it costs more than its
/// accept), each closed when it sends nothing for `idle`.
pub struct Limited {
    pub inner: tokio::net::TcpListener,
    pub max: usize,
    pub per_ip: usize,
    pub idle: Duration,
    open: Arc<std::sync::atomic::AtomicUsize>,
    by_ip: PerIp,
}

impl Limited {
    pub fn new(
        inner: tokio::net::TcpListener,
        max: usize,
        per_ip: usize,
        idle: Duration,
    ) -> Limited {
        Limited {
            inner,
            max,
            per_ip,
            idle,
            open: Arc::default(),
            by_ip: PerIp::default(),
        }
    }
}

/// A connection of [`Limited`]: counted until dropped, closed when idle.
pub struct Guarded {
    io: tokio::net::TcpStream,
    _slot: IpSlot,
    open: Arc<std::sync::atomic::AtomicUsize>,
    idle: Duration,
    quiet: Pin<Box<tokio::time::Sleep>>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let at = tokio::time::Instant::now() + self.idle;
                    self.quiet.as_mut().reset(at);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.quiet.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for Limited {
    type Io = Guarded;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Guarded, std::net::SocketAddr) {
        use std::sync::atomic::Ordering;
        loop {
            let (io, peer) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or the like: wait a moment, never spin.
                    tracing::warn!(error = %e, "cannot accept a web connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.open.load(Ordering::Relaxed) >= self.max {
                tracing::debug!("too many web connections; closing one");
                continue;
            }
            let Some(slot) = self.by_ip.take(peer.ip(), self.per_ip) else {
                tracing::debug!("too many web connections from one address; closing one");
                continue;
            };
            self.open.fetch_add(1, Ordering::Relaxed);
            let quiet = Box::pin(tokio::time::sleep(self.idle));
            let g = Guarded {
                io,
                _slot: slot,
                open: self.open.clone(),
                idle: self.idle,
                quiet,
            };
            return (g, peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}
