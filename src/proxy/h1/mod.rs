//! palisade's own HTTP/1.1 serving for plaintext connections
//! (`server.http1_engine = "palisade"`), for speed: hyper's HTTP/1
//! machinery costs more per request than everything else in a plain proxy
//! (see `bench/RESULTS.md`).
//!
//! It serves only what needs no framing decision: a request whose head
//! declares no body, or a small one by one plain `Content-Length` (see
//! [`parse`]) that came whole with its head. The first head that is
//! anything else (a larger, chunked or unfinished body, `Expect`, an
//! upgrade, HTTP/1.0, a head `httparse` refuses) hands the connection to
//! hyper for the rest of its life, with the bytes already read replayed
//! first ([`rewind`]): from there it is served exactly as on the hyper
//! engine. So streamed bodies, chunked coding, `100-continue`, upgrades
//! and every parse error stay hyper's. A head larger than the head buffer
//! is the one exception: the pipeline refuses it (414 or 431, see
//! `parse::oversized`) where hyper would send a bare 431.
//!
//! A small body is taken only when its bytes are here: those read with
//! the head, and what the socket already holds, read without waiting
//! ([`fill_now`]). A body still on its way is hyper's, which hands the
//! request on at once and streams the body under the route's timeout (a
//! stalled upload is a 504, and never counts against the upstream).
//! Small means at most [`MAX_BODY_BUFFER`] and at most every route's
//! `max_body` ([`body_buffer`]), so a body a route must refuse unread
//! (413 at once) is never taken.
//!
//! Per request it does what hyper's server does for such a request:
//! the same parser and settings, the request handed to the same
//! `pipeline::handle`, the response head and body framing written by
//! hyper's rules ([`encode`]), pipelined requests answered in order, a
//! client that closes while its request is in flight cancels it, and a
//! graceful shutdown lets the response in flight finish with
//! `Connection: close`. The connection's deadlines are `proxy::conn`'s, as
//! for hyper: they watch the socket, not the engine.

mod encode;
mod parse;
mod rewind;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::BytesMut;
use http_body::Body;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use self::encode::{EncodeError, Framing};
use self::parse::{Head, PlainRequest};
use self::rewind::Rewind;
use super::conn::Activity;
use super::pipeline::{ConnInfo, handle_boxed};
use super::protocol;
use super::response_body::{BoxError, ResponseBody};
use super::state::Shared;
use super::wire::{self, write_two};
use crate::policy::body::RequestBody;

/// Bytes read ahead of the head buffer's use at a time.
const READ_CHUNK: usize = 4096;
/// Response bytes gathered before they are written out: small chunks of
/// a body that arrive together go out in one write.
const WRITE_BATCH: usize = 64 * 1024;
/// A body chunk at least this large is written from where it lies, not
/// copied behind the head.
const COPY_LIMIT: usize = 8 * 1024;

/// The largest declared body palisade's reader takes whole with its head
/// (NGINX buffers request bodies of up to 16 KiB in memory by default);
/// larger ones stream through hyper.
pub const MAX_BODY_BUFFER: usize = 64 * 1024;

/// The largest declared body palisade's reader takes on a connection
/// accepted under `policy`: [`MAX_BODY_BUFFER`], or less when a route's
/// `max_body` is smaller (a reload applies to the next connection, as the
/// other connection settings do).
pub fn body_buffer(policy: &crate::config::Policy) -> usize {
    usize::try_from(policy.routes.smallest_max_body())
        .unwrap_or(usize::MAX)
        .min(MAX_BODY_BUFFER)
}

/// What serving one connection needs.
#[derive(Clone)]
pub struct ConnContext {
    /// The generation and metrics.
    pub shared: Arc<Shared>,
    /// The peer and the connection's settings.
    pub info: ConnInfo,
    /// The connection's activity, for its deadlines.
    pub activity: Arc<Activity>,
    /// The largest head (hyper's `max_buf_size` after a hand-over).
    pub head_buffer: usize,
    /// The largest declared body read whole ([`body_buffer`]).
    pub body_buffer: usize,
}

/// One connection served by palisade's engine (and by hyper after a
/// hand-over). Polled by `server`'s watch loop like hyper's connections.
pub struct Connection {
    future: Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>,
    closing: Arc<AtomicBool>,
}

impl Connection {
    /// Serves `io` until the client leaves or a graceful shutdown ends it.
    pub fn new<I>(io: I, context: ConnContext) -> Self
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let closing = Arc::new(AtomicBool::new(false));
        let future = Box::pin(serve(io, context, closing.clone()));
        Self { future, closing }
    }

    /// Finishes the request in flight (its response says
    /// `Connection: close`) and closes; an idle connection closes at once.
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

impl Future for Connection {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

/// How a read for the next head ended.
enum Read {
    /// Bytes came in.
    Data,
    /// The client closed, or a graceful shutdown found nothing started.
    Over,
}

/// Serves the connection. A function returning an `async move` block, not
/// an `async fn`: an `async fn` keeps each argument twice in its future
/// (see `proxy::pipeline`), 176 bytes here, and this future is boxed once
/// per connection and held while it idles (it crossed an allocator size
/// class at 2,568 bytes: 512 bytes more per idle connection).
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps each argument twice in its future; see proxy::pipeline"
)]
fn serve<I>(
    mut io: I,
    context: ConnContext,
    closing: Arc<AtomicBool>,
) -> impl Future<Output = Result<(), BoxError>> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let mut buffer = BytesMut::new();
        let mut out = Vec::new();
        loop {
            let mut request = loop {
                if !buffer.is_empty() {
                    match parse::read_head(&mut buffer, context.head_buffer, context.body_buffer) {
                        Head::Plain(request) => break request,
                        Head::Partial => {}
                        Head::BodyPending { total } => {
                            if !fill_now(&mut io, &mut buffer, total) {
                                return Box::pin(to_hyper(io, buffer, context, closing)).await;
                            }
                            continue;
                        }
                        Head::Hyper => {
                            return Box::pin(to_hyper(io, buffer, context, closing)).await;
                        }
                        Head::Oversized => {
                            return Box::pin(refuse_oversized(io, buffer, out, context, closing))
                                .await;
                        }
                    }
                }
                match read_more(&mut io, &mut buffer, &closing).await? {
                    Read::Data => {}
                    Read::Over => return Ok(()),
                }
            };
            if request.body_length > 0 {
                let body = buffer.split_to(request.body_length).freeze();
                *request.request.body_mut() = RequestBody::Buffered(Some(body));
            }
            let last =
                exchange(&mut io, &mut buffer, &mut out, &context, &closing, request).await?;
            if last || closing.load(Ordering::Relaxed) {
                let _ = io.shutdown().await;
                return Ok(());
            }
            if out.capacity() > WRITE_BATCH {
                out = Vec::new();
            }
        }
    }
}

/// A head larger than the buffer: the pipeline answers it (414 or 431,
/// problem+json, counted and logged; hyper would send a bare 431), then
/// the connection closes after a lingering read. Boxed by the caller: rare,
/// and inline it would be part of every connection's future.
async fn refuse_oversized<I>(
    mut io: I,
    mut buffer: BytesMut,
    mut out: Vec<u8>,
    context: ConnContext,
    closing: Arc<AtomicBool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let request = Box::new(parse::oversized(&buffer));
    buffer.clear();
    exchange(&mut io, &mut buffer, &mut out, &context, &closing, request).await?;
    let _ = io.shutdown().await;
    linger(&mut io).await;
    Ok(())
}

/// Bytes of a refused head read and dropped at most, after its answer.
const LINGER_BYTES: usize = 256 * 1024;
/// How long the client may pause while the rest of the head is dropped.
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// After answering a head that was never read whole, the client may still
/// be sending it: closing with its bytes unread would reset the
/// connection, and a reset can destroy the answer before the client reads
/// it. So the rest is read and dropped (NGINX's lingering close), up to
/// [`LINGER_BYTES`], until the client closes or pauses for [`LINGER_IDLE`].
/// The buffer is on the heap: this is part of every connection's future.
async fn linger<I: AsyncRead + Unpin>(io: &mut I) {
    use tokio::io::AsyncReadExt;
    let mut sink = vec![0; READ_CHUNK];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match tokio::time::timeout(LINGER_IDLE, io.read(&mut sink)).await {
            Ok(Ok(read)) if read > 0 => left = left.saturating_sub(read),
            _ => return,
        }
    }
}

/// Reads what the socket already holds, without waiting, until `buffer`
/// has `total` bytes; whether it does. (A read that would wait, the
/// client's end, or an error all say no: the connection goes to hyper,
/// which reads on from there.)
fn fill_now<I: AsyncRead + Unpin>(io: &mut I, buffer: &mut BytesMut, total: usize) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    while buffer.len() < total {
        match wire::poll_read(io, buffer, total - buffer.len(), &mut cx) {
            Poll::Ready(Ok(read)) if read > 0 => {}
            _ => return false,
        }
    }
    true
}

/// Reads more of the next head; a graceful shutdown ends the wait.
async fn read_more<I: AsyncRead + Unpin>(
    io: &mut I,
    buffer: &mut BytesMut,
    closing: &AtomicBool,
) -> std::io::Result<Read> {
    std::future::poll_fn(|cx| {
        if closing.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(Read::Over));
        }
        match wire::poll_read(io, buffer, READ_CHUNK, cx) {
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(Read::Over)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(Read::Data)),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Serves one request: the pipeline's answer written out. `Ok(true)` when
/// the connection ends after it. The request stays in its box until the
/// pipeline's future takes it: unboxed into this future and taken apart
/// here, it was copied twice more.
async fn exchange<I>(
    io: &mut I,
    buffer: &mut BytesMut,
    out: &mut Vec<u8>,
    context: &ConnContext,
    closing: &AtomicBool,
    request: Box<PlainRequest>,
) -> Result<bool, BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let keep_alive = request.keep_alive;
    let method = request.request.method().clone();
    let guard = context.activity.head_started();
    let mut handling = handle_boxed(
        context.shared.clone(),
        context.info.clone(),
        guard,
        request.request,
    );
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(Ok(response)) = handling.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        if client_left(io, buffer, cx) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    drop(handling);
    let Some(response) = response else {
        return Ok(true);
    };
    // Written from where it is: taken apart, the response was copied.
    let mut response = response;
    let body = response.body();
    let length = if body.is_end_stream() {
        None
    } else {
        Some(body.size_hint().exact())
    };
    let keep_alive = keep_alive && !closing.load(Ordering::Relaxed);
    out.clear();
    let pending = body.pending_headers();
    let encoded = match encode::encode_head(&response, pending, &method, length, keep_alive, out) {
        Ok(encoded) => encoded,
        Err(EncodeError::BadLength) => {
            return Err("the response's Content-Length is invalid".into());
        }
        Err(EncodeError::Informational) => return Err("a 1xx response".into()),
    };
    // The head is written: its map is not held while the body streams.
    drop(std::mem::take(response.headers_mut()));
    let complete = match encoded.framing {
        Framing::Length(0) => {
            write_parts(io, out, &[]).await?;
            true
        }
        framing => send_body(io, buffer, out, response.body_mut(), framing).await?,
    };
    // The body (and with it the request's record and in-flight mark) is
    // done before the next head is read.
    drop(response);
    Ok(encoded.last || !complete)
}

/// hyper's rule while a message is in flight (its `mid_message_detect_eof`):
/// when nothing of the next request is buffered, a read that finds the
/// client gone (end of stream or an error) means the exchange is abandoned;
/// bytes that do come are kept as the next request's, and reading stops.
/// Registers for the read when it returns `false` with nothing buffered.
fn client_left<I: AsyncRead + Unpin>(
    io: &mut I,
    buffer: &mut BytesMut,
    cx: &mut Context<'_>,
) -> bool {
    if !buffer.is_empty() {
        return false;
    }
    // Room for one byte, not a whole read: the buffer still shares its
    // memory with the request's head, so asking for `READ_CHUNK` would
    // allocate a new one on every request (the room left after the head
    // is plenty for a look).
    matches!(
        wire::poll_read(io, buffer, 1, cx),
        Poll::Ready(Ok(0)) | Poll::Ready(Err(_))
    )
}

/// Writes the body after the head in `out`. `Ok(false)` when the
/// connection must end after it: the body ended short of its declared
/// length, or it was sent as it came ([`Framing::Close`]). A client that
/// leaves while the body waits on the upstream ends it with an error: the
/// body (and with it the upstream connection) is dropped, not held until
/// the upstream sends again.
async fn send_body<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    buffer: &mut BytesMut,
    out: &mut Vec<u8>,
    body: &mut ResponseBody,
    framing: Framing,
) -> Result<bool, BoxError> {
    let mut framing = framing;
    let chunk_end: &[u8] = if framing == Framing::Chunked {
        b"\r\n"
    } else {
        b""
    };
    loop {
        let next = std::future::poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            // Nothing more for now: what is gathered goes out meanwhile.
            Poll::Pending if !out.is_empty() => Poll::Ready(Next::Flush),
            Poll::Pending if client_left(io, buffer, cx) => Poll::Ready(Next::ClientLeft),
            Poll::Pending => Poll::Pending,
            Poll::Ready(frame) => Poll::Ready(Next::Frame(frame)),
        })
        .await;
        let frame = match next {
            Next::Flush => {
                write_parts(io, out, &[]).await?;
                continue;
            }
            Next::ClientLeft => return Err("the client left during the response".into()),
            Next::Frame(frame) => frame,
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers are not sent (see `encode`).
                Err(_) => continue,
            },
            Some(Err(error)) => {
                // The upstream broke off: the connection ends, and what is
                // gathered is not sent (hyper sends nothing it has not
                // flushed yet; a body that breaks at once sends no head).
                return Err(error);
            }
            None => {
                let complete = match framing {
                    Framing::Chunked => {
                        out.extend_from_slice(b"0\r\n\r\n");
                        true
                    }
                    Framing::Length(left) => left == 0,
                    Framing::Close => false,
                };
                write_parts(io, out, &[]).await?;
                return Ok(complete);
            }
        };
        if data.is_empty() {
            continue;
        }
        let data = match &mut framing {
            Framing::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= take as u64;
                data.slice(..take)
            }
            Framing::Chunked => {
                chunk_size(out, data.len());
                data
            }
            Framing::Close => data,
        };
        if data.len() >= COPY_LIMIT {
            write_parts(io, out, &data).await?;
        } else {
            out.extend_from_slice(&data);
        }
        out.extend_from_slice(chunk_end);
        if framing == Framing::Length(0) {
            // All that was declared is sent; anything more is dropped,
            // as hyper does.
            write_parts(io, out, &[]).await?;
            return Ok(true);
        }
        if out.len() >= WRITE_BATCH {
            write_parts(io, out, &[]).await?;
        }
    }
}

/// What waiting on the response body gave.
enum Next<F> {
    /// A frame, or the body's end (`None`).
    Frame(Option<F>),
    /// The body has nothing now and bytes are gathered: send them.
    Flush,
    /// The client went away while the body had nothing to send.
    ClientLeft,
}

/// A chunk-size line: the size in hex, then CRLF.
fn chunk_size(out: &mut Vec<u8>, size: usize) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(HEX[(size >> (shift * 4)) & 0xF]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `out` then `data` (one vectored write where the socket takes
/// it), and empties `out`.
async fn write_parts<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    data: &[u8],
) -> std::io::Result<()> {
    write_two(io, out, data).await?;
    out.clear();
    Ok(())
}

/// The rest of the connection is hyper's: the bytes read so far first.
async fn to_hyper<I>(
    io: I,
    buffer: BytesMut,
    context: ConnContext,
    closing: Arc<AtomicBool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Rewind::new(buffer.freeze(), io));
    let service = super::server::proxy_service(context.shared, context.info, context.activity);
    let conn = protocol::http1_builder(context.head_buffer)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut shut_down = false;
    std::future::poll_fn(|cx| {
        if !shut_down && closing.load(Ordering::Relaxed) {
            conn.as_mut().graceful_shutdown();
            shut_down = true;
        }
        conn.as_mut().poll(cx)
    })
    .await
    .map_err(BoxError::from)
}
