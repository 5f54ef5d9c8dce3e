//! HTTP/1.1 on the wire as both sides of palisade's own engine read and
//! write it (`proxy::h1` toward clients, `proxy::upstream::raw` toward the
//! upstream): header lines, the header map of a parsed head, the readings
//! of `Content-Length`, `Transfer-Encoding` and `Connection` values (each
//! as hyper reads it), and the socket reads and writes.

use std::io::IoSlice;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Appends one header line, `name: value` and CRLF.
pub fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    line_bytes(out, name.as_bytes(), value);
}

/// [`line`] for a name as bytes.
pub fn line_bytes(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Puts ASCII letters in lower case, eight bytes at a time: a byte is
/// upper case when it lies in `A..=Z`, found for eight at once by adding
/// to each 7-bit byte (no carry crosses bytes: 0x7f + 0x3f < 0x100); a
/// byte of 0x80 or more is left as it is. `make_ascii_lowercase` goes byte
/// by byte, and header names are lowered on every response.
pub fn lowercase_in_place(bytes: &mut [u8]) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let low7 = x & !HIGH;
        let at_least_a = low7.wrapping_add((0x80 - u64::from(b'A')) * ONES);
        let past_z = low7.wrapping_add((0x80 - u64::from(b'Z') - 1) * ONES);
        let upper = at_least_a & !past_z & !x & HIGH;
        chunk.copy_from_slice(&(x | (upper >> 2)).to_le_bytes());
    }
    chunks.into_remainder().make_ascii_lowercase();
}

/// Header lines of a head kept inline, without touching the heap: more
/// than most requests and responses carry.
pub const INLINE_LINES: usize = 32;

/// The (name, value) spans of a parsed head's lines.
pub type Spans = smallvec::SmallVec<[(Span, Span); INLINE_LINES]>;

/// Where a piece of a parsed head lies in its buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The position of `inner`, a slice `httparse` returned, in `outer`.
    pub fn within(outer: &[u8], inner: &[u8]) -> Self {
        // Heads are bounded far below 4 GiB (`server.max_header_bytes`,
        // the upstream head buffer); u32 keeps a span array small.
        let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
        let start = u32::try_from(start).unwrap_or(u32::MAX);
        let length = u32::try_from(inner.len()).unwrap_or(0);
        Self {
            start,
            end: start.saturating_add(length),
        }
    }

    /// The piece of `head` it marks, sharing its bytes.
    pub fn slice(self, head: &Bytes) -> Bytes {
        head.slice(self.range())
    }

    /// The byte range it marks.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// The header map of a parsed head: `lines` are the (name, value) spans
/// of each line in `head`; `room` lines more fit without growing the map.
/// `None` where the `http` types refuse a name or a value.
pub fn header_map(head: &Bytes, lines: &[(Span, Span)], room: usize) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(lines.len() + room);
    for (name, value) in lines {
        let name = HeaderName::from_bytes(&head[name.range()]).ok()?;
        let value = HeaderValue::from_maybe_shared(value.slice(head)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// A `Content-Length` value: digits only, or the same number repeated in
/// a comma list (hyper's reading); `None` otherwise.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let n = decimal(part.trim_ascii())?;
        match length {
            Some(first) if first != n => return None,
            _ => length = Some(n),
        }
    }
    length
}

/// Whether a `Content-Length` value is spelled as one number is best
/// written: ASCII digits, no leading zero (`0` itself aside). Any other
/// spelling [`content_length`] reads is rewritten before it is passed on.
pub fn plain_length(value: &[u8]) -> bool {
    !value.is_empty()
        && value.iter().all(u8::is_ascii_digit)
        && (value[0] != b'0' || value.len() == 1)
}

/// A run of ASCII digits as a number; `None` when empty, anything else is
/// in it, or it overflows `u64`. (Byte by byte: `str::parse` checked UTF-8
/// and a sign first, and was a measurable part of every head.)
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Whether the last coding a `Transfer-Encoding` value names is `chunked`.
pub fn ends_in_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether a comma-separated value (a `Connection` line) names `token`,
/// in any case.
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Reads what the socket has onto `buffer`, with room for at least
/// `want` more bytes; `Ready(Ok(0))` when the peer has closed.
pub fn poll_read<I: AsyncRead + Unpin>(
    io: &mut I,
    buffer: &mut BytesMut,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    buffer.reserve(want);
    std::pin::pin!(io.read_buf(buffer)).poll(cx)
}

/// Writes all of `first`, then all of `second`.
pub async fn write_two<I: AsyncWrite + Unpin>(
    io: &mut I,
    first: &[u8],
    second: &[u8],
) -> std::io::Result<()> {
    let (mut first, mut second) = (first, second);
    while !first.is_empty() || !second.is_empty() {
        let written = if first.is_empty() {
            io.write(second).await?
        } else if second.is_empty() {
            io.write(first).await?
        } else {
            let parts = [IoSlice::new(first), IoSlice::new(second)];
            io.write_vectored(&parts).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_first = written.min(first.len());
        first = &first[from_first..];
        second = &second[written - from_first..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_hyper_reads_them() {
        assert_eq!(content_length(b"5"), Some(5));
        assert_eq!(content_length(b" 5 , 5"), Some(5));
        assert_eq!(content_length(b"5, 6"), None);
        assert_eq!(content_length(b"+5"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"99999999999999999999999"), None);
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(content_length(b"18446744073709551616"), None);
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"007"), Some(7));
        assert_eq!(content_length(b"1 2"), None);
        assert_eq!(content_length(b"-1"), None);
        assert_eq!(content_length(b"5,"), None);
        assert_eq!(content_length(b"\xd9\xa1"), None);
        assert!(ends_in_chunked(b"gzip, Chunked "));
        assert!(!ends_in_chunked(b"chunked, gzip"));
        assert!(has_token(b"foo, CLOSE", b"close"));
        assert!(!has_token(b"closed, x-close", b"close"));
    }

    #[test]
    fn lowering_eight_bytes_at_a_time_is_lowering_byte_by_byte() {
        let every_byte: Vec<u8> = (0..=255u8).collect();
        for name in [
            &b"Content-Type"[..],
            b"X-AZaz@[`{-0123456789",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            b"",
            b"Q",
            &every_byte,
        ] {
            for start in 0..name.len().min(9) {
                let mut lowered = name[start..].to_vec();
                lowercase_in_place(&mut lowered);
                assert_eq!(lowered, name[start..].to_ascii_lowercase());
            }
        }
    }

    #[tokio::test]
    async fn both_parts_arrive_in_order() {
        let mut out = Vec::new();
        write_two(&mut out, b"head ", b"body").await.unwrap();
        write_two(&mut out, b"", b"+").await.unwrap();
        write_two(&mut out, b"!", b"").await.unwrap();
        assert_eq!(out, b"head body+!");
    }
}
