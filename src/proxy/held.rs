//! The body of a signed-webhook route, held before authentication: the
//! signature covers the exact bytes, so they are read whole (at most the
//! route's `max_body`, within its timeout) and verified before any byte
//! goes upstream, then forwarded unchanged. Every other route streams.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;

use super::reject::Reject;
use crate::policy::body::{self, BodyError, BodyProgress, RequestBody};
use crate::policy::limits;
use crate::route::Route;

/// The body of a route that accepts `hmac:`, read whole out of `req`
/// (beyond `max_body`: 413, and the upstream is never contacted); the
/// caller sends these bytes in its place. Every other route's body streams
/// and never comes here. The request is lent, not moved through: passed
/// in and handed back, every request was copied four times more
/// (`bench/RESULTS.md`, session 24).
pub async fn hold_body(
    req: &mut Request<RequestBody>,
    route: &Route,
    progress: &Arc<BodyProgress>,
) -> Result<Bytes, Reject> {
    limits::check_declared_body(req.headers(), route.max_body)?;
    let incoming = std::mem::replace(req.body_mut(), RequestBody::Empty);
    let read = body::hold(incoming, route.max_body, progress.clone());
    let bytes = match tokio::time::timeout(route.timeout, read).await {
        Err(_) => return Err(Reject::Timeout),
        Ok(Err(BodyError::TooLarge)) => return Err(Reject::BodyTooLarge),
        Ok(Err(BodyError::Client(_) | BodyError::MalformedTrailers)) => {
            return Err(Reject::ClientBodyAborted);
        }
        Ok(Ok(bytes)) => bytes,
    };
    Ok(bytes)
}
