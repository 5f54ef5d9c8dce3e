//! Request IDs: a trusted, valid incoming ID is kept (so a trace spans the
//! caller's hops), else a new UUIDv7 (time-ordered, sortable in logs).

use http::{HeaderMap, HeaderName, HeaderValue};
use uuid::Timestamp;
use uuid::timestamp::context::{ContextV7, ThreadLocalContext};

/// `[request_id]`, compiled.
#[derive(Debug, Clone)]
pub struct RequestIdPolicy {
    /// Header carrying the ID both ways.
    pub header: HeaderName,
    /// Whether a client-sent ID is kept when valid.
    pub trust_incoming: bool,
}

/// `[A-Za-z0-9._:-]{1,128}`: anything else could smuggle log or header syntax.
pub fn is_valid(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl RequestIdPolicy {
    /// The ID of this request.
    pub fn resolve(&self, headers: &HeaderMap) -> HeaderValue {
        if self.trust_incoming
            && let Some(incoming) = headers.get(&self.header)
            && is_valid(incoming.as_bytes())
        {
            return incoming.clone();
        }
        new_id()
    }
}

thread_local! {
    /// Each worker thread's UUIDv7 counter. `Uuid::now_v7` shares one
    /// context behind a process-wide mutex, which every request of every
    /// worker would take; IDs stay ordered within a thread (and by their
    /// millisecond across threads).
    static V7_CONTEXT: ContextV7 = const { ContextV7::new() };
}

/// A fresh UUIDv7 as a header value.
pub fn new_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let now = Timestamp::now(ThreadLocalContext::new(&V7_CONTEXT));
    let text = uuid::Uuid::new_v7(now).hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(trust: bool) -> RequestIdPolicy {
        RequestIdPolicy {
            header: HeaderName::from_static("x-request-id"),
            trust_incoming: trust,
        }
    }

    #[test]
    fn new_ids_are_ordered_uuid_v7() {
        let ids: Vec<uuid::Uuid> = (0..1000)
            .map(|_| uuid::Uuid::parse_str(new_id().to_str().unwrap()).unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn keeps_valid_incoming_ids() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123:x.y_z"));
        assert_eq!(policy(true).resolve(&headers), "abc-123:x.y_z");
        assert_ne!(policy(false).resolve(&headers), "abc-123:x.y_z");
    }

    #[test]
    fn replaces_invalid_ids() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("bad id\"}"));
        let id = policy(true).resolve(&headers);
        assert_ne!(id, "bad id\"}");
        assert_eq!(id.len(), 36);
        assert!(!is_valid(&[b'a'; 129]));
        assert!(!is_valid(b""));
    }
}
