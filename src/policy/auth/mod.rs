//! Authentication: who may call a route. Compiled at load (`AuthPolicy`),
//! evaluated once per request by [`authenticate`]: any one accepted proof
//! suffices; with `optional`, no credentials at all means anonymous, but
//! credentials that fail are always a 401.

pub mod cache;
pub mod claims;
pub mod hmac;
pub mod jwks;
pub mod jwt;
pub mod requirement;
pub mod secret;
pub mod sources;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

pub use requirement::{AuthMethod, AuthRequirement};

/// Why authentication failed: the `reason` label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials (or `Authorization` that is not `Bearer <token>`).
    Missing,
    /// Not a well-formed JWT (or an unreadable session cookie).
    Malformed,
    /// Signature does not verify.
    BadSignature,
    /// `exp` passed (beyond leeway).
    Expired,
    /// `nbf` or `iat` in the future (beyond leeway).
    NotYetValid,
    /// `iss` differs from `issuer`.
    WrongIssuer,
    /// `aud` not among `audiences`.
    WrongAudience,
    /// A `require`d claim is absent.
    MissingClaim,
    /// No key with the token's `kid`, even after a refresh.
    UnknownKid,
    /// `alg` not allowed (incl. `none`), or not the key's algorithm.
    AlgNotAllowed,
    /// A shared secret that matches no configured value.
    BadSecret,
    /// A signed webhook's timestamp is outside the tolerance (or unreadable).
    StaleTimestamp,
    /// A signed webhook's signature was already accepted (`replay = true`).
    Replayed,
    /// Different tokens in two places (two `Authorization` lines, a token
    /// cookie twice, a header and a cookie): palisade would verify one while
    /// the backend might read the other.
    Ambiguous,
}

impl AuthFailure {
    /// The metric label / log reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::UnknownKid => "unknown_kid",
            Self::AlgNotAllowed => "alg_not_allowed",
            Self::BadSecret => "bad_secret",
            Self::Ambiguous => "ambiguous",
            Self::StaleTimestamp => "stale_timestamp",
            Self::Replayed => "replayed",
        }
    }
}

/// The `WWW-Authenticate` challenge a 401 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// Secret-only routes: no challenge.
    None,
    /// `Bearer realm="palisade"`.
    Bearer,
    /// `Bearer realm="palisade", error="invalid_token"`.
    InvalidToken,
}

impl Challenge {
    /// The header value, if any.
    pub fn header_value(self) -> Option<HeaderValue> {
        match self {
            Self::None => None,
            Self::Bearer => Some(HeaderValue::from_static("Bearer realm=\"palisade\"")),
            Self::InvalidToken => Some(HeaderValue::from_static(
                "Bearer realm=\"palisade\", error=\"invalid_token\"",
            )),
        }
    }
}

/// Who the caller proved to be.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No credentials on an `optional` or `none` route.
    Anonymous,
    /// A verified JWT's claims.
    Jwt(Arc<claims::VerifiedClaims>),
    /// A shared secret (by name).
    Secret(Arc<str>),
    /// A signed webhook (by verifier name).
    Hmac(Arc<str>),
}

impl Identity {
    /// The verified claims, if a JWT was used.
    pub fn claims(&self) -> Option<&Map<String, Value>> {
        match self {
            Self::Jwt(claims) => Some(&**claims),
            _ => None,
        }
    }

    /// The `sub` claim (the `user` of logs and rate limits).
    pub fn subject(&self) -> Option<&str> {
        self.claims()?.get("sub")?.as_str()
    }
}

/// `[auth]`, compiled.
#[derive(Debug, Default)]
pub struct AuthPolicy {
    /// `[auth.jwt]`, if configured.
    pub jwt: Option<Arc<jwt::JwtVerifier>>,
    /// `[auth.secrets.*]` in name order.
    pub secrets: Vec<secret::SecretCheck>,
    /// `[auth.hmac.*]` in name order.
    pub hmac: Vec<hmac::HmacVerifier>,
}

/// What `hmac:` methods verify beyond the headers: the body the pipeline
/// held, and where accepted signatures are remembered.
#[derive(Clone, Copy)]
pub struct Signed<'a> {
    /// The exact body bytes received.
    pub body: &'a [u8],
    /// Replay protection's store.
    pub replay: &'a hmac::replay::ReplayGuard,
}

/// Shared-secret header values the client presented, captured before the
/// identity-header stripping removes them (aligned with `AuthPolicy::secrets`).
pub type PresentedSecrets = Vec<PresentedSecret>;

/// One secret header as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedSecret {
    /// Not sent.
    Absent,
    /// Sent once, or several times with the same value.
    One(HeaderValue),
    /// Sent several times with different values: which one counts is
    /// ambiguous (401, as for two different tokens), never the first
    /// line winning while another copy says something else.
    Ambiguous,
}

impl AuthPolicy {
    /// The JWKS key store, when `[auth.jwt]` takes keys from `jwks_file`
    /// or `jwks_url`: what reloads carry over, readiness waits for, and
    /// the refresher keeps current.
    pub fn jwks(&self) -> Option<&Arc<jwks::JwksStore>> {
        self.jwt.as_ref().and_then(|jwt| jwt.jwks.as_ref())
    }

    /// Whether authentication reads the header `name`: a shared secret's,
    /// an `hmac:` signature, timestamp or id header, a `header:` token
    /// source. A client's `Connection` may not remove it (SPEC §3).
    pub fn reads_header(&self, name: &HeaderName) -> bool {
        self.secrets.iter().any(|secret| secret.header == name)
            || self
                .hmac
                .iter()
                .any(|hmac| hmac.header_names().any(|header| header == name))
            || self.jwt.as_ref().is_some_and(|jwt| jwt.reads_header(name))
    }

    /// Takes the secret headers' values out of the request.
    pub fn capture_secrets(&self, headers: &HeaderMap) -> PresentedSecrets {
        self.secrets
            .iter()
            .map(|s| {
                let mut values = headers.get_all(&s.header).iter();
                match values.next() {
                    None => PresentedSecret::Absent,
                    Some(first) if values.all(|other| other == first) => {
                        PresentedSecret::One(first.clone())
                    }
                    Some(_) => PresentedSecret::Ambiguous,
                }
            })
            .collect()
    }
}

/// A failed authentication: why, and which challenge to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The reason (metric label).
    pub reason: AuthFailure,
    /// The challenge of the 401.
    pub challenge: Challenge,
}

/// The identity headers for a route (its `forward_claims`), decided with
/// authentication: a verified claim that cannot be a header value is a 401
/// like any other broken token, never a request forwarded without it.
pub fn identity_headers(
    identity: &Identity,
    forward: &claims::ForwardClaims,
) -> Result<Option<claims::IdentityHeaders>, Denied> {
    match identity {
        Identity::Jwt(verified) => verified
            .identity_headers(forward)
            .map(Some)
            .map_err(|reason| Denied {
                reason,
                challenge: Challenge::InvalidToken,
            }),
        _ => Ok(None),
    }
}

/// Evaluates a route's requirement against the request. `signed` is the
/// held body for routes that accept `hmac:` (without it, those methods
/// count as missing).
pub async fn authenticate(
    policy: &AuthPolicy,
    requirement: &AuthRequirement,
    headers: &HeaderMap,
    presented: &PresentedSecrets,
    signed: Option<Signed<'_>>,
) -> Result<Identity, Denied> {
    if requirement.is_none() {
        return Ok(Identity::Anonymous);
    }
    let mut first_failure: Option<AuthFailure> = None;
    let mut token_failed = false;
    for method in &requirement.methods {
        let outcome = match method {
            AuthMethod::Jwt => try_jwt(policy, headers, &mut token_failed).await,
            AuthMethod::Secret(name) => {
                let index = policy.secrets.iter().position(|s| s.name == *name);
                match index.map(|i| (i, presented.get(i))) {
                    None | Some((_, None | Some(PresentedSecret::Absent))) => {
                        Err(AuthFailure::Missing)
                    }
                    Some((_, Some(PresentedSecret::Ambiguous))) => Err(AuthFailure::Ambiguous),
                    Some((i, Some(PresentedSecret::One(value)))) => policy.secrets[i]
                        .check(value)
                        .map(|()| Identity::Secret(name.clone())),
                }
            }
            AuthMethod::Hmac(name) => try_hmac(policy, name, headers, signed).await,
        };
        match outcome {
            Ok(identity) => return Ok(identity),
            Err(AuthFailure::Missing) => {}
            Err(failure) => {
                first_failure.get_or_insert(failure);
            }
        }
    }
    let challenge = if !requirement.accepts_jwt() {
        Challenge::None
    } else if token_failed {
        Challenge::InvalidToken
    } else {
        Challenge::Bearer
    };
    match first_failure {
        None if requirement.anonymous => Ok(Identity::Anonymous),
        None => Err(Denied {
            reason: AuthFailure::Missing,
            challenge,
        }),
        Some(reason) => Err(Denied { reason, challenge }),
    }
}

/// The JWT method; `token_failed` is set when a token was presented and
/// did not verify (the challenge then says `invalid_token`).
async fn try_jwt(
    policy: &AuthPolicy,
    headers: &HeaderMap,
    token_failed: &mut bool,
) -> Result<Identity, AuthFailure> {
    let Some(verifier) = &policy.jwt else {
        return Err(AuthFailure::Missing);
    };
    if let Some(claims) = verifier.cached_bearer(headers) {
        return Ok(Identity::Jwt(claims));
    }
    match verifier.token_from(headers) {
        Ok(None) => Err(AuthFailure::Missing),
        Err(failure) => {
            *token_failed = true;
            Err(failure)
        }
        Ok(Some(token)) => {
            let verified = verifier.verify(&token).await.map(Identity::Jwt);
            *token_failed |= verified.is_err();
            verified
        }
    }
}

/// An `hmac:NAME` method: the signature over the held body, then (with
/// `replay = true`) whether it was accepted before.
async fn try_hmac(
    policy: &AuthPolicy,
    name: &Arc<str>,
    headers: &HeaderMap,
    signed: Option<Signed<'_>>,
) -> Result<Identity, AuthFailure> {
    let verifier = policy.hmac.iter().find(|v| v.name == *name);
    let (Some(verifier), Some(signed)) = (verifier, signed) else {
        return Err(AuthFailure::Missing);
    };
    let accepted = verifier.verify(headers, signed.body, std::time::SystemTime::now())?;
    if let Some(accepted) = accepted
        && !signed.replay.first_sighting(name, &accepted).await
    {
        return Err(AuthFailure::Replayed);
    }
    Ok(Identity::Hmac(name.clone()))
}
