//! Where a token is looked for: `header:NAME` (Bearer scheme), `cookie:NAME`,
//! and `supabase-cookie:NAME` — Supabase SSR's session cookie: `base64-` +
//! base64url (padded or not) of JSON, or plain JSON in older versions,
//! possibly split into `NAME.0`, `NAME.1`, ... Its `access_token` is the token.
//!
//! palisade verifies one token and forwards `Authorization` and cookies
//! unchanged, so it must never verify one credential while the backend reads
//! another. Every place a configured source could carry a token is read,
//! the way the most lenient backend parser would read it (cookie names with
//! whitespace around them, percent-encoded names, quoted values, `,` as a
//! separator, cookies over several `Cookie` lines, every `Authorization`
//! line), and if two places hold different tokens the request is refused
//! as ambiguous. The same token twice is fine. The `Cookie` lines are
//! scanned once per request, whatever the number of sources or chunks.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName};

use super::AuthFailure;
use crate::policy::forward::same_header_name;

/// Supabase splits a session at 3180 characters, so a real one has a few
/// chunks; an index at or past this makes the session invalid (and bounds
/// the work a request full of chunk cookies can cause).
pub const MAX_SUPABASE_CHUNKS: usize = 32;

/// One configured token source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `header:NAME`.
    Header(HeaderName),
    /// `cookie:NAME`.
    Cookie(String),
    /// `supabase-cookie:NAME`.
    SupabaseCookie(String),
}

impl TokenSource {
    /// Parses `header:NAME`, `cookie:NAME`, `supabase-cookie:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("\"{name}\" is not a valid header name"));
        }
        if let Some(name) = text.strip_prefix("supabase-cookie:") {
            return Ok(Self::SupabaseCookie(name.to_string()));
        }
        if let Some(name) = text.strip_prefix("cookie:") {
            return Ok(Self::Cookie(name.to_string()));
        }
        Err(format!("unknown token source \"{text}\""))
    }

    /// The token this source alone holds (see [`token_in`]).
    pub fn extract(&self, headers: &HeaderMap) -> Result<Option<String>, AuthFailure> {
        token_in(std::slice::from_ref(self), headers).map(|token| token.map(Cow::into_owned))
    }
}

/// The one token `sources` hold in `headers`: `Ok(None)` when none holds
/// one; `Err(Malformed)` when a carrier holds something unreadable (a
/// broken Supabase session, too many chunks); `Err(Ambiguous)` when two
/// carriers hold different tokens. The token is borrowed from `headers`
/// when it is written there as it is (a bearer token always is).
pub fn token_in<'h>(
    sources: &[TokenSource],
    headers: &'h HeaderMap,
) -> Result<Option<Cow<'h, str>>, AuthFailure> {
    let jar = Jar::collect(sources, headers)?;
    let mut found = Found::default();
    // Whether a source read every `Authorization` line, and whether one
    // of them held something other than a bearer token (see below).
    let (mut authorization_read, mut other_credential) = (false, false);
    for (i, source) in sources.iter().enumerate() {
        match source {
            TokenSource::Header(name) => {
                let authorization = name == header::AUTHORIZATION;
                authorization_read |= authorization;
                for value in headers.get_all(name) {
                    let token = header_token(name, value.as_bytes());
                    other_credential |= authorization && token.is_none();
                    found.offer(token)?;
                }
                // CGI/WSGI servers read `X_Token` as `X-Token`: such a
                // spelling carries a token too (`Authorization`, the usual
                // source, has no `-` to respell).
                if !authorization && name.as_str().contains('-') {
                    for (other, value) in headers {
                        if other != name && same_header_name(other.as_str(), name.as_str()) {
                            found.offer(header_token(name, value.as_bytes()))?;
                        }
                    }
                }
            }
            TokenSource::Cookie(_) => {
                for value in &jar.slots[i].whole {
                    found.offer((!value.is_empty()).then(|| lossy(value)))?;
                }
            }
            TokenSource::SupabaseCookie(_) => {
                // NAME itself wins when present (SPEC §2; Supabase's own
                // `combineChunks` reads it first), but a backend may not
                // see NAME where palisade does (another case, an encoded
                // name, an empty value) and read the chunks instead: a
                // chunk run beside NAME must then read as NAME's token.
                // Stray chunks a reader never joins (no `.0`) are left
                // alone.
                let slot = &jar.slots[i];
                for value in &slot.whole {
                    found.offer(supabase_session(value)?.map(Cow::Owned))?;
                }
                if slot.whole.iter().all(|value| value.is_empty()) {
                    // No NAME, or an empty one (Supabase reads the chunks).
                    let joined = slot.joined_chunks()?;
                    let token = joined.map(|j| supabase_session(&j)).transpose()?;
                    found.offer(token.flatten().map(Cow::Owned))?;
                } else if let Some(run) = slot.leading_run()? {
                    // What a chunk reader would join: `.0` up to the first
                    // gap. One palisade cannot read, or beside a chunk name
                    // it cannot read, is one a more lenient reader might
                    // (percent-escapes, whitespace, an empty chunk ending
                    // its run): no token is certain.
                    match supabase_session(&run) {
                        Ok(token) if !slot.bad_chunk => found.offer(token.map(Cow::Owned))?,
                        _ => return Err(AuthFailure::Ambiguous),
                    }
                }
            }
        }
    }
    // `Authorization` reaches the upstream unchanged: once a token is
    // found, any other credential there (`Token <forged>`, `Basic ...`, a
    // second bearer), configured as a source or not, is one the backend
    // might read instead of the verified one. When a source read those
    // lines already, each offered its token (a different one was refused
    // there): what is left is whether one held none.
    if let Some(token) = &found.0 {
        let ambiguous = if authorization_read {
            other_credential
        } else {
            headers.get_all(header::AUTHORIZATION).iter().any(|value| {
                header_token(&header::AUTHORIZATION, value.as_bytes()).as_deref() != Some(&**token)
            })
        };
        if ambiguous {
            return Err(AuthFailure::Ambiguous);
        }
    }
    Ok(found.0)
}

/// The token found so far; a different one makes the request ambiguous.
#[derive(Default)]
struct Found<'a>(Option<Cow<'a, str>>);

impl<'a> Found<'a> {
    fn offer(&mut self, token: Option<Cow<'a, str>>) -> Result<(), AuthFailure> {
        match (token, &self.0) {
            (None, _) => Ok(()),
            (Some(token), None) => {
                self.0 = Some(token);
                Ok(())
            }
            (Some(token), Some(seen)) if token == *seen => Ok(()),
            (Some(_), Some(_)) => Err(AuthFailure::Ambiguous),
        }
    }
}

/// The token in one line of a `header:NAME` source: the Bearer scheme's
/// credentials; on headers other than `Authorization`, also a bare value.
/// Borrowed from the header unless it is not UTF-8 (every request of a
/// JWT route reads it twice: no copy for either).
fn header_token<'a>(name: &HeaderName, raw: &'a [u8]) -> Option<Cow<'a, str>> {
    match lossy(raw) {
        Cow::Borrowed(text) => token_text(name, text).map(Cow::Borrowed),
        Cow::Owned(text) => token_text(name, &text).map(|t| Cow::Owned(t.to_string())),
    }
}

fn token_text<'t>(name: &HeaderName, text: &'t str) -> Option<&'t str> {
    let value = text.trim();
    // `Bearer` in any case, a space, then the token (trimmed).
    let bearer = value
        .get(..BEARER.len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(BEARER));
    match value.get(BEARER.len()..).map(str::trim) {
        Some(token) if bearer && !token.is_empty() => Some(token),
        // Another scheme (Basic, ...) on Authorization counts as no token.
        _ if name == header::AUTHORIZATION => None,
        _ if value.is_empty() => None,
        _ => Some(value),
    }
}

/// A `Bearer` line's token when reading it takes no text: the scheme in
/// any case and its space, then a token whose first and last bytes are
/// ASCII and not whitespace. [`header_token`] finds the very same token
/// in such a line (its trims remove nothing, whatever the bytes between);
/// any other line is `None` and is read by it instead.
pub fn plain_bearer(line: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = line.split_at_checked(BEARER.len())?;
    let plain = |b: &u8| b.is_ascii() && !b.is_ascii_whitespace();
    (scheme.eq_ignore_ascii_case(BEARER.as_bytes())
        && token.first().is_some_and(plain)
        && token.last().is_some_and(plain))
    .then_some(token)
}

/// The scheme of a bearer credential, with the space after it.
const BEARER: &str = "bearer ";

/// Bytes as text; anything not UTF-8 will fail verification as malformed.
/// Valid UTF-8 (every real token) is borrowed after the standard library's
/// fast check; only other bytes take the slower lossy conversion.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// What the cookie sources found, in one pass over every `Cookie` line.
struct Jar<'a> {
    /// Aligned with the sources (header sources leave theirs empty).
    slots: Vec<Slot<'a>>,
}

/// The cookies one cookie source saw: every value of `NAME`, and for a
/// Supabase source every value of each `NAME.<i>` chunk.
#[derive(Default)]
struct Slot<'a> {
    whole: Vec<&'a [u8]>,
    chunks: BTreeMap<usize, Vec<&'a [u8]>>,
    /// A chunk's index was unreadable or past the bound: the chunks make
    /// no session (beside NAME, no chunk run is certain).
    bad_chunk: bool,
}

impl<'a> Jar<'a> {
    /// Without a cookie source the jar is empty (no slot is read).
    fn collect(sources: &[TokenSource], headers: &'a HeaderMap) -> Result<Self, AuthFailure> {
        if !sources
            .iter()
            .any(|s| matches!(s, TokenSource::Cookie(_) | TokenSource::SupabaseCookie(_)))
        {
            return Ok(Self { slots: Vec::new() });
        }
        let mut slots: Vec<Slot<'a>> = sources.iter().map(|_| Slot::default()).collect();
        for (name, value, segment) in cookie_pairs(headers) {
            if read_apart(segment, sources) {
                return Err(AuthFailure::Ambiguous);
            }
            for (source, slot) in sources.iter().zip(slots.iter_mut()) {
                match source {
                    TokenSource::Header(_) => {}
                    // Names compare ignoring ASCII case: some frameworks
                    // (ASP.NET Core) read cookies that way.
                    TokenSource::Cookie(wanted) => {
                        if name.eq_ignore_ascii_case(wanted.as_bytes()) {
                            slot.whole.push(value);
                        }
                    }
                    TokenSource::SupabaseCookie(wanted) => {
                        if name.eq_ignore_ascii_case(wanted.as_bytes()) {
                            slot.whole.push(value);
                        } else {
                            match chunk_index(&name, wanted.as_bytes()) {
                                Ok(Some(index)) => {
                                    slot.chunks.entry(index).or_default().push(value)
                                }
                                Ok(None) => {}
                                Err(_) => slot.bad_chunk = true,
                            }
                        }
                    }
                }
            }
        }
        Ok(Self { slots })
    }
}

impl Slot<'_> {
    /// The chunks joined in order: `None` without chunks; `Malformed` when
    /// one is missing or empty (`NAME.0`, `NAME.2` without `NAME.1`, or no
    /// `NAME.0`); `Ambiguous` when one chunk comes with two different values.
    fn joined_chunks(&self) -> Result<Option<Vec<u8>>, AuthFailure> {
        if self.bad_chunk {
            return Err(AuthFailure::Malformed);
        }
        if self.chunks.is_empty() {
            return Ok(None);
        }
        match self.run()? {
            // Every chunk in the run: none missing, none empty.
            (joined, taken) if taken == self.chunks.len() => Ok(joined),
            _ => Err(AuthFailure::Malformed),
        }
    }

    /// Beside NAME, the chunks a chunk reader would join: `.0`, `.1`, ...
    /// up to the first missing index (`None` without `.0`). Chunks past the
    /// gap are read by nobody.
    fn leading_run(&self) -> Result<Option<Vec<u8>>, AuthFailure> {
        Ok(self.run()?.0)
    }

    /// The chunks `.0`, `.1`, ... joined up to the first missing or empty
    /// one (where readers stop), and how many were taken. A chunk of the
    /// run given twice with different values is `Ambiguous` (readers take
    /// the first or the last); one whose escapes do not decode alone is
    /// `Malformed` ([`decodes_alone`]).
    fn run(&self) -> Result<(Option<Vec<u8>>, usize), AuthFailure> {
        let mut joined: Option<Vec<u8>> = None;
        let mut taken = 0;
        for (expected, (index, values)) in self.chunks.iter().enumerate() {
            if *index != expected {
                break;
            }
            let first = values.first().copied().unwrap_or_default();
            if values.iter().any(|v| *v != first) {
                return Err(AuthFailure::Ambiguous);
            }
            if first.is_empty() {
                break;
            }
            // (A chunk's bytes are read as text once joined.)
            if first.contains(&b'%') {
                decodes_alone(first)?;
            }
            joined.get_or_insert_with(Vec::new).extend_from_slice(first);
            taken += 1;
        }
        Ok((joined, taken))
    }
}

/// Every `name=value` pair of every `Cookie` line, names and values read
/// as leniently as backends do: split on `;` and `,`, surrounding
/// whitespace trimmed (as Python's `str.strip` does), names percent-decoded
/// (Rack, PHP), values unquoted. Lines with non-ASCII bytes are read too.
/// Each pair comes with its `;`-separated segment (see [`read_apart`]).
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (Cow<'_, [u8]>, &[u8], &[u8])> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|line| line.as_bytes().split(|b| *b == b';'))
        .flat_map(|segment| {
            segment.split(|b| *b == b',').filter_map(move |pair| {
                let (name, value) = name_and_value(pair)?;
                Some((name, unquote(trim(value)), segment))
            })
        })
}

/// A pair's name (trimmed, percent-decoded) and its raw value.
fn name_and_value(pair: &[u8]) -> Option<(Cow<'_, [u8]>, &[u8])> {
    let eq = pair.iter().position(|b| *b == b'=')?;
    let name = trimmed_name(&pair[..eq]);
    let name = if name.contains(&b'%') {
        let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode(&name).into();
        Cow::Owned(trimmed_name(&decoded).into_owned())
    } else {
        name
    };
    Some((name, &pair[eq + 1..]))
}

/// Whether backends would read a `;`-separated segment naming one of the
/// cookie sources' cookies differently: it holds a `,` (which `cookie`,
/// Starlette and Go read as part of a value, others as a separator) or
/// whitespace inside (where Python's `SimpleCookie` starts another cookie:
/// `x=1 session=<forged>`). No browser sends either: cookie values may
/// hold neither (RFC 6265 §4.1.1).
fn read_apart(segment: &[u8], sources: &[TokenSource]) -> bool {
    let inner = trim(segment);
    let apart = |b: &u8| *b == b',' || is_space(b);
    if !inner.iter().any(apart) {
        return false;
    }
    inner
        .split(apart)
        .filter_map(name_and_value)
        .any(|(name, _)| {
            sources.iter().any(|source| match source {
                TokenSource::Header(_) => false,
                TokenSource::Cookie(wanted) => name.eq_ignore_ascii_case(wanted.as_bytes()),
                TokenSource::SupabaseCookie(wanted) => {
                    name.eq_ignore_ascii_case(wanted.as_bytes())
                        || !matches!(chunk_index(&name, wanted.as_bytes()), Ok(None))
                }
            })
        })
}

/// Whitespace around a cookie name or value: what `str.strip()` removes
/// from a header read as Latin-1, and what HTTP calls whitespace.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A cookie name as the backend that trims the most would read it. Read
/// as Latin-1 (Flask, most servers) bytes such as 0xA0 are whitespace;
/// read as UTF-8 (Django, Werkzeug on a WSGI environ) so are U+3000,
/// U+2000..U+200A and the rest of Unicode's, which `str.strip` removes:
/// `\u{3000}session` is `session` there. Of the two readings, the one
/// that is plain ASCII (as every configured name is) is taken.
fn trimmed_name(raw: &[u8]) -> Cow<'_, [u8]> {
    let latin1 = trim(raw);
    if latin1.is_ascii() {
        return Cow::Borrowed(latin1);
    }
    let text = String::from_utf8_lossy(raw);
    let utf8 = text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c));
    if utf8.is_ascii() {
        Cow::Owned(utf8.as_bytes().to_vec())
    } else {
        Cow::Borrowed(latin1)
    }
}

/// Whitespace to a cookie reader: HTTP's, and what Python's `str.strip`
/// and `\s` take in a header read as Latin-1.
fn is_space(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | 0x0b | 0x0c | 0x1c..=0x1f | 0x85 | 0xa0)
}

/// A value in double quotes without them (RFC 6265 allows the quotes;
/// every common parser removes them).
fn unquote(bytes: &[u8]) -> &[u8] {
    match bytes {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

/// `NAME.<i>` as a chunk index. Only a canonical decimal is a chunk; a
/// spelling a reader might take for one (`NAME.01`) or an index past
/// [`MAX_SUPABASE_CHUNKS`] makes the session invalid.
fn chunk_index(name: &[u8], wanted: &[u8]) -> Result<Option<usize>, AuthFailure> {
    let Some(rest) = name
        .get(..wanted.len())
        .filter(|prefix| prefix.eq_ignore_ascii_case(wanted))
        .and_then(|_| name[wanted.len()..].strip_prefix(b"."))
    else {
        return Ok(None);
    };
    if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    if rest.len() > 1 && rest[0] == b'0' {
        return Err(AuthFailure::Malformed);
    }
    let index = std::str::from_utf8(rest)
        .ok()
        .and_then(|digits| digits.parse::<usize>().ok())
        .filter(|i| *i < MAX_SUPABASE_CHUNKS)
        .ok_or(AuthFailure::Malformed)?;
    Ok(Some(index))
}

/// The access token in a Supabase session cookie value (`None` if empty).
fn supabase_session(raw: &[u8]) -> Result<Option<String>, AuthFailure> {
    if raw.is_empty() {
        return Ok(None);
    }
    let raw = std::str::from_utf8(raw).map_err(|_| AuthFailure::Malformed)?;
    let parse = |text: &str| -> Result<serde_json::Value, AuthFailure> {
        serde_json::from_str(text).map_err(|_| AuthFailure::Malformed)
    };
    let session = match raw.strip_prefix("base64-") {
        Some(encoded) => {
            let trimmed = encoded.trim_end_matches('=');
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| AuthFailure::Malformed)?;
            parse(&String::from_utf8(bytes).map_err(|_| AuthFailure::Malformed)?)?
        }
        None => {
            let decoded = decodes_alone(raw.as_bytes())?;
            let session = parse(&decoded)?;
            // Readers that do not percent-decode (Starlette) or give up on
            // a bad escape (`cookie`) read the raw text: where it is JSON
            // too, it must hold the same token.
            if decoded != raw
                && let Ok(raw_session) = parse(raw)
                && access_token(&raw_session) != access_token(&session)
            {
                return Err(AuthFailure::Ambiguous);
            }
            session
        }
    };
    access_token(&session)
        .filter(|t| !t.is_empty())
        .map(|t| Some(t.to_string()))
        .ok_or(AuthFailure::Malformed)
}

/// A session cookie's value (or one chunk of it) decoded, when every
/// reader decodes its percent-escapes alike: each `%` followed by two hex
/// digits, the bytes they make UTF-8; else `Malformed`. The `cookie`
/// package decodes each chunk on its own and keeps one it cannot decode
/// raw, where palisade decodes the joined text: a bad escape (`%zz`), or
/// one split across chunks, would let the two read different sessions.
fn decodes_alone(value: &[u8]) -> Result<Cow<'_, str>, AuthFailure> {
    let escapes_whole = value.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || value
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    match percent_encoding::percent_decode(value).decode_utf8() {
        Ok(text) if escapes_whole => Ok(text),
        _ => Err(AuthFailure::Malformed),
    }
}

/// The session's access token: `access_token`, or the first item of the
/// array older helpers stored (`[access_token, refresh_token, ...]`).
fn access_token(session: &serde_json::Value) -> Option<&str> {
    match session {
        serde_json::Value::Object(map) => map.get("access_token").and_then(|t| t.as_str()),
        serde_json::Value::Array(items) => items.first().and_then(|t| t.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
