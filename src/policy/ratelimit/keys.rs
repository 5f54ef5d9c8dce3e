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
