//! `[security_headers]` and a route's `security_headers = { .. }`, read and
//! written through the one table [`SECURITY_HEADERS`]: its keys are the
//! accepted keys, its defaults the defaults, and a route's override is
//! merged entry by entry.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::config::values::Text;
use crate::policy::headers::{
    DEFAULT_REMOVED, REMOVE_RESPONSE_HEADERS, SECURITY_HEADER_COUNT as COUNT, SECURITY_HEADERS,
};

/// Every accepted key: the table's, then `remove_response_headers`.
const KEYS: [&str; COUNT + 1] = {
    let mut keys = [REMOVE_RESPONSE_HEADERS; COUNT + 1];
    let mut i = 0;
    while i < COUNT {
        keys[i] = SECURITY_HEADERS[i].key;
        i += 1;
    }
    keys
};

/// `[security_headers]`: one value per [`SECURITY_HEADERS`] entry, in its
/// order (the SPEC's defaults; `""` omits a header), and the response
/// headers removed.
#[derive(Debug, Clone)]
pub struct SecurityHeadersFile {
    /// Indexed like [`SECURITY_HEADERS`].
    pub values: [Text; COUNT],
    /// `remove_response_headers`.
    pub remove_response_headers: Vec<Text>,
}

impl Default for SecurityHeadersFile {
    fn default() -> Self {
        Self {
            values: SECURITY_HEADERS.map(|entry| Text::from(entry.default)),
            remove_response_headers: DEFAULT_REMOVED.map(Text::from).to_vec(),
        }
    }
}

impl SecurityHeadersFile {
    /// These settings with a route's overrides applied.
    pub fn merged(&self, over: &SecurityHeadersOverride) -> SecurityHeadersFile {
        let mut out = self.clone();
        for (value, set) in out.values.iter_mut().zip(&over.values) {
            if let Some(set) = set {
                *value = set.clone();
            }
        }
        if let Some(remove) = &over.remove_response_headers {
            out.remove_response_headers = remove.clone();
        }
        out
    }
}

/// A route's `security_headers = { ... }`: only the keys it sets override.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeadersOverride {
    /// Indexed like [`SECURITY_HEADERS`]; `None` keeps the global value.
    pub values: [Option<Text>; COUNT],
    /// `remove_response_headers`, when set.
    pub remove_response_headers: Option<Vec<Text>>,
}

/// A key of the table: an entry of [`SECURITY_HEADERS`] (by index) or
/// `remove_response_headers`. Refused inside the key's deserializer, so the
/// error is placed at the misspelt key.
enum Field {
    Header(usize),
    Remove,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a security header key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Field, E> {
                if key == REMOVE_RESPONSE_HEADERS {
                    return Ok(Field::Remove);
                }
                SECURITY_HEADERS
                    .iter()
                    .position(|entry| entry.key == key)
                    .map(Field::Header)
                    .ok_or_else(|| E::unknown_field(key, &KEYS))
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

impl<'de> Deserialize<'de> for SecurityHeadersOverride {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TableVisitor;
        impl<'de> Visitor<'de> for TableVisitor {
            type Value = SecurityHeadersOverride;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of security headers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = SecurityHeadersOverride::default();
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Header(i) => out.values[i] = Some(map.next_value()?),
                        Field::Remove => out.remove_response_headers = Some(map.next_value()?),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(TableVisitor)
    }
}

impl<'de> Deserialize<'de> for SecurityHeadersFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let set = SecurityHeadersOverride::deserialize(d)?;
        Ok(SecurityHeadersFile::default().merged(&set))
    }
}

impl Serialize for SecurityHeadersFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let values = self.values.iter().map(Some);
        write_table(s, values, Some(&self.remove_response_headers))
    }
}

impl Serialize for SecurityHeadersOverride {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let values = self.values.iter().map(Option::as_ref);
        write_table(s, values, self.remove_response_headers.as_ref())
    }
}

/// Writes the keys that hold a value, in the table's order.
fn write_table<'a, S: Serializer>(
    s: S,
    values: impl Iterator<Item = Option<&'a Text>>,
    remove: Option<&Vec<Text>>,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(None)?;
    for (entry, value) in SECURITY_HEADERS.iter().zip(values) {
        if let Some(value) = value {
            map.serialize_entry(entry.key, value)?;
        }
    }
    if let Some(remove) = remove {
        map.serialize_entry(REMOVE_RESPONSE_HEADERS, remove)?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_table_and_overrides_merge_by_key() {
        let base = SecurityHeadersFile::default();
        assert_eq!(base.values[1].as_str(), "DENY");
        let over: SecurityHeadersOverride =
            toml::from_str("x_frame_options = \"\"\nremove_response_headers = []").unwrap();
        let merged = base.merged(&over);
        assert_eq!(merged.values[1].as_str(), "");
        assert_eq!(merged.values[0].as_str(), "nosniff");
        assert!(merged.remove_response_headers.is_empty());
        let shown = serde_json::to_value(&over).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"x_frame_options": "", "remove_response_headers": []})
        );
        let full = serde_json::to_value(&base).unwrap();
        assert_eq!(
            full["strict_transport_security"],
            "max-age=63072000; includeSubDomains"
        );
        assert_eq!(full["remove_response_headers"][1], "X-Powered-By");
    }

    #[test]
    fn unknown_keys_are_refused_with_the_accepted_ones() {
        let err = toml::from_str::<SecurityHeadersFile>("x_frame_option = \"DENY\"").unwrap_err();
        assert!(
            err.message().contains("x_frame_option") && err.message().contains("x_frame_options"),
            "{}",
            err.message()
        );
    }
}
