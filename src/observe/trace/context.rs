//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the
//! `traceparent` header parsed by hand (it is 55 bytes of fixed layout, so a
//! general parser would only add cost and ways to be lenient), the ids
//! palisade makes for its own span, and the header it sends upstream.
//!
//! Parsing is strict, because whatever palisade accepts it repeats to the
//! upstream: lowercase hex only, dashes where they belong, version `00`
//! exactly 55 bytes, version `ff` invalid, all-zero trace or span id
//! invalid. A higher version is read as W3C §3.2.4 asks of a version-00
//! parser: its first four fields, as long as whatever follows them starts
//! with `-` (the remainder is not repeated: palisade sends version 00).

use std::fmt;

/// `traceparent`, lowercase as HTTP/2 and hyper spell header names.
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

/// The `sampled` bit of the trace flags.
pub const FLAG_SAMPLED: u8 = 0x01;

/// A 16-byte trace id (never zero once accepted or generated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub u128);

/// An 8-byte span id (never zero once accepted or generated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub u64);

/// What a valid incoming `traceparent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    /// The trace this request belongs to.
    pub trace_id: TraceId,
    /// The caller's span: the parent of palisade's span.
    pub parent_id: SpanId,
    /// Trace flags, kept as received (only `sampled` is defined today).
    pub flags: u8,
}

/// Parses one `traceparent` value; `None` when it is not valid.
pub fn parse_traceparent(value: &[u8]) -> Option<Incoming> {
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = hex_u8(&value[0..2])?;
    match version {
        // "Version ff is invalid" (W3C §3.2.2.1).
        0xff => return None,
        // Version 00 has exactly four fields.
        0x00 if value.len() != TRACEPARENT_LEN => return None,
        // A later version may append fields, after a dash.
        _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex_u128(&value[3..35])?;
    let parent_id = hex_u64(&value[36..52])?;
    let flags = hex_u8(&value[53..55])?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(Incoming {
        trace_id: TraceId(trace_id),
        parent_id: SpanId(parent_id),
        flags,
    })
}

/// The value of one lowercase hex digit.
fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

fn hex_u128(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &b| {
        Some((acc << 4) | u128::from(hex_digit(b)?))
    })
}

fn hex_u64(digits: &[u8]) -> Option<u64> {
    digits
        .iter()
        .try_fold(0u64, |acc, &b| Some((acc << 4) | u64::from(hex_digit(b)?)))
}

fn hex_u8(digits: &[u8]) -> Option<u8> {
    digits
        .iter()
        .try_fold(0u8, |acc, &b| Some((acc << 4) | hex_digit(b)?))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `value`'s low `out.len() * 4` bits as lowercase hex.
fn write_hex(out: &mut [u8], mut value: u128) {
    for slot in out.iter_mut().rev() {
        *slot = HEX[(value & 0xf) as usize];
        value >>= 4;
    }
}

// === impl TraceId ===

impl TraceId {
    /// A random, non-zero trace id from the thread's fast RNG (W3C asks for
    /// randomness, not secrecy: trace ids travel in clear text anyway).
    pub fn random() -> Self {
        loop {
            let id = fastrand::u128(..);
            if id != 0 {
                return Self(id);
            }
        }
    }

    /// The id as 32 lowercase hex digits, on the stack.
    pub fn hex(self) -> Hex<32> {
        let mut out = [0u8; 32];
        write_hex(&mut out, self.0);
        Hex(out)
    }

    /// The 16 bytes, big-endian (as OTLP carries them).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

// === impl SpanId ===

impl SpanId {
    /// A random, non-zero span id.
    pub fn random() -> Self {
        loop {
            let id = fastrand::u64(..);
            if id != 0 {
                return Self(id);
            }
        }
    }

    /// The 8 bytes, big-endian.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

/// Hex digits on the stack: formatting an id allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `traceparent` palisade sends: version 00, the trace, palisade's own
/// span as the parent of whatever the upstream does, and the flags.
pub fn format_traceparent(trace_id: TraceId, span_id: SpanId, flags: u8) -> Hex<TRACEPARENT_LEN> {
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[0] = b'0';
    out[1] = b'0';
    write_hex(&mut out[3..35], trace_id.0);
    write_hex(&mut out[36..52], u128::from(span_id.0));
    write_hex(&mut out[53..55], u128::from(flags));
    Hex(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let parsed = parse_traceparent(VALID.as_bytes()).unwrap();
        assert_eq!(parsed.trace_id, TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736));
        assert_eq!(parsed.parent_id, SpanId(0x00f067aa0ba902b7));
        assert_eq!(parsed.flags, 0x01);
        let unsampled = VALID.replace("-01", "-00");
        assert_eq!(parse_traceparent(unsampled.as_bytes()).unwrap().flags, 0);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        let bad = [
            // version ff is invalid
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // all-zero trace id, all-zero span id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // wrong lengths
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "",
            // wrong separators, stray characters
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e47g6-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // a later version must still separate what it appends
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for value in bad {
            assert_eq!(parse_traceparent(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let future =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let parsed = parse_traceparent(future.as_bytes()).unwrap();
        assert_eq!(parsed.trace_id, TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736));
        let exact = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09";
        assert_eq!(parse_traceparent(exact.as_bytes()).unwrap().flags, 0x09);
    }

    #[test]
    fn the_outgoing_header_round_trips() {
        let trace = TraceId(0x4bf92f3577b34da6a3ce929d0e0e4736);
        let span = SpanId(0x00f067aa0ba902b7);
        assert_eq!(format_traceparent(trace, span, 1).as_str(), VALID);
        let small = format_traceparent(TraceId(1), SpanId(2), 0);
        assert_eq!(
            small.as_str(),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
        for _ in 0..100 {
            let (t, s) = (TraceId::random(), SpanId::random());
            let text = format_traceparent(t, s, 1);
            let back = parse_traceparent(text.as_str().as_bytes()).unwrap();
            assert_eq!((back.trace_id, back.parent_id, back.flags), (t, s, 1));
            assert_eq!(t.hex().as_str(), &text.as_str()[3..35]);
        }
    }
}
