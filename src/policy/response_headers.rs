//! The headers of a response as palisade's response-side policies edit
//! them (security headers, the request ID, rate-limit and CORS headers):
//! palisade's own header map over the upstream's header lines, which
//! palisade's HTTP/1 exchange keeps as the bytes it read
//! ([`UpstreamLines`]) instead of parsing them into a `HeaderMap` that is
//! encoded again and dropped (about 10% of a plain proxied GET).
//!
//! The rule that keeps the two one response: a name palisade sets hides
//! every upstream line of that name (what `HeaderMap::insert` does), a
//! name palisade removes is removed from both, and a read sees palisade's
//! value when it set one, else the upstream's. [`ResponseHeaders::each`]
//! is the one way to read the result, in the order it is written: the
//! upstream's lines in their order, palisade's value in place of the first
//! line it hides, then palisade's other headers in the order they were set.

use std::ops::Range;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The upstream's header lines, as read: the head's bytes and where each
/// kept line's name and value lie. Hop-by-hop lines never get here (the
/// exchange leaves them out as it reads the head).
#[derive(Debug, Clone, Default)]
pub struct UpstreamLines {
    head: Bytes,
    lines: Vec<LineSpan>,
}

/// Where one line's name and value lie in the head (u32: heads are
/// bounded far below 4 GiB), and what the writer needs to know of it.
#[derive(Debug, Clone, Copy)]
struct LineSpan {
    name: (u32, u32),
    value: (u32, u32),
    known: Known,
    /// The head holds the line as `name: value`, in one piece.
    whole: bool,
}

/// The names a response writer looks at: its framing, `Connection` and
/// `Date` (found once, when a line is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// `Content-Length`.
    ContentLength,
    /// `Transfer-Encoding`.
    TransferEncoding,
    /// `Connection`.
    Connection,
    /// `Date`.
    Date,
    /// `Trailer`.
    Trailer,
    /// Any other.
    Other,
}

impl Known {
    /// What a name in lower case is (one comparison at most: by length
    /// first). The exchange finds it as it reads a head; this is for
    /// lines made up by tests.
    #[cfg(test)]
    pub fn of(name: &[u8]) -> Self {
        let (known, spelled): (Self, &[u8]) = match name.len() {
            4 => (Known::Date, b"date"),
            7 => (Known::Trailer, b"trailer"),
            10 => (Known::Connection, b"connection"),
            14 => (Known::ContentLength, b"content-length"),
            17 => (Known::TransferEncoding, b"transfer-encoding"),
            _ => return Known::Other,
        };
        if name == spelled { known } else { Known::Other }
    }

    /// What a header map's name is.
    fn of_name(name: &HeaderName) -> Self {
        use http::header;
        match *name {
            header::CONTENT_LENGTH => Known::ContentLength,
            header::TRANSFER_ENCODING => Known::TransferEncoding,
            header::CONNECTION => Known::Connection,
            header::DATE => Known::Date,
            header::TRAILER => Known::Trailer,
            _ => Known::Other,
        }
    }
}

/// One header line of the response being written.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Its name, in lower case.
    pub name: &'a [u8],
    /// Its value.
    pub value: &'a [u8],
    /// What the name is, for the writer.
    pub known: Known,
    /// The line as `name: value` in one piece (no CRLF), when it is (an
    /// upstream line read as such): one copy instead of four.
    pub whole: Option<&'a [u8]>,
}

fn narrow(range: Range<usize>) -> (u32, u32) {
    (
        u32::try_from(range.start).unwrap_or(u32::MAX),
        u32::try_from(range.end).unwrap_or(u32::MAX),
    )
}

impl UpstreamLines {
    /// No lines yet, over `head`; room for `lines` of them.
    pub fn with_capacity(head: Bytes, lines: usize) -> Self {
        Self {
            head,
            lines: Vec::with_capacity(lines),
        }
    }

    /// Keeps the line whose name and value lie at these ranges of the head.
    /// The exchange has checked the name is a token and the value is
    /// visible text (`httparse`'s rules, which are the `http` types'), and
    /// put the name in lower case; `known` is what the name is.
    pub fn push(&mut self, name: Range<usize>, value: Range<usize>, known: Known) {
        let whole = value.start == name.end + 2
            && self.head.get(name.end..value.start) == Some(b": ".as_slice());
        self.lines.push(LineSpan {
            name: narrow(name),
            value: narrow(value),
            known,
            whole,
        });
    }

    fn bytes(&self, (start, end): (u32, u32)) -> &[u8] {
        self.head.get(start as usize..end as usize).unwrap_or(&[])
    }

    /// Each line's name (as the upstream spelled it) and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .iter()
            .map(|line| (self.bytes(line.name), self.bytes(line.value)))
    }

    /// The values of the lines named `name` (in any case).
    fn values<'a>(&'a self, name: &'a HeaderName) -> UpstreamValues<'a> {
        UpstreamValues {
            lines: self,
            at: self.lines.iter(),
            name: name.as_str().as_bytes(),
        }
    }

    /// Removes every line named `name` (in any case).
    fn remove(&mut self, name: &HeaderName) {
        let head = &self.head;
        let wanted = name.as_str().as_bytes();
        self.lines.retain(|line| {
            let (start, end) = line.name;
            !head
                .get(start as usize..end as usize)
                .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
        });
    }

    /// Lines over a head written out here, as the exchange keeps them.
    #[cfg(test)]
    pub fn from_pairs(lines: &[(&str, &str)]) -> Self {
        let mut head = Vec::new();
        let mut spans = Vec::new();
        for (name, value) in lines {
            let name_start = head.len();
            head.extend_from_slice(name.to_ascii_lowercase().as_bytes());
            let name_end = head.len();
            head.extend_from_slice(b": ");
            let value_start = head.len();
            head.extend_from_slice(value.as_bytes());
            spans.push((name_start..name_end, value_start..head.len()));
            head.extend_from_slice(b"\r\n");
        }
        let mut kept = Self::with_capacity(Bytes::from(head), spans.len());
        for (name, value) in spans {
            let known = Known::of(&kept.head[name.clone()]);
            kept.push(name, value, known);
        }
        kept
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// A line's value as a `HeaderValue` sharing the head's bytes.
    fn value_at(&self, line: &LineSpan) -> Option<HeaderValue> {
        let (start, end) = line.value;
        HeaderValue::from_maybe_shared(self.head.slice(start as usize..end as usize)).ok()
    }
}

/// The most headers palisade's own map may hold while upstream lines are
/// kept beside it (one bit each while writing); past it the two are
/// merged into one map first. palisade sets a few dozen at most.
const MAX_OWN_NAMES: usize = 64;

/// A response's headers while palisade edits them: its own map, over the
/// upstream's lines when the exchange kept them as bytes.
pub struct ResponseHeaders<'a> {
    own: &'a mut HeaderMap,
    upstream: &'a mut Option<UpstreamLines>,
}

impl<'a> ResponseHeaders<'a> {
    /// The headers of a response: `own` (every header when `upstream` is
    /// `None`), over `upstream`'s lines.
    pub fn new(own: &'a mut HeaderMap, upstream: &'a mut Option<UpstreamLines>) -> Self {
        Self { own, upstream }
    }

    /// Sets `name` to `value`, replacing every line of that name, the
    /// upstream's included.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.own.insert(name, value);
    }

    /// Room for `additional` more headers of palisade's own.
    pub fn reserve(&mut self, additional: usize) {
        self.own.reserve(additional);
    }

    /// Removes every line named `name`, the upstream's included.
    pub fn remove(&mut self, name: &HeaderName) {
        // Comparing the few names present is much cheaper than hashing
        // `name` for a lookup that usually finds nothing.
        if self.own.keys().any(|present| present == name) {
            self.own.remove(name);
        }
        if let Some(upstream) = self.upstream.as_mut() {
            upstream.remove(name);
        }
    }

    /// The values of `name`: palisade's, when it set it; else the upstream's.
    pub fn get_all<'b>(&'b self, name: &'b HeaderName) -> Values<'b> {
        if self.own.contains_key(name) {
            return Values::Own(self.own.get_all(name).iter());
        }
        match self.upstream.as_ref() {
            Some(upstream) => Values::Upstream(upstream.values(name)),
            None => Values::None,
        }
    }

    /// Whether any line is named `name`.
    pub fn contains_key(&self, name: &HeaderName) -> bool {
        self.get_all(name).next().is_some()
    }

    /// Ends the editing: when palisade's map has grown past what the
    /// writer tracks, the upstream's lines are merged into it.
    pub fn finish(self) {
        if self.upstream.is_some() && self.own.keys_len() > MAX_OWN_NAMES {
            merge_into_map(self.own, self.upstream);
        }
    }
}

/// The values of one name ([`ResponseHeaders::get_all`]).
pub enum Values<'a> {
    /// palisade's.
    Own(http::header::ValueIter<'a, HeaderValue>),
    /// The upstream's.
    Upstream(UpstreamValues<'a>),
    /// None.
    None,
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Own(values) => values.next().map(HeaderValue::as_bytes),
            Values::Upstream(values) => values.next(),
            Values::None => None,
        }
    }
}

/// The values of the upstream's lines of one name.
pub struct UpstreamValues<'a> {
    lines: &'a UpstreamLines,
    at: std::slice::Iter<'a, LineSpan>,
    name: &'a [u8],
}

impl<'a> Iterator for UpstreamValues<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let lines = self.lines;
        self.at
            .by_ref()
            .find(|line| lines.bytes(line.name).eq_ignore_ascii_case(self.name))
            .map(|line| lines.bytes(line.value))
    }
}

/// One line of the response being written.
enum Entry<'a> {
    /// A header palisade set.
    Own(&'a HeaderName, &'a HeaderValue),
    /// An upstream line.
    Upstream(&'a LineSpan),
}

/// Calls `line` with each header line of the response, in the order they
/// are written (see the module's doc), until it returns `Err`.
pub fn each<E>(
    own: &HeaderMap,
    upstream: Option<&UpstreamLines>,
    mut line: impl FnMut(Line<'_>) -> Result<(), E>,
) -> Result<(), E> {
    each_entry(own, upstream, |entry| match entry {
        Entry::Own(name, value) => line(Line {
            name: name.as_str().as_bytes(),
            value: value.as_bytes(),
            known: Known::of_name(name),
            whole: None,
        }),
        Entry::Upstream(span) => match upstream {
            Some(lines) => line(Line {
                name: lines.bytes(span.name),
                value: lines.bytes(span.value),
                known: span.known,
                whole: span.whole.then(|| lines.bytes((span.name.0, span.value.1))),
            }),
            None => Ok(()),
        },
    })
}

fn each_entry<'a, E>(
    own: &'a HeaderMap,
    upstream: Option<&'a UpstreamLines>,
    mut entry: impl FnMut(Entry<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let Some(upstream) = upstream.filter(|u| !u.is_empty()) else {
        for (name, value) in own {
            entry(Entry::Own(name, value))?;
        }
        return Ok(());
    };
    // Bit `j`: palisade's `j`th name was written in place of an upstream
    // line. `ResponseHeaders::finish` keeps the names within the bits.
    let mut written = 0u64;
    for span in &upstream.lines {
        let name = upstream.bytes(span.name);
        let hidden_by = own
            .keys()
            .take(MAX_OWN_NAMES)
            .position(|own_name| name.eq_ignore_ascii_case(own_name.as_str().as_bytes()));
        match hidden_by {
            None => entry(Entry::Upstream(span))?,
            Some(j) if written & (1 << j) == 0 => {
                written |= 1 << j;
                if let Some(own_name) = own.keys().nth(j) {
                    for value in own.get_all(own_name) {
                        entry(Entry::Own(own_name, value))?;
                    }
                }
            }
            Some(_) => {}
        }
    }
    let mut index = 0usize;
    let mut previous: Option<&HeaderName> = None;
    for (name, value) in own {
        // A name's values come one after another: a new name is the next.
        if previous.is_some_and(|before| before != name) {
            index += 1;
        }
        previous = Some(name);
        if index < MAX_OWN_NAMES && written & (1 << index) != 0 {
            continue;
        }
        entry(Entry::Own(name, value))?;
    }
    Ok(())
}

/// Puts the upstream's lines into `own`, in the order [`each`] writes
/// them: one header map, for a writer that needs one (hyper's server, on
/// HTTP/2 or on a connection hyper serves).
pub fn merge_into_map(own: &mut HeaderMap, upstream: &mut Option<UpstreamLines>) {
    let Some(lines) = upstream.take() else {
        return;
    };
    let mut merged = HeaderMap::with_capacity(own.len() + lines.lines.len());
    let _ = each_entry(own, Some(&lines), |entry| {
        match entry {
            Entry::Own(name, value) => {
                merged.append(name.clone(), value.clone());
            }
            Entry::Upstream(span) => {
                // The exchange kept only lines the http types take.
                let name = HeaderName::from_bytes(lines.bytes(span.name));
                if let (Ok(name), Some(value)) = (name, lines.value_at(span)) {
                    merged.append(name, value);
                }
            }
        }
        Ok::<(), ()>(())
    });
    *own = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(lines: &[(&str, &str)]) -> UpstreamLines {
        UpstreamLines::from_pairs(lines)
    }

    fn written(own: &HeaderMap, upstream: Option<&UpstreamLines>) -> Vec<String> {
        let mut out = Vec::new();
        each(own, upstream, |line| {
            out.push(format!(
                "{}: {}",
                String::from_utf8_lossy(line.name),
                String::from_utf8_lossy(line.value)
            ));
            Ok::<(), ()>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn own_headers_replace_the_upstreams_in_place_and_removal_reaches_both() {
        let mut own = HeaderMap::new();
        let mut lines = Some(upstream(&[
            ("Server", "nginx"),
            ("X-Frame-Options", "ALLOWALL"),
            ("Set-Cookie", "a=1"),
            ("x-frame-options", "again"),
            ("Content-Type", "text/plain"),
            ("Set-Cookie", "b=2"),
        ]));
        let mut headers = ResponseHeaders::new(&mut own, &mut lines);
        headers.remove(&HeaderName::from_static("server"));
        headers.insert(
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        );
        headers.insert(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from_static("id-1"),
        );
        assert_eq!(
            headers
                .get_all(&HeaderName::from_static("set-cookie"))
                .collect::<Vec<_>>(),
            [b"a=1".as_slice(), b"b=2"]
        );
        assert_eq!(
            headers
                .get_all(&HeaderName::from_static("x-frame-options"))
                .collect::<Vec<_>>(),
            [b"DENY".as_slice()]
        );
        assert!(!headers.contains_key(&HeaderName::from_static("server")));
        headers.finish();
        assert_eq!(
            written(&own, lines.as_ref()),
            [
                "x-frame-options: DENY",
                "set-cookie: a=1",
                "content-type: text/plain",
                "set-cookie: b=2",
                "x-request-id: id-1",
            ]
        );
        // The map made for hyper holds the same lines.
        merge_into_map(&mut own, &mut lines);
        assert!(lines.is_none());
        assert_eq!(
            written(&own, None),
            [
                "x-frame-options: DENY",
                "set-cookie: a=1",
                "set-cookie: b=2",
                "content-type: text/plain",
                "x-request-id: id-1",
            ]
        );
    }

    #[test]
    fn without_upstream_lines_the_map_is_the_response() {
        let mut own = HeaderMap::new();
        own.insert("a", HeaderValue::from_static("1"));
        own.append("a", HeaderValue::from_static("2"));
        own.insert("b", HeaderValue::from_static("3"));
        assert_eq!(written(&own, None), ["a: 1", "a: 2", "b: 3"]);
        let empty = UpstreamLines::default();
        assert_eq!(written(&own, Some(&empty)), ["a: 1", "a: 2", "b: 3"]);
    }

    #[test]
    fn a_name_set_twice_by_palisade_is_written_once_in_place() {
        let mut own = HeaderMap::new();
        let mut lines = Some(upstream(&[("Vary", "Accept"), ("ETag", "x")]));
        let mut headers = ResponseHeaders::new(&mut own, &mut lines);
        headers.insert(
            HeaderName::from_static("x-one"),
            HeaderValue::from_static("1"),
        );
        let vary: Vec<u8> = headers
            .get_all(&http::header::VARY)
            .flat_map(|v| v.to_vec())
            .collect();
        assert_eq!(vary, b"Accept");
        headers.insert(
            http::header::VARY,
            HeaderValue::from_static("Accept, Origin"),
        );
        headers.finish();
        assert_eq!(
            written(&own, lines.as_ref()),
            ["vary: Accept, Origin", "etag: x", "x-one: 1"]
        );
    }

    #[test]
    fn many_own_names_are_merged_into_one_map() {
        let mut own = HeaderMap::new();
        let mut lines = Some(upstream(&[("X-Up", "u")]));
        let mut headers = ResponseHeaders::new(&mut own, &mut lines);
        for i in 0..=MAX_OWN_NAMES {
            headers.insert(
                HeaderName::try_from(format!("x-own-{i}")).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        headers.finish();
        assert!(lines.is_none());
        assert_eq!(own.len(), MAX_OWN_NAMES + 2);
        assert_eq!(own["x-up"], "u");
    }
}
