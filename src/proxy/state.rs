//! What every request shares: the current policy generation (swapped
//! atomically on reload), the metrics, and the draining flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use super::upstream::Upstream;
use crate::config::Policy;
use crate::observe::metrics::Metrics;

/// One loaded policy and the upstream client built for it. A request takes
/// one snapshot at its start and finishes under it.
#[derive(Debug)]
pub struct Generation {
    /// The compiled policy.
    pub policy: Arc<Policy>,
    /// The pooled client for `policy.upstream`.
    pub upstream: Arc<Upstream>,
}

/// State shared by listeners, requests, admin and reload.
#[derive(Debug)]
pub struct Shared {
    /// The current generation.
    pub current: ArcSwap<Generation>,
    /// The server's own registry.
    pub metrics: Arc<Metrics>,
    draining: AtomicBool,
}

impl Shared {
    /// Wraps the first generation.
    pub fn new(generation: Generation, metrics: Arc<Metrics>) -> Self {
        Self {
            current: ArcSwap::from_pointee(generation),
            metrics,
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
