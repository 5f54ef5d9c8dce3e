//! Config errors as `PATH:LINE:COL: KEY: message`, or `PATH: KEY: message` when
//! no position is known, so an operator can jump straight to the mistake.

use std::fmt;
use std::ops::Range;

/// Everything that can be wrong with a policy file. Always carries enough to
/// find the mistake: a position, a key path, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the text came from (for messages only).
    pub path: String,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The dotted key path (`routes[2].auth`), when known.
    pub key: Option<String>,
    /// What is wrong, what was found and what is accepted.
    pub message: String,
}

impl ConfigError {
    /// An error located by a byte span of the source text.
    pub fn at_span(
        path: &str,
        text: &str,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.to_string(),
            position: span.map(|s| line_col(text, s.start)),
            key,
            message: message.into(),
        }
    }

    /// An error with no position (the file could not be read, say).
    pub fn plain(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            position: None,
            key: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.position, &self.key) {
            (Some((line, col)), Some(key)) => {
                write!(f, "{}:{line}:{col}: {key}: {}", self.path, self.message)
            }
            (Some((line, col)), None) => write!(f, "{}:{line}:{col}: {}", self.path, self.message),
            (None, Some(key)) => write!(f, "{}: {key}: {}", self.path, self.message),
            (None, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
    }

    #[test]
    fn display_forms() {
        let e = ConfigError {
            path: "p.toml".into(),
            position: Some((3, 5)),
            key: Some("routes[0].auth".into()),
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "p.toml:3:5: routes[0].auth: bad");
        assert_eq!(
            ConfigError::plain("p.toml", "gone").to_string(),
            "p.toml: gone"
        );
    }
}
