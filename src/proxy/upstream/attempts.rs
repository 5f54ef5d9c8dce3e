//! Sending one prepared request: each try through the breaker, bounded by
//! the route's total deadline on the response headers, and retried when
//! the body can be replayed and the outcome is one `[upstream.retry]`
//! names, within the retry budget. Each try carries the time left in
//! `deadline_header` when one is configured.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use tokio::time::Instant;

use super::client::ClientFailure;
use super::deadline::{Bounded, Elapsed};
pub use super::rewrite::Head;
use super::{ExchangeBody, Upstream};
use crate::policy::body::{BodyProgress, UpstreamBody};
use crate::proxy::breaker;
use crate::proxy::conn::ConnRequestGuard;
use crate::proxy::reject::Reject;
use crate::proxy::retry;

impl Head {
    /// The head as a request, palisade's lines in its header map; one
    /// sent once takes the head's own parts (nothing copied; the head is
    /// left empty). Boxed: the request travels down the layers of a try
    /// inside [`Outgoing`], whose common variant is small.
    fn take_request(&mut self, body: UpstreamBody) -> Box<Request<UpstreamBody>> {
        let mut headers = std::mem::take(&mut self.headers);
        if let Some(added) = &self.added {
            added.insert_into(&mut headers);
        }
        let mut request = Box::new(Request::new(body));
        *request.method_mut() = std::mem::take(&mut self.method);
        *request.uri_mut() = std::mem::take(&mut self.uri);
        *request.headers_mut() = headers;
        request
    }

    /// A request of its own for one try of a replayable exchange (hyper's
    /// exchange takes one): a copy of the head with the body's bytes.
    pub(super) fn replayed(&self, payload: Bytes) -> Box<Request<UpstreamBody>> {
        self.clone().take_request(UpstreamBody::replay(payload))
    }
}

/// What one try sends: the exchange's head lent with a replayable body's
/// bytes (palisade's own engine writes the head from the loan, so no try
/// copies the header map), or a request of its own, boxed: the value is
/// moved down five layers of every try, and unboxed the request (288
/// bytes) was copied with it each time, for the few tries that own one.
pub enum Outgoing<'a> {
    /// A try of a replayable exchange.
    Lent {
        /// The exchange's head, the same for every try.
        head: &'a Head,
        /// The body, whole.
        payload: Bytes,
    },
    /// The one try of a streamed body, a WebSocket handshake, or a try
    /// whose head is its own (`deadline_header` differs per try).
    Owned(Box<Request<UpstreamBody>>),
}

impl Outgoing<'_> {
    /// The try as a request of its own (hyper's exchange takes one).
    pub fn into_request(self) -> Box<Request<UpstreamBody>> {
        match self {
            Outgoing::Lent { head, payload } => head.replayed(payload),
            Outgoing::Owned(request) => request,
        }
    }
}

/// The body as it will be sent: kept whole for replay, or streamed once.
pub enum PreparedBody {
    /// Read whole (at most `retry::MAX_REPLAY_BYTES`; empty for most GETs).
    Replay(Bytes),
    /// Streamed through the limit; sent once, never retried. `empty` when
    /// the client sent no body at all.
    Once { body: UpstreamBody, empty: bool },
    /// Whole in memory before the exchange began (palisade's HTTP/1 reader
    /// read it), but not to be retried: sent once, as a replayed body is
    /// sent (head and body together, no stream).
    Whole(Bytes),
}

impl Upstream {
    /// Sends `head` with `body`, retrying a replayable body; counts retries
    /// into `retries`. `started` is when the exchange began (the first
    /// try's admission); the response comes with when it arrived.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps each argument twice in its future; see proxy::pipeline"
    )]
    pub(super) fn exchange(
        &self,
        head: &mut Head,
        body: PreparedBody,
        progress: &BodyProgress,
        (started, deadline): (std::time::Instant, Instant),
        connection: &ConnRequestGuard,
        retries: &mut u32,
    ) -> impl Future<Output = Result<(Response<ExchangeBody>, std::time::Instant), Reject>> {
        async move {
            let upgrade = head.upgrade;
            let (bytes, retryable) = match body {
                PreparedBody::Once { body, empty } => {
                    let outgoing = Outgoing::Owned(head.take_request(body));
                    let (outcome, answered, _) = self
                        .try_once(
                            outgoing,
                            (upgrade, empty),
                            progress,
                            (started, deadline),
                            connection,
                        )
                        .await;
                    return outcome.map(|response| (response, answered));
                }
                PreparedBody::Replay(bytes) => (bytes, true),
                PreparedBody::Whole(bytes) => (bytes, false),
            };
            let mut admitted = started;
            loop {
                let outgoing = Outgoing::Lent {
                    head: &*head,
                    payload: bytes.clone(),
                };
                let (outcome, answered, unanswered) = self
                    .try_once(
                        outgoing,
                        (upgrade, true),
                        progress,
                        (admitted, deadline),
                        connection,
                    )
                    .await;
                if !retryable
                    || !self
                        .retry_after(&outcome, unanswered, *retries, deadline)
                        .await
                {
                    return outcome.map(|response| (response, answered));
                }
                admitted = std::time::Instant::now();
                *retries += 1;
                tracing::debug!(try_number = *retries + 1, "retrying the upstream exchange");
            }
        }
    }

    /// One try through the breaker, begun at `now`. `body_done` says the
    /// client's body was complete before it began (replayed or empty);
    /// `upgrade`, that it is a WebSocket handshake. The outcome comes with
    /// when it was known (one clock read for the breaker and the caller),
    /// and whether a reused connection closed on it unanswered
    /// ([`ClientFailure::Unanswered`]).
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps each argument twice in its future; see proxy::pipeline"
    )]
    fn try_once(
        &self,
        outgoing: Outgoing<'_>,
        (upgrade, body_done): (bool, bool),
        progress: &BodyProgress,
        (now, deadline): (std::time::Instant, Instant),
        connection: &ConnRequestGuard,
    ) -> impl Future<
        Output = (
            Result<Response<ExchangeBody>, Reject>,
            std::time::Instant,
            bool,
        ),
    > {
        async move {
            // Dropped unreported (the client left mid-exchange), a probe counts
            // as a failure: half-open never waits forever.
            let ticket = match self.breaker.admit(now) {
                Ok(ticket) => ticket,
                Err(wait) => return (Err(Reject::CircuitOpen(wait)), now, false),
            };
            let outgoing = match &self.policy.deadline_header {
                Some(name) => {
                    let mut request = outgoing.into_request();
                    let left = time_left(deadline, Instant::from_std(now));
                    request.headers_mut().insert(name.clone(), left);
                    Outgoing::Owned(request)
                }
                None => outgoing,
            };
            // The pool's future itself under the deadline, no wrapper around
            // it: every layer is a copy of the future when it starts. Timed
            // on the client connection's timer (see `deadline`).
            let sent = if upgrade {
                // Boxed: rare, and a large future (see `Pool::obtain`).
                let upgrade = Box::pin(self.client.request_upgrade(*outgoing.into_request()));
                Bounded::new(upgrade, deadline, connection)
                    .await
                    .map(|sent| sent.map(|response| response.map(ExchangeBody::Direct)))
            } else {
                Bounded::new(self.client.request(outgoing, now), deadline, connection)
                    .await
                    .map(|sent| sent.map(|response| response.map(ExchangeBody::Pooled)))
            };
            let unanswered = matches!(sent, Ok(Err(ClientFailure::Unanswered(_))));
            let outcome = match sent {
                Err(Elapsed) => Err(Reject::Timeout),
                Ok(Err(failure)) => Err(reject_for(failure, progress)),
                Ok(Ok(response)) => Ok(response),
            };
            let answered = std::time::Instant::now();
            let body_done = body_done || progress.complete.load(Ordering::Relaxed);
            // A keep-alive race says nothing of the upstream's health.
            match breaker_verdict(&outcome, body_done).filter(|_| !unanswered) {
                Some(healthy) => ticket.record(healthy, answered),
                None => ticket.release(),
            }
            (outcome, answered, unanswered)
        }
    }

    /// Whether to try again after `outcome`; waits the backoff when so.
    /// A request a reused connection left `unanswered` goes again whatever
    /// `on` says (the upstream never answered it), at once, and counts as
    /// a retry like any other (`attempts`, the budget).
    async fn retry_after(
        &self,
        outcome: &Result<Response<ExchangeBody>, Reject>,
        unanswered: bool,
        retries: u32,
        deadline: Instant,
    ) -> bool {
        let settings = &self.policy.retry;
        let retryable = unanswered
            || match outcome {
                Ok(response) => settings.on_status.contains(&response.status().as_u16()),
                Err(Reject::UpstreamConnect(_)) => settings.on_connect_failure,
                Err(Reject::UpstreamReset(_)) => settings.on_reset,
                Err(_) => false,
            };
        if !retryable || retries >= settings.attempts || !self.budget.withdraw() {
            return false;
        }
        let wait = if unanswered {
            std::time::Duration::ZERO
        } else {
            retry::backoff(settings, retries)
        };
        if Instant::now() + wait >= deadline {
            return false;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        true
    }
}

/// The `deadline_header` value: the whole milliseconds left until
/// `deadline`, at least 1 (a try is only made while time is left).
fn time_left(deadline: Instant, now: Instant) -> HeaderValue {
    let millis = deadline.saturating_duration_since(now).as_millis();
    HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX).max(1))
}

/// The rejection the client sees for a failed try.
fn reject_for(failure: ClientFailure, progress: &BodyProgress) -> Reject {
    if progress.overflowed.load(Ordering::Relaxed) {
        return Reject::BodyTooLarge;
    }
    match failure {
        ClientFailure::Connect(why) => Reject::UpstreamConnect(why),
        ClientFailure::ClientBody => Reject::ClientBodyAborted,
        ClientFailure::Reset(why) | ClientFailure::Unanswered(why) => Reject::UpstreamReset(why),
    }
}

/// What a try says of the upstream's health (SPEC §2): 502/503/504,
/// connect failures, resets and timeouts only. A 500 a client provoked says
/// nothing of the upstream, nor does a timeout or reset while the client's
/// own body was still incomplete (a stalled upload), nor a body the client
/// broke. `None`: no verdict.
fn breaker_verdict(
    outcome: &Result<Response<ExchangeBody>, Reject>,
    body_done: bool,
) -> Option<bool> {
    match outcome {
        Ok(response) => Some(!breaker::status_is_failure(response.status())),
        Err(Reject::Timeout | Reject::UpstreamReset(_)) if !body_done => None,
        Err(Reject::Timeout | Reject::UpstreamConnect(_) | Reject::UpstreamReset(_)) => Some(false),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn time_left_is_whole_milliseconds_and_at_least_one() {
        let now = Instant::now();
        let at = |d: Duration| time_left(now + d, now);
        assert_eq!(at(Duration::from_millis(2500)), "2500");
        assert_eq!(at(Duration::from_micros(1999)), "1");
        assert_eq!(at(Duration::from_micros(2999)), "2");
        assert_eq!(at(Duration::ZERO), "1");
        assert_eq!(time_left(now, now + Duration::from_secs(1)), "1");
    }
}
