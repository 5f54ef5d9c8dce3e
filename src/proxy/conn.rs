//! Per-connection deadlines and the connection cap. hyper's own header-read
//! timer also runs while a keep-alive connection waits for its next request,
//! which would make `header_read_timeout` (10 s) cut idle connections long
//! before `idle_timeout` (60 s), and a load balancer keeping connections for
//! 60 s would race those closes into 502s. So palisade tracks both itself:
//!
//! 1. a request head that has started but is not complete within
//!    `header_read_timeout` ends the connection (slowloris);
//! 2. a connection with no request in flight and no bytes for
//!    `idle_timeout` is closed gracefully;
//! 3. a connection whose client has taken nothing of a response for
//!    `idle_timeout` while palisade had bytes for it (a write blocked that
//!    long: a slow-read attack, which would hold the connection and an
//!    upstream socket forever) is ended. A response that is merely quiet
//!    (server-sent events between messages) blocks no write and is kept.
//!    On HTTP/2 flow control stops the bytes before the socket, so there a
//!    response chunk that waits `idle_timeout` for the client's window
//!    (see [`Handoff`]) ends the connection the same way.
//!
//! `TrackedIo` records activity on every read and write; requests are
//! counted in flight from the service call until their response body ends.
//! Nothing wakes the watchdog on the request path: it looks again at least
//! every `min(header_read_timeout, idle_timeout)`, and no event can move a
//! deadline earlier than that (a head that starts now is due
//! `header_read_timeout` from now; an idle or stalled connection
//! `idle_timeout` from its last byte), so each deadline is still kept
//! exactly, for two timer wake-ups per period instead of two per request.
//! On HTTP/2 only the idle deadline applies between requests, and it counts
//! from the end of the last request, not the last byte: control frames
//! (a client's PINGs, a header block trickled forever) are not requests,
//! and palisade sends no keep-alive PINGs of its own.
//!
//! `TrackedIo` also owns the connection's [`ConnSlot`] under
//! `server.max_connections`: the slot lives exactly as long as the socket,
//! so a connection that hyper hands over to a tunnel (a WebSocket upgrade)
//! keeps its slot until the tunnel ends. A tunnel is watched with
//! [`TunnelWatch`] and closed after `idle_timeout` without a byte either way.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
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
    /// Nanoseconds since `epoch` + 1 when a write to the client started
    /// waiting on a full socket; 0 while writes go through.
    write_blocked: AtomicU64,
    /// HTTP/2: bytes between requests are frames (PING, WINDOW_UPDATE,
    /// SETTINGS), not the start of a request head.
    multiplexed: AtomicBool,
    /// HTTP/2: nanoseconds since `epoch` when the last request ended. Idle
    /// counts from there: frames (a PING every few seconds, a header
    /// block trickled forever) do not keep a connection open.
    last_request_end: AtomicU64,
    /// HTTP/2: each stream's [`Handoff`]. Flow control never blocks a
    /// socket write, so a client that grants no window is seen here: a
    /// response chunk handed to hyper and not followed by the next poll.
    streams: Mutex<Vec<Weak<AtomicU64>>>,
    /// HTTP/1: the timer of its requests' upstream deadlines, one request
    /// after another (see [`ConnRequestGuard::poll_upstream_deadline`]).
    upstream_timer: Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
}

/// One HTTP/2 response's last hand-off to hyper: nanoseconds since the
/// connection's epoch + 1 when a chunk was handed out and the body has not
/// been polled since (hyper polls again only once the client's window lets
/// the chunk go); 0 otherwise.
#[derive(Debug, Clone)]
pub struct Handoff {
    activity: Arc<Activity>,
    since: Arc<AtomicU64>,
}

impl Handoff {
    /// The body is being polled: nothing is waiting on the client.
    pub fn polled(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    /// A chunk went to hyper; it waits for the client's window.
    pub fn handed_out(&self) {
        self.since
            .store(self.activity.now_nanos() + 1, Ordering::Relaxed);
    }
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request head took longer than `header_read_timeout`.
    SlowHead,
    /// No request and no bytes for `idle_timeout`.
    Idle,
    /// A write to the client blocked (HTTP/2: a chunk waited for the
    /// client's window) for `idle_timeout` with a request in flight: the
    /// client stopped reading.
    Stalled,
}

impl Activity {
    /// A fresh connection: its first head is expected from now.
    pub fn new() -> Arc<Self> {
        let activity = Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
            multiplexed: AtomicBool::new(false),
            write_blocked: AtomicU64::new(0),
            last_request_end: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
            upstream_timer: Mutex::new(None),
        };
        Arc::new(activity)
    }

    fn now_nanos(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    fn nanos_at(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    fn saw_io(&self, read: bool) {
        // With a request in flight the watchdog looks only at blocked
        // writes, and the request's end stamps `last_io` itself: a clock
        // read per socket read and write would be spent for nothing (a
        // read is about 36 ns here).
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return;
        }
        let now = self.now_nanos();
        self.last_io.store(now, Ordering::Relaxed);
        if read
            && !self.multiplexed.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
        }
    }

    /// A write to the client could not proceed (its socket is full).
    fn write_pending(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == 0 {
            self.write_blocked
                .store(self.now_nanos() + 1, Ordering::Relaxed);
        }
    }

    /// A write to the client went through.
    fn wrote(&self) {
        self.write_blocked.store(0, Ordering::Relaxed);
        self.saw_io(false);
    }

    /// When the connection will have seen no byte for `idle`.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        let last = Duration::from_nanos(self.last_io.load(Ordering::Relaxed));
        self.epoch + last + idle
    }

    /// The connection speaks HTTP/2: from now on only the idle deadline
    /// applies between requests (its control frames start no request head).
    pub fn mark_http2(&self) {
        self.multiplexed.store(true, Ordering::Relaxed);
    }

    /// A complete request head reached the service.
    pub fn request_started(self: &Arc<Self>) -> ConnRequestGuard {
        self.started(false)
    }

    /// A complete request head reached palisade's own HTTP/1 engine, which
    /// reads every byte of a request before answering it (a body it has
    /// not read whole goes to hyper with the connection): a read it made
    /// with no request in flight brought the next head's first bytes, and
    /// the request's start is that read's stamp ([`ConnRequestGuard::arrived`]).
    /// Under hyper such a read may be the rest of a body whose response
    /// was sent first, so there the start is read from the clock.
    pub fn head_started(self: &Arc<Self>) -> ConnRequestGuard {
        self.started(true)
    }

    fn started(self: &Arc<Self>, read_heads_only: bool) -> ConnRequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let head = self.head_started.swap(0, Ordering::Relaxed);
        // Stamped by the read that brought the head's first bytes (1 is
        // the accept's: a first head is expected from then, not seen).
        let arrived = (read_heads_only && head > 1 && !self.multiplexed.load(Ordering::Relaxed))
            .then(|| self.epoch + Duration::from_nanos(head - 1));
        let handoff = if self.multiplexed.load(Ordering::Relaxed) {
            let since = Arc::new(AtomicU64::new(0));
            if let Ok(mut streams) = self.streams.lock() {
                streams.retain(|s| s.strong_count() > 0);
                streams.push(Arc::downgrade(&since));
            }
            Some(Handoff {
                activity: self.clone(),
                since,
            })
        } else {
            None
        };
        ConnRequestGuard {
            activity: self.clone(),
            handoff,
            ended: None,
            arrived,
        }
    }

    /// The oldest HTTP/2 chunk still waiting for the client's window.
    fn oldest_handoff(&self) -> Option<u64> {
        let streams = self.streams.lock().ok()?;
        streams
            .iter()
            .filter_map(Weak::upgrade)
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&since| since > 0)
            .min()
    }

    /// When the watchdog should look again (the next deadline, and at
    /// the latest `min(header_timeout, idle_timeout)` from now: see the
    /// module docs), or why the connection is over.
    pub fn check(
        &self,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Instant, Expiry> {
        let now = self.now_nanos();
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let next = now.saturating_add(nanos(idle_timeout.min(header_timeout)));
        let at = |n: u64| self.epoch + Duration::from_nanos(n.min(next));
        let multiplexed = self.multiplexed.load(Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            let blocked = if multiplexed {
                self.oldest_handoff().unwrap_or(0)
            } else {
                self.write_blocked.load(Ordering::Relaxed)
            };
            if blocked == 0 {
                return Ok(at(next));
            }
            let deadline = (blocked - 1).saturating_add(nanos(idle_timeout));
            return if now >= deadline {
                Err(Expiry::Stalled)
            } else {
                Ok(at(deadline))
            };
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
        let last = if multiplexed {
            self.last_request_end.load(Ordering::Relaxed)
        } else {
            self.last_io.load(Ordering::Relaxed)
        };
        let deadline = last.saturating_add(nanos(idle_timeout));
        if now >= deadline {
            Err(Expiry::Idle)
        } else {
            Ok(at(deadline))
        }
    }
}

/// Held by a request until hyper drops its response body.
#[derive(Debug)]
pub struct ConnRequestGuard {
    activity: Arc<Activity>,
    handoff: Option<Handoff>,
    /// HTTP/1: when the response's last byte was handed to the connection
    /// (the request's record read the clock then; the marker is dropped
    /// right after).
    ended: Option<std::time::Instant>,
    /// HTTP/1: when the head's first bytes were read, if a read brought
    /// them (not a head already buffered behind the last request's).
    arrived: Option<Instant>,
}

impl ConnRequestGuard {
    /// When the request's head began arriving (its first bytes read from
    /// the socket), where the connection saw it: the request's start, as
    /// NGINX's `$request_time` counts it, without reading the clock
    /// again. Only on palisade's own HTTP/1 engine
    /// ([`Activity::head_started`]), and `None` there for a connection's
    /// first head and a head that was already buffered.
    pub fn arrived(&self) -> Option<std::time::Instant> {
        self.arrived.map(Instant::into_std)
    }

    /// The idle watch of this connection, for a WebSocket tunnel made from
    /// the request (built only then: most requests never need one).
    pub fn tunnel_watch(&self, idle_timeout: Duration) -> TunnelWatch {
        TunnelWatch::new(self.activity.clone(), idle_timeout)
    }

    /// The response ended at `at` (its record's clock read). On HTTP/1 the
    /// marker is dropped right after and counts its idle time from then;
    /// on HTTP/2 the last piece may still wait for the client's window, so
    /// idle time counts from the drop itself.
    pub fn ended_at(&mut self, at: std::time::Instant) {
        if self.handoff.is_none() {
            self.ended = Some(at);
        }
    }

    /// The HTTP/2 stream's hand-off marker (`None` on HTTP/1, where a
    /// client that stops reading blocks a socket write instead).
    pub fn handoff(&self) -> Option<&Handoff> {
        self.handoff.as_ref()
    }

    /// Polls the connection's upstream-deadline timer, set to `deadline`:
    /// `Ready` once it has passed. `None` where the connection does not
    /// lend its timer (HTTP/2, whose streams are in flight at once; a timer
    /// already being polled): the caller then keeps one of its own.
    ///
    /// An HTTP/1 connection serves one request at a time, so one timer
    /// serves them all: each request moves it to its own deadline, which is
    /// almost always later than the last one, and tokio then only marks
    /// the timer's entry instead of taking it out of its wheel and putting
    /// it back. A timer made and dropped per request cost about 550
    /// instructions (registering it, removing it; `bench/RESULTS.md`,
    /// session 24). A deadline left behind by a finished request may still
    /// fire: it wakes the connection's task once, which finds nothing to do.
    pub fn poll_upstream_deadline(
        &self,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) -> Option<Poll<()>> {
        if self.handoff.is_some() {
            return None;
        }
        let mut slot = self.activity.upstream_timer.try_lock().ok()?;
        let timer = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        Some(timer.as_mut().poll(cx))
    }
}

impl Drop for ConnRequestGuard {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        // One clock read for both (or none, on HTTP/1: the record's): the
        // response's end is I/O and, on HTTP/2, where idle time starts.
        let now = match self.ended {
            Some(at) => activity.nanos_at(Instant::from_std(at)),
            None => activity.now_nanos(),
        };
        activity.last_io.store(now, Ordering::Relaxed);
        activity.last_request_end.store(now, Ordering::Relaxed);
    }
}

// === impl TunnelWatch ===

/// Carried in each request's extensions: what a tunnel made from this
/// connection obeys. Every tunnelled byte passes the client socket, so the
/// connection's own activity tells when the tunnel went idle.
#[derive(Debug, Clone)]
pub struct TunnelWatch {
    activity: Arc<Activity>,
    idle_timeout: Duration,
}

impl TunnelWatch {
    /// Watches `activity` for `idle_timeout` (the connection's at accept).
    pub fn new(activity: Arc<Activity>, idle_timeout: Duration) -> Self {
        Self {
            activity,
            idle_timeout,
        }
    }

    /// Resolves once no byte went either way for `idle_timeout`.
    pub async fn idle(&self) {
        loop {
            let deadline = self.activity.idle_deadline(self.idle_timeout);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

// === impl ConnLimit ===

/// `server.max_connections`: how many client connections are served at
/// once (more wait in the listen backlog). The maximum can change while
/// connections are open (a reload): growing admits waiting ones at once,
/// shrinking takes effect as connections close.
#[derive(Debug)]
pub struct ConnLimit {
    open: AtomicUsize,
    max: AtomicUsize,
    freed: Notify,
}

impl ConnLimit {
    /// A cap of `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max.max(1)),
            freed: Notify::new(),
        })
    }

    /// Changes the cap (a reload).
    pub fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Ordering::SeqCst);
        self.freed.notify_waiters();
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn try_acquire(self: &Arc<Self>) -> Option<ConnSlot> {
        let max = self.max.load(Ordering::SeqCst);
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnSlot(self.clone()))
    }

    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> ConnSlot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so no release can slip between.
            freed.as_mut().enable();
            if let Some(slot) = self.try_acquire() {
                return slot;
            }
            freed.await;
        }
    }

    /// Waits until every connection (tunnels included) has closed.
    pub async fn drained(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            freed.await;
        }
    }
}

/// One connection's place under `max_connections`, released on drop.
#[derive(Debug)]
pub struct ConnSlot(Arc<ConnLimit>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.freed.notify_waiters();
    }
}

pin_project_lite::pin_project! {
    /// A stream that reports its reads and writes to an [`Activity`], and
    /// holds its connection's slot for as long as it lives (through an
    /// upgrade too: hyper moves this stream into the tunnel).
    pub struct TrackedIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
        _slot: ConnSlot,
    }
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`, which owns `slot` from now on.
    pub fn new(inner: T, activity: Arc<Activity>, slot: ConnSlot) -> Self {
        Self {
            inner,
            activity,
            _slot: slot,
        }
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
        match result {
            Poll::Ready(Ok(n)) if n > 0 => this.activity.wrote(),
            Poll::Pending => this.activity.write_pending(),
            _ => {}
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
        match result {
            Poll::Ready(Ok(n)) if n > 0 => this.activity.wrote(),
            Poll::Pending => this.activity.write_pending(),
            _ => {}
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
mod tests;
