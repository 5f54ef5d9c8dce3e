//! Listeners: accept under `max_connections`, finish TLS, serve HTTP/1.1 and
//! HTTP/2 (ALPN, or h2c with prior knowledge: see `protocol`) with hyper's builders
//! and its timers; on shutdown stop accepting, drain for `shutdown_grace`.
//! Every `[server]` setting is read from the current generation when a
//! connection is accepted, so a reload applies to the next connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::conn::{Activity, ConnSlot, Expiry, TrackedIo};
use super::generation;
use super::h1;
use super::pipeline::{ConnInfo, handle_boxed};
use super::protocol::{self, Protocol};
use super::response_body::ResponseBody;
use super::state::{Persistent, Shared};
use crate::admin;
use crate::config::Policy;
use crate::config::choices::Http1Engine;
use crate::observe::metrics::Metrics;
use crate::policy::body::RequestBody;

/// Why the server could not start (exit code 3 for binds, 1 otherwise).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS files unreadable or invalid.
    #[error("server.tls: {0}")]
    Tls(String),
    /// The upstream client or the Redis backend could not be built.
    #[error("{0}")]
    Backend(String),
    /// Metrics registration failed (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A running palisade: its bound addresses and the handle to stop it.
pub struct Server {
    /// Where the proxy listener is bound.
    pub proxy_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    /// Shared state (reload swaps its generation).
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    /// `None` once [`Server::proxy_stopped`] saw it end.
    proxy_task: Option<JoinHandle<()>>,
    admin_task: JoinHandle<()>,
}

/// Loads TLS material into an acceptor offering h2 and http/1.1.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<TlsAcceptor, StartError> {
    let config = tls_server_config(cert, key).map_err(|(_, message)| StartError::Tls(message))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS server configuration of `server.tls`; on failure, which of its
/// keys is at fault (`server.tls.cert`, `server.tls.key`, or `server.tls`
/// when the two do not belong together) and why. `check` calls it too, so
/// it refuses what `run` would.
pub fn tls_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, (&'static str, String)> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ("server.tls.cert", format!("cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err((
            "server.tls.cert",
            format!("cert {}: no certificate in the file", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("server.tls.key", format!("key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("server.tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ("server.tls", e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds both listeners and starts serving.
pub async fn start(policy: Policy) -> Result<Server, StartError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let metrics = Arc::new(Metrics::new()?);
    metrics.mark_config_loaded();
    let proxy_listen = policy.server.listen;
    let admin_listen = policy.admin_listen;
    let tls = match &policy.server.tls {
        Some(files) => Some(tls_acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let persistent = Arc::new(Persistent::default());
    persistent.limiters.spawn_evictor(Duration::from_secs(60));
    let first = generation::build(policy, &persistent, &metrics, None)?;
    generation::start_background(&first);
    let shared = Arc::new(Shared::new(first, metrics, persistent));
    let proxy = TcpListener::bind(proxy_listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "server.listen",
            addr: proxy_listen,
            source,
        })?;
    let admin = TcpListener::bind(admin_listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "admin.listen",
            addr: admin_listen,
            source,
        })?;
    let proxy_addr = proxy.local_addr().map_err(|source| StartError::Bind {
        what: "server.listen",
        addr: proxy_listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        what: "admin.listen",
        addr: admin_listen,
        source,
    })?;
    let (stop, stop_rx) = watch::channel(false);
    let (proxy_done_tx, proxy_done_rx) = watch::channel(false);
    shared.tls.store(tls.map(Arc::new));
    let proxy_task = tokio::spawn(serve_proxy(
        proxy,
        shared.clone(),
        stop_rx.clone(),
        proxy_done_tx,
    ));
    let admin_task = tokio::spawn(admin::serve(admin, shared.clone(), proxy_done_rx));
    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, "palisade listening");
    Ok(Server {
        proxy_addr,
        admin_addr,
        shared,
        stop,
        proxy_task: Some(proxy_task),
        admin_task,
    })
}

impl Server {
    /// Starts the drain: `/readyz` turns 503, the listener stops accepting,
    /// in-flight requests finish up to `shutdown_grace`.
    pub fn shutdown(&self) {
        self.shared.start_draining();
        let _ = self.stop.send(true);
    }

    /// Resolves only if the proxy listener stops before a shutdown (its
    /// accept loop panicked): `run` then exits with an error instead of
    /// staying up, ready by `/readyz`, with no listener.
    pub async fn proxy_stopped(&mut self) {
        match self.proxy_task.as_mut() {
            Some(task) => {
                let ended = task.await;
                self.proxy_task = None;
                tracing::error!(panicked = ended.is_err(), "the proxy listener stopped");
            }
            None => std::future::pending().await,
        }
    }

    /// Waits until the drain is over and both listeners are closed, then
    /// flushes the spans still queued for export (bounded by
    /// `[tracing] export_timeout`).
    pub async fn wait(self) {
        if let Some(task) = self.proxy_task {
            let _ = task.await;
        }
        let _ = self.admin_task.await;
        let spans = self
            .shared
            .persistent
            .spans
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(queue) = spans {
            queue.shutdown().await;
        }
    }
}

async fn serve_proxy(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    done: watch::Sender<bool>,
) {
    loop {
        // A slot under `max_connections` first (the cap follows reloads):
        // past it, new connections wait in the listen backlog.
        let slot = tokio::select! {
            slot = shared.connections.acquire() => slot,
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        // The settings current at accept time: a reload applies to the next connection.
        let generation = shared.current.load();
        let server = &generation.policy.server;
        let connection = Connection {
            peer,
            shared: shared.clone(),
            head_buffer: protocol::buffer_size(server),
            engine: server.http1_engine,
            stop: stop.clone(),
            timeouts: ConnTimeouts {
                header_read: server.header_read_timeout,
                idle: server.idle_timeout,
            },
        };
        // The certificate current at accept time (a reload may rotate it).
        let tls = shared.tls.load_full();
        tokio::spawn(connection.serve(stream, slot, tls));
    }
    drop(listener);
    let grace = shared.current.load().policy.server.shutdown_grace;
    tracing::info!(grace = ?grace, "draining connections");
    // Every connection (and every tunnel) holds a slot until it closes.
    match tokio::time::timeout(grace, shared.connections.drained()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("shutdown_grace passed; closing remaining connections"),
    }
    let _ = done.send(true);
}

/// One accepted connection and what it needs to serve it.
struct Connection {
    peer: SocketAddr,
    shared: Arc<Shared>,
    /// hyper's head buffer, from `[server]` at accept.
    head_buffer: usize,
    /// `server.http1_engine` at accept.
    engine: Http1Engine,
    stop: watch::Receiver<bool>,
    /// Read from the policy current when the connection was accepted.
    timeouts: ConnTimeouts,
}

/// `server.header_read_timeout` and `server.idle_timeout`.
#[derive(Debug, Clone, Copy)]
struct ConnTimeouts {
    header_read: Duration,
    idle: Duration,
}

impl Connection {
    async fn serve(self, stream: TcpStream, slot: ConnSlot, tls: Option<Arc<TlsAcceptor>>) {
        let activity = Activity::new();
        // The socket owns the slot: it is released when the socket closes,
        // after any tunnel made from this connection.
        match tls {
            None => {
                let detected = tokio::time::timeout(
                    self.timeouts.header_read,
                    protocol::detect_plaintext(&stream),
                )
                .await;
                let protocol = match detected {
                    Ok(Ok(protocol)) => protocol,
                    Ok(Err(error)) => {
                        tracing::debug!(peer = %self.peer, %error, "reading the first bytes failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %self.peer, "no request head within header_read_timeout; closing");
                        return;
                    }
                };
                let tracked = TrackedIo::new(stream, activity.clone(), slot);
                self.drive(tracked, activity, false, protocol).await
            }
            // Boxed: a TLS handshake and a TLS stream are far larger than
            // a plaintext connection's state, and inline they sized every
            // connection's task (a 5,120-byte task; a plaintext idle
            // keep-alive connection went from 13.5 to 8.9 KiB with this,
            // `bench/run.sh memory`).
            Some(acceptor) => Box::pin(self.serve_tls(stream, slot, &acceptor, activity)).await,
        }
    }

    /// The TLS handshake under `header_read_timeout`, then HTTP over it.
    async fn serve_tls(
        self,
        stream: TcpStream,
        slot: ConnSlot,
        acceptor: &TlsAcceptor,
        activity: Arc<Activity>,
    ) {
        let tracked = TrackedIo::new(stream, activity.clone(), slot);
        match tokio::time::timeout(self.timeouts.header_read, acceptor.accept(tracked)).await {
            Ok(Ok(tls_stream)) => {
                let protocol = protocol::from_alpn(tls_stream.get_ref().1.alpn_protocol());
                self.drive(tls_stream, activity, true, protocol).await
            }
            Ok(Err(error)) => {
                tracing::debug!(peer = %self.peer, %error, "TLS handshake failed")
            }
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    /// Serves HTTP on `io` until the client leaves, a deadline passes, or
    /// the server drains (then in-flight requests finish first).
    async fn drive<I>(self, io: I, activity: Arc<Activity>, tls: bool, protocol: Protocol)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let info = ConnInfo::new(self.peer, tls, self.timeouts.idle);
        if protocol == Protocol::Http2 {
            activity.mark_http2();
        }
        // Boxed: the connection lives on the heap at its own size, and the
        // task's future stays small whichever protocol it serves.
        match protocol {
            Protocol::Http1 if !tls && self.engine == Http1Engine::Palisade => {
                let context = h1::ConnContext {
                    body_buffer: h1::body_buffer(&self.shared.current.load().policy),
                    shared: self.shared.clone(),
                    info,
                    activity: activity.clone(),
                    head_buffer: self.head_buffer,
                };
                let conn = h1::Connection::new(io, context);
                self.watch(Box::pin(conn), |c| c.graceful_shutdown(), &activity)
                    .await;
            }
            Protocol::Http1 => {
                let service = proxy_service(self.shared.clone(), info, activity.clone());
                let conn = protocol::http1_builder(self.head_buffer)
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                self.watch(Box::pin(conn), |c| c.graceful_shutdown(), &activity)
                    .await;
            }
            Protocol::Http2 => {
                let service = proxy_service(self.shared.clone(), info, activity.clone());
                let conn = protocol::http2_builder(self.head_buffer)
                    .serve_connection(TokioIo::new(io), service);
                self.watch(Box::pin(conn), |c| c.graceful_shutdown(), &activity)
                    .await;
            }
        }
    }

    /// Drives `conn` until it ends, a deadline passes, or the server
    /// drains (then in-flight requests finish first).
    async fn watch<C, E>(
        mut self,
        mut conn: std::pin::Pin<Box<C>>,
        graceful_shutdown: fn(std::pin::Pin<&mut C>),
        activity: &Activity,
    ) where
        C: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut closing = false;
        if *self.stop.borrow() {
            graceful_shutdown(conn.as_mut());
            closing = true;
        }
        let ConnTimeouts {
            header_read: header_timeout,
            idle: idle_timeout,
        } = self.timeouts;
        // One timer for the connection, moved only when it fires. hyper
        // wakes this task many times per request; the timer (`Watchdog`)
        // and the drain signal (`gate`) are polled again only when they may
        // be ready, not on every wake-up: each registered this task's waker
        // when first polled, and that waker stays the same for its life.
        let mut watchdog = std::pin::pin!(Watchdog::new(header_timeout.min(idle_timeout)));
        let drain = self.stop.clone();
        loop {
            let stopped = gate(self.stop.changed(), || drain.has_changed().unwrap_or(true));
            let fired = std::future::poll_fn(|cx| watchdog.as_mut().poll_fired(cx));
            tokio::select! {
                biased;
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = fired => {
                    let next = match activity.check(header_timeout, idle_timeout) {
                        Ok(at) => at,
                        Err(Expiry::SlowHead) => {
                            tracing::debug!(peer = %self.peer, "request head not complete within header_read_timeout; closing");
                            return;
                        }
                        Err(Expiry::Stalled) => {
                            tracing::debug!(peer = %self.peer, "the client read nothing of its response within idle_timeout; closing");
                            return;
                        }
                        Err(Expiry::Idle) if !closing => {
                            graceful_shutdown(conn.as_mut());
                            closing = true;
                            tokio::time::Instant::now() + idle_timeout
                        }
                        Err(Expiry::Idle) => return,
                    };
                    watchdog.as_mut().reset(next);
                }
                _ = stopped, if !closing => {
                    graceful_shutdown(conn.as_mut());
                    closing = true;
                }
            }
        }
    }
}

/// The service hyper calls for each request of a connection (also the
/// in-memory connection of `palisade test`, `cli::harness`).
pub(crate) fn proxy_service(
    shared: Arc<Shared>,
    info: ConnInfo,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<ResponseBody>,
    Error = Infallible,
    Future = Handling,
> + Clone {
    // hyper writes a response's header map alone: every header goes into it.
    let info = ConnInfo {
        one_header_map: true,
        ..info
    };
    service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        // Boxed: hyper keeps the service future's slot inside every
        // connection, so inline it would cost each idle keep-alive
        // connection the size of the whole request path.
        let req = req.map(RequestBody::Hyper);
        let future: Handling = handle_boxed(
            shared.clone(),
            info.clone(),
            activity.request_started(),
            req,
        );
        future
    })
}

/// One request's future, as hyper holds it.
type Handling = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<hyper::Response<ResponseBody>, Infallible>> + Send>,
>;

pin_project_lite::pin_project! {
    /// The connection's one timer, polled only when it may have fired: its
    /// first poll after a reset registers the task's waker (the task's waker
    /// stays the same for its life), and afterwards `Sleep::is_elapsed` says
    /// whether polling again can find it fired. The timer lies inside the
    /// connection's task, not in an allocation of its own: that check runs
    /// on every wake-up of the task (`perf`: `poll_fired` 0.6% of the
    /// proxy's time), and there it reads memory the task already touches.
    struct Watchdog {
        #[pin]
        sleep: tokio::time::Sleep,
        registered: bool,
    }
}

impl Watchdog {
    fn new(after: Duration) -> Self {
        Self {
            sleep: tokio::time::sleep(after),
            registered: false,
        }
    }

    fn poll_fired(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.project();
        if *this.registered && !this.sleep.is_elapsed() {
            return std::task::Poll::Pending;
        }
        // Unconstrained: with the task's cooperative budget spent, a
        // `Sleep` answers Pending without registering anything, and this
        // timer would never be polled again.
        let polled = std::pin::pin!(tokio::task::unconstrained(this.sleep)).poll(cx);
        *this.registered = polled.is_pending();
        polled
    }

    fn reset(self: std::pin::Pin<&mut Self>, at: tokio::time::Instant) {
        let this = self.project();
        this.sleep.reset(at);
        *this.registered = false;
    }
}

/// Polls `future` on its first poll, and afterwards only when `may_be_ready`
/// says so. For a future that registers the task's waker on its first poll
/// and whose readiness can be checked cheaply without polling it (a watch
/// channel's version): the connection task is woken for every read and
/// write, and polling such a future each time costs a lock.
async fn gate<F: std::future::Future>(future: F, may_be_ready: impl Fn() -> bool) -> F::Output {
    // Unconstrained, so that its first poll registers even when the task's
    // cooperative budget is spent (see `Watchdog::poll_fired`).
    let mut future = std::pin::pin!(tokio::task::unconstrained(future));
    let mut first = true;
    std::future::poll_fn(|cx| {
        if !first && !may_be_ready() {
            return std::task::Poll::Pending;
        }
        first = false;
        future.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use super::*;

    /// Spends the task's cooperative budget within the current poll (tokio
    /// operations then answer Pending and wake the task to yield).
    fn spend_budget(cx: &mut std::task::Context<'_>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..1_000 {
            tx.send(()).unwrap();
        }
        while let Poll::Ready(Some(())) = rx.poll_recv(cx) {}
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_fires_when_first_polled_without_budget() {
        let mut watchdog = std::pin::pin!(Watchdog::new(Duration::from_secs(1)));
        std::future::poll_fn(|cx| {
            spend_budget(cx);
            assert!(watchdog.as_mut().poll_fired(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let fired = std::future::poll_fn(|cx| watchdog.as_mut().poll_fired(cx));
        let fired = tokio::time::timeout(Duration::from_secs(60), fired).await;
        assert!(fired.is_ok(), "the watchdog never fired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_drain_signal_wakes_when_first_polled_without_budget() {
        let (stop, mut receiver) = watch::channel(false);
        let probe = receiver.clone();
        let mut stopped = std::pin::pin!(gate(receiver.changed(), || {
            probe.has_changed().unwrap_or(true)
        }));
        std::future::poll_fn(|cx| {
            spend_budget(cx);
            assert!(stopped.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.send(true).unwrap();
        });
        // Paused time: the send happens at 1 s. Unwoken, the task would
        // be polled again only by the timeout's timer (which polls the
        // signal before giving up), at 60 s.
        let started = tokio::time::Instant::now();
        let woke = tokio::time::timeout(Duration::from_secs(60), stopped).await;
        assert!(woke.is_ok());
        assert_eq!(
            started.elapsed().as_secs(),
            1,
            "the drain signal did not wake the task"
        );
    }
}
