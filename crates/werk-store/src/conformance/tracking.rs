use super::*;

// ---------------------------------------------------------------------------------------------
// Tracking
// ---------------------------------------------------------------------------------------------

/// A tracked job (`custom.track` = 1) in `queue`.
pub(super) fn tracked(jid: &str, queue: &str) -> Spec {
    spec(jid).queue(queue).custom(r#"{"track":1}"#)
}

pub(super) async fn track<S: Store>(s: &S, jid: &str, now: Millis) -> Option<Tracked> {
    s.track_get(jid.to_string(), now).await.expect("track_get")
}

pub(super) async fn track_state<S: Store>(s: &S, jid: &str, now: Millis) -> Option<TrackState> {
    track(s, jid, now).await.map(|t| t.state)
}

pub(super) async fn track_set<S: Store>(
    s: &S,
    jid: &str,
    percent: Option<u8>,
    desc: Option<&str>,
    reserve_until: Option<Millis>,
    now: Millis,
) -> bool {
    s.track_set(
        TrackUpdate {
            jid: jid.to_string(),
            percent,
            desc: desc.map(str::to_string),
            reserve_until,
        },
        now,
    )
    .await
    .expect("track_set")
}

/// TRACK GET follows the job: scheduled/enqueued → enqueued, working, retry → failed, dead,
/// ACK → success, discard after FAIL → failed; removal otherwise forgets it. `updated_at` moves
/// with push, fetch, ACK and FAIL (not with a promotion).
pub async fn tracking_follows_job_states<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            tracked("tr-sched-001", "tq0").at(T0 + HOUR),
            tracked("tr-flow-0001", "tq1"),
            spec("tr-true-0001")
                .queue("tq2")
                .retry(-1)
                .custom(r#"{"track":true}"#),
            tracked("tr-disc-0001", "tq3").retry(0),
            tracked("tr-kill-0001", "tq4"),
            tracked("tr-del-00001", "tq5"),
            tracked("tr-rmq-00001", "tq6"),
            spec("tr-exp-00001")
                .queue("tq7")
                .custom(r#"{"track":1,"expires_in":10}"#),
        ],
        T0,
    )
    .await;
    assert_eq!(
        track(s, "tr-flow-0001", T0).await,
        Some(Tracked {
            jid: "tr-flow-0001".to_string(),
            state: TrackState::Enqueued,
            percent: None,
            desc: None,
            updated_at: T0,
        })
    );
    assert_eq!(
        track_state(s, "tr-sched-001", T0).await,
        Some(TrackState::Enqueued),
        "scheduled shows as enqueued"
    );

    assert_eq!(
        fetch_jid(s, &["tq1"], T0 + SEC).await.as_deref(),
        Some("tr-flow-0001")
    );
    let t = track(s, "tr-flow-0001", T0 + SEC).await.unwrap();
    assert_eq!((t.state, t.updated_at), (TrackState::Working, T0 + SEC));
    fail(s, "tr-flow-0001", T0 + 2 * SEC).await;
    let t = track(s, "tr-flow-0001", T0 + 2 * SEC).await.unwrap();
    assert_eq!((t.state, t.updated_at), (TrackState::Failed, T0 + 2 * SEC));

    run_fail(s, "tq2", "tr-true-0001", T0 + 2 * SEC).await;
    assert_eq!(
        track_state(s, "tr-true-0001", T0 + 2 * SEC).await,
        Some(TrackState::Dead),
        "track: true also tracks"
    );
    assert_eq!(
        run_fail(s, "tq3", "tr-disc-0001", T0 + 2 * SEC).await,
        FailOutcome::Discarded
    );
    assert_eq!(get(s, "tr-disc-0001").await, None);
    assert_eq!(
        track_state(s, "tr-disc-0001", T0 + 2 * SEC).await,
        Some(TrackState::Failed),
        "discarded after a failure"
    );
    run_fail(s, "tq4", "tr-kill-0001", T0 + 2 * SEC).await;
    assert_eq!(
        mutate(
            s,
            MutateOp::Kill,
            Retry,
            by_jids(&["tr-kill-0001"]),
            T0 + 3 * SEC
        )
        .await,
        1
    );
    assert_eq!(
        track_state(s, "tr-kill-0001", T0 + 3 * SEC).await,
        Some(TrackState::Dead)
    );
    run_fail(s, "tq5", "tr-del-00001", T0 + 2 * SEC).await;
    assert_eq!(
        mutate(
            s,
            MutateOp::Discard,
            Retry,
            by_jids(&["tr-del-00001"]),
            T0 + 3 * SEC
        )
        .await,
        1
    );
    assert_eq!(
        track(s, "tr-del-00001", T0 + 3 * SEC).await,
        None,
        "deleted by MUTATE"
    );
    assert_eq!(
        s.remove_queues(QueueSelector::Names(strings(&["tq6"])))
            .await
            .expect("remove_queues"),
        1
    );
    assert_eq!(
        track(s, "tr-rmq-00001", T0 + 3 * SEC).await,
        None,
        "removed with its queue"
    );
    assert_eq!(fetch_jid(s, &["tq7"], T0 + 11 * SEC).await, None);
    assert_eq!(
        track(s, "tr-exp-00001", T0 + 11 * SEC).await,
        None,
        "expired"
    );

    let next_at = must_get(s, "tr-flow-0001").await.at;
    assert!(
        next_at < T0 + HOUR,
        "suite bug: the retry comes before the scheduled job"
    );
    promote(s, next_at).await;
    let t = track(s, "tr-flow-0001", next_at).await.unwrap();
    assert_eq!(
        (t.state, t.updated_at),
        (TrackState::Enqueued, T0 + 2 * SEC),
        "a promotion is no update"
    );
    run_ok(s, "tq1", "tr-flow-0001", next_at + SEC).await;
    let t = track(s, "tr-flow-0001", next_at + SEC).await.unwrap();
    assert_eq!(
        (t.state, t.updated_at),
        (TrackState::Success, next_at + SEC)
    );
    c.watch_tracked(&[
        "tr-sched-001",
        "tr-flow-0001",
        "tr-true-0001",
        "tr-disc-0001",
        "tr-kill-0001",
        "tr-del-00001",
    ]);
    c.finish(next_at + SEC).await;
}

/// TRACK SET stores percent and desc (each kept when not given) and extends a working job's
/// reservation, never shortening it and at most a day ahead; the extension is durable and the
/// reaper honours it.
pub async fn track_set_keeps_progress_and_extends_reservation<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    c.watch_tracked(&["ts-work-0001", "ts-wait-0001"]);
    let s = c.s();
    push(
        s,
        &[
            tracked("ts-work-0001", "tsq").reserve_for(60),
            tracked("ts-wait-0001", "tsw"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_jid(s, &["tsq"], T0).await.as_deref(),
        Some("ts-work-0001")
    );
    assert!(
        track_set(
            s,
            "ts-work-0001",
            Some(10),
            Some("loading"),
            None,
            T0 + 10 * SEC
        )
        .await
    );
    assert_eq!(
        track(s, "ts-work-0001", T0 + 10 * SEC).await,
        Some(Tracked {
            jid: "ts-work-0001".to_string(),
            state: TrackState::Working,
            percent: Some(10),
            desc: Some("loading".to_string()),
            updated_at: T0 + 10 * SEC,
        })
    );
    assert!(track_set(s, "ts-work-0001", Some(50), None, None, T0 + 11 * SEC).await);
    assert!(
        track_set(
            s,
            "ts-work-0001",
            None,
            Some("halfway"),
            None,
            T0 + 12 * SEC
        )
        .await
    );
    let t = track(s, "ts-work-0001", T0 + 12 * SEC).await.unwrap();
    assert_eq!(
        (t.percent, t.desc.as_deref()),
        (Some(50), Some("halfway")),
        "a field not given keeps its value"
    );

    track_set(
        s,
        "ts-work-0001",
        None,
        None,
        Some(T0 + 10 * MIN),
        T0 + 20 * SEC,
    )
    .await;
    let j = must_get(s, "ts-work-0001").await;
    let r = j.reservation.clone().unwrap();
    assert_eq!(
        (r.reserved_at, r.expires_at, j.at),
        (T0, T0 + 10 * MIN, T0 + 10 * MIN),
        "reservation extended"
    );
    let t = track(s, "ts-work-0001", T0 + 20 * SEC).await.unwrap();
    assert_eq!((t.percent, t.desc.as_deref()), (Some(50), Some("halfway")));
    track_set(
        s,
        "ts-work-0001",
        None,
        None,
        Some(T0 + 5 * MIN),
        T0 + 25 * SEC,
    )
    .await;
    assert_eq!(
        must_get(s, "ts-work-0001").await.at,
        T0 + 10 * MIN,
        "never shortened"
    );

    assert!(
        track_set(
            s,
            "ts-wait-0001",
            Some(5),
            None,
            Some(T0 + HOUR),
            T0 + 25 * SEC
        )
        .await,
        "an enqueued tracked job stores its progress"
    );
    let w = must_get(s, "ts-wait-0001").await;
    assert_eq!(
        (w.state, w.reservation),
        (Enqueued, None),
        "no reservation to extend"
    );

    c.reopen().await;
    let s = c.s();
    assert_eq!(must_get(s, "ts-work-0001").await.at, T0 + 10 * MIN);
    assert_eq!(reap(s, T0 + 61 * SEC).await, 0);
    assert_eq!(reap(s, T0 + 10 * MIN - SEC).await, 0);
    assert_eq!(state_of(s, "ts-work-0001").await, Some(Working));

    let now = T0 + 10 * MIN - SEC;
    track_set(s, "ts-work-0001", None, None, Some(T0 + 3 * DAY), now).await;
    assert_eq!(
        must_get(s, "ts-work-0001").await.at,
        now + DAY,
        "capped at a day after now"
    );
    assert_eq!(reap(s, now + DAY - SEC).await, 0);
    assert_eq!(reap(s, now + DAY).await, 1);
    assert_eq!(
        track(s, "ts-work-0001", now + DAY).await,
        Some(Tracked {
            jid: "ts-work-0001".to_string(),
            state: TrackState::Failed,
            percent: Some(50),
            desc: Some("halfway".to_string()),
            updated_at: now + DAY,
        }),
        "the reaper's FAIL is an update; progress is kept"
    );
    c.finish(now + DAY).await;
}

/// Tracking data outlives its job by TRACK_RETENTION after the last update (TRACK GET says
/// nothing from then on) and the sweep purges it; while the job exists it is kept.
pub async fn track_data_purged_after_retention<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            tracked("tp-ack-00001", "tpa"),
            tracked("tp-disc-0001", "tpb").retry(0),
            tracked("tp-wait-0001", "tpc"),
        ],
        T0,
    )
    .await;
    run_ok(s, "tpa", "tp-ack-00001", T0 + SEC).await;
    run_fail(s, "tpb", "tp-disc-0001", T0 + 2 * SEC).await;
    let end = T0 + SEC + TRACK_RETENTION;
    assert_eq!(
        track_state(s, "tp-ack-00001", end - 1).await,
        Some(TrackState::Success)
    );
    assert_eq!(track(s, "tp-ack-00001", end).await, None, "past retention");
    assert_eq!(
        track_state(s, "tp-disc-0001", end).await,
        Some(TrackState::Failed)
    );
    assert_eq!(track(s, "tp-disc-0001", end + SEC).await, None);

    let late = T0 + 2 * HOUR;
    assert_eq!(
        track_state(s, "tp-wait-0001", late).await,
        Some(TrackState::Enqueued),
        "kept while the job exists"
    );
    s.sweep_expired(late, 1000).await.expect("sweep");
    assert_eq!(
        track(s, "tp-ack-00001", T0 + 2 * SEC).await,
        None,
        "purged by the sweep (asked with an earlier clock)"
    );
    assert_eq!(track(s, "tp-disc-0001", T0 + 2 * SEC).await, None, "purged");
    assert_eq!(
        track(s, "tp-wait-0001", late)
            .await
            .map(|t| (t.state, t.updated_at)),
        Some((TrackState::Enqueued, T0))
    );
    c.watch_tracked(&["tp-ack-00001", "tp-wait-0001"]);
    c.finish(late).await;
}

/// Jobs without `custom.track` = 1 have no tracking data; TRACK SET stores nothing for them
/// (or for unknown jids) but still extends a working job's reservation.
pub async fn untracked_job_has_no_tracking<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("un-plain-001").queue("uqa").reserve_for(60),
            spec("un-zero-0001").queue("uqb").custom(r#"{"track":0}"#),
            spec("un-two-00001").queue("uqb").custom(r#"{"track":2}"#),
        ],
        T0,
    )
    .await;
    for jid in [
        "un-plain-001",
        "un-zero-0001",
        "un-two-00001",
        "un-known-001",
    ] {
        assert_eq!(track(s, jid, T0).await, None, "{jid}");
    }
    assert!(!track_set(s, "un-zero-0001", Some(10), Some("x"), None, T0).await);
    assert!(!track_set(s, "un-known-001", Some(10), Some("x"), None, T0).await);
    assert_eq!(track(s, "un-zero-0001", T0).await, None);
    assert_eq!(
        fetch_jid(s, &["uqa"], T0).await.as_deref(),
        Some("un-plain-001")
    );
    assert!(
        !track_set(
            s,
            "un-plain-001",
            Some(20),
            None,
            Some(T0 + 5 * MIN),
            T0 + 10 * SEC
        )
        .await
    );
    assert_eq!(track(s, "un-plain-001", T0 + 10 * SEC).await, None);
    let j = must_get(s, "un-plain-001").await;
    assert_eq!(
        (j.at, j.reservation.map(|r| r.expires_at)),
        (T0 + 5 * MIN, Some(T0 + 5 * MIN)),
        "the reservation of an untracked job is extended too"
    );
    c.finish(T0 + 10 * SEC).await;
}
