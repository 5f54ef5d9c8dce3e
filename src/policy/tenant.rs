//! Tenant scoping: a captured path parameter must equal a verified claim
//! (403 otherwise), so one restaurant's user cannot read another's data.

use super::auth::{Identity, claims};
use super::sanitize::decode_segment;
use crate::route::Params;

/// `tenant = { param, claim }`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRule {
    /// The `{name}` capture of the route's pattern.
    pub param: String,
    /// The claim (dotted path) it must equal.
    pub claim: String,
}

/// 403: the tenant in the path is not the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantMismatch;

/// The tenant stage: a route without a rule admits everyone it
/// authenticated; a route with one admits only its own tenant.
pub fn check(
    rule: Option<&TenantRule>,
    params: &Params,
    identity: &Identity,
) -> Result<(), TenantMismatch> {
    match rule {
        Some(rule) if !rule.admits(params, identity) => Err(TenantMismatch),
        _ => Ok(()),
    }
}

impl TenantRule {
    /// Whether the captured parameter (escapes decoded) equals the verified
    /// claim. No capture, no claim, or a `null` claim never match.
    pub fn admits(&self, params: &Params, identity: &Identity) -> bool {
        let in_path = params
            .iter()
            .find(|(name, _)| **name == *self.param)
            .map(|(_, value)| decode_segment(value));
        let in_token = identity
            .claims()
            .and_then(|c| claims::lookup(c, &self.claim))
            .filter(|v| !v.is_null())
            .map(claims::as_text);
        in_path.is_some() && in_path == in_token
    }
}
