//! The Redis backend's cool-down after errors: while Redis is failing it is
//! skipped (and `on_redis_error` decides), with one probe at a time once
//! the back-off has passed.

use std::time::{Duration, Instant};

/// Cool-down state after errors.
#[derive(Debug)]
pub struct Health {
    skip_until: Option<Instant>,
    backoff: Duration,
    probing: bool,
}

/// First cool-down after an error.
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);
/// Longest cool-down.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(30);

impl Default for Health {
    fn default() -> Self {
        Self {
            skip_until: None,
            backoff: MIN_COOLDOWN,
            probing: false,
        }
    }
}

impl Health {
    /// Whether to ask Redis now. While cooling down: no; when the cool-down
    /// is over, yes for exactly one probe at a time.
    pub fn should_try(&mut self, now: Instant) -> bool {
        match self.skip_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if self.probing => false,
            Some(_) => {
                self.probing = true;
                true
            }
        }
    }

    /// Redis answered: the outage (if any) is over.
    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// Redis failed: skip it for the current back-off, then double it. A
    /// failure during a cool-down is of a call sent before it began (the
    /// requests of one batch, or in flight together, fail together): the
    /// cool-down already counts it, and the back-off doubles once per
    /// failed probe, not once per request.
    pub fn failed(&mut self, now: Instant) {
        if self.skip_until.is_some_and(|until| now < until) {
            return;
        }
        self.skip_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_COOLDOWN);
        self.probing = false;
    }

    /// Whether Redis is being skipped now.
    pub fn is_degraded(&self, now: Instant) -> bool {
        self.skip_until.is_some_and(|until| now < until) || self.probing
    }
}
