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
    /// What the limit's headers always say, made when it was compiled.
    pub(super) fixed: Arc<FixedLines>,
    pub(super) remaining: u32,
    pub(super) reset_secs: u64,
}

/// The parts of a limit's headers that do not change from one response to
/// the next, made once per limit: the values of `X-RateLimit-Limit` and
/// `RateLimit-Policy`, and the start of `RateLimit` with its quoted name
/// already written.
#[derive(Debug, PartialEq, Eq)]
pub struct FixedLines {
    limit: HeaderValue,
    policy: HeaderValue,
    /// `"NAME";r=`, checked as header text once.
    ratelimit_start: Box<[u8]>,
}

/// Whether `c` may stand in a limit's name as the `RateLimit` headers
/// quote it (an RFC 8941 string without escapes): printable ASCII or a
/// space, no `"` or `\`. Tier names are checked by it when compiled.
pub fn quotable(c: char) -> bool {
    (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\'
}

impl FixedLines {
    /// The fixed parts of the headers of the limit `name` (the route's
    /// name, its `by`, its tier: checked as printable when the config was
    /// compiled) admitting `limit` requests per `window_secs`. A name that
    /// cannot be written inside the quotes of a structured-field string
    /// (RFC 8941 §3.3.3: printable ASCII, `"` and `\` escaped, which these
    /// names do not need) becomes `limit`.
    pub fn new(name: &str, limit: u32, window_secs: u64) -> Self {
        let name = if name.chars().all(quotable) {
            name
        } else {
            "limit"
        };
        let policy = HeaderValue::from_str(&format!("\"{name}\";q={limit};w={window_secs}"))
            .unwrap_or_else(|_| HeaderValue::from_static("\"limit\""));
        Self {
            limit: HeaderValue::from(limit),
            policy,
            ratelimit_start: format!("\"{name}\";r=").into_bytes().into(),
        }
    }
}

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Every rate-limit header palisade sets (either family).
pub static RATE_LIMIT_HEADERS: [&HeaderName; 5] = [
    &X_RATELIMIT_LIMIT,
    &X_RATELIMIT_REMAINING,
    &X_RATELIMIT_RESET,
    &RATELIMIT,
    &RATELIMIT_POLICY,
];

impl RateHeaders {
    /// Sets the headers on a response, as one block of lines written at
    /// once ([`ResponseHeaders::insert_lines`]: no value made and shared
    /// per header, one copy to write them), in the order `X-RateLimit-*`
    /// (limit, remaining, reset) and `RateLimit-Policy`, `RateLimit`, each
    /// family where the header mode has it.
    pub fn apply(&self, headers: &mut ResponseHeaders<'_>) {
        let (mut remaining, mut reset) = (itoa::Buffer::new(), itoa::Buffer::new());
        let remaining = remaining.format(self.remaining).as_bytes();
        let reset = reset.format(self.reset_secs).as_bytes();
        let fixed = &*self.fixed;
        let limit = [fixed.limit.as_bytes()];
        let policy = [fixed.policy.as_bytes()];
        let (remaining_parts, reset_parts) = ([remaining], [reset]);
        // `"NAME";r=REMAINING;t=RESET`, written without `fmt`.
        let ratelimit = [&*fixed.ratelimit_start, remaining, b";t=", reset];
        let legacy: [(&HeaderName, &[&[u8]]); 3] = [
            (&X_RATELIMIT_LIMIT, &limit),
            (&X_RATELIMIT_REMAINING, &remaining_parts),
            (&X_RATELIMIT_RESET, &reset_parts),
        ];
        let draft: [(&HeaderName, &[&[u8]]); 2] =
            [(&RATELIMIT_POLICY, &policy), (&RATELIMIT, &ratelimit)];
        match self.mode {
            HeaderMode::Legacy => headers.insert_lines(&legacy),
            HeaderMode::Draft => headers.insert_lines(&draft),
            HeaderMode::Both => {
                // The order of the blocks the fixed values were before:
                // limit and policy, then the others.
                let [limit, remaining, reset] = legacy;
                let [policy, ratelimit] = draft;
                headers.insert_lines(&[limit, policy, remaining, reset, ratelimit]);
            }
            HeaderMode::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_lines_say_the_limit_its_policy_and_name() {
        let fixed = FixedLines::new("api.ip", 10, 60);
        assert_eq!(fixed.limit, "10");
        assert_eq!(fixed.policy, "\"api.ip\";q=10;w=60");
        assert_eq!(&*fixed.ratelimit_start, b"\"api.ip\";r=");
        // A name that could not be written inside its quotes is not.
        for bad in ["a\"b", "a\\b", "a\nb", "a\x7fb", "caf\u{e9}"] {
            let fixed = FixedLines::new(bad, 10, 60);
            assert_eq!(fixed.policy, "\"limit\";q=10;w=60", "{bad:?}");
            assert_eq!(&*fixed.ratelimit_start, b"\"limit\";r=", "{bad:?}");
        }
    }
}
