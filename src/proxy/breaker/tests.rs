//! Unit tests of `breaker`.

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

fn exchange(breaker: &Breaker, success: bool, now: Instant) {
    breaker.admit(now).unwrap().record(success, now);
}

fn opened(breaker: &Breaker, t0: Instant) {
    for _ in 0..4 {
        exchange(breaker, false, t0);
    }
    assert!(breaker.admit(t0).is_err());
}

#[test]
fn opens_on_the_failure_share_then_probes_then_closes() {
    let gauge = IntGauge::new("g", "g").unwrap();
    let breaker = Breaker::new(settings(), Some(gauge.clone()));
    let t0 = Instant::now();
    // 1 failure in 3: below min_requests, stays closed.
    for success in [true, false, true] {
        exchange(&breaker, success, t0);
    }
    assert_eq!(gauge.get(), 0);
    // 2 failures in 4 = 50%: opens.
    exchange(&breaker, false, t0);
    assert_eq!(gauge.get(), 2);
    assert_eq!(
        breaker.admit(t0 + Duration::from_secs(1)).err(),
        Some(Duration::from_secs(4))
    );
    // After open_for: half-open, two probes, the third waits.
    let t1 = t0 + Duration::from_secs(5);
    let first = breaker.admit(t1).unwrap();
    assert_eq!(first.pass(), Pass::Probe);
    assert_eq!(gauge.get(), 1);
    let second = breaker.admit(t1).unwrap();
    assert_eq!(second.pass(), Pass::Probe);
    assert!(breaker.admit(t1).is_err());
    first.record(true, t1);
    second.record(true, t1);
    assert_eq!(gauge.get(), 0);
    assert_eq!(breaker.admit(t1).unwrap().pass(), Pass::Normal);
}

#[test]
fn a_failed_probe_reopens() {
    let breaker = Breaker::new(settings(), None);
    let t0 = Instant::now();
    opened(&breaker, t0);
    let t1 = t0 + Duration::from_secs(5);
    breaker.admit(t1).unwrap().record(false, t1);
    assert_eq!(
        breaker.admit(t1 + Duration::from_secs(1)).err(),
        Some(Duration::from_secs(4))
    );
}

#[test]
fn a_dropped_probe_counts_as_a_failure() {
    let breaker = Breaker::new(settings(), None);
    let t0 = Instant::now() + Duration::from_secs(100);
    opened(&breaker, t0);
    let t1 = t0 + Duration::from_secs(5);
    let probes = (breaker.admit(t1).unwrap(), breaker.admit(t1).unwrap());
    assert!(breaker.admit(t1).is_err(), "every probe is out");
    // Both probes' clients go away: no verdict is ever recorded.
    drop(probes);
    // Re-opened by the drop, and half-open again after open_for.
    assert!(breaker.admit(t1 + Duration::from_secs(1)).is_err());
    let t2 = t1 + Duration::from_secs(5);
    assert_eq!(breaker.admit(t2).unwrap().pass(), Pass::Probe);
}

#[test]
fn a_released_probe_neither_closes_nor_opens_and_frees_its_slot() {
    let gauge = IntGauge::new("circuit", "test").unwrap();
    let breaker = Breaker::new(settings(), Some(gauge.clone()));
    let t0 = Instant::now() + Duration::from_secs(100);
    opened(&breaker, t0);
    let t1 = t0 + Duration::from_secs(5);
    let probes = (breaker.admit(t1).unwrap(), breaker.admit(t1).unwrap());
    assert!(breaker.admit(t1).is_err(), "every probe is out");
    // The client's own body stalled: no verdict, the slot comes back.
    probes.0.release();
    let again = breaker.admit(t1).unwrap();
    assert_eq!(again.pass(), Pass::Probe);
    assert_eq!(gauge.get(), 1, "still half-open");
    again.record(true, t1);
    probes.1.record(true, t1);
    assert_eq!(gauge.get(), 0, "closed by two real verdicts");
}

#[test]
fn a_dropped_normal_pass_counts_as_nothing() {
    let breaker = Breaker::new(settings(), None);
    let t0 = Instant::now();
    for _ in 0..10 {
        drop(breaker.admit(t0).unwrap());
    }
    exchange(&breaker, false, t0);
    assert_eq!(breaker.admit(t0).unwrap().pass(), Pass::Normal);
}

#[test]
fn half_open_without_verdicts_probes_again_after_its_deadline() {
    let breaker = Breaker::new(settings(), None);
    let t0 = Instant::now();
    opened(&breaker, t0);
    let t1 = t0 + Duration::from_secs(5);
    // Two probes out and never reported (leaked, hung): no verdict.
    let hung = (breaker.admit(t1).unwrap(), breaker.admit(t1).unwrap());
    assert!(breaker.admit(t1 + Duration::from_secs(4)).is_err());
    // Past the half-open deadline new probes go out; they decide.
    let t2 = t1 + Duration::from_secs(5);
    let fresh = (breaker.admit(t2).unwrap(), breaker.admit(t2).unwrap());
    assert_eq!(fresh.0.pass(), Pass::Probe);
    fresh.0.record(true, t2);
    fresh.1.record(true, t2);
    assert_eq!(breaker.admit(t2).unwrap().pass(), Pass::Normal);
    // The hung ones finally report after the close: ignored.
    hung.0.record(false, t2);
    hung.1.record(false, t2);
    assert_eq!(breaker.admit(t2).unwrap().pass(), Pass::Normal);
}

#[test]
fn only_502_503_504_are_failures() {
    use http::StatusCode;
    for code in [502, 503, 504] {
        assert!(status_is_failure(StatusCode::from_u16(code).unwrap()));
    }
    for code in [200, 400, 404, 429, 500, 501, 505, 599] {
        assert!(!status_is_failure(StatusCode::from_u16(code).unwrap()));
    }
}

#[test]
fn old_failures_leave_the_window() {
    let breaker = Breaker::new(settings(), None);
    let t0 = Instant::now();
    for _ in 0..3 {
        exchange(&breaker, false, t0);
    }
    // 11 s later the three failures are out of the 10 s window.
    let later = t0 + Duration::from_secs(11);
    for _ in 0..4 {
        exchange(&breaker, true, later);
    }
    exchange(&breaker, false, later);
    assert_eq!(breaker.admit(later).unwrap().pass(), Pass::Normal);
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
        exchange(&breaker, false, t0);
    }
    assert_eq!(breaker.admit(t0).unwrap().pass(), Pass::Normal);
}

/// The window's running sums are what summing its buckets gives (the
/// rule before they were kept as they go), over seconds that stay, step,
/// jump past the whole window, and come late.
#[test]
fn the_running_window_sums_the_buckets_of_the_window() {
    for slots in [1usize, 2, 3, 10] {
        let mut rng = fastrand::Rng::with_seed(slots as u64);
        let mut state = State {
            phase: Phase::Closed,
            buckets: vec![(u64::MAX, 0, 0); slots],
            window: Window::default(),
            epoch: Instant::now(),
        };
        let mut second = 0u64;
        let mut latest = 0u64;
        for step in 0..20_000 {
            second = match rng.u8(..10) {
                0..=4 => second,
                5..=7 => second + 1,
                8 => second + rng.u64(2..=(2 * slots as u64 + 2)),
                _ => second.saturating_sub(rng.u64(0..=2)),
            };
            if step % 997 == 0 {
                state.clear_window();
            }
            let success = rng.bool();
            let counted = state.count(second, success);
            latest = latest.max(second);
            let oldest = latest.saturating_sub(slots as u64 - 1);
            let summed = state
                .buckets
                .iter()
                .filter(|(s, _, _)| *s != u64::MAX && *s >= oldest)
                .fold((0u64, 0u64), |(t, f), (_, bt, bf)| {
                    (t + u64::from(*bt), f + u64::from(*bf))
                });
            assert_eq!(
                counted, summed,
                "slots {slots}, step {step}, second {second}"
            );
        }
    }
}
