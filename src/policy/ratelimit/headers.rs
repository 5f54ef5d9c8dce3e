//! The rate-limit headers of every response of a rate-limited route
//! (SPEC §3): legacy `X-RateLimit-*` and draft `RateLimit`/`RateLimit-Policy`,
//! for the most restrictive limit.

use std::sync::Arc;

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
    /// Sets the headers on a response, each written as its line at once
    /// ([`ResponseHeaders::insert_text`]: no value made and shared per
    /// header).
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
        if legacy {
            headers.insert_text(X_RATELIMIT_LIMIT.clone(), &[limit]);
            headers.insert_text(X_RATELIMIT_REMAINING.clone(), &[remaining]);
            headers.insert_text(X_RATELIMIT_RESET.clone(), &[reset]);
        }
        if draft {
            headers.insert_text(RATELIMIT_POLICY.clone(), &[self.policy.as_bytes()]);
            // `"NAME";r=REMAINING;t=RESET`, written without `fmt`.
            headers.insert_text(
                RATELIMIT.clone(),
                &[
                    b"\"",
                    self.name.as_bytes(),
                    b"\";r=",
                    remaining,
                    b";t=",
                    reset,
                ],
            );
        }
    }
}
