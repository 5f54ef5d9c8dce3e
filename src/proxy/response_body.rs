//! The body of every response palisade sends: the upstream's, streamed
//! untouched, or palisade's own. It counts bytes out and, when finished or
//! dropped, records the request's metrics and access line exactly once.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use super::conn::{ConnRequestGuard, Handoff};
use super::upstream::ExchangeBody;
use crate::observe::access::RequestRecord;
use crate::policy::response_headers::PendingHeaders;

/// Boxed error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Inner {
    Upstream(ExchangeBody),
    Local(Full<Bytes>),
}

/// The largest piece of a response handed to hyper at once on HTTP/2
/// (its default frame size). hyper asks for the next piece only when the
/// client's window has taken the whole previous one, and a piece that waits
/// `idle_timeout` for it ends the connection (`conn::Handoff`): small
/// pieces keep a client that reads slowly but steadily from looking stalled.
const HTTP2_PIECE: usize = 16 * 1024;

/// A response body plus its end-of-request bookkeeping.
pub struct ResponseBody {
    inner: Inner,
    /// HTTP/2: the rest of a chunk larger than [`HTTP2_PIECE`].
    rest: Bytes,
    bytes_out: u64,
    record: Option<Box<RequestRecord>>,
    connection: Option<ConnRequestGuard>,
    /// The headers not in the response's header map until it is written:
    /// the upstream's lines when palisade's exchange kept them as bytes,
    /// and those palisade set (`policy::response_headers`).
    pending: PendingHeaders,
}

impl ResponseBody {
    /// palisade's own body.
    pub fn local(bytes: Bytes) -> Self {
        Self {
            inner: Inner::Local(Full::new(bytes)),
            rest: Bytes::new(),
            bytes_out: 0,
            record: None,
            connection: None,
            pending: PendingHeaders::default(),
        }
    }

    /// The upstream's body, streamed (with the header lines its exchange
    /// kept as bytes, if any).
    pub fn upstream(mut body: ExchangeBody) -> Self {
        let pending = PendingHeaders::new(body.take_upstream_lines());
        Self {
            inner: Inner::Upstream(body),
            rest: Bytes::new(),
            bytes_out: 0,
            record: None,
            connection: None,
            pending,
        }
    }

    /// Empties palisade's own body for a response to `HEAD`, which
    /// carries no content (RFC 9110 §9.3.2): the HTTP/1 writers skip it
    /// anyway, hyper's HTTP/2 server would send it in DATA frames, which a
    /// client takes as a protocol error. An upstream's body is left alone
    /// (an exchange for `HEAD` reads none).
    pub fn drop_local_content(&mut self) {
        if let Inner::Local(_) = self.inner {
            self.inner = Inner::Local(Full::new(Bytes::new()));
        }
    }

    /// The headers beside the response's header map, to edit.
    pub fn pending_headers_mut(&mut self) -> &mut PendingHeaders {
        &mut self.pending
    }

    /// The headers beside the response's header map, to write after it.
    pub fn pending_headers(&self) -> &PendingHeaders {
        &self.pending
    }

    /// Attaches the record to finish when the body ends, and the marker
    /// that keeps the connection from counting as idle until then.
    pub fn set_record(&mut self, record: Box<RequestRecord>, connection: ConnRequestGuard) {
        self.record = Some(record);
        self.connection = Some(connection);
    }

    /// Records the request. The connection marker stays until hyper drops
    /// the body: on HTTP/2 the last piece may still be on its way to a
    /// slow client, and the connection must not count as idle before.
    fn finish(&mut self) {
        if let Some(record) = self.record.take() {
            let ended = record.finish(self.bytes_out);
            if let Some(connection) = &mut self.connection {
                connection.ended_at(ended);
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Self {
            rest,
            bytes_out,
            connection,
            ..
        } = &mut *self;
        if let Some(handoff) = connection.as_ref().and_then(|c| c.handoff()) {
            handoff.polled();
            if !rest.is_empty() {
                return Poll::Ready(Some(Ok(hand_out(rest, bytes_out, handoff))));
            }
        }
        let polled = match &mut self.inner {
            Inner::Upstream(body) => {
                ready!(Pin::new(body).poll_frame(cx))
            }
            Inner::Local(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|r| r.map_err(|never| match never {}))
            }
        };
        let this = &mut *self;
        let handoff = this.connection.as_ref().and_then(|c| c.handoff());
        match polled {
            Some(Ok(frame)) => match (frame.into_data(), handoff) {
                (Ok(data), Some(handoff)) => {
                    this.rest = data;
                    Poll::Ready(Some(Ok(hand_out(
                        &mut this.rest,
                        &mut this.bytes_out,
                        handoff,
                    ))))
                }
                (Ok(data), None) => {
                    this.bytes_out += data.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                // Trailers are not passed on, on any engine or protocol:
                // an upstream's trailer block could carry a second request
                // ID or a header palisade removes, past every response
                // policy. Polled again for what follows (the end).
                (Err(_trailers), _) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            },
            other => {
                this.finish();
                Poll::Ready(other)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if !self.rest.is_empty() {
            return false;
        }
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let inner = match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(body) => body.size_hint(),
        };
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// The next HTTP/2 piece of `rest` (at most [`HTTP2_PIECE`]), counted and
/// marked as waiting for the client's window.
fn hand_out(rest: &mut Bytes, bytes_out: &mut u64, handoff: &Handoff) -> Frame<Bytes> {
    let piece = rest.split_to(rest.len().min(HTTP2_PIECE));
    *bytes_out += piece.len() as u64;
    handoff.handed_out();
    Frame::data(piece)
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
    }
}
