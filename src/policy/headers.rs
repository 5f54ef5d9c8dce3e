//! Response security headers (`[security_headers]`, per-route overrides) and
//! the hop-by-hop header rules of RFC 9110 §7.6.1, applied both ways.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::response_headers::{HeaderBlock, NameSet, ResponseHeaders};

/// One security header palisade sets on responses: its key under
/// `[security_headers]` (and a route's `security_headers = { .. }`), the
/// header it sets, its default (SPEC §2; `""` sets nothing) and whether it
/// is only sent to HTTPS clients.
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaderEntry {
    /// The config key.
    pub key: &'static str,
    /// The response header (lower case, a valid header name).
    pub name: &'static str,
    /// The value when the file does not set one.
    pub default: &'static str,
    /// Sent only when the client used HTTPS (`Strict-Transport-Security`).
    pub https_only: bool,
}

const fn entry(
    key: &'static str,
    name: &'static str,
    default: &'static str,
    https_only: bool,
) -> SecurityHeaderEntry {
    SecurityHeaderEntry {
        key,
        name,
        default,
        https_only,
    }
}

/// How many security headers [`SECURITY_HEADERS`] lists.
pub const SECURITY_HEADER_COUNT: usize = 8;

/// The one list of security headers: it drives the config keys, their
/// defaults, a route's overrides and what [`SecurityHeaders::apply`] sets.
pub const SECURITY_HEADERS: [SecurityHeaderEntry; SECURITY_HEADER_COUNT] = [
    entry(
        "x_content_type_options",
        "x-content-type-options",
        "nosniff",
        false,
    ),
    entry("x_frame_options", "x-frame-options", "DENY", false),
    entry("x_xss_protection", "x-xss-protection", "0", false),
    entry("referrer_policy", "referrer-policy", "no-referrer", false),
    entry(
        "content_security_policy",
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
        false,
    ),
    entry(
        "strict_transport_security",
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
        true,
    ),
    entry("permissions_policy", "permissions-policy", "", false),
    entry(
        "cross_origin_opener_policy",
        "cross-origin-opener-policy",
        "",
        false,
    ),
];

/// The key of the list of response headers removed, beside the table's keys.
pub const REMOVE_RESPONSE_HEADERS: &str = "remove_response_headers";

/// Removed from upstream responses unless the file says otherwise.
pub const DEFAULT_REMOVED: [&str; 2] = ["Server", "X-Powered-By"];

/// A compiled security-header set: values validated at load time.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    /// Set on every response (empty values were dropped at load).
    always: Vec<(HeaderName, HeaderValue)>,
    /// Set only when the client used HTTPS (`Strict-Transport-Security`).
    https_only: Vec<(HeaderName, HeaderValue)>,
    /// Dropped from upstream responses (`Server`, `X-Powered-By`, ...).
    remove: NameSet,
    /// What a plain-HTTP response gets (`always`), and what an HTTPS one
    /// gets (`always` then `https_only`), each encoded once.
    blocks: [Option<Arc<HeaderBlock>>; 2],
}

impl SecurityHeaders {
    /// Whether `other` sets and removes exactly these headers, in any
    /// order.
    pub fn same_as(&self, other: &SecurityHeaders) -> bool {
        fn same_set<T: PartialEq>(a: &[T], b: &[T]) -> bool {
            a.len() == b.len() && a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
        }
        same_set(&self.always, &other.always)
            && same_set(&self.https_only, &other.https_only)
            && same_set(self.remove.names(), other.remove.names())
    }

    /// The set that sets `always` on every response and `https_only` on
    /// responses to HTTPS clients, after removing `remove`.
    pub fn new(
        always: Vec<(HeaderName, HeaderValue)>,
        https_only: Vec<(HeaderName, HeaderValue)>,
        remove: Vec<HeaderName>,
    ) -> Self {
        let both: Vec<_> = always.iter().chain(&https_only).cloned().collect();
        let blocks = [HeaderBlock::new(&always), HeaderBlock::new(&both)];
        Self {
            always,
            https_only,
            remove: NameSet::new(remove),
            blocks,
        }
    }

    /// What every response gets.
    pub fn always(&self) -> &[(HeaderName, HeaderValue)] {
        &self.always
    }

    /// Removes the configured response headers from an upstream's answer,
    /// then sets the security headers (replacing any the upstream sent).
    /// palisade's own answers (`from_upstream` false) carry only headers it
    /// owes the client (a 429's `Retry-After`, a 401's challenge, SPEC §4):
    /// `remove_response_headers` does not reach them, as it does not reach
    /// the request ID or the rate-limit headers set after it.
    pub fn apply(
        &self,
        headers: &mut ResponseHeaders<'_>,
        client_https: bool,
        from_upstream: bool,
    ) {
        if from_upstream {
            headers.remove_all(&self.remove);
        }
        if let Some(block) = &self.blocks[usize::from(client_https)] {
            headers.insert_block(block);
            return;
        }
        for (name, value) in self.always.iter().chain(if client_https {
            self.https_only.as_slice()
        } else {
            &[]
        }) {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Response headers palisade sets itself besides the security headers
/// ([`SECURITY_HEADERS`]), the rate-limit ones
/// ([`RATE_LIMIT_HEADERS`](crate::policy::ratelimit::RATE_LIMIT_HEADERS))
/// and the CORS ones
/// ([`CORS_RESPONSE_HEADERS`](crate::policy::cors::CORS_RESPONSE_HEADERS)):
/// `Vary`, and those of its own answers.
const ALSO_SET_ON_RESPONSES: [&str; 7] = [
    "vary",
    "retry-after",
    "www-authenticate",
    "cache-control",
    "content-type",
    "allow",
    "date",
];

/// Whether palisade sets the response header `name` itself (in any case,
/// `_` for `-`). The request-ID header may not be one of them: the
/// client's ID (kept with `trust_incoming`) would replace, or be replaced
/// by, palisade's value (red team, session 27: `header =
/// "X-Frame-Options"` let a client choose the response's
/// `X-Frame-Options`).
pub fn set_on_responses(name: &str) -> bool {
    let same = |set: &str| crate::policy::forward::same_header_name(set, name);
    SECURITY_HEADERS.iter().any(|header| same(header.name))
        || crate::policy::ratelimit::RATE_LIMIT_HEADERS
            .iter()
            .any(|header| same(header.as_str()))
        || crate::policy::cors::CORS_RESPONSE_HEADERS
            .iter()
            .any(|header| same(header.as_str()))
        || ALSO_SET_ON_RESPONSES.iter().any(|header| same(header))
}

/// Hop-by-hop headers that never cross a proxy (RFC 9110 §7.6.1, plus the
/// historical `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`, and
/// `HTTP2-Settings`, which belongs to one connection's h2c upgrade).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Removes hop-by-hop headers and every header the `Connection` header
/// names. For responses, where palisade sets its own headers afterwards.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_connection_nominated(headers, |_| false);
    strip_fixed_hop_by_hop(headers);
}

/// Removes the fixed hop-by-hop headers only. For a request whose
/// `Connection`-named headers were already removed by
/// [`remove_connection_nominated`] before palisade added its own headers:
/// nothing named in `Connection` may remove what palisade sets.
pub fn strip_fixed_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a few), marking which of the list
    // are there; only those are removed (each removal hashes its name).
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(index) = hop_by_hop_index(name) {
            present |= 1 << index;
        }
    }
    if present == 0 {
        return;
    }
    // Borrowed, not iterated by value: that copied the list (160 bytes).
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(*name);
        }
    }
}

/// Removes every header whose name `doomed` picks. Usually none is
/// picked: the names are looked at first, and collected only then.
pub fn remove_matching(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    if !headers.keys().any(&doomed) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// Bit `n` set: some hop-by-hop name is `n` bytes long.
const HOP_BY_HOP_LENGTHS: u64 = length_mask(&HOP_BY_HOP);

/// Bit `n` set: some name of `names` is `n` bytes long (names of 64 bytes
/// or more are not counted: callers list shorter ones). A header name
/// whose length is not in the mask is none of them, without comparing.
pub const fn length_mask(names: &[&str]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < names.len() {
        if names[i].len() < 64 {
            mask |= 1 << names[i].len();
        }
        i += 1;
    }
    mask
}

/// Whether a name `len` bytes long may be one of those `mask` was made of.
pub fn length_in(mask: u64, len: usize) -> bool {
    len < 64 && mask & (1 << len) != 0
}

/// The position of `name` in [`HOP_BY_HOP`]: most names are ruled out by
/// their length alone.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let name = name.as_str();
    if !length_in(HOP_BY_HOP_LENGTHS, name.len()) {
        return None;
    }
    HOP_BY_HOP.iter().position(|listed| *listed == name)
}

/// Whether a header name (in any case) is one of the fixed hop-by-hop
/// names: for lines read as bytes, before any header map exists.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    length_in(HOP_BY_HOP_LENGTHS, name.len())
        && HOP_BY_HOP
            .iter()
            .any(|listed| listed.as_bytes().eq_ignore_ascii_case(name))
}

/// Removes every header the `Connection` header names, except hop-by-hop
/// ones (removed later, after an `Upgrade` was read) and those `protected`
/// says palisade sets or relies on. `Connection` itself stays until then.
pub fn remove_connection_nominated(
    headers: &mut HeaderMap,
    protected: impl Fn(&HeaderName) -> bool,
) {
    // The usual cases first: no `Connection`, or one line that is just
    // `keep-alive` or `close` (every upstream response on a kept-alive
    // connection), which names nothing to remove.
    let mut lines = headers.get_all(header::CONNECTION).iter();
    match (lines.next(), lines.next()) {
        (None, _) => return,
        (Some(line), None) if names_nothing(line.as_bytes()) => return,
        _ => {}
    }
    // Every token of every Connection line names a hop-by-hop header.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        // The usual values name nothing to remove beyond the fixed set.
        .filter(|token| !names_nothing(token.as_bytes()))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .filter(|name| hop_by_hop_index(name).is_none() && !protected(name))
        .collect();
    for extra in named {
        headers.remove(extra);
    }
}

/// Whether a `Connection` line or token is only `keep-alive` or `close`
/// (they name no header to remove).
pub fn names_nothing(line: &[u8]) -> bool {
    line.eq_ignore_ascii_case(b"keep-alive") || line.eq_ignore_ascii_case(b"close")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_header_sets_compare_in_any_order() {
        let value = |v: &'static str| HeaderValue::from_static(v);
        let set = |remove: [&'static str; 2], frame: &'static str| {
            SecurityHeaders::new(
                vec![
                    (header::X_FRAME_OPTIONS, value(frame)),
                    (header::X_CONTENT_TYPE_OPTIONS, value("nosniff")),
                ],
                Vec::new(),
                remove.map(HeaderName::from_static).to_vec(),
            )
        };
        let defaults = set(["server", "x-powered-by"], "DENY");
        assert!(defaults.same_as(&set(["x-powered-by", "server"], "DENY")));
        assert!(!defaults.same_as(&set(["server", "x-powered-by"], "SAMEORIGIN")));
        assert!(!defaults.same_as(&set(["server", "via"], "DENY")));
    }

    #[test]
    fn every_hop_by_hop_name_is_found() {
        for (index, name) in HOP_BY_HOP.into_iter().enumerate() {
            // `from_static` refuses anything but a lower-case header name,
            // the only spelling `HeaderName::as_str` gives.
            let name = HeaderName::from_static(name);
            assert_eq!(hop_by_hop_index(&name), Some(index));
        }
        assert_eq!(hop_by_hop_index(&header::HOST), None);
        assert_eq!(hop_by_hop_index(&header::USER_AGENT), None);
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop_name(name.as_bytes()));
            assert!(is_hop_by_hop_name(name.to_ascii_uppercase().as_bytes()));
        }
        assert!(!is_hop_by_hop_name(b"Host"));
        assert!(!is_hop_by_hop_name(b"Transfer-Encodings"));
        assert!(!is_hop_by_hop_name(b"Transfer_Encoding"));
    }

    #[test]
    fn length_masks_admit_exactly_the_listed_lengths() {
        let mask = length_mask(&["te", "upgrade", &"x".repeat(70)]);
        assert!(length_in(mask, 2) && length_in(mask, 7));
        assert!(!length_in(mask, 3) && !length_in(mask, 0));
        // Lengths of 64 and more are never in a mask (nothing listed is).
        assert!(!length_in(mask, 70) && !length_in(u64::MAX, 64));
    }

    #[test]
    fn strips_hop_by_hop_and_connection_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("x-other-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn a_lone_keep_alive_or_close_line_names_nothing_but_a_second_line_counts() {
        for plain in ["keep-alive", "Keep-Alive", "close", "CLOSE"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONNECTION, HeaderValue::from_static(plain));
            headers.insert("x-kept", HeaderValue::from_static("1"));
            remove_connection_nominated(&mut headers, |_| false);
            assert_eq!(headers.len(), 2, "{plain}");
            // The same value followed by a line naming a header.
            headers.append(header::CONNECTION, HeaderValue::from_static("x-kept"));
            remove_connection_nominated(&mut headers, |_| false);
            assert!(!headers.contains_key("x-kept"), "{plain} then x-kept");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close,x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        remove_connection_nominated(&mut headers, |_| false);
        assert!(!headers.contains_key("x-hop"));
    }

    #[test]
    fn connection_cannot_remove_protected_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("upgrade, authorization, x-hop"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        remove_connection_nominated(&mut headers, |name| name == header::AUTHORIZATION);
        assert!(headers.contains_key(header::AUTHORIZATION));
        assert!(headers.contains_key(header::UPGRADE));
        assert!(headers.contains_key(header::CONNECTION));
        assert!(!headers.contains_key("x-hop"));
        strip_fixed_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn the_security_header_table_holds_valid_names() {
        for entry in SECURITY_HEADERS {
            assert!(
                HeaderName::from_bytes(entry.name.as_bytes()).is_ok(),
                "{}",
                entry.name
            );
            assert_eq!(entry.key, entry.name.replace('-', "_"));
        }
    }

    #[test]
    fn hsts_only_on_https() {
        use super::super::response_headers::tests::written;
        use super::super::response_headers::{PendingHeaders, UpstreamLines, edit_map};
        let set = SecurityHeaders::new(
            vec![(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"))],
            vec![(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=1"),
            )],
            vec![header::SERVER],
        );
        let mut plain = HeaderMap::new();
        plain.insert(header::SERVER, HeaderValue::from_static("uvicorn"));
        edit_map(&mut plain, |h| set.apply(h, false, true));
        assert!(!plain.contains_key(header::SERVER));
        assert!(!plain.contains_key(header::STRICT_TRANSPORT_SECURITY));
        assert_eq!(plain[header::X_FRAME_OPTIONS], "DENY");
        let mut tls = HeaderMap::new();
        edit_map(&mut tls, |h| set.apply(h, true, true));
        assert_eq!(tls[header::STRICT_TRANSPORT_SECURITY], "max-age=1");
        // The upstream's lines kept as bytes (palisade's exchange): the
        // removed name goes in any case, and a set one replaces theirs.
        let mut own = HeaderMap::new();
        let mut pending = PendingHeaders::new(Some(UpstreamLines::from_pairs(&[
            ("SERVER", "uvicorn"),
            ("X-Frame-Options", "ALLOWALL"),
            ("Content-Type", "text/plain"),
        ])));
        set.apply(
            &mut ResponseHeaders::new(&mut own, &mut pending),
            false,
            true,
        );
        let out = written(&own, &pending);
        // The set is one block, written after the others.
        assert_eq!(out, ["content-type: text/plain", "x-frame-options: DENY"]);
        // palisade's own answer keeps its headers; the security ones are set.
        let mut answer = HeaderMap::new();
        answer.insert(header::SERVER, HeaderValue::from_static("palisade"));
        edit_map(&mut answer, |h| set.apply(h, false, false));
        assert_eq!(answer[header::SERVER], "palisade");
        assert_eq!(answer[header::X_FRAME_OPTIONS], "DENY");
    }
}
