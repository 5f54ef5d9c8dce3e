//! Writing one response head, and how its body is framed: the rules of
//! hyper's HTTP/1 server (`proto::h1::role::Server::encode`) for an
//! HTTP/1.1 client, so a response reads the same whichever of the two
//! wrote it:
//!
//! - names in lower case, in the header map's order; a `date` line when
//!   the response has none;
//! - a body declared by `Content-Length` is sent as long as that says (a
//!   body that ends short of it ends the connection); a body of unknown
//!   length is chunked; a response to `HEAD`, a 204 or a 304 has no body;
//! - `Connection: close` is added when the connection ends after this
//!   response, and a response that carries it ends the connection.
//!
//! Response trailers are not sent (hyper sends them only to a request
//! that asked with `TE: trailers`, which this reader leaves to hyper).

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Response, StatusCode, Version};

use crate::policy::response_headers::{self, Chunk, Known, Line, PendingHeaders};
use crate::proxy::wire::{content_length, ends_in_chunked, has_token, line, line_bytes};

/// How the body after a head is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body at all).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// As it comes, and the connection ends after it: a body of unknown
    /// length in an HTTP/1.0 response (which cannot be chunked).
    Close,
}

/// A response head written out, and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// How its body goes.
    pub framing: Framing,
    /// The connection ends after this response.
    pub last: bool,
}

/// What is known of the body before its first byte, as hyper asks it:
/// `None` when the body has already ended, else its exact length if known.
pub type BodyLength = Option<Option<u64>>;

/// Why a head cannot be written (the response is dropped and the
/// connection ends, as hyper does).
#[derive(Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A `Content-Length` that is not a number, two that differ, or one
    /// beside `Transfer-Encoding`.
    BadLength,
    /// A 1xx status: hyper answers 500 for it; palisade never builds one
    /// (a `101` goes through hyper's upgrade path).
    Informational,
}

/// Whether a response to `method` with `status` may carry a body.
fn can_have_body(head_request: bool, status: StatusCode) -> bool {
    !head_request
        && !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// Whether it may carry a `Content-Length` line.
fn can_have_content_length(status: StatusCode) -> bool {
    !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// Appends the head of `response` (the answer to a `method` request on an
/// HTTP/1.1 connection) to `out`. `keep_alive`: the connection may stay
/// open afterwards (the client did not ask to close, no drain is on).
/// Borrowed whole: taking the response apart to write its head copied it.
pub fn encode_head<B>(
    response: &Response<B>,
    pending: &PendingHeaders,
    method: &Method,
    body: BodyLength,
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> Result<Encoded, EncodeError> {
    let status = response.status();
    if status.is_informational() {
        return Err(EncodeError::Informational);
    }
    let head_request = method == Method::HEAD;
    // An HTTP/1.0 response (an HTTP/1.0 upstream's) cannot be chunked.
    let can_chunk = response.version() != Version::HTTP_10;
    let start = out.len();
    let reason = response.extensions().get::<hyper::ext::ReasonPhrase>();
    status_line(
        response.version(),
        status,
        reason.map(|r| r.as_bytes()),
        out,
    );

    let mut framing = None;
    let mut last = !keep_alive;
    let mut wrote_date = false;
    let mut wrote_close = false;
    let mut declared: Option<u64> = None;
    let lines = response_headers::each(response.headers(), pending, |chunk| {
        let header_line = match chunk {
            Chunk::Line(line) => line,
            Chunk::Lines(lines) => {
                out.extend_from_slice(lines);
                return Ok(());
            }
        };
        let value = header_line.value;
        let kind = header_line.known;
        if kind == Known::ContentLength {
            let length = content_length(value).ok_or(EncodeError::BadLength)?;
            match declared {
                Some(first) if first != length => return Err(EncodeError::BadLength),
                Some(_) => return Ok(()),
                None => declared = Some(length),
            }
            if body.is_none() && !head_request {
                // No body to send: the line is dropped (hyper's rule).
                return Ok(());
            }
            if framing == Some(Framing::Chunked) {
                // Both framings declared: hyper refuses to send it.
                return Err(EncodeError::BadLength);
            }
            if framing.is_some() || !can_have_content_length(status) {
                return Ok(());
            }
            framing = Some(Framing::Length(length));
        } else if kind == Known::TransferEncoding {
            if matches!(framing, Some(Framing::Length(_))) {
                return Err(EncodeError::BadLength);
            }
            if framing.is_some() || !can_have_body(head_request, status) || !can_chunk {
                return Ok(());
            }
            // The body is chunked by palisade whatever this line says
            // (`chunked` is added last when missing, as hyper does).
            framing = Some(Framing::Chunked);
            write_line(out, header_line);
            if !ends_in_chunked(value) {
                out.truncate(out.len() - 2);
                out.extend_from_slice(b", chunked\r\n");
            }
            return Ok(());
        } else if kind == Known::Connection {
            if has_token(value, b"close") {
                last = true;
                wrote_close = true;
            }
        } else if kind == Known::Date {
            wrote_date = true;
        } else if kind == Known::Trailer && !can_have_body(head_request, status) {
            return Ok(());
        }
        write_line(out, header_line);
        Ok(())
    });
    if let Err(error) = lines {
        out.truncate(start);
        return Err(error);
    }
    if last && !wrote_close {
        line(out, "connection", b"close");
    }
    let framing = match framing {
        Some(framing) => framing,
        None => match body {
            Some(None) if can_have_body(head_request, status) && can_chunk => {
                line(out, "transfer-encoding", b"chunked");
                Framing::Chunked
            }
            Some(None) if can_have_body(head_request, status) => Framing::Close,
            Some(None) => Framing::Length(0),
            None | Some(Some(0)) => {
                if can_have_content_length(status) && !head_request {
                    line(out, "content-length", b"0");
                }
                Framing::Length(0)
            }
            Some(Some(length)) => {
                if can_have_content_length(status) {
                    let mut digits = itoa::Buffer::new();
                    line(out, "content-length", digits.format(length).as_bytes());
                    Framing::Length(length)
                } else {
                    Framing::Length(0)
                }
            }
        },
    };
    let framing = if can_have_body(head_request, status) {
        framing
    } else {
        Framing::Length(0)
    };
    if !wrote_date {
        DATE.with(|date| {
            let mut date = date.borrow_mut();
            line(out, "date", date.now());
        });
    }
    out.extend_from_slice(b"\r\n");
    Ok(Encoded { framing, last })
}

/// One header line (every name is in lower case already: a header map's
/// are, and the upstream exchange lowers the lines it keeps as bytes).
fn write_line(out: &mut Vec<u8>, header_line: Line<'_>) {
    match header_line.whole {
        Some(whole) => {
            out.extend_from_slice(whole);
            out.extend_from_slice(b"\r\n");
        }
        None => line_bytes(out, header_line.name, header_line.value),
    }
}

/// The status line; `reason`: the upstream's own reason phrase, when it
/// was not the canonical one (hyper's client keeps it, and hyper's server
/// sends it on).
fn status_line(version: Version, status: StatusCode, reason: Option<&[u8]>, out: &mut Vec<u8>) {
    if version != Version::HTTP_10 && status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match reason {
        Some(reason) => out.extend_from_slice(reason),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Date` value, formatted once a second per thread.
struct CachedDate {
    second: u64,
    text: Vec<u8>,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            let whole = UNIX_EPOCH + Duration::from_secs(second);
            self.text = httpdate::fmt_http_date(whole).into_bytes();
        }
        &self.text
    }
}

thread_local! {
    static DATE: RefCell<CachedDate> = const {
        RefCell::new(CachedDate { second: 0, text: Vec::new() })
    };
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::policy::response_headers::UpstreamLines;

    fn encode(
        response: Response<()>,
        method: Method,
        body: BodyLength,
        keep_alive: bool,
    ) -> (String, Result<Encoded, EncodeError>) {
        let mut response = response;
        let mut out = Vec::new();
        let encoded = encode_head(
            &response,
            &PendingHeaders::default(),
            &method,
            body,
            keep_alive,
            &mut out,
        );
        // The same lines kept as bytes (as the upstream exchange keeps
        // them, in the upstream's case) are written the same way.
        let pairs: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (title_case(n.as_str()), v.to_str().unwrap().to_string()))
            .collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let lines = PendingHeaders::new(Some(UpstreamLines::from_pairs(&pairs)));
        response.headers_mut().clear();
        let mut from_lines = Vec::new();
        let encoded_from_lines = encode_head(
            &response,
            &lines,
            &method,
            body,
            keep_alive,
            &mut from_lines,
        );
        assert_eq!(encoded_from_lines, encoded);
        assert_eq!(
            without_date(&String::from_utf8_lossy(&from_lines)),
            without_date(&String::from_utf8_lossy(&out))
        );
        (String::from_utf8(out).unwrap(), encoded)
    }

    fn title_case(name: &str) -> String {
        name.split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or(String::new(), |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect::<Vec<_>>()
            .join("-")
    }

    fn without_date(text: &str) -> String {
        text.lines()
            .filter(|l| !l.starts_with("date: ") && !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    #[test]
    fn a_sized_body_keeps_its_length_and_gets_a_date() {
        let (text, encoded) = encode(
            response(200, &[("content-length", "5"), ("x-a", "1")]),
            Method::GET,
            Some(Some(5)),
            true,
        );
        assert_eq!(
            encoded,
            Ok(Encoded {
                framing: Framing::Length(5),
                last: false
            })
        );
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\ndate: "));
        assert!(text.ends_with(" GMT\r\n\r\n"));
    }

    #[test]
    fn an_unknown_length_is_chunked_and_a_known_one_declared() {
        let (text, encoded) = encode(response(200, &[]), Method::GET, Some(None), true);
        assert_eq!(encoded.unwrap().framing, Framing::Chunked);
        assert!(text.contains("transfer-encoding: chunked\r\n"));
        let (text, encoded) = encode(response(404, &[]), Method::GET, Some(Some(7)), true);
        assert_eq!(encoded.unwrap().framing, Framing::Length(7));
        assert_eq!(
            without_date(&text),
            "HTTP/1.1 404 Not Found\ncontent-length: 7"
        );
        let (text, _) = encode(response(200, &[]), Method::GET, None, true);
        assert!(text.contains("content-length: 0\r\n"));
    }

    #[test]
    fn head_204_and_304_have_no_body() {
        let (text, encoded) = encode(
            response(200, &[("content-length", "42")]),
            Method::HEAD,
            None,
            true,
        );
        assert_eq!(encoded.unwrap().framing, Framing::Length(0));
        assert!(
            text.contains("content-length: 42\r\n"),
            "HEAD keeps the length"
        );
        let (text, encoded) = encode(response(204, &[]), Method::GET, Some(None), true);
        assert_eq!(encoded.unwrap().framing, Framing::Length(0));
        assert_eq!(without_date(&text), "HTTP/1.1 204 No Content");
        let (text, encoded) = encode(
            response(304, &[("content-length", "9")]),
            Method::GET,
            Some(Some(9)),
            true,
        );
        assert_eq!(encoded.unwrap().framing, Framing::Length(0));
        assert_eq!(without_date(&text), "HTTP/1.1 304 Not Modified");
    }

    #[test]
    fn closing_adds_connection_close_once() {
        let (text, encoded) = encode(response(200, &[]), Method::GET, None, false);
        assert!(encoded.unwrap().last);
        assert_eq!(text.matches("connection: close").count(), 1);
        let (text, encoded) = encode(
            response(200, &[("connection", "close")]),
            Method::GET,
            None,
            true,
        );
        assert!(
            encoded.unwrap().last,
            "a response that closes ends the connection"
        );
        assert_eq!(text.matches("connection: close").count(), 1);
    }

    #[test]
    fn bad_or_differing_lengths_are_refused_and_nothing_is_left_written() {
        for headers in [
            &[("content-length", "x")][..],
            &[("content-length", "1"), ("content-length", "2")],
            &[("content-length", "-1")],
        ] {
            let (text, encoded) = encode(response(200, headers), Method::GET, Some(None), true);
            assert_eq!(encoded, Err(EncodeError::BadLength));
            assert!(text.is_empty());
        }
        let (_, encoded) = encode(
            response(200, &[("content-length", "3"), ("content-length", "3")]),
            Method::GET,
            Some(Some(3)),
            true,
        );
        assert_eq!(encoded.unwrap().framing, Framing::Length(3));
    }

    #[test]
    fn a_transfer_coding_ends_in_chunked() {
        let (text, encoded) = encode(
            response(200, &[("transfer-encoding", "gzip")]),
            Method::GET,
            Some(None),
            true,
        );
        assert_eq!(encoded.unwrap().framing, Framing::Chunked);
        assert!(text.contains("transfer-encoding: gzip, chunked\r\n"));
    }

    #[test]
    fn an_http10_response_of_unknown_length_is_sent_as_it_comes_then_closed() {
        let mut old = response(200, &[("transfer-encoding", "chunked")]);
        *old.version_mut() = Version::HTTP_10;
        let (text, encoded) = encode(old, Method::GET, Some(None), true);
        assert_eq!(encoded.unwrap().framing, Framing::Close);
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(!text.contains("content-length"), "{text}");
    }

    #[test]
    fn the_upstreams_own_reason_phrase_is_kept() {
        let mut odd = response(600, &[]);
        odd.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"X"));
        let (text, _) = encode(odd, Method::GET, None, true);
        assert!(text.starts_with("HTTP/1.1 600 X\r\n"), "{text}");
        let mut bare = response(200, &[]);
        bare.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b""));
        let (text, _) = encode(bare, Method::GET, None, true);
        assert!(text.starts_with("HTTP/1.1 200 \r\n"), "{text}");
    }

    #[test]
    fn status_lines() {
        let (text, _) = encode(response(299, &[]), Method::GET, None, true);
        assert!(text.starts_with("HTTP/1.1 299 <none>\r\n"));
        let mut old = response(200, &[]);
        *old.version_mut() = Version::HTTP_10;
        let (text, _) = encode(old, Method::GET, None, true);
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"));
        let (_, encoded) = encode(response(103, &[]), Method::GET, None, true);
        assert_eq!(encoded, Err(EncodeError::Informational));
    }
}
