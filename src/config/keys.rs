//! Dotted key paths (`routes[2].timeout`) and where they sit in the file.
//!
//! Every config error names its key and its place. Both come from one
//! source: the key path. [`Located`] keeps toml's spanned parse of the
//! document, so a key path finds its value's span (a value the file does
//! not set, a default, is placed at its nearest enclosing table or entry),
//! and a span toml reports (a type mismatch, an unknown key, a bad unit)
//! finds the key path it belongs to. A caller therefore never passes a key
//! and a span separately, and the two cannot disagree.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A dotted key path, shown as `routes[2].timeout` (a key that is not a
/// bare TOML key is quoted: `auth.jwt.forward_claims."https://x/role"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Step>);

impl KeyPath {
    /// The path one table key further down.
    pub fn key(&self, name: &str) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(name.to_string()));
        KeyPath(steps)
    }

    /// The path of item `index` of this array.
    pub fn at(&self, index: usize) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        KeyPath(steps)
    }
}

/// Parses the plain form `a.b[2].c` (no quoted keys): for keys written in
/// the code. Keys that come from the file (secret names, claim names) are
/// added with [`KeyPath::key`], so a dot inside them stays one key.
impl From<&str> for KeyPath {
    fn from(text: &str) -> Self {
        let mut path = KeyPath::default();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let mut pieces = part.split('[');
            if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
                path = path.key(name);
            }
            for index in pieces {
                if let Ok(i) = index.trim_end_matches(']').parse() {
                    path = path.at(i);
                }
            }
        }
        path
    }
}

impl From<String> for KeyPath {
    fn from(text: String) -> Self {
        KeyPath::from(text.as_str())
    }
}

impl From<&KeyPath> for KeyPath {
    fn from(path: &KeyPath) -> Self {
        path.clone()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Index(index) => write!(f, "[{index}]")?,
                Step::Key(name) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(name) {
                        f.write_str(name)?;
                    } else {
                        write!(f, "{name:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn is_bare_key(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The policy text parsed with every key and value's span.
pub struct Located<'a> {
    root: Spanned<DeTable<'a>>,
}

impl<'a> Located<'a> {
    /// Parses `text`, keeping what it can of a file with syntax errors (they
    /// are reported by the serde parse; this only places them).
    pub fn parse(text: &'a str) -> Self {
        let (root, _errors) = DeTable::parse_recoverable(text);
        Self { root }
    }

    /// The span of the value at `path`; for a key the file does not set, the
    /// span of the nearest enclosing value it does set. `None` when not even
    /// the first key is in the file.
    pub fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut table = self.root.get_ref();
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        let mut found = None;
        for step in &path.0 {
            let next = match (step, value.map(Spanned::get_ref)) {
                (Step::Key(name), None) => entry(table, name),
                (Step::Key(name), Some(DeValue::Table(t))) => {
                    table = t;
                    entry(table, name)
                }
                (Step::Index(i), Some(DeValue::Array(items))) => items.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            found = Some(next.span());
            value = Some(next);
        }
        found
    }

    /// The key path of the innermost key or value whose span holds `span`'s
    /// start (for toml's own errors, which carry a span but no key).
    pub fn key_at(&self, span: &Range<usize>) -> Option<KeyPath> {
        let mut path = KeyPath::default();
        find_in_table(self.root.get_ref(), span.start, &mut path).then_some(path)
    }
}

/// The key a syntax error at `offset` sits in, read from the text itself
/// (toml's recovered parse leaves out the line it could not read): the
/// last table header above the line (`[[routes]]` counted into an index,
/// `[routes.x]` under the last of them) and the bare key the line begins
/// with, or the header the line is. `None` rather than a guess: before
/// any key, or when the text above holds what this reading does not follow
/// (a quoted table name, a multi-line string or array).
pub fn key_from_text(text: &str, offset: usize) -> Option<KeyPath> {
    let offset = offset.min(text.len());
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = clean(text[line_start..].lines().next().unwrap_or(""));
    let mut table = KeyPath::default();
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let (lines, line_is_top_level) = top_level_lines(&text[..line_start]);
    if !line_is_top_level {
        return None;
    }
    for above in lines {
        let above = clean(above);
        if above.starts_with('[') {
            table = header(above, &mut arrays)?;
        }
    }
    if line.starts_with('[') {
        return header(line, &mut arrays);
    }
    let key = line.split_once('=').map(|(key, _)| dotted(key))?;
    Some(KeyPath(table.0.into_iter().chain(key?.0).collect()))
}

/// A line without its comment (when no quote comes before it), a byte
/// order mark or surrounding blanks.
fn clean(line: &str) -> &str {
    let line = line.trim_start_matches('\u{feff}');
    let line = match line.find('#') {
        Some(at) if !line[..at].contains(['"', '\'']) => &line[..at],
        _ => line,
    };
    line.trim()
}

/// Where a byte of a TOML text is, for [`top_level_lines`].
#[derive(Clone, Copy, PartialEq)]
enum Lexed {
    Code,
    Comment,
    Basic,
    Literal,
    LongBasic,
    LongLiteral,
}

/// The lines of `text` that begin outside every string, array and inline
/// table (the only lines where a table header or a key can begin: a
/// multi-line array or string above is read past, not mistaken for keys),
/// and whether the end of `text` is outside them too.
fn top_level_lines(text: &str) -> (Vec<&str>, bool) {
    let bytes = text.as_bytes();
    let (mut state, mut depth) = (Lexed::Code, 0u32);
    let mut lines = Vec::new();
    let mut line_start = Some(0);
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        match (state, bytes[i]) {
            (Lexed::Code, b'#') => state = Lexed::Comment,
            (Lexed::Code, b'"') if rest.starts_with(b"\"\"\"") => {
                state = Lexed::LongBasic;
                i += 2;
            }
            (Lexed::Code, b'"') => state = Lexed::Basic,
            (Lexed::Code, b'\'') if rest.starts_with(b"'''") => {
                state = Lexed::LongLiteral;
                i += 2;
            }
            (Lexed::Code, b'\'') => state = Lexed::Literal,
            (Lexed::Code, b'[' | b'{') => depth += 1,
            (Lexed::Code, b']' | b'}') => depth = depth.saturating_sub(1),
            (Lexed::Basic | Lexed::LongBasic, b'\\') if rest.get(1) != Some(&b'\n') => i += 1,
            (Lexed::Basic, b'"') | (Lexed::Literal, b'\'') => state = Lexed::Code,
            (Lexed::LongBasic, b'"') if rest.starts_with(b"\"\"\"") => {
                state = Lexed::Code;
                i += 2;
            }
            (Lexed::LongLiteral, b'\'') if rest.starts_with(b"'''") => {
                state = Lexed::Code;
                i += 2;
            }
            _ => {}
        }
        if bytes[i] == b'\n' {
            if let Some(start) = line_start.take() {
                lines.push(&text[start..i]);
            }
            // A one-line string or a comment ends with its line.
            if matches!(state, Lexed::Comment | Lexed::Basic | Lexed::Literal) {
                state = Lexed::Code;
            }
            if state == Lexed::Code && depth == 0 {
                line_start = Some(i + 1);
            }
        }
        i += 1;
    }
    if let Some(start) = line_start.filter(|start| *start < text.len()) {
        lines.push(&text[start..]);
    }
    (lines, state == Lexed::Code && depth == 0)
}

/// The table a header line names: `[[a.b]]` the next item of that array,
/// `[a.b]` (a table under the last item of an array `a`, when there is
/// one). `None` for a name this reading does not follow (quoted).
fn header(line: &str, arrays: &mut Vec<(String, usize)>) -> Option<KeyPath> {
    if let Some(name) = line.strip_prefix("[[") {
        let path = dotted(name.split("]]").next()?)?;
        let name = path.to_string();
        let index = match arrays.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                arrays.push((name, 0));
                0
            }
        };
        return Some(path.at(index));
    }
    let path = dotted(line.strip_prefix('[')?.split(']').next()?)?;
    // `[routes.x]` after `[[routes]]`: a table of the last `routes` item.
    let mut steps = Vec::new();
    for step in path.0 {
        steps.push(step);
        let so_far = KeyPath(steps.clone()).to_string();
        if let Some((_, index)) = arrays.iter().find(|(n, _)| *n == so_far) {
            steps.push(Step::Index(*index));
        }
    }
    Some(KeyPath(steps))
}

/// A bare, possibly dotted, key (blanks around the dots allowed).
fn dotted(name: &str) -> Option<KeyPath> {
    let mut path = KeyPath::default();
    for part in name.split('.') {
        let part = part.trim();
        let bare = !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !bare {
            return None;
        }
        path = path.key(part);
    }
    Some(path)
}

fn entry<'t, 'i>(table: &'t DeTable<'i>, name: &str) -> Option<&'t Spanned<DeValue<'i>>> {
    table
        .iter()
        .find(|(key, _)| key.get_ref() == name)
        .map(|(_, value)| value)
}

fn holds(span: Range<usize>, offset: usize) -> bool {
    span.contains(&offset)
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut KeyPath) -> bool {
    for (key, value) in table.iter() {
        path.0.push(Step::Key(key.get_ref().to_string()));
        if holds(key.span(), offset)
            || find_in_value(value.get_ref(), offset, path)
            || holds(value.span(), offset)
        {
            return true;
        }
        path.0.pop();
    }
    false
}

fn find_in_value(value: &DeValue<'_>, offset: usize, path: &mut KeyPath) -> bool {
    match value {
        DeValue::Table(table) => find_in_table(table, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.0.push(Step::Index(i));
                if find_in_value(item.get_ref(), offset, path) || holds(item.span(), offset) {
                    return true;
                }
                path.0.pop();
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nlisten = \"x\"\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nrate_limits = [{ by = \"ip\" }, { by = \"user\" }]\n";

    fn key_of(needle: &str) -> String {
        let doc = Located::parse(TEXT);
        let start = TEXT.find(needle).unwrap_or(usize::MAX);
        doc.key_at(&(start..start + 1))
            .map(|k| k.to_string())
            .unwrap_or_default()
    }

    fn text_at(path: &str) -> &'static str {
        let span = Located::parse(TEXT).span_of(&KeyPath::from(path)).unwrap();
        &TEXT[span]
    }

    #[test]
    fn a_syntax_error_finds_its_key_in_the_text() {
        let text = "[server]\nworkers = 2\nworkers = \n\n[[routes]]\nname = \"a\"\n[[routes]]\npath = /x\n[server]\n";
        let key_on = |needle: &str| {
            key_from_text(text, text.find(needle).unwrap() + needle.len() - 1)
                .map(|k| k.to_string())
        };
        assert_eq!(key_on("workers = \n").as_deref(), Some("server.workers"));
        assert_eq!(key_on("path = /").as_deref(), Some("routes[1].path"));
        assert_eq!(key_on("/x").as_deref(), Some("routes[1].path"));
        assert_eq!(
            key_from_text(text, text.rfind("[server]").unwrap()).map(|k| k.to_string()),
            Some("server".to_string())
        );
        assert_eq!(key_from_text("= 1\n", 0), None);
        let key_at_end = |text: &str| key_from_text(text, text.len() - 2).map(|k| k.to_string());
        // The red team's cases: no guess past what the reading follows.
        assert_eq!(
            key_at_end("[server]\nworkers = 1\n[auth.secrets.\"vapi hook\"]\nheader = \n"),
            None
        );
        // A multi-line string or array above is read past (a header in
        // it is no header); an error inside one is not guessed at.
        assert_eq!(
            key_at_end("[server]\nlisten = \'\'\'\n[[routes]]\n\'\'\'\n[[routes]]\nname = \n")
                .as_deref(),
            Some("routes[0].name")
        );
        assert_eq!(
            key_at_end("[cors]\nallow_origins = [\n\"https://a\", # ]\n\"[x]\"\n]\n[[routes]]\nname = \"b\"\ntimeout = \"1s\n")
                .as_deref(),
            Some("routes[0].timeout")
        );
        assert_eq!(
            key_at_end("[server]\nlisten = \"a\\\"[\"\n[log]\nlevel = \n").as_deref(),
            Some("log.level")
        );
        assert_eq!(
            key_at_end("[[routes]]\nname = \"a\"\nmethods = [\n  \"GET\",\nx = \n"),
            None
        );
        assert_eq!(
            key_at_end("[[routes]]\nname = \"a\"\n[routes.security_headers]\nx = \n").as_deref(),
            Some("routes[0].security_headers.x")
        );
        assert_eq!(
            key_at_end("[ server . tls ]\ncert = \n").as_deref(),
            Some("server.tls.cert")
        );
        assert_eq!(
            key_at_end("\u{feff}[server] # the server\nlisten = \n").as_deref(),
            Some("server.listen")
        );
    }

    #[test]
    fn key_paths_print_dotted_with_indexes_and_quotes() {
        assert_eq!(
            KeyPath::from("routes[2].timeout").to_string(),
            "routes[2].timeout"
        );
        let claim = KeyPath::from("auth.jwt.forward_claims").key("https://x/role");
        assert_eq!(
            claim.to_string(),
            "auth.jwt.forward_claims.\"https://x/role\""
        );
        assert_eq!(KeyPath::from("a[0][1]").to_string(), "a[0][1]");
    }

    #[test]
    fn a_span_finds_its_key() {
        assert_eq!(key_of("\"x\""), "server.listen");
        assert_eq!(key_of("listen"), "server.listen");
        assert_eq!(key_of("\"b\""), "routes[1].name");
        assert_eq!(key_of("\"user\""), "routes[1].rate_limits[1].by");
        assert_eq!(key_of("{ by = \"ip\""), "routes[1].rate_limits[0]");
    }

    #[test]
    fn a_key_finds_its_span_or_its_nearest_parent() {
        assert_eq!(text_at("server.listen"), "\"x\"");
        assert_eq!(text_at("routes[1].rate_limits[1].by"), "\"user\"");
        assert_eq!(text_at("server.workers"), "[server]");
        assert_eq!(text_at("routes[0].timeout"), "[[routes]]");
        assert!(
            Located::parse(TEXT)
                .span_of(&KeyPath::from("log.format"))
                .is_none()
        );
    }
}
