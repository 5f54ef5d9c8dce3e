//! What the upstream is told about the client: the client IP (through
//! `trusted_proxies`), `X-Forwarded-*`, and identity headers it can trust
//! because palisade strips every client-sent copy first.

use std::net::IpAddr;
use std::sync::LazyLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use super::headers::{length_in, length_mask};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether `ip` belongs to a trusted proxy. IPv4-mapped IPv6 counts as IPv4.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client IP (SPEC §3): the peer unless it is a trusted proxy; then
/// the right-most `X-Forwarded-For` entry that is not a trusted proxy,
/// else the peer (every hop trusted, or a malformed one first).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut hops = forwarded_hops(headers);
    while let Some(hop) = hops.pop() {
        // A malformed hop ends the chain we can believe.
        let Some(ip) = parse_hop(hop) else { break };
        let ip = ip.to_canonical();
        if !is_trusted(ip, trusted) {
            return ip;
        }
    }
    peer
}

/// Every entry of every `X-Forwarded-For` line, in order, trimmed; a line
/// that is not text is one empty (malformed) entry.
fn forwarded_hops(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .collect()
}

/// The part of a trusted proxy's `X-Forwarded-For` chain palisade
/// believes, as [`client_ip`] reads it: the entries right of the last one
/// that is not an address. The upstream gets that part, so that walking
/// it from the right finds no client palisade did not believe (before, a
/// blank first line dropped the whole chain, and a line that was not text
/// was left out while the entries beside it were kept). `None` when
/// nothing is left.
fn believed_chain(headers: &HeaderMap) -> Option<String> {
    let hops = forwarded_hops(headers);
    let from = hops
        .iter()
        .rposition(|hop| parse_hop(hop).is_none())
        .map_or(0, |malformed| malformed + 1);
    let believed = hops.get(from..).filter(|rest| !rest.is_empty())?;
    Some(believed.join(", "))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port as
/// load balancers append them (`1.2.3.4:5555`, `[2001:db8::1]:443`,
/// `[2001:db8::1]`). Anything else is `None`.
pub fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|port| port.parse::<u16>().is_ok());
        return port_ok
            .then(|| inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (addr, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Headers that tell a backend who the client is, which host or scheme it
/// used, or which URL it asked for. Only a trusted proxy may send them:
/// from any other peer they are removed (SPEC §3 lists the first fourteen;
/// the rest are what CDNs, load balancers and client-IP libraries such as
/// Node's `request-ip` and django-ipware read), in any spelling.
const CLIENT_CLAIMED: [&str; 29] = [
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "front-end-https",
    "x-url-scheme",
    "x-original-url",
    "x-rewrite-url",
    "x-host",
    "x-original-host",
    "x-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "fastly-client-ip",
    "akamai-client-ip",
    "x-cluster-client-ip",
    "x-forwarded",
    "forwarded-for",
    "x-original-forwarded-for",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-envoy-original-path",
    "x-envoy-external-address",
    "x-appengine-user-ip",
];

/// The `X-Forwarded-*` headers palisade itself sets.
const SET_BY_PALISADE: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// Bit `n` set: some name of [`CLIENT_CLAIMED`] or [`SET_BY_PALISADE`] is
/// `n` bytes long.
const CLAIMED_LENGTHS: u64 = length_mask(&CLIENT_CLAIMED) | length_mask(&SET_BY_PALISADE);

/// [`CLIENT_CLAIMED`] and [`SET_BY_PALISADE`] (`true`) by name length: a
/// client's header is compared only with the listed names of its own
/// length. Most names of a browser's request (`accept`, `authorization`,
/// `accept-language`, `content-type`) have some listed name's length, and
/// each was compared with all 32.
static CLAIMED_BY_LENGTH: LazyLock<Vec<Vec<(&'static str, bool)>>> = LazyLock::new(|| {
    let mut by_length = vec![Vec::new(); 64];
    let listed = CLIENT_CLAIMED.iter().map(|name| (*name, false));
    let set = SET_BY_PALISADE.iter().map(|name| (*name, true));
    for (name, by_palisade) in listed.chain(set) {
        if let Some(bucket) = by_length.get_mut(name.len()) {
            bucket.push((name, by_palisade));
        }
    }
    by_length
});

/// Removes what a client may not claim about itself. From a peer outside
/// `trusted_proxies`: every [`CLIENT_CLAIMED`] header, and any header that
/// spells one of them or an `X-Forwarded-*` palisade sets with `_` for
/// `-` (CGI-style servers read `X_Forwarded_For` as `X-Forwarded-For`).
/// From a trusted peer only the `_` spellings go.
pub fn remove_client_claimed(headers: &mut HeaderMap, peer_trusted: bool) {
    let claimed = |name: &HeaderName| {
        let name = name.as_str();
        // Most names have no listed name's length: one bit test each.
        if !length_in(CLAIMED_LENGTHS, name.len()) {
            return false;
        }
        let underscored = name.bytes().any(|b| b == b'_');
        if !peer_trusted || underscored {
            // A `_` spelling of what palisade sets goes too.
            CLAIMED_BY_LENGTH.get(name.len()).is_some_and(|bucket| {
                bucket.iter().any(|&(listed, by_palisade)| {
                    (underscored || !by_palisade) && same_header_name(listed, name)
                })
            })
        } else {
            false
        }
    };
    crate::policy::headers::remove_matching(headers, claimed);
}

/// Whether `name` (in any case, `_` for `-`) is a header that says who the
/// client is or what it asked for ([`CLIENT_CLAIMED`], and the
/// `X-Forwarded-*` palisade sets): palisade removes or sets it, so an
/// operator may not give it another meaning (config).
pub fn tells_about_client(name: &str) -> bool {
    CLIENT_CLAIMED
        .iter()
        .chain(&SET_BY_PALISADE)
        .any(|listed| same_header_name(listed, name))
}

/// Whether two header names are the same ignoring case and `_` vs `-`, as
/// CGI/WSGI servers read them (`X_Api_Token` is `X-Api-Token` there).
pub fn same_header_name(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| normalize(x) == normalize(y))
}

/// palisade's `X-Forwarded-*` values for the upstream request, written
/// after the client's lines (`proxy::upstream::rewrite`): the lines they
/// replace leave the header map by [`forwarded_replaces`].
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// `X-Forwarded-For`: a trusted proxy's chain with the peer appended,
    /// else the peer alone.
    pub for_chain: HeaderValue,
    /// `X-Forwarded-Proto`; `None` keeps a trusted proxy's.
    pub proto: Option<HeaderValue>,
    /// `X-Forwarded-Host`; `None` keeps a trusted proxy's, or (from any
    /// other peer) sends none: the request named no host.
    pub host: Option<HeaderValue>,
}

impl Forwarded {
    /// Each line, as name and value, in the order they are written.
    pub fn each(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        [
            Some((&X_FORWARDED_FOR, &self.for_chain)),
            self.proto.as_ref().map(|v| (&X_FORWARDED_PROTO, v)),
            self.host.as_ref().map(|v| (&X_FORWARDED_HOST, v)),
        ]
        .into_iter()
        .flatten()
    }
}

/// The `X-Forwarded-*` palisade sends: `X-Forwarded-For` appended to from a
/// trusted proxy (the part of its chain palisade believes), else the peer
/// alone; `-Proto` and `-Host` palisade's,
/// but a trusted proxy's are kept. Reads `headers` only.
pub fn forwarded(
    headers: &HeaderMap,
    peer_value: &HeaderValue,
    peer_trusted: bool,
    client_https: bool,
    host: Option<&HeaderValue>,
) -> Forwarded {
    let joined = peer_trusted
        .then(|| believed_chain(headers))
        .flatten()
        .and_then(|chain| {
            let peer_text = peer_value.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{chain}, {peer_text}")).ok()
        });
    let kept = |name: &HeaderName| peer_trusted && headers.contains_key(name);
    Forwarded {
        for_chain: joined.unwrap_or_else(|| peer_value.clone()),
        proto: (!kept(&X_FORWARDED_PROTO))
            .then(|| HeaderValue::from_static(if client_https { "https" } else { "http" })),
        host: if kept(&X_FORWARDED_HOST) {
            None
        } else {
            host.cloned()
        },
    }
}

/// Whether the request's own line named `name` gives way to what
/// [`forwarded`] sends: `X-Forwarded-For` always (a trusted proxy's chain
/// is in palisade's line), `-Proto` and `-Host` unless the peer is a
/// trusted proxy (then its own are kept).
pub fn forwarded_replaces(name: &HeaderName, peer_trusted: bool) -> bool {
    // Most names are none of the three by their length alone.
    length_in(FORWARDED_LENGTHS, name.as_str().len())
        && (*name == X_FORWARDED_FOR
            || (!peer_trusted && (*name == X_FORWARDED_PROTO || *name == X_FORWARDED_HOST)))
}

/// Bit `n` set: some `X-Forwarded-*` name palisade sets is `n` bytes long.
const FORWARDED_LENGTHS: u64 = length_mask(&SET_BY_PALISADE);

/// The peer address as header text, IPv4-mapped IPv6 written as IPv4.
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let mut text = String::with_capacity(15);
    match ip.to_canonical() {
        IpAddr::V4(v4) => push_ipv4(&mut text, v4),
        v6 => text = v6.to_string(),
    }
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Appends `ip` in dotted decimal. Written by hand: `Display` through
/// `fmt` cost more than the rest of the forwarding headers together, and
/// rate-limit keys need the same text on every request.
pub fn push_ipv4(out: &mut String, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// Whether the client reached us over HTTPS: TLS on our listener, or a
/// trusted proxy saying `X-Forwarded-Proto: https`.
pub fn client_is_https(tls: bool, peer_trusted: bool, headers: &HeaderMap) -> bool {
    tls || (peer_trusted
        && headers
            .get(&X_FORWARDED_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")))
}

/// Header names no client may send upstream: every `forward_claims` target
/// and every shared-secret header. Compared ignoring case and `_` vs `-`.
/// Also the headers palisade reads or sets whose client copy may pass
/// (the request ID, webhook signatures, rate-limit keys): their other
/// spellings (`X_Request_Id`) are removed, so a CGI-style backend that
/// reads `_` as `-` cannot see a second value beside the one palisade used.
#[derive(Debug, Clone, Default)]
pub struct StrippedHeaders {
    names: Vec<Vec<u8>>,
    twins_of: Vec<HeaderName>,
    /// Bit `n` (63: 63 or more): a name of `names` or `twins_of` is `n`
    /// bytes long. A client's header of another length is none of them,
    /// without comparing (each was compared with every name).
    lengths: u64,
}

/// The bit of [`StrippedHeaders::lengths`] for a name `length` bytes long.
fn length_bit(length: usize) -> u64 {
    1 << length.min(63)
}

fn normalize(byte: u8) -> u8 {
    match byte {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

impl StrippedHeaders {
    /// Adds a name (any spelling).
    pub fn add(&mut self, name: &str) {
        let normalized: Vec<u8> = name.bytes().map(normalize).collect();
        if !self.names.contains(&normalized) {
            self.lengths |= length_bit(normalized.len());
            self.names.push(normalized);
        }
    }

    /// Keeps `name` as spelled, removes its other spellings.
    pub fn add_twins_of(&mut self, name: &HeaderName) {
        if !self.twins_of.contains(name) {
            self.lengths |= length_bit(name.as_str().len());
            self.twins_of.push(name.clone());
        }
    }

    /// Whether `name` is another spelling of a header whose twins go.
    fn is_twin(&self, name: &HeaderName) -> bool {
        self.twins_of
            .iter()
            .any(|kept| kept != name && same_header_name(kept.as_str(), name.as_str()))
    }

    /// Whether `name` is one of them in any spelling.
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| {
            n.len() == name.len() && n.iter().zip(name.bytes()).all(|(a, b)| *a == normalize(b))
        })
    }

    /// Removes every such header from a client request.
    pub fn strip(&self, headers: &mut HeaderMap) {
        if self.names.is_empty() && self.twins_of.is_empty() {
            return;
        }
        crate::policy::headers::remove_matching(headers, |name| {
            self.lengths & length_bit(name.as_str().len()) != 0
                && (self.contains(name.as_str()) || self.is_twin(name))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_claimed_name_goes_in_any_spelling() {
        for name in CLIENT_CLAIMED {
            let underscored = name.replace('-', "_").to_uppercase();
            for spelling in [name.to_string(), underscored] {
                let mut headers = HeaderMap::new();
                headers.insert(
                    HeaderName::from_bytes(spelling.as_bytes()).unwrap(),
                    HeaderValue::from_static("x"),
                );
                headers.insert("x-kept", HeaderValue::from_static("y"));
                remove_client_claimed(&mut headers, false);
                assert_eq!(headers.len(), 1, "{spelling} stayed");
                assert!(headers.contains_key("x-kept"));
            }
        }
        for name in SET_BY_PALISADE {
            let mut headers = HeaderMap::new();
            let twin = name.replace('-', "_");
            headers.insert(
                HeaderName::from_bytes(twin.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
            remove_client_claimed(&mut headers, true);
            assert!(headers.is_empty(), "{twin} stayed");
        }
        // What palisade sets is replaced later, not removed here; a
        // trusted peer's claims in their own spelling stay.
        for (name, trusted) in [("x-forwarded-for", false), ("x-real-ip", true)] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("x"));
            remove_client_claimed(&mut headers, trusted);
            assert!(headers.contains_key(name), "{name} went");
        }
    }

    #[test]
    fn stripped_names_go_in_any_spelling_and_others_of_their_length_stay() {
        let long = "x-".to_string() + &"a".repeat(68);
        let mut stripped = StrippedHeaders::default();
        stripped.add("X-User-Id");
        stripped.add(&long.replace('-', "_"));
        stripped.add_twins_of(&HeaderName::from_static("x-request-id"));
        let mut headers = HeaderMap::new();
        for name in [
            "x-user-id",
            "x_user_id",
            long.as_str(),
            "x_request_id",
            "x-request-id",
            "x-user-ix",
            "x-request-ix",
        ] {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        stripped.strip(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-request-id", "x-request-ix", "x-user-ix"]);
    }

    #[test]
    fn peer_addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "203.0.113.250",
            "2001:db8::1",
            "::1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_header_value(ip), text);
        }
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(ip_header_value(mapped), "10.0.0.7");
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        let peer: IpAddr = "1.2.3.4".parse().unwrap();
        assert_eq!(client_ip(peer, &headers, &nets(&["10.0.0.0/8"])), peer);
        assert_eq!(client_ip(peer, &headers, &[]), peer);
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 7.7.7.7, 10.0.0.2"),
        );
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let ip = client_ip(peer, &headers, &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, "7.7.7.7".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(mapped, &headers, &nets(&["10.0.0.0/8"])), ip);
        // Every hop trusted, or a malformed hop before an untrusted one:
        // the peer (SPEC §3), not the left-most trusted hop.
        for chain in [
            "10.1.1.1",
            "10.1.1.1, 10.0.0.2",
            "6.6.6.6, junk, 10.0.0.2",
            "",
        ] {
            headers.insert("x-forwarded-for", HeaderValue::from_str(chain).unwrap());
            assert_eq!(
                client_ip(peer, &headers, &nets(&["10.0.0.0/8"])),
                peer,
                "{chain}"
            );
        }
    }

    #[test]
    fn forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("9.9.9.9"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let host = HeaderValue::from_static("api.example.com");
        let lines = |f: &Forwarded| {
            f.each()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
                .collect::<Vec<_>>()
        };
        let peer = ip_header_value("10.0.0.1".parse().unwrap());
        let trusted = forwarded(&headers, &peer, true, false, Some(&host));
        // The proxy's Proto is kept (no line of palisade's); no Host came
        // from it, so palisade's goes.
        assert_eq!(
            lines(&trusted),
            [
                "x-forwarded-for: 9.9.9.9, 10.0.0.1",
                "x-forwarded-host: api.example.com"
            ]
        );
        let peer = ip_header_value("1.2.3.4".parse().unwrap());
        let untrusted = forwarded(&headers, &peer, false, false, Some(&host));
        assert_eq!(
            lines(&untrusted),
            [
                "x-forwarded-for: 1.2.3.4",
                "x-forwarded-proto: http",
                "x-forwarded-host: api.example.com"
            ]
        );
        assert_eq!(
            lines(&forwarded(&headers, &peer, false, true, None)).len(),
            2
        );
        for (name, trusted, replaced) in [
            ("x-forwarded-for", true, true),
            ("x-forwarded-for", false, true),
            ("x-forwarded-proto", true, false),
            ("x-forwarded-proto", false, true),
            ("x-forwarded-host", true, false),
            ("x-forwarded-host", false, true),
            ("x-forwarded-port", false, false),
        ] {
            let name = HeaderName::from_static(name);
            assert_eq!(forwarded_replaces(&name, trusted), replaced, "{name}");
        }
    }

    /// Red team, session 15: the upstream's `X-Forwarded-For` holds the
    /// part of a trusted proxy's chain palisade believed, so its client is
    /// the one palisade rate-limited and logged.
    #[test]
    fn the_forwarded_chain_is_the_one_palisade_believed() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer_ip: IpAddr = "10.0.0.1".parse().unwrap();
        let peer = ip_header_value(peer_ip);
        let cases: [(&[&[u8]], &str, &str); 5] = [
            (&[b"9.9.9.9"], "9.9.9.9, 10.0.0.1", "9.9.9.9"),
            (
                &[b"1.1.1.1 ,9.9.9.9:5555"],
                "1.1.1.1, 9.9.9.9:5555, 10.0.0.1",
                "9.9.9.9",
            ),
            (&[b"", b"2.2.2.2"], "2.2.2.2, 10.0.0.1", "2.2.2.2"),
            (
                &[b"1.1.1.1", b"unknown", b"10.0.0.5"],
                "10.0.0.5, 10.0.0.1",
                "10.0.0.1",
            ),
            (
                &[b"1.1.1.1", b"\xff\xfe", b"8.8.8.8"],
                "8.8.8.8, 10.0.0.1",
                "8.8.8.8",
            ),
        ];
        for (lines, chain, client) in cases {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append("x-forwarded-for", HeaderValue::from_bytes(line).unwrap());
            }
            let sent = forwarded(&headers, &peer, true, false, None);
            assert_eq!(sent.for_chain, chain, "{lines:?}");
            assert_eq!(client_ip(peer_ip, &headers, &trusted).to_string(), client);
        }
        // Nothing believable: the peer alone.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static(" "));
        assert_eq!(
            forwarded(&headers, &peer, true, false, None).for_chain,
            "10.0.0.1"
        );
    }

    #[test]
    fn hops_with_ports() {
        let ip = |s: &str| parse_hop(s);
        assert_eq!(ip("9.9.9.9:5555"), Some("9.9.9.9".parse().unwrap()));
        assert_eq!(
            ip("[2001:db8::1]:443"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(ip("[2001:db8::1]"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(ip("2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(ip("9.9.9.9:x"), None);
        assert_eq!(ip("[9.9.9.9]:1"), None);
        assert_eq!(ip("[2001:db8::1]:99999"), None);
        assert_eq!(ip("unknown"), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 9.9.9.9:5555"),
        );
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, &headers, &nets(&["127.0.0.1/32"])),
            "9.9.9.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn client_claimed_headers_only_from_trusted_peers() {
        let mut headers = HeaderMap::new();
        for name in [
            "forwarded",
            "x-real-ip",
            "x-original-url",
            "x_forwarded_for",
            "x-kept",
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        let mut trusted = headers.clone();
        remove_client_claimed(&mut trusted, true);
        assert!(trusted.contains_key("forwarded") && trusted.contains_key("x-original-url"));
        assert!(!trusted.contains_key("x_forwarded_for"));
        remove_client_claimed(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn strips_identity_headers_in_any_spelling() {
        let mut set = StrippedHeaders::default();
        set.add("X-User-Id");
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("admin"));
        headers.insert("x_user_id", HeaderValue::from_static("admin"));
        headers.insert("x-user-idx", HeaderValue::from_static("kept"));
        set.strip(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-user-idx"));
    }
}
