//! An upstream socket as palisade's own exchange (`upstream::raw`) reads
//! and writes it. The connector hands out hyper's I/O types (a TCP stream
//! in `TokioIo`, inside `MaybeHttpsStream`, inside the `max_connections`
//! slot's `CappedIo`), and the exchange reads tokio's: seen through another
//! `TokioIo`, every read crossed four adapters between the exchange and
//! the socket, for each of the three reads of every request (the pool's
//! look at an idle connection, the read that waits, the read that gets the
//! answer). A plain-TCP upstream is kept as the `TcpStream` itself, beside
//! its slot; a TLS one keeps the adapters (its record layer costs far more
//! than they do).

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::proxy::capped::CappedIo;

/// The socket type the connector makes, holding its slot.
pub type HyperIo = CappedIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// An upstream socket for palisade's exchange.
pub enum RawIo {
    /// Plain TCP, read and written directly.
    Tcp {
        /// The socket.
        stream: TcpStream,
        /// Its `max_connections` slot, held as long as the socket lives.
        slot: OwnedSemaphorePermit,
    },
    /// TLS, through hyper's adapters (boxed: a TLS stream is over a
    /// kilobyte, a TCP stream and its slot under a hundred bytes).
    Adapted(Box<TokioIo<HyperIo>>),
}

impl RawIo {
    /// The socket the connector made, unwrapped when it is plain TCP.
    pub fn new(io: HyperIo) -> Self {
        let (stream, slot) = io.into_parts();
        match stream {
            MaybeHttpsStream::Http(tcp) => Self::Tcp {
                stream: tcp.into_inner(),
                slot,
            },
            tls => Self::Adapted(Box::new(TokioIo::new(CappedIo::new(tls, slot)))),
        }
    }

    /// Back to the connector's type, for hyper's exchange.
    pub fn into_hyper(self) -> HyperIo {
        match self {
            Self::Tcp { stream, slot } => {
                CappedIo::new(MaybeHttpsStream::Http(TokioIo::new(stream)), slot)
            }
            Self::Adapted(io) => (*io).into_inner(),
        }
    }

    /// Whether an idle connection is still open and quiet: the upstream
    /// sent nothing since its last answer (a close, or bytes nobody asked
    /// for, both end it). Never waits. On TCP this reads only when the
    /// socket is marked readable (`try_read`): no waker is registered for
    /// a look that nobody waits on.
    pub fn idle_and_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self {
            Self::Tcp { stream, .. } => matches!(
                stream.try_read(&mut probe),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
            ),
            Self::Adapted(io) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut read = ReadBuf::new(&mut probe);
                matches!(Pin::new(io).poll_read(&mut cx, &mut read), Poll::Pending)
            }
        }
    }
}

impl AsyncRead for RawIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp { stream, .. } => Pin::new(stream).poll_read(cx, buf),
            Self::Adapted(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RawIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp { stream, .. } => Pin::new(stream).poll_write(cx, data),
            Self::Adapted(io) => Pin::new(io).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp { stream, .. } => Pin::new(stream).poll_flush(cx),
            Self::Adapted(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp { stream, .. } => Pin::new(stream).poll_shutdown(cx),
            Self::Adapted(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp { stream, .. } => stream.is_write_vectored(),
            Self::Adapted(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp { stream, .. } => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Adapted(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
}
