//! Reading verified claims: by name, or by dotted path into nested objects
//! (`app_metadata.tenant`), rendered for headers (arrays and objects as JSON).

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::AuthFailure;

/// The claim at `path`: a dotted path into nested objects, or a top-level
/// name with dots in it (namespaced claims such as
/// `https://example.com/roles`) when the token has no object the path
/// could start in. palisade must not decide on one claim while the backend
/// reads the other.
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let literal = claims.get(path);
    let Some((first, _)) = path.split_once('.') else {
        return literal;
    };
    // Where the token has the path's first object (`app_metadata`), the
    // path means the nested claim only: a top-level `app_metadata.plan`
    // beside it is not what a backend reading the object sees.
    if claims.contains_key(first) {
        let nested = nested(claims, path);
        return match (literal, nested) {
            (Some(a), Some(b)) if a != b => None,
            (_, nested) => nested,
        };
    }
    literal
}

fn nested<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
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

/// The identity headers a verified token yields on a route: one per
/// `forward_claims` entry whose claim is present (`null` and `""` count as
/// absent, as they do for `require`). A value that cannot be a header value
/// (CR, LF, NUL or another control byte; whitespace at either end, which the
/// receiver would trim) is `Malformed`: forwarding the request without the
/// header would let a backend read a missing `X-Tenant-Id` as "no filter".
pub fn identity_headers(
    claims: &Map<String, Value>,
    forward: &[(String, HeaderName)],
) -> Result<Vec<(HeaderName, HeaderValue)>, AuthFailure> {
    let mut out = Vec::with_capacity(forward.len());
    for (claim, header) in forward {
        let Some(value) = lookup(claims, claim).filter(|v| !v.is_null()) else {
            continue;
        };
        let text = as_text(value);
        if text.is_empty() {
            continue;
        }
        let padded = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
        if padded(text.as_bytes().first()) || padded(text.as_bytes().last()) {
            return Err(AuthFailure::Malformed);
        }
        // The text's own bytes become the value (the same checks as
        // `from_str`, without a second copy).
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .map_err(|_| AuthFailure::Malformed)?;
        out.push((header.clone(), value));
    }
    Ok(out)
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

    #[test]
    fn a_dotted_name_and_a_nested_path_that_disagree_count_as_absent() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"app_metadata.plan":"pro","app_metadata":{"plan":"free","tier":"x"},"a.b":1,"a":{"b":1}}"#,
        )
        .unwrap();
        assert!(lookup(&claims, "app_metadata.plan").is_none());
        // Only the top-level spelling, beside the object: not the claim.
        let shadow: Map<String, Value> = serde_json::from_str(
            r#"{"app_metadata.plan":"pro","app_metadata":{},"https://x.io/roles":"r"}"#,
        )
        .unwrap();
        assert!(lookup(&shadow, "app_metadata.plan").is_none());
        assert_eq!(as_text(lookup(&shadow, "https://x.io/roles").unwrap()), "r");
        assert_eq!(as_text(lookup(&claims, "app_metadata.tier").unwrap()), "x");
        assert_eq!(as_text(lookup(&claims, "a.b").unwrap()), "1");
    }

    #[test]
    fn identity_headers_refuse_what_cannot_be_a_header_value() {
        let forward = vec![
            ("sub".to_string(), HeaderName::from_static("x-user-id")),
            ("tenant".to_string(), HeaderName::from_static("x-tenant-id")),
        ];
        let headers = |json: &str| {
            let claims: Map<String, Value> = serde_json::from_str(json).unwrap();
            identity_headers(&claims, &forward)
        };
        let ok = headers(r#"{"sub":"u1","tenant":"t1"}"#).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].1, "t1");
        // Absent, null and "" are not forwarded.
        assert_eq!(headers(r#"{"sub":"u1","tenant":null}"#).unwrap().len(), 1);
        assert_eq!(headers(r#"{"sub":"u1","tenant":""}"#).unwrap().len(), 1);
        for bad in [
            r#"{"sub":"u1\r\nX-Tenant-Id: t9"}"#,
            r#"{"sub":"u1\nx"}"#,
            r#"{"sub":"u1\u0000"}"#,
            r#"{"sub":"u1\u007f"}"#,
            r#"{"sub":" u1"}"#,
            r#"{"sub":"u1\t"}"#,
        ] {
            assert_eq!(headers(bad).unwrap_err(), AuthFailure::Malformed, "{bad}");
        }
    }
}
