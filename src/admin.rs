//! The admin listener (its own address, never proxied): `/metrics`,
//! `/healthz`, `/readyz` (503 while draining; it keeps answering during the
//! drain), `/config` (effective config, secrets redacted).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::response_body::ResponseBody;
use crate::proxy::state::Shared;

/// Serves until `proxy_done` turns true (the proxy has drained).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut proxy_done: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            // The proxy's end: drained, or its task gone (a panic) and
            // the sender with it (`changed` would then fail at once, for
            // ever).
            changed = proxy_done.changed() => match changed {
                Ok(()) if !*proxy_done.borrow() => continue,
                _ => break,
            },
        };
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(shared.clone(), req));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::local(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// The answer to one admin request; to `HEAD`, without its content
/// (RFC 9110 §9.3.2: hyper's HTTP/2 server would send it in DATA frames,
/// a protocol error to the client).
async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let head = req.method() == Method::HEAD;
    let mut response = answer_get(&shared, &req);
    if head {
        response.body_mut().drop_local_content();
    }
    Ok(response)
}

fn answer_get(shared: &Shared, req: &Request<Incoming>) -> Response<ResponseBody> {
    let json = "application/json";
    // Every admin endpoint only reads: another method changes nothing and
    // gets 405, as on Envoy's admin listener (a `POST /config` that
    // answered 200 suggested it had done something).
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let production = shared.current.load().policy.server.production;
        return crate::proxy::respond::problem(
            &crate::proxy::reject::Reject::MethodNotAllowed("GET, HEAD".into()),
            &crate::policy::request_id::new_id(),
            production,
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let (body, content_type) = shared.metrics.render();
            reply(StatusCode::OK, &content_type, body)
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            let generation = shared.current.load();
            let draining = shared.is_draining();
            let upstream = &generation.policy.upstream;
            let jwks = generation.policy.auth.jwks();
            let jwks_ready = jwks.is_none_or(|store| store.is_ready());
            let status_text = match (draining, jwks_ready) {
                (true, _) => "draining",
                (false, false) => "starting",
                (false, true) => "ready",
            };
            let (upstream_status, circuit) = generation.upstream.readiness();
            let body = serde_json::json!({
                "status": status_text,
                "upstream": {
                    "url": format!("{}://{}{}", upstream.scheme, upstream.authority, upstream.base_path),
                    "status": upstream_status,
                    "circuit": circuit,
                },
                "jwks": match jwks {
                    None => serde_json::json!({ "status": "not_configured" }),
                    Some(store) => serde_json::json!({
                        "status": if store.is_ready() { "loaded" } else { "pending" },
                        "keys": store.keys().len(),
                    }),
                },
                "redis": match generation.ratelimit.redis() {
                    None => serde_json::json!({ "status": "not_configured" }),
                    Some(redis) if redis.is_degraded() => serde_json::json!({ "status": "degraded", "fallback": format!("{:?}", generation.policy.ratelimit.on_redis_error).to_lowercase() }),
                    Some(_) => serde_json::json!({ "status": "ok" }),
                },
            });
            let status = if draining || !jwks_ready {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            reply(status, json, body.to_string())
        }
        "/config" => {
            let generation = shared.current.load();
            match serde_json::to_string_pretty(&*generation.policy.effective) {
                Ok(text) => reply(StatusCode::OK, json, text),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "cannot render config\n",
                ),
            }
        }
        _ => not_found(shared),
    }
}

/// A path the admin listener does not serve: problem+json like every
/// other error palisade produces (SPEC §3), with a fresh request ID.
fn not_found(shared: &Shared) -> Response<ResponseBody> {
    let production = shared.current.load().policy.server.production;
    crate::proxy::respond::problem(
        &crate::proxy::reject::Reject::NoRoute,
        &crate::policy::request_id::new_id(),
        production,
    )
}
