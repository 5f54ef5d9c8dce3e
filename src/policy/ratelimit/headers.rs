//! The rate-limit headers of every response of a rate-limited route
//! (SPEC §3): legacy `X-RateLimit-*` and draft `RateLimit`/`RateLimit-Policy`,
//! for the most restrictive limit.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::policy::response_headers::{HeaderBlock, ResponseHeaders};

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
/// the next, made once per limit: `X-RateLimit-Limit` and
/// `RateLimit-Policy` are set as one block of lines per header mode, and
/// `RateLimit` starts with its quoted name already written.
#[derive(Debug)]
pub struct FixedLines {
    limit: HeaderValue,
    policy: HeaderValue,
    /// The fixed headers of `legacy`, `draft` and `both`, in that order.
    blocks: [Option<Arc<HeaderBlock>>; 3],
    /// `"NAME";r=`, checked as header text once.
    ratelimit_start: Box<[u8]>,
}

impl PartialEq for FixedLines {
    fn eq(&self, other: &Self) -> bool {
        // The blocks are made of the values.
        (&self.limit, &self.policy, &self.ratelimit_start)
            == (&other.limit, &other.policy, &other.ratelimit_start)
    }
}

impl Eq for FixedLines {}

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
        let limit = HeaderValue::from(limit);
        let limit_line = (X_RATELIMIT_LIMIT.clone(), limit.clone());
        let policy_line = (RATELIMIT_POLICY.clone(), policy.clone());
        Self {
            blocks: [
                HeaderBlock::new(std::slice::from_ref(&limit_line)),
                HeaderBlock::new(std::slice::from_ref(&policy_line)),
                HeaderBlock::new(&[limit_line, policy_line]),
            ],
            limit,
            policy,
            ratelimit_start: format!("\"{name}\";r=").into_bytes().into(),
        }
    }

    /// The block of what `mode` sets of these.
    fn block(&self, mode: HeaderMode) -> Option<&Arc<HeaderBlock>> {
        let at = match mode {
            HeaderMode::Legacy => 0,
            HeaderMode::Draft => 1,
            HeaderMode::Both => 2,
            HeaderMode::None => return None,
        };
        self.blocks[at].as_ref()
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
    /// Sets the headers on a response: the fixed ones as the limit's
    /// block for this header mode, the others written as their lines at
    /// once ([`ResponseHeaders::insert_text`]: no value made and shared
    /// per header).
    pub fn apply(&self, headers: &mut ResponseHeaders<'_>) {
        let legacy = matches!(self.mode, HeaderMode::Legacy | HeaderMode::Both);
        let draft = matches!(self.mode, HeaderMode::Draft | HeaderMode::Both);
        let (mut remaining, mut reset) = (itoa::Buffer::new(), itoa::Buffer::new());
        let remaining = remaining.format(self.remaining).as_bytes();
        let reset = reset.format(self.reset_secs).as_bytes();
        // (A block is always made of these names; the values alone are
        // kept for the case it was not.)
        match self.fixed.block(self.mode) {
            Some(block) => headers.insert_block(block),
            None => {
                if legacy {
                    headers.insert(X_RATELIMIT_LIMIT.clone(), self.fixed.limit.clone());
                }
                if draft {
                    headers.insert(RATELIMIT_POLICY.clone(), self.fixed.policy.clone());
                }
            }
        }
        if legacy {
            headers.insert_text(X_RATELIMIT_REMAINING.clone(), &[remaining]);
            headers.insert_text(X_RATELIMIT_RESET.clone(), &[reset]);
        }
        if draft {
            // `"NAME";r=REMAINING;t=RESET`, written without `fmt`.
            headers.insert_text(
                RATELIMIT.clone(),
                &[&self.fixed.ratelimit_start, remaining, b";t=", reset],
            );
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
        // Each mode's fixed headers are one block of lines.
        for mode in [HeaderMode::Legacy, HeaderMode::Draft, HeaderMode::Both] {
            assert!(fixed.block(mode).is_some(), "{mode:?}");
        }
        assert!(fixed.block(HeaderMode::None).is_none());
        // A name that could not be written inside its quotes is not.
        for bad in ["a\"b", "a\\b", "a\nb", "a\x7fb", "caf\u{e9}"] {
            let fixed = FixedLines::new(bad, 10, 60);
            assert_eq!(fixed.policy, "\"limit\";q=10;w=60", "{bad:?}");
            assert_eq!(&*fixed.ratelimit_start, b"\"limit\";r=", "{bad:?}");
        }
    }
}
