//! Retries toward the upstream (`[upstream.retry]`): which requests may be
//! tried again, on which outcomes, after how long, and how many retries the
//! live traffic can afford. The loop itself is in `upstream::send`; every
//! try stays inside the route's total deadline.

use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, Method};
use rand::RngExt;

/// Bodies up to this size (declared by `Content-Length`) are kept for replay.
pub const MAX_REPLAY_BYTES: u64 = 64 * 1024;

/// `[upstream.retry]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// Extra tries after the first.
    pub attempts: u32,
    /// Retry when the connection could not be made.
    pub on_connect_failure: bool,
    /// Retry when the exchange broke after connecting.
    pub on_reset: bool,
    /// Retry on these upstream statuses (502, 503, 504).
    pub on_status: Vec<u16>,
    /// Base of the exponential backoff.
    pub backoff: Duration,
    /// Cap of the backoff.
    pub max_backoff: Duration,
    /// Retries stay under this share of requests.
    pub budget_percent: u32,
}

/// Whether a request may be sent more than once: idempotent methods, or
/// any request carrying an `Idempotency-Key`.
pub fn idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

/// Full-jitter exponential backoff before retry number `retry` (0-based).
pub fn backoff(settings: &RetrySettings, retry: u32) -> Duration {
    let exponential = settings.backoff.saturating_mul(1u32 << retry.min(16));
    let cap = exponential.min(settings.max_backoff);
    let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
    if cap_us == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::rng().random_range(0..=cap_us))
}

/// Retries may use `budget_percent` of the requests seen, plus a small
/// reserve so a quiet service can still retry at all.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    /// Hundredths of a retry.
    balance: Mutex<u64>,
}

const RESERVE: u64 = 10 * 100;

impl RetryBudget {
    /// A budget of `percent` of requests.
    pub fn new(percent: u32) -> Self {
        Self {
            percent: percent.min(100),
            balance: Mutex::new(RESERVE),
        }
    }

    /// A request arrived: it earns `percent` hundredths of a retry.
    pub fn deposit(&self) {
        if let Ok(mut balance) = self.balance.lock() {
            *balance = (*balance + u64::from(self.percent)).min(RESERVE + 1000 * 100);
        }
    }

    /// Takes one retry, if the budget allows.
    pub fn withdraw(&self) -> bool {
        let Ok(mut balance) = self.balance.lock() else {
            return false;
        };
        if *balance >= 100 {
            *balance -= 100;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RetrySettings {
        RetrySettings {
            attempts: 2,
            on_connect_failure: true,
            on_reset: false,
            on_status: vec![503],
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            budget_percent: 20,
        }
    }

    #[test]
    fn only_idempotent_requests() {
        let none = HeaderMap::new();
        assert!(idempotent(&Method::GET, &none));
        assert!(idempotent(&Method::DELETE, &none));
        assert!(!idempotent(&Method::POST, &none));
        assert!(!idempotent(&Method::PATCH, &none));
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", "abc".parse().unwrap());
        assert!(idempotent(&Method::POST, &keyed));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for retry in 0..20 {
            let wait = backoff(&settings(), retry);
            let cap = (Duration::from_millis(25) * 2u32.pow(retry.min(16)))
                .min(Duration::from_millis(250));
            assert!(wait <= cap, "{wait:?} > {cap:?}");
        }
    }

    #[test]
    fn budget_is_a_share_of_traffic() {
        let budget = RetryBudget::new(20);
        // The reserve: ten retries with no traffic at all.
        for _ in 0..10 {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw());
        // 100 requests at 20% earn 20 retries.
        for _ in 0..100 {
            budget.deposit();
        }
        let mut granted = 0;
        while budget.withdraw() {
            granted += 1;
        }
        assert_eq!(granted, 20);
    }
}
