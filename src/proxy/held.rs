//! The body of a signed-webhook route, held before authentication: the
//! signature covers the exact bytes, so they are read whole (at most the
//! route's `max_body`, within its timeout) and verified before any byte
//! goes upstream, then forwarded unchanged. Every other route streams.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;

use super::reject::Reject;
use crate::policy::body::{self, BodyError, BodyProgress, ClientBody, RequestBody};
use crate::policy::limits;
use crate::route::Route;

/// The request with its body as the upstream will get it, and the held
/// bytes when the route accepts `hmac:` (beyond `max_body`: 413, and the
/// upstream is never contacted).
pub async fn hold_body(
    req: Request<RequestBody>,
    route: &Route,
    progress: &Arc<BodyProgress>,
) -> Result<(Request<ClientBody>, Option<Bytes>), Reject> {
    if !route.auth.accepts_hmac() {
        return Ok((req.map(ClientBody::Streaming), None));
    }
    limits::check_declared_body(req.headers(), route.max_body)?;
    let (parts, incoming) = req.into_parts();
    let read = body::hold(incoming, route.max_body, progress.clone());
    let bytes = match tokio::time::timeout(route.timeout, read).await {
        Err(_) => return Err(Reject::Timeout),
        Ok(Err(BodyError::TooLarge)) => return Err(Reject::BodyTooLarge),
        Ok(Err(BodyError::Client(_) | BodyError::MalformedTrailers)) => {
            return Err(Reject::ClientBodyAborted);
        }
        Ok(Ok(bytes)) => bytes,
    };
    let req = Request::from_parts(parts, ClientBody::Held(bytes.clone()));
    Ok((req, Some(bytes)))
}
