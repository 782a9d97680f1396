//! Lingering close (issue 11: every refusal reaches its client). When the server closes a
//! connection while its client is still sending (a request body refused before it was read:
//! 413 over `--max-handshake-bytes`, 429 `rate_limited`; a socket let go while its peer keeps
//! writing), closing at once makes the kernel answer the unread bytes with a TCP reset, and
//! the reset destroys the answer the client has not read yet: the client sees "connection
//! reset" instead of its typed refusal. So, as nginx (`lingering_close`) and Apache do, each
//! accepted connection's socket, when the server is done with it, has its write side shut
//! (a FIN after everything written) and what the client still sends is read and discarded for
//! at most [`LINGER`] before the socket is closed. Bounds: one small task per closing
//! connection, for at most [`LINGER`], and one [`DRAIN_BUFFER`]-byte buffer per runtime
//! thread that all of them read into.
//!
//! Upgraded connections (`101 Switching Protocols`: WebSockets) close at once, as before: a
//! WebSocket peer must learn at once that its writes go nowhere (a multiplexed client resumes
//! elsewhere), not have them read and dropped for [`LINGER`].

use axum::serve::Listener;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Longest a closing connection keeps reading (and discarding) what its client still sends.
pub const LINGER: Duration = Duration::from_secs(2);

/// Read buffer of lingering connections, bytes: one per runtime thread (see [`linger`]).
pub const DRAIN_BUFFER: usize = 64 * 1024;

/// A [`TcpListener`] whose connections close with a lingering close (see the module docs).
#[derive(Debug)]
pub struct LingerListener(pub TcpListener);

impl Listener for LingerListener {
    type Io = Lingering;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Lingering, SocketAddr) {
        // axum's accept loop for `TcpListener` (it retries and backs off on accept errors).
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        (
            Lingering {
                tcp: Some(tcp),
                upgraded: false,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// An accepted connection; dropping it closes it with a lingering close unless it was
/// upgraded.
#[derive(Debug)]
pub struct Lingering {
    /// The socket (`None` only while it is being dropped).
    tcp: Option<TcpStream>,
    /// Whether the server answered `101 Switching Protocols` on it.
    upgraded: bool,
}

/// How the server's answer that upgrades a connection begins (hyper writes the status line
/// at the start of one write).
const SWITCHING: &[u8] = b"HTTP/1.1 101 ";

impl Lingering {
    /// The socket (`None` only while it is being dropped).
    pub fn tcp(&self) -> Option<&TcpStream> {
        self.tcp.as_ref()
    }

    fn pinned(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.tcp
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Notes an upgrade from the bytes about to be written.
    fn saw(&mut self, bytes: &[u8]) {
        if !self.upgraded && bytes.starts_with(SWITCHING) {
            self.upgraded = true;
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().pinned() {
            Ok(tcp) => tcp.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.saw(buf);
        match this.pinned() {
            Ok(tcp) => tcp.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.saw(first);
        }
        match this.pinned() {
            Ok(tcp) => tcp.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().pinned() {
            Ok(tcp) => tcp.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().pinned() {
            Ok(tcp) => tcp.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(tcp) = self.tcp.take() else {
            return;
        };
        if self.upgraded {
            return;
        }
        // Outside a runtime (shutting down) the socket just closes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(tcp));
        }
    }
}

/// Shuts the write side, then reads and discards until the client closes, or [`LINGER`].
///
/// The bytes are read into one [`DRAIN_BUFFER`] per thread, not per connection: a
/// lingering connection holds no buffer while it waits, and a client still sending a body
/// of megabytes (a refused 2 MB handshake) costs one read per [`DRAIN_BUFFER`] bytes, not one
/// per 4 KiB (issue 11 "oversized handshakes": the drain was most of the refusal's cost).
async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let drain = async {
        loop {
            if tcp.readable().await.is_err() {
                return;
            }
            // Never awaiting while the thread's buffer is borrowed.
            match DRAIN.with_borrow_mut(|buf| tcp.try_read(buf)) {
                Ok(0) => return,
                // One buffer per turn: a client sending fast never holds the worker longer
                // than one read.
                Ok(_) => tokio::task::yield_now().await,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

thread_local! {
    /// [`linger`]'s read buffer: one per runtime thread, borrowed only inside a
    /// synchronous `try_read`.
    static DRAIN: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; DRAIN_BUFFER]);
}
