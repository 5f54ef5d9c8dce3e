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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tower_service::Service;

use super::client::ClientFailure;
use crate::policy::body::UpstreamBody;
use crate::proxy::capped::{CappedIo, Slots};

/// Makes upstream sockets: TCP (connect timeout, `TCP_NODELAY`), TLS when
/// the upstream is `https`.
pub type Connector = HttpsConnector<HttpConnector>;
/// A socket holding its `max_connections` slot.
type Io = CappedIo<<Connector as Service<Uri>>::Response>;
type Driver = http1::Connection<Io, UpstreamBody>;

/// One upstream connection: the handle requests are sent on, and the
/// future that moves its bytes (polled by whoever holds the connection).
pub struct Conn {
    sender: http1::SendRequest<UpstreamBody>,
    driver: Option<Pin<Box<Driver>>>,
    reused: bool,
}

impl Conn {
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
}

struct Idle {
    conn: Conn,
    since: Instant,
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
    ) -> Self {
        Self {
            connector,
            target,
            slots,
            returned: Notify::new(),
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// Sends `request` and waits for the response head, driving the
    /// connection meanwhile. The response body keeps driving it and gives
    /// it back when it ends.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, ClientFailure> {
        loop {
            let mut conn = self.obtain().await?;
            match send_on(&mut conn, request).await {
                Ok(response) => {
                    let pool = Arc::downgrade(self);
                    return Ok(response.map(|body| PooledBody::new(body, conn, pool)));
                }
                Err(mut failed) => match failed.take_message() {
                    // A reused connection closed before the request could
                    // start: nothing was sent, so send it on a new one.
                    Some(unsent) if conn.reused => request = unsent,
                    _ => return Err(ClientFailure::from_hyper(failed.error())),
                },
            }
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
    /// first when there is neither now.
    async fn obtain(&self) -> Result<Conn, ClientFailure> {
        // The common case first, without registering for a wake-up.
        if let Some(conn) = self.checkout() {
            return Ok(conn);
        }
        loop {
            let returned = self.returned.notified();
            let mut returned = std::pin::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = self.checkout() {
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

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<Conn> {
        let mut cx = Context::from_waker(Waker::noop());
        let now = Instant::now();
        loop {
            let idle = self.idle.lock().ok()?.pop()?;
            if now.duration_since(idle.since) >= self.idle_timeout {
                continue;
            }
            let mut conn = idle.conn;
            if let Poll::Ready(true) = conn.poll_ready(&mut cx) {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    /// Gives a connection whose exchange is over back to the pool.
    fn put(&self, conn: Conn) {
        if conn.driver.is_none() || conn.sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        let timeout = self.idle_timeout;
        // Pushed in time order: the expired ones are a prefix.
        let expired = idle.partition_point(|i| now.duration_since(i.since) >= timeout);
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push(Idle { conn, since: now });
            drop(idle);
            self.returned.notify_one();
        }
    }

    async fn open(&self, slot: OwnedSemaphorePermit) -> Result<Io, ClientFailure> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| ClientFailure::Connect(super::client::error_chain(&*e)))?;
        let io = connector
            .call(self.target.clone())
            .await
            .map_err(|e| ClientFailure::Connect(super::client::error_chain(&*e)))?;
        Ok(CappedIo::new(io, slot))
    }

    async fn connect(&self, slot: OwnedSemaphorePermit) -> Result<Conn, ClientFailure> {
        let io = self.open(slot).await?;
        let (sender, driver) = http1::handshake(io)
            .await
            .map_err(|e| ClientFailure::Connect(super::client::error_chain(&e)))?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(driver)),
            reused: false,
        })
    }
}

/// Sends on `conn` once it is ready, driving it until the response head.
async fn send_on(
    conn: &mut Conn,
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
pub struct PooledBody {
    body: Incoming,
    conn: Option<Conn>,
    pool: std::sync::Weak<Pool>,
}

impl PooledBody {
    fn new(body: Incoming, conn: Conn, pool: std::sync::Weak<Pool>) -> Self {
        Self {
            body,
            conn: Some(conn),
            pool,
        }
    }

    fn release(&mut self) {
        // Not polled here: the next checkout polls the connection anyway
        // (to find it closed, or ready for the next request).
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.upgrade()) {
            pool.put(conn);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(conn) = &mut this.conn {
            conn.poll_driver(cx);
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
