//! Reading one request head, and deciding whether palisade's own reader
//! may take the request at all.
//!
//! It takes only the plainest request: a complete HTTP/1.1 head in
//! origin form that asks for nothing of the connection (no
//! `Transfer-Encoding`, `Expect`, `Upgrade` or `TE` line, not `CONNECT`)
//! and declares no body, or a small one by exactly one `Content-Length`
//! line of plain digits (no sign, list or second line) no larger than the
//! caller's `body_limit`, whose bytes are all here (the caller may read
//! what the socket already holds for them, never wait: a body that
//! stalls is hyper's, which streams it under the route's timeout).
//! Everything else, and every head `httparse` or
//! the `http` types refuse, is [`Head::Hyper`]: the bytes go to hyper
//! unread, which frames, answers or refuses them exactly as it does on a
//! connection palisade never read. So this reader decides no question of
//! message framing that hyper could decide otherwise: a head it takes has
//! no body, or exactly the declared bytes after it, and the next head
//! starts right after those.
//!
//! The parser is `httparse` with its default settings, the same crate and
//! settings hyper's server parses with.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Uri, Version};

use crate::policy::body::RequestBody;
use crate::policy::limits::OversizedHead;
use crate::proxy::protocol::HYPER_MAX_HEADERS;
use crate::proxy::wire::{Span, Spans, has_token, header_map};

/// Header lines palisade's reader handles in one head; a head with more
/// goes to hyper (which takes up to 256 and lets the pipeline answer 431).
const MAX_HEADERS: usize = 64;

/// Header lines the pipeline adds before the request leaves (`Host`,
/// `X-Forwarded-*`, the request ID, trace context, identity): room for
/// them when the map is made, so adding them does not grow it (a new
/// allocation and every line hashed again).
const ROOM_FOR_FORWARDING: usize = 8;

/// What the buffered bytes hold.
#[derive(Debug)]
pub enum Head {
    /// Not a whole head yet.
    Partial,
    /// A whole head that declares a body palisade's reader may take, whose
    /// bytes are not all here yet: `total` bytes of head and body.
    BodyPending { total: usize },
    /// A request palisade serves itself; its head was taken off the buffer.
    Plain(Box<PlainRequest>),
    /// Everything else: hyper reads it, from the first unread byte.
    Hyper,
    /// A head longer than the head buffer, whole or not (a whole one
    /// arrived in a read that outgrew the buffer): refused ([`oversized`]),
    /// however the client's bytes were cut.
    Oversized,
}

/// A request whose body, if any, is the declared bytes that follow its
/// head, and whether the client keeps the connection.
#[derive(Debug)]
pub struct PlainRequest {
    /// The request, body empty (the caller reads a declared body).
    pub request: Request<RequestBody>,
    /// No `Connection: close` was sent (HTTP/1.1 keeps connections open).
    pub keep_alive: bool,
    /// The bytes of body right after the head (its `Content-Length`),
    /// already in the buffer.
    pub body_length: usize,
}

/// Header names that make a request something other than a plain one.
fn needs_hyper(name: &str) -> bool {
    ["transfer-encoding", "expect", "upgrade", "te"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// Reads the head at the front of `buffer`; a head longer than
/// `head_buffer`, or an unfinished one that fills it, is
/// [`Head::Oversized`]; a body declared longer than `body_limit` is
/// hyper's to stream, and one not wholly here yet is
/// [`Head::BodyPending`]. On [`Head::Plain`] the head's bytes are taken
/// off the buffer (its body, if any, is what follows); otherwise it is
/// left as it was.
pub fn read_head(buffer: &mut BytesMut, head_buffer: usize, body_limit: usize) -> Head {
    // Uninitialised: httparse writes only the lines it finds.
    let mut lines = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let length = match parsed.parse_with_uninit_headers(buffer, &mut lines) {
        Ok(httparse::Status::Complete(length)) if length > head_buffer => return Head::Oversized,
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() >= head_buffer => return Head::Oversized,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => return many_headers(buffer, head_buffer),
        Err(_) => return Head::Hyper,
    };
    let (Some(method), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Head::Hyper;
    };
    if !path.starts_with('/') || method == "CONNECT" {
        return Head::Hyper;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::Hyper;
    };
    let path = Span::within(buffer, path.as_bytes());
    let mut keep_alive = true;
    let mut body_length = None;
    // Not an array of `MAX_HEADERS`: filling it cost a 1 KB memset per
    // request; a head of more lines than fit inline spills to the heap.
    let mut spans = Spans::new();
    for line in parsed.headers.iter() {
        if needs_hyper(line.name) {
            return Head::Hyper;
        }
        if line.name.eq_ignore_ascii_case("content-length") {
            match (body_length, small_length(line.value, body_limit)) {
                (None, Some(length)) => body_length = Some(length),
                // A second line, even an equal one, or a value that is
                // not plain digits within the limit: hyper decides.
                _ => return Head::Hyper,
            }
        }
        if line.name.eq_ignore_ascii_case("connection") && has_token(line.value, b"close") {
            keep_alive = false;
        }
        spans.push((
            Span::within(buffer, line.name.as_bytes()),
            Span::within(buffer, line.value),
        ));
    }
    let body_length = body_length.unwrap_or(0);
    if buffer.len() - length < body_length {
        return Head::BodyPending {
            total: length + body_length,
        };
    }
    // The head becomes shared bytes that the URI and header values point
    // into; the buffer keeps what follows (its body, a pipelined request).
    let head = buffer.split_to(length).freeze();
    match build(&head, method, path, &spans) {
        Some(request) => Head::Plain(Box::new(PlainRequest {
            request,
            keep_alive,
            body_length,
        })),
        None => {
            // Put the bytes back for hyper: a head the `http` types refuse
            // is hyper's to answer (400). Rare; the copy does not matter.
            let rest = buffer.split();
            buffer.extend_from_slice(&head);
            buffer.extend_from_slice(&rest);
            Head::Hyper
        }
    }
}

/// A `Content-Length` value of plain ASCII digits (no sign, no list, no
/// spaces) no larger than `limit`.
fn small_length(value: &[u8], limit: usize) -> Option<usize> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = crate::proxy::wire::content_length(value)?;
    usize::try_from(length)
        .ok()
        .filter(|&length| length <= limit)
}

/// A head with more lines than palisade's reader takes: hyper's while it
/// has at most [`HYPER_MAX_HEADERS`]; refused as an oversized header block
/// (431 problem+json from the pipeline, counted and logged, as Envoy's
/// header-count limit answers) when it has more, rather than hyper's bare
/// 431; not whole yet: read on (within the head buffer).
fn many_headers(buffer: &[u8], head_buffer: usize) -> Head {
    let head = after_empty_lines(buffer);
    // The head ends at the first empty line (`\n\n` or `\n\r\n`): a body
    // after it is not counted.
    let end = (0..head.len())
        .find(|&i| head[i] == b'\n' && matches!(&head[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]));
    let newlines = end
        .map_or(head, |end| &head[..end])
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    // A whole head: the request line's newline and one per header line but
    // the last (whose newline starts the empty line). Not whole yet: the
    // request line's newline and one per header line read to its end.
    let header_lines = match end {
        Some(_) => newlines,
        None => newlines.saturating_sub(1),
    };
    if header_lines > HYPER_MAX_HEADERS {
        return Head::Oversized;
    }
    match end {
        Some(_) => Head::Hyper,
        None if buffer.len() >= head_buffer => Head::Oversized,
        None => Head::Partial,
    }
}

/// What stands for a head larger than the head buffer (the buffer is full
/// and holds no whole head, or a whole head outgrew it): the pipeline
/// refuses it ([`OversizedHead`]) with the limit it broke, and the
/// connection closes after the answer (the rest of the head is never
/// read). The method and target come from the request line when they
/// parse (a method of at most [`MAX_METHOD`] bytes: it is logged), else
/// `GET /`.
pub fn oversized(buffer: &[u8]) -> PlainRequest {
    let buffer = after_empty_lines(buffer);
    let line = buffer
        .iter()
        .position(|&b| b == b'\n')
        .map(|end| &buffer[..end]);
    let first = line.unwrap_or(buffer);
    let mut words = first.split(|&b| b == b' ');
    let method = words
        .next()
        .filter(|word| word.len() <= MAX_METHOD)
        .and_then(|word| Method::from_bytes(word).ok())
        .unwrap_or(Method::GET);
    let target = line.and_then(|_| words.next());
    let uri = target
        .filter(|target| target.starts_with(b"/"))
        .and_then(|target| Uri::try_from(target).ok());
    let mut request = Request::new(RequestBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri.unwrap_or_else(|| Uri::from_static("/"));
    *request.version_mut() = Version::HTTP_11;
    request.extensions_mut().insert(OversizedHead {
        target_bytes: target.map(<[u8]>::len),
    });
    PlainRequest {
        request,
        keep_alive: false,
        body_length: 0,
    }
}

/// `buffer` without the empty lines before its request line, which
/// httparse (and RFC 9112 §2.2, after a body's stray CRLF) skips too.
fn after_empty_lines(buffer: &[u8]) -> &[u8] {
    let start = buffer
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buffer.len());
    &buffer[start..]
}

/// The longest method [`oversized`] keeps from a request line.
const MAX_METHOD: usize = 32;

/// The request for a parsed head, or `None` where the `http` types refuse
/// a part of it.
fn build(
    head: &Bytes,
    method: Method,
    path: Span,
    lines: &[(Span, Span)],
) -> Option<Request<RequestBody>> {
    let uri = Uri::from_maybe_shared(path.slice(head)).ok()?;
    let headers = header_map(head, lines, ROOM_FOR_FORWARDING)?;
    let mut request = Request::new(RequestBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_with_many_lines_is_hyper_s_up_to_its_limit() {
        let head = |n: usize, end: &str, body: &str| -> Vec<u8> {
            let lines: String = (0..n).map(|i| format!("X-L{i}: v\r\n")).collect();
            format!("POST / HTTP/1.1\r\n{lines}{end}{body}").into_bytes()
        };
        let limit = HYPER_MAX_HEADERS;
        let roomy = 1 << 20;
        assert!(matches!(
            many_headers(&head(limit, "\r\n", ""), roomy),
            Head::Hyper
        ));
        assert!(matches!(
            many_headers(&head(limit + 1, "\r\n", ""), roomy),
            Head::Oversized
        ));
        // Bare-LF heads count alike.
        let bare = String::from_utf8(head(limit, "\n", ""))
            .unwrap()
            .replace("\r\n", "\n");
        assert!(matches!(many_headers(bare.as_bytes(), roomy), Head::Hyper));
        // Not whole yet: exactly the limit's lines read, the empty line to
        // come, is read on; one more line is refused at once.
        assert!(matches!(
            many_headers(&head(limit, "", ""), roomy),
            Head::Partial
        ));
        assert!(matches!(
            many_headers(&head(limit + 1, "", ""), roomy),
            Head::Oversized
        ));
        // Empty lines before the request line are skipped, as httparse
        // skips them.
        for before in ["\r\n", "\n", "\r\n\r\n"] {
            let mut led = before.as_bytes().to_vec();
            led.extend(head(limit + 1, "\r\n", ""));
            assert!(
                matches!(many_headers(&led, roomy), Head::Oversized),
                "{before:?}"
            );
            let mut led = before.as_bytes().to_vec();
            led.extend(head(limit, "", ""));
            assert!(
                matches!(many_headers(&led, roomy), Head::Partial),
                "{before:?}"
            );
            let refused = oversized(&led);
            assert_eq!(refused.request.method(), Method::POST, "{before:?}");
        }
        // Lines of a body after the head are not header lines.
        let body = format!("{}\n", "x\n".repeat(limit));
        assert!(matches!(
            many_headers(&head(100, "\r\n", &body), roomy),
            Head::Hyper
        ));
    }

    #[test]
    fn an_oversized_head_is_refused_with_the_limit_it_broke() {
        let target = |request: &PlainRequest| {
            request
                .request
                .extensions()
                .get::<OversizedHead>()
                .map(|o| o.target_bytes)
        };
        let line = oversized(b"PUT /aaaaaaaa");
        assert_eq!(target(&line), Some(None));
        assert_eq!(
            (
                line.request.method(),
                line.request.uri().path(),
                line.keep_alive
            ),
            (&Method::PUT, "/", false)
        );
        let headers = oversized(b"POST /x?y=1 HTTP/1.1\r\nX-Big: vvvv");
        assert_eq!(target(&headers), Some(Some(6)));
        assert_eq!(headers.request.method(), Method::POST);
        assert_eq!(headers.request.uri(), "/x?y=1");
        // Garbage, or a method too long to log, stands for itself as `GET /`.
        let garbage = oversized(b"\x00\x01 \x02\n");
        assert_eq!(
            (garbage.request.method(), garbage.request.uri().path()),
            (&Method::GET, "/")
        );
        let long = oversized(&[b'A'; 40]);
        assert_eq!(long.request.method(), Method::GET);
        // A whole head longer than the buffer is oversized however it came.
        let mut whole =
            BytesMut::from(&b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: vvvvvvvv\r\n\r\n"[..]);
        assert!(matches!(read_head(&mut whole, 32, 0), Head::Oversized));
        let mut unfinished = BytesMut::from(&b"GET /x HTTP/1.1\r\nHost: t\r\n"[..]);
        assert!(matches!(read_head(&mut unfinished, 16, 0), Head::Oversized));
        assert!(matches!(read_head(&mut unfinished, 1024, 0), Head::Partial));
        assert!(matches!(read_head(&mut whole, 1024, 0), Head::Plain(_)));
    }

    fn read(text: &[u8]) -> (Head, BytesMut) {
        read_with_body_limit(text, 0)
    }

    fn read_with_body_limit(text: &[u8], body_limit: usize) -> (Head, BytesMut) {
        let mut buffer = BytesMut::from(text);
        let head = read_head(&mut buffer, usize::MAX, body_limit);
        (head, buffer)
    }

    fn plain(text: &[u8]) -> (PlainRequest, BytesMut) {
        match read(text) {
            (Head::Plain(request), rest) => (*request, rest),
            (other, _) => panic!("expected a plain request, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_taken_and_what_follows_stays() {
        let (req, rest) = plain(
            b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next HTTP/1.1\r\n",
        );
        let request = req.request;
        assert!(req.keep_alive);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a/b?c=d");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "x");
        let twos: Vec<_> = request.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        assert_eq!(&rest[..], b"GET /next HTTP/1.1\r\n");
    }

    #[test]
    fn connection_close_in_any_line_or_token_ends_keep_alive() {
        for text in [
            &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nconnection: foo, CLOSE\r\n\r\n",
            b"GET / HTTP/1.1\r\nCONNECTION:  Close \r\n\r\n",
        ] {
            assert!(
                !plain(text).0.keep_alive,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        assert!(
            plain(b"GET / HTTP/1.1\r\nConnection: closed, x-close\r\n\r\n")
                .0
                .keep_alive
        );
    }

    #[test]
    fn anything_but_a_plain_head_is_left_whole_for_hyper() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\0: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
        ];
        for text in cases {
            let (head, rest) = read(text);
            assert!(
                matches!(head, Head::Hyper),
                "{}: {head:?}",
                String::from_utf8_lossy(text)
            );
            assert_eq!(&rest[..], *text, "the bytes stay for hyper");
        }
    }

    #[test]
    fn a_small_declared_body_is_taken_and_left_after_the_head() {
        let whole = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /next";
        // Until every byte of the body is here, it is pending (the bytes
        // stay where they are).
        for cut in [whole.len() - 12, whole.len() - 10] {
            let (head, rest) = read_with_body_limit(&whole[..cut], 3);
            assert!(
                matches!(head, Head::BodyPending { total } if total == whole.len() - 9),
                "cut at {cut}: {head:?}"
            );
            assert_eq!(&rest[..], &whole[..cut]);
        }
        let (head, rest) = read_with_body_limit(whole, 3);
        let Head::Plain(request) = head else {
            panic!("expected a plain request, got {head:?}");
        };
        assert_eq!(request.body_length, 3);
        assert_eq!(request.request.headers()["content-length"], "3");
        assert_eq!(&rest[..], b"abcGET /next");
        let (head, _) = read_with_body_limit(b"GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n", 0);
        assert!(matches!(head, Head::Plain(ref r) if r.body_length == 0));
    }

    #[test]
    fn any_other_declared_body_is_left_whole_for_hyper() {
        let cases: &[&[u8]] = &[
            // Past the limit: hyper streams it.
            b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n",
            // Two lines, even equal ones; a list; a sign; not digits.
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 3 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            // Beside a transfer coding, in either order.
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
            b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
        ];
        for text in cases {
            let (head, rest) = read_with_body_limit(text, 10);
            assert!(
                matches!(head, Head::Hyper),
                "{}: {head:?}",
                String::from_utf8_lossy(text)
            );
            assert_eq!(&rest[..], *text, "the bytes stay for hyper");
        }
    }

    #[test]
    fn too_many_lines_go_to_hyper() {
        let mut text = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            text.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        text.extend_from_slice(b"\r\n");
        assert!(matches!(read(&text).0, Head::Hyper));
    }

    #[test]
    fn a_head_in_pieces_is_partial_until_whole() {
        let text = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 1..text.len() {
            let (head, rest) = read(&text[..cut]);
            assert!(matches!(head, Head::Partial), "cut at {cut}");
            assert_eq!(rest.len(), cut);
        }
        assert!(matches!(read(text).0, Head::Plain(_)));
    }
}
