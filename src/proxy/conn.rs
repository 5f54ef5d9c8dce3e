//! Per-connection deadlines. hyper's own header-read timer also runs while
//! a keep-alive connection waits for its next request, which would make
//! `header_read_timeout` (10 s) cut idle connections long before
//! `idle_timeout` (60 s), and a load balancer keeping connections for 60 s
//! would race those closes into 502s. So palisade tracks both itself:
//!
//! 1. a request head that has started but is not complete within
//!    `header_read_timeout` ends the connection (slowloris);
//! 2. a connection with no request in flight and no bytes for
//!    `idle_timeout` is closed gracefully.
//!
//! `TrackedIo` records activity on every read and write; requests are
//! counted in flight from the service call until their response body ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What the watchdog knows about one connection.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Requests between the service call and the end of their response.
    in_flight: AtomicUsize,
    /// Nanoseconds since `epoch` of the last byte in or out.
    last_io: AtomicU64,
    /// Nanoseconds since `epoch` + 1 when an idle connection began receiving
    /// a request head; 0 when no head is pending.
    head_started: AtomicU64,
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request head took longer than `header_read_timeout`.
    SlowHead,
    /// No request and no bytes for `idle_timeout`.
    Idle,
}

impl Activity {
    /// A fresh connection: its first head is expected from now.
    pub fn new() -> Arc<Self> {
        let activity = Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
        };
        Arc::new(activity)
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn saw_io(&self, read: bool) {
        let now = self.now_nanos();
        self.last_io.store(now, Ordering::Relaxed);
        if read
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
        }
    }

    /// A complete request head reached the service.
    pub fn request_started(self: &Arc<Self>) -> InFlightRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        InFlightRequest(self.clone())
    }

    /// When the watchdog should look again, or why the connection is over.
    pub fn check(
        &self,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Instant, Expiry> {
        let now = self.now_nanos();
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let at = |n: u64| self.epoch + Duration::from_nanos(n);
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Ok(at(
                now.saturating_add(nanos(idle_timeout.min(header_timeout)))
            ));
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head > 0 {
            let deadline = (head - 1).saturating_add(nanos(header_timeout));
            return if now >= deadline {
                Err(Expiry::SlowHead)
            } else {
                Ok(at(deadline))
            };
        }
        let deadline = self
            .last_io
            .load(Ordering::Relaxed)
            .saturating_add(nanos(idle_timeout));
        if now >= deadline {
            Err(Expiry::Idle)
        } else {
            Ok(at(deadline))
        }
    }
}

/// Held by a request until its response body ends.
#[derive(Debug)]
pub struct InFlightRequest(Arc<Activity>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.saw_io(false);
    }
}

pin_project_lite::pin_project! {
    /// A stream that reports its reads and writes to an [`Activity`].
    pub struct TrackedIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
    }
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.saw_io(true);
        }
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.saw_io(false);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.saw_io(false);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_expires_at_the_header_timeout() {
        let activity = Activity::new();
        assert!(activity.check(HEAD, IDLE).is_ok());
        activity.saw_io(true);
        tokio::time::advance(Duration::from_secs(9)).await;
        activity.saw_io(true);
        assert!(
            activity.check(HEAD, IDLE).is_ok(),
            "trickling bytes do not extend the head deadline"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(activity.check(HEAD, IDLE), Err(Expiry::SlowHead));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_waits_idle_timeout_not_header_timeout() {
        let activity = Activity::new();
        let request = activity.request_started();
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(
            activity.check(HEAD, IDLE).is_ok(),
            "a request in flight is never idle"
        );
        drop(request);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            activity.check(HEAD, IDLE).is_ok(),
            "past the header timeout, still kept alive"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(activity.check(HEAD, IDLE), Err(Expiry::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_gets_its_own_deadline() {
        let activity = Activity::new();
        drop(activity.request_started());
        tokio::time::advance(Duration::from_secs(50)).await;
        activity.saw_io(true);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(activity.check(HEAD, IDLE).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(activity.check(HEAD, IDLE), Err(Expiry::SlowHead));
    }
}
