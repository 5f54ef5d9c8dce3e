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
    /// Sets the headers on a response.
    pub fn apply(&self, headers: &mut ResponseHeaders<'_>) {
        if matches!(self.mode, HeaderMode::Legacy | HeaderMode::Both) {
            headers.insert(X_RATELIMIT_LIMIT.clone(), HeaderValue::from(self.limit));
            headers.insert(
                X_RATELIMIT_REMAINING.clone(),
                HeaderValue::from(self.remaining),
            );
            headers.insert(
                X_RATELIMIT_RESET.clone(),
                HeaderValue::from(self.reset_secs),
            );
        }
        if matches!(self.mode, HeaderMode::Draft | HeaderMode::Both) {
            headers.insert(RATELIMIT_POLICY.clone(), self.policy.clone());
            // `"NAME";r=REMAINING;t=RESET`, written without `fmt`.
            let mut numbers = itoa::Buffer::new();
            let mut state = String::with_capacity(self.name.len() + 32);
            state.push('"');
            state.push_str(&self.name);
            state.push_str("\";r=");
            state.push_str(numbers.format(self.remaining));
            state.push_str(";t=");
            state.push_str(numbers.format(self.reset_secs));
            if let Ok(state) = HeaderValue::try_from(state) {
                headers.insert(RATELIMIT.clone(), state);
            }
        }
    }
}
