//! Claim requirements per route (SPEC §6.6): right after authentication,
//! a request admitted by a JWT must carry claims that match every entry of
//! the route's `require_claims`; 403 (reason `claims`) otherwise. No
//! verified token at all is the 401 of any `jwt` route. Requests admitted
//! by a shared secret (or another non-JWT proof) in an any-of list are not
//! subject to it.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::auth::{AuthFailure, Challenge, Denied, Identity, claims};

/// One entry of `require_claims`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimEntry {
    /// The claim (dotted path for nested claims).
    pub claim: Arc<str>,
    /// Any one of these matches.
    pub values: Vec<String>,
    /// `scope` / `scp`: a string claim is a space-separated list.
    space_list: bool,
}

impl ClaimEntry {
    /// An entry for `claim`; `scope` and `scp` (also as the last segment
    /// of a dotted path) read a string as a space-separated list.
    pub fn new(claim: &str, values: Vec<String>) -> Self {
        let last = claim.rsplit('.').next().unwrap_or(claim);
        Self {
            claim: claim.into(),
            values,
            space_list: matches!(last, "scope" | "scp"),
        }
    }

    /// Whether the verified claims satisfy this entry.
    pub fn matches(&self, verified: &Map<String, Value>) -> bool {
        let wanted = |text: &str| self.values.iter().any(|v| v == text);
        match claims::lookup(verified, &self.claim) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if self.space_list => s.split_ascii_whitespace().any(wanted),
            Some(Value::Array(items)) => items.iter().any(|item| match item {
                Value::String(s) => wanted(s),
                Value::Null | Value::Array(_) | Value::Object(_) => false,
                other => wanted(&other.to_string()),
            }),
            Some(Value::Object(_)) => false,
            Some(other) => wanted(&claims::as_text(other)),
        }
    }
}

/// Why the claim stage refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimsRefusal {
    /// No verified token (an anonymous caller on an `optional` route): 401.
    NoToken(Denied),
    /// 403: this claim (its name, never its value) did not match.
    Mismatch(Arc<str>),
}

/// The claim stage: every entry must match the verified token's claims.
pub fn check(required: &[ClaimEntry], identity: &Identity) -> Result<(), ClaimsRefusal> {
    if required.is_empty() {
        return Ok(());
    }
    let verified = match identity {
        Identity::Jwt(verified) => verified,
        Identity::Anonymous => {
            return Err(ClaimsRefusal::NoToken(Denied {
                reason: AuthFailure::Missing,
                challenge: Challenge::Bearer,
            }));
        }
        // Admitted by a shared secret (or another non-JWT proof).
        _ => return Ok(()),
    };
    match required.iter().find(|entry| !entry.matches(verified)) {
        Some(entry) => Err(ClaimsRefusal::Mismatch(entry.claim.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    fn entry(claim: &str, values: &[&str]) -> ClaimEntry {
        ClaimEntry::new(claim, values.iter().map(|v| v.to_string()).collect())
    }

    #[test]
    fn strings_arrays_scopes_and_paths() {
        let c = claims(
            r#"{"role":"admin","roles":["a","b"],"scope":"orders:read orders:write",
                "app_metadata":{"plan":"pro"},"n":5,"plain":"x y"}"#,
        );
        assert!(entry("role", &["admin"]).matches(&c));
        assert!(entry("role", &["owner", "admin"]).matches(&c));
        assert!(!entry("role", &["adm"]).matches(&c));
        assert!(entry("roles", &["b"]).matches(&c));
        assert!(!entry("roles", &["c"]).matches(&c));
        assert!(entry("scope", &["orders:write"]).matches(&c));
        assert!(!entry("scope", &["orders"]).matches(&c));
        assert!(entry("app_metadata.plan", &["pro", "enterprise"]).matches(&c));
        assert!(!entry("app_metadata.missing", &["pro"]).matches(&c));
        assert!(entry("n", &["5"]).matches(&c));
        // Only scope and scp are space-separated lists.
        assert!(!entry("plain", &["x"]).matches(&c));
        assert!(!entry("app_metadata", &["pro"]).matches(&c));
    }

    #[test]
    fn every_entry_must_match_and_only_jwts_are_subject() {
        let required = [entry("role", &["admin"]), entry("scp", &["w"])];
        let jwt = |json: &str| Identity::Jwt(Arc::new(claims::VerifiedClaims::new(claims(json))));
        assert_eq!(
            check(&required, &jwt(r#"{"role":"admin","scp":"r w"}"#)),
            Ok(())
        );
        assert_eq!(
            check(&required, &jwt(r#"{"role":"admin","scp":"r"}"#)),
            Err(ClaimsRefusal::Mismatch("scp".into()))
        );
        assert!(matches!(
            check(&required, &Identity::Anonymous),
            Err(ClaimsRefusal::NoToken(_))
        ));
        assert_eq!(check(&required, &Identity::Secret("hook".into())), Ok(()));
        assert_eq!(check(&[], &Identity::Anonymous), Ok(()));
    }
}
