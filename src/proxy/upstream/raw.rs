//! palisade's own HTTP/1.1 exchange with the upstream
//! (`upstream.http1_engine = "palisade"`), for speed: hyper's client sends
//! each request through a dispatch channel and each response body through
//! another, which costs more per request than the rest of a plain proxy's
//! upstream side.
//!
//! It sends only a request whose body is known whole (held in memory, or
//! none at all: most GETs; see `eligible_payload`); a streamed body goes through hyper on the
//! same connection (`pool`). The response is read by hyper's client rules
//! (`proto::h1::role::Client::decoder`): interim 1xx heads are skipped; no
//! body after `HEAD`, 204 or 304; `Transfer-Encoding` ending in `chunked`
//! is chunked, any other coding reads to the end; otherwise
//! `Content-Length` (every value the same number, or the exchange fails),
//! or to the end. A connection goes back to the pool only after a body
//! that ended exactly where its framing said, with nothing more buffered,
//! and when neither side asked to close.

use std::mem::MaybeUninit;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite};

use super::rewrite::AddedLines;
use crate::policy::body::UpstreamBody;
use crate::policy::headers::{is_hop_by_hop_name, names_nothing};
use crate::policy::response_headers::{Known, UpstreamLines};
use crate::proxy::response_body::BoxError;
use crate::proxy::wire::{self, INLINE_LINES, Span, Spans, write_two};

/// Header lines palisade adds to a response (security headers, the
/// request ID, rate-limit and CORS headers): room for them when the map is
/// made, so adding them does not grow it.
const ROOM_FOR_RESPONSE_HEADERS: usize = 12;

/// Response header lines read at most (hyper's client default).
const MAX_HEADERS: usize = 100;
/// The largest response head (hyper's default read buffer limit).
const MAX_HEAD: usize = 400 * 1024;
/// Bytes asked of the socket at a time: room for a whole response of a
/// few tens of KiB in one read (a 16 KiB answer took two reads and, with
/// them, two writes to the client at 16 KiB; bench/RESULTS.md, session 14).
const READ_CHUNK: usize = 64 * 1024;
/// Longest chunk-size line (with extensions, before its LF) accepted,
/// whether it came in one read or in several.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes skipped after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;
/// Most trailer lines after the last chunk (hyper's limit).
const MAX_TRAILER_LINES: usize = 100;

/// The body palisade's exchange would send for `request`: only one known
/// whole (held in memory, or none at all), on a request that declares no
/// transfer coding of its own.
pub fn eligible_payload(request: &Request<UpstreamBody>) -> Option<Bytes> {
    if !eligible_head(request.headers()) {
        return None;
    }
    request.body().replay_bytes()
}

/// Whether a head with a body of known bytes is one this engine writes
/// (a `Transfer-Encoding` line is left to hyper).
pub fn eligible_head(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::TRANSFER_ENCODING)
}

/// The lines of a request head as the engine writes them, borrowed.
#[derive(Clone, Copy)]
pub struct HeadRef<'a> {
    /// Method.
    pub method: &'a Method,
    /// Upstream URI (origin form is written).
    pub uri: &'a http::Uri,
    /// Header lines.
    pub headers: &'a HeaderMap,
    /// palisade's own lines, written after `headers` (a request of its
    /// own has them in its map).
    pub added: Option<&'a AddedLines>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum RawFailure {
    /// The request could not be written: nothing reached the upstream
    /// (on a reused connection, it had closed meanwhile).
    Unsent(BoxError),
    /// The upstream closed (or reset) the connection after the request
    /// was written and before a byte of an answer: on a reused
    /// connection, most often its keep-alive timer closing it as the
    /// request went out.
    Unanswered(BoxError),
    /// The upstream broke the exchange after the request was sent.
    Broken(BoxError),
}

/// One upstream connection between exchanges: the socket and what was
/// read past the last response (nothing, on a reusable connection).
pub struct RawConn<T> {
    /// Boxed: a TLS stream is large, and the connection moves with every
    /// exchange.
    io: Box<T>,
    buffer: BytesMut,
}

impl<T> RawConn<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// A fresh connection.
    pub fn new(io: T) -> Self {
        Self {
            io: Box::new(io),
            buffer: BytesMut::new(),
        }
    }

    /// The socket, for hyper (only between exchanges, nothing buffered).
    pub fn into_io(self) -> Option<T> {
        self.buffer.is_empty().then_some(*self.io)
    }

    /// The socket, for a look between exchanges (`RawIo::idle_and_open`).
    pub fn io_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Reads what the socket has onto the buffer, with room for at least
    /// `want` more bytes; `Ready(Ok(0))` when the upstream has closed.
    fn poll_fill(&mut self, want: usize, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        wire::poll_read(&mut *self.io, &mut self.buffer, want, cx)
    }

    /// Sends a request head and its in-memory body, and reads the
    /// response head. The connection then belongs to the returned body
    /// until it ends.
    pub async fn exchange(
        mut self,
        request: HeadRef<'_>,
        payload: &Bytes,
    ) -> Result<Response<RawBody<T>>, RawFailure> {
        // Room for a browser's head or a bearer token's (256 bytes grew,
        // and copied itself, on every request with a token); written out
        // and dropped before the answer is read.
        let mut head = Vec::with_capacity(1024);
        encode_request(request, payload.len(), &mut head);
        if let Err(error) = write_two(&mut *self.io, &head, payload).await {
            return Err(RawFailure::Unsent(error.into()));
        }
        let head_request = *request.method == Method::HEAD;
        let head = self.read_head(head_request).await?;
        let (parts, ()) = head.response.into_parts();
        let body = RawBody {
            conn: Some(self),
            framing: head.framing,
            keep_alive: head.keep_alive,
            lines: head.lines,
        };
        Ok(Response::from_parts(parts, body))
    }

    async fn read_head(&mut self, head_request: bool) -> Result<Head, RawFailure> {
        // Whether any byte of an answer came (a reusable connection starts
        // with an empty buffer).
        let mut answered = false;
        loop {
            if !self.buffer.is_empty() {
                answered = true;
                match parse_response(&mut self.buffer, head_request).map_err(RawFailure::Broken)? {
                    Parsed::Partial => {}
                    Parsed::Interim => continue,
                    Parsed::Head(head) => return Ok(head),
                }
            }
            if self.buffer.len() >= MAX_HEAD {
                return Err(RawFailure::Broken(
                    "the upstream's response head is too large".into(),
                ));
            }
            let failure = match std::future::poll_fn(|cx| self.poll_fill(READ_CHUNK, cx)).await {
                Ok(0) => "the upstream closed the connection before a whole response head".into(),
                Ok(_) => continue,
                Err(error) => BoxError::from(error),
            };
            return Err(if answered {
                RawFailure::Broken(failure)
            } else {
                RawFailure::Unanswered(failure)
            });
        }
    }
}

/// The request head, by hyper's client rules for a body of `length`
/// bytes: the headers as they are (a `Content-Length` where the client put
/// it), palisade's own lines after them, and a `content-length` line added
/// last when a body has none.
fn encode_request(request: HeadRef<'_>, length: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    let target = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers {
        wire::line(out, name.as_str(), value.as_bytes());
    }
    for (name, value) in request.added.into_iter().flat_map(AddedLines::each) {
        wire::line(out, name.as_str(), value.as_bytes());
    }
    if length > 0 && !request.headers.contains_key(header::CONTENT_LENGTH) {
        let mut digits = itoa::Buffer::new();
        wire::line(out, "content-length", digits.format(length).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

enum Parsed {
    Partial,
    /// A 1xx head was skipped.
    Interim,
    Head(Head),
}

/// A response head read.
struct Head {
    /// Status, version, reason; the header lines when they were made
    /// into a map.
    response: Response<()>,
    /// The header lines, when they were kept as bytes.
    lines: Option<UpstreamLines>,
    framing: Framing,
    /// Neither side asked to close.
    keep_alive: bool,
}

/// The longest header name the `http` types take.
const MAX_HEADER_NAME: usize = (1 << 16) - 1;

fn parse_response(buffer: &mut BytesMut, head_request: bool) -> Result<Parsed, BoxError> {
    // Uninitialised: httparse writes only the lines it finds.
    let mut lines = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buffer,
        &mut lines,
    )? {
        httparse::Status::Partial => return Ok(Parsed::Partial),
        httparse::Status::Complete(length) => length,
    };
    let code = parsed.code.unwrap_or(0);
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    if (100..200).contains(&code) && code != 101 {
        buffer.advance(length);
        return Ok(Parsed::Interim);
    }
    let status = StatusCode::from_u16(code)?;
    // hyper's client keeps a reason phrase that is not the canonical one,
    // and hyper's server (and palisade's, `proxy::h1::encode`) sends it on.
    let reason = parsed
        .reason
        .filter(|reason| Some(*reason) != status.canonical_reason())
        .map(|reason| hyper::ext::ReasonPhrase::try_from(reason.as_bytes()))
        .transpose()?;
    if code == 101 {
        return Err("the upstream switched protocols unasked".into());
    }
    // Not arrays of `MAX_HEADERS`: filling those cost a 1.7 KB memset per
    // response; a head of more lines than fit inline spills to the heap.
    // Filled where it lies: `collect` built the 528 bytes elsewhere and
    // copied them here.
    let mut spans = Spans::new();
    spans.extend(parsed.headers.iter().map(|line| {
        (
            Span::within(buffer, line.name.as_bytes()),
            Span::within(buffer, line.value),
        )
    }));
    // Each name is put in lower case where it lies (it is written so, as
    // hyper writes a header map's) and read once for what it is.
    let mut declared = Declared::default();
    let mut classes = SmallVec::<[Class; INLINE_LINES]>::new();
    for (name, value) in &spans {
        let name = &mut buffer[name.range()];
        wire::lowercase_in_place(name);
        let class = Class::of(name);
        classes.push(class);
        let name_length = name.len();
        declared.read(class, &buffer[value.range()], name_length);
    }
    let head = buffer.split_to(length).freeze();
    let (headers, lines) = if declared.lines_kept_as_bytes() {
        // No `Content-Length` beside a coding (RFC 9112 §6.3), nor on a
        // 204 (RFC 9110 §8.6), as `upgrade::finish_response` does in a map.
        let no_length = declared.transfer_encoding.is_some() || status == StatusCode::NO_CONTENT;
        let lines = kept_lines(head, &spans, &classes, no_length);
        (HeaderMap::new(), Some(lines))
    } else {
        let headers = wire::header_map(&head, &spans, ROOM_FOR_RESPONSE_HEADERS)
            .ok_or("a header line of the upstream's response the http types refuse")?;
        (headers, None)
    };
    let framing = declared.framing(version, status, head_request)?;
    let keep_alive = declared.keeps_alive(version) && framing != Framing::Close;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    if let Some(reason) = reason {
        response.extensions_mut().insert(reason);
    }
    Ok(Parsed::Head(Head {
        response,
        lines,
        framing,
        keep_alive,
    }))
}

/// The lines a client may see, kept as bytes: what `upgrade::finish_response`
/// would leave of them in a header map (no hop-by-hop line, and no
/// `Content-Length` where `no_length` says: beside a `Transfer-Encoding`,
/// RFC 9112 §6.3, or on a 204). Only for
/// a head whose `Connection` lines name no other header
/// ([`Declared::lines_kept_as_bytes`]).
fn kept_lines(
    head: Bytes,
    spans: &[(Span, Span)],
    classes: &[Class],
    no_length: bool,
) -> UpstreamLines {
    let mut lines = UpstreamLines::with_capacity(head, spans.len());
    for ((name, value), class) in spans.iter().zip(classes) {
        let known = match class {
            Class::HopByHop | Class::TransferEncoding | Class::Connection => continue,
            Class::ContentLength if no_length => continue,
            Class::ContentLength => Known::ContentLength,
            Class::Date => Known::Date,
            Class::Other => Known::Other,
        };
        lines.push(name.range(), value.range(), known);
    }
    lines
}

/// What a response header line is to the exchange, from its name in
/// lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `content-length`.
    ContentLength,
    /// `date`.
    Date,
    /// `transfer-encoding` (hop-by-hop).
    TransferEncoding,
    /// `connection` (hop-by-hop).
    Connection,
    /// Another of the hop-by-hop names (`policy::headers`).
    HopByHop,
    /// Any other.
    Other,
}

impl Class {
    fn of(name: &[u8]) -> Self {
        match name {
            b"content-length" => Class::ContentLength,
            b"date" => Class::Date,
            b"transfer-encoding" => Class::TransferEncoding,
            b"connection" => Class::Connection,
            _ if is_hop_by_hop_name(name) => Class::HopByHop,
            _ => Class::Other,
        }
    }
}

/// What a response head says of its framing and of its connection, read
/// from its lines as they are parsed (no header-map lookups afterwards).
#[derive(Debug, Default)]
struct Declared {
    /// A `Transfer-Encoding` line was seen: whether the last one ends in
    /// `chunked`.
    transfer_encoding: Option<bool>,
    /// The `Content-Length` values: one number, or why they are not.
    length: Option<Result<u64, &'static str>>,
    /// A `Connection` line names `close`.
    close: bool,
    /// A `Connection` line names `keep-alive`.
    keep_alive: bool,
    /// How many `Connection` lines there are.
    connection_lines: u8,
    /// A `Connection` line is something other than `keep-alive` or `close`.
    connection_names_others: bool,
    /// A name is longer than the `http` types take.
    long_name: bool,
    /// A `Content-Length` spelled other than one line of plain digits
    /// (`5, 5`, `0005`, two lines, or no number at all): the head is made
    /// into a map, where `upgrade::finish_response` writes it as one or
    /// refuses it (rare, so the kept lines need no way to hold a value of
    /// palisade's own).
    length_respelled: bool,
}

impl Declared {
    /// Reads one line: its class, its value, and how long its name is.
    fn read(&mut self, class: Class, value: &[u8], name_length: usize) {
        self.long_name |= name_length > MAX_HEADER_NAME;
        if class == Class::ContentLength {
            self.length_respelled |= self.length.is_some() || !wire::plain_length(value);
            // hyper's client refuses the two largest numbers too (its
            // `MAX_LEN`): a body that long never ends.
            let length = wire::content_length(value).filter(|&n| n < u64::MAX - 1);
            self.length = Some(match (self.length, length) {
                (Some(Err(why)), _) => Err(why),
                (_, None) => Err("invalid Content-Length from the upstream"),
                (Some(Ok(first)), Some(n)) if first != n => {
                    Err("differing Content-Length values from the upstream")
                }
                (_, Some(n)) => Ok(n),
            });
        } else if class == Class::TransferEncoding {
            self.transfer_encoding = Some(wire::ends_in_chunked(value));
        } else if class == Class::Connection {
            self.close |= wire::has_token(value, b"close");
            self.keep_alive |= wire::has_token(value, b"keep-alive");
            self.connection_lines = self.connection_lines.saturating_add(1);
            self.connection_names_others |= !names_nothing(value);
        }
    }

    /// Whether the lines may be kept as bytes rather than made into a
    /// header map: no `Connection` line, or one that is just `keep-alive`
    /// or `close` (every upstream on a kept-alive connection), so that
    /// leaving out the fixed hop-by-hop lines is all
    /// `strip_hop_by_hop` would do; and no name the `http` types refuse
    /// for its length (every other line `httparse` took, they take: see
    /// the tests); and a `Content-Length` in one plain line. Any other head
    /// is made into a map, as before.
    fn lines_kept_as_bytes(&self) -> bool {
        !self.long_name
            && !self.length_respelled
            && (self.connection_lines == 0
                || (self.connection_lines == 1 && !self.connection_names_others))
    }

    /// How the body is delimited (RFC 9112 §6.3, as hyper reads it).
    fn framing(
        &self,
        version: Version,
        status: StatusCode,
        head_request: bool,
    ) -> Result<Framing, BoxError> {
        if head_request || matches!(status.as_u16(), 204 | 304) {
            return Ok(Framing::Length(0));
        }
        if let Some(chunked) = self.transfer_encoding {
            if version == Version::HTTP_10 {
                return Err("HTTP/1.0 response with Transfer-Encoding".into());
            }
            return Ok(if chunked {
                Framing::Chunked(Chunked::Size)
            } else {
                Framing::Close
            });
        }
        match self.length {
            Some(Ok(n)) => Ok(Framing::Length(n)),
            Some(Err(why)) => Err(why.into()),
            None => Ok(Framing::Close),
        }
    }

    /// HTTP/1.1 keeps the connection unless a `Connection` line says
    /// `close`; HTTP/1.0 only when one says `keep-alive`.
    fn keeps_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}

/// Where the reading of a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes left.
    Length(u64),
    /// Chunked coding, at this point.
    Chunked(Chunked),
    /// Until the upstream closes.
    Close,
}

/// The chunked decoder's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one (bytes and
    /// lines of them skipped so far).
    Trailers(usize, usize),
    /// The body ended.
    Done,
}

/// The response body of a raw exchange, reading its connection until the
/// body ends; then `conn` is handed back by the pool (see `take_reusable`).
pub struct RawBody<T> {
    conn: Option<RawConn<T>>,
    framing: Framing,
    keep_alive: bool,
    /// The response's header lines, when kept as bytes (taken by the
    /// response's body, `ResponseBody::upstream`).
    lines: Option<UpstreamLines>,
}

impl<T> RawBody<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    /// Whether the body has ended.
    pub fn ended(&self) -> bool {
        matches!(
            self.framing,
            Framing::Length(0) | Framing::Chunked(Chunked::Done)
        )
    }

    /// The response's header lines kept as bytes, once.
    pub fn take_upstream_lines(&mut self) -> Option<UpstreamLines> {
        self.lines.take()
    }

    /// The connection, when the body ended exactly where its framing said
    /// and it may carry another exchange.
    pub fn take_reusable(&mut self) -> Option<RawConn<T>> {
        if !self.ended() || !self.keep_alive {
            return None;
        }
        self.conn.take().filter(|conn| conn.buffer.is_empty())
    }

    /// The bytes left, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Chunked(Chunked::Done) => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.framing {
                Framing::Length(0) | Framing::Chunked(Chunked::Done) => return Poll::Ready(None),
                Framing::Length(left) => {
                    if conn.buffer.is_empty() {
                        let want = usize::try_from(left).unwrap_or(usize::MAX).min(64 * 1024);
                        if ready!(conn.poll_fill(want, cx))? == 0 {
                            return Poll::Ready(Some(Err(
                                "the upstream closed the connection mid-body".into(),
                            )));
                        }
                    }
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(conn.buffer.len());
                    self.framing = Framing::Length(left - take as u64);
                    return Poll::Ready(Some(Ok(conn.buffer.split_to(take).freeze())));
                }
                Framing::Close => {
                    if conn.buffer.is_empty() && ready!(conn.poll_fill(READ_CHUNK, cx))? == 0 {
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(conn.buffer.split().freeze())));
                }
                Framing::Chunked(state) => match step_chunked(state, &mut conn.buffer)? {
                    Step::Next(state) => self.framing = Framing::Chunked(state),
                    Step::Data(data, state) => {
                        self.framing = Framing::Chunked(state);
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Step::NeedMore => {
                        if ready!(conn.poll_fill(READ_CHUNK, cx))? == 0 {
                            return Poll::Ready(Some(Err(
                                "the upstream closed the connection mid-body".into(),
                            )));
                        }
                    }
                },
            }
        }
    }
}

enum Step {
    Next(Chunked),
    Data(Bytes, Chunked),
    NeedMore,
}

/// One step of chunked decoding over what is buffered.
fn step_chunked(state: Chunked, buffer: &mut BytesMut) -> Result<Step, BoxError> {
    match state {
        Chunked::Size => {
            let Some(end) = buffer.iter().position(|&b| b == b'\n') else {
                if buffer.len() > MAX_CHUNK_LINE {
                    return Err("chunk-size line too long".into());
                }
                // A byte no chunk size can hold ends the body now, not when
                // a line end comes (a body that is not chunked at all would
                // otherwise hold the client until the upstream closes).
                let size = buffer[..].split(|&b| b == b';').next().unwrap_or_default();
                let extension = buffer.get(size.len() + 1..);
                if !could_begin_chunk_size(size, extension.is_some()) {
                    return Err("invalid chunk size".into());
                }
                // In an extension, a CR may only be the line's end.
                if extension.is_some_and(|ext| ext.iter().rev().skip(1).any(|&b| b == b'\r')) {
                    return Err("CR inside a chunk extension".into());
                }
                return Ok(Step::NeedMore);
            };
            // The same limit as for a line still coming: how the upstream's
            // writes were split must not decide whether a line passes.
            if end > MAX_CHUNK_LINE {
                return Err("chunk-size line too long".into());
            }
            let line = buffer.split_to(end + 1);
            let line = line
                .strip_suffix(b"\r\n")
                .ok_or("chunk-size line without CRLF")?;
            let mut parts = line.splitn(2, |&b| b == b';');
            let digits = parts.next().unwrap_or_default();
            if parts
                .next()
                .is_some_and(|extension| extension.contains(&b'\r'))
            {
                return Err("CR inside a chunk extension".into());
            }
            // Spaces and tabs may follow the size (hyper's reading), nothing
            // else; leading zeros do not count against its length.
            let mut digits = digits;
            while let [rest @ .., b' ' | b'\t'] = digits {
                digits = rest;
            }
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
                return Err("invalid chunk size".into());
            }
            let first = digits
                .iter()
                .position(|&b| b != b'0')
                .unwrap_or(digits.len() - 1);
            let digits = &digits[first..];
            if digits.len() > 16 {
                return Err("chunk size too large".into());
            }
            let size = u64::from_str_radix(std::str::from_utf8(digits)?, 16)?;
            Ok(Step::Next(if size == 0 {
                Chunked::Trailers(0, 0)
            } else {
                Chunked::Data(size)
            }))
        }
        Chunked::Data(left) => {
            if buffer.is_empty() {
                return Ok(Step::NeedMore);
            }
            let take = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(buffer.len());
            let data = buffer.split_to(take).freeze();
            let rest = left - take as u64;
            let next = if rest == 0 {
                Chunked::DataEnd
            } else {
                Chunked::Data(rest)
            };
            Ok(Step::Data(data, next))
        }
        Chunked::DataEnd => {
            if buffer.len() < 2 {
                // A first byte that is not CR already fails (no wait).
                if buffer.first().is_some_and(|&b| b != b'\r') {
                    return Err("chunk data not followed by CRLF".into());
                }
                return Ok(Step::NeedMore);
            }
            if &buffer[..2] != b"\r\n" {
                return Err("chunk data not followed by CRLF".into());
            }
            buffer.advance(2);
            Ok(Step::Next(Chunked::Size))
        }
        Chunked::Trailers(seen, lines) => {
            // hyper's reading: a trailer line ends at CR, which LF must
            // follow; at most 100 lines and 16 KiB; each line a valid
            // header (checked by httparse, as hyper parses the block).
            let Some(cr) = buffer.iter().position(|&b| b == b'\r') else {
                if seen + buffer.len() > MAX_TRAILERS {
                    return Err("trailers too large".into());
                }
                return Ok(Step::NeedMore);
            };
            match buffer.get(cr + 1) {
                None => return Ok(Step::NeedMore),
                Some(b'\n') => {}
                Some(_) => return Err("trailer line without CRLF".into()),
            }
            let line = buffer.split_to(cr + 2);
            if cr == 0 {
                return Ok(Step::Next(Chunked::Done));
            }
            let seen = seen + line.len();
            if seen > MAX_TRAILERS || lines >= MAX_TRAILER_LINES {
                return Err("trailers too large".into());
            }
            let mut block = line.to_vec();
            block.extend_from_slice(b"\r\n");
            let mut parsed = [httparse::EMPTY_HEADER; 4];
            match httparse::parse_headers(&block, &mut parsed) {
                Ok(httparse::Status::Complete(_)) => {}
                _ => return Err("malformed trailer line".into()),
            }
            // Trailers are dropped, as palisade drops the client's.
            Ok(Step::Next(Chunked::Trailers(seen, lines + 1)))
        }
        Chunked::Done => Ok(Step::Next(Chunked::Done)),
    }
}

/// Whether `size` (what has come of a chunk-size line before any `;`, no
/// LF yet) can still begin a valid one: hex digits, then spaces or tabs,
/// then at most a CR as the last byte (`extension`: a `;` followed, so no
/// CR can be here). hyper's decoder refuses at the first byte that breaks
/// this, and so does this reader.
fn could_begin_chunk_size(size: &[u8], extension: bool) -> bool {
    let digits = size.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    // More than 16 significant digits cannot fit in 64 bits.
    let zeros = size[..digits].iter().take_while(|&&b| b == b'0').count();
    if digits - zeros > 16 {
        return false;
    }
    let rest = &size[digits..];
    let spaces = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest = &rest[spaces..];
    if digits == 0 {
        return size.is_empty() && !extension;
    }
    match rest {
        [] => true,
        [b'\r'] => !extension,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    fn decode_all(mut wire: &[u8]) -> Result<Vec<u8>, BoxError> {
        let mut buffer = BytesMut::new();
        let mut state = Chunked::Size;
        let mut out = Vec::new();
        loop {
            match step_chunked(state, &mut buffer)? {
                Step::Next(Chunked::Done) => return Ok(out),
                Step::Next(next) => state = next,
                Step::Data(data, next) => {
                    out.extend_from_slice(&data);
                    state = next;
                }
                Step::NeedMore => {
                    // Feed one byte at a time: every split point is tried.
                    let (first, rest) = wire.split_first().ok_or("ended early")?;
                    buffer.extend_from_slice(&[*first]);
                    wire = rest;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(decode_all(wire).unwrap(), b"hello 0123456789");
        // Leading zeros do not count against the size's length (hyper).
        let zeros = b"00000000000000000005\r\nhello\r\n0\r\n\r\n";
        assert_eq!(decode_all(zeros).unwrap(), b"hello");
        // A bare LF inside a trailer line is part of it (hyper ends lines
        // at CR LF), and the line still reads as headers.
        let lf = b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n\r\n";
        assert_eq!(decode_all(lf).unwrap(), b"hello");
        let mut many = b"1\r\na\r\n0\r\n".to_vec();
        for i in 0..=MAX_TRAILER_LINES {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(decode_all(&many).is_err(), "more than 100 trailer lines");
    }

    /// A chunk-size line that cannot become one fails at its first wrong
    /// byte, before any line end (the upstream may send none).
    #[test]
    fn a_body_that_is_not_chunked_fails_at_once() {
        // A wrong byte where the CRLF after a chunk's data belongs.
        let mut buffer = BytesMut::from(&b"X"[..]);
        assert!(step_chunked(Chunked::DataEnd, &mut buffer).is_err());
        let mut buffer = BytesMut::from(&b"\r"[..]);
        assert!(matches!(
            step_chunked(Chunked::DataEnd, &mut buffer),
            Ok(Step::NeedMore)
        ));
        let mut buffer = BytesMut::from(&b"hello"[..]);
        assert!(step_chunked(Chunked::Size, &mut buffer).is_err());
        for refused in [
            &b"5 5"[..],
            b" 5",
            b"5\rx",
            b"5 x",
            b";a",
            b"\r",
            b"5;a\rb",
            b"5 ;\r\r",
            b"ffffffffffffffffff",
        ] {
            let mut buffer = BytesMut::from(refused);
            assert!(
                step_chunked(Chunked::Size, &mut buffer).is_err(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        for partial in [
            &b"5"[..],
            b"5 ",
            b"5\r",
            b"5;a=b c",
            b"A\t",
            b"5\t;x",
            b"5 \t;x\r",
            b"",
            b"00000000000000000000ffffffffffffffff",
        ] {
            let mut buffer = BytesMut::from(partial);
            assert!(
                matches!(step_chunked(Chunked::Size, &mut buffer), Ok(Step::NeedMore)),
                "{}",
                String::from_utf8_lossy(partial)
            );
        }
    }

    #[test]
    fn a_long_chunk_size_line_fails_whether_it_comes_whole_or_in_pieces() {
        let line = |length: usize| {
            let mut line = b"5;".to_vec();
            line.resize(length, b'x');
            line.extend_from_slice(b"\r\n");
            line
        };
        // Exactly at the limit (before the LF): accepted either way.
        let longest = line(MAX_CHUNK_LINE - 1);
        let mut whole = BytesMut::from(&longest[..]);
        assert!(matches!(
            step_chunked(Chunked::Size, &mut whole),
            Ok(Step::Next(Chunked::Data(5)))
        ));
        let mut first = BytesMut::from(&longest[..longest.len() - 1]);
        assert!(matches!(
            step_chunked(Chunked::Size, &mut first),
            Ok(Step::NeedMore)
        ));
        // One byte more: refused in one read and in two.
        let over = line(MAX_CHUNK_LINE);
        let mut whole = BytesMut::from(&over[..]);
        assert!(step_chunked(Chunked::Size, &mut whole).is_err());
        let mut first = BytesMut::from(&over[..over.len() - 1]);
        assert!(step_chunked(Chunked::Size, &mut first).is_err());
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"z\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"\r\n",
            b"-1\r\n",
            b"5\x0c\r\nhello\r\n0\r\n\r\n",
            b"5 \r\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nno colon here\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-T:\r\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX T: a\r\n\r\n",
            b"5\r\nhello\r\n0\r\n: a\r\n\r\n",
        ] {
            assert!(
                decode_all(wire).is_err(),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    fn head(text: &[u8], head_request: bool) -> Result<(Response<()>, Framing, bool), BoxError> {
        parsed(text, head_request).map(|head| (head.response, head.framing, head.keep_alive))
    }

    fn parsed(text: &[u8], head_request: bool) -> Result<Head, BoxError> {
        let mut buffer = BytesMut::from(text);
        loop {
            match parse_response(&mut buffer, head_request)? {
                Parsed::Head(head) => return Ok(head),
                Parsed::Interim => {}
                Parsed::Partial => return Err("partial".into()),
            }
        }
    }

    #[test]
    fn response_framing_follows_hyper() {
        let framing = |text: &[u8]| head(text, false).map(|(_, f, k)| (f, k));
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").unwrap(),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n")
                .unwrap(),
            (Framing::Length(1), true)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"
            )
            .unwrap(),
            (Framing::Chunked(Chunked::Size), true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap(),
            (Framing::Close, false)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n").unwrap(),
            (Framing::Close, false)
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n").unwrap(),
            (Framing::Length(0), true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n").unwrap(),
            (Framing::Length(2), false)
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n").unwrap(),
            (Framing::Length(2), false)
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n")
                .unwrap(),
            (Framing::Length(2), true)
        );
        let (odd, _, _) = head(b"HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        let reason = odd.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(reason.as_bytes(), b"X", "a non-canonical reason is kept");
        let (ok, _, _) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert!(ok.extensions().get::<hyper::ext::ReasonPhrase>().is_none());
        let (_, f, _) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true).unwrap();
        assert_eq!(f, Framing::Length(0), "no body after HEAD");
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        ] {
            assert!(
                head(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_heads_follow_hyper() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("up"));
        headers.insert("content-length", HeaderValue::from_static("0"));
        let uri: http::Uri = "/a?b".parse().unwrap();
        let mut out = Vec::new();
        let encode = |method: &Method, headers: &HeaderMap, added, length, out: &mut Vec<u8>| {
            let head = HeadRef {
                method,
                uri: &uri,
                headers,
                added,
            };
            encode_request(head, length, out);
        };
        encode(&Method::GET, &headers, None, 0, &mut out);
        assert_eq!(
            out,
            b"GET /a?b HTTP/1.1\r\nhost: up\r\ncontent-length: 0\r\n\r\n"
        );
        out.clear();
        headers.insert("content-length", HeaderValue::from_static("3"));
        headers.insert("x-after", HeaderValue::from_static("1"));
        encode(&Method::PUT, &headers, None, 3, &mut out);
        assert_eq!(
            out, b"PUT /a?b HTTP/1.1\r\nhost: up\r\ncontent-length: 3\r\nx-after: 1\r\n\r\n",
            "the client's Content-Length stays where it was"
        );
        out.clear();
        headers.remove("content-length");
        let identity: crate::policy::auth::claims::IdentityHeaders = vec![(
            http::HeaderName::from_static("x-user-id"),
            HeaderValue::from_static("u1"),
        )]
        .into();
        let added = AddedLines::new(
            Some(identity),
            crate::policy::forward::Forwarded {
                for_chain: HeaderValue::from_static("1.2.3.4"),
                proto: Some(HeaderValue::from_static("http")),
                host: None,
            },
            (
                http::HeaderName::from_static("x-request-id"),
                HeaderValue::from_static("id-1"),
            ),
        );
        encode(&Method::PUT, &headers, Some(&added), 3, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PUT /a?b HTTP/1.1\r\nhost: up\r\nx-after: 1\r\nx-user-id: u1\r\n\
             x-forwarded-for: 1.2.3.4\r\nx-forwarded-proto: http\r\nx-request-id: id-1\r\n\
             content-length: 3\r\n\r\n",
            "palisade's lines after the client's; a length the body needs last"
        );
    }

    fn kept(head: &Head) -> Vec<String> {
        head.lines
            .as_ref()
            .map(|lines| {
                lines
                    .iter()
                    .map(|(n, v)| {
                        format!(
                            "{}: {}",
                            String::from_utf8_lossy(n),
                            String::from_utf8_lossy(v)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The lines kept as bytes are those `upgrade::finish_response` leaves
    /// in a map: no hop-by-hop line in any case, no `Content-Length` beside
    /// `Transfer-Encoding`.
    #[test]
    fn kept_lines_leave_out_what_a_client_must_not_see() {
        let head = parsed(
            b"HTTP/1.1 200 OK\r\nServer: up\r\nCONNECTION: Keep-Alive\r\nKeep-Alive: timeout=5\r\n\
              Transfer-Encoding: chunked\r\nContent-Length: 3\r\nTE: trailers\r\nTrailer: x\r\n\
              Proxy-Connection: close\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\n\
              HTTP2-Settings: AA\r\nX-A: 1\r\nContent-Type: text/plain\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(head.response.headers().is_empty());
        assert_eq!(
            kept(&head),
            ["server: up", "x-a: 1", "content-type: text/plain"]
        );
        let plain = parsed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nconnection: close\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(kept(&plain), ["content-length: 3"]);
        assert!(!plain.keep_alive);
    }

    /// A `Connection` line that names another header (or two lines) is
    /// left to the header map and `strip_hop_by_hop`, as before.
    #[test]
    fn connection_naming_headers_makes_a_map() {
        for text in [
            &b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: s\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-secret\r\nContent-Length: 0\r\n\r\n",
        ] {
            let head = parsed(text, false).unwrap();
            assert!(head.lines.is_none(), "{}", String::from_utf8_lossy(text));
            assert!(head.response.headers().contains_key("connection"));
        }
    }

    /// Every name and value `httparse` takes, the `http` types take: the
    /// lines kept as bytes are never ones a header map would refuse.
    #[test]
    fn what_httparse_takes_the_http_types_take() {
        for byte in 0..=255u8 {
            let mut text = b"HTTP/1.1 200 OK\r\nX".to_vec();
            text.push(byte);
            text.extend_from_slice(b"Y: v\r\n\r\n");
            let mut lines = [httparse::EMPTY_HEADER; 4];
            let mut response = httparse::Response::new(&mut lines);
            let by_httparse = matches!(response.parse(&text), Ok(httparse::Status::Complete(_)))
                && response.headers[0].name.as_bytes() == [b'X', byte, b'Y'];
            if by_httparse {
                assert!(
                    HeaderName::from_bytes(&[b'X', byte, b'Y']).is_ok(),
                    "name byte {byte}"
                );
            }
            let mut text = b"HTTP/1.1 200 OK\r\nX: a".to_vec();
            text.push(byte);
            text.extend_from_slice(b"b\r\n\r\n");
            let mut lines = [httparse::EMPTY_HEADER; 4];
            if let Ok(httparse::Status::Complete(_)) =
                httparse::Response::new(&mut lines).parse(&text)
            {
                assert!(
                    HeaderValue::from_bytes(lines[0].value).is_ok(),
                    "value byte {byte}"
                );
            }
        }
        let long = format!(
            "HTTP/1.1 200 OK\r\n{}: v\r\nContent-Length: 0\r\n\r\n",
            "x".repeat(MAX_HEADER_NAME + 1)
        );
        assert!(
            head(long.as_bytes(), false).is_err(),
            "a name too long for the http types"
        );
    }
}
