//! Unit tests of `redis`.

use super::*;

#[test]
fn cool_down_grows_and_allows_one_probe() {
    let mut health = Health::default();
    let t0 = Instant::now();
    assert!(health.should_try(t0));
    health.failed(t0);
    assert!(!health.should_try(t0 + Duration::from_millis(999)));
    assert!(health.is_degraded(t0 + Duration::from_millis(500)));
    // The cool-down is over: one probe, the others keep skipping.
    assert!(health.should_try(t0 + MIN_COOLDOWN));
    assert!(!health.should_try(t0 + MIN_COOLDOWN));
    let t1 = t0 + MIN_COOLDOWN;
    health.failed(t1);
    assert!(!health.should_try(t1 + Duration::from_millis(1999)));
    assert!(health.should_try(t1 + Duration::from_secs(2)));
    // It doubles up to 30 s and no further.
    let mut t = t1 + Duration::from_secs(2);
    for _ in 0..10 {
        health.failed(t);
        t += MAX_COOLDOWN;
        assert!(health.should_try(t));
    }
    health.failed(t);
    assert!(health.should_try(t + MAX_COOLDOWN));
    // Success ends the outage.
    health.succeeded();
    assert!(!health.is_degraded(t));
    assert!(health.should_try(t));
}

#[test]
fn requests_failing_together_start_one_cool_down() {
    // A batch (or requests in flight together) failing at once: one step
    // of the back-off, not one per request.
    let mut health = Health::default();
    let t0 = Instant::now();
    for i in 0..20 {
        health.failed(t0 + Duration::from_millis(i));
    }
    assert!(!health.should_try(t0 + MIN_COOLDOWN - Duration::from_millis(1)));
    assert!(
        health.should_try(t0 + MIN_COOLDOWN),
        "probed after 1 s, not 30 s"
    );
    // The probe fails: the back-off doubles.
    let t1 = t0 + MIN_COOLDOWN;
    health.failed(t1);
    health.failed(t1 + Duration::from_millis(5));
    assert!(!health.should_try(t1 + Duration::from_millis(1999)));
    assert!(health.should_try(t1 + Duration::from_secs(2)));
}

#[test]
fn replies_are_checked() {
    // Each `tat` comes as its distance from `now`.
    let decisions = parse_reply(&[100, 1, 1, 100, 0, 200, 0, 0, 300], [2, 1].into_iter()).unwrap();
    assert_eq!(decisions.len(), 2);
    assert!(decisions[0].admitted);
    assert_eq!(
        decisions[0].limits[1],
        RedisLimitResult {
            allowed: false,
            tat: 300
        }
    );
    assert_eq!(decisions[1].limits[0].tat, 400);
    assert!(!decisions[1].admitted);
    assert_eq!(decisions[1].now, 100);
    assert!(parse_reply(&[100, 1, 1], [2].into_iter()).is_err());
    assert!(parse_reply(&[100, 1, 1, 200, 9], [1].into_iter()).is_err());
}

#[test]
fn cluster_hash_tags() {
    assert_eq!(hash_tag("palisade:{api}:ip:10"), "api");
    assert_eq!(hash_tag("no-tag"), "no-tag");
}

#[test]
fn the_scripts_reply_is_read_as_integers_or_refused() {
    assert_eq!(
        integers(b"1733198400123456 1 1 1733198400223456").unwrap(),
        [1733198400123456, 1, 1, 1733198400223456]
    );
    // Negative numbers parse (a TAT never is, but the reading is exact).
    assert_eq!(integers(b"-5").unwrap(), [-5]);
    assert_eq!(
        integers(b"9223372036854775807 -9223372036854775808").unwrap(),
        [i64::MAX, i64::MIN]
    );
    assert!(integers(b"9223372036854775808").is_err());
    assert!(integers(b"-").is_err());
    for bad in [&b""[..], b"1  2", b"1 x", b"1.5", b" 1", b"1\n", b"\xff"] {
        assert!(integers(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn limits_go_to_the_script_as_one_argument() {
    let pending = |limits: LimitRequest| Pending {
        limits,
        reply: oneshot::channel().0,
        deadline: tokio::time::Instant::now(),
    };
    let gcra = |emission_us, burst| Gcra { emission_us, burst };
    let batch = [
        pending(vec![
            ("a".into(), gcra(1000, 5), true),
            ("b".into(), gcra(60_000_000, 1), false),
        ]),
        pending(vec![("c".into(), gcra(7, 100), true)]),
    ];
    assert_eq!(packed_limits(&batch), "2 1000 5 1 60000000 1 0 1 7 100 1 ");
}

#[test]
fn requests_past_their_deadline_are_answered_not_sent() {
    let now = tokio::time::Instant::now();
    let mut answers = Vec::new();
    let mut pending = |deadline| {
        let (reply, answer) = oneshot::channel();
        answers.push(answer);
        Pending {
            limits: vec![(
                "k".into(),
                Gcra {
                    emission_us: 1,
                    burst: 1,
                },
                true,
            )],
            reply,
            deadline,
        }
    };
    let later = now + Duration::from_millis(50);
    let mut batch = vec![
        pending(now - Duration::from_millis(1)),
        pending(later + Duration::from_millis(5)),
        pending(now),
        pending(later),
    ];
    // The call is bounded by the earliest deadline left.
    assert_eq!(answer_expired(&mut batch, now), Some(later));
    assert_eq!(batch.len(), 2);
    assert!(batch.iter().all(|p| p.deadline > now));
    let mut answers = answers.into_iter().map(|mut a| a.try_recv());
    assert!(matches!(answers.next(), Some(Ok(Err(Unanswered::Timeout)))));
    assert!(matches!(answers.next(), Some(Err(_))), "still waiting");
    assert!(matches!(answers.next(), Some(Ok(Err(Unanswered::Timeout)))));
    assert!(matches!(answers.next(), Some(Err(_))), "still waiting");
    // Nothing left: no call.
    let mut all_late = vec![pending_at(now)];
    assert_eq!(answer_expired(&mut all_late, later), None);
    assert!(all_late.is_empty());
}

fn pending_at(deadline: tokio::time::Instant) -> Pending {
    Pending {
        limits: Vec::new(),
        reply: oneshot::channel().0,
        deadline,
    }
}

/// A Redis that accepts and never answers: a decision still comes back,
/// as a timeout, bounded by its deadline in the batch (no timer of its own).
#[tokio::test]
async fn a_decision_redis_never_answers_times_out() {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let backend = RedisBackend::new(
        &format!("redis://{address}"),
        &[],
        Duration::from_millis(100),
        None,
    )
    .unwrap();
    let limits = || {
        vec![(
            "k".to_string(),
            Gcra {
                emission_us: 1,
                burst: 1,
            },
            true,
        )]
    };
    // Generous: only a decision that never comes fails this.
    let decided = tokio::time::timeout(Duration::from_secs(20), backend.decide(limits()))
        .await
        .expect("a decision comes back");
    assert!(matches!(decided, Err(RedisFailure::Timeout)), "{decided:?}");
    // The failure started a cool-down: the next is skipped, not sent.
    let skipped = backend.decide(limits()).await;
    assert!(
        matches!(skipped, Err(RedisFailure::CoolingDown)),
        "{skipped:?}"
    );
}
