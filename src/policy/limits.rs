//! URI and header-block size limits (414 / 431), checked on every request
//! before anything else looks at the path or headers.

use http::{HeaderMap, Uri};

/// Which size limit a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRejection {
    /// 414: the request target is over `max_uri_bytes`.
    UriTooLong,
    /// 431: the header block is over `max_header_bytes`.
    HeaderTooLarge,
    /// 413: the declared body is over the route's `max_body`.
    BodyTooLarge,
}

/// Marks a request that stands for a head larger than the connection's
/// head buffer (palisade's HTTP/1 engine, `proxy::h1`): the head was never
/// read whole, and the request is refused with the limit it broke, as a
/// head under the buffer would be (414 or 431 with a problem body), not
/// with the HTTP library's bare 431.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OversizedHead {
    /// The request target's length, when the request line was whole.
    pub target_bytes: Option<usize>,
}

impl OversizedHead {
    /// The limit it broke: the URI's (414) when the target is over
    /// `max_uri_bytes` or was not even whole, else the header block's (431).
    pub fn broken(&self, max_uri_bytes: usize) -> LimitRejection {
        match self.target_bytes {
            Some(bytes) if bytes <= max_uri_bytes => LimitRejection::HeaderTooLarge,
            _ => LimitRejection::UriTooLong,
        }
    }
}

/// The URI and header-block limits (414, then 431), before anything reads
/// the path or the headers.
pub fn check_head(
    uri: &Uri,
    headers: &HeaderMap,
    max_uri_bytes: usize,
    max_header_bytes: usize,
) -> Result<(), LimitRejection> {
    if uri_len(uri) > max_uri_bytes {
        return Err(LimitRejection::UriTooLong);
    }
    if header_block_len(headers) > max_header_bytes {
        return Err(LimitRejection::HeaderTooLarge);
    }
    Ok(())
}

/// A declared `Content-Length` over `max_body`: refused before a byte of
/// the body is read. (A streamed body is counted as it flows, in `body`.)
pub fn check_declared_body(headers: &HeaderMap, max_body: u64) -> Result<(), LimitRejection> {
    match declared_length(headers) {
        Some(length) if length > max_body => Err(LimitRejection::BodyTooLarge),
        _ => Ok(()),
    }
}

/// The length of the request target as the client sent it (path + query).
pub fn uri_len(uri: &Uri) -> usize {
    uri.path_and_query().map_or(0, |pq| pq.as_str().len())
}

/// The body length a request declares with `Content-Length`, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Approximate size of the header block on the wire: `name: value\r\n` each.
pub fn header_block_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn measures() {
        let uri: Uri = "/abc?x=1".parse().unwrap();
        assert_eq!(uri_len(&uri), 8);
        let mut headers = HeaderMap::new();
        headers.insert("a", HeaderValue::from_static("bc"));
        assert_eq!(header_block_len(&headers), 1 + 2 + 4);
        assert_eq!(declared_length(&headers), None);
        headers.insert("content-length", HeaderValue::from_static("42"));
        assert_eq!(declared_length(&headers), Some(42));
    }
}
