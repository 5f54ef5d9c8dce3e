//! Reading verified claims: by name, or by dotted path into nested objects
//! (`app_metadata.tenant`), rendered for headers (arrays and objects as JSON).

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::AuthFailure;

/// A route's `forward_claims`: verified claim (dotted path) → header sent
/// upstream. Shared, so a token's rendered headers can name the list they
/// were made for.
pub type ForwardClaims = Arc<[(String, HeaderName)]>;

/// The identity headers a token's claims become for one `forward_claims`.
pub type IdentityHeaders = Arc<[(HeaderName, HeaderValue)]>;

/// A verified token's claims, shared by every request that presents the
/// token while the cache keeps it, with the identity headers they became
/// the first time: looking the claims up and checking them as header
/// values is done once per token instead of once per request.
#[derive(Debug)]
pub struct VerifiedClaims {
    claims: Map<String, Value>,
    /// The headers for the first `forward_claims` list asked for (most
    /// policies have one), and that list (held: compared by address).
    rendered: OnceLock<(ForwardClaims, Result<IdentityHeaders, AuthFailure>)>,
}

impl VerifiedClaims {
    /// Claims that passed verification.
    pub fn new(claims: Map<String, Value>) -> Self {
        Self {
            claims,
            rendered: OnceLock::new(),
        }
    }

    /// The identity headers for `forward` (see [`identity_headers`]).
    pub fn identity_headers(
        &self,
        forward: &ForwardClaims,
    ) -> Result<IdentityHeaders, AuthFailure> {
        if let Some((list, rendered)) = self.rendered.get()
            && Arc::ptr_eq(list, forward)
        {
            return rendered.clone();
        }
        let rendered = identity_headers(&self.claims, forward).map(IdentityHeaders::from);
        // Kept for the first list only; another one is rendered each time.
        let _ = self.rendered.set((forward.clone(), rendered.clone()));
        rendered
    }
}

impl Deref for VerifiedClaims {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        &self.claims
    }
}

/// The claim at `path`: a dotted path into nested objects, or a top-level
/// name with dots in it (namespaced claims such as
/// `https://example.com/roles`) when the token has no object the path
/// could start in. palisade must not decide on one claim while the backend
/// reads the other.
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    lookup_or_conflict(claims, path).ok().flatten()
}

/// Two different values for one path: a top-level claim named like the
/// path (`"app_metadata.tenant"`) beside the nested one it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict;

/// [`lookup`], telling a claim that is absent from one the token gives
/// two different values (where `lookup` finds neither).
pub fn lookup_or_conflict<'a>(
    claims: &'a Map<String, Value>,
    path: &str,
) -> Result<Option<&'a Value>, Conflict> {
    let literal = claims.get(path);
    let Some((first, _)) = path.split_once('.') else {
        return Ok(literal);
    };
    // Where the token has the path's first object (`app_metadata`), the
    // path means the nested claim only: a top-level `app_metadata.plan`
    // beside it is not what a backend reading the object sees.
    if claims.contains_key(first) {
        let nested = nested(claims, path);
        return match (literal, nested) {
            (Some(a), Some(b)) if a != b => Err(Conflict),
            (_, nested) => Ok(nested),
        };
    }
    Ok(literal)
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
        // Two values for one claim: which one the backend reads is not
        // known, and leaving the header out would read as "no claim".
        let found = lookup_or_conflict(claims, claim).map_err(|Conflict| AuthFailure::Malformed)?;
        let Some(value) = found.filter(|v| !v.is_null()) else {
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
        // A tab inside is a valid header value, but a control character
        // all the same: refused like the others (`HeaderValue` takes it).
        if text.contains('\t') {
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
            r#"{"sub":"u\t1"}"#,
        ] {
            assert_eq!(headers(bad).unwrap_err(), AuthFailure::Malformed, "{bad}");
        }
        // Two values for one forwarded claim: refused, never left out.
        let nested = vec![(
            "app_metadata.tenant".to_string(),
            HeaderName::from_static("x-tenant-id"),
        )];
        let two: Map<String, Value> =
            serde_json::from_str(r#"{"app_metadata.tenant":"t1","app_metadata":{"tenant":"t2"}}"#)
                .unwrap();
        assert_eq!(
            identity_headers(&two, &nested).unwrap_err(),
            AuthFailure::Malformed
        );
        let same: Map<String, Value> =
            serde_json::from_str(r#"{"app_metadata.tenant":"t2","app_metadata":{"tenant":"t2"}}"#)
                .unwrap();
        assert_eq!(identity_headers(&same, &nested).unwrap()[0].1, "t2");
    }

    #[test]
    fn a_tokens_headers_are_rendered_once_per_list_and_never_for_another() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"sub":"u1","role":"admin","bad":" x"}"#).unwrap();
        let verified = VerifiedClaims::new(claims);
        let list = |pairs: &[(&str, &'static str)]| -> ForwardClaims {
            pairs
                .iter()
                .map(|(c, h)| (c.to_string(), HeaderName::from_static(h)))
                .collect::<Vec<_>>()
                .into()
        };
        let users = list(&[("sub", "x-user-id")]);
        let first = verified.identity_headers(&users).unwrap();
        assert_eq!(first[0].1, "u1");
        // The same list again: the headers made the first time.
        let again = verified.identity_headers(&users).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // Another list (even with the same content) is rendered for itself.
        let roles = list(&[("role", "x-user-role")]);
        let other = verified.identity_headers(&roles).unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].0, "x-user-role");
        assert_eq!(other[0].1, "admin");
        // A claim that cannot be a header value fails every time.
        let broken = VerifiedClaims::new(verified.claims.clone());
        let bad = list(&[("bad", "x-bad")]);
        for _ in 0..2 {
            assert_eq!(
                broken.identity_headers(&bad).unwrap_err(),
                AuthFailure::Malformed
            );
        }
    }
}
