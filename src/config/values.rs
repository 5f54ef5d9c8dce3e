//! Value types used by the serde mirror of the file: each one expands
//! `${VAR}` and validates itself while deserializing, so a bad value is
//! reported by toml with the exact line and column of that value.

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::expand::{Env, expand};
use super::units;

thread_local! {
    /// The environment of the load in progress on this thread (set by
    /// `config::load_str` for the duration of one parse).
    static LOAD_ENV: RefCell<Env> = RefCell::new(Env::default());
    /// Secret variables left unset under [`Env::lenient_secrets`].
    static UNSET_SECRETS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `env` as the expansion environment of this thread; also
/// returns the secret variables that were unset (lenient mode only).
pub(crate) fn with_env<T>(env: &Env, f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let previous = LOAD_ENV.with(|cell| cell.replace(env.clone()));
    UNSET_SECRETS.with(|cell| cell.borrow_mut().clear());
    let out = f();
    LOAD_ENV.with(|cell| cell.replace(previous));
    let unset = UNSET_SECRETS.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
    (out, unset)
}

/// How an unset secret variable reads under [`Env::lenient_secrets`]
/// (`<unset:NAME>`): checks of a value's form skip a value that starts with
/// it, since only `check` produces one.
pub(crate) const UNSET_PLACEHOLDER: &str = "<unset:";

fn expand_secret(raw: &str) -> Result<String, String> {
    LOAD_ENV.with(|cell| {
        let env = cell.borrow();
        if !env.is_lenient_for_secrets() {
            return expand(raw, &env);
        }
        let mut patched = env.clone();
        for var in super::expand::required_vars(raw) {
            if env.get(&var).is_none() {
                patched.set(&var, format!("{UNSET_PLACEHOLDER}{var}>"));
                UNSET_SECRETS.with(|list| list.borrow_mut().push(var));
            }
        }
        expand(raw, &patched)
    })
}

/// `${VAR}` expansion with the environment of the load in progress.
pub(crate) fn expand_here(raw: &str) -> Result<String, String> {
    LOAD_ENV.with(|cell| expand(raw, &cell.borrow()))
}

/// Reads a string value and converts it *inside* the deserializer, so that
/// toml places an error (an unset variable, a missing unit) at the value
/// itself, also when the value is an item of an array.
pub(crate) fn from_str_value<'de, D, T, F>(d: D, convert: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    struct StrVisitor<F>(F);
    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for StrVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(StrVisitor(convert))
}

// === impl Text ===

/// A string value after `${VAR}` expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Text(pub String);

impl Text {
    /// The expanded string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(s.to_string())
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, |raw| expand_here(raw).map(Text))
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

// === impl Secret ===

/// A secret string (from the environment). It never prints: `Debug`,
/// `Serialize` (`/config`, `check`) all give `"<redacted>"`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

/// What every secret prints as.
pub const REDACTED: &str = "<redacted>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, |raw| expand_secret(raw).map(Secret))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

// === impl Url ===

/// A URL from the config (after `${VAR}` expansion). Its userinfo and query
/// string may carry credentials (`?apikey=...`), so everything that prints
/// it (`Display`, `Debug`, `Serialize` for `/config`) goes through
/// [`super::redact::url`]; only [`Url::as_str`] gives the real text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Url(pub String);

impl Url {
    /// The URL as written (for connecting, never for printing).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Url {
    fn from(s: &str) -> Self {
        Url(s.to_string())
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::redact::url(&self.0))
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", super::redact::url(&self.0))
    }
}

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, |raw| expand_here(raw).map(Url))
    }
}

impl Serialize for Url {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::redact::url(&self.0))
    }
}

// === impl Dur ===

/// A duration written with a unit (`"250ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    /// Shorthand for building defaults.
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    /// Shorthand for building defaults.
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, |raw| units::parse_duration(&expand_here(raw)?).map(Dur))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&units::format_duration(self.0))
    }
}

// === impl Size ===

/// A byte size written with a unit (`"64KiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, |raw| units::parse_size(&expand_here(raw)?).map(Size))
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&units::format_size(self.0))
    }
}

// === impl TextList ===

/// A list of strings that may also be written as one comma-separated string,
/// so `allow_origins = "${CORS_ORIGINS}"` works with `CORS_ORIGINS=a,b`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextList(pub Vec<String>);

impl<'de> Deserialize<'de> for TextList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = TextList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of strings or one comma-separated string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TextList, E> {
                let expanded = expand_here(v).map_err(E::custom)?;
                Ok(TextList(
                    expanded
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Text>()? {
                    items.push(item.0);
                }
                Ok(TextList(items))
            }
        }
        d.deserialize_any(ListVisitor)
    }
}

impl Serialize for TextList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl From<&[&str]> for TextList {
    fn from(items: &[&str]) -> Self {
        TextList(items.iter().map(|s| s.to_string()).collect())
    }
}

// === impl OneOrMany ===

/// A value written either as one string or as a list of strings (route
/// `auth = "jwt"` or `auth = ["jwt", "secret:vapi"]`). Unlike [`TextList`]
/// a single string is never split on commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;
        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![expand_here(v).map_err(E::custom)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Text>()? {
                    items.push(item.0);
                }
                if items.is_empty() {
                    return Err(de::Error::custom(
                        "the list is empty; give at least one value",
                    ));
                }
                Ok(OneOrMany(items))
            }
        }
        d.deserialize_any(OneOrManyVisitor)
    }
}

impl Serialize for OneOrMany {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}
