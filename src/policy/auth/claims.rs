//! Reading verified claims: by name, or by dotted path into nested objects
//! (`app_metadata.tenant`), rendered for headers (arrays and objects as JSON).

use serde_json::{Map, Value};

/// The claim at `path`: a top-level name first (claims may contain dots),
/// then a dotted path.
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// A claim as header / comparison text: strings as-is, others as JSON.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_rendered() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"sub":"u1","app_metadata":{"tenant":"t9","roles":["a","b"]},"n":5,"dotted.name":"d"}"#,
        )
        .unwrap();
        assert_eq!(as_text(lookup(&claims, "sub").unwrap()), "u1");
        assert_eq!(
            as_text(lookup(&claims, "app_metadata.tenant").unwrap()),
            "t9"
        );
        assert_eq!(
            as_text(lookup(&claims, "app_metadata.roles").unwrap()),
            r#"["a","b"]"#
        );
        assert_eq!(as_text(lookup(&claims, "n").unwrap()), "5");
        assert_eq!(as_text(lookup(&claims, "dotted.name").unwrap()), "d");
        assert!(lookup(&claims, "app_metadata.missing").is_none());
        assert!(lookup(&claims, "sub.x").is_none());
    }
}
