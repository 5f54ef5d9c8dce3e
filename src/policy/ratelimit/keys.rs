//! Key material of rate-limit buckets: IPv6 clients grouped by prefix, and
//! long or odd values hashed so keys stay short and printable.

use std::net::IpAddr;

use ipnet::Ipv6Net;
use sha2::{Digest, Sha256};

/// IPv4 as is; IPv6 grouped by `prefix` (so one client cannot rotate
/// through its /64 to escape a limit).
pub fn ip_bucket(ip: IpAddr, prefix: u8) -> String {
    let mut bucket = String::new();
    push_ip_bucket(&mut bucket, ip, prefix);
    bucket
}

/// Appends [`ip_bucket`] to a key being built.
pub fn push_ip_bucket(out: &mut String, ip: IpAddr, prefix: u8) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => crate::policy::forward::push_ipv4(out, v4),
        IpAddr::V6(v6) => out.push_str(
            &Ipv6Net::new(v6, prefix.min(128))
                .map_or_else(|_| v6.to_string(), |net| net.trunc().to_string()),
        ),
    }
}

/// Long or odd key material is hashed so keys stay short and printable.
pub fn bounded(value: &str) -> String {
    bounded_bytes(value.as_bytes())
}

/// [`bounded`] over raw bytes: values that differ in any byte stay
/// different keys (a lossy UTF-8 reading made `C\xa0`, `C\x85` and `C\xff`
/// one bucket, which a backend reads as three keys).
pub fn bounded_bytes(value: &[u8]) -> String {
    if value.len() <= 64
        && value
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'{' && b != b'}')
    {
        value.iter().map(|&b| char::from(b)).collect()
    } else {
        let digest = Sha256::digest(value);
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

/// A `header:NAME` value as a backend may read it: whitespace around it
/// cut, every kind a server strips: ASCII, the Latin-1 NEL and NBSP bytes
/// (0x85, 0xA0; Python servers that decode headers as Latin-1 and
/// `strip()` them, gunicorn 21 among them), and Unicode whitespace
/// written in UTF-8, with U+FEFF, which JavaScript's `trim()` also cuts
/// (servers that decode UTF-8 and strip). Every padded spelling of a key
/// is then its one bucket, where each was a fresh one. Coarser than any
/// one server (`k7\u{a0}` is `k7Â` to a Latin-1 reader): two keys a
/// backend tells apart may share a bucket, never the other way round.
pub fn header_key_value(value: &[u8]) -> &[u8] {
    let mut value = value;
    loop {
        let before = value.len();
        value = value.trim_ascii();
        // UTF-8 first: `\xc2\xa0` is one NBSP to a UTF-8 reader, which
        // cuts both bytes where a Latin-1 reader would keep the `\xc2`.
        if let Some(c) = first_char(value).filter(|&c| stripped(c)) {
            value = &value[c.len_utf8()..];
        }
        if let Some(c) = last_char(value).filter(|&c| stripped(c)) {
            value = &value[..value.len() - c.len_utf8()];
        }
        if let [0x85 | 0xa0, rest @ ..] = value {
            value = rest;
        }
        if let [rest @ .., 0x85 | 0xa0] = value {
            value = rest;
        }
        if value.len() == before {
            return value;
        }
    }
}

/// A character some server strips from a header value's ends.
fn stripped(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// The character `bytes` starts with, when they start with UTF-8.
fn first_char(bytes: &[u8]) -> Option<char> {
    let head = &bytes[..bytes.len().min(4)];
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(error) => std::str::from_utf8(&head[..error.valid_up_to()]).ok()?,
    };
    valid.chars().next()
}

/// The character `bytes` end with, when they end with UTF-8.
fn last_char(bytes: &[u8]) -> Option<char> {
    (1..=bytes.len().min(4)).find_map(|n| {
        let mut chars = std::str::from_utf8(&bytes[bytes.len() - n..]).ok()?.chars();
        let c = chars.next()?;
        chars.next().is_none().then_some(c)
    })
}
