//! The streamed body limit: counts request bytes as they flow to the
//! upstream and fails the stream the moment `max_body` is passed, so the
//! upstream request is aborted (never completed with a truncated body) and
//! nothing is ever buffered whole.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A client's request body as the pipeline receives it: hyper's stream,
/// a small body palisade's own HTTP/1 reader read whole, or nothing at all
/// (see `proxy::h1`).
#[derive(Debug)]
pub enum RequestBody {
    /// Read by hyper from the client connection.
    Hyper(Incoming),
    /// A `Content-Length` body no larger than any route's `max_body` that
    /// had arrived whole with its head, taken by palisade's HTTP/1 reader;
    /// `None` once it has been polled out.
    Buffered(Option<Bytes>),
    /// The request has no body.
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Hyper(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Buffered(body) => Poll::Ready(
                body.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(body) => body.is_end_stream(),
            RequestBody::Buffered(body) => body.as_ref().is_none_or(Bytes::is_empty),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(body) => body.size_hint(),
            RequestBody::Buffered(body) => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Shared between the body (in the client's hands) and the pipeline, which
/// needs to know afterwards why a send failed and how much came in.
#[derive(Debug, Default)]
pub struct BodyProgress {
    /// Bytes received from the client so far.
    pub bytes: AtomicU64,
    /// The limit was passed.
    pub overflowed: AtomicBool,
    /// The client's body ended cleanly.
    pub complete: AtomicBool,
    /// The body ended in a trailer section (well-formed or not).
    pub trailers: AtomicBool,
    /// Set by the pipeline for a chunked HTTP/1 body, where a trailer
    /// section with no field can only be a bare LF after the last chunk
    /// (an HTTP/2 client may send an empty trailer block).
    pub chunked: AtomicBool,
}

impl BodyProgress {
    /// Whether the whole body was read and ended with its last chunk (or
    /// its length), no trailer section after it. Only then may a
    /// connection that sent a chunked body serve another request: a
    /// trailer section ends where hyper's reader says (at CRLF CRLF),
    /// while a bare LF ends it for other readers, so bytes a front proxy
    /// sent as the next request may have been read as trailers, by the
    /// pipeline or by hyper's drain of a body left unread.
    pub fn ended_cleanly(&self) -> bool {
        self.complete.load(Ordering::Relaxed) && !self.trailers.load(Ordering::Relaxed)
    }
}

/// Why the request body stream failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More than `max_body` bytes.
    #[error("request body exceeds the route's max_body")]
    TooLarge,
    /// The client connection failed mid-body.
    #[error("client body stream failed: {0}")]
    Client(#[from] hyper::Error),
    /// A chunked body's trailer section with no field in it: only a bare
    /// LF right after the last chunk makes one (hyper reads on to the next CRLF CRLF,
    /// which may be the end of a pipelined request), so the body's end is
    /// ambiguous.
    #[error("request trailer section began with a bare LF")]
    MalformedTrailers,
}

pin_project_lite::pin_project! {
    /// A client body with a byte cap.
    pub struct LimitedBody {
        #[pin]
        inner: RequestBody,
        limit: u64,
        seen: u64,
        progress: Arc<BodyProgress>,
    }
}

impl LimitedBody {
    /// Wraps `inner`, failing once more than `limit` bytes have passed.
    pub fn new(inner: RequestBody, limit: u64, progress: Arc<BodyProgress>) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            progress,
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        // Trailers from the client are dropped: they could carry an
        // identity header after every check ran (and the upstream may merge
        // them into the headers it reads). A trailer frame is the last one;
        // the connection closes after the response (`ended_cleanly`).
        let mut next = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(Ok(frame)) = &next
            && let Some(trailers) = frame.trailers_ref()
        {
            this.progress.trailers.store(true, Ordering::Relaxed);
            if trailers.is_empty() && this.progress.chunked.load(Ordering::Relaxed) {
                return Poll::Ready(Some(Err(BodyError::MalformedTrailers)));
            }
            next = ready!(this.inner.as_mut().poll_frame(cx));
        }
        match next {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    this.progress.bytes.store(*this.seen, Ordering::Relaxed);
                    if *this.seen > *this.limit {
                        this.progress.overflowed.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                // A body of known length ends with its last bytes: the
                // upstream client may not ask for more.
                if this.inner.is_end_stream() {
                    this.progress.complete.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            None => {
                this.progress.complete.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// What the upstream client sends: the client's body streamed through
    /// the limit, or a small body kept in memory so a retry can replay it.
    #[project = UpstreamBodyProj]
    pub enum UpstreamBody {
        /// Streamed, sent once.
        Stream { #[pin] body: LimitedBody },
        /// Buffered (at most `retry::MAX_REPLAY_BYTES`), replayable: sent
        /// as one frame (then empty).
        Replay { bytes: Bytes },
    }
}

impl UpstreamBody {
    /// A replayable body.
    pub fn replay(bytes: Bytes) -> Self {
        Self::Replay { bytes }
    }

    /// The whole body, when it is known without reading the client: held
    /// in memory (a replayable one), or a stream that has already ended
    /// (a request without a body, on a route that does not retry).
    pub fn replay_bytes(&self) -> Option<Bytes> {
        match self {
            Self::Replay { bytes } => Some(bytes.clone()),
            Self::Stream { body } if body.is_end_stream() => Some(Bytes::new()),
            Self::Stream { .. } => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            UpstreamBodyProj::Stream { body } => body.poll_frame(cx),
            UpstreamBodyProj::Replay { bytes } if bytes.is_empty() => Poll::Ready(None),
            UpstreamBodyProj::Replay { bytes } => {
                Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream { body } => body.is_end_stream(),
            Self::Replay { bytes } => bytes.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream { body } => body.size_hint(),
            Self::Replay { bytes } => SizeHint::with_exact(bytes.len() as u64),
        }
    }
}

/// Reads a small body whole (for replay), still enforcing `limit`.
pub async fn collect_for_replay(
    inner: RequestBody,
    limit: u64,
    progress: Arc<BodyProgress>,
) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt;
    let collected = LimitedBody::new(inner, limit, progress).collect().await?;
    Ok(collected.to_bytes())
}

/// The client's body as the pipeline hands it to the upstream: still
/// streaming (every route but signed webhooks), or already read whole and
/// verified (`hmac:` routes; at most `max_body`), sent exactly as received.
#[derive(Debug)]
pub enum ClientBody {
    /// Not read yet: streamed through the limit.
    Streaming(RequestBody),
    /// Read whole before authentication.
    Held(Bytes),
}

/// Reads the whole body, at most `limit` bytes (beyond: `TooLarge`, and
/// nothing was sent anywhere): the one place palisade holds a body.
pub async fn hold(
    inner: RequestBody,
    limit: u64,
    progress: Arc<BodyProgress>,
) -> Result<Bytes, BodyError> {
    collect_for_replay(inner, limit, progress).await
}
