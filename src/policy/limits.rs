//! URI and header-block size limits (414 / 431), checked on every request
//! before anything else looks at the path or headers.

use http::{HeaderMap, Uri};

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
