//! The upstream side: one pooled keep-alive client per policy generation,
//! the request rewrite (URI, `Host`, hop-by-hop, `X-Forwarded-*`), and the
//! route's total deadline on the response headers.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::reject::Reject;
use crate::config::UpstreamPolicy;
use crate::policy::body::{BodyProgress, LimitedBody};
use crate::policy::forward;
use crate::policy::headers::strip_hop_by_hop;

type HttpClient = Client<HttpsConnector<HttpConnector>, LimitedBody>;

/// The pooled client and where it points.
pub struct Upstream {
    client: HttpClient,
    policy: UpstreamPolicy,
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
    pub fn new(policy: &UpstreamPolicy) -> Result<Self, String> {
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
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(policy.pool_idle_timeout)
            .pool_max_idle_per_host(policy.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            policy: policy.clone(),
        })
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

    /// Sends the request upstream and waits, up to `deadline`, for the
    /// response headers. The body streams through `LimitedBody`.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        req: Request<Incoming>,
        path: &str,
        client: &ClientSide,
        request_id: (&header::HeaderName, &HeaderValue),
        max_body: u64,
        progress: Arc<BodyProgress>,
        deadline: Duration,
    ) -> Result<Exchange, Reject> {
        let (mut parts, body) = req.into_parts();
        let upgrade = requested_upgrade(&parts);
        strip_hop_by_hop(&mut parts.headers);
        let client_upgrade = match &upgrade {
            Some(protocol) => {
                // WebSocket and other upgrades: the request-side policy has
                // passed; ask the upstream to switch protocols too.
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, protocol.clone());
                parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
            }
            None => None,
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
        parts.uri = self.uri(path, parts.uri.query())?;
        parts.version = Version::HTTP_11;
        let request =
            Request::from_parts(parts, LimitedBody::new(body, max_body, progress.clone()));
        let started = Instant::now();
        let result = tokio::time::timeout(deadline, self.client.request(request)).await;
        let elapsed = started.elapsed();
        match result {
            Err(_) => Err(Reject::Timeout),
            Ok(Err(error)) => Err(classify(&error, &progress)),
            Ok(Ok(mut response)) => {
                let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                match (client_upgrade, switching) {
                    (Some(client_side), true) => {
                        let protocol = response.headers().get(header::UPGRADE).cloned();
                        strip_hop_by_hop(response.headers_mut());
                        if let Some(protocol) = protocol {
                            response
                                .headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                            response.headers_mut().insert(header::UPGRADE, protocol);
                        }
                        tunnel(client_side, hyper::upgrade::on(&mut response));
                    }
                    _ => strip_hop_by_hop(response.headers_mut()),
                }
                Ok(Exchange { response, elapsed })
            }
        }
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade`
/// plus `Upgrade`), if any.
fn requested_upgrade(parts: &http::request::Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let wants = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        parts.headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Splices the client's and the upstream's upgraded connections until
/// either side closes.
fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream);
        match (client, upstream) {
            (Ok(client), Ok(upstream)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                {
                    tracing::debug!(%error, "upgraded connection ended");
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
    if chain.contains("client body stream failed") {
        return Reject::ClientBodyAborted;
    }
    Reject::UpstreamReset(chain)
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
