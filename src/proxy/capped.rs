//! `[upstream] max_connections`: each upstream socket holds one slot for as
//! long as it lives (pooled idle, busy, or carrying a tunnel). Without a
//! cap, many client connections times HTTP/2 streams could open any number
//! of upstream sockets. A request that finds neither an idle connection nor
//! a free slot waits for either (the pool hands it whichever comes first),
//! and gives up at its route's deadline (504), as for any other wait on the
//! upstream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The `max_connections` slots of one upstream.
#[derive(Debug, Clone)]
pub struct Slots(Arc<Semaphore>);

impl Slots {
    /// `max` slots (at least one).
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(
            max.clamp(1, Semaphore::MAX_PERMITS),
        )))
    }

    /// A free slot now, if there is one.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }

    /// The next slot to be freed.
    pub async fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().acquire_owned().await.ok()
    }
}

pin_project_lite::pin_project! {
    /// An upstream socket and the slot it holds until it is closed.
    #[derive(Debug)]
    pub struct CappedIo<T> {
        #[pin]
        inner: T,
        _slot: OwnedSemaphorePermit,
    }
}

impl<T> CappedIo<T> {
    /// `inner`, holding `slot` until it is dropped.
    pub fn new(inner: T, slot: OwnedSemaphorePermit) -> Self {
        Self { inner, _slot: slot }
    }

    /// The socket and its slot, apart (the slot must go on living with
    /// the socket).
    pub fn into_parts(self) -> (T, OwnedSemaphorePermit) {
        (self.inner, self._slot)
    }
}

impl<T: Connection> Connection for CappedIo<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

impl<T: Read> Read for CappedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: Write> Write for CappedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
}
