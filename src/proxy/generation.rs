//! Building a policy generation: the compiled policy with the upstream
//! client and the rate-limit engine it runs with, reusing what it shares
//! with the generation before it (the upstream's breaker and pool when
//! `[upstream]` is unchanged, a Redis backend built from the same settings,
//! the memory limiters). Used at start-up and by every reload.

use std::sync::Arc;

use super::server::StartError;
use super::state::{Generation, Persistent};
use super::upstream::Upstream;
use crate::config::Policy;
use crate::observe::metrics::Metrics;
use crate::observe::trace::export::SpanQueue;
use crate::policy::auth::hmac::replay::ReplayGuard;
use crate::policy::ratelimit::redis::RedisBackend;
use crate::policy::ratelimit::{RateLimitEngine, RedisTarget};

/// Builds the generation (policy, upstream client, rate limiting) for a
/// policy, reusing the persistent state it shares with earlier generations.
pub fn build(
    policy: Policy,
    persistent: &Persistent,
    metrics: &Metrics,
    upstream: Option<Arc<Upstream>>,
) -> Result<Generation, StartError> {
    let upstream = match upstream {
        Some(upstream) => upstream,
        None => {
            let gauge = metrics
                .circuit_state
                .with_label_values(&[policy.upstream.authority.as_str()]);
            Arc::new(Upstream::new(&policy.upstream, Some(gauge)).map_err(StartError::Backend)?)
        }
    };
    let redis = match &policy.ratelimit.redis {
        None => None,
        Some(RedisTarget { url, cluster }) => {
            let settings = (
                RedisBackend::identity_of(url, cluster),
                policy.ratelimit.redis_timeout,
                policy.ratelimit.redis_ca.clone(),
            );
            let mut slot = persistent
                .redis
                .lock()
                .map_err(|_| StartError::Backend("redis state poisoned".into()))?;
            match slot
                .as_ref()
                .filter(|(built_from, _)| *built_from == settings)
            {
                Some((_, existing)) => Some(existing.clone()),
                None => {
                    let backend = Arc::new(
                        RedisBackend::new(
                            url,
                            cluster,
                            policy.ratelimit.redis_timeout,
                            policy.ratelimit.redis_ca.as_deref(),
                        )
                        .map_err(StartError::Backend)?,
                    );
                    *slot = Some((settings, backend.clone()));
                    Some(backend)
                }
            }
        }
    };
    let replay = ReplayGuard::new(
        persistent.seen.clone(),
        redis
            .clone()
            .map(|backend| (backend, policy.ratelimit.key_prefix.clone())),
    );
    let ratelimit = RateLimitEngine::new(
        policy.ratelimit.clone(),
        policy.routes.routes(),
        &persistent.limiters,
        redis,
    );
    let spans = span_queue(&policy, persistent, metrics)?;
    Ok(Generation {
        policy: Arc::new(policy),
        upstream,
        ratelimit,
        replay,
        spans,
    })
}

/// The span exporter for `policy`: the current one while its settings are
/// unchanged, else a new one (the one replaced flushes what it holds and
/// stops once the last generation using it is gone).
fn span_queue(
    policy: &Policy,
    persistent: &Persistent,
    metrics: &Metrics,
) -> Result<Option<Arc<SpanQueue>>, StartError> {
    let mut slot = persistent
        .spans
        .lock()
        .map_err(|_| StartError::Backend("span exporter state poisoned".into()))?;
    let Some(settings) = &policy.tracing.export else {
        if slot.take().is_some() {
            tracing::info!("span export turned off; the exporter flushes and stops");
        }
        return Ok(None);
    };
    if let Some(queue) = slot.as_ref().filter(|q| q.settings() == settings) {
        return Ok(Some(queue.clone()));
    }
    let queue = SpanQueue::start(settings, metrics.trace_spans_dropped.clone())
        .map_err(StartError::Backend)?;
    if slot.replace(queue.clone()).is_some() {
        tracing::info!("span export settings changed; a new exporter took over");
    }
    Ok(Some(queue))
}

/// Starts what a generation needs in the background (JWKS refresh).
pub fn start_background(generation: &Generation) {
    if let Some(store) = generation.policy.auth.jwks() {
        store.spawn_refresher();
    }
}
