//! JWKS: the public keys of asymmetric tokens, from `jwks_file` or
//! `jwks_url`. Fetched before `/readyz` turns 200, refreshed every
//! `jwks_refresh`, refetched at once on an unknown `kid` (single flight, at
//! most once per 10 s); when a fetch fails the last good key set stays.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Unknown-`kid` refetches happen at most this often.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1 << 20;

/// A `jwks_file` is read up to one byte past [`MAX_JWKS_BYTES`].
const CAPPED: u64 = MAX_JWKS_BYTES as u64 + 1;

/// The `jwks_file` at `path`, refused past the cap a `jwks_url` body has
/// too (a key set is a few KiB); read at most one byte past it, so a huge
/// file is told apart without reading all of it. Synchronous: start-up
/// calls it directly, the refresher through `spawn_blocking`.
fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(CAPPED).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "{} is larger than {MAX_JWKS_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Key families, to refuse a token whose `alg` does not fit its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RS*, PS*.
    Rsa,
    /// ES256, ES384.
    Ec,
    /// EdDSA.
    Okp,
    /// Symmetric keys are never taken from a JWKS.
    Oct,
}

impl KeyKind {
    /// The family an algorithm needs.
    pub fn for_algorithm(alg: Algorithm) -> Self {
        use Algorithm::*;
        match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Self::Rsa,
            ES256 | ES384 => Self::Ec,
            EdDSA => Self::Okp,
            _ => Self::Oct,
        }
    }
}

/// One usable public key.
pub struct JwksKey {
    /// The verification key.
    pub key: DecodingKey,
    /// Its family.
    pub kind: KeyKind,
    /// The `alg` the JWK pins, if it does.
    pub alg: Option<Algorithm>,
}

/// A parsed key set.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<JwksKey>>,
    all: Vec<Arc<JwksKey>>,
}

impl KeySet {
    /// Parses a JWKS document; keys it cannot use are skipped.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = KeySet::default();
        for jwk in &set.keys {
            let kind = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyKind::Rsa,
                AlgorithmParameters::EllipticCurve(_) => KeyKind::Ec,
                AlgorithmParameters::OctetKeyPair(_) => KeyKind::Okp,
                // Symmetric keys in a public key set are refused outright.
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            let entry = Arc::new(JwksKey { key, kind, alg });
            if let Some(kid) = &jwk.common.key_id {
                keys.by_kid.insert(kid.clone(), entry.clone());
            }
            keys.all.push(entry);
        }
        if keys.all.is_empty() {
            return Err("the JWKS holds no usable public key".into());
        }
        Ok(keys)
    }

    /// The key for `kid`; without a `kid`, the only key of the family.
    pub fn find(&self, kid: Option<&str>, kind: KeyKind) -> Option<Arc<JwksKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => {
                let mut fitting = self.all.iter().filter(|k| k.kind == kind);
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// Where keys come from.
#[derive(Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// `jwks_file`.
    File(PathBuf),
    /// `jwks_url`.
    Url(Uri),
}

/// Shown with the URL's userinfo and query redacted (they may hold an API key).
impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(uri) => f.write_str(&crate::config::redact::url(&uri.to_string())),
        }
    }
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwksSource({self})")
    }
}

/// The current key set and how to refresh it.
pub struct JwksStore {
    /// Where keys come from.
    pub source: JwksSource,
    keys: ArcSwap<KeySet>,
    loaded: AtomicBool,
    refresh_every: Duration,
    last_kid_refresh: Mutex<Option<Instant>>,
    single_flight: tokio::sync::Mutex<()>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl std::fmt::Debug for JwksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JwksStore({}, {} keys)",
            self.source,
            self.keys.load().len()
        )
    }
}

impl JwksStore {
    /// A store; a file source is read now (its errors are config errors).
    pub fn new(source: JwksSource, refresh_every: Duration) -> Result<Self, String> {
        let store = Self::unread(source, refresh_every);
        if let JwksSource::File(path) = &store.source {
            store.install(KeySet::parse(&read_capped(path)?)?);
        }
        Ok(store)
    }

    /// A store with no keys yet, its source not read: for a reload whose
    /// `jwks_file` is the running one's and cannot be read just now, which
    /// keeps the running keys ([`adopt`](Self::adopt)) instead of failing.
    pub fn unread(source: JwksSource, refresh_every: Duration) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            source,
            keys: ArcSwap::from_pointee(KeySet::default()),
            loaded: AtomicBool::new(false),
            refresh_every,
            last_kid_refresh: Mutex::new(None),
            single_flight: tokio::sync::Mutex::new(()),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    fn install(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
        self.loaded.store(true, Ordering::SeqCst);
    }

    /// Takes over another store's keys (a reload with the same source), so
    /// readiness and verification do not wait for a fetch.
    pub fn adopt(&self, previous: &JwksStore) {
        if previous.source == self.source && previous.is_ready() {
            self.keys.store(previous.keys.load_full());
            self.loaded.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a key set was loaded at least once.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Fetches (or re-reads) the key set; on failure the last good one stays.
    pub async fn fetch(&self) -> Result<usize, String> {
        let bytes = match &self.source {
            JwksSource::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_capped(&path))
                    .await
                    .map_err(|e| format!("reading the jwks_file stopped: {e}"))??
            }
            JwksSource::Url(uri) => self.download(uri).await?,
        };
        let keys = KeySet::parse(&bytes)?;
        let count = keys.len();
        self.install(keys);
        Ok(count)
    }

    async fn download(&self, uri: &Uri) -> Result<Vec<u8>, String> {
        let request = Request::get(uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = tokio::time::timeout(
            FETCH_TIMEOUT,
            Limited::new(response.into_body(), MAX_JWKS_BYTES).collect(),
        )
        .await
        .map_err(|_| "timed out reading the body".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(body.to_bytes().to_vec())
    }

    /// On an unknown `kid`: refetch at once, at most once per 10 s; callers
    /// arriving meanwhile wait for the fetch in flight instead of starting one.
    pub async fn refresh_for_unknown_kid(&self) {
        let _flight = self.single_flight.lock().await;
        let now = Instant::now();
        {
            let Ok(mut last) = self.last_kid_refresh.lock() else {
                return;
            };
            if last.is_some_and(|t| now.duration_since(t) < UNKNOWN_KID_REFRESH_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        match self.fetch().await {
            Ok(count) => tracing::info!(keys = count, "JWKS refetched for an unknown kid"),
            Err(error) => tracing::warn!(%error, "JWKS refetch failed; keeping the last good keys"),
        }
    }

    /// Starts the periodic refresh; it ends when the store is dropped
    /// (replaced by a reload). Until the first success it retries every
    /// second. A `jwks_file` is read again every `jwks_refresh` too (it was
    /// read when the store was made): a key removed from the file stops
    /// verifying within one period, as one removed from a `jwks_url` does.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let read_already = matches!(self.source, JwksSource::File(_)) && self.is_ready();
        let first_wait = read_already.then_some(self.refresh_every);
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(wait) = first_wait {
                tokio::time::sleep(wait).await;
            }
            loop {
                let Some(store) = weak.upgrade() else { return };
                let wait = match store.fetch().await {
                    Ok(count) => {
                        tracing::debug!(keys = count, "JWKS refreshed");
                        store.refresh_every
                    }
                    Err(error) => {
                        tracing::warn!(%error, "JWKS fetch failed; keeping the last good keys");
                        if store.is_ready() {
                            store.refresh_every
                        } else {
                            Duration::from_secs(1)
                        }
                    }
                };
                drop(store);
                tokio::time::sleep(wait).await;
            }
        });
    }
}
