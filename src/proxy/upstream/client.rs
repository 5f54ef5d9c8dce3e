//! The client toward the upstream: the connector (at most `[upstream]
//! max_connections` sockets, see `capped`; TLS by rustls with the webpki
//! roots or `ca_file`), the pool of keep-alive connections (`pool`), and
//! the failure of one exchange told by type: could not connect, the
//! client's own body broke, or the upstream broke the exchange.

use std::sync::Arc;

use http::uri::Uri;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::attempts::Outgoing;
use super::pool::{Pool, PooledBody};
use crate::config::UpstreamPolicy;
use crate::config::choices::Http1Engine;
use crate::policy::body::{BodyError, UpstreamBody};
use crate::proxy::capped::Slots;

/// The upstream's connection pool and connector.
pub struct UpstreamClient {
    pool: Arc<Pool>,
}

/// Why one exchange failed, by type (never by message text).
#[derive(Debug)]
pub enum ClientFailure {
    /// No connection could be made.
    Connect(String),
    /// The client's request body failed (too large or broken).
    ClientBody,
    /// The upstream broke the exchange after connecting.
    Reset(String),
    /// A reused connection closed with no byte of an answer: the
    /// upstream's keep-alive timer and the request crossed on the wire
    /// (RFC 9112 §9.3.1). A request that may be retried goes again at once
    /// (`attempts`); any other gets 502 as for a reset.
    Unanswered(String),
}

impl UpstreamClient {
    /// Whether the last attempt to open a connection failed.
    pub fn is_unreachable(&self) -> bool {
        self.pool.is_unreachable()
    }

    /// Builds the pool for `policy`.
    pub fn new(policy: &UpstreamPolicy) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(policy.connect_timeout));
        let tls = match &policy.ca_file {
            None => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
            Some(path) => {
                let roots = ca_roots(path)
                    .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
                let config = rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let target = Uri::builder()
            .scheme(policy.scheme.clone())
            .authority(policy.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("upstream.url: {e}"))?;
        let pool = Pool::new(
            connector,
            target,
            Slots::new(policy.max_connections),
            policy.pool_max_idle,
            policy.pool_idle_timeout,
            policy.http1_engine == Http1Engine::Palisade,
        );
        Ok(Self {
            pool: Arc::new(pool),
        })
    }

    /// One exchange on a pooled connection, up to the response headers
    /// (the pool's own future, not one wrapped around it); `now` is the
    /// try's start.
    pub fn request(
        &self,
        outgoing: Outgoing<'_>,
        now: std::time::Instant,
    ) -> impl Future<Output = Result<Response<PooledBody>, ClientFailure>> {
        self.pool.send(outgoing, now)
    }

    /// A WebSocket handshake, on a connection of its own.
    pub async fn request_upgrade(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ClientFailure> {
        self.pool.send_upgrade(request).await
    }
}

impl ClientFailure {
    /// Classifies an exchange that failed after the connection was made.
    pub fn from_hyper(error: &hyper::Error) -> Self {
        if caused_by_client_body(error) {
            ClientFailure::ClientBody
        } else {
            ClientFailure::Reset(error_chain(error))
        }
    }
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

/// An error and its sources, one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The roots of `upstream.ca_file`: every certificate of the PEM file
/// (none is an error). `check` calls it too, so it refuses what `run` would.
pub fn ca_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    for cert in certs {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    Ok(roots)
}
