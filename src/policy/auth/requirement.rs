//! A route's authentication requirement (`auth = ...`), compiled at load.
//! Verification itself lives in `policy::auth::{jwt, secret, hmac}`.

use std::fmt;
use std::sync::Arc;

/// One way of proving identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// A JWT verified by `[auth.jwt]`.
    Jwt,
    /// The shared secret `[auth.secrets.NAME]`.
    Secret(Arc<str>),
    /// The signed webhook `[auth.hmac.NAME]`.
    Hmac(Arc<str>),
}

/// What a route demands: any one of `methods` suffices; with `anonymous`,
/// presenting no credentials at all is also fine (but bad ones are not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequirement {
    /// No credentials → anonymous is admitted.
    pub anonymous: bool,
    /// Accepted proofs; empty with `anonymous` means `auth = "none"`.
    pub methods: Vec<AuthMethod>,
}

impl AuthRequirement {
    /// `auth = "none"`.
    pub fn none() -> Self {
        Self {
            anonymous: true,
            methods: Vec::new(),
        }
    }

    /// Parses the values of `auth` (one string or a list, any-of).
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let accepted = "accepted: \"none\", \"optional\", \"jwt\", \"secret:NAME\", \"hmac:NAME\", or a list of them";
        if values.len() == 1 && values[0] == "none" {
            return Ok(Self::none());
        }
        let mut requirement = Self {
            anonymous: false,
            methods: Vec::new(),
        };
        for value in values {
            let method = match value.as_str() {
                "none" => {
                    return Err(format!(
                        "\"none\" cannot be combined with other auth modes; {accepted}"
                    ));
                }
                "optional" => {
                    requirement.anonymous = true;
                    AuthMethod::Jwt
                }
                "jwt" => AuthMethod::Jwt,
                other => match (other.strip_prefix("secret:"), other.strip_prefix("hmac:")) {
                    (Some(name), _) if !name.is_empty() => AuthMethod::Secret(name.into()),
                    (_, Some(name)) if !name.is_empty() => AuthMethod::Hmac(name.into()),
                    _ => return Err(format!("unknown auth mode \"{other}\"; {accepted}")),
                },
            };
            if !requirement.methods.contains(&method) {
                requirement.methods.push(method);
            }
        }
        Ok(requirement)
    }

    /// Whether the route skips authentication entirely.
    pub fn is_none(&self) -> bool {
        self.anonymous && self.methods.is_empty()
    }

    /// Whether a JWT is one of the accepted proofs.
    pub fn accepts_jwt(&self) -> bool {
        self.methods.contains(&AuthMethod::Jwt)
    }

    /// Names of the shared secrets it accepts.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.methods.iter().filter_map(|m| match m {
            AuthMethod::Secret(name) => Some(&**name),
            AuthMethod::Jwt | AuthMethod::Hmac(_) => None,
        })
    }

    /// Names of the signed-webhook verifiers it accepts.
    pub fn hmac_names(&self) -> impl Iterator<Item = &str> {
        self.methods.iter().filter_map(|m| match m {
            AuthMethod::Hmac(name) => Some(&**name),
            AuthMethod::Jwt | AuthMethod::Secret(_) => None,
        })
    }

    /// Whether a signed webhook is one of the accepted proofs (the body is
    /// then held before authentication).
    pub fn accepts_hmac(&self) -> bool {
        self.hmac_names().next().is_some()
    }
}

impl fmt::Display for AuthRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        let mut parts: Vec<String> = Vec::new();
        for method in &self.methods {
            parts.push(match method {
                AuthMethod::Jwt if self.anonymous => "optional".into(),
                AuthMethod::Jwt => "jwt".into(),
                AuthMethod::Secret(name) => format!("secret:{name}"),
                AuthMethod::Hmac(name) => format!("hmac:{name}"),
            });
        }
        f.write_str(&parts.join("|"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<AuthRequirement, String> {
        AuthRequirement::parse(&values.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn modes() {
        assert!(parse(&["none"]).unwrap().is_none());
        let optional = parse(&["optional"]).unwrap();
        assert!(optional.anonymous && optional.accepts_jwt());
        let any = parse(&["jwt", "secret:vapi"]).unwrap();
        assert!(!any.anonymous);
        assert_eq!(any.secret_names().collect::<Vec<_>>(), vec!["vapi"]);
        assert_eq!(any.to_string(), "jwt|secret:vapi");
        assert!(parse(&["none", "jwt"]).is_err());
        assert!(parse(&["secret:"]).is_err());
        assert!(parse(&["basic"]).is_err());
        let signed = parse(&["hmac:stripe", "jwt"]).unwrap();
        assert!(signed.accepts_hmac());
        assert_eq!(signed.hmac_names().collect::<Vec<_>>(), vec!["stripe"]);
        assert_eq!(signed.to_string(), "hmac:stripe|jwt");
        assert!(parse(&["hmac:"]).is_err());
    }
}
