//! The headers of a response as palisade's response-side policies edit
//! them (security headers, the request ID, rate-limit and CORS headers),
//! kept in three parts until the response is written: its header map (the
//! whole of palisade's own answers; an upstream's head as hyper read it),
//! the upstream's header lines as palisade's HTTP/1 exchange read them
//! ([`UpstreamLines`], kept as bytes instead of parsed into a map that is
//! encoded again and dropped), and the headers palisade sets (a short
//! list: hashing each into a map cost more than the list's comparisons).
//!
//! The rule that keeps them one response: a name palisade sets hides every
//! other line of that name (what `HeaderMap::insert` does), a name palisade
//! removes is removed from all three, and a read sees palisade's value when
//! it set one, else the others'. [`each`] is the one way to read the
//! result, in the order it is written: the map's lines, then the
//! upstream's in their order, palisade's value in place of the first line
//! it hides, then palisade's other headers in the order they were set.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

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
    /// Its name's bit ([`name_bit`]) as a shift, found once as the line is
    /// kept: each pass over the lines (removing, writing) tests it
    /// instead of finding it again.
    bit: u8,
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
    #[inline]
    pub fn push(&mut self, name: Range<usize>, value: Range<usize>, known: Known) {
        let whole = value.start == name.end + 2
            && self.head.get(name.end..value.start) == Some(b": ".as_slice());
        let bit = name_shift(self.head.get(name.clone()).unwrap_or(&[]));
        self.lines.push(LineSpan {
            name: narrow(name),
            value: narrow(value),
            known,
            whole,
            bit,
        });
    }

    fn bytes(&self, (start, end): (u32, u32)) -> &[u8] {
        self.head.get(start as usize..end as usize).unwrap_or(&[])
    }

    /// Each line's name (in lower case, as the exchange keeps it) and
    /// value, in order: for tests that look at what was kept.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .iter()
            .map(|line| (self.bytes(line.name), self.bytes(line.value)))
    }

    /// The values of the lines named `name` (both in lower case: compared
    /// as they are).
    fn values<'a>(&'a self, name: &'a HeaderName) -> UpstreamValues<'a> {
        let name = name.as_str().as_bytes();
        UpstreamValues {
            lines: self,
            at: self.lines.iter(),
            name,
            shift: name_shift(name),
        }
    }

    /// Removes every line named `name` (the lines' names and a
    /// `HeaderName` are both in lower case: compared as they are).
    fn remove(&mut self, name: &HeaderName) {
        let wanted = name.as_str().as_bytes();
        self.remove_where(name_bit(wanted), |n| n == wanted);
    }

    /// Removes every line named as one of `set`, in one pass.
    fn remove_all(&mut self, set: &NameSet) {
        self.remove_where(set.bits, |n| {
            set.spelled.iter().any(|wanted| n == &**wanted)
        });
    }

    /// Removes every line whose name `wanted` says, comparing only the
    /// lines whose bit is among `bits` (those of the wanted names).
    fn remove_where(&mut self, bits: u64, wanted: impl Fn(&[u8]) -> bool) {
        let head = &self.head;
        let named = |line: &LineSpan| {
            bits & (1 << line.bit) != 0 && {
                let (start, end) = line.name;
                wanted(head.get(start as usize..end as usize).unwrap_or(&[]))
            }
        };
        // Usually no line has one of the names, or one (`Server`): the
        // lines before the first are left where they are, and the rest
        // compared once each as they move up.
        let Some(first) = self.lines.iter().position(named) else {
            return;
        };
        let mut kept = first;
        for at in first + 1..self.lines.len() {
            let line = self.lines[at];
            if !named(&line) {
                self.lines[kept] = line;
                kept += 1;
            }
        }
        self.lines.truncate(kept);
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

/// Names removed together from responses (a policy's
/// `remove_response_headers`), with the [`name_bit`] of each made once: an
/// upstream line whose bit is not among theirs is kept without comparing.
#[derive(Debug, Clone, Default)]
pub struct NameSet {
    names: Vec<HeaderName>,
    /// Each name's text (a standard name's is looked up by `as_str`).
    spelled: Vec<Box<[u8]>>,
    bits: u64,
}

impl NameSet {
    /// The set of `names`.
    pub fn new(names: Vec<HeaderName>) -> Self {
        let spelled = names
            .iter()
            .map(|name| name.as_str().as_bytes().into())
            .collect();
        let bits = names
            .iter()
            .fold(0, |bits, name| bits | name_bit(name.as_str().as_bytes()));
        Self {
            names,
            spelled,
            bits,
        }
    }

    /// Its names, as configured.
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }
}

/// Headers palisade sets together on every response a policy covers (the
/// security headers), encoded once when the policy is loaded: a response
/// then holds one shared reference instead of a name and a value per
/// header, and the whole block is written by one copy. Only names the
/// writer has no rule for (not framing, `Connection`, `Date` or `Trailer`).
#[derive(Debug)]
pub struct HeaderBlock {
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `name: value\r\n` for each header, in order.
    lines: Vec<u8>,
    /// The [`name_bit`] of each of its names (as `set_names`).
    names: u64,
}

impl HeaderBlock {
    /// The block of `headers`; `None` when there are none, a name comes
    /// twice, or a name is one the writer treats specially (those are set
    /// one at a time).
    pub fn new(headers: &[(HeaderName, HeaderValue)]) -> Option<Arc<Self>> {
        let mut block = Self {
            headers: Vec::with_capacity(headers.len()),
            lines: Vec::new(),
            names: 0,
        };
        for (name, value) in headers {
            if Known::of_name(name) != Known::Other
                || block.position(name.as_str().as_bytes()).is_some()
            {
                return None;
            }
            block.lines.extend_from_slice(name.as_str().as_bytes());
            block.lines.extend_from_slice(b": ");
            block.lines.extend_from_slice(value.as_bytes());
            block.lines.extend_from_slice(b"\r\n");
            block.names |= name_bit(name.as_str().as_bytes());
            block.headers.push((name.clone(), value.clone()));
        }
        (!block.headers.is_empty()).then(|| Arc::new(block))
    }

    /// The position of the header named `name` (in any case).
    #[inline]
    fn position(&self, name: &[u8]) -> Option<usize> {
        position_by_name(self.names, &self.headers, name)
    }
}

/// Header lines made once with holes for values made per response (the
/// rate-limit headers: their limit and policy fixed, what remains and when
/// it resets per response), written by
/// [`ResponseHeaders::insert_template`]: the text around the holes
/// (`name: `, fixed parts of values, `\r\n name: `) is copied as a few
/// pieces.
#[derive(Debug, PartialEq, Eq)]
pub struct LineTemplate {
    /// Each header and its value's segments (to set them one by one).
    lines: Vec<(HeaderName, Vec<Segment>)>,
    /// The text around the holes: `pieces[0] hole pieces[1] ... hole
    /// pieces[n]`, the lines written whole, `\r\n` ending each.
    pieces: Vec<Box<[u8]>>,
    /// The [`name_bit`] of each of its names.
    names: u64,
    /// Whether its lines can be one block: names on distinct bits (so
    /// distinct) that the writer has no rules for, fixed text that is
    /// header text.
    whole: bool,
}

/// A piece of a [`LineTemplate`] value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text fixed in the template.
    Text(Box<[u8]>),
    /// A value given per response, in the order of the holes.
    Hole,
}

impl LineTemplate {
    /// The template of `lines`: each header's value as its segments.
    pub fn new(lines: Vec<(HeaderName, Vec<Segment>)>) -> Self {
        let mut pieces = Vec::new();
        let mut piece = Vec::new();
        let mut names = 0u64;
        let mut whole = true;
        for (name, segments) in &lines {
            let bit = name_bit(name.as_str().as_bytes());
            whole &= names & bit == 0 && Known::of_name(name) == Known::Other;
            names |= bit;
            piece.extend_from_slice(name.as_str().as_bytes());
            piece.extend_from_slice(b": ");
            for segment in segments {
                match segment {
                    Segment::Text(text) => {
                        whole &= is_value_text(text);
                        piece.extend_from_slice(text);
                    }
                    Segment::Hole => pieces.push(std::mem::take(&mut piece).into()),
                }
            }
            piece.extend_from_slice(b"\r\n");
        }
        pieces.push(piece.into());
        Self {
            lines,
            pieces,
            names,
            whole,
        }
    }
}

/// Whether `bytes` may be a header value as `HeaderValue::from_bytes`
/// takes one: no control character but tab, no DEL. Every byte is looked
/// at, without a branch per byte (the compiler makes it a vector loop).
fn is_value_text(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        ok & (((b >= 0x20) & (b != 0x7f)) | (b == b'\t'))
    })
}

/// Room made for the lines of the headers set as text, on the first: the
/// five rate-limit headers' fit.
const TEXT_ROOM: usize = 256;

/// The most headers palisade sets on one response while other lines are
/// kept beside them (one bit each while writing); past it everything is
/// merged into the header map first. palisade sets a few dozen at most.
const MAX_SET: usize = 64;

/// What a response's headers hold besides its header map until the
/// response is written: the upstream's lines kept as bytes, and the
/// headers palisade set (a list: a response gets up to about fifteen, and
/// a header map hashed each name and grew its table for them).
#[derive(Debug, Default)]
pub struct PendingHeaders {
    upstream: Option<UpstreamLines>,
    set: Vec<(HeaderName, SetValue)>,
    /// The lines of the headers set as text ([`SetValue::Text`]), one
    /// after another: made on the first one.
    text: Vec<u8>,
    /// Headers set as blocks (the security headers, a limit's fixed
    /// rate-limit headers, an origin's CORS headers), in the order set. No
    /// name is in two blocks, or in a block and in `set`: setting or
    /// removing one of a block's names takes that block apart first.
    blocks: SmallVec<[Placed; 3]>,
    /// The [`name_bit`] of every name of the blocks.
    block_names: u64,
    /// The [`name_bit`] of every name set: a line whose name's bit is not
    /// here is set by nobody, found without comparing.
    set_names: u64,
}

/// A block among the headers set.
#[derive(Debug, Clone)]
struct Placed {
    block: Placement,
    /// How many headers were set before it: it is written, and taken
    /// apart, in that place among them (the order `insert` one by one
    /// would have made).
    at: usize,
}

/// The lines of a block.
#[derive(Debug, Clone)]
enum Placement {
    /// Made once, shared by every response (a [`HeaderBlock`]).
    Shared(Arc<HeaderBlock>),
    /// Written for this response into [`PendingHeaders::text`], at
    /// `lines`, `name: value\r\n` each ([`ResponseHeaders::insert_template`]);
    /// `names` holds the [`name_bit`] of each name.
    Text { lines: (u32, u32), names: u64 },
}

impl Placement {
    /// The [`name_bit`] of each of its names.
    fn names(&self) -> u64 {
        match self {
            Placement::Shared(block) => block.names,
            Placement::Text { names, .. } => *names,
        }
    }

    /// Its lines as written (`text` is the response's set text).
    fn lines<'a>(&'a self, text: &'a [u8]) -> &'a [u8] {
        match self {
            Placement::Shared(block) => &block.lines,
            Placement::Text { lines, .. } => {
                text.get(lines.0 as usize..lines.1 as usize).unwrap_or(&[])
            }
        }
    }

    /// The position of the header named `name` (in any case).
    fn position(&self, text: &[u8], name: &[u8]) -> Option<usize> {
        match self {
            Placement::Shared(block) => block.position(name),
            Placement::Text { lines, names } => {
                if names & name_bit(name) == 0 {
                    return None;
                }
                text_lines(text, *lines).position(|line| {
                    text.get(line.name())
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
            }
        }
    }

    /// The value of its `at`th header.
    fn value<'a>(&'a self, text: &'a [u8], at: usize) -> &'a [u8] {
        match self {
            Placement::Shared(block) => block.headers.get(at).map_or(&[], |(_, v)| v.as_bytes()),
            Placement::Text { lines, .. } => text_lines(text, *lines)
                .nth(at)
                .and_then(|line| text.get(line.value as usize..line.end as usize))
                .unwrap_or(&[]),
        }
    }

    /// Its headers as headers set one by one.
    fn headers(&self, text: &[u8]) -> Vec<(HeaderName, SetValue)> {
        match self {
            Placement::Shared(block) => block
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), SetValue::Value(v.clone())))
                .collect(),
            Placement::Text { lines, .. } => text_lines(text, *lines)
                .filter_map(|line| {
                    let name = HeaderName::from_bytes(text.get(line.name())?).ok()?;
                    Some((
                        name,
                        SetValue::Text {
                            line: (line.start, line.end),
                            value: line.value,
                        },
                    ))
                })
                .collect(),
        }
    }
}

/// One line of a [`Placement::Text`] block, by its place in the text.
struct TextLine {
    /// Where the line (its name) starts.
    start: u32,
    /// Where its name ends (at the colon).
    colon: u32,
    /// Where its value starts.
    value: u32,
    /// Where the line ends (before its CRLF).
    end: u32,
}

impl TextLine {
    /// Where its name lies.
    fn name(&self) -> Range<usize> {
        self.start as usize..self.colon as usize
    }
}

/// The lines of the block at `lines` of `text`: `name: value\r\n` each,
/// as [`ResponseHeaders::insert_template`] wrote them (no `\r` in a name or
/// a value, checked as they were written).
fn text_lines(text: &[u8], lines: (u32, u32)) -> impl Iterator<Item = TextLine> + '_ {
    let mut at = lines.0 as usize;
    let end = (lines.1 as usize).min(text.len());
    std::iter::from_fn(move || {
        let rest = text.get(at..end)?;
        let cr = rest.iter().position(|&b| b == b'\r')?;
        let colon = rest[..cr].iter().position(|&b| b == b':')?;
        let line = TextLine {
            start: u32::try_from(at).ok()?,
            colon: u32::try_from(at + colon).ok()?,
            value: u32::try_from(at + (colon + 2).min(cr)).ok()?,
            end: u32::try_from(at + cr).ok()?,
        };
        at += cr + 2;
        Some(line)
    })
}

/// The value of a header palisade set.
#[derive(Debug, Clone)]
enum SetValue {
    /// As it was given.
    Value(HeaderValue),
    /// Written as its line, `name: value`, into [`PendingHeaders::text`]
    /// at `line`; the value starts at `value` (values made per response,
    /// such as the rate-limit headers: no `HeaderValue` made, shared and
    /// dropped, and the line written out by one copy).
    Text { line: (u32, u32), value: u32 },
}

/// The bit of `name` in a set of names ([`PendingHeaders::set_names`],
/// a block's): one of 64, from its length and its last two bytes with
/// `| 0x20`, which makes a letter's two cases one (names equal in any case
/// get one bit; other bytes it makes one only cost a comparison). The
/// factors put the names palisade sets and the common upstream ones on
/// different bits (a test checks it), where by length alone
/// `x-ratelimit-limit` met `x-ratelimit-reset`, `vary` met `date` and
/// `ratelimit-policy` met `x-xss-protection`, each a call and a comparison
/// on every response of a rate-limited route.
#[inline]
fn name_bit(name: &[u8]) -> u64 {
    1 << name_shift(name)
}

/// The position of [`name_bit`] (0 to 63).
#[inline]
fn name_shift(name: &[u8]) -> u8 {
    let [.., before_last, last] = name else {
        return (name.len() & 63) as u8;
    };
    let mixed = name.len() * 14 + usize::from(last | 0x20) * 50 + usize::from(before_last | 0x20);
    (mixed & 63) as u8
}

/// The position in `headers` of the one named `name` (in any case).
/// `names` holds the [`name_bit`] of every name there: a name whose bit
/// is not in it is not compared at all. Inlined: most names miss on
/// their bit, without a call.
#[inline]
fn position_by_name<V>(names: u64, headers: &[(HeaderName, V)], name: &[u8]) -> Option<usize> {
    if names & name_bit(name) == 0 {
        return None;
    }
    position_by_spelling(headers, name)
}

/// The position in `headers` of the one named `name` (in any case),
/// looked for by comparing (see [`position_by_name`]).
#[inline(never)]
fn position_by_spelling<V>(headers: &[(HeaderName, V)], name: &[u8]) -> Option<usize> {
    headers
        .iter()
        .position(|(set, _)| name.eq_ignore_ascii_case(set.as_str().as_bytes()))
}

impl PendingHeaders {
    /// The upstream's lines kept as bytes, if any; nothing set yet.
    pub fn new(upstream: Option<UpstreamLines>) -> Self {
        Self {
            upstream,
            set: Vec::new(),
            text: Vec::new(),
            blocks: SmallVec::new(),
            block_names: 0,
            set_names: 0,
        }
    }

    /// Whether everything is in the header map already.
    pub fn is_empty(&self) -> bool {
        self.upstream.is_none() && self.set.is_empty() && self.blocks.is_empty()
    }

    /// The `index`th block's headers become headers set one by one, in
    /// its place (their names are in nothing else set: see `blocks`).
    fn expand_block(&mut self, index: usize) {
        if index >= self.blocks.len() {
            return;
        }
        let Placed { block, at } = self.blocks.remove(index);
        let at = at.min(self.set.len());
        let headers = block.headers(&self.text);
        for (name, _) in &headers {
            self.set_names |= name_bit(name.as_str().as_bytes());
        }
        let count = headers.len();
        self.set.splice(at..at, headers);
        // The blocks set after it stood at or past its place.
        for later in &mut self.blocks[index..] {
            later.at += count;
        }
        self.block_names = self.blocks.iter().fold(0, |bits, p| bits | p.block.names());
    }

    /// Every block taken apart, in order.
    fn expand_blocks(&mut self) {
        while !self.blocks.is_empty() {
            self.expand_block(0);
        }
    }

    /// Which block sets `name`, and where in it (then every other line of
    /// that name is hidden).
    fn block_of(&self, name: &[u8]) -> Option<(usize, usize)> {
        if self.block_names & name_bit(name) == 0 {
            return None;
        }
        self.blocks
            .iter()
            .enumerate()
            .find_map(|(index, placed)| Some((index, placed.block.position(&self.text, name)?)))
    }

    /// Whether a block sets `name`.
    fn in_block(&self, name: &[u8]) -> bool {
        self.block_of(name).is_some()
    }

    /// The position of `name` among the headers set.
    fn set_position(&self, name: &HeaderName) -> Option<usize> {
        if self.set_names & name_bit(name.as_str().as_bytes()) == 0 {
            return None;
        }
        self.set.iter().position(|(set, _)| set == name)
    }

    /// The value of a header set.
    fn value_bytes<'a>(&'a self, value: &'a SetValue) -> &'a [u8] {
        match value {
            SetValue::Value(value) => value.as_bytes(),
            SetValue::Text { line, value } => self
                .text
                .get(*value as usize..line.1 as usize)
                .unwrap_or(&[]),
        }
    }

    /// The `name: value` line of a header set as text.
    fn line_bytes(&self, value: &SetValue) -> Option<&[u8]> {
        match value {
            SetValue::Value(_) => None,
            SetValue::Text { line, .. } => self.text.get(line.0 as usize..line.1 as usize),
        }
    }

    /// A header set, as a `HeaderValue` (for a map).
    fn header_value(&self, value: &SetValue) -> Option<HeaderValue> {
        match value {
            SetValue::Value(value) => Some(value.clone()),
            SetValue::Text { .. } => HeaderValue::from_bytes(self.value_bytes(value)).ok(),
        }
    }

    /// Sets `name` to `value` (see [`ResponseHeaders::insert`]). A name
    /// whose bit nothing set or in a block has (most) is added without a
    /// comparison or a call.
    #[inline]
    fn set(&mut self, name: HeaderName, value: SetValue) {
        let bit = name_bit(name.as_str().as_bytes());
        if (self.set_names | self.block_names) & bit == 0 {
            self.set_names |= bit;
            self.set.push((name, value));
            return;
        }
        self.set_named(name, value);
    }

    /// [`set`](Self::set) for a name whose bit something set or in a
    /// block has.
    #[inline(never)]
    fn set_named(&mut self, name: HeaderName, value: SetValue) {
        if let Some((index, _)) = self.block_of(name.as_str().as_bytes()) {
            self.expand_block(index);
        }
        match self.set_position(&name) {
            Some(at) => self.set[at].1 = value,
            None => {
                self.set_names |= name_bit(name.as_str().as_bytes());
                self.set.push((name, value));
            }
        }
    }

    /// The position among the headers set of a name given as bytes.
    fn set_position_of(&self, name: &[u8]) -> Option<usize> {
        let set = &self.set[..self.set.len().min(MAX_SET)];
        position_by_name(self.set_names, set, name)
    }
}

/// A response's headers while palisade edits them: its header map (the
/// whole of palisade's own answers; an upstream's as hyper read it), the
/// upstream's lines when the exchange kept them as bytes, and what
/// palisade sets.
pub struct ResponseHeaders<'a> {
    map: &'a mut HeaderMap,
    pending: &'a mut PendingHeaders,
    /// Headers set go straight into the map (nothing is pending).
    into_map: bool,
}

impl<'a> ResponseHeaders<'a> {
    /// The headers of a response: `map`, and what is `pending` beside it.
    pub fn new(map: &'a mut HeaderMap, pending: &'a mut PendingHeaders) -> Self {
        Self {
            map,
            pending,
            into_map: false,
        }
    }

    /// The headers of a response whose writer needs one map (hyper's
    /// server): what is pending goes into `map` first, and what is set
    /// goes straight into it.
    pub fn in_one_map(map: &'a mut HeaderMap, pending: &'a mut PendingHeaders) -> Self {
        merge_into_map(map, pending);
        Self {
            map,
            pending,
            into_map: true,
        }
    }

    /// Sets `name` to `value`, replacing every line of that name, the
    /// map's and the upstream's included.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        if self.into_map {
            self.map.insert(name, value);
            return;
        }
        self.pending.set(name, SetValue::Value(value));
    }

    /// Sets `name` to the value written by `parts` one after another, as
    /// [`insert`](Self::insert) does, for a value made for this response
    /// alone (the rate-limit headers): it is written as its line at once,
    /// where a `HeaderValue` would be made, checked, shared and dropped. A
    /// value that is not one (a control character) is not set.
    pub fn insert_text(&mut self, name: HeaderName, parts: &[&[u8]]) {
        if self.into_map {
            if let Ok(value) = HeaderValue::from_bytes(&parts.concat()) {
                self.map.insert(name, value);
            }
            return;
        }
        let text = &mut self.pending.text;
        if text.capacity() == 0 {
            text.reserve(TEXT_ROOM);
        }
        let start = text.len();
        text.extend_from_slice(name.as_str().as_bytes());
        text.extend_from_slice(b": ");
        let value = text.len();
        for part in parts {
            text.extend_from_slice(part);
        }
        let valid = text.get(value..).is_some_and(is_value_text);
        let (true, Ok(start), Ok(value), Ok(end)) = (
            valid,
            u32::try_from(start),
            u32::try_from(value),
            u32::try_from(text.len()),
        ) else {
            text.truncate(start);
            return;
        };
        self.pending.set(
            name,
            SetValue::Text {
                line: (start, end),
                value,
            },
        );
    }

    /// Sets the headers of `template` with the numbers `values` in its
    /// holes, in decimal and in order, as [`insert_text`](Self::insert_text)
    /// of each would, as one block of lines written into the response's
    /// text at once (the rate-limit headers: one block to place and a few
    /// copies to write, where each header was a value written piece by
    /// piece, a line to place and a line to write). A number's digits are
    /// header text: only the template's fixed text is checked, once, when
    /// it is made. Where a block cannot be placed (a name already set or in
    /// a block, or the template's own names: see [`LineTemplate::new`]) or
    /// the values do not fill the holes, its headers are set one by one
    /// instead (the same result).
    pub fn insert_template(&mut self, template: &LineTemplate, values: &[u64]) {
        let pending = &mut *self.pending;
        if template.whole
            && !self.into_map
            && (pending.set_names | pending.block_names) & template.names == 0
            && values.len() + 1 == template.pieces.len()
        {
            let text = &mut pending.text;
            if text.capacity() == 0 {
                text.reserve(TEXT_ROOM);
            }
            let start = text.len();
            let mut digits = itoa::Buffer::new();
            for (piece, value) in template.pieces.iter().zip(values) {
                text.extend_from_slice(piece);
                text.extend_from_slice(digits.format(*value).as_bytes());
            }
            if let Some(last) = template.pieces.last() {
                text.extend_from_slice(last);
            }
            if let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(text.len())) {
                pending.block_names |= template.names;
                let at = pending.set.len();
                pending.blocks.push(Placed {
                    block: Placement::Text {
                        lines: (start, end),
                        names: template.names,
                    },
                    at,
                });
                return;
            }
            text.truncate(start);
        }
        // Rare (another edit named one of its headers first): made as text.
        let values: SmallVec<[String; 4]> = values.iter().map(u64::to_string).collect();
        let mut holes = values.iter();
        for (name, segments) in &template.lines {
            let parts: SmallVec<[&[u8]; 4]> = segments
                .iter()
                .map(|segment| match segment {
                    Segment::Text(text) => &**text,
                    Segment::Hole => holes.next().map_or(&[][..], |value| value.as_bytes()),
                })
                .collect();
            self.insert_text(name.clone(), &parts);
        }
    }

    /// Room for `additional` more headers set.
    pub fn reserve(&mut self, additional: usize) {
        if self.into_map {
            self.map.reserve(additional);
        } else {
            self.pending.set.reserve(additional);
        }
    }

    /// Sets every header of `block`, as [`insert`](Self::insert) would
    /// one by one, but kept as the one block while nothing else sets or
    /// removes one of its names.
    pub fn insert_block(&mut self, block: &Arc<HeaderBlock>) {
        let pending = &*self.pending;
        let apart = self.into_map
            || ((pending.set_names | pending.block_names) & block.names != 0
                && block.headers.iter().any(|(name, _)| {
                    pending.set_position(name).is_some()
                        || pending.in_block(name.as_str().as_bytes())
                }));
        if apart {
            self.reserve(block.headers.len());
            for (name, value) in &block.headers {
                self.insert(name.clone(), value.clone());
            }
        } else {
            self.pending.block_names |= block.names;
            let at = self.pending.set.len();
            self.pending.blocks.push(Placed {
                block: Placement::Shared(block.clone()),
                at,
            });
        }
    }

    /// Removes every line named `name`, wherever it is.
    pub fn remove(&mut self, name: &HeaderName) {
        if let Some((index, _)) = self.pending.block_of(name.as_str().as_bytes()) {
            self.pending.expand_block(index);
        }
        if let Some(at) = self.pending.set_position(name) {
            self.pending.set.remove(at);
            for placed in &mut self.pending.blocks {
                if at < placed.at {
                    placed.at -= 1;
                }
            }
        }
        // Comparing the few names present is much cheaper than hashing
        // `name` for a lookup that usually finds nothing.
        if self.map.keys().any(|present| present == name) {
            self.map.remove(name);
        }
        if let Some(upstream) = self.pending.upstream.as_mut() {
            upstream.remove(name);
        }
    }

    /// Removes every line named as one of `set`, wherever it is, as
    /// [`remove`](Self::remove) of each would. An upstream's answer as the
    /// exchange kept it (nothing set, no block, an empty map) is gone over
    /// once, comparing only the lines whose bit is among the set's.
    pub fn remove_all(&mut self, set: &NameSet) {
        if set.names.is_empty() {
            return;
        }
        if (self.pending.set_names | self.pending.block_names) & set.bits != 0
            || !self.map.is_empty()
        {
            for name in &set.names {
                self.remove(name);
            }
            return;
        }
        if let Some(upstream) = self.pending.upstream.as_mut() {
            upstream.remove_all(set);
        }
    }

    /// The values of `name`: palisade's, when it set it; else the map's
    /// and the upstream's.
    pub fn get_all<'b>(&'b self, name: &'b HeaderName) -> Values<'b> {
        if let Some(at) = self.pending.set_position(name) {
            return Values::Set(Some(self.pending.value_bytes(&self.pending.set[at].1)));
        }
        if let Some((index, at)) = self.pending.block_of(name.as_str().as_bytes()) {
            return Values::Set(Some(
                self.pending.blocks[index]
                    .block
                    .value(&self.pending.text, at),
            ));
        }
        Values::Found(
            self.map.get_all(name).iter(),
            self.pending.upstream.as_ref().map(|u| u.values(name)),
        )
    }

    /// Whether any line is named `name`, palisade's, a block's, the map's
    /// or the upstream's: what [`get_all`](Self::get_all) would find,
    /// asked without making its iterator (`Vary`, before every CORS
    /// answer). The name's bit rules out most places without a comparison.
    pub fn contains_key(&self, name: &HeaderName) -> bool {
        let pending = &*self.pending;
        pending.set_position(name).is_some()
            || pending.in_block(name.as_str().as_bytes())
            || self.map.contains_key(name)
            || pending
                .upstream
                .as_ref()
                .is_some_and(|lines| lines.values(name).next().is_some())
    }

    /// Ends the editing: past [`MAX_SET`] headers set, everything goes
    /// into the map.
    pub fn finish(self) {
        if self.pending.set.len() > MAX_SET {
            merge_into_map(self.map, self.pending);
        }
    }
}

/// The values of one name ([`ResponseHeaders::get_all`]).
pub enum Values<'a> {
    /// The one palisade set.
    Set(Option<&'a [u8]>),
    /// The map's, then the upstream's.
    Found(
        http::header::ValueIter<'a, HeaderValue>,
        Option<UpstreamValues<'a>>,
    ),
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Set(value) => value.take(),
            Values::Found(map, upstream) => map
                .next()
                .map(HeaderValue::as_bytes)
                .or_else(|| upstream.as_mut().and_then(Iterator::next)),
        }
    }
}

/// The values of the upstream's lines of one name.
pub struct UpstreamValues<'a> {
    lines: &'a UpstreamLines,
    at: std::slice::Iter<'a, LineSpan>,
    name: &'a [u8],
    /// The name's [`name_shift`]: a line on another bit is passed over
    /// without comparing its name.
    shift: u8,
}

impl<'a> Iterator for UpstreamValues<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let lines = self.lines;
        self.at
            .by_ref()
            .find(|line| line.bit == self.shift && lines.bytes(line.name) == self.name)
            .map(|line| lines.bytes(line.value))
    }
}

/// Edits a header map alone (a response palisade makes whole, or a test's)
/// as a response's headers are edited: what `edit` sets and removes ends
/// up in `map`.
pub fn edit_map(map: &mut HeaderMap, edit: impl FnOnce(&mut ResponseHeaders<'_>)) {
    let mut pending = PendingHeaders::default();
    edit(&mut ResponseHeaders::in_one_map(map, &mut pending));
}

/// One line of the response being written.
enum Entry<'a> {
    /// A header of the map.
    Named(&'a HeaderName, &'a HeaderValue),
    /// A header palisade set.
    Set(&'a HeaderName, &'a SetValue),
    /// An upstream line.
    Upstream(&'a LineSpan),
    /// A block, whole.
    Block(&'a Placement),
}

/// What [`each`] hands the writer: one header line, or the lines of a
/// [`HeaderBlock`] together.
#[derive(Debug, Clone, Copy)]
pub enum Chunk<'a> {
    /// One line, for the writer to look at.
    Line(Line<'a>),
    /// Lines as written, `name: value\r\n` each, of names the writer has
    /// no rule for (a block's: see [`HeaderBlock::new`]): copied as they
    /// are, the security headers are one copy per response instead of
    /// a call and a copy per header.
    Lines(&'a [u8]),
}

/// Calls `chunk` with the header lines of the response, in the order they
/// are written (see the module's doc), until it returns `Err`.
pub fn each<E>(
    map: &HeaderMap,
    pending: &PendingHeaders,
    mut chunk: impl FnMut(Chunk<'_>) -> Result<(), E>,
) -> Result<(), E> {
    each_entry(map, pending, |entry| match entry {
        Entry::Named(name, value) => chunk(Chunk::Line(Line {
            name: name.as_str().as_bytes(),
            value: value.as_bytes(),
            known: Known::of_name(name),
            whole: None,
        })),
        Entry::Set(name, value) => chunk(Chunk::Line(Line {
            name: name.as_str().as_bytes(),
            value: pending.value_bytes(value),
            known: Known::of_name(name),
            whole: pending.line_bytes(value),
        })),
        Entry::Upstream(span) => match &pending.upstream {
            Some(lines) => chunk(Chunk::Line(Line {
                name: lines.bytes(span.name),
                value: lines.bytes(span.value),
                known: span.known,
                whole: span.whole.then(|| lines.bytes((span.name.0, span.value.1))),
            })),
            None => Ok(()),
        },
        Entry::Block(block) => chunk(Chunk::Lines(block.lines(&pending.text))),
    })
}

/// The lines in the order they are written: the map's (in its order),
/// then the upstream's (in theirs), a name palisade set taking the place
/// of the first line of that name and hiding the others, then the other
/// headers palisade set, in the order first set.
fn each_entry<'a, E>(
    map: &'a HeaderMap,
    pending: &'a PendingHeaders,
    mut entry: impl FnMut(Entry<'a>) -> Result<(), E>,
) -> Result<(), E> {
    // Bit `j`: the `j`th header set was written in place of a line.
    let mut written = 0u64;
    let mut in_place = |at: usize, entry: &mut dyn FnMut(Entry<'a>) -> Result<(), E>| {
        if at >= MAX_SET || written & (1 << at) != 0 {
            return Ok(());
        }
        written |= 1 << at;
        let (name, value) = &pending.set[at];
        entry(Entry::Set(name, value))
    };
    for (name, value) in map {
        match pending.set_position(name) {
            None if pending.in_block(name.as_str().as_bytes()) => {}
            None => entry(Entry::Named(name, value))?,
            Some(at) => in_place(at, &mut entry)?,
        }
    }
    if let Some(upstream) = &pending.upstream {
        let set_or_blocked = pending.set_names | pending.block_names;
        for span in &upstream.lines {
            // Most lines' names nobody set: written without a lookup.
            if set_or_blocked & (1 << span.bit) == 0 {
                entry(Entry::Upstream(span))?;
                continue;
            }
            let name = upstream.bytes(span.name);
            match pending.set_position_of(name) {
                None if pending.in_block(name) => {}
                None => entry(Entry::Upstream(span))?,
                Some(at) => in_place(at, &mut entry)?,
            }
        }
    }
    let mut blocks = pending.blocks.iter().peekable();
    for (at, (name, value)) in pending.set.iter().enumerate() {
        while let Some(placed) = blocks.next_if(|placed| placed.at <= at) {
            entry(Entry::Block(&placed.block))?;
        }
        if at >= MAX_SET || written & (1 << at) == 0 {
            entry(Entry::Set(name, value))?;
        }
    }
    for placed in blocks {
        entry(Entry::Block(&placed.block))?;
    }
    Ok(())
}

/// Puts every header into the map, in the order [`each`] writes them:
/// for a writer that needs one map (hyper's server, on HTTP/2 or on a
/// connection hyper serves).
pub fn merge_into_map(map: &mut HeaderMap, pending: &mut PendingHeaders) {
    let mut pending = std::mem::take(pending);
    pending.expand_blocks();
    if pending.upstream.is_none() {
        // What `insert` on the map itself would have made.
        for (name, value) in &pending.set {
            if let Some(value) = pending.header_value(value) {
                map.insert(name.clone(), value);
            }
        }
        return;
    }
    let lines = pending.upstream.as_ref().map_or(0, |u| u.lines.len());
    let mut merged = HeaderMap::with_capacity(map.len() + lines + pending.set.len());
    let _ = each_entry(map, &pending, |entry| {
        match entry {
            Entry::Named(name, value) => {
                merged.append(name.clone(), value.clone());
            }
            Entry::Set(name, value) => {
                if let Some(value) = pending.header_value(value) {
                    merged.append(name.clone(), value);
                }
            }
            Entry::Upstream(span) => {
                // The exchange kept only lines the http types take.
                if let Some(upstream) = &pending.upstream {
                    let name = HeaderName::from_bytes(upstream.bytes(span.name));
                    if let (Ok(name), Some(value)) = (name, upstream.value_at(span)) {
                        merged.append(name, value);
                    }
                }
            }
            // Expanded above: never reached.
            Entry::Block(block) => {
                for (name, value) in block.headers(&pending.text) {
                    if let Some(value) = pending.header_value(&value) {
                        merged.append(name, value);
                    }
                }
            }
        }
        Ok::<(), ()>(())
    });
    *map = merged;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn upstream(lines: &[(&str, &str)]) -> PendingHeaders {
        PendingHeaders::new(Some(UpstreamLines::from_pairs(lines)))
    }

    /// The lines as written, `name: value` each (for the tests of the
    /// policies that edit them, too).
    pub(crate) fn written(map: &HeaderMap, pending: &PendingHeaders) -> Vec<String> {
        let mut out = Vec::new();
        each(map, pending, |chunk| {
            match chunk {
                Chunk::Line(line) => out.push(format!(
                    "{}: {}",
                    String::from_utf8_lossy(line.name),
                    String::from_utf8_lossy(line.value)
                )),
                Chunk::Lines(lines) => out.extend(
                    String::from_utf8_lossy(lines)
                        .split_terminator("\r\n")
                        .map(str::to_string),
                ),
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        out
    }

    fn name(text: &'static str) -> HeaderName {
        HeaderName::from_static(text)
    }

    #[test]
    fn set_headers_replace_the_upstreams_in_place_and_removal_reaches_both() {
        let mut map = HeaderMap::new();
        let mut pending = upstream(&[
            ("Server", "nginx"),
            ("X-Frame-Options", "ALLOWALL"),
            ("Set-Cookie", "a=1"),
            ("x-frame-options", "again"),
            ("Content-Type", "text/plain"),
            ("Set-Cookie", "b=2"),
        ]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.remove(&name("server"));
        headers.insert(
            name("x-frame-options"),
            HeaderValue::from_static("SAMEORIGIN"),
        );
        headers.insert(name("x-request-id"), HeaderValue::from_static("id-1"));
        headers.insert(name("x-frame-options"), HeaderValue::from_static("DENY"));
        assert_eq!(
            headers.get_all(&name("set-cookie")).collect::<Vec<_>>(),
            [b"a=1".as_slice(), b"b=2"]
        );
        assert_eq!(
            headers
                .get_all(&name("x-frame-options"))
                .collect::<Vec<_>>(),
            [b"DENY".as_slice()]
        );
        assert!(!headers.contains_key(&name("server")));
        headers.finish();
        let expected = [
            "x-frame-options: DENY",
            "set-cookie: a=1",
            "content-type: text/plain",
            "set-cookie: b=2",
            "x-request-id: id-1",
        ];
        assert_eq!(written(&map, &pending), expected);
        // The map made for hyper holds the same lines (a map keeps the
        // lines of one name together).
        merge_into_map(&mut map, &mut pending);
        assert!(pending.is_empty());
        assert_eq!(
            written(&map, &pending),
            [
                "x-frame-options: DENY",
                "set-cookie: a=1",
                "set-cookie: b=2",
                "content-type: text/plain",
                "x-request-id: id-1",
            ]
        );
    }

    fn block() -> Arc<HeaderBlock> {
        HeaderBlock::new(&[
            (name("x-frame-options"), HeaderValue::from_static("DENY")),
            (
                name("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
        ])
        .expect("a block")
    }

    #[test]
    fn a_block_hides_every_line_of_its_names_and_is_written_after_the_others() {
        let mut map = HeaderMap::new();
        map.insert("referrer-policy", HeaderValue::from_static("from-map"));
        let mut pending = upstream(&[
            ("X-Frame-Options", "ALLOWALL"),
            ("Content-Type", "text/plain"),
            ("REFERRER-POLICY", "unsafe-url"),
        ]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.insert_block(&block());
        headers.insert(name("x-request-id"), HeaderValue::from_static("id-1"));
        assert_eq!(
            headers
                .get_all(&name("referrer-policy"))
                .collect::<Vec<_>>(),
            [b"no-referrer".as_slice()]
        );
        headers.finish();
        // In the order set: the block, then the request ID.
        let expected = [
            "content-type: text/plain",
            "x-frame-options: DENY",
            "referrer-policy: no-referrer",
            "x-request-id: id-1",
        ];
        assert_eq!(written(&map, &pending), expected);
        // The writer copies the block's lines whole, in one chunk.
        let mut chunks = Vec::new();
        each(&map, &pending, |chunk| {
            chunks.push(match chunk {
                Chunk::Line(line) => line.whole.map(<[u8]>::to_vec),
                Chunk::Lines(lines) => Some(lines.to_vec()),
            });
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(
            chunks[1].as_deref(),
            Some(b"x-frame-options: DENY\r\nreferrer-policy: no-referrer\r\n".as_slice())
        );
        // hyper's writers get the same headers in one map.
        merge_into_map(&mut map, &mut pending);
        assert!(pending.is_empty());
        assert_eq!(map.get_all("referrer-policy").iter().count(), 1);
        assert_eq!(map["referrer-policy"], "no-referrer");
        assert_eq!(map["x-frame-options"], "DENY");
        assert_eq!(map["content-type"], "text/plain");
    }

    #[test]
    fn setting_or_removing_a_name_of_the_block_takes_it_apart() {
        let mut map = HeaderMap::new();
        let mut pending = upstream(&[("x-frame-options", "ALLOWALL")]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.insert_block(&block());
        headers.insert(
            name("x-frame-options"),
            HeaderValue::from_static("SAMEORIGIN"),
        );
        headers.remove(&name("referrer-policy"));
        headers.finish();
        assert_eq!(written(&map, &pending), ["x-frame-options: SAMEORIGIN"]);
        // A block over a name already set is set one header at a time: the
        // later value wins, as `insert` would have it.
        let mut map = HeaderMap::new();
        let mut pending = upstream(&[]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.insert(
            name("referrer-policy"),
            HeaderValue::from_static("same-origin"),
        );
        headers.insert_block(&block());
        headers.finish();
        assert_eq!(
            written(&map, &pending),
            ["referrer-policy: no-referrer", "x-frame-options: DENY"]
        );
    }

    #[test]
    fn a_block_keeps_its_place_among_the_headers_set_when_taken_apart() {
        let mut map = HeaderMap::new();
        let mut pending = upstream(&[]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.insert(name("a"), HeaderValue::from_static("1"));
        headers.insert(name("b"), HeaderValue::from_static("2"));
        headers.insert_block(&block());
        headers.insert(name("c"), HeaderValue::from_static("3"));
        headers.remove(&name("a"));
        let kept = [
            "b: 2",
            "x-frame-options: DENY",
            "referrer-policy: no-referrer",
            "c: 3",
        ];
        assert_eq!(written(headers.map, headers.pending), kept);
        headers.remove(&name("referrer-policy"));
        headers.finish();
        assert_eq!(
            written(&map, &pending),
            ["b: 2", "x-frame-options: DENY", "c: 3"]
        );
    }

    #[test]
    fn a_block_refuses_names_the_writer_has_rules_for_and_repeats() {
        let framing = [(name("content-length"), HeaderValue::from_static("1"))];
        assert!(HeaderBlock::new(&framing).is_none());
        let twice = [
            (name("a"), HeaderValue::from_static("1")),
            (name("a"), HeaderValue::from_static("2")),
        ];
        assert!(HeaderBlock::new(&twice).is_none());
        assert!(HeaderBlock::new(&[]).is_none());
    }

    #[test]
    fn over_a_map_set_headers_replace_in_place_as_insert_would() {
        let mut map = HeaderMap::new();
        map.insert("a", HeaderValue::from_static("1"));
        map.append("a", HeaderValue::from_static("2"));
        map.insert("server", HeaderValue::from_static("up"));
        map.insert("b", HeaderValue::from_static("3"));
        let mut pending = PendingHeaders::default();
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.insert(name("a"), HeaderValue::from_static("set"));
        headers.insert(name("c"), HeaderValue::from_static("4"));
        headers.remove(&name("server"));
        headers.finish();
        assert_eq!(written(&map, &pending), ["a: set", "b: 3", "c: 4"]);
        let mut inserted = map.clone();
        inserted.insert("a", HeaderValue::from_static("set"));
        inserted.insert("c", HeaderValue::from_static("4"));
        merge_into_map(&mut map, &mut pending);
        assert_eq!(map, inserted);
        assert_eq!(
            written(&map, &PendingHeaders::default()),
            ["a: set", "b: 3", "c: 4"]
        );
    }

    /// Editing in one map (hyper's writer) and beside it (palisade's)
    /// make the same headers.
    #[test]
    fn in_one_map_or_beside_it_the_headers_are_the_same() {
        let lines = [
            ("Server", "up"),
            ("Vary", "Accept"),
            ("X-Frame-Options", "ALLOWALL"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ];
        let edit = |headers: &mut ResponseHeaders<'_>| {
            headers.remove(&name("server"));
            headers.insert(name("x-frame-options"), HeaderValue::from_static("DENY"));
            headers.insert(name("x-request-id"), HeaderValue::from_static("id"));
            let vary: Vec<u8> = headers
                .get_all(&http::header::VARY)
                .flat_map(|v| v.to_vec())
                .collect();
            assert_eq!(vary, b"Accept");
            headers.insert(
                http::header::VARY,
                HeaderValue::from_static("Accept, Origin"),
            );
        };
        let mut beside = HeaderMap::new();
        let mut pending = upstream(&lines);
        let mut headers = ResponseHeaders::new(&mut beside, &mut pending);
        edit(&mut headers);
        headers.finish();
        merge_into_map(&mut beside, &mut pending);
        let mut one = HeaderMap::new();
        let mut pending = upstream(&lines);
        let mut headers = ResponseHeaders::in_one_map(&mut one, &mut pending);
        edit(&mut headers);
        headers.finish();
        assert!(pending.is_empty());
        assert_eq!(one, beside);
    }

    #[test]
    fn names_of_one_length_and_long_names_are_told_apart() {
        let long = "x-".to_string() + &"l".repeat(80);
        let longer = "x-".to_string() + &"l".repeat(90);
        let mut map = HeaderMap::new();
        let mut pending = upstream(&[("X-B", "up"), (&long, "up"), (&longer, "up")]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.insert(name("x-a"), HeaderValue::from_static("set"));
        headers.insert(
            HeaderName::try_from(long.as_str()).unwrap(),
            HeaderValue::from_static("set"),
        );
        headers.finish();
        assert_eq!(
            written(&map, &pending),
            [
                "x-b: up".to_string(),
                format!("{long}: set"),
                format!("{longer}: up"),
                "x-a: set".to_string(),
            ]
        );
    }

    #[test]
    fn a_name_has_one_bit_in_any_case_and_palisades_names_have_their_own() {
        for n in ["X-Frame-Options", "Vary", "RateLimit", "A", ""] {
            assert_eq!(
                name_bit(n.as_bytes()),
                name_bit(n.to_ascii_lowercase().as_bytes())
            );
        }
        // What palisade sets (request ID, rate-limit, CORS, security
        // headers) and what upstreams commonly send: no two share a bit, so
        // none of them costs a comparison on a response that has both.
        let palisade = [
            "x-request-id",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "ratelimit-policy",
            "ratelimit",
            "vary",
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-expose-headers",
            "x-content-type-options",
            "x-frame-options",
            "x-xss-protection",
            "referrer-policy",
            "content-security-policy",
            "strict-transport-security",
            "permissions-policy",
            "cross-origin-opener-policy",
        ];
        let upstream = [
            "server",
            "date",
            "content-type",
            "content-length",
            "x-powered-by",
            "connection",
            "cache-control",
            "etag",
            "last-modified",
            "set-cookie",
            "location",
            "content-encoding",
            "expires",
            "accept-ranges",
            "transfer-encoding",
            "retry-after",
            "www-authenticate",
            "allow",
        ];
        for (i, ours) in palisade.iter().enumerate() {
            for other in palisade[i + 1..].iter().chain(&upstream) {
                assert_ne!(
                    name_bit(ours.as_bytes()),
                    name_bit(other.as_bytes()),
                    "{ours} {other}"
                );
            }
        }
    }

    #[test]
    fn names_on_one_bit_are_told_apart_by_comparing() {
        let mut map = HeaderMap::new();
        // A name of another spelling on the bit of `x-a`.
        let other = (0..10_000)
            .map(|i| format!("x-{i}"))
            .find(|n| name_bit(n.as_bytes()) == name_bit(b"x-a"))
            .expect("a name on the same bit");
        let mut pending = upstream(&[("X-A", "up"), (&other, "up")]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.insert(name("x-a"), HeaderValue::from_static("set"));
        headers.finish();
        assert_eq!(
            written(&map, &pending),
            ["x-a: set".to_string(), format!("{other}: up")]
        );
    }

    #[test]
    fn removing_a_set_of_names_is_removing_each() {
        let on_bit_of_server = (0..10_000)
            .map(|i| format!("x-{i}"))
            .find(|n| name_bit(n.as_bytes()) == name_bit(b"server"))
            .expect("a name on the bit of server");
        let lines = [
            ("Server", "nginx"),
            ("Content-Type", "text/plain"),
            ("X-Powered-By", "php"),
            (on_bit_of_server.as_str(), "kept"),
            ("SERVER", "again"),
        ];
        let set = NameSet::new(vec![name("server"), name("x-powered-by")]);
        // Nothing set (one pass over the lines), then something set first,
        // then a map with lines (each name removed in turn): the same.
        for before in [None, Some("x-powered-by"), Some("x-request-id")] {
            for in_map in [false, true] {
                let edited = |all: bool| {
                    let mut map = HeaderMap::new();
                    if in_map {
                        map.insert("server", HeaderValue::from_static("map"));
                    }
                    let mut pending = upstream(&lines);
                    let mut headers = ResponseHeaders::new(&mut map, &mut pending);
                    if let Some(set_first) = before {
                        headers.insert(name(set_first), HeaderValue::from_static("set"));
                    }
                    if all {
                        headers.remove_all(&set);
                    } else {
                        for each in set.names() {
                            headers.remove(each);
                        }
                    }
                    headers.finish();
                    written(&map, &pending)
                };
                assert_eq!(edited(true), edited(false), "{before:?} {in_map}");
            }
        }
        let mut map = HeaderMap::new();
        let mut pending = upstream(&lines);
        ResponseHeaders::new(&mut map, &mut pending).remove_all(&set);
        assert_eq!(
            written(&map, &pending),
            [
                "content-type: text/plain".to_string(),
                format!("{on_bit_of_server}: kept")
            ]
        );
    }

    /// An edit of [`several_blocks_are_what_inserting_their_headers_makes`].
    #[derive(Clone, Copy, Debug)]
    enum Edit {
        Block(usize),
        /// The block's headers as lines written for the response
        /// ([`ResponseHeaders::insert_template`]), each value fixed text.
        Lines(usize),
        Insert(&'static str),
        Remove(&'static str),
    }

    #[test]
    fn several_blocks_are_what_inserting_their_headers_makes() {
        // Each script edits one response with the blocks, and another with
        // their headers inserted one by one: the lines written, what reads
        // see and the merged map must be the same.
        let blocks = [
            block(),
            HeaderBlock::new(&[
                (name("x-ratelimit-limit"), HeaderValue::from_static("10")),
                (
                    name("ratelimit-policy"),
                    HeaderValue::from_static("\"a\";q=10;w=1"),
                ),
            ])
            .expect("a block"),
            HeaderBlock::new(&[(
                name("access-control-allow-origin"),
                HeaderValue::from_static("https://a.example"),
            )])
            .expect("a block"),
        ];
        // Each block is written in its place among the headers set.
        let mut map = HeaderMap::new();
        let mut pending = upstream(&[("Content-Type", "text/plain")]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.insert_block(&blocks[0]);
        headers.insert(name("x-a"), HeaderValue::from_static("set"));
        headers.insert_block(&blocks[1]);
        headers.insert_block(&blocks[2]);
        headers.insert(name("x-b"), HeaderValue::from_static("set"));
        headers.finish();
        assert_eq!(
            written(&map, &pending),
            [
                "content-type: text/plain",
                "x-frame-options: DENY",
                "referrer-policy: no-referrer",
                "x-a: set",
                "x-ratelimit-limit: 10",
                "ratelimit-policy: \"a\";q=10;w=1",
                "access-control-allow-origin: https://a.example",
                "x-b: set",
            ]
        );
        use Edit::*;
        let scripts: &[&[Edit]] = &[
            &[Block(0), Insert("x-request-id"), Block(1), Block(2)],
            &[Block(0), Block(1), Insert("x-a"), Block(2), Insert("x-b")],
            &[Block(0), Block(1), Block(2), Insert("referrer-policy")],
            &[
                Block(0),
                Insert("x-a"),
                Block(1),
                Insert("x-b"),
                Block(2),
                Remove("x-frame-options"),
            ],
            &[
                Block(0),
                Block(1),
                Insert("ratelimit-policy"),
                Remove("x-a"),
                Block(2),
            ],
            &[
                Insert("x-a"),
                Block(1),
                Block(0),
                Remove("x-a"),
                Insert("x-b"),
                Block(2),
            ],
            &[
                Block(1),
                Block(2),
                Remove("access-control-allow-origin"),
                Insert("x-ratelimit-limit"),
            ],
            &[
                Insert("x-frame-options"),
                Block(0),
                Block(1),
                Remove("server"),
            ],
            &[Block(0), Block(0), Block(1), Insert("x-c")],
            // Blocks of lines written for the response, beside shared ones.
            &[Block(0), Insert("x-a"), Lines(1), Block(2), Insert("x-b")],
            &[Lines(1), Lines(2), Remove("access-control-allow-origin")],
            &[Lines(0), Insert("referrer-policy"), Lines(1)],
            &[
                Lines(1),
                Insert("ratelimit-policy"),
                Remove("x-ratelimit-limit"),
            ],
            &[Insert("x-ratelimit-limit"), Lines(1), Block(0)],
            &[Block(1), Lines(1), Lines(0), Remove("server")],
            &[Lines(1), Lines(1), Insert("x-c"), Lines(2)],
            &[Lines(0), Block(2), Lines(1), Remove("x-frame-options")],
            &[
                Insert("x-a"),
                Lines(2),
                Remove("x-a"),
                Lines(1),
                Insert("x-b"),
            ],
        ];
        for script in scripts {
            let edited = |as_blocks: bool| {
                let mut map = HeaderMap::new();
                let mut pending = upstream(&[
                    ("Server", "nginx"),
                    ("X-Frame-Options", "ALLOWALL"),
                    ("X-RateLimit-Limit", "5"),
                    ("Content-Type", "text/plain"),
                ]);
                let mut headers = ResponseHeaders::new(&mut map, &mut pending);
                for edit in *script {
                    match *edit {
                        Block(i) if as_blocks => headers.insert_block(&blocks[i]),
                        Block(i) => {
                            for (n, v) in &blocks[i].headers {
                                headers.insert(n.clone(), v.clone());
                            }
                        }
                        Lines(i) if as_blocks => {
                            let template = LineTemplate::new(
                                blocks[i]
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (n.clone(), vec![Segment::Text(v.as_bytes().into())])
                                    })
                                    .collect(),
                            );
                            headers.insert_template(&template, &[]);
                        }
                        Lines(i) => {
                            for (n, v) in &blocks[i].headers {
                                headers.insert_text(n.clone(), &[v.as_bytes()]);
                            }
                        }
                        Insert(n) => headers.insert(name(n), HeaderValue::from_static("set")),
                        Remove(n) => headers.remove(&name(n)),
                    }
                }
                // Asking whether a name is there says what reading it finds.
                for n in [
                    "x-frame-options",
                    "ratelimit-policy",
                    "x-a",
                    "x-ratelimit-limit",
                ] {
                    let found = headers.get_all(&name(n)).next().is_some();
                    assert_eq!(headers.contains_key(&name(n)), found, "{n} {script:?}");
                }
                let read: Vec<Vec<u8>> = ["x-frame-options", "ratelimit-policy", "x-a"]
                    .iter()
                    .flat_map(|n| {
                        headers
                            .get_all(&name(n))
                            .map(<[u8]>::to_vec)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                headers.finish();
                // A block is written after the others instead of in place
                // of a line it hides: the same lines, maybe in another order.
                let mut lines = written(&map, &pending);
                lines.sort();
                merge_into_map(&mut map, &mut pending);
                let merged: Vec<String> = map
                    .iter()
                    .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
                    .collect();
                (lines, read, merged)
            };
            assert_eq!(edited(true), edited(false), "{script:?}");
        }
    }

    fn text(text: &str) -> Segment {
        Segment::Text(text.as_bytes().into())
    }

    #[test]
    fn a_template_is_one_block_written_whole_or_else_set_one_by_one() {
        let (limit, reset) = (name("x-ratelimit-limit"), name("x-ratelimit-reset"));
        let template = LineTemplate::new(vec![
            (limit.clone(), vec![text("1"), Segment::Hole]),
            (reset.clone(), vec![Segment::Hole, text("s"), Segment::Hole]),
        ]);
        let mut map = HeaderMap::new();
        let mut pending = upstream(&[("X-RateLimit-Reset", "9"), ("Content-Type", "text/plain")]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        headers.insert(name("x-request-id"), HeaderValue::from_static("id-1"));
        headers.insert_template(&template, &[0, 60, 7]);
        assert_eq!(
            headers.get_all(&reset).collect::<Vec<_>>(),
            [b"60s7".as_slice()],
            "the block hides the upstream's line of its name"
        );
        headers.finish();
        let mut chunks = Vec::new();
        each(&map, &pending, |chunk| {
            chunks.push(match chunk {
                Chunk::Line(line) => String::from_utf8_lossy(line.name).into_owned(),
                Chunk::Lines(lines) => String::from_utf8_lossy(lines).into_owned(),
            });
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(
            chunks,
            [
                "content-type",
                "x-request-id",
                "x-ratelimit-limit: 10\r\nx-ratelimit-reset: 60s7\r\n"
            ]
        );
        // What cannot be one block is set one by one, as `insert_text`
        // would: fixed text that is not header text is not set at all; a
        // name repeated, or one the writer has rules for, is set in turn;
        // missing values are empty, values past the holes unused.
        type Case = (Vec<(HeaderName, Vec<Segment>)>, &'static [u64]);
        let cases: [Case; 6] = [
            (
                vec![
                    (limit.clone(), vec![Segment::Hole]),
                    (reset.clone(), vec![Segment::Hole]),
                ],
                &[1, 6, 0],
            ),
            (
                vec![
                    (limit.clone(), vec![text("1")]),
                    (reset.clone(), vec![text("6\n")]),
                ],
                &[],
            ),
            (
                vec![
                    (limit.clone(), vec![Segment::Hole]),
                    (limit.clone(), vec![Segment::Hole]),
                ],
                &[1, 2],
            ),
            (
                vec![
                    (limit.clone(), vec![text("1")]),
                    (http::header::DATE, vec![text("today")]),
                ],
                &[],
            ),
            (
                vec![
                    (limit.clone(), vec![Segment::Hole]),
                    (reset.clone(), vec![Segment::Hole]),
                ],
                &[1],
            ),
            (vec![], &[]),
        ];
        for (lines, values) in cases {
            let template = LineTemplate::new(lines.clone());
            let one_by_one = |as_template: bool| {
                let mut map = HeaderMap::new();
                let mut pending = upstream(&[("X-RateLimit-Reset", "9"), ("Date", "then")]);
                let mut headers = ResponseHeaders::new(&mut map, &mut pending);
                if as_template {
                    headers.insert_template(&template, values);
                } else {
                    let mut holes = values.iter();
                    for (name, segments) in &lines {
                        let value: Vec<u8> = segments
                            .iter()
                            .flat_map(|segment| match segment {
                                Segment::Text(text) => text.to_vec(),
                                Segment::Hole => {
                                    holes.next().map_or(Vec::new(), |v| v.to_string().into())
                                }
                            })
                            .collect();
                        headers.insert_text(name.clone(), &[&value]);
                    }
                }
                headers.finish();
                written(&map, &pending)
            };
            assert_eq!(one_by_one(true), one_by_one(false), "{lines:?} {values:?}");
        }
    }

    #[test]
    fn many_set_names_are_merged_into_the_map() {
        let mut map = HeaderMap::new();
        let mut pending = upstream(&[("X-Up", "u")]);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        for i in 0..=MAX_SET {
            headers.insert(
                HeaderName::try_from(format!("x-own-{i}")).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        headers.finish();
        assert!(pending.is_empty());
        assert_eq!(map.len(), MAX_SET + 2);
        assert_eq!(map["x-up"], "u");
    }

    #[test]
    fn removing_names_keeps_every_other_line_in_order() {
        let set = NameSet::new(vec![name("server"), name("x-powered-by")]);
        let pairs = [
            ("Server", "a"),
            ("X-A", "1"),
            ("server", "b"),
            ("X-B", "2"),
            ("X-Powered-By", "c"),
            ("X-C", "3"),
            ("SERVER", "d"),
        ];
        // Every cut of the lines, so the first named line is at every place.
        for from in 0..pairs.len() {
            let mut lines = UpstreamLines::from_pairs(&pairs[from..]);
            lines.remove_all(&set);
            let expected: Vec<String> = pairs[from..]
                .iter()
                .filter(|(n, _)| n.starts_with("X-") && *n != "X-Powered-By")
                .map(|(n, v)| format!("{}: {v}", n.to_ascii_lowercase()))
                .collect();
            let kept: Vec<String> = lines
                .iter()
                .map(|(n, v)| {
                    format!(
                        "{}: {}",
                        str::from_utf8(n).unwrap(),
                        str::from_utf8(v).unwrap()
                    )
                })
                .collect();
            assert_eq!(kept, expected, "from {from}");
        }
    }

    #[test]
    fn value_text_is_what_a_header_value_takes() {
        // Every byte at every place of values of several lengths.
        for len in [1usize, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(
                        is_value_text(&bytes),
                        HeaderValue::from_bytes(&bytes).is_ok(),
                        "byte {byte:#04x} at {at} of {len}"
                    );
                }
            }
        }
        // Bad bytes beside good ones above 0x7f.
        assert!(!is_value_text(b"\x00\x01\x7f\x80\xff\x20\x1f\x21"));
        assert!(is_value_text(b"\x80\xff\x20\t\x7e\x21\xa0\x81"));
        assert!(is_value_text(b""));
    }

    #[test]
    fn headers_set_as_text_read_and_replace_as_inserted_ones_do() {
        let lines = [
            ("X-RateLimit-Limit", "from-upstream"),
            ("Content-Type", "text/plain"),
            ("ratelimit", "upstream's"),
        ];
        let edit = |headers: &mut ResponseHeaders<'_>| {
            headers.insert_text(name("x-ratelimit-limit"), &[b"10"]);
            headers.insert_text(name("x-text"), &[b"\"a\";r=", b"5", b";t=1"]);
            headers.insert_text(name("ratelimit"), &[b"first"]);
            headers.insert_text(name("ratelimit"), &[b"second"]);
            // A control character: not set, and nothing else changes.
            headers.insert_text(name("x-bad"), &[b"a\r\nx-injected: 1"]);
            headers.insert(name("x-after"), HeaderValue::from_static("v"));
        };
        let mut map = HeaderMap::new();
        let mut pending = upstream(&lines);
        let mut headers = ResponseHeaders::new(&mut map, &mut pending);
        edit(&mut headers);
        assert_eq!(
            headers
                .get_all(&name("x-ratelimit-limit"))
                .collect::<Vec<_>>(),
            [b"10".as_slice()]
        );
        assert_eq!(
            headers.get_all(&name("ratelimit")).collect::<Vec<_>>(),
            [b"second".as_slice()]
        );
        assert!(!headers.contains_key(&name("x-bad")));
        headers.remove(&name("x-text"));
        headers.insert_text(name("x-text"), &[b"again"]);
        headers.finish();
        let expected = [
            "x-ratelimit-limit: 10",
            "content-type: text/plain",
            "ratelimit: second",
            "x-after: v",
            "x-text: again",
        ];
        assert_eq!(written(&map, &pending), expected);
        // The map made for hyper, and one edited in a map from the start,
        // hold the same.
        merge_into_map(&mut map, &mut pending);
        let mut one = HeaderMap::new();
        let mut one_pending = upstream(&lines);
        let mut headers = ResponseHeaders::in_one_map(&mut one, &mut one_pending);
        edit(&mut headers);
        headers.remove(&name("x-text"));
        headers.insert_text(name("x-text"), &[b"again"]);
        headers.finish();
        for map in [&map, &one] {
            assert_eq!(map["x-ratelimit-limit"], "10");
            assert_eq!(map["ratelimit"], "second");
            assert_eq!(map["x-text"], "again");
            assert!(!map.contains_key("x-bad"));
            assert_eq!(map.get_all("ratelimit").iter().count(), 1);
        }
    }
}
