//! The upstream side: one pooled keep-alive client per policy generation
//! (at most `[upstream] max_connections` sockets, see `capped`), the request
//! rewrite (URI, `Host`, hop-by-hop, `X-Forwarded-*`), the route's total
//! deadline on the response headers, and the one upgrade palisade tunnels:
//! a WebSocket handshake (GET over HTTP/1.1); any other `Upgrade` (`h2c`
//! above all, which would carry further requests past every policy) is
//! dropped from the forwarded request.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::IntGauge;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::breaker::{self, Breaker};
use super::capped::{Capped, SlotWait};
use super::conn::TunnelWatch;
use super::reject::Reject;
use super::retry::{self, RetryBudget};
use crate::config::UpstreamPolicy;
use crate::observe::metrics::Metrics;
use crate::policy::body::{BodyError, BodyProgress, LimitedBody, UpstreamBody, collect_for_replay};
use crate::policy::headers::{strip_fixed_hop_by_hop, strip_hop_by_hop};
use crate::policy::{forward, limits};

type HttpClient = Client<HttpsConnector<Capped<HttpConnector>>, UpstreamBody>;

/// The pooled client and where it points, with the upstream's breaker and
/// retry budget (kept across reloads that leave `[upstream]` unchanged).
pub struct Upstream {
    client: HttpClient,
    policy: UpstreamPolicy,
    breaker: Breaker,
    budget: RetryBudget,
    slot_wait: SlotWait,
}

/// What a route asks of one exchange.
pub struct ExchangeSettings<'a> {
    /// Retries allowed on this route (`retry = false` turns them off).
    pub retry: bool,
    /// `max_body` of the route.
    pub max_body: u64,
    /// The route's total deadline for response headers, retries included.
    pub deadline: Duration,
    /// Metrics, and the route label for them.
    pub metrics: &'a Metrics,
    /// The route's name.
    pub route: &'a str,
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

/// What the rewrite needs to know about the client side.
pub struct ClientSide {
    /// The TCP peer.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy.
    pub peer_trusted: bool,
    /// Whether the client reached us over HTTPS.
    pub https: bool,
}

/// A successful exchange: the response and how long its headers took.
pub struct Exchange {
    /// The upstream's response (hop-by-hop headers removed).
    pub response: Response<Incoming>,
    /// Time until the response headers.
    pub elapsed: Duration,
}

impl Upstream {
    /// Builds the pooled client.
    pub fn new(policy: &UpstreamPolicy, circuit_gauge: Option<IntGauge>) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(policy.connect_timeout));
        let tls = match &policy.ca_file {
            None => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
                }
                let config = rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let slot_wait = SlotWait::default();
        let capped = Capped::new(http, policy.max_connections, slot_wait.clone());
        let connector = tls.https_or_http().enable_http1().wrap_connector(capped);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(policy.pool_idle_timeout)
            .pool_max_idle_per_host(policy.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            breaker: Breaker::new(policy.breaker.clone(), circuit_gauge),
            budget: RetryBudget::new(policy.retry.budget_percent),
            policy: policy.clone(),
            slot_wait,
        })
    }

    /// Sets how long a connection attempt may wait for a free socket under
    /// `max_connections`: the longest route timeout of the current policy
    /// (a request gives up at its own deadline; this bounds the connects
    /// the pool finishes in the background).
    pub fn set_slot_wait(&self, longest_timeout: Duration) {
        self.slot_wait.set(longest_timeout);
    }

    /// The upstream URI for a canonical path (after `strip_prefix`) and query.
    fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, Reject> {
        let base = &self.policy.base_path;
        let mut pq =
            String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(base);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::from_maybe_shared(pq).map_err(|_| Reject::NoRoute)?;
        Uri::builder()
            .scheme(self.policy.scheme.clone())
            .authority(self.policy.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| Reject::NoRoute)
    }

    /// Sends the request upstream and waits, up to the route's deadline,
    /// for the response headers: through the breaker, retried when the
    /// request can be replayed and the outcome is one `[upstream.retry]`
    /// names. The response body is never cut; only its headers are timed.
    pub async fn send(
        &self,
        req: Request<Incoming>,
        path: &str,
        client: &ClientSide,
        request_id: (&header::HeaderName, &HeaderValue),
        progress: Arc<BodyProgress>,
        attempt: ExchangeSettings<'_>,
    ) -> Result<Exchange, Reject> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + attempt.deadline;
        self.budget.deposit();
        let (mut parts, body) = req.into_parts();
        let websocket = requested_websocket(&parts);
        // What `Connection` named went before palisade set its headers.
        strip_fixed_hop_by_hop(&mut parts.headers);
        // Never forwarded, whatever `Connection` says: only a WebSocket
        // handshake may switch protocols, and it is rebuilt below.
        parts.headers.remove(header::UPGRADE);
        parts.headers.remove(&HTTP2_SETTINGS);
        let tunnel_watch = parts.extensions.remove::<TunnelWatch>();
        let client_upgrade = if websocket {
            // The request-side policy has passed; ask the upstream to
            // switch to WebSocket too.
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, WEBSOCKET.clone());
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        forward::set_forwarded(
            &mut parts.headers,
            client.peer,
            client.peer_trusted,
            client.https,
            client_host.as_ref(),
        );
        match (&client_host, self.policy.preserve_host) {
            (Some(host), true) => parts.headers.insert(header::HOST, host.clone()),
            _ => parts
                .headers
                .insert(header::HOST, self.policy.host_header.clone()),
        };
        parts
            .headers
            .insert(request_id.0.clone(), request_id.1.clone());
        let uri = self.uri(path, parts.uri.query())?;

        // A small body is read whole so that a retry can send it again.
        let settings = &self.policy.retry;
        let retries_allowed = attempt.retry
            && settings.attempts > 0
            && !websocket
            && retry::idempotent(&parts.method, &parts.headers);
        let declared = limits::declared_length(&parts.headers);
        let body_was_empty = body.is_end_stream();
        let replayable = retries_allowed
            && (body.is_end_stream() || declared.is_some_and(|n| n <= retry::MAX_REPLAY_BYTES));
        let mut streamed = None;
        let replay = if replayable && body.is_end_stream() {
            // No body at all (most GETs): nothing to read before sending.
            progress.complete.store(true, Ordering::Relaxed);
            Some(Bytes::new())
        } else if replayable {
            let read = collect_for_replay(body, attempt.max_body, progress.clone());
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(bytes)) => Some(bytes),
                Ok(Err(BodyError::TooLarge)) => return Err(Reject::BodyTooLarge),
                Ok(Err(BodyError::Client(_))) => return Err(Reject::ClientBodyAborted),
                Err(_) => return Err(Reject::Timeout),
            }
        } else {
            streamed = Some(UpstreamBody::Stream {
                body: LimitedBody::new(body, attempt.max_body, progress.clone()),
            });
            None
        };

        let mut tries = 0;
        loop {
            // Dropped unreported (the client left mid-exchange), a probe
            // counts as a failure: half-open never waits forever.
            let ticket = self
                .breaker
                .admit(std::time::Instant::now())
                .map_err(Reject::CircuitOpen)?;
            let body = match (&replay, streamed.take()) {
                (Some(bytes), _) => UpstreamBody::replay(bytes.clone()),
                (None, Some(stream)) => stream,
                (None, None) => return Err(Reject::Timeout),
            };
            let mut request = Request::new(body);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = uri.clone();
            *request.version_mut() = Version::HTTP_11;
            *request.headers_mut() = parts.headers.clone();
            let outcome =
                match tokio::time::timeout_at(deadline, self.client.request(request)).await {
                    Err(_) => Err(Reject::Timeout),
                    Ok(Err(error)) => Err(classify(&error, &progress)),
                    Ok(Ok(response)) => Ok(response),
                };
            // SPEC §2: 502/503/504, connect failures, resets and timeouts
            // only; a 500 a client provoked says nothing of the upstream, nor
            // does a timeout or reset while the client's own body was still
            // incomplete (a stalled upload), nor a body the client broke.
            let client_body_done =
                body_was_empty || replay.is_some() || progress.complete.load(Ordering::Relaxed);
            let verdict = match &outcome {
                Ok(response) => Some(!breaker::status_is_failure(response.status())),
                Err(Reject::Timeout | Reject::UpstreamReset(_)) if !client_body_done => None,
                Err(Reject::Timeout | Reject::UpstreamConnect(_) | Reject::UpstreamReset(_)) => {
                    Some(false)
                }
                Err(_) => None,
            };
            match verdict {
                Some(healthy) => ticket.record(healthy, std::time::Instant::now()),
                None => ticket.release(),
            }
            let retryable = match &outcome {
                Ok(response) => settings.on_status.contains(&response.status().as_u16()),
                Err(Reject::UpstreamConnect(_)) => settings.on_connect_failure,
                Err(Reject::UpstreamReset(_)) => settings.on_reset,
                Err(_) => false,
            };
            let more = replay.is_some() && retryable && tries < settings.attempts;
            if more && self.budget.withdraw() {
                let wait = retry::backoff(settings, tries);
                if tokio::time::Instant::now() + wait < deadline {
                    tries += 1;
                    attempt
                        .metrics
                        .upstream_retries
                        .with_label_values(&[attempt.route])
                        .inc();
                    tracing::debug!(
                        route = attempt.route,
                        try_number = tries + 1,
                        "retrying the upstream exchange"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            let mut response = outcome?;
            drop_conflicting_length(response.headers_mut());
            let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            match (client_upgrade, switching) {
                (Some(client_side), true) if switched_to_websocket(response.headers()) => {
                    strip_hop_by_hop(response.headers_mut());
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    response
                        .headers_mut()
                        .insert(header::UPGRADE, WEBSOCKET.clone());
                    tunnel(client_side, hyper::upgrade::on(&mut response), tunnel_watch);
                }
                // A switch nobody asked for (or to another protocol) never
                // becomes a tunnel, nor reaches the client as a 101.
                (_, true) => {
                    return Err(Reject::UpstreamReset(
                        "the upstream switched protocols unasked".into(),
                    ));
                }
                _ => strip_hop_by_hop(response.headers_mut()),
            }
            return Ok(Exchange {
                response,
                elapsed: started.elapsed(),
            });
        }
    }
}

static HTTP2_SETTINGS: header::HeaderName = header::HeaderName::from_static("http2-settings");
static WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

/// Whether any comma-separated token of any `name` line equals `token`.
fn has_token(headers: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request is a WebSocket handshake palisade may tunnel: GET
/// over HTTP/1.1 with `Connection: upgrade` and `Upgrade: websocket`
/// (RFC 6455 §4.1). Nothing else ever switches protocols through palisade.
fn requested_websocket(parts: &http::request::Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts.method == http::Method::GET
        && has_token(&parts.headers, header::CONNECTION, "upgrade")
        && has_token(&parts.headers, header::UPGRADE, "websocket")
}

/// Whether a 101 switches to WebSocket, the protocol palisade asked for.
fn switched_to_websocket(headers: &http::HeaderMap) -> bool {
    let mut values = headers.get_all(header::UPGRADE).iter();
    matches!(
        (values.next(), values.next()),
        (Some(only), None) if only.as_bytes().eq_ignore_ascii_case(b"websocket")
    )
}

/// RFC 9112 §6.3: a response with `Transfer-Encoding` is framed by it, and
/// its `Content-Length` must go; passed on, it would make the client cut
/// the body short (or read past it).
fn drop_conflicting_length(headers: &mut http::HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// Splices the client's and the upstream's upgraded connections until
/// either side closes, or no byte went either way for the connection's
/// `idle_timeout`. The client socket keeps its `max_connections` slot
/// until then (it owns it), and so does the upstream socket its own.
fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    watch: Option<TunnelWatch>,
) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream);
        match (client, upstream) {
            (Ok(client), Ok(upstream)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                let idle = async {
                    match &watch {
                        Some(watch) => watch.idle().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                        if let Err(error) = copied {
                            tracing::debug!(%error, "upgraded connection ended");
                        }
                    }
                    () = idle => tracing::debug!("idle upgraded connection closed"),
                }
            }
            (Err(error), _) | (_, Err(error)) => tracing::debug!(%error, "upgrade failed"),
        }
    });
}

/// Maps a client error to the rejection the client should see.
fn classify(error: &hyper_util::client::legacy::Error, progress: &BodyProgress) -> Reject {
    if progress.overflowed.load(Ordering::Relaxed) {
        return Reject::BodyTooLarge;
    }
    let chain = error_chain(error);
    if error.is_connect() {
        return Reject::UpstreamConnect(chain);
    }
    if caused_by_client_body(error) {
        return Reject::ClientBodyAborted;
    }
    Reject::UpstreamReset(chain)
}

/// Whether the exchange failed because the client's body stream did (a
/// [`BodyError`] somewhere in the chain): classified by type, so rewording
/// a message can never turn the client's 400 into a 502.
fn caused_by_client_body(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(inner) = current {
        if inner.downcast_ref::<BodyError>().is_some() {
            return true;
        }
        current = inner.source();
    }
    false
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
