//! Unit tests of `conn`.

use super::*;

const HEAD: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_slow_head_expires_at_the_header_timeout() {
    let activity = Activity::new();
    assert!(activity.check(HEAD, IDLE).is_ok());
    activity.saw_io(true);
    tokio::time::advance(Duration::from_secs(9)).await;
    activity.saw_io(true);
    assert!(
        activity.check(HEAD, IDLE).is_ok(),
        "trickling bytes do not extend the head deadline"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(activity.check(HEAD, IDLE), Err(Expiry::SlowHead));
}

#[tokio::test(start_paused = true)]
async fn keep_alive_waits_idle_timeout_not_header_timeout() {
    let activity = Activity::new();
    let request = activity.request_started();
    tokio::time::advance(Duration::from_secs(120)).await;
    assert!(
        activity.check(HEAD, IDLE).is_ok(),
        "a request in flight is never idle"
    );
    drop(request);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(
        activity.check(HEAD, IDLE).is_ok(),
        "past the header timeout, still kept alive"
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(activity.check(HEAD, IDLE), Err(Expiry::Idle));
}

/// Nothing wakes the watchdog on the request path, so no event after it
/// looked may bring a deadline before its next look.
#[tokio::test(start_paused = true)]
async fn no_event_brings_a_deadline_before_the_next_look() {
    type Event = fn(&Arc<Activity>, &mut Option<ConnRequestGuard>);
    let events: [(&str, Event); 3] = [
        ("a head starts", |a, _| a.saw_io(true)),
        ("the request ends", |_, request| drop(request.take())),
        ("a write blocks", |a, _| a.write_pending()),
    ];
    for (what, event) in events {
        let activity = Activity::new();
        let mut request = Some(activity.request_started());
        if what == "a head starts" {
            drop(request.take());
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        let next = activity.check(HEAD, IDLE).unwrap();
        assert!(
            next <= Instant::now() + HEAD.min(IDLE),
            "{what}: looks often enough"
        );
        event(&activity, &mut request);
        tokio::time::advance(next - Instant::now() - Duration::from_millis(1)).await;
        assert!(
            activity.check(HEAD, IDLE).is_ok(),
            "{what}: nothing expired before the next look"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_is_idle_after_idle_timeout_without_bytes() {
    let activity = Activity::new();
    let watch = TunnelWatch::new(activity.clone(), Duration::from_secs(5));
    let idle = tokio::spawn(async move { watch.idle().await });
    tokio::time::advance(Duration::from_secs(4)).await;
    activity.saw_io(false);
    tokio::time::advance(Duration::from_secs(4)).await;
    tokio::task::yield_now().await;
    assert!(!idle.is_finished(), "a byte restarts the idle clock");
    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::time::timeout(Duration::from_secs(1), idle)
        .await
        .expect("idle")
        .unwrap();
}

#[tokio::test]
async fn the_connection_cap_can_grow_while_full() {
    let limit = ConnLimit::new(1);
    let first = limit.acquire().await;
    let waiting = tokio::spawn({
        let limit = limit.clone();
        async move { limit.acquire().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    limit.set_max(2);
    let second = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("a raised cap admits the waiter")
        .unwrap();
    assert_eq!(limit.open(), 2);
    drop((first, second));
    tokio::time::timeout(Duration::from_secs(5), limit.drained())
        .await
        .expect("drained");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_a_response_is_cut_after_idle_timeout() {
    let activity = Activity::new();
    let _request = activity.request_started();
    activity.write_pending();
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(activity.check(HEAD, IDLE).is_ok());
    // Progress (the client read a little) restarts the clock.
    activity.wrote();
    activity.write_pending();
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(activity.check(HEAD, IDLE).is_ok());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(activity.check(HEAD, IDLE), Err(Expiry::Stalled));
}

#[tokio::test(start_paused = true)]
async fn a_quiet_response_is_not_a_stall() {
    let activity = Activity::new();
    let _request = activity.request_started();
    activity.wrote();
    tokio::time::advance(Duration::from_secs(600)).await;
    assert!(activity.check(HEAD, IDLE).is_ok(), "SSE between events");
}

#[tokio::test(start_paused = true)]
async fn the_next_head_gets_its_own_deadline() {
    let activity = Activity::new();
    drop(activity.request_started());
    tokio::time::advance(Duration::from_secs(50)).await;
    activity.saw_io(true);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(activity.check(HEAD, IDLE).is_ok());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(activity.check(HEAD, IDLE), Err(Expiry::SlowHead));
}

/// A request's record starts when its head's first bytes were read (no
/// second clock read); only a read stamps it.
#[tokio::test(start_paused = true)]
async fn a_request_arrived_when_its_heads_first_bytes_were_read() {
    let activity = Activity::new();
    tokio::time::advance(Duration::from_secs(1)).await;
    // The first head: expected from the accept, not seen arriving.
    assert_eq!(activity.head_started().arrived(), None);
    tokio::time::advance(Duration::from_secs(5)).await;
    let first_bytes = Instant::now();
    activity.saw_io(true);
    tokio::time::advance(Duration::from_secs(2)).await;
    activity.saw_io(true);
    let request = activity.head_started();
    assert_eq!(request.arrived(), Some(first_bytes.into_std()));
    // Bytes read while it is in flight start nothing.
    activity.saw_io(true);
    drop(request);
    // The next head was already buffered: no read brought it.
    assert_eq!(activity.head_started().arrived(), None);
    // Under hyper a read after a response may be the rest of its
    // request's body (the upstream answered first): not a head's start.
    activity.saw_io(true);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(activity.request_started().arrived(), None);
    // HTTP/2: bytes between requests are frames.
    activity.mark_http2();
    activity.saw_io(true);
    assert_eq!(activity.head_started().arrived(), None);
}
