//! The one error type of the request path. Every stage's failure becomes a
//! `Reject` (each policy module's own rejection converts with `?`).
//! [`Reject::describe`] is the one table of how each reads: status, metric
//! labels, title, generic detail. `respond::problem` is the one function
//! that turns a `Reject` into a response; `observe::access` records it
//! (metrics and one log line) when the response ends.

use std::time::Duration;

use http::StatusCode;

use crate::policy::auth::Denied;
use crate::policy::head::HeadRejection;
use crate::policy::ip_list::IpRefused;
use crate::policy::limits::LimitRejection;
use crate::policy::ratelimit::RateRefusal;
use crate::policy::require_claims::ClaimsRefusal;
use crate::policy::sanitize::PathRejection;
use crate::policy::tenant::TenantMismatch;

/// Why palisade answered instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// 400: ambiguous or malicious path.
    BadPath(PathRejection),
    /// 400: a `Host` or method that HTTP does not allow (RFC 9112 §3.2,
    /// RFC 9110 §9.1).
    BadHead(HeadRejection),
    /// 414.
    UriTooLong,
    /// 431.
    HeaderTooLarge,
    /// 404: deny by default.
    NoRoute,
    /// 405 with this `Allow` value.
    MethodNotAllowed(String),
    /// 401: missing or invalid credentials.
    Unauthorized(Denied),
    /// 403: the tenant in the path is not the caller's.
    TenantMismatch,
    /// 403: the client IP is not allowed on the route (`allow_ips` /
    /// `deny_ips`).
    IpRefused,
    /// 403: the token's claims do not match the route's `require_claims`
    /// (the claim's name, never its value).
    ClaimsMismatch(std::sync::Arc<str>),
    /// 429: a rate limit refused it; retry after this long.
    RateLimited(Duration),
    /// 503: the rate-limit backend failed and `on_redis_error = "deny"`.
    RateLimitUnavailable,
    /// 413: declared or streamed body over `max_body`.
    BodyTooLarge,
    /// 400: the client's body stream broke before it was complete.
    ClientBodyAborted,
    /// 504: no response headers within the route's timeout.
    Timeout,
    /// 502: could not connect (the detail names the cause in development).
    UpstreamConnect(String),
    /// 502: the upstream broke the exchange.
    UpstreamReset(String),
    /// 503: the upstream's circuit is open; retry after this long.
    CircuitOpen(Duration),
    /// 500: palisade could not build the upstream request (a bug, never
    /// the client's doing).
    Internal(&'static str),
}

impl From<PathRejection> for Reject {
    fn from(why: PathRejection) -> Self {
        Self::BadPath(why)
    }
}

impl From<HeadRejection> for Reject {
    fn from(why: HeadRejection) -> Self {
        Self::BadHead(why)
    }
}

impl From<LimitRejection> for Reject {
    fn from(why: LimitRejection) -> Self {
        match why {
            LimitRejection::UriTooLong => Self::UriTooLong,
            LimitRejection::HeaderTooLarge => Self::HeaderTooLarge,
            LimitRejection::BodyTooLarge => Self::BodyTooLarge,
        }
    }
}

impl From<TenantMismatch> for Reject {
    fn from(_: TenantMismatch) -> Self {
        Self::TenantMismatch
    }
}

impl From<IpRefused> for Reject {
    fn from(_: IpRefused) -> Self {
        Self::IpRefused
    }
}

impl From<ClaimsRefusal> for Reject {
    fn from(why: ClaimsRefusal) -> Self {
        match why {
            ClaimsRefusal::NoToken(denied) => Self::Unauthorized(denied),
            ClaimsRefusal::Mismatch(claim) => Self::ClaimsMismatch(claim),
        }
    }
}

impl From<RateRefusal> for Reject {
    fn from(why: RateRefusal) -> Self {
        match why {
            RateRefusal::Limited(wait) => Self::RateLimited(wait),
            RateRefusal::Unavailable => Self::RateLimitUnavailable,
        }
    }
}

impl From<Denied> for Reject {
    fn from(denied: Denied) -> Self {
        Self::Unauthorized(denied)
    }
}

/// How a `Reject` reads on the wire and in metrics.
pub struct Description {
    /// HTTP status.
    pub status: StatusCode,
    /// `palisade_rejections_total` reason, when it counts as a rejection.
    pub rejection_reason: Option<&'static str>,
    /// `palisade_upstream_errors_total` kind, when the upstream failed.
    pub upstream_error: Option<&'static str>,
    /// `palisade_auth_failures_total` reason, when authentication failed.
    pub auth_reason: Option<&'static str>,
    /// Short stable slug for `type`.
    pub slug: &'static str,
    /// RFC 9457 `title`.
    pub title: &'static str,
    /// `detail` in production: never reveals internals.
    pub generic_detail: &'static str,
    /// `Retry-After`, if any.
    pub retry_after: Option<Duration>,
}

impl Reject {
    /// The wire and metric shape of this rejection.
    pub fn describe(&self) -> Description {
        let mut description = self.shape();
        description.upstream_error = match self {
            Reject::Timeout => Some("timeout"),
            Reject::UpstreamConnect(_) => Some("connect"),
            Reject::UpstreamReset(_) => Some("reset"),
            _ => None,
        };
        if let Reject::Unauthorized(denied) = self {
            description.auth_reason = Some(denied.reason.as_str());
        }
        description
    }

    /// Status, slug, title, detail and retry hint, one row per variant.
    fn shape(&self) -> Description {
        use Reject::*;
        let p = |status, reason, slug, title, detail| Description {
            status,
            rejection_reason: reason,
            upstream_error: None,
            auth_reason: None,
            slug,
            title,
            generic_detail: detail,
            retry_after: None,
        };
        match self {
            BadPath(_) => p(
                StatusCode::BAD_REQUEST,
                Some("path"),
                "bad-path",
                "Bad Request",
                "The request path is not acceptable.",
            ),
            BadHead(why) => p(
                StatusCode::BAD_REQUEST,
                Some(why.reason()),
                "bad-request",
                "Bad Request",
                "The request is not acceptable.",
            ),
            UriTooLong => p(
                StatusCode::URI_TOO_LONG,
                Some("uri_too_long"),
                "uri-too-long",
                "URI Too Long",
                "The request URI is too long.",
            ),
            HeaderTooLarge => p(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                Some("header_too_large"),
                "header-too-large",
                "Request Header Fields Too Large",
                "The request headers are too large.",
            ),
            NoRoute => p(
                StatusCode::NOT_FOUND,
                Some("no_route"),
                "not-found",
                "Not Found",
                "No route matches this request.",
            ),
            MethodNotAllowed(_) => p(
                StatusCode::METHOD_NOT_ALLOWED,
                Some("method"),
                "method-not-allowed",
                "Method Not Allowed",
                "This method is not allowed on this path.",
            ),
            Unauthorized(_) => p(
                StatusCode::UNAUTHORIZED,
                None,
                "unauthorized",
                "Unauthorized",
                "Valid credentials are required.",
            ),
            TenantMismatch => p(
                StatusCode::FORBIDDEN,
                Some("tenant"),
                "forbidden",
                "Forbidden",
                "This resource belongs to another tenant.",
            ),
            IpRefused => p(
                StatusCode::FORBIDDEN,
                Some("ip"),
                "forbidden",
                "Forbidden",
                "Requests from this address are not allowed here.",
            ),
            ClaimsMismatch(_) => p(
                StatusCode::FORBIDDEN,
                Some("claims"),
                "forbidden",
                "Forbidden",
                "The credentials do not grant access to this resource.",
            ),
            RateLimited(wait) => Description {
                retry_after: Some(*wait),
                ..p(
                    StatusCode::TOO_MANY_REQUESTS,
                    None,
                    "rate-limited",
                    "Too Many Requests",
                    "Too many requests; retry later.",
                )
            },
            CircuitOpen(wait) => Description {
                retry_after: Some(*wait),
                ..p(
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    "circuit-open",
                    "Service Unavailable",
                    "The upstream is failing; retry later.",
                )
            },
            RateLimitUnavailable => p(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "ratelimit-unavailable",
                "Service Unavailable",
                "Rate limiting is unavailable; retry later.",
            ),
            BodyTooLarge => p(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("body_too_large"),
                "body-too-large",
                "Content Too Large",
                "The request body is too large.",
            ),
            ClientBodyAborted => p(
                StatusCode::BAD_REQUEST,
                None,
                "body-aborted",
                "Bad Request",
                "The request body ended before it was complete.",
            ),
            Timeout => p(
                StatusCode::GATEWAY_TIMEOUT,
                Some("timeout"),
                "timeout",
                "Gateway Timeout",
                "The upstream did not answer in time.",
            ),
            UpstreamConnect(_) => p(
                StatusCode::BAD_GATEWAY,
                None,
                "upstream-unreachable",
                "Bad Gateway",
                "The upstream could not be reached.",
            ),
            UpstreamReset(_) => p(
                StatusCode::BAD_GATEWAY,
                None,
                "upstream-error",
                "Bad Gateway",
                "The upstream failed to answer.",
            ),
            Internal(_) => p(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "internal-error",
                "Internal Server Error",
                "palisade could not forward this request.",
            ),
        }
    }

    /// What failed, for development mode and logs (never secrets).
    pub fn specific_detail(&self) -> String {
        use Reject::*;
        match self {
            BadPath(why) => format!("Rejected path: {why}."),
            BadHead(why) => format!("Rejected request: {why}."),
            MethodNotAllowed(allow) => format!("Allowed methods: {allow}."),
            UpstreamConnect(why) => format!("Could not connect to the upstream: {why}."),
            UpstreamReset(why) => format!("The upstream exchange failed: {why}."),
            Timeout => "No upstream response headers within the route's timeout.".into(),
            Unauthorized(denied) => format!("Authentication failed: {}.", denied.reason.as_str()),
            TenantMismatch => {
                "The tenant in the path does not match the token's tenant claim.".into()
            }
            ClaimsMismatch(claim) => {
                format!("The token's claim \"{claim}\" does not match the route's require_claims.")
            }
            Internal(why) => format!("Could not build the upstream request: {why}."),
            other => other.shape().generic_detail.to_string(),
        }
    }
}
