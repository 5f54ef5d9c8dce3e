//! The rate-limit headers of every response of a rate-limited route
//! (SPEC §3): legacy `X-RateLimit-*` and draft `RateLimit`/`RateLimit-Policy`,
//! for the most restrictive limit.

use std::sync::Arc;

use http::HeaderName;

use crate::policy::response_headers::{LineTemplate, ResponseHeaders, Segment};

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
/// the next, made once per limit: for each header mode, its headers as a
/// template of lines with holes for what remains and when it resets.
#[derive(Debug, PartialEq, Eq)]
pub struct FixedLines {
    /// The lines of `legacy`, `draft` and `both`, in that order.
    templates: [LineTemplate; 3],
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
        let text = |text: String| Segment::Text(text.into_bytes().into());
        let limit_line = || (X_RATELIMIT_LIMIT.clone(), vec![text(limit.to_string())]);
        let policy_line = || {
            let policy = format!("\"{name}\";q={limit};w={window_secs}");
            (RATELIMIT_POLICY.clone(), vec![text(policy)])
        };
        let remaining_line = || (X_RATELIMIT_REMAINING.clone(), vec![Segment::Hole]);
        let reset_line = || (X_RATELIMIT_RESET.clone(), vec![Segment::Hole]);
        // `"NAME";r=REMAINING;t=RESET`.
        let ratelimit_line = || {
            let start = text(format!("\"{name}\";r="));
            let value = vec![start, Segment::Hole, text(";t=".into()), Segment::Hole];
            (RATELIMIT.clone(), value)
        };
        Self {
            templates: [
                LineTemplate::new(vec![limit_line(), remaining_line(), reset_line()]),
                LineTemplate::new(vec![policy_line(), ratelimit_line()]),
                // The order of `legacy` then `draft` as blocks set before:
                // limit and policy, then the others.
                LineTemplate::new(vec![
                    limit_line(),
                    policy_line(),
                    remaining_line(),
                    reset_line(),
                    ratelimit_line(),
                ]),
            ],
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
    /// Sets the headers on a response: the header mode's template with
    /// what remains and when it resets in its holes
    /// ([`ResponseHeaders::insert_template`]: one block of lines written
    /// at once, no value made per header).
    pub fn apply(&self, headers: &mut ResponseHeaders<'_>) {
        let (remaining, reset) = (u64::from(self.remaining), self.reset_secs);
        let [legacy, draft, both] = &self.fixed.templates;
        match self.mode {
            HeaderMode::Legacy => headers.insert_template(legacy, &[remaining, reset]),
            HeaderMode::Draft => headers.insert_template(draft, &[remaining, reset]),
            HeaderMode::Both => {
                headers.insert_template(both, &[remaining, reset, remaining, reset]);
            }
            HeaderMode::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::response_headers::PendingHeaders;

    /// The lines `mode` writes for `fixed` with 7 remaining, reset in 30 s.
    fn written(fixed: FixedLines, mode: HeaderMode) -> Vec<String> {
        let rate = RateHeaders {
            mode,
            fixed: Arc::new(fixed),
            remaining: 7,
            reset_secs: 30,
        };
        let mut map = http::HeaderMap::new();
        let mut pending = PendingHeaders::new(None);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        rate.apply(&mut headers);
        headers.finish();
        crate::policy::response_headers::tests::written(&map, &pending)
    }

    #[test]
    fn fixed_lines_say_the_limit_its_policy_and_name() {
        let fixed = || FixedLines::new("api.ip", 10, 60);
        assert_eq!(
            written(fixed(), HeaderMode::Both),
            [
                "x-ratelimit-limit: 10",
                "ratelimit-policy: \"api.ip\";q=10;w=60",
                "x-ratelimit-remaining: 7",
                "x-ratelimit-reset: 30",
                "ratelimit: \"api.ip\";r=7;t=30",
            ]
        );
        assert_eq!(
            written(fixed(), HeaderMode::Legacy),
            [
                "x-ratelimit-limit: 10",
                "x-ratelimit-remaining: 7",
                "x-ratelimit-reset: 30",
            ]
        );
        assert_eq!(
            written(fixed(), HeaderMode::Draft),
            [
                "ratelimit-policy: \"api.ip\";q=10;w=60",
                "ratelimit: \"api.ip\";r=7;t=30",
            ]
        );
        assert!(written(fixed(), HeaderMode::None).is_empty());
        // A name that could not be written inside its quotes is not.
        for bad in ["a\"b", "a\\b", "a\nb", "a\x7fb", "caf\u{e9}"] {
            assert_eq!(
                written(FixedLines::new(bad, 10, 60), HeaderMode::Draft),
                [
                    "ratelimit-policy: \"limit\";q=10;w=60",
                    "ratelimit: \"limit\";r=7;t=30",
                ],
                "{bad:?}"
            );
        }
    }
}
