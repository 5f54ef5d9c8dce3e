//! The rate-limit headers of every response of a rate-limited route
//! (SPEC §3): legacy `X-RateLimit-*` and draft `RateLimit`/`RateLimit-Policy`,
//! for the most restrictive limit.

use std::sync::Arc;

use bytes::BytesMut;
use http::{HeaderName, HeaderValue};

use crate::policy::response_headers::ResponseHeaders;

use super::HeaderMode;

/// What the rate-limit headers say (for the most restrictive limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHeaders {
    pub(super) mode: HeaderMode,
    pub(super) name: Arc<str>,
    pub(super) policy: HeaderValue,
    pub(super) limit: u32,
    pub(super) remaining: u32,
    pub(super) reset_secs: u64,
}

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

impl RateHeaders {
    /// Sets the headers on a response. Their text is written into one
    /// buffer that every value shares (one allocation, where a value each
    /// took one).
    pub fn apply(&self, headers: &mut ResponseHeaders<'_>) {
        let legacy = matches!(self.mode, HeaderMode::Legacy | HeaderMode::Both);
        let draft = matches!(self.mode, HeaderMode::Draft | HeaderMode::Both);
        let (mut limit, mut remaining, mut reset) = (
            itoa::Buffer::new(),
            itoa::Buffer::new(),
            itoa::Buffer::new(),
        );
        let limit = limit.format(self.limit).as_bytes();
        let remaining = remaining.format(self.remaining).as_bytes();
        let reset = reset.format(self.reset_secs).as_bytes();
        let mut text = BytesMut::with_capacity(self.name.len() + 72);
        let mut write = |parts: &[&[u8]]| {
            let start = text.len();
            for part in parts {
                text.extend_from_slice(part);
            }
            start..text.len()
        };
        let limit_at = write(&[limit]);
        let remaining_at = write(&[remaining]);
        let reset_at = write(&[reset]);
        // `"NAME";r=REMAINING;t=RESET`, written without `fmt`.
        let state_at = write(&[
            b"\"",
            self.name.as_bytes(),
            b"\";r=",
            remaining,
            b";t=",
            reset,
        ]);
        let text = text.freeze();
        let value = |at: std::ops::Range<usize>| HeaderValue::from_maybe_shared(text.slice(at));
        if legacy {
            for (name, at) in [
                (&X_RATELIMIT_LIMIT, limit_at),
                (&X_RATELIMIT_REMAINING, remaining_at),
                (&X_RATELIMIT_RESET, reset_at),
            ] {
                if let Ok(value) = value(at) {
                    headers.insert(name.clone(), value);
                }
            }
        }
        if draft {
            headers.insert(RATELIMIT_POLICY.clone(), self.policy.clone());
            if let Ok(state) = value(state_at) {
                headers.insert(RATELIMIT.clone(), state);
            }
        }
    }
}
