//! `RequestCtx`: what the stages of one request learn, so that no later
//! stage looks anything up again, and what the response stage and the
//! request's record need at the end.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;

use crate::observe::access::RequestRecord;
use crate::policy::ratelimit::RateHeaders;
use crate::route::Route;

/// Per-request context, filled in as the stages run.
pub struct RequestCtx {
    /// The matched route (carried, never looked up again).
    pub route: Option<Arc<Route>>,
    /// The TCP peer.
    pub peer: IpAddr,
    /// Whether the peer is in `trusted_proxies`.
    pub peer_trusted: bool,
    /// Whether the client reached palisade over HTTPS.
    pub https: bool,
    /// The request's `Origin`, for CORS.
    pub origin: Option<HeaderValue>,
    /// Whether palisade answered a CORS preflight.
    pub preflight: bool,
    /// The rate-limit headers every response of the route carries.
    pub rate_headers: Option<RateHeaders>,
    /// What the request did, recorded once when its response ends. Boxed
    /// from the start: the response's body takes it at the end, and a
    /// record moved by value was copied twice more per request (408 bytes).
    pub record: Box<RequestRecord>,
}

impl RequestCtx {
    /// Remembers the matched route (for the record too).
    pub fn set_route(&mut self, route: &Arc<Route>) {
        self.record.set_route(route);
        if let Some(trace) = self.record.trace.as_deref_mut() {
            trace.set_route(route);
        }
        self.route = Some(route.clone());
    }
}
