//! A try's wait for the response head, bounded by the route's deadline on
//! the timer of the client's connection where it lends one
//! ([`ConnRequestGuard::poll_upstream_deadline`]), else on a timer of its
//! own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

use crate::proxy::conn::ConnRequestGuard;

/// The deadline passed before the future finished.
#[derive(Debug)]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// `future`, or [`Elapsed`] once `deadline` has passed (the future is
    /// polled first: one that is ready is never timed out).
    pub struct Bounded<'a, F> {
        #[pin]
        future: F,
        deadline: Instant,
        connection: &'a ConnRequestGuard,
        own_timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<'a, F: Future> Bounded<'a, F> {
    /// `future` bounded by `deadline`, timed on `connection`'s timer when
    /// it lends it.
    pub fn new(future: F, deadline: Instant, connection: &'a ConnRequestGuard) -> Self {
        Self {
            future,
            deadline,
            connection,
            own_timer: None,
        }
    }
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let fired = match this.connection.poll_upstream_deadline(*this.deadline, cx) {
            Some(fired) => fired,
            None => {
                let deadline = *this.deadline;
                let timer = this
                    .own_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                timer.as_mut().poll(cx)
            }
        };
        fired.map(|()| Err(Elapsed))
    }
}
