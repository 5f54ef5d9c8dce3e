//! The upstream connections, without a connection task of their own.
//!
//! Each HTTP/1 connection is a `SendRequest` and the `Connection` future that
//! does its I/O. hyper-util's pool spawns that future as a task, so every
//! request crossed tasks twice (a channel hop out, a wake-up back). Here the
//! request that checked a connection out polls its future itself, in the
//! task of the client's connection: while it waits for the response head,
//! and then from the response body ([`PooledBody`]) until the body ends,
//! when the connection goes back to the pool. Nothing else runs in between.
//!
//! The pool is bounded: idle connections are kept up to `pool_max_idle`
//! for `pool_idle_timeout` each; every socket, idle or busy, holds one of
//! `[upstream] max_connections` slots (see `capped`). An idle connection is
//! checked before reuse (polled once: a closed one is dropped), and a
//! request that a reused connection could not even start is sent again on
//! a new one (hyper hands it back unsent). WebSocket handshakes get a fresh
//! connection whose future runs as a task, because it outlives the exchange
//! as a tunnel.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tower_service::Service;

use super::attempts::{Head, Outgoing};
use super::client::ClientFailure;
use super::raw::{self, RawBody, RawConn, RawFailure};
use super::socket::{HyperIo, RawIo};
use crate::policy::body::UpstreamBody;
use crate::policy::response_headers::UpstreamLines;
use crate::proxy::capped::{CappedIo, Slots};
use crate::proxy::response_body::BoxError;

/// A head palisade's own engine writes: a request's own (its body kept in
/// case the connection turns out to be hyper's), or the exchange's, lent.
enum RawHead<'a> {
    Owned(Box<Request<UpstreamBody>>),
    Lent(&'a Head),
}

impl<'a> RawHead<'a> {
    /// Who sends `outgoing`: the engine (its head and its body's bytes),
    /// or hyper (a streamed body, a `Transfer-Encoding` line).
    fn of(outgoing: Outgoing<'a>) -> Sender<'a> {
        match outgoing {
            Outgoing::Lent { head, payload } if raw::eligible_head(&head.headers) => {
                Sender::Raw(RawHead::Lent(head), payload)
            }
            Outgoing::Owned(request) => match raw::eligible_payload(&request) {
                Some(payload) => Sender::Raw(RawHead::Owned(request), payload),
                None => Sender::Hyper(Outgoing::Owned(request)),
            },
            lent @ Outgoing::Lent { .. } => Sender::Hyper(lent),
        }
    }

    fn lines(&self) -> raw::HeadRef<'_> {
        match self {
            RawHead::Owned(request) => raw::HeadRef {
                method: request.method(),
                uri: request.uri(),
                headers: request.headers(),
                added: None,
            },
            RawHead::Lent(head) => raw::HeadRef {
                method: &head.method,
                uri: &head.uri,
                headers: &head.headers,
                added: head.added.as_ref(),
            },
        }
    }

    /// The request hyper sends on a connection hyper holds.
    fn into_request(self, payload: bytes::Bytes) -> Request<UpstreamBody> {
        match self {
            RawHead::Owned(request) => *request,
            RawHead::Lent(head) => *head.replayed(payload),
        }
    }
}

/// Which exchange sends a try.
enum Sender<'a> {
    /// palisade's own, with the body's bytes.
    Raw(RawHead<'a>, bytes::Bytes),
    /// hyper's.
    Hyper(Outgoing<'a>),
}

/// Makes upstream sockets: TCP (connect timeout, `TCP_NODELAY`), TLS when
/// the upstream is `https`.
pub type Connector = HttpsConnector<HttpConnector>;
type Driver = http1::Connection<HyperIo, UpstreamBody>;

/// One upstream connection driven by hyper: the handle requests are sent
/// on, and the future that moves its bytes (polled by whoever holds the
/// connection).
pub struct HyperConn {
    sender: http1::SendRequest<UpstreamBody>,
    driver: Option<Pin<Box<Driver>>>,
}

/// One upstream connection, idle or in an exchange.
pub struct Conn {
    link: Link,
    reused: bool,
}

/// Who speaks HTTP on a connection: hyper, or palisade's own exchange
/// (`upstream.http1_engine = "palisade"`; a request it does not send
/// hands the connection to hyper for good).
enum Link {
    Hyper(HyperConn),
    Raw(RawConn<RawIo>),
}

impl HyperConn {
    /// Moves the connection's bytes as far as they go now. Once the future
    /// has finished the connection is closed.
    pub fn poll_driver(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && let Poll::Ready(result) = driver.as_mut().poll(cx)
        {
            if let Err(error) = result {
                tracing::debug!(%error, "upstream connection ended");
            }
            self.driver = None;
        }
    }

    /// Whether a request can be sent now (the connection is idle and open).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        self.poll_driver(cx);
        if self.driver.is_none() {
            return Poll::Ready(false);
        }
        self.sender.poll_ready(cx).map(|ready| ready.is_ok())
    }

    /// A hyper connection over a socket palisade's exchange held.
    async fn handshake(io: HyperIo) -> Result<Self, ClientFailure> {
        let (sender, driver) = http1::handshake(io)
            .await
            .map_err(|e| ClientFailure::Connect(super::client::error_chain(&e)))?;
        Ok(Self {
            sender,
            driver: Some(Box::pin(driver)),
        })
    }
}

impl Conn {
    /// Whether an idle connection can take a request now.
    fn ready_now(&mut self) -> bool {
        match &mut self.link {
            Link::Hyper(conn) => {
                let mut cx = Context::from_waker(Waker::noop());
                matches!(conn.poll_ready(&mut cx), Poll::Ready(true))
            }
            Link::Raw(conn) => conn.io_mut().idle_and_open(),
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// Whether it was put back at or before `cutoff` (now less the idle
    /// timeout; `None` when the clock is younger than the timeout). One
    /// comparison: a `duration_since` per connection looked at was a
    /// measurable part of every exchange.
    fn expired(&self, cutoff: Option<Instant>) -> bool {
        cutoff.is_some_and(|cutoff| self.since <= cutoff)
    }
}

/// The pool of one upstream.
pub struct Pool {
    connector: Connector,
    target: Uri,
    slots: Slots,
    /// Woken when a connection goes back to the pool.
    returned: Notify,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// `upstream.http1_engine = "palisade"`: new connections start with
    /// palisade's own exchange.
    raw: bool,
    /// The last attempt to open a connection failed (for `/readyz`); set
    /// only when it changes, and only connecting touches it.
    unreachable: AtomicBool,
}

impl Pool {
    /// A pool toward `target` (scheme and authority), its sockets capped by
    /// `slots`.
    pub fn new(
        connector: Connector,
        target: Uri,
        slots: Slots,
        max_idle: usize,
        idle_timeout: Duration,
        raw: bool,
    ) -> Self {
        Self {
            connector,
            target,
            slots,
            returned: Notify::new(),
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            raw,
            unreachable: AtomicBool::new(false),
        }
    }

    /// Whether the last attempt to open a connection failed.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Sends `request` and waits for the response head, driving the
    /// connection meanwhile. The response body keeps driving it and gives
    /// it back when it ends. `now` is the try's start (the caller's clock
    /// read, used to skip expired idle connections).
    pub async fn send(
        self: &Arc<Self>,
        outgoing: Outgoing<'_>,
        now: Instant,
    ) -> Result<Response<PooledBody>, ClientFailure> {
        let outgoing = if self.raw {
            match RawHead::of(outgoing) {
                Sender::Raw(head, payload) => return self.send_raw(head, payload, now).await,
                Sender::Hyper(outgoing) => outgoing,
            }
        } else {
            outgoing
        };
        // Boxed: hyper's exchange is twice the size of palisade's, and
        // inline it would be part of (and copied with) every request's
        // future on the default engine too.
        Box::pin(self.send_hyper(*outgoing.into_request(), now)).await
    }

    /// palisade's own exchange, on a connection it holds; on one hyper
    /// holds, hyper's.
    async fn send_raw(
        self: &Arc<Self>,
        head: RawHead<'_>,
        payload: bytes::Bytes,
        now: Instant,
    ) -> Result<Response<PooledBody>, ClientFailure> {
        let mut now = Some(now);
        loop {
            let conn = self.obtain(now.take()).await?;
            let reused = conn.reused;
            match conn.link {
                Link::Raw(raw) => match raw.exchange(head.lines(), &payload).await {
                    Ok(response) => {
                        let pool = Arc::downgrade(self);
                        return Ok(response.map(|body| PooledBody::raw(body, pool)));
                    }
                    // A reused connection closed before the request could
                    // be written: nothing was sent, so send it on another.
                    Err(RawFailure::Unsent(_)) if reused => {}
                    // Closed with no answer: whether the request goes
                    // again is the retry policy's (`attempts`).
                    Err(RawFailure::Unanswered(error)) if reused => {
                        return Err(ClientFailure::Unanswered(error.to_string()));
                    }
                    Err(
                        RawFailure::Unsent(error)
                        | RawFailure::Unanswered(error)
                        | RawFailure::Broken(error),
                    ) => {
                        return Err(ClientFailure::Reset(error.to_string()));
                    }
                },
                link @ Link::Hyper(_) => {
                    let request = head.into_request(payload);
                    return Box::pin(self.send_on(Conn { link, reused }, request)).await;
                }
            }
        }
    }

    /// hyper's exchange.
    async fn send_hyper(
        self: &Arc<Self>,
        request: Request<UpstreamBody>,
        now: Instant,
    ) -> Result<Response<PooledBody>, ClientFailure> {
        let conn = self.obtain(Some(now)).await?;
        self.send_on(conn, request).await
    }

    /// hyper's exchange, starting on `conn`; a request a reused connection
    /// could not even start goes again on another.
    async fn send_on(
        self: &Arc<Self>,
        mut conn: Conn,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, ClientFailure> {
        loop {
            let reused = conn.reused;
            let mut hyper_conn = match conn.link {
                Link::Hyper(hyper_conn) => hyper_conn,
                // Boxed, here and below: rare, and a handshake's future
                // holds a whole hyper connection; inline it would be
                // copied with every request's future.
                Link::Raw(raw) => match raw.into_io() {
                    Some(io) => Box::pin(HyperConn::handshake(io.into_hyper())).await?,
                    None => return Err(ClientFailure::Reset("unread upstream bytes".into())),
                },
            };
            match send_on(&mut hyper_conn, request).await {
                Ok(response) => {
                    let pool = Arc::downgrade(self);
                    return Ok(response.map(|body| PooledBody::new(body, hyper_conn, pool)));
                }
                Err(mut failed) => match failed.take_message() {
                    // A reused connection closed before the request could
                    // start: nothing was sent, so send it on a new one.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(ClientFailure::from_hyper(failed.error())),
                },
            }
            conn = self.obtain(None).await?;
        }
    }

    /// A WebSocket handshake: a fresh connection, its future a task of its
    /// own (it becomes the tunnel).
    pub async fn send_upgrade(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ClientFailure> {
        let slot = match self.slots.try_take() {
            Some(slot) => slot,
            None => self
                .slots
                .take()
                .await
                .ok_or_else(|| ClientFailure::Connect("the pool is closed".into()))?,
        };
        let io = self.open(slot).await?;
        let (mut sender, driver) = http1::handshake(io)
            .await
            .map_err(|e| ClientFailure::Connect(super::client::error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(error) = driver.with_upgrades().await {
                tracing::debug!(%error, "upstream upgrade connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| ClientFailure::from_hyper(&e))
    }

    /// An idle connection, or a new one in a free slot: whichever comes
    /// first when there is neither now. `now`: the caller's clock read, if
    /// it has one this instant.
    async fn obtain(&self, now: Option<Instant>) -> Result<Conn, ClientFailure> {
        // The common case first, without registering for a wake-up.
        if let Some(conn) = self.checkout(now.unwrap_or_else(Instant::now)) {
            return Ok(conn);
        }
        loop {
            let returned = self.returned.notified();
            let mut returned = std::pin::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = self.checkout(Instant::now()) {
                return Ok(conn);
            }
            if let Some(slot) = self.slots.try_take() {
                // Boxed, here and below: a connect (TCP, maybe TLS) is a
                // large future that most requests never run; inline it
                // would be copied with every request's future.
                return Box::pin(self.connect(slot)).await;
            }
            tokio::select! {
                () = returned => {}
                slot = self.slots.take() => match slot {
                    Some(slot) => return Box::pin(self.connect(slot)).await,
                    None => return Err(ClientFailure::Connect("the pool is closed".into())),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open at `now`.
    fn checkout(&self, now: Instant) -> Option<Conn> {
        let cutoff = now.checked_sub(self.idle_timeout);
        loop {
            let idle = self.idle.lock().ok()?.pop()?;
            if idle.expired(cutoff) {
                continue;
            }
            let mut conn = idle.conn;
            if conn.ready_now() {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    /// Gives a connection whose exchange is over back to the pool.
    fn put(&self, conn: Conn) {
        if let Link::Hyper(hyper_conn) = &conn.link
            && (hyper_conn.driver.is_none() || hyper_conn.sender.is_closed())
        {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        let cutoff = now.checked_sub(self.idle_timeout);
        // Pushed in time order: the expired ones are a prefix.
        let expired = idle.partition_point(|i| i.expired(cutoff));
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push(Idle { conn, since: now });
            drop(idle);
            self.returned.notify_one();
        }
    }

    async fn open(&self, slot: OwnedSemaphorePermit) -> Result<HyperIo, ClientFailure> {
        let opened = self.dial().await;
        if opened.is_ok() == self.unreachable.load(Ordering::Relaxed) {
            self.unreachable.store(opened.is_err(), Ordering::Relaxed);
        }
        Ok(CappedIo::new(opened?, slot))
    }

    async fn dial(&self) -> Result<<Connector as Service<Uri>>::Response, ClientFailure> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| ClientFailure::Connect(super::client::error_chain(&*e)))?;
        connector
            .call(self.target.clone())
            .await
            .map_err(|e| ClientFailure::Connect(super::client::error_chain(&*e)))
    }

    async fn connect(&self, slot: OwnedSemaphorePermit) -> Result<Conn, ClientFailure> {
        let io = self.open(slot).await?;
        let link = if self.raw {
            Link::Raw(RawConn::new(RawIo::new(io)))
        } else {
            Link::Hyper(Box::pin(HyperConn::handshake(io)).await?)
        };
        Ok(Conn {
            link,
            reused: false,
        })
    }
}

/// Sends on `conn` once it is ready, driving it until the response head.
async fn send_on(
    conn: &mut HyperConn,
    request: Request<UpstreamBody>,
) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<UpstreamBody>>> {
    let ready = std::future::poll_fn(|cx| conn.poll_ready(cx)).await;
    if !ready {
        // Closed before anything was sent: the request comes back unsent.
        return conn.sender.try_send_request(request).await;
    }
    let mut response = std::pin::pin!(conn.sender.try_send_request(request));
    let driver = &mut conn.driver;
    std::future::poll_fn(|cx| {
        if let Some(running) = driver
            && let Poll::Ready(result) = running.as_mut().poll(cx)
        {
            if let Err(error) = result {
                tracing::debug!(%error, "upstream connection ended");
            }
            *driver = None;
        }
        response.as_mut().poll(cx)
    })
    .await
}

/// The upstream's response body, driving its connection until it ends;
/// then the connection goes back to the pool. Dropped before the end (the
/// client left), the connection is closed: HTTP/1 cannot abandon a body.
/// Its state is boxed: the response it belongs to is moved up every layer
/// of the exchange, and with the state inline (136 bytes) each move was a
/// copy of 248 bytes (`bench/RESULTS.md`, session 24).
pub struct PooledBody {
    inner: Box<Inner>,
    pool: std::sync::Weak<Pool>,
}

enum Inner {
    /// hyper's body, and the connection it arrives on.
    Hyper {
        body: Incoming,
        conn: Option<HyperConn>,
    },
    /// palisade's own exchange's body (it holds its connection).
    Raw(RawBody<RawIo>),
}

impl PooledBody {
    fn new(body: Incoming, conn: HyperConn, pool: std::sync::Weak<Pool>) -> Self {
        Self {
            inner: Box::new(Inner::Hyper {
                body,
                conn: Some(conn),
            }),
            pool,
        }
    }

    fn raw(body: RawBody<RawIo>, pool: std::sync::Weak<Pool>) -> Self {
        Self {
            inner: Box::new(Inner::Raw(body)),
            pool,
        }
    }

    /// The response's header lines, when palisade's exchange kept them as
    /// bytes (once).
    pub fn take_upstream_lines(&mut self) -> Option<UpstreamLines> {
        match &mut *self.inner {
            Inner::Hyper { .. } => None,
            Inner::Raw(body) => body.take_upstream_lines(),
        }
    }

    fn release(&mut self) {
        // Not polled here: the next checkout polls the connection anyway
        // (to find it closed, or ready for the next request).
        let link = match &mut *self.inner {
            Inner::Hyper { conn, .. } => conn.take().map(Link::Hyper),
            Inner::Raw(body) => body.take_reusable().map(Link::Raw),
        };
        let conn = link.map(|link| Conn {
            link,
            reused: false,
        });
        if let (Some(conn), Some(pool)) = (conn, self.pool.upgrade()) {
            pool.put(conn);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut *this.inner {
            Inner::Hyper { body, conn } => {
                if let Some(hyper_conn) = conn {
                    hyper_conn.poll_driver(cx);
                }
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    *conn = None;
                }
                polled.map(|frame| frame.map(|r| r.map_err(BoxError::from)))
            }
            Inner::Raw(body) => body
                .poll_data(cx)
                .map(|data| data.map(|r| r.map(http_body::Frame::data))),
        };
        if let Poll::Ready(None) = &polled {
            this.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &*self.inner {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Raw(body) => body.ended(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &*self.inner {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Raw(body) => match body.remaining() {
                Some(left) => http_body::SizeHint::with_exact(left),
                None => http_body::SizeHint::default(),
            },
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(self) {
            self.release();
        }
    }
}
