//! The upstream circuit breaker: when too many exchanges fail, stop sending
//! for a while instead of piling more load on a sick upstream.
//!
//! States and transitions:
//! 1. **closed**: every exchange is counted in a sliding window (per-second
//!    buckets). With at least `min_requests` counted and `failure_percent`
//!    of them failed (5xx from the upstream, connect failures, resets,
//!    timeouts), it opens.
//! 2. **open**: nothing is sent for `open_for`; requests get 503 with
//!    `Retry-After`. When the time is up it turns half-open.
//! 3. **half-open**: `half_open_probes` requests go through as probes; one
//!    failure re-opens it, that many successes close it (with a fresh window).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntGauge;

/// `[upstream.circuit_breaker]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Off: every request is admitted.
    pub enabled: bool,
    /// Failure share (1..=100) that opens the circuit.
    pub failure_percent: u32,
    /// Exchanges counted before the share means anything.
    pub min_requests: u32,
    /// Length of the sliding window.
    pub window: Duration,
    /// How long it stays open.
    pub open_for: Duration,
    /// Probes that decide in half-open.
    pub half_open_probes: u32,
}

/// Permission to send one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Closed (or disabled): counted in the window.
    Normal,
    /// Half-open: its outcome decides the state.
    Probe,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probes_left: u32, successes: u32 },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// (second since `epoch`, total, failures) per bucket.
    buckets: Vec<(u64, u32, u32)>,
    epoch: Instant,
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
    gauge: Option<IntGauge>,
}

impl Breaker {
    /// A closed breaker; `gauge` is `palisade_circuit_state{upstream}`.
    pub fn new(settings: BreakerSettings, gauge: Option<IntGauge>) -> Self {
        let slots = usize::try_from(settings.window.as_secs().max(1)).unwrap_or(1);
        let breaker = Self {
            settings,
            state: Mutex::new(State {
                phase: Phase::Closed,
                buckets: vec![(u64::MAX, 0, 0); slots],
                epoch: Instant::now(),
            }),
            gauge,
        };
        breaker.publish(0);
        breaker
    }

    fn publish(&self, value: i64) {
        if let Some(gauge) = &self.gauge {
            gauge.set(value);
        }
    }

    /// May an exchange be sent now? `Err` is how long until it might.
    pub fn admit(&self, now: Instant) -> Result<Pass, Duration> {
        if !self.settings.enabled {
            return Ok(Pass::Normal);
        }
        let Ok(mut state) = self.state.lock() else {
            return Ok(Pass::Normal);
        };
        match state.phase {
            Phase::Closed => Ok(Pass::Normal),
            Phase::Open { until } if now < until => Err(until - now),
            Phase::Open { .. } => {
                state.phase = Phase::HalfOpen {
                    probes_left: self.settings.half_open_probes - 1,
                    successes: 0,
                };
                self.publish(1);
                Ok(Pass::Probe)
            }
            Phase::HalfOpen {
                ref mut probes_left,
                ..
            } if *probes_left > 0 => {
                *probes_left -= 1;
                Ok(Pass::Probe)
            }
            // Every probe is out; the others wait for their verdict.
            Phase::HalfOpen { .. } => Err(Duration::from_secs(1)),
        }
    }

    /// Records how an admitted exchange went.
    pub fn record(&self, pass: Pass, success: bool, now: Instant) {
        if !self.settings.enabled {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match (pass, &mut state.phase) {
            (Pass::Probe, Phase::HalfOpen { successes, .. }) => {
                if !success {
                    self.open(&mut state, now);
                } else {
                    *successes += 1;
                    if *successes >= self.settings.half_open_probes {
                        state.phase = Phase::Closed;
                        state.buckets.iter_mut().for_each(|b| *b = (u64::MAX, 0, 0));
                        self.publish(0);
                    }
                }
            }
            (Pass::Normal, Phase::Closed) => {
                let second = now.saturating_duration_since(state.epoch).as_secs();
                let slots = state.buckets.len() as u64;
                let slot = &mut state.buckets[(second % slots) as usize];
                if slot.0 != second {
                    *slot = (second, 0, 0);
                }
                slot.1 += 1;
                slot.2 += u32::from(!success);
                let oldest = second.saturating_sub(slots - 1);
                let (total, failures) = state
                    .buckets
                    .iter()
                    .filter(|(s, _, _)| *s != u64::MAX && *s >= oldest)
                    .fold((0u64, 0u64), |(t, f), (_, bt, bf)| {
                        (t + u64::from(*bt), f + u64::from(*bf))
                    });
                if total >= u64::from(self.settings.min_requests)
                    && failures * 100 >= u64::from(self.settings.failure_percent) * total
                {
                    self.open(&mut state, now);
                }
            }
            // A late outcome from before the last transition: ignored.
            _ => {}
        }
    }

    fn open(&self, state: &mut State, now: Instant) {
        state.phase = Phase::Open {
            until: now + self.settings.open_for,
        };
        self.publish(2);
        tracing::warn!(open_for = ?self.settings.open_for, "upstream circuit opened");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            enabled: true,
            failure_percent: 50,
            min_requests: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    #[test]
    fn opens_on_the_failure_share_then_probes_then_closes() {
        let gauge = IntGauge::new("g", "g").unwrap();
        let breaker = Breaker::new(settings(), Some(gauge.clone()));
        let t0 = Instant::now();
        // 1 failure in 3: below min_requests, stays closed.
        for success in [true, false, true] {
            breaker.record(breaker.admit(t0).unwrap(), success, t0);
        }
        assert_eq!(gauge.get(), 0);
        // 2 failures in 4 = 50%: opens.
        breaker.record(breaker.admit(t0).unwrap(), false, t0);
        assert_eq!(gauge.get(), 2);
        assert_eq!(
            breaker.admit(t0 + Duration::from_secs(1)),
            Err(Duration::from_secs(4))
        );
        // After open_for: half-open, two probes, the third waits.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(breaker.admit(t1), Ok(Pass::Probe));
        assert_eq!(gauge.get(), 1);
        assert_eq!(breaker.admit(t1), Ok(Pass::Probe));
        assert!(breaker.admit(t1).is_err());
        breaker.record(Pass::Probe, true, t1);
        breaker.record(Pass::Probe, true, t1);
        assert_eq!(gauge.get(), 0);
        assert_eq!(breaker.admit(t1), Ok(Pass::Normal));
    }

    #[test]
    fn a_failed_probe_reopens() {
        let breaker = Breaker::new(settings(), None);
        let t0 = Instant::now();
        for _ in 0..4 {
            breaker.record(breaker.admit(t0).unwrap(), false, t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(breaker.admit(t1), Ok(Pass::Probe));
        breaker.record(Pass::Probe, false, t1);
        assert_eq!(
            breaker.admit(t1 + Duration::from_secs(1)),
            Err(Duration::from_secs(4))
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let breaker = Breaker::new(settings(), None);
        let t0 = Instant::now();
        for _ in 0..3 {
            breaker.record(breaker.admit(t0).unwrap(), false, t0);
        }
        // 11 s later the three failures are out of the 10 s window.
        let later = t0 + Duration::from_secs(11);
        for _ in 0..4 {
            breaker.record(breaker.admit(later).unwrap(), true, later);
        }
        breaker.record(breaker.admit(later).unwrap(), false, later);
        assert_eq!(breaker.admit(later), Ok(Pass::Normal));
    }

    #[test]
    fn disabled_admits_everything() {
        let breaker = Breaker::new(
            BreakerSettings {
                enabled: false,
                ..settings()
            },
            None,
        );
        let t0 = Instant::now();
        for _ in 0..10 {
            breaker.record(breaker.admit(t0).unwrap(), false, t0);
        }
        assert_eq!(breaker.admit(t0), Ok(Pass::Normal));
    }
}
