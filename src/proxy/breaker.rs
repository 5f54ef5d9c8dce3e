//! The upstream circuit breaker: when too many exchanges fail, stop sending
//! for a while instead of piling more load on a sick upstream.
//!
//! States and transitions:
//! 1. **closed**: every exchange is counted in a sliding window (per-second
//!    buckets). With at least `min_requests` counted and `failure_percent`
//!    of them failed, it opens. Only signs of ill health count as failures:
//!    502/503/504 from the upstream, connect failures, resets, timeouts.
//!    Any other status (a 500 a client provoked) is a success here.
//! 2. **open**: nothing is sent for `open_for`; requests get 503 with
//!    `Retry-After`. When the time is up it turns half-open.
//! 3. **half-open**: `half_open_probes` requests go through as probes; one
//!    failure re-opens it, that many successes close it (with a fresh window).
//!    A probe reports through its [`Ticket`]: dropped without a verdict (its
//!    client went away), it counts as a failure. Half-open has a deadline
//!    too: if the verdicts are not in after `open_for`, new probes are sent
//!    (the late verdicts still count), so it can never wait forever.

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
    /// How long it stays open; also how long half-open waits for verdicts.
    pub open_for: Duration,
    /// Probes that decide in half-open.
    pub half_open_probes: u32,
}

/// Which kind of permission an exchange got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Closed (or disabled): counted in the window.
    Normal,
    /// Half-open: its outcome decides the state.
    Probe,
}

/// Whether an upstream status is a sign of ill health (SPEC §2): 502, 503
/// and 504 only. Any other status, 500 included, is an answer: a client can
/// provoke it at will, so it must not open the upstream-wide breaker.
pub fn status_is_failure(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        probes_left: u32,
        successes: u32,
        /// When more probes are sent if the verdicts are not all in.
        verdict_by: Instant,
    },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// (second since `epoch`, total, failures) per bucket.
    buckets: Vec<(u64, u32, u32)>,
    /// The window: the latest second recorded, and the exchanges and
    /// failures counted in the buckets of the seconds up to it. Kept as
    /// buckets enter and leave it, so an exchange adds one to each instead
    /// of summing every bucket again (once per exchange).
    window: Window,
    epoch: Instant,
}

/// The sliding window's running sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    latest: u64,
    total: u64,
    failures: u64,
}

impl State {
    /// Every bucket empty (a fresh window).
    fn clear_window(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = (u64::MAX, 0, 0));
        self.window = Window {
            latest: self.window.latest,
            ..Window::default()
        };
    }

    /// Counts an exchange that ended in `second` (since `epoch`); a late
    /// report of an earlier second is counted in the latest one. Returns
    /// the window's (total, failures) after it.
    fn count(&mut self, second: u64, success: bool) -> (u64, u64) {
        let slots = self.buckets.len() as u64;
        let second = second.max(self.window.latest);
        if second - self.window.latest >= slots {
            self.clear_window();
        } else {
            // The seconds after the latest take over the buckets of those
            // leaving the window.
            for entering in self.window.latest + 1..=second {
                let slot = &mut self.buckets[(entering % slots) as usize];
                if slot.0 != u64::MAX && slot.0 + slots <= entering {
                    self.window.total -= u64::from(slot.1);
                    self.window.failures -= u64::from(slot.2);
                    *slot = (u64::MAX, 0, 0);
                }
            }
        }
        self.window.latest = second;
        let slot = &mut self.buckets[(second % slots) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u32::from(!success);
        self.window.total += 1;
        self.window.failures += u64::from(!success);
        (self.window.total, self.window.failures)
    }
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
    gauge: Option<IntGauge>,
}

/// Permission to send one exchange. Report how it went with
/// [`Ticket::record`]; dropped without a report (the request was abandoned
/// mid-exchange), a probe counts as a failure, so half-open never waits for
/// a verdict that will not come. An ordinary pass dropped counts as nothing:
/// a client hanging up says nothing about the upstream.
#[must_use = "a ticket reports its exchange's outcome"]
#[derive(Debug)]
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    pass: Pass,
    admitted_at: Instant,
    reported: bool,
}

impl Ticket<'_> {
    /// The kind of pass.
    pub fn pass(&self) -> Pass {
        self.pass
    }

    /// Records how the exchange went.
    pub fn record(mut self, success: bool, now: Instant) {
        self.reported = true;
        self.breaker.record(self.pass, success, now);
    }

    /// Reports an exchange that says nothing of the upstream's health (the
    /// client's own body stalled, broke or was too large): not a success,
    /// not a failure. A probe's slot goes back, so another probe decides.
    pub fn release(mut self) {
        self.reported = true;
        if self.pass == Pass::Probe {
            self.breaker.release_probe();
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.reported && self.pass == Pass::Probe {
            let now = Instant::now().max(self.admitted_at);
            self.breaker.record(Pass::Probe, false, now);
        }
    }
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
                window: Window::default(),
                epoch: Instant::now(),
            }),
            gauge,
        };
        breaker.publish(0);
        breaker
    }

    /// The breaker's phase as `/readyz` names it: `closed`, `open` or
    /// `half_open` (an open breaker whose time is up reads as half-open,
    /// as the next request will find it).
    pub fn phase_name(&self, now: Instant) -> &'static str {
        match self.state.lock().map(|state| state.phase) {
            Ok(Phase::Closed) => "closed",
            Ok(Phase::Open { until }) if now < until => "open",
            Ok(_) => "half_open",
            Err(_) => "open",
        }
    }

    fn publish(&self, value: i64) {
        if let Some(gauge) = &self.gauge {
            gauge.set(value);
        }
    }

    fn ticket(&self, pass: Pass, now: Instant) -> Ticket<'_> {
        Ticket {
            breaker: self,
            pass,
            admitted_at: now,
            reported: false,
        }
    }

    /// May an exchange be sent now? `Err` is how long until it might.
    pub fn admit(&self, now: Instant) -> Result<Ticket<'_>, Duration> {
        if !self.settings.enabled {
            return Ok(self.ticket(Pass::Normal, now));
        }
        let Ok(mut state) = self.state.lock() else {
            return Ok(self.ticket(Pass::Normal, now));
        };
        let probes = self.settings.half_open_probes.max(1);
        match state.phase {
            Phase::Closed => Ok(self.ticket(Pass::Normal, now)),
            Phase::Open { until } if now < until => Err(until - now),
            Phase::Open { .. } => {
                state.phase = Phase::HalfOpen {
                    probes_left: probes - 1,
                    successes: 0,
                    verdict_by: now + self.settings.open_for,
                };
                self.publish(1);
                Ok(self.ticket(Pass::Probe, now))
            }
            Phase::HalfOpen {
                ref mut probes_left,
                ..
            } if *probes_left > 0 => {
                *probes_left -= 1;
                Ok(self.ticket(Pass::Probe, now))
            }
            // Every probe is out and the verdicts are overdue: probe again.
            Phase::HalfOpen {
                ref mut probes_left,
                ref mut verdict_by,
                ..
            } if now >= *verdict_by => {
                *probes_left = probes - 1;
                *verdict_by = now + self.settings.open_for;
                Ok(self.ticket(Pass::Probe, now))
            }
            // Every probe is out; the others wait for their verdict.
            Phase::HalfOpen { verdict_by, .. } => Err(verdict_by
                .saturating_duration_since(now)
                .max(Duration::from_secs(1))),
        }
    }

    /// A probe without a verdict: its slot is free for the next one.
    fn release_probe(&self) {
        if let Ok(mut state) = self.state.lock()
            && let Phase::HalfOpen { probes_left, .. } = &mut state.phase
        {
            *probes_left += 1;
        }
    }

    /// Records how an admitted exchange went.
    fn record(&self, pass: Pass, success: bool, now: Instant) {
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
                        state.clear_window();
                        self.publish(0);
                    }
                }
            }
            (Pass::Normal, Phase::Closed) => {
                let second = now.saturating_duration_since(state.epoch).as_secs();
                let (total, failures) = state.count(second, success);
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
mod tests;
