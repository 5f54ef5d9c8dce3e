//! How a URL from the config is shown: wherever one is printed (`/config`,
//! `/readyz`, metric labels, logs, `check` and config errors) its userinfo
//! and its query string (and fragment) are replaced by `<redacted>`, because
//! operators put credentials there (`redis://:pw@host`, `?apikey=...`).
//! Every such place goes through [`url`], so there is one rule.

use super::values::REDACTED;

/// `text` with any userinfo and query/fragment redacted. Works on anything,
/// including strings that do not parse as URLs (config errors show those).
pub fn url(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    // The userinfo ends at the last '@' before the query: a password may
    // itself hold '@' or '/' (a path with '@' is over-redacted, never leaked).
    let before_query = rest.find(['?', '#']).unwrap_or(rest.len());
    let mut out = String::with_capacity(text.len());
    out.push_str(scheme);
    let tail = match rest[..before_query].rfind('@') {
        Some(at) => {
            out.push_str(REDACTED);
            &rest[at..]
        }
        None => rest,
    };
    match tail.find(['?', '#']) {
        Some(q) => {
            out.push_str(&tail[..q]);
            out.push_str(&tail[q..=q]);
            out.push_str(REDACTED);
        }
        None => out.push_str(tail),
    }
    out
}

/// `text` (an error message, say) with every URL in it redacted as by
/// [`url`]: a URL runs from its scheme to the next whitespace, quote or
/// backtick.
pub fn urls_in(text: &str) -> String {
    let ends = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |j| j + 1);
        let end = rest[i..].find(ends).map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{url, urls_in};

    #[test]
    fn urls_inside_messages_are_redacted() {
        assert_eq!(
            urls_in("invalid type: string \"redis://:pw@h:6379\", expected a sequence"),
            "invalid type: string \"redis://<redacted>@h:6379\", expected a sequence"
        );
        assert_eq!(
            urls_in("a http://h/p?k=v and https://u@x end"),
            "a http://h/p?<redacted> and https://<redacted>@x end"
        );
        assert_eq!(urls_in("no url here"), "no url here");
    }

    #[test]
    fn userinfo_and_query_are_redacted() {
        assert_eq!(
            url("http://user:pass@10.0.0.1:8000/base"),
            "http://<redacted>@10.0.0.1:8000/base"
        );
        assert_eq!(
            url("https://x.supabase.co/auth/v1/.well-known/jwks.json?apikey=secret"),
            "https://x.supabase.co/auth/v1/.well-known/jwks.json?<redacted>"
        );
        assert_eq!(
            url("redis://:pw@redis:6379/0?password=x#frag"),
            "redis://<redacted>@redis:6379/0?<redacted>"
        );
        // An '@' in the password, a fragment alone, no path, no scheme.
        assert_eq!(url("http://u:p@ss@h"), "http://<redacted>@h");
        assert_eq!(url("http://h/p#token"), "http://h/p#<redacted>");
        assert_eq!(url("http://h?k=v"), "http://h?<redacted>");
        assert_eq!(url("user:pw@host:1"), "<redacted>@host:1");
        assert_eq!(url("http://u:p/w@h/x"), "http://<redacted>@h/x");
        // Nothing to hide: unchanged.
        assert_eq!(url("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
        assert_eq!(url("not a url"), "not a url");
    }
}
