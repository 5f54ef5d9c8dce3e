//! Route patterns: literal segments, `*` (one segment), `{name}` (one
//! segment, captured) and `**` (zero or more segments, last only). Parsed
//! once at load; matching walks the canonical path's segments without
//! allocating unless the pattern captures.
//!
//! Literal segments match ignoring ASCII case, and a trailing `/` is not
//! significant: `/api/restaurants/{id}/**` also takes
//! `/API/Restaurants/6/orders`, and `/admin` takes `/admin/`. Case-folding
//! routers (Express, ASP.NET) and slash-tolerant ones would otherwise serve
//! the protected resource for a spelling that fell through to a looser route.
//! For the same reason an escape of a character a path may also hold raw
//! (`%40` for `@`, `%24` for `$`: the canonical path keeps them escaped, as
//! SPEC §3 says) matches that character: every framework decodes them
//! before routing, so `/users/%40me` is `/users/@me` to the backend.

use std::fmt;

/// One segment of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this text ignoring ASCII case (canonical form).
    Literal(Box<str>),
    /// `*`: any one non-empty segment.
    Any,
    /// `{name}`: any one non-empty segment, captured under `name`.
    Param(Box<str>),
    /// `**`: zero or more segments (always last).
    Rest,
}

/// A compiled route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

/// Captured `{name}` values of one match, in pattern order.
pub type Params = Vec<(Box<str>, String)>;

impl Pattern {
    /// Parses a pattern already in canonical form (see `policy::sanitize`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("pattern \"{text}\" must start with \"/\""));
        };
        // A trailing `/` is not significant (see the module doc).
        let body = match body.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => body,
        };
        let raw: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            let last = i + 1 == raw.len();
            let parsed = match *seg {
                "**" if last => Segment::Rest,
                "**" => {
                    return Err(format!(
                        "pattern \"{text}\": \"**\" is only allowed as the last segment"
                    ));
                }
                "*" => Segment::Any,
                s if s.starts_with('{') && s.ends_with('}') => {
                    let name = &s[1..s.len() - 1];
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(format!(
                            "pattern \"{text}\": parameter \"{s}\" must be {{name}} with letters, digits or _"
                        ));
                    }
                    if segments
                        .iter()
                        .any(|p| matches!(p, Segment::Param(n) if &**n == name))
                    {
                        return Err(format!(
                            "pattern \"{text}\": parameter {{{name}}} appears twice"
                        ));
                    }
                    Segment::Param(name.into())
                }
                s if s.contains('*') || s.contains('{') || s.contains('}') => {
                    return Err(format!(
                        "pattern \"{text}\": segment \"{s}\" mixes text with a wildcard; use a whole segment: *, {{name}} or ** (last)"
                    ));
                }
                s if s.is_empty() && !last => {
                    return Err(format!("pattern \"{text}\" has an empty segment (\"//\")"));
                }
                s => Segment::Literal(match_form(s).into()),
            };
            segments.push(parsed);
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    /// The pattern as written (canonical).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The compiled segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Names of the `{name}` captures.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) => Some(&**n),
            _ => None,
        })
    }

    fn captures(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Param(_)))
    }

    /// Whether `path` (canonical, starting with `/`) matches; captures go
    /// into `params` only on success.
    pub fn matches(&self, path: &str, params: &mut Params) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut parts = body.split('/');
        let capture = self.captures();
        let mut captured: Params = Vec::new();
        for seg in &self.segments {
            match seg {
                Segment::Rest => {
                    params.extend(captured);
                    return true;
                }
                Segment::Literal(lit) => match parts.next() {
                    Some(part) if literal_eq(part, lit) => {}
                    _ => return false,
                },
                Segment::Any => match parts.next() {
                    Some(part) if !part.is_empty() => {}
                    _ => return false,
                },
                Segment::Param(name) => match parts.next() {
                    Some(part) if !part.is_empty() => {
                        if capture {
                            captured.push((name.clone(), part.to_string()));
                        }
                    }
                    _ => return false,
                },
            }
        }
        if parts.next().is_some() {
            return false;
        }
        params.extend(captured);
        true
    }

    /// Whether some path matches both `self` and `other`.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        overlaps(&self.segments, &other.segments)
    }

    /// Whether every path `other` matches is also matched by `self` (used to
    /// refuse routes that an earlier route makes unreachable).
    pub fn covers(&self, other: &Pattern) -> bool {
        covers(&self.segments, &other.segments)
    }
}

/// Whether `b` is, besides the unreserved characters (decoded in the
/// canonical path already), a character a path segment may hold raw
/// (RFC 3986 `pchar`: sub-delims, `:`, `@`; `;` is refused before this):
/// its escape and the character are one to every router that decodes.
const fn raw_in_segment(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

/// The byte an escape at the start of `bytes` stands for when it is one
/// of [`raw_in_segment`], else `None`.
fn decoded_raw(bytes: &[u8]) -> Option<u8> {
    let [b'%', hi, lo, ..] = *bytes else {
        return None;
    };
    let byte =
        crate::policy::sanitize::hex_value(hi)? << 4 | crate::policy::sanitize::hex_value(lo)?;
    raw_in_segment(byte).then_some(byte)
}

/// Canonical text (a literal segment, a `strip_prefix`) in the form paths
/// are compared with: the escapes of [`raw_in_segment`] characters
/// decoded (`a%40b` is `a@b`).
pub fn match_form(literal: &str) -> String {
    let bytes = literal.as_bytes();
    let mut out = String::with_capacity(literal.len());
    let mut i = 0;
    while i < bytes.len() {
        match decoded_raw(&bytes[i..]) {
            Some(byte) => {
                out.push(char::from(byte));
                i += 3;
            }
            None => {
                // Canonical text is ASCII: each byte is a char.
                out.push(char::from(bytes[i]));
                i += 1;
            }
        }
    }
    out
}

/// Whether a canonical path segment equals a literal in [`match_form`],
/// ignoring ASCII case and reading an escape of a [`raw_in_segment`]
/// character as the character. Segments without `%` compare directly.
pub fn literal_eq(segment: &str, literal: &str) -> bool {
    if !segment.contains('%') {
        return segment.eq_ignore_ascii_case(literal);
    }
    let (seg, lit) = (segment.as_bytes(), literal.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < seg.len() {
        let (byte, width) = decoded_raw(&seg[i..]).map_or((seg[i], 1), |b| (b, 3));
        if lit.get(j).is_none_or(|l| !l.eq_ignore_ascii_case(&byte)) {
            return false;
        }
        i += width;
        j += 1;
    }
    j == lit.len()
}

fn overlaps(a: &[Segment], b: &[Segment]) -> bool {
    match (a.first(), b.first()) {
        (Some(Segment::Rest), _) | (_, Some(Segment::Rest)) | (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(sa), Some(sb)) => {
            let head = match (sa, sb) {
                (Segment::Literal(x), Segment::Literal(y)) => x.eq_ignore_ascii_case(y),
                (Segment::Literal(x), _) | (_, Segment::Literal(x)) => !x.is_empty(),
                _ => true,
            };
            head && overlaps(&a[1..], &b[1..])
        }
    }
}

fn covers(a: &[Segment], b: &[Segment]) -> bool {
    match (a.first(), b.first()) {
        (Some(Segment::Rest), _) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(sa), Some(sb)) => {
            let head = match (sa, sb) {
                (Segment::Rest, _) => true,
                (_, Segment::Rest) => false,
                (Segment::Literal(x), Segment::Literal(y)) => x.eq_ignore_ascii_case(y),
                (Segment::Literal(_), _) => false,
                (Segment::Any | Segment::Param(_), Segment::Literal(y)) => !y.is_empty(),
                (Segment::Any | Segment::Param(_), Segment::Any | Segment::Param(_)) => true,
            };
            head && covers(&a[1..], &b[1..])
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    fn m(pattern: &str, path: &str) -> bool {
        p(pattern).matches(path, &mut Vec::new())
    }

    #[test]
    fn literal_and_wildcards() {
        assert!(m("/health", "/health"));
        assert!(m("/health", "/health/"));
        assert!(m("/health/", "/health"));
        assert!(m("/health", "/HEALTH"));
        assert!(!m("/health", "/health//"));
        assert!(!m("/health", "/healthz"));
        assert!(m("/users/*", "/users/42"));
        assert!(!m("/users/*", "/users/"));
        assert!(!m("/users/*", "/users/42/x"));
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
    }

    #[test]
    fn double_star_matches_zero_or_more() {
        assert!(m("/api/**", "/api"));
        assert!(m("/api/**", "/api/"));
        assert!(m("/api/**", "/api/a/b/c"));
        assert!(!m("/api/**", "/apix"));
        assert!(m("/**", "/"));
        assert!(m("/**", "/anything/at/all"));
    }

    #[test]
    fn params_are_captured() {
        let pat = p("/api/restaurants/{restaurant_id}/**");
        let mut params = Vec::new();
        assert!(pat.matches("/api/restaurants/r1/menu", &mut params));
        assert_eq!(params, vec![("restaurant_id".into(), "r1".to_string())]);
        let mut none = Vec::new();
        assert!(!pat.matches("/api/restaurants", &mut none));
        assert!(none.is_empty());
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Pattern::parse("api").is_err());
        assert!(Pattern::parse("/**/x").is_err());
        assert!(Pattern::parse("/a*b").is_err());
        assert!(Pattern::parse("/{}").is_err());
        assert!(Pattern::parse("/{a-b}").is_err());
        assert!(Pattern::parse("/{id}/{id}").is_err());
        assert!(Pattern::parse("/a//b").is_err());
    }

    #[test]
    fn escapes_of_raw_path_characters_match_the_character() {
        assert!(m("/users/@me", "/users/%40me"));
        assert!(m("/odata/$metadata", "/odata/%24METADATA"));
        assert!(m("/users/a%40b", "/users/a@b"));
        assert!(m("/v1/things:batchGet", "/v1/things%3AbatchGet"));
        assert!(m("/a/x!$&'()+,=y", "/a/x%21%24%26%27%28%29%2B%2C%3Dy"));
        // Other escapes stay escapes: `%20` is no character a path holds raw.
        assert!(m("/a/b%20c", "/a/b%20c"));
        assert!(!m("/a/b%20c", "/a/b c"));
        assert!(!m("/users/@me", "/users/%40mex"));
        assert!(!m("/users/@me", "/users/%40m"));
        assert!(p("/users/%40me").covers(&p("/users/@me")));
    }

    #[test]
    fn overlap() {
        assert!(p("/status/**").overlaps(&p("/{section}/admin")));
        assert!(p("/{section}/admin").overlaps(&p("/status/**")));
        assert!(p("/ops/ping").overlaps(&p("/ops/**")));
        assert!(p("/api").overlaps(&p("/api/**")));
        assert!(p("/a/*").overlaps(&p("/{x}/b")));
        assert!(!p("/a/*").overlaps(&p("/b/*")));
        assert!(!p("/a").overlaps(&p("/a/b")));
        assert!(!p("/a/*").overlaps(&p("/a")));
    }

    #[test]
    fn coverage() {
        assert!(p("/**").covers(&p("/api/x")));
        assert!(p("/api/**").covers(&p("/api")));
        assert!(p("/api/**").covers(&p("/api/**")));
        assert!(p("/api/*").covers(&p("/api/{id}")));
        assert!(p("/api/{id}").covers(&p("/api/x")));
        assert!(!p("/api").covers(&p("/api/**")));
        assert!(!p("/api/*").covers(&p("/api/**")));
        assert!(!p("/api/x").covers(&p("/api/*")));
        assert!(!p("/api/*").covers(&p("/api/x/y")));
        assert!(!p("/a/**").covers(&p("/b/**")));
        assert!(p("/API/**").covers(&p("/api/x")));
        assert!(p("/a").covers(&p("/a/")));
    }
}
