//! The one function that turns a `Reject` into its response: status,
//! `application/problem+json` (RFC 9457) body and the headers its status
//! needs (`Allow`, `WWW-Authenticate`, `Retry-After`). Building a response
//! has no side effects; the request's record counts and logs it.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

use super::reject::Reject;
use super::response_body::ResponseBody;

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
}

/// The problem+json response for `reject`. In production `detail` is
/// generic; in development it says what failed.
pub fn problem(
    reject: &Reject,
    request_id: &HeaderValue,
    production: bool,
) -> Response<ResponseBody> {
    let shape = reject.describe();
    let specific;
    let detail = if production {
        shape.generic_detail
    } else {
        specific = reject.specific_detail();
        specific.as_str()
    };
    let body = ProblemBody {
        kind: format!("urn:palisade:problem:{}", shape.slug),
        title: shape.title,
        status: shape.status.as_u16(),
        detail,
        request_id: request_id.to_str().unwrap_or(""),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(ResponseBody::local(Bytes::from(json)));
    *response.status_mut() = shape.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match reject {
        Reject::MethodNotAllowed(allow) => {
            if let Ok(value) = HeaderValue::from_str(allow) {
                headers.insert(header::ALLOW, value);
            }
        }
        Reject::Unauthorized(denied) => {
            if let Some(challenge) = denied.challenge.header_value() {
                headers.insert(header::WWW_AUTHENTICATE, challenge);
            }
        }
        _ => {}
    }
    if let Some(wait) = shape.retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(wait)),
        );
    }
    response
}

/// `Retry-After` in whole seconds, at least 1, rounded up: a client that
/// waits what it says must not arrive while the wait is still on (a
/// circuit open for 2.4 s more says 3, not 2).
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

/// An empty response with `status` (CORS preflight answers).
pub fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::local(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<ResponseBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        use std::time::Duration;
        assert_eq!(retry_after_secs(Duration::from_millis(2400)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[tokio::test]
    async fn production_detail_is_generic() {
        let id = HeaderValue::from_static("rid-1");
        let reject = Reject::UpstreamConnect("connection refused to 10.1.2.3:8000".into());
        let prod = problem(&reject, &id, true);
        assert_eq!(prod.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            prod.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let json = body_json(prod).await;
        assert_eq!(json["status"], 502);
        assert_eq!(json["request_id"], "rid-1");
        assert!(!json["detail"].as_str().unwrap().contains("10.1.2.3"));
        let dev = body_json(problem(&reject, &id, false)).await;
        assert!(dev["detail"].as_str().unwrap().contains("10.1.2.3"));
    }

    #[tokio::test]
    async fn method_not_allowed_has_allow() {
        let id = HeaderValue::from_static("x");
        let response = problem(&Reject::MethodNotAllowed("GET, HEAD".into()), &id, true);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }
}
