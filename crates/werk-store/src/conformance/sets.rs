use super::*;

// ---------------------------------------------------------------------------------------------
// Scheduler, retry tick, reaper, purge
// ---------------------------------------------------------------------------------------------

/// promote_due moves scheduled jobs with `at` ≤ now and retry jobs with `next_at` ≤ now, nothing
/// else; promoted jobs get a fresh `enqueued_at` and the listener hears of their queue.
pub async fn promote_due_moves_only_due_jobs<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let retry = put(s, &spec("prom-retry-01").queue("r"), Retry, T0).await;
    push(
        s,
        &[
            spec("prom-sched-01").queue("s1").at(T0 + 10 * SEC),
            spec("prom-sched-02").queue("s2").at(T0 + HOUR),
        ],
        T0,
    )
    .await;
    put(
        s,
        &spec("prom-work-001").queue("w").reserve_for(60),
        Working,
        T0,
    )
    .await;
    put(s, &spec("prom-dead-001").queue("d").retry(-1), Dead, T0).await;
    c.rec.take();

    assert_eq!(promote(s, T0 + 10 * SEC - 1).await, 0, "nothing due yet");
    let t1 = T0 + 10 * SEC;
    assert_eq!(promote(s, t1).await, 1, "at == now is due");
    let got = must_get(s, "prom-sched-01").await;
    assert_eq!((got.state, got.at), (Enqueued, t1));
    assert_eq!(
        parse_rfc3339(&payload(&got).enqueued_at),
        Ok(t1),
        "promotion sets enqueued_at"
    );
    assert!(
        c.rec.take().iter().any(|q| q == "s1"),
        "the listener hears of promoted jobs"
    );
    assert!(
        stats(s).await.queues.iter().any(|q| q.name == "s1"),
        "promotion creates the queue"
    );

    assert_eq!(
        promote(s, retry.at - 1).await,
        0,
        "the retry is not due yet"
    );
    assert_eq!(promote(s, retry.at).await, 1, "next_at == now is due");
    assert_eq!(state_of(s, "prom-retry-01").await, Some(Enqueued));
    assert!(c.rec.take().iter().any(|q| q == "r"));

    let t2 = T0 + 10 * MIN;
    assert_eq!(
        promote(s, t2).await,
        0,
        "working and dead jobs are never promoted"
    );
    assert_eq!(state_of(s, "prom-sched-02").await, Some(Scheduled));
    assert_eq!(state_of(s, "prom-work-001").await, Some(Working));
    assert_eq!(state_of(s, "prom-dead-001").await, Some(Dead));
    assert_eq!(
        fetch_jid(s, &["s1", "r"], t2).await.as_deref(),
        Some("prom-sched-01")
    );
    assert_eq!(
        fetch_jid(s, &["s1", "r"], t2).await.as_deref(),
        Some("prom-retry-01")
    );
    c.finish(t2).await;
}

/// A promoted retry keeps its `failure` and gets a fresh `enqueued_at`.
pub async fn promote_due_refreshes_enqueued_at_and_keeps_failure<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let retry = put(s, &spec("prom-keep-001"), Retry, T0).await;
    let before = payload(&retry).failure.expect("failure");
    let t = retry.at + 3 * SEC;
    assert_eq!(promote(s, t).await, 1);
    let got = must_get(s, "prom-keep-001").await;
    assert_eq!((got.state, got.at), (Enqueued, t));
    let job = payload(&got);
    assert_eq!(
        parse_rfc3339(&job.enqueued_at),
        Ok(t),
        "enqueued_at is the promotion time"
    );
    assert_eq!(
        job.failure,
        Some(before),
        "promotion keeps the failure object"
    );
    let fetched = fetch(s, &["default"], t)
        .await
        .expect("promoted job is fetchable");
    assert_eq!(parse_rfc3339(&payload(&fetched).enqueued_at), Ok(t));
    c.finish(t).await;
}

/// promote_due moves at most `limit` jobs, earliest due first, and reports how many.
pub async fn promote_due_respects_limit<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let ats = [5, 1, 4, 2, 3];
    let specs: Vec<Spec> = ats
        .iter()
        .map(|k| spec(&format!("limit-at-{k:04}")).at(T0 + k * SEC))
        .collect();
    push(s, &specs, T0).await;
    let t = T0 + MIN;
    assert_eq!(s.promote_due(t, 2).await.expect("promote_due"), 2);
    assert_eq!(
        jids(s, Enqueued, None).await,
        vec!["limit-at-0001", "limit-at-0002"],
        "the two earliest-due jobs move first"
    );
    assert_eq!(stats(s).await.scheduled, 3);
    assert_eq!(s.promote_due(t, 10).await.expect("promote_due"), 3);
    assert_eq!(s.promote_due(t, 10).await.expect("promote_due"), 0);
    assert_eq!(stats(s).await.enqueued(), 5);
    c.finish(t).await;
}

/// The reaper: working with `reserved_until` ≤ now is failed as `ReservationExpired` (counted in
/// processed and failures); unexpired reservations are left alone.
pub async fn reap_expired_fails_expired_reservations<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(
        s,
        &spec("reap-short-01").queue("a").reserve_for(60),
        Working,
        T0,
    )
    .await;
    put(
        s,
        &spec("reap-long-001").queue("b").reserve_for(600),
        Working,
        T0,
    )
    .await;
    assert_eq!(reap(s, T0 + 60 * SEC - 1).await, 0, "nothing expired yet");
    let t = T0 + 60 * SEC;
    assert_eq!(reap(s, t).await, 1, "reserved_until == now is expired");
    let got = must_get(s, "reap-short-01").await;
    assert_eq!(got.state, Retry);
    assert!(
        (t + 15 * SEC..=t + 44 * SEC).contains(&got.at),
        "backoff of a first failure"
    );
    let f = payload(&got).failure.expect("failure object");
    assert_eq!(f.errtype, "ReservationExpired");
    assert_eq!(f.message, "Faktory job reservation expired");
    assert!(f.backtrace.is_empty());
    assert_eq!((f.retry_count, f.remaining), (0, 25));
    assert_eq!(parse_rfc3339(&f.failed_at), Ok(t));
    assert_eq!(
        state_of(s, "reap-long-001").await,
        Some(Working),
        "unexpired reservation untouched"
    );
    let st = stats(s).await;
    assert_eq!(
        (st.working, st.retries, st.processed, st.failures),
        (1, 1, 1, 1)
    );
    assert_eq!(
        history(s, 1, t).await,
        vec![DayStats {
            day: local_day(t),
            processed: 1,
            failures: 1
        }]
    );
    c.finish(t).await;
}

/// The reaper applies the retry policy: retry 0 → gone, retry < 0 → dead, else retry.
pub async fn reap_expired_follows_retry_policy<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(
        s,
        &spec("reap-zero-001").queue("a").retry(0).reserve_for(60),
        Working,
        T0,
    )
    .await;
    put(
        s,
        &spec("reap-neg-0001").queue("b").retry(-1).reserve_for(60),
        Working,
        T0,
    )
    .await;
    put(
        s,
        &spec("reap-some-001").queue("c").retry(3).reserve_for(60),
        Working,
        T0,
    )
    .await;
    let t = T0 + 2 * MIN;
    assert_eq!(reap(s, t).await, 3);
    assert_eq!(
        get(s, "reap-zero-001").await,
        None,
        "an expired retry:0 job is dropped"
    );
    let dead = must_get(s, "reap-neg-0001").await;
    assert_eq!((dead.state, dead.at), (Dead, t + DEFAULT_RETENTION));
    assert_eq!(state_of(s, "reap-some-001").await, Some(Retry));
    assert_eq!(counters(s).await, (3, 3));
    c.finish(t).await;
}

/// reap_expired handles at most `limit` reservations per call.
pub async fn reap_expired_respects_limit<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    for i in 0..3 {
        put(
            s,
            &spec(&format!("reap-lim-{i:04}")).reserve_for(60),
            Working,
            T0 + i,
        )
        .await;
    }
    let t = T0 + 5 * MIN;
    assert_eq!(s.reap_expired(t, 2).await.expect("reap"), 2);
    assert_eq!(stats(s).await.working, 1);
    assert_eq!(
        state_of(s, "reap-lim-0002").await,
        Some(Working),
        "the earliest-expiring reservations are reaped first"
    );
    assert_eq!(s.reap_expired(t, 2).await.expect("reap"), 1);
    assert_eq!(s.reap_expired(t, 2).await.expect("reap"), 0);
    assert_eq!(stats(s).await.retries, 3);
    c.finish(t).await;
}

/// After the reaper took a job, the worker that still ran it may ACK it late: AckedLate(retry),
/// the retry → gone, `processed` counted (once by the reaper's failure, once by the ACK), and it
/// never comes back. The same once the retry tick has put it back in its queue:
/// AckedLate(enqueued), and the queue is one smaller.
pub async fn late_ack_after_reap_removes_job_and_counts_processed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("late-ack-0001").reserve_for(60), Working, T0).await;
    put(
        s,
        &spec("late-ack-0002").queue("other").reserve_for(60),
        Working,
        T0,
    )
    .await;
    let t = T0 + 61 * SEC;
    assert_eq!(reap(s, t).await, 2);
    assert_eq!(state_of(s, "late-ack-0001").await, Some(Retry));
    assert_eq!(counters(s).await, (2, 2), "the reaper's two failures");

    assert_eq!(
        ack(s, "late-ack-0001", t + SEC).await,
        AckOutcome::AckedLate(Retry),
        "late ACK of the reaped job"
    );
    assert_eq!(
        get(s, "late-ack-0001").await,
        None,
        "a late ACK removes the retry"
    );
    let st = stats(s).await;
    assert_eq!(st.retries, 1, "only the other reaped job is left in retry");
    assert_eq!(
        (st.processed, st.failures),
        (3, 2),
        "the late ACK counts processed, not a failure"
    );

    // The other one comes due and is back in its queue when its worker's ACK arrives.
    let u = t + HOUR;
    assert_eq!(promote(s, u).await, 1);
    assert_eq!(state_of(s, "late-ack-0002").await, Some(Enqueued));
    assert_eq!(
        ack(s, "late-ack-0002", u).await,
        AckOutcome::AckedLate(Enqueued),
        "late ACK of the reaped job after the retry tick requeued it"
    );
    assert_eq!(get(s, "late-ack-0002").await, None);
    let st = stats(s).await;
    assert_eq!(
        (st.enqueued(), st.retries, st.working),
        (0, 0, 0),
        "nothing is left"
    );
    assert_eq!((st.processed, st.failures), (4, 2));
    assert_eq!(
        promote(s, u + DAY).await,
        0,
        "a late-ACKed job never comes due again"
    );
    assert_eq!(
        fetch_jid(s, &["default", "other"], u + DAY).await,
        None,
        "a late-ACKed job is never delivered again"
    );
    c.finish(u + DAY).await;
}

/// After the reaper took a job, a late FAIL is NotWorking and the job stays in retry as the
/// reaper left it (only the reaper's failure is counted).
pub async fn late_fail_after_reap_changes_nothing<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("late-fail-001").reserve_for(60), Working, T0).await;
    let t = T0 + 61 * SEC;
    assert_eq!(reap(s, t).await, 1);
    let reaped = must_get(s, "late-fail-001").await;
    assert_eq!(reaped.state, Retry);
    assert_eq!(
        fail(s, "late-fail-001", t + SEC).await,
        FailReply::NotWorking
    );
    assert_eq!(
        get(s, "late-fail-001").await,
        Some(reaped),
        "a late FAIL must not touch the retry"
    );
    assert_eq!(
        counters(s).await,
        (1, 1),
        "only the reaper's failure is counted"
    );
    c.finish(t + SEC).await;
}

/// purge_dead removes dead jobs with `dead_until` ≤ now (dead_until = death + dead_retention),
/// at most `limit`, and counts nothing.
pub async fn purge_dead_removes_only_expired_dead_jobs<H: Harness>() {
    let retention = 10 * MIN;
    let c = Ctx::<H>::with_config(StoreConfig {
        dead_retention: retention,
        ..StoreConfig::default()
    })
    .await;
    assert_eq!(c.cfg.dead_retention, retention);
    let s = c.s();
    let d1 = put(s, &spec("purge-d1-0001").retry(-1), Dead, T0).await;
    assert_eq!(
        d1.at,
        T0 + retention,
        "dead_until uses the configured retention"
    );
    put(s, &spec("purge-d2-0001").retry(-1), Dead, T0 + 5 * MIN).await;
    let before = counters(s).await;
    assert_eq!(
        s.purge_dead(T0 + retention - 1, 100).await.expect("purge"),
        0
    );
    assert_eq!(
        s.purge_dead(T0 + retention, 100).await.expect("purge"),
        1,
        "dead_until == now"
    );
    assert_eq!(get(s, "purge-d1-0001").await, None);
    assert_eq!(state_of(s, "purge-d2-0001").await, Some(Dead));
    assert_eq!(s.purge_dead(T0 + 14 * MIN, 100).await.expect("purge"), 0);
    assert_eq!(s.purge_dead(T0 + 15 * MIN, 100).await.expect("purge"), 1);
    assert_eq!(stats(s).await.dead, 0);

    let t = T0 + 20 * MIN;
    for i in 0..3 {
        put(
            s,
            &spec(&format!("purge-lim-{i:04}")).retry(-1),
            Dead,
            t + i,
        )
        .await;
    }
    assert_eq!(
        s.purge_dead(t + HOUR, 2).await.expect("purge"),
        2,
        "at most limit"
    );
    assert_eq!(
        jids(s, Dead, None).await,
        vec!["purge-lim-0002"],
        "the oldest go first"
    );
    assert_eq!(s.purge_dead(t + HOUR, 2).await.expect("purge"), 1);
    assert_eq!(
        counters(s).await.0,
        before.0 + 3,
        "purging counts nothing (3 FAILs did)"
    );
    c.finish(t + HOUR).await;
}
