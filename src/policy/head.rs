//! The request head as HTTP defines it, checked before routing: exactly one
//! valid `Host` that agrees with the target's authority (RFC 9112 §3.2; over
//! HTTP/2, `host` agrees with `:authority`), no userinfo, methods in their
//! one spelling (RFC 9110 §9.1), and the client's header lines cleaned so
//! that palisade and the upstream read the same request: what `Connection`
//! names, method overrides, and several `Cookie` lines joined into one.

use std::fmt;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Uri, Version};

use super::headers::remove_connection_nominated;

/// Why a request head was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRejection {
    /// HTTP/1.1 without `Host`.
    MissingHost,
    /// More than one `Host` line.
    DuplicateHost,
    /// A `Host` or authority that is not `host[:port]` (userinfo, spaces).
    BadHost,
    /// `Host` disagrees with the absolute-form target or `:authority`.
    HostMismatch,
    /// An absolute-form target (or HTTP/2 `:scheme`) that is neither
    /// `http` nor `https` (`ftp://h/x`): no resource a sidecar serves.
    TargetScheme,
    /// A method that equals a known one only when case is ignored (`post`).
    MethodCase,
    /// A `_method` query parameter: Rails, Laravel, Symfony and Express
    /// middleware would run another method than the one routed on.
    MethodOverride,
    /// `CONNECT`: palisade does not tunnel, and the upstream's answer to a
    /// `CONNECT` it was handed would make the client connection a tunnel
    /// nobody serves.
    Connect,
    /// A `header:NAME` rate-limit key sent on several lines: palisade would
    /// count one value while the backend may read another.
    RepeatedLimitKey,
    /// A `Transfer-Encoding` other than one `chunked`: a coding before it
    /// (`gzip, chunked`) would be dropped while its bytes are passed on,
    /// and `chunked` twice would be unwrapped once (RFC 9112 §6.1).
    TransferCoding,
    /// An HTTP/2 field value that starts or ends with a space or tab (RFC
    /// 9113 §8.2.1 makes such a request malformed): an HTTP/1 upstream
    /// strips the whitespace, so `k7 ` would be one value to palisade (a
    /// rate-limit key, a secret compared) and another to the backend.
    PaddedValue,
    /// A `header:NAME` rate-limit key with a byte outside ASCII: servers
    /// read such bytes as Latin-1 or as UTF-8 and strip different
    /// whitespace from them, so no one bucket matches every backend's key.
    LimitKeyBytes,
}

impl HeadRejection {
    /// The `palisade_rejections_total` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MethodCase | Self::MethodOverride | Self::Connect => "method",
            Self::RepeatedLimitKey => "repeated_header",
            Self::TransferCoding => "transfer_coding",
            Self::PaddedValue => "header_whitespace",
            Self::LimitKeyBytes => "limit_key",
            _ => "host",
        }
    }
}

impl fmt::Display for HeadRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingHost => "an HTTP/1.1 request needs a Host header",
            Self::DuplicateHost => "the request has more than one Host header",
            Self::BadHost => "the Host or authority is not host[:port]",
            Self::HostMismatch => "the Host header disagrees with the request target's authority",
            Self::TargetScheme => "the request target's scheme is neither http nor https",
            Self::MethodCase => "the method is a case variant of a known method",
            Self::MethodOverride => "the query has a _method parameter (method override)",
            Self::Connect => "CONNECT is not served: palisade is a reverse proxy, not a tunnel",
            Self::RepeatedLimitKey => "the rate-limit key header appears more than once",
            Self::TransferCoding => {
                "the only transfer coding accepted is chunked, once (RFC 9112 section 6.1)"
            }
            Self::PaddedValue => {
                "an HTTP/2 header value starts or ends with whitespace (RFC 9113 section 8.2.1)"
            }
            Self::LimitKeyBytes => "the rate-limit key header holds a byte outside ASCII",
        })
    }
}

/// Checks `Host` against the version and the target's authority.
pub fn check_host(version: Version, uri: &Uri, headers: &HeaderMap) -> Result<(), HeadRejection> {
    if let Some(scheme) = uri.scheme_str()
        && !scheme.eq_ignore_ascii_case("http")
        && !scheme.eq_ignore_ascii_case("https")
    {
        return Err(HeadRejection::TargetScheme);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HeadRejection::DuplicateHost);
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without `Host` is refused even
    // when its target is in absolute form.
    if host.is_none() && version == Version::HTTP_11 {
        return Err(HeadRejection::MissingHost);
    }
    if let Some(host) = host {
        let Some(authority) = uri.authority() else {
            // Origin-form, nearly every request: the `Host` alone.
            return valid_host(host.as_bytes());
        };
        let host = valid_authority(host.as_bytes())?;
        valid_authority(authority.as_str().as_bytes())?;
        // The same authority when the host and the port agree, a port left
        // out being the scheme's (RFC 3986 §6.2.3: `good` is `good:80` for
        // http).
        let default_port = match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => Some(80),
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => Some(443),
            _ => None,
        };
        let port = |a: &Authority| a.port_u16().or(default_port);
        if !host.host().eq_ignore_ascii_case(authority.host()) || port(&host) != port(authority) {
            return Err(HeadRejection::HostMismatch);
        }
        return Ok(());
    }
    match uri.authority() {
        Some(authority) => valid_authority(authority.as_str().as_bytes()).map(|_| ()),
        None => Ok(()),
    }
}

/// The longest `Host` [`valid_host`] remembers.
const REMEMBERED_HOST: usize = 64;

thread_local! {
    /// The last `Host` value this thread found valid (length, bytes).
    static LAST_VALID_HOST: std::cell::Cell<(usize, [u8; REMEMBERED_HOST])> =
        const { std::cell::Cell::new((0, [0; REMEMBERED_HOST])) };
}

/// [`valid_authority`] for a `Host` value, remembering the last valid one
/// per thread: clients send the same few hosts again and again, and
/// parsing one into an `Authority` allocates a copy of it.
fn valid_host(host: &[u8]) -> Result<(), HeadRejection> {
    let remembered = LAST_VALID_HOST.get();
    if !host.is_empty() && remembered.1.get(..remembered.0) == Some(host) {
        return Ok(());
    }
    valid_authority(host)?;
    if host.len() <= REMEMBERED_HOST {
        let mut bytes = [0; REMEMBERED_HOST];
        bytes[..host.len()].copy_from_slice(host);
        LAST_VALID_HOST.set((host.len(), bytes));
    }
    Ok(())
}

/// `host[:port]`: an authority without userinfo, whose port (if any) is
/// a number up to 65535 (`Authority` alone takes any text after `:`).
fn valid_authority(bytes: &[u8]) -> Result<Authority, HeadRejection> {
    if bytes.is_empty() || bytes.contains(&b'@') {
        return Err(HeadRejection::BadHost);
    }
    let authority = Authority::try_from(bytes).map_err(|_| HeadRejection::BadHost)?;
    let text = authority.as_str();
    // An IPv6 literal's colons are inside its brackets.
    let after_host = match text.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(_, after)| after),
        None => text,
    };
    if let Some((_, port)) = after_host.rsplit_once(':')
        && !port.is_empty()
        && !(port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok())
    {
        return Err(HeadRejection::BadHost);
    }
    Ok(authority)
}

/// Refuses a method that equals one of `known` only when case is ignored:
/// `post` would skip a `POST`-only route here and run as `POST` in a
/// framework that upper-cases it.
pub fn check_method(method: &Method, known: &[Method]) -> Result<(), HeadRejection> {
    if method == Method::CONNECT {
        return Err(HeadRejection::Connect);
    }
    let text = method.as_str();
    // Every known method is in upper case (the standard ones, and routes'
    // `methods`, upper-cased at load): a method with no lower-case letter
    // equals one ignoring case only if it is that very method. Most
    // requests stop here, without comparing against each known method.
    if !text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Ok(());
    }
    if known
        .iter()
        .any(|m| m != method && m.as_str().eq_ignore_ascii_case(text))
    {
        return Err(HeadRejection::MethodCase);
    }
    Ok(())
}

/// Refuses a request whose `Transfer-Encoding` lines, taken together, are
/// anything but the one coding `chunked` (any case, spaces around it).
/// The chunked framing is removed on the way in and made again on the way
/// out, so any other coding would reach the upstream as a label dropped
/// from bytes still coded by it (`gzip, chunked`), or a body unwrapped
/// once of two chunkings (`chunked, chunked`).
pub fn check_transfer_coding(headers: &HeaderMap) -> Result<(), HeadRejection> {
    let mut codings = 0;
    for line in headers.get_all(header::TRANSFER_ENCODING) {
        for coding in line.as_bytes().split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            codings += 1;
            if codings > 1 || !coding.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadRejection::TransferCoding);
            }
        }
    }
    Ok(())
}

/// Refuses an HTTP/2 request with a field value that starts or ends with a
/// space or tab (RFC 9113 §8.2.1: malformed). HTTP/1 parsers, palisade's
/// and hyper's and the upstream's, strip that whitespace from a line, so
/// the value palisade would judge (a `header:` rate-limit key, a shared
/// secret, a tenant header) would not be the one the backend reads. An
/// HTTP/1 request's values arrive stripped.
pub fn check_field_values(version: Version, headers: &HeaderMap) -> Result<(), HeadRejection> {
    if version != Version::HTTP_2 {
        return Ok(());
    }
    let padded = |value: &[u8]| {
        matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t'))
    };
    if headers.values().any(|value| padded(value.as_bytes())) {
        return Err(HeadRejection::PaddedValue);
    }
    Ok(())
}

/// Refuses a query with a `_method` parameter in any spelling a framework
/// reads as one: percent-encoded (`%5Fmethod`), any case, after leading
/// spaces, or with `.` or `[` for the `_` (PHP turns those into `_`).
pub fn check_method_override(query: Option<&str>) -> Result<(), HeadRejection> {
    let Some(query) = query else { return Ok(()) };
    for pair in query.split(['&', ';']) {
        let name = pair.split('=').next().unwrap_or(pair).replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&name).decode_utf8_lossy();
        let name = decoded.trim_start();
        if name.len() >= 7
            && matches!(name.as_bytes()[0], b'_' | b'.' | b'[')
            && name[1..].to_ascii_lowercase().starts_with("method")
            && name[7..].trim_start_matches(['[', ']', ' ']).is_empty()
        {
            return Err(HeadRejection::MethodOverride);
        }
    }
    Ok(())
}

/// Headers palisade reads or sets on the forwarded request: the client's
/// `Connection` can never remove them.
const RELIED_ON: [HeaderName; 9] = [
    header::HOST,
    header::AUTHORIZATION,
    header::COOKIE,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::ORIGIN,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
];

/// Cleans the client's header lines before anything reads them: removes
/// `Proxy` ([`PROXY`]), `_` spellings of framing and hop-by-hop headers
/// ([`FRAMING`]) and
/// what its `Connection` names (never a [`RELIED_ON`] header nor one the
/// policy reads, `policy_reads`: the request-ID header, a shared secret's,
/// a signed webhook's, a `header:` token source, a `header:` rate-limit
/// key; palisade's own headers
/// are added after this, so nothing named there can remove them) and
/// joins several `Cookie` lines with `; ` (RFC 9113 §8.2.3; frameworks
/// that join repeated headers with `,` would otherwise read other cookies
/// than palisade did).
pub fn clean_client_headers(headers: &mut HeaderMap, policy_reads: impl Fn(&HeaderName) -> bool) {
    remove_connection_nominated(headers, |name| {
        RELIED_ON.contains(name) || policy_reads(name)
    });
    remove_unforwardable(headers);
    join_cookies(headers);
}

/// Names that decide how a message is framed, routed or kept, and every
/// other hop-by-hop name (`policy::headers`): an `_` spelling of one
/// (`Transfer_Encoding`, `Content_Length`, `Proxy_Authorization`) is not
/// the header to palisade or the HTTP library, but CGI/WSGI-style servers
/// read it as that header, and would frame the request otherwise than
/// palisade did, or see a hop-by-hop header palisade removed.
const FRAMING: [&str; 13] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "http2-settings",
    "host",
    "expect",
];

/// Bit `n` set: some name of [`FRAMING`] is `n` bytes long.
const FRAMING_LENGTHS: u64 = crate::policy::headers::length_mask(&FRAMING);

/// `Proxy`: no HTTP header of that name exists, and CGI-style servers
/// hand it to the application as `HTTP_PROXY`, which many HTTP client
/// libraries take as their outbound proxy ("httpoxy", CVE-2016-5385 and
/// its kin): a client could route the upstream's own outbound calls
/// through a server of its choosing. NGINX and Apache advise removing it.
pub(crate) const PROXY: &str = "proxy";

/// Method overrides Rails, Express and Laravel honour: the method palisade
/// routed on must be the one the upstream runs, so clients' are removed
/// and palisade never sets one for the operator (a claim a user can edit,
/// Supabase's `user_metadata`, would choose the method).
pub const METHOD_OVERRIDES: [&str; 3] = [
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
];

/// Why palisade cannot set a header of this name for the operator (the
/// request-ID header, `upstream.deadline_header`, a `forward_claims`
/// target), or `None` when it can. A name that frames or routes the
/// message, says who the client is, carries its credentials or palisade's
/// trace context (in any case, `_` for `-`) would reach the upstream
/// beside, or instead of, what palisade or the client put there: two
/// `X-Forwarded-For` lines, a `Content-Length` of a UUID, a client-chosen
/// `Proxy` (red team, session 15).
pub fn reserved_reason(name: &str) -> Option<&'static str> {
    let same = |listed: &&str| crate::policy::forward::same_header_name(listed, name);
    if FRAMING.iter().chain(&[PROXY]).any(same) {
        Some("frames or routes the message (a hop-by-hop or framing header)")
    } else if crate::policy::forward::tells_about_client(name) {
        Some(
            "sets or removes: it says who the client is (X-Forwarded-*, Forwarded, X-Real-IP and their kin)",
        )
    } else if ["authorization", "cookie"].iter().any(same) {
        Some("forwards unchanged: it carries the client's credentials")
    } else if ["traceparent", "tracestate"].iter().any(same) {
        Some("sets for trace context ([tracing] propagate)")
    } else if METHOD_OVERRIDES.iter().any(same) {
        Some(
            "removes: a method override has the upstream run another method than the one routed on",
        )
    } else {
        None
    }
}

/// Removes `Proxy` and every header that spells a [`FRAMING`] name with
/// `_` for `-` (in any case), as NGINX drops names with `_` by default.
fn remove_unforwardable(headers: &mut HeaderMap) {
    let unforwardable = |name: &HeaderName| {
        let name = name.as_str();
        crate::policy::headers::length_in(FRAMING_LENGTHS | 1 << PROXY.len(), name.len())
            && (name == PROXY
                || (name.bytes().any(|b| b == b'_')
                    && FRAMING
                        .iter()
                        .any(|framing| crate::policy::forward::same_header_name(framing, name))))
    };
    crate::policy::headers::remove_matching(headers, unforwardable);
}

fn join_cookies(headers: &mut HeaderMap) {
    let mut lines = headers.get_all(header::COOKIE).iter();
    if lines.next().is_none() || lines.next().is_none() {
        return;
    }
    let mut joined: Vec<u8> = Vec::new();
    for line in headers.get_all(header::COOKIE) {
        let line = line.as_bytes().trim_ascii();
        if line.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(line);
    }
    match HeaderValue::from_bytes(&joined) {
        Ok(value) => {
            headers.insert(header::COOKIE, value);
        }
        Err(_) => {
            headers.remove(header::COOKIE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_chunked_coding_is_accepted() {
        let with = |lines: &[&str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_str(line).unwrap(),
                );
            }
            check_transfer_coding(&headers)
        };
        assert_eq!(with(&[]), Ok(()));
        for fine in ["chunked", "Chunked", " chunked\t", "CHUNKED"] {
            assert_eq!(with(&[fine]), Ok(()), "{fine:?}");
        }
        for refused in [
            &["gzip, chunked"][..],
            &["identity, chunked"],
            &["chunked, chunked"],
            &["chunked", "chunked"],
            &["gzip", "chunked"],
            &["chunked,"],
            &["chunked;q=1"],
            &["gzip"],
        ] {
            assert_eq!(
                with(refused),
                Err(HeadRejection::TransferCoding),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn proxy_and_underscore_spellings_of_framing_headers_go() {
        let mut headers = HeaderMap::new();
        for name in [
            "transfer_encoding",
            "Content_Length",
            "CONNECTION",
            "te",
            "keep_alive",
            "x_custom_header",
            "host",
            "ho_t",
            "proxy",
            "proxy_authorization",
            "http2_settings",
            "x_proxy",
            "proxy-x",
            "x-custom_name",
        ] {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        clean_client_headers(&mut headers, |_| false);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "connection",
                "ho_t",
                "host",
                "proxy-x",
                "te",
                "x-custom_name",
                "x_custom_header",
                "x_proxy"
            ]
        );
    }

    fn host_check(version: Version, uri: &str, hosts: &[&str]) -> Result<(), HeadRejection> {
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        check_host(version, &uri.parse().unwrap(), &headers)
    }

    #[test]
    fn host_rules() {
        use HeadRejection::*;
        let h11 = Version::HTTP_11;
        assert_eq!(host_check(h11, "/x", &["api.example.com"]), Ok(()));
        assert_eq!(host_check(h11, "/x", &["api.example.com:8080"]), Ok(()));
        assert_eq!(host_check(h11, "/x", &[]), Err(MissingHost));
        assert_eq!(host_check(Version::HTTP_10, "/x", &[]), Ok(()));
        assert_eq!(host_check(h11, "/x", &["a", "b"]), Err(DuplicateHost));
        assert_eq!(host_check(h11, "/x", &["a", "a"]), Err(DuplicateHost));
        assert_eq!(host_check(h11, "/x", &["user@a"]), Err(BadHost));
        assert_eq!(host_check(h11, "/x", &[""]), Err(BadHost));
        assert_eq!(host_check(h11, "/x", &["a b"]), Err(BadHost));
        assert_eq!(host_check(h11, "http://a/x", &["A"]), Ok(()));
        assert_eq!(host_check(h11, "http://a/x", &["b"]), Err(HostMismatch));
        // A port left out is the scheme's default: the same authority.
        assert_eq!(host_check(h11, "http://a:80/x", &["a"]), Ok(()));
        assert_eq!(host_check(h11, "http://a/x", &["A:80"]), Ok(()));
        assert_eq!(host_check(h11, "https://a:443/x", &["a"]), Ok(()));
        assert_eq!(
            host_check(h11, "http://a:8080/x", &["a"]),
            Err(HostMismatch)
        );
        assert_eq!(host_check(h11, "https://a/x", &["a:80"]), Err(HostMismatch));
        assert_eq!(
            host_check(h11, "http://a:81/x", &["a:80"]),
            Err(HostMismatch)
        );
        assert_eq!(host_check(h11, "http://ab/x", &["a"]), Err(HostMismatch));
        assert_eq!(host_check(h11, "http://u@a/x", &["a"]), Err(BadHost));
        // Only the web's schemes, in any case.
        assert_eq!(host_check(h11, "HTTPS://a/x", &["a"]), Ok(()));
        assert_eq!(host_check(h11, "ftp://a/x", &["a"]), Err(TargetScheme));
        assert_eq!(host_check(h11, "ws://a/x", &["a"]), Err(TargetScheme));
        assert_eq!(host_check(h11, "ftp://a/x", &[]), Err(TargetScheme));
        let h2 = Version::HTTP_2;
        assert_eq!(host_check(h2, "http://legit/x", &[]), Ok(()));
        assert_eq!(
            host_check(h2, "http://legit/x", &["evil"]),
            Err(HostMismatch)
        );
        assert_eq!(host_check(h2, "http://a@b/x", &[]), Err(BadHost));
        // Absolute form does not stand in for `Host` on HTTP/1.1.
        assert_eq!(host_check(h11, "http://a/x", &[]), Err(MissingHost));
        assert_eq!(host_check(Version::HTTP_10, "http://a/x", &[]), Ok(()));
    }

    #[test]
    fn host_ports_are_numbers_up_to_65535() {
        use HeadRejection::*;
        let h11 = Version::HTTP_11;
        for good in ["a:80", "a:65535", "a:", "[::1]", "[::1]:8080", "10.0.0.1:1"] {
            assert_eq!(host_check(h11, "/x", &[good]), Ok(()), "{good}");
        }
        for bad in [
            "a:abc", "a:99999", "a:65536", "a:-1", "a:+80", "[::1]:x", "a:000080",
        ] {
            assert_eq!(host_check(h11, "/x", &[bad]), Err(BadHost), "{bad}");
        }
        assert_eq!(host_check(h11, "http://a:abc/x", &["a:abc"]), Err(BadHost));
    }

    #[test]
    fn a_remembered_host_admits_only_itself() {
        use HeadRejection::*;
        let h11 = Version::HTTP_11;
        assert_eq!(host_check(h11, "/x", &["api.example.com"]), Ok(()));
        // The same bytes again are remembered; anything else is parsed.
        assert_eq!(host_check(h11, "/x", &["api.example.com"]), Ok(()));
        assert_eq!(host_check(h11, "/x", &["api.example.com@x"]), Err(BadHost));
        assert_eq!(host_check(h11, "/x", &["api.example.co m"]), Err(BadHost));
        assert_eq!(host_check(h11, "/x", &[""]), Err(BadHost));
        let long = format!("{}.example.com", "a".repeat(80));
        assert_eq!(host_check(h11, "/x", &[&long]), Ok(()));
        assert_eq!(host_check(h11, "/x", &[&format!("{long}@")]), Err(BadHost));
    }

    #[test]
    fn method_case_variants() {
        let known = [
            Method::GET,
            Method::POST,
            Method::from_bytes(b"PURGE").unwrap(),
        ];
        assert_eq!(check_method(&Method::POST, &known), Ok(()));
        assert_eq!(
            check_method(&Method::CONNECT, &known),
            Err(HeadRejection::Connect)
        );
        let lower = Method::from_bytes(b"post").unwrap();
        assert_eq!(check_method(&lower, &known), Err(HeadRejection::MethodCase));
        let purge = Method::from_bytes(b"Purge").unwrap();
        assert_eq!(check_method(&purge, &known), Err(HeadRejection::MethodCase));
        let other = Method::from_bytes(b"propfind").unwrap();
        assert_eq!(check_method(&other, &known), Ok(()));
    }

    #[test]
    fn method_override_parameters() {
        for query in [
            "_method=DELETE",
            "a=1&_METHOD=delete",
            "%5Fmethod=DELETE",
            "_%6Dethod=DELETE",
            ".method=DELETE",
            "+_method=DELETE",
            "[method=DELETE",
            "_method[]=DELETE",
            "x=1;_method=PUT",
        ] {
            assert_eq!(
                check_method_override(Some(query)),
                Err(HeadRejection::MethodOverride),
                "{query}"
            );
        }
        for query in [
            "method=DELETE",
            "_methods=1",
            "a=_method",
            "x_method=1",
            "page=2",
        ] {
            assert_eq!(check_method_override(Some(query)), Ok(()), "{query}");
        }
        assert_eq!(check_method_override(None), Ok(()));
    }

    #[test]
    fn cookie_lines_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2; c=3"));
        clean_client_headers(&mut headers, |name| name == "x-request-id");
        let lines: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(lines, ["a=1; b=2; c=3"]);
    }

    #[test]
    fn connection_cannot_name_relied_on_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Authorization, X-Request-Id, Host, X-Hop"),
        );
        for name in ["authorization", "x-request-id", "host", "x-hop"] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
        }
        clean_client_headers(&mut headers, |name| name == "x-request-id");
        assert!(headers.contains_key("authorization"));
        assert!(headers.contains_key("x-request-id"));
        assert!(headers.contains_key("host"));
        assert!(!headers.contains_key("x-hop"));
    }

    #[test]
    fn names_palisade_owns_are_reserved() {
        for name in [
            "X-Forwarded-For",
            "x_forwarded_proto",
            "Host",
            "content-length",
            "Transfer_Encoding",
            "Proxy",
            "X-Real-IP",
            "forwarded",
            "Authorization",
            "cookie",
            "traceparent",
            "Connection",
        ] {
            assert!(reserved_reason(name).is_some(), "{name}");
        }
        for name in [
            "X-Request-Id",
            "X-Correlation-Id",
            "X-User-Id",
            "X-Request-Timeout-Ms",
        ] {
            assert_eq!(reserved_reason(name), None, "{name}");
        }
    }
}
