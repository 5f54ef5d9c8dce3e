//! Who the upstream is told is calling, end to end: strip, then set.
//!
//! First, before any stage reads a header, everything a client could use to
//! speak for palisade goes: what its `Connection` names (never a header
//! palisade relies on), the client-IP and forwarding headers only a trusted
//! proxy may send, and every identity header (`forward_claims` targets and
//! shared-secret headers, in any spelling). The shared secrets are captured
//! first: they are checked, never forwarded. Last, once every check has
//! passed, the verified claims are set, so nothing the client sent can
//! remove or replace them.

use http::HeaderMap;

use super::auth::claims::IdentityHeaders;
use super::auth::{self, Denied, Identity, PresentedSecrets, Signed};
use super::{forward, head};
use crate::config::Policy;
use crate::route::Route;

/// Cleans the client's headers (see the module docs) and returns the
/// shared-secret values it presented.
pub fn strip_client_headers(
    policy: &Policy,
    headers: &mut HeaderMap,
    peer_trusted: bool,
) -> PresentedSecrets {
    head::clean_client_headers(headers, |name| {
        name == policy.request_id.header
            || policy.auth.reads_header(name)
            || policy.routes.keys_a_limit(name)
    });
    forward::remove_client_claimed(headers, peer_trusted);
    let presented = if policy.auth.secrets.is_empty() {
        Vec::new()
    } else {
        policy.auth.capture_secrets(headers)
    };
    policy.stripped_headers.strip(headers);
    if policy.tracing.propagate {
        // palisade sets exactly one of each (SPEC §6.4).
        crate::observe::trace::strip_client_headers(headers);
    }
    presented
}

/// A caller that passed the route's authentication, and the identity
/// headers its claims become.
pub struct Verified {
    /// Who the caller proved to be.
    pub identity: Identity,
    /// The identity headers, set on the upstream request as palisade's
    /// own lines, after every check (`proxy::upstream::rewrite`'s
    /// `AddedLines`; the client's copies were stripped on arrival). Shared
    /// by every request of the token: never hashed into the request's map.
    pub headers: Option<IdentityHeaders>,
}

/// Authenticates the request for `route` and decides its identity headers
/// with it: a verified claim that cannot be a header value is a 401 like
/// any other broken token, never a request forwarded without it.
pub async fn verify(
    policy: &Policy,
    route: &Route,
    headers: &HeaderMap,
    presented: &PresentedSecrets,
    signed: Option<Signed<'_>>,
) -> Result<Verified, Denied> {
    let identity =
        auth::authenticate(&policy.auth, &route.auth, headers, presented, signed).await?;
    let headers = auth::identity_headers(&identity, &route.forward_claims)?;
    Ok(Verified { identity, headers })
}
