//! The body of every response palisade sends: the upstream's, streamed
//! untouched, or palisade's own. It counts bytes out and, when finished or
//! dropped, records the request's metrics and access line exactly once.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use super::conn::ConnRequestGuard;
use super::upstream::ExchangeBody;
use crate::observe::access::RequestRecord;

/// Boxed error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Inner {
    Upstream(ExchangeBody),
    Local(Full<Bytes>),
}

/// A response body plus its end-of-request bookkeeping.
pub struct ResponseBody {
    inner: Inner,
    bytes_out: u64,
    record: Option<Box<RequestRecord>>,
    connection: Option<ConnRequestGuard>,
}

impl ResponseBody {
    /// palisade's own body.
    pub fn local(bytes: Bytes) -> Self {
        Self {
            inner: Inner::Local(Full::new(bytes)),
            bytes_out: 0,
            record: None,
            connection: None,
        }
    }

    /// The upstream's body, streamed.
    pub fn upstream(body: ExchangeBody) -> Self {
        Self {
            inner: Inner::Upstream(body),
            bytes_out: 0,
            record: None,
            connection: None,
        }
    }

    /// Attaches the record to finish when the body ends, and the marker
    /// that keeps the connection from counting as idle until then.
    pub fn set_record(&mut self, record: RequestRecord, connection: ConnRequestGuard) {
        self.record = Some(Box::new(record));
        self.connection = Some(connection);
    }

    fn finish(&mut self) {
        if let Some(record) = self.record.take() {
            record.finish(self.bytes_out);
        }
        self.connection = None;
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(handoff) = self.connection.as_ref().and_then(|c| c.handoff()) {
            handoff.polled();
        }
        let polled = match &mut self.inner {
            Inner::Upstream(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|r| r.map_err(BoxError::from))
            }
            Inner::Local(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|r| r.map_err(|never| match never {}))
            }
        };
        match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out += data.len() as u64;
                    if let Some(handoff) = self.connection.as_ref().and_then(|c| c.handoff()) {
                        handoff.handed_out();
                    }
                }
            }
            Some(Err(_)) | None => self.finish(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
    }
}
