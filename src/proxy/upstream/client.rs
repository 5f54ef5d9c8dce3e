//! The pooled keep-alive connection to the upstream: at most
//! `[upstream] max_connections` sockets (see `capped`), TLS by rustls with
//! the webpki roots or `ca_file`, and the failure of one exchange told by
//! type: could not connect, the client's own body broke, or the upstream
//! broke the exchange.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::UpstreamPolicy;
use crate::policy::body::{BodyError, UpstreamBody};
use crate::proxy::capped::{Capped, SlotWait};

type HttpClient = Client<HttpsConnector<Capped<HttpConnector>>, UpstreamBody>;

/// The upstream's connection pool.
pub struct UpstreamClient {
    client: HttpClient,
    slot_wait: SlotWait,
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
}

impl UpstreamClient {
    /// Builds the pool for `policy`.
    pub fn new(policy: &UpstreamPolicy) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(policy.connect_timeout));
        let tls = match &policy.ca_file {
            None => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
            Some(path) => {
                let error =
                    |e: &dyn std::fmt::Display| format!("upstream.ca_file {}: {e}", path.display());
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| error(&e))?;
                for cert in certs {
                    roots.add(cert).map_err(|e| error(&e))?;
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
        Ok(Self { client, slot_wait })
    }

    /// How long a connection attempt may wait for a free socket.
    pub fn set_slot_wait(&self, wait: Duration) {
        self.slot_wait.set(wait);
    }

    /// One exchange, up to the response headers.
    pub async fn request(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ClientFailure> {
        self.client.request(request).await.map_err(|error| {
            if error.is_connect() {
                ClientFailure::Connect(error_chain(&error))
            } else if caused_by_client_body(&error) {
                ClientFailure::ClientBody
            } else {
                ClientFailure::Reset(error_chain(&error))
            }
        })
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
