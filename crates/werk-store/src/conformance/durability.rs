use super::*;

// ---------------------------------------------------------------------------------------------
// Durability, listing, get
// ---------------------------------------------------------------------------------------------

/// After a crash-reopen every state, payload, reservation, counter, pause flag and history entry
/// is as before; a working job can still be ACKed or FAILed, FIFO order holds.
pub async fn every_state_survives_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let y = T0 - DAY;
    {
        let s = c.s();
        put(s, &spec("dur-yest-ack1"), Working, y).await;
        assert_eq!(ack(s, "dur-yest-ack1", y).await, AckOutcome::Acked);
        put(s, &spec("dur-yest-fail"), Retry, y).await;
        populate(s, T0).await;
        push(s, &[spec("dur-paused-01").queue("paused")], T0 + MIN).await;
        s.set_paused(QueueSelector::Names(strings(&["paused"])), true)
            .await
            .expect("pause");
    }
    let t = T0 + 2 * MIN;
    let before = snapshot(c.s(), t).await;
    c.reopen().await;
    let after = snapshot(c.s(), t).await;
    assert_same_snapshot(&before, &after, "after a crash-reopen");
    c.reopen().await; // twice: reopening must not itself change anything
    let again = snapshot(c.s(), t).await;
    assert_same_snapshot(&before, &again, "after a second crash-reopen");

    let s = c.s();
    assert_eq!(
        ack(s, &fx_jid(Working, "alpha-red"), t).await,
        AckOutcome::Acked,
        "ACK after reopen"
    );
    assert!(
        matches!(
            fail(s, &fx_jid(Working, "alpha-blue"), t).await,
            FailReply::Failed(FailOutcome::Retry { .. })
        ),
        "FAIL after reopen"
    );
    assert_eq!(
        fetch_jid(s, &["paused", "q-enq"], t).await,
        Some(fx_jid(Enqueued, "alpha-red"))
    );
    assert_eq!(
        fetch_jid(s, &["q-enq"], t).await,
        Some(fx_jid(Enqueued, "alpha-blue"))
    );
    assert_eq!(
        counters(s).await,
        (before.stats.processed + 2, before.stats.failures + 1)
    );
    c.finish(t).await;
}

async fn assert_pages<S: Store>(s: &S, state: JobState, queue: Option<&str>, want: &[&str]) {
    let all = jids(s, state, queue).await;
    assert_eq!(all, want, "list({state}, {queue:?}) in the state's order");
    for (off, lim) in [
        (0u64, 2u64),
        (2, 2),
        (4, 2),
        (5, 2),
        (1, 3),
        (3, 100),
        (9, 1),
    ] {
        let page: Vec<String> = s
            .list(state, queue.map(str::to_string), off, lim)
            .await
            .expect("list")
            .into_iter()
            .map(|j| j.jid)
            .collect();
        let lo = (off as usize).min(want.len());
        let hi = ((off + lim) as usize).min(want.len());
        assert_eq!(
            page,
            want[lo..hi],
            "list({state}, {queue:?}, offset {off}, limit {lim})"
        );
    }
}

/// list pages (offset, limit) through each state in its order: scheduled by `at` then arrival,
/// enqueued FIFO, working by reservation expiry, retry by `next_at`, dead by time of death.
pub async fn list_pages_in_state_order<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    // Scheduled: at = [50, 10, 30, 10, 20] min; ties by arrival.
    for (i, m) in [50, 10, 30, 10, 20].into_iter().enumerate() {
        push(
            s,
            &[spec(&format!("pg-sched-{i:04}")).at(T0 + m * MIN)],
            T0 + i as Millis,
        )
        .await;
    }
    assert_pages(
        s,
        Scheduled,
        None,
        &[
            "pg-sched-0001",
            "pg-sched-0003",
            "pg-sched-0004",
            "pg-sched-0002",
            "pg-sched-0000",
        ],
    )
    .await;

    // Working: fetched in order 0..4, reserve_for = [600, 60, 300, 120, 900] s.
    for (i, rf) in [600, 60, 300, 120, 900].into_iter().enumerate() {
        put(
            s,
            &spec(&format!("pg-work-{i:04}")).queue("w").reserve_for(rf),
            Working,
            T0 + i as Millis,
        )
        .await;
    }
    assert_pages(
        s,
        Working,
        None,
        &[
            "pg-work-0001",
            "pg-work-0003",
            "pg-work-0002",
            "pg-work-0000",
            "pg-work-0004",
        ],
    )
    .await;

    // Retry: failed 100 s apart (more than the jitter) in the order 4, 2, 0, 3, 1.
    // Dead: died in the order 3, 1, 4, 0, 2.
    for (k, (r, d)) in [(4, 3), (2, 1), (0, 4), (3, 0), (1, 2)]
        .into_iter()
        .enumerate()
    {
        let t = T0 + k as Millis * 100 * SEC;
        put(s, &spec(&format!("pg-retry-{r:04}")).queue("r"), Retry, t).await;
        put(
            s,
            &spec(&format!("pg-dead-{d:04}")).queue("d").retry(-1),
            Dead,
            t,
        )
        .await;
    }
    assert_pages(
        s,
        Retry,
        None,
        &[
            "pg-retry-0004",
            "pg-retry-0002",
            "pg-retry-0000",
            "pg-retry-0003",
            "pg-retry-0001",
        ],
    )
    .await;
    assert_pages(
        s,
        Dead,
        None,
        &[
            "pg-dead-0003",
            "pg-dead-0001",
            "pg-dead-0004",
            "pg-dead-0000",
            "pg-dead-0002",
        ],
    )
    .await;

    // Enqueued: FIFO, in one queue and over all queues.
    push(
        s,
        &[
            spec("pg-enq-00003").queue("e"),
            spec("pg-enq-00000").queue("e"),
        ],
        T0 + HOUR,
    )
    .await;
    for jid in ["pg-enq-00004", "pg-enq-00001", "pg-enq-00002"] {
        push(s, &[spec(jid).queue("e")], T0 + HOUR + 1).await;
    }
    let fifo = [
        "pg-enq-00003",
        "pg-enq-00000",
        "pg-enq-00004",
        "pg-enq-00001",
        "pg-enq-00002",
    ];
    assert_pages(s, Enqueued, Some("e"), &fifo).await;
    assert_pages(s, Enqueued, None, &fifo).await;
    c.finish(T0 + HOUR).await;
}

/// get() reports each state with the job's queue and jobtype; unknown and gone jids are None.
pub async fn get_reports_each_state<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    for state in JobState::ALL {
        let jid = format!("get-{}", state.set_name());
        let queue = format!("q-{}", state.set_name());
        let sp = spec(&jid)
            .queue(&queue)
            .jobtype("GetJob")
            .retry(if state == Dead { -1 } else { 25 });
        put(s, &sp, state, T0).await;
        let got = must_get(s, &jid).await;
        assert_eq!((got.jid.as_str(), got.state), (jid.as_str(), state));
        assert_eq!(
            (got.queue.as_str(), got.jobtype.as_str()),
            (queue.as_str(), "GetJob")
        );
    }
    assert_eq!(get(s, "get-unknown-1").await, None);
    assert_eq!(ack(s, "get-working", T0).await, AckOutcome::Acked);
    assert_eq!(get(s, "get-working").await, None);
    c.finish(T0).await;
}

/// Asserts that the job is exactly in `state` (get and every list agree) or gone (None).
async fn assert_only_in<S: Store>(s: &S, jid: &str, state: Option<JobState>, step: &str) {
    assert_eq!(state_of(s, jid).await, state, "{step}: get({jid})");
    for st in JobState::ALL {
        let listed = jids(s, st, None).await.iter().filter(|j| *j == jid).count();
        let want = usize::from(Some(st) == state);
        assert_eq!(listed, want, "{step}: {jid} listed {listed} times in {st}");
    }
    check_consistency(s).await;
}

/// One job walked through every transition: it is in exactly one state after each.
pub async fn job_is_in_exactly_one_state_through_its_life<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let jid = "life-job-0001";
    let mut t = T0;
    push(s, &[spec(jid).retry(2).reserve_for(60).at(T0 + MIN)], t).await;
    assert_only_in(s, jid, Some(Scheduled), "push").await;
    t += MIN;
    assert_eq!(promote(s, t).await, 1);
    assert_only_in(s, jid, Some(Enqueued), "promote scheduled").await;
    assert_eq!(fetch_jid(s, &["default"], t).await.as_deref(), Some(jid));
    assert_only_in(s, jid, Some(Working), "fetch").await;
    assert!(matches!(
        fail(s, jid, t).await,
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    assert_only_in(s, jid, Some(Retry), "fail").await;
    t += MIN;
    assert_eq!(promote(s, t).await, 1);
    assert_only_in(s, jid, Some(Enqueued), "promote retry").await;
    assert_eq!(fetch_jid(s, &["default"], t).await.as_deref(), Some(jid));
    t += 2 * MIN;
    assert_eq!(reap(s, t).await, 1);
    assert_only_in(s, jid, Some(Retry), "reap").await;
    assert_eq!(
        mutate(s, MutateOp::Kill, Retry, by_jids(&[jid]), t).await,
        1
    );
    assert_only_in(s, jid, Some(Dead), "kill").await;
    assert_eq!(
        mutate(s, MutateOp::Requeue, Dead, by_jids(&[jid]), t).await,
        1
    );
    assert_only_in(s, jid, Some(Enqueued), "requeue dead").await;
    assert_eq!(fetch_jid(s, &["default"], t).await.as_deref(), Some(jid));
    assert_eq!(
        fail(s, jid, t).await,
        FailReply::Failed(FailOutcome::Dead),
        "third failure of retry:2"
    );
    assert_only_in(s, jid, Some(Dead), "fail with retries exhausted").await;
    assert_eq!(
        mutate(s, MutateOp::Requeue, Dead, by_jids(&[jid]), t).await,
        1
    );
    assert_eq!(fetch_jid(s, &["default"], t).await.as_deref(), Some(jid));
    assert_eq!(ack(s, jid, t).await, AckOutcome::Acked);
    assert_only_in(s, jid, None, "ack").await;
    c.finish(t).await;
}
