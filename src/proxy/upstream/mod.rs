//! The upstream side of an exchange, in the order it happens:
//! `rewrite` (the request head the upstream receives), the body prepared
//! for replay or streaming (here), `attempts` (breaker, deadline, retries),
//! `upgrade` (the response as the client may see it; WebSocket tunnels),
//! over `client` (the pooled connections: `pool`; palisade's own HTTP/1.1
//! exchange, `raw`, over the socket as `socket` keeps it).

mod attempts;
mod client;
mod deadline;
mod pool;
mod raw;
mod rewrite;
mod socket;
mod upgrade;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntGauge;

use self::attempts::{Head, PreparedBody};
use self::client::UpstreamClient;
pub use self::client::ca_roots;
pub use self::pool::PooledBody;
pub use self::rewrite::ForwardTarget;
use super::breaker::Breaker;
use super::reject::Reject;
use super::response_body::BoxError;
use super::retry::{self, RetryBudget};
use crate::config::UpstreamPolicy;
use crate::policy::body::{
    BodyError, BodyProgress, ClientBody, LimitedBody, RequestBody, UpstreamBody, collect_for_replay,
};
use crate::policy::limits;
use crate::policy::response_headers::UpstreamLines;

/// The pooled client and where it points, with the upstream's breaker and
/// retry budget (kept across reloads that leave `[upstream]` unchanged).
pub struct Upstream {
    client: UpstreamClient,
    policy: UpstreamPolicy,
    breaker: Breaker,
    budget: RetryBudget,
}

/// What a route asks of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeSettings {
    /// Retries allowed on this route (`retry = false` turns them off).
    pub retry: bool,
    /// `max_body` of the route.
    pub max_body: u64,
    /// The route's total deadline for response headers, retries included.
    pub deadline: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Upstream({}://{})",
            self.policy.scheme, self.policy.authority
        )
    }
}

/// The body of an upstream response: on a pooled connection (which it
/// drives and gives back), or the empty body of a WebSocket `101`.
pub enum ExchangeBody {
    /// A pooled connection's response.
    Pooled(PooledBody),
    /// The handshake response of a tunnel.
    Direct(Incoming),
}

impl ExchangeBody {
    /// The response's header lines, when palisade's exchange kept them as
    /// bytes (once).
    pub fn take_upstream_lines(&mut self) -> Option<UpstreamLines> {
        match self {
            ExchangeBody::Pooled(body) => body.take_upstream_lines(),
            ExchangeBody::Direct(_) => None,
        }
    }
}

impl Body for ExchangeBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        match self.get_mut() {
            ExchangeBody::Pooled(body) => std::pin::Pin::new(body).poll_frame(cx),
            ExchangeBody::Direct(body) => std::pin::Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ExchangeBody::Pooled(body) => body.is_end_stream(),
            ExchangeBody::Direct(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ExchangeBody::Pooled(body) => body.size_hint(),
            ExchangeBody::Direct(body) => body.size_hint(),
        }
    }
}

/// A successful exchange: the response and how long its headers took.
pub struct Exchange {
    /// The upstream's response (hop-by-hop headers removed).
    pub response: Response<ExchangeBody>,
    /// Time until the response headers.
    pub elapsed: Duration,
}

impl Upstream {
    /// The upstream's state for `/readyz`: `status` is `unreachable` when
    /// the last connection attempt failed, `circuit_open` while the
    /// breaker refuses requests, else `ok`; `circuit` is the breaker's
    /// phase.
    pub fn readiness(&self) -> (&'static str, &'static str) {
        let circuit = self.breaker.phase_name(std::time::Instant::now());
        let status = if self.client.is_unreachable() {
            "unreachable"
        } else if circuit == "open" {
            "circuit_open"
        } else {
            "ok"
        };
        (status, circuit)
    }

    /// Builds the pooled client.
    pub fn new(policy: &UpstreamPolicy, circuit_gauge: Option<IntGauge>) -> Result<Self, String> {
        Ok(Self {
            client: UpstreamClient::new(policy)?,
            breaker: Breaker::new(policy.breaker.clone(), circuit_gauge),
            budget: RetryBudget::new(policy.retry.budget_percent),
            policy: policy.clone(),
        })
    }

    /// Sends the request upstream and waits, up to the route's deadline,
    /// for the response headers. The response body is never cut; only its
    /// headers are timed. Retries are counted into `retries`. The request
    /// is lent: its parts are taken out of it (moved in whole, it was
    /// copied once more). `held`: the body a signed-webhook route read
    /// whole and verified, sent in place of the request's own (see
    /// `proxy::held`).
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps each argument twice in its future; see proxy::pipeline"
    )]
    pub fn send(
        &self,
        req: &mut Request<RequestBody>,
        held: Option<bytes::Bytes>,
        target: &ForwardTarget<'_>,
        settings: ExchangeSettings,
        progress: Arc<BodyProgress>,
        retries: &mut u32,
    ) -> impl Future<Output = Result<Exchange, Reject>> {
        async move {
            // One clock read for the start, the deadline and the first try's
            // breaker admission (a read is about 36 ns here, and there were 13
            // per request).
            let started = Instant::now();
            let deadline = tokio::time::Instant::from_std(started) + settings.deadline;
            self.budget.deposit();
            // The request's parts are taken out of it (taking leaves
            // empty values, which allocate nothing).
            let body = std::mem::replace(req.body_mut(), RequestBody::Empty);
            let body = match held {
                Some(bytes) => ClientBody::Held(bytes),
                None => ClientBody::Streaming(body),
            };
            let mut head = Head::of_client(
                std::mem::take(req.method_mut()),
                std::mem::take(req.uri_mut()),
                std::mem::take(req.headers_mut()),
            );
            let version = req.version();
            let client_upgrade = rewrite::rewrite(
                &mut head,
                version,
                req.extensions_mut(),
                target,
                &self.policy,
            )?;
            let replayable = settings.retry
                && self.policy.retry.attempts > 0
                && !head.upgrade
                && retry::idempotent(&head.method, &head.headers);
            let body = prepare_body(body, &head, replayable, settings.max_body, &progress);
            let body = tokio::time::timeout_at(deadline, body)
                .await
                .map_err(|_| Reject::Timeout)??;
            if let PreparedBody::Once { empty: false, .. } = &body
                && !head.headers.contains_key(http::header::CONTENT_LENGTH)
            {
                // A body of unknown length goes chunked whatever the
                // method: left to hyper, a GET's (or HEAD's, DELETE's)
                // would be sent as no body at all, silently dropped.
                head.headers.insert(
                    http::header::TRANSFER_ENCODING,
                    http::HeaderValue::from_static("chunked"),
                );
            }
            // A body read whole before the first try took time of its own.
            let admitted = match &body {
                PreparedBody::Replay(bytes) if !bytes.is_empty() => Instant::now(),
                _ => started,
            };
            let (response, answered) = self
                .exchange(
                    &mut head,
                    body,
                    &progress,
                    (admitted, deadline),
                    target.connection.0,
                    retries,
                )
                .await?;
            let response = upgrade::finish_response(
                response,
                client_upgrade.on_upgrade,
                client_upgrade.tunnel_watch,
            )?;
            Ok(Exchange {
                response,
                elapsed: answered.saturating_duration_since(started),
            })
        }
    }
}

/// A small body of a request that may be retried is read whole so a retry
/// can send it again; any other body streams through the limit, once. A
/// body already held (signed webhooks) is sent as it is.
async fn prepare_body(
    body: ClientBody,
    head: &Head,
    replayable: bool,
    max_body: u64,
    progress: &Arc<BodyProgress>,
) -> Result<PreparedBody, Reject> {
    let body = match body {
        ClientBody::Held(bytes) if replayable => return Ok(PreparedBody::Replay(bytes)),
        ClientBody::Held(bytes) => {
            let empty = bytes.is_empty();
            let body = UpstreamBody::replay(bytes);
            return Ok(PreparedBody::Once { body, empty });
        }
        ClientBody::Streaming(RequestBody::Buffered(Some(bytes))) => {
            // Read whole by palisade's HTTP/1 reader: exactly its
            // `Content-Length`, which the pipeline held to the route's
            // `max_body` before the exchange.
            progress
                .bytes
                .store(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            progress
                .complete
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(if replayable {
                PreparedBody::Replay(bytes)
            } else {
                PreparedBody::Whole(bytes)
            });
        }
        ClientBody::Streaming(body) => body,
    };
    let empty = body.is_end_stream();
    if replayable && empty {
        // No body at all (most GETs): nothing to read before sending.
        return Ok(PreparedBody::Replay(bytes::Bytes::new()));
    }
    // Looked up only past the early returns: most requests take one.
    let small =
        limits::declared_length(&head.headers).is_some_and(|n| n <= retry::MAX_REPLAY_BYTES);
    if replayable && small {
        return match collect_for_replay(body, max_body, progress.clone()).await {
            Ok(bytes) => Ok(PreparedBody::Replay(bytes)),
            Err(BodyError::TooLarge) => Err(Reject::BodyTooLarge),
            Err(BodyError::Client(_) | BodyError::MalformedTrailers) => {
                Err(Reject::ClientBodyAborted)
            }
        };
    }
    let body = UpstreamBody::Stream {
        body: LimitedBody::new(body, max_body, progress.clone()),
    };
    Ok(PreparedBody::Once { body, empty })
}
