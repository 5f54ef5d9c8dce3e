//! Shared-secret credentials (`[auth.secrets.NAME]`), for webhooks. Values
//! are compared in constant time, and every configured value is tried, so
//! neither timing nor rotation state leaks which part matched.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use subtle::ConstantTimeEq;

use super::AuthFailure;

/// One compiled shared secret.
pub struct SecretCheck {
    /// The secret's name (`secret:NAME`).
    pub name: Arc<str>,
    /// The header carrying it (never forwarded).
    pub header: HeaderName,
    /// Accepted values (several during rotation).
    values: Vec<Vec<u8>>,
}

impl std::fmt::Debug for SecretCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretCheck({}, {}, <{} redacted values>)",
            self.name,
            self.header,
            self.values.len()
        )
    }
}

impl SecretCheck {
    /// Builds a check; `values` must be non-empty (validated at load).
    pub fn new(name: &str, header: HeaderName, values: Vec<String>) -> Self {
        Self {
            name: name.into(),
            header,
            values: values.into_iter().map(String::into_bytes).collect(),
        }
    }

    /// Whether `presented` equals one of the values.
    pub fn check(&self, presented: &HeaderValue) -> Result<(), AuthFailure> {
        let presented = presented.as_bytes();
        let mut matched = subtle::Choice::from(0);
        for value in &self.values {
            matched |= value.as_slice().ct_eq(presented);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthFailure::BadSecret)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_value_matches() {
        let check = SecretCheck::new(
            "hook",
            HeaderName::from_static("x-hook"),
            vec!["old".into(), "new".into()],
        );
        assert_eq!(check.check(&HeaderValue::from_static("new")), Ok(()));
        assert_eq!(check.check(&HeaderValue::from_static("old")), Ok(()));
        assert_eq!(
            check.check(&HeaderValue::from_static("ne")),
            Err(AuthFailure::BadSecret)
        );
        assert_eq!(
            check.check(&HeaderValue::from_static("")),
            Err(AuthFailure::BadSecret)
        );
        assert!(!format!("{check:?}").contains("new"));
    }
}
