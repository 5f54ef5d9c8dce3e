//! What every request shares: the current policy generation (swapped
//! atomically on reload), the metrics, and the draining flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use std::sync::Mutex;

use super::conn::ConnLimit;
use super::upstream::Upstream;
use crate::config::Policy;
use crate::observe::metrics::Metrics;
use crate::observe::trace::export::SpanQueue;
use crate::policy::auth::hmac::replay::{ReplayGuard, SeenSignatures};
use crate::policy::ratelimit::RateLimitEngine;
use crate::policy::ratelimit::local::LimiterRegistry;
use crate::policy::ratelimit::redis::RedisBackend;

/// One loaded policy and the upstream client built for it. A request takes
/// one snapshot at its start and finishes under it.
#[derive(Debug)]
pub struct Generation {
    /// The compiled policy.
    pub policy: Arc<Policy>,
    /// The pooled client for `policy.upstream`.
    pub upstream: Arc<Upstream>,
    /// Rate limiting for `policy`'s routes.
    pub ratelimit: RateLimitEngine,
    /// Where signed webhooks' accepted signatures are remembered.
    pub replay: ReplayGuard,
    /// Where sampled spans go (`[tracing] otlp_endpoint`), if anywhere.
    pub spans: Option<Arc<SpanQueue>>,
}

/// State that outlives config generations: rate-limit buckets (so an
/// unchanged limit keeps its state across a reload) and the Redis connection.
#[derive(Debug, Default)]
pub struct Persistent {
    /// Memory-backend limiters by limit identity.
    pub limiters: Arc<LimiterRegistry>,
    /// The Redis backend of the current config and what it was built from,
    /// reused while that is unchanged.
    pub redis: Mutex<Option<(RedisSettings, Arc<RedisBackend>)>>,
    /// Signed webhooks' accepted signatures, in memory (the memory backend,
    /// and the fallback when Redis fails).
    pub seen: Arc<SeenSignatures>,
    /// The span exporter of the current config, reused while its settings
    /// are unchanged (a reload that changes them builds a new one).
    pub spans: Mutex<Option<Arc<SpanQueue>>>,
}

/// What a Redis backend is built from: its target, `redis_timeout` and CA.
/// A reload that changes any of them builds a new backend (the timeout and
/// CA are fixed in a backend, so reusing it would ignore the new values).
pub type RedisSettings = (String, std::time::Duration, Option<Vec<u8>>);

/// State shared by listeners, requests, admin and reload.
pub struct Shared {
    /// The current generation.
    pub current: ArcSwap<Generation>,
    /// The server's own registry.
    pub metrics: Arc<Metrics>,
    /// What survives reloads.
    pub persistent: Arc<Persistent>,
    /// The HTTPS listener's certificate; re-read from its files on reload
    /// (`None`: the listener is plain HTTP, fixed until a restart).
    pub tls: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// `server.max_connections`, resized by reload.
    pub connections: Arc<ConnLimit>,
    draining: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("current", &self.current)
            .field("tls", &self.tls.load().is_some())
            .field("draining", &self.is_draining())
            .finish()
    }
}

impl Shared {
    /// Wraps the first generation.
    pub fn new(generation: Generation, metrics: Arc<Metrics>, persistent: Arc<Persistent>) -> Self {
        let connections = ConnLimit::new(generation.policy.server.max_connections);
        Self {
            connections,
            current: ArcSwap::from_pointee(generation),
            metrics,
            persistent,
            tls: arc_swap::ArcSwapOption::empty(),
            draining: AtomicBool::new(false),
        }
    }

    /// Marks the server as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
