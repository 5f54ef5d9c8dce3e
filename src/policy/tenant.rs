//! Tenant scoping: a captured path parameter must equal a verified claim
//! (403 otherwise), so one restaurant's user cannot read another's data.

/// `tenant = { param, claim }`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRule {
    /// The `{name}` capture of the route's pattern.
    pub param: String,
    /// The claim (dotted path) it must equal.
    pub claim: String,
}
