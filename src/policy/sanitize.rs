//! Path sanitization (SPEC §3 "Canonical path"): the one canonical form of
//! the path used for route matching, tenant parameters, rate-limit keys and
//! what the upstream receives, so palisade and the upstream never disagree
//! about which resource was asked for. Anything ambiguous is refused (400):
//! dot segments raw or encoded, encoded `/` `\` `%`, NUL, raw `\`, bad
//! escapes, `;` path parameters (raw or `%3B`), raw characters a URI path
//! cannot hold (space, non-ASCII, `"`, `<`, `{`, ...).

use std::fmt;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    /// Not an absolute path (`*`, empty).
    NotAbsolute,
    /// A `.` or `..` segment, raw or percent-encoded.
    DotSegment,
    /// `%2F`: would be a different path to a decoding upstream.
    EncodedSlash,
    /// `%5C`: some servers treat `\` as `/`.
    EncodedBackslash,
    /// `%25`: double encoding is refused outright.
    EncodedPercent,
    /// `%00` or a raw NUL / control byte.
    Nul,
    /// A raw `\`.
    Backslash,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// A `;` (raw or `%3B`): servlet containers and Spring cut
    /// `;params` out of a segment, so `/a;x/b` would be `/a/b` to them
    /// while routes saw another path.
    Semicolon,
    /// A spelling that folds onto another route than the path itself
    /// matched: trailing dots or spaces in a segment, `::$DATA`, fullwidth
    /// or other compatibility forms, invisible characters. IIS and Windows,
    /// Spring's trimming matchers and NFKC-normalising apps would serve the
    /// route it looks like.
    Lookalike,
    /// A last segment with a format suffix (`admin.json`) whose stem
    /// (`admin`) reaches another route: Rails' `(.:format)` and Spring
    /// MVC's suffix matching (the default before 5.3) serve the stem's
    /// resource for it.
    FormatSuffix,
    /// A raw byte that a URI path cannot hold (RFC 3986 `pchar`): a space,
    /// non-ASCII, `"`, `<`, `{`, `|`, ... HTTP/2 and lenient parsers let
    /// some through; escapes are the one spelling.
    BadCharacter,
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "the path must start with \"/\"",
            Self::DotSegment => "the path has a \".\" or \"..\" segment",
            Self::EncodedSlash => "the path has an encoded \"/\" (%2F)",
            Self::EncodedBackslash => "the path has an encoded \"\\\" (%5C)",
            Self::EncodedPercent => {
                "the path has an encoded \"%\" (%25): double encoding is refused"
            }
            Self::Nul => "the path has a NUL or control character",
            Self::Backslash => "the path has a backslash",
            Self::BadEscape => "the path has an invalid percent-escape",
            Self::Semicolon => "the path has a \";\" (path parameters are refused)",
            Self::Lookalike => "the path is a lookalike spelling of another route's path",
            Self::FormatSuffix => {
                "the path's last segment has a dot suffix whose stem is another route's path (Rails and Spring serve \"admin.json\" as \"admin\")"
            }
            Self::BadCharacter => "the path has a character a URI path cannot hold raw",
        })
    }
}

/// What RFC 3986 allows raw in a path besides `/` and `%`: unreserved,
/// sub-delims (`;` is refused before this), `:` and `@`.
const fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The value of one hex digit (either case).
pub fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The canonical form of `path` (no query): unreserved escapes decoded,
/// other escapes' hex upper-cased, runs of `/` merged, trailing `/` kept.
pub fn canonicalize(path: &str) -> Result<String, PathRejection> {
    canonical_form(path, false)
}

/// The path stage: the canonical path routes match, or why there is none.
/// A spelling that a lenient server folds onto another path (trailing dots
/// or spaces, fullwidth forms, invisible characters) must reach the route
/// it looks like, or nothing.
pub fn route_path(
    method: &http::Method,
    raw: &str,
    routes: &crate::route::RouteTable,
) -> Result<String, PathRejection> {
    let canonical = canonicalize(raw)?;
    let folded = fold_lookalikes(&canonical).transpose()?;
    if let Some(folded) = &folded
        && !routes.same_route(method, &canonical, folded)
    {
        return Err(PathRejection::Lookalike);
    }
    // Only a literal tells a stem's route from the path's (see
    // `RouteTable::is_literal`): other stems are not looked up, so a
    // segment of many dots costs no more lookups than it has literals.
    // Paths without a stem (most) cost nothing more here.
    let suffix_elsewhere = |path: &str| {
        let mut stems = format_stems(path, routes.longest_literal()).peekable();
        if stems.peek().is_none() {
            return false;
        }
        let path_named = routes.is_literal(last_segment(path).1);
        let mut reached = None;
        stems.any(|stem| {
            (path_named || routes.is_literal(last_segment(stem).1))
                && routes.suffix_reaches_elsewhere(
                    method,
                    &canonical,
                    reached.get_or_insert_with(|| routes.lookup(method, &canonical)),
                    stem,
                )
        })
    };
    if suffix_elsewhere(&canonical) || folded.as_deref().is_some_and(suffix_elsewhere) {
        return Err(PathRejection::FormatSuffix);
    }
    Ok(canonical)
}

/// A path's last segment and its index among the segments (a trailing
/// `/` ignored, as routes ignore it): `/api/admin.json/` is `(1,
/// "admin.json")`.
pub fn last_segment(path: &str) -> (usize, &str) {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let index = trimmed.matches('/').count().saturating_sub(1);
    (index, trimmed.rsplit('/').next().unwrap_or(trimmed))
}

/// The path cut at each dot of its last segment after that segment's
/// first character (`/api/export.csv.json` gives `/api/export` and
/// `/api/export.csv`; a trailing `/` is dropped, as routes ignore it):
/// Spring's suffix pattern `name.*` cuts at the first dot, Rails'
/// `(.:format)` at the last, so every cut is a spelling some backend
/// serves. Empty when the segment has no such dot (the common case,
/// checked without allocating; `.well-known` is a name). Only cuts whose
/// stem segment is at most `longest` bytes: a longer stem equals no
/// route's literal segment, so it reaches the route the path reaches
/// (and a segment of dots costs no more than the routes' longest name).
pub fn format_stems(path: &str, longest: usize) -> impl Iterator<Item = &str> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let start = trimmed.rfind('/').map_or(0, |at| at + 1);
    let segment = &trimmed[start..];
    segment
        .match_indices('.')
        .map(|(at, _)| at)
        .filter(|&at| at > 0)
        .take_while(move |&at| at <= longest)
        .map(move |at| &trimmed[..start + at])
}

/// The canonical form of a route pattern: as [`canonicalize`], with the
/// pattern syntax's `{` and `}` allowed.
pub fn canonicalize_pattern(pattern: &str) -> Result<String, PathRejection> {
    canonical_form(pattern, true)
}

fn canonical_form(path: &str, pattern: bool) -> Result<String, PathRejection> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathRejection::NotAbsolute);
    }
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut had_escapes = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathRejection::BadEscape);
                };
                let value = hi << 4 | lo;
                had_escapes = true;
                match value {
                    b'/' => return Err(PathRejection::EncodedSlash),
                    b'\\' => return Err(PathRejection::EncodedBackslash),
                    b'%' => return Err(PathRejection::EncodedPercent),
                    b';' => return Err(PathRejection::Semicolon),
                    0x00..=0x1f | 0x7f => return Err(PathRejection::Nul),
                    v if is_unreserved(v) => out.push(v),
                    v => out.extend_from_slice(&[
                        b'%',
                        HEX_UPPER[(v >> 4) as usize],
                        HEX_UPPER[(v & 0xf) as usize],
                    ]),
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathRejection::Backslash),
            b';' => return Err(PathRejection::Semicolon),
            0x00..=0x1f | 0x7f => return Err(PathRejection::Nul),
            b'/' if out.last() == Some(&b'/') => {}
            b'/' => out.push(b),
            b'{' | b'}' if pattern => out.push(b),
            _ if !is_pchar(b) => return Err(PathRejection::BadCharacter),
            _ => out.push(b),
        }
        i += 1;
    }
    // A dot segment (`..;/`, which Tomcat and Jetty read as `../`, never
    // gets here: `;` was refused above).
    let is_dot = |seg: &[u8]| seg == b"." || seg == b"..";
    if out[1..].split(|&b| b == b'/').any(is_dot) {
        return Err(PathRejection::DotSegment);
    }
    // Escapes must decode to valid UTF-8: overlong forms such as `%C0%AE`
    // (a '.') are how some servers were tricked into traversal.
    if had_escapes
        && std::str::from_utf8(&percent_encoding::percent_decode(&out).collect::<Vec<u8>>())
            .is_err()
    {
        return Err(PathRejection::BadEscape);
    }
    // Only printable ASCII was kept or added, so this is valid UTF-8.
    String::from_utf8(out).map_err(|_| PathRejection::BadEscape)
}

/// The path a lenient server would read for a canonical path, when that
/// differs from it: escapes decoded and NFKC-normalised (fullwidth `／`,
/// `．`, no-break spaces), invisible characters dropped, and each segment's
/// trailing dots and spaces and `::$DATA` suffix cut. `None` when nothing
/// folds (the common case, checked without allocating); `Err` when the
/// folded path is itself refused (a dot segment in disguise).
pub fn fold_lookalikes(canonical: &str) -> Option<Result<String, PathRejection>> {
    // Every sign below needs a `.`, a `:` or a `%`: a path with none (most)
    // is passed in one look at its bytes.
    if !canonical.bytes().any(|b| matches!(b, b'.' | b':' | b'%')) {
        return None;
    }
    let suspicious = canonical.split('/').any(|segment| {
        segment.ends_with('.')
            || segment.ends_with("%20")
            || segment.starts_with("%20")
            || segment.contains(':')
            || segment.contains("%3A")
            || segment
                .as_bytes()
                .windows(2)
                .any(|w| w[0] == b'%' && matches!(w[1], b'8'..=b'9' | b'A'..=b'F'))
    });
    if !suspicious {
        return None;
    }
    use unicode_normalization::UnicodeNormalization;
    let decoded = percent_encoding::percent_decode_str(canonical).decode_utf8_lossy();
    let normalized: String = decoded
        .nfkc()
        .filter(|c| !matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{AD}'))
        // The Turkish dotted and dotless I: Java's `toLowerCase` and
        // `equalsIgnoreCase` (Spring's case-insensitive matching) make
        // them `i`, so `adm%C4%B0n` is `admin` there.
        .map(|c| match c {
            '\u{130}' | '\u{131}' => 'i',
            c => c,
        })
        .collect();
    let mut folded: Vec<String> = Vec::new();
    for segment in normalized.split('/') {
        // NTFS stream syntax, `name::$DATA`, `name:$i30:$INDEX_ALLOCATION`,
        // `name:stream:$DATA` (also as `%3A`): IIS and Windows serve `name`.
        let segment = match (segment.find(":$"), segment.find(':')) {
            (Some(_), Some(at)) => &segment[..at],
            _ => segment,
        };
        // A dot segment once normalised (`%EF%BC%8E%EF%BC%8E`), also
        // padded: `..%20`, `..::$DATA`, `. .` are one to a server that cuts
        // trailing whitespace or the stream name (IIS, Windows, apps that
        // strip segments), where cutting its dots too would have made it
        // vanish here. Three dots alone are a name (Windows too leaves
        // them).
        let dots_and_spaces = segment.chars().all(|c| c == '.' || c.is_whitespace());
        if matches!(segment.trim_end_matches(char::is_whitespace), "." | "..")
            || (dots_and_spaces && segment.contains('.') && segment.contains(char::is_whitespace))
        {
            return Some(Err(PathRejection::DotSegment));
        }
        // Leading whitespace too: Spring's `AntPathMatcher` trimmed both
        // ends of a segment (`trimTokens`, the default before 4.3).
        folded.push(
            segment
                .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
                .trim_start_matches(char::is_whitespace)
                .to_string(),
        );
    }
    let mut rebuilt = String::with_capacity(canonical.len());
    for (i, segment) in folded.iter().enumerate() {
        if i > 0 {
            rebuilt.push('/');
        }
        rebuilt.extend(percent_encoding::utf8_percent_encode(
            segment,
            RAW_IN_SEGMENT,
        ));
    }
    let result = canonicalize(&rebuilt);
    match &result {
        Ok(path) if path == canonical => None,
        _ => Some(result),
    }
}

/// What is escaped when a folded path is written back: everything a path
/// cannot hold raw, and `%` itself (a decoded `%` is not an escape).
const RAW_IN_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Decodes a canonical segment's remaining escapes (for comparing a
/// captured `{param}` with a claim). Lossy on invalid UTF-8.
pub fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathRejection::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("/", "/"),
            ("/api/x", "/api/x"),
            ("/api/%65mbeddings/x", "/api/embeddings/x"),
            ("/a%2Db%7Ec%5fd", "/a-b~c_d"),
            ("/a%3ab", "/a%3Ab"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("//a///b//", "/a/b/"),
            ("/trailing/", "/trailing/"),
            ("/.well-known/jwks.json", "/.well-known/jwks.json"),
            ("/a%20b", "/a%20b"),
            ("/a...b/...", "/a...b/..."),
        ];
        for (input, expected) in cases {
            assert_eq!(canonicalize(input).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn tricks_are_refused() {
        let cases = [
            ("/a/../b", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/..", DotSegment),
            ("/a/%2e%2E/b", DotSegment),
            ("/a/%2e/b", DotSegment),
            ("/a/.%2e", DotSegment),
            ("/a%2fb", EncodedSlash),
            ("/a%2Fb", EncodedSlash),
            ("/a%5cb", EncodedBackslash),
            ("/a%252e%252e", EncodedPercent),
            ("/a%00", Nul),
            ("/a\\b", Backslash),
            ("/a%zz", BadEscape),
            ("/a%2", BadEscape),
            ("/a%", BadEscape),
            ("*", NotAbsolute),
            ("/a\tb", Nul),
            ("/a/..;/b", Semicolon),
            ("/a/.;x/b", Semicolon),
            ("/api/restaurants;x=1/6", Semicolon),
            ("/api/restaurants;/6", Semicolon),
            ("/matrix%3bv=1/x", Semicolon),
            ("/caf\u{e9}", BadCharacter),
            ("/a b", BadCharacter),
            ("/a<b", BadCharacter),
            ("/a\"b", BadCharacter),
            ("/{id}", BadCharacter),
            ("/a|b", BadCharacter),
            ("/a/%c0%ae%c0%ae/b", BadEscape),
            ("/a/%ff", BadEscape),
        ];
        for (input, expected) in cases {
            assert_eq!(canonicalize(input), Err(expected), "{input}");
        }
    }

    #[test]
    fn lookalikes_fold() {
        let fold = |p: &str| fold_lookalikes(p);
        assert_eq!(fold("/webhooks/vapi/x"), None);
        assert_eq!(fold("/files/caf%C3%A9"), None);
        assert_eq!(
            fold("/webhooks/vapi./x"),
            Some(Ok("/webhooks/vapi/x".into()))
        );
        assert_eq!(
            fold("/webhooks/vapi%20/x"),
            Some(Ok("/webhooks/vapi/x".into()))
        );
        assert_eq!(
            fold("/webhooks/vapi::$DATA/x"),
            Some(Ok("/webhooks/vapi/x".into()))
        );
        assert_eq!(
            fold("/webhooks/vapi%C2%A0/x"),
            Some(Ok("/webhooks/vapi/x".into()))
        );
        assert_eq!(
            fold("/webhooks/vapi%E2%80%8B/x"),
            Some(Ok("/webhooks/vapi/x".into()))
        );
        assert_eq!(
            fold("/api/restaurants%EF%BC%8F6%EF%BC%8Forders"),
            Some(Ok("/api/restaurants/6/orders".into()))
        );
        assert_eq!(fold("/a/%EF%BC%8E%EF%BC%8E/b"), Some(Err(DotSegment)));
        // Dot segments a server that cuts trailing spaces or `::$DATA`
        // reads as `..` or `.`, where cutting trailing dots too made the
        // segment vanish here.
        for padded in [
            "/public/..%20/api",
            "/public/..::$DATA/api",
            "/a/.%20./b",
            "/a/...%20/b",
            "/a/..%C2%A0/b",
            "/a/.%20%20",
            "/a/%20..",
            "/open/..%3A%3A$DATA/api",
            "/open/..%3A$i30%3A$INDEX_ALLOCATION/api",
            "/a/..%C2%85/b",
            "/a/..%E2%80%A8/b",
        ] {
            assert_eq!(fold(padded), Some(Err(DotSegment)), "{padded}");
        }
        // Three dots are a name: folded like any trailing dots.
        assert_eq!(fold("/a/.../b"), Some(Ok("/a/b".into())));
        // Stream syntax in any spelling folds onto the name before it, and
        // so does trailing Unicode whitespace.
        for spelling in [
            "/api/admin%3A%3A$INDEX_ALLOCATION/x",
            "/api/admin:$i30:$INDEX_ALLOCATION/x",
            "/api/admin:stream:$DATA/x",
            "/api/admin%C2%85/x",
            "/api/admin%E1%9A%80/x",
            "/api/%20admin/x",
            "/api/%20admin%20/x",
            "/api/adm%C4%B0n/x",
            "/api/adm%C4%B1n/x",
        ] {
            assert_eq!(
                fold(spelling),
                Some(Ok("/api/admin/x".into())),
                "{spelling}"
            );
        }
        // A colon alone is no stream syntax.
        assert_eq!(fold("/a/b:c/d"), None);
        assert_eq!(fold("/a/b."), Some(Ok("/a/b".into())));
        // Characters whose lower case is longer in UTF-8 before the suffix
        // (a cut at an index from another string once panicked here).
        assert_eq!(
            fold("/a/%C4%B0%C4%B0%C4%B0%C4%B0::$%C3%A9%C3%A9/x"),
            Some(Ok("/a/iiii/x".into()))
        );
    }

    #[test]
    fn format_stems_cut_at_every_dot() {
        fn stems(p: &str) -> Vec<&str> {
            format_stems(p, 64).collect()
        }
        assert_eq!(stems("/api/admin.json"), ["/api/admin"]);
        assert_eq!(stems("/api/admin.json/"), ["/api/admin"]);
        assert_eq!(stems("/a/export.csv.json"), ["/a/export", "/a/export.csv"]);
        // A leading dot is part of the name; a later one still cuts.
        assert_eq!(stems("/api/.internal.json"), ["/api/.internal"]);
        assert!(stems("/.well-known").is_empty());
        assert!(stems("/api/.env").is_empty());
        // Only the last segment.
        assert!(stems("/v1.2/users").is_empty());
        assert!(stems("/").is_empty());
        assert!(stems("/api/admin").is_empty());
        // No stem longer than the routes' longest literal segment.
        assert_eq!(
            format_stems("/a/b.c.d.e", 3).collect::<Vec<_>>(),
            ["/a/b", "/a/b.c"]
        );
        assert_eq!(format_stems("/a/bcdef.json", 4).count(), 0);
    }

    #[test]
    fn decodes_param_values() {
        assert_eq!(decode_segment("r%20one"), "r one");
        assert_eq!(decode_segment("plain"), "plain");
    }
}
