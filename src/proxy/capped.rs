//! `[upstream] max_connections`: the upstream connector, capped. Without a
//! cap, many client connections times HTTP/2 streams could open any number
//! of upstream sockets. Each socket holds a slot for as long as it lives
//! (pooled idle, busy, or carrying a tunnel); a connection attempt waits for
//! a free slot, and the request behind it gives up at its route's deadline
//! (504), as for any other wait on the upstream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a connection attempt waits for a slot. The request that wanted
/// it stops waiting at its own deadline; this bounds the attempts the pool
/// finishes in the background (it keeps a started connect going when an
/// idle connection served the request first), so they cannot pile up.
#[derive(Debug, Clone)]
pub struct SlotWait(Arc<AtomicU64>);

impl Default for SlotWait {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(30_000)))
    }
}

impl SlotWait {
    /// Sets the wait (the longest route timeout).
    pub fn set(&self, wait: Duration) {
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.0.store(millis.max(1), Ordering::Relaxed);
    }

    fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// A connector whose sockets each hold one of `max_connections` slots.
#[derive(Debug, Clone)]
pub struct Capped<C> {
    inner: C,
    slots: Arc<Semaphore>,
    wait: SlotWait,
}

impl<C> Capped<C> {
    /// Caps `inner` at `max` sockets open at once.
    pub fn new(inner: C, max: usize, wait: SlotWait) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            wait,
        }
    }
}

impl<C> Service<Uri> for Capped<C>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = CappedIo<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // The clone that was polled ready makes the call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let slots = self.slots.clone();
        let wait = self.wait.get();
        Box::pin(async move {
            let slot = match tokio::time::timeout(wait, slots.acquire_owned()).await {
                Ok(Ok(slot)) => slot,
                Ok(Err(closed)) => return Err(closed.into()),
                Err(_) => return Err("no upstream connection slot became free".into()),
            };
            let io = inner.call(uri).await.map_err(Into::into)?;
            Ok(CappedIo {
                inner: io,
                _slot: slot,
            })
        })
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
