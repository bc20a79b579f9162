use super::*;

// ---------------------------------------------------------------------------------------------
// FETCH and pause
// ---------------------------------------------------------------------------------------------

/// Each queue is FIFO by arrival, whether jobs came in one PUSHB or separate PUSHes.
pub async fn fetch_is_fifo_within_queue<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(s, &[spec("fifo-00000003")], T0).await;
    push(s, &[spec("fifo-00000001"), spec("fifo-00000005")], T0 + SEC).await;
    push(s, &[spec("fifo-00000002")], T0 + 2 * SEC).await;
    push(s, &[spec("fifo-00000004")], T0 + 3 * SEC).await;
    let want = [
        "fifo-00000003",
        "fifo-00000001",
        "fifo-00000005",
        "fifo-00000002",
        "fifo-00000004",
    ];
    assert_eq!(
        jids(s, Enqueued, Some("default")).await,
        want,
        "list(Enqueued) in FIFO order"
    );
    for (i, jid) in want.iter().enumerate() {
        let t = T0 + 10 * SEC + i as Millis;
        assert_eq!(
            fetch_jid(s, &["default"], t).await.as_deref(),
            Some(*jid),
            "fetch #{i}"
        );
    }
    assert_eq!(fetch_jid(s, &["default"], T0 + 20 * SEC).await, None);
    c.finish(T0 + 20 * SEC).await;
}

/// FETCH takes the oldest job of the first non-empty queue, in the order given.
pub async fn fetch_takes_first_non_empty_queue_in_given_order<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    assert_eq!(
        fetch_jid(s, &["a", "b", "c"], T0).await,
        None,
        "nothing stored"
    );
    put(s, &spec("order-a-0001").queue("a"), Working, T0).await; // queue a known but empty
    push(s, &[spec("order-c-0001").queue("c")], T0).await;
    push(
        s,
        &[
            spec("order-b-0001").queue("b"),
            spec("order-b-0002").queue("b"),
        ],
        T0 + 1,
    )
    .await;
    push(s, &[spec("order-c-0002").queue("c")], T0 + 2).await;
    let t = T0 + SEC;
    assert_eq!(
        fetch_jid(s, &["a", "b", "c"], t).await.as_deref(),
        Some("order-b-0001")
    );
    assert_eq!(
        fetch_jid(s, &["c", "b"], t).await.as_deref(),
        Some("order-c-0001")
    );
    assert_eq!(
        fetch_jid(s, &["a", "b", "c"], t).await.as_deref(),
        Some("order-b-0002")
    );
    assert_eq!(
        fetch_jid(s, &["a", "b", "c"], t).await.as_deref(),
        Some("order-c-0002")
    );
    assert_eq!(fetch_jid(s, &["a", "b", "c"], t).await, None);
    c.finish(t).await;
}

/// Unknown queue names in FETCH are fine, and are not created.
pub async fn fetch_of_unknown_queue_is_fine<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    assert_eq!(fetch_jid(s, &["nope"], T0).await, None);
    push(s, &[spec("known-000001")], T0).await;
    assert_eq!(
        fetch_jid(s, &["nope", "default"], T0).await.as_deref(),
        Some("known-000001")
    );
    let st = stats(s).await;
    assert_eq!(
        st.queues,
        vec![queue_stats("default", 0, false)],
        "FETCH does not create queues"
    );
    c.finish(T0).await;
}

/// FETCH: enqueued → working, reserved from now until now + clamp(reserve_for) (0 → 1800 s,
/// 30 → 60 s), with the fetching wid; payload carries `enqueued_at`.
pub async fn fetch_reserves_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let cases: [(&str, Option<i64>, i64); 5] = [
        ("resv-absent1", None, 1800),
        ("resv-zero001", Some(0), 1800),
        ("resv-thirty1", Some(30), 60),
        ("resv-ten-min", Some(600), 600),
        ("resv-one-day", Some(86_400), 86_400),
    ];
    for (i, (jid, rf, _)) in cases.iter().enumerate() {
        let mut sp = spec(jid).queue("resv");
        if let Some(rf) = rf {
            sp = sp.reserve_for(*rf);
        }
        push(s, &[sp], T0 + i as Millis).await;
    }
    let t = T0 + MIN;
    for (i, (jid, _, secs)) in cases.iter().enumerate() {
        let now = t + i as Millis * SEC;
        let wid = format!("worker-{i}");
        let got = s
            .fetch(strings(&["resv"]), wid.clone(), now)
            .await
            .expect("fetch")
            .expect("a job");
        assert_eq!(got.jid, *jid, "FIFO");
        assert_eq!(got.state, Working);
        let r = got
            .reservation
            .clone()
            .expect("a working job has a reservation");
        assert_eq!(r.reserved_at, now, "{jid}: reserved_at");
        assert_eq!(
            r.expires_at,
            now + secs * SEC,
            "{jid}: expires_at = now + {secs} s"
        );
        assert_eq!(r.wid, wid, "{jid}: wid");
        assert_eq!(
            got.at, r.expires_at,
            "{jid}: a working job's at is its expiry"
        );
        assert_eq!(
            parse_rfc3339(&payload(&got).enqueued_at),
            Ok(T0 + i as Millis),
            "{jid}: enqueued_at"
        );
        assert_eq!(
            get(s, jid).await.as_ref(),
            Some(&got),
            "get of {jid} equals what FETCH returned"
        );
    }
    let st = stats(s).await;
    assert_eq!(st.working, 5);
    assert_eq!(
        st.queues,
        vec![queue_stats("resv", 0, false)],
        "an emptied queue stays known"
    );
    assert_eq!((st.processed, st.failures), (0, 0), "FETCH counts nothing");
    c.finish(t + 10 * SEC).await;
}

/// Paused queues still take PUSHes, but FETCH skips them.
pub async fn fetch_skips_paused_queues<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("pause-a-0001").queue("a"),
            spec("pause-b-0001").queue("b"),
        ],
        T0,
    )
    .await;
    s.set_paused(QueueSelector::Names(strings(&["a"])), true)
        .await
        .expect("pause");
    push(s, &[spec("pause-a-0002").queue("a")], T0 + 1).await;
    let st = stats(s).await;
    assert_eq!(
        st.queues,
        vec![queue_stats("a", 2, true), queue_stats("b", 1, false)]
    );
    assert_eq!(
        fetch_jid(s, &["a", "b"], T0 + SEC).await.as_deref(),
        Some("pause-b-0001")
    );
    assert_eq!(
        fetch_jid(s, &["a", "b"], T0 + SEC).await,
        None,
        "a is paused, b is empty"
    );
    assert_eq!(fetch_jid(s, &["a"], T0 + SEC).await, None, "a is paused");
    s.set_paused(QueueSelector::Names(strings(&["a"])), false)
        .await
        .expect("resume");
    assert!(!stats(s).await.queues[0].paused);
    assert_eq!(
        fetch_jid(s, &["a", "b"], T0 + SEC).await.as_deref(),
        Some("pause-a-0001")
    );
    c.finish(T0 + SEC).await;
}

/// Pause flags are persisted.
pub async fn pause_survives_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    push(
        c.s(),
        &[
            spec("pause-keep-01").queue("a"),
            spec("pause-keep-02").queue("b"),
        ],
        T0,
    )
    .await;
    c.s()
        .set_paused(QueueSelector::Names(strings(&["a"])), true)
        .await
        .expect("pause");
    c.reopen().await;
    let s = c.s();
    assert_eq!(
        stats(s).await.queues,
        vec![queue_stats("a", 1, true), queue_stats("b", 1, false)]
    );
    assert_eq!(
        fetch_jid(s, &["a"], T0).await,
        None,
        "a is still paused after reopen"
    );
    s.set_paused(QueueSelector::Names(strings(&["a"])), false)
        .await
        .expect("resume");
    c.reopen().await;
    assert_eq!(
        fetch_jid(c.s(), &["a"], T0).await.as_deref(),
        Some("pause-keep-01"),
        "resume persisted"
    );
    c.finish(T0).await;
}

/// PAUSE * pauses every known queue; naming an unknown queue is a silent no-op (a later push
/// creates it unpaused).
pub async fn set_paused_all_and_unknown_queues<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("pall-a-00001").queue("a"),
            spec("pall-b-00001").queue("b"),
        ],
        T0,
    )
    .await;
    s.set_paused(QueueSelector::All, true)
        .await
        .expect("pause *");
    assert_eq!(
        stats(s).await.queues,
        vec![queue_stats("a", 1, true), queue_stats("b", 1, true)]
    );
    assert_eq!(fetch_jid(s, &["a", "b"], T0).await, None);

    s.set_paused(QueueSelector::Names(strings(&["ghost"])), true)
        .await
        .expect("pause ghost");
    assert_eq!(
        stats(s).await.queues.len(),
        2,
        "pausing an unknown queue does not create it"
    );
    push(s, &[spec("pall-ghost-01").queue("ghost")], T0).await;
    assert_eq!(
        stats(s).await.queues[2],
        queue_stats("ghost", 1, false),
        "pausing a queue before it existed has no effect"
    );
    assert_eq!(
        fetch_jid(s, &["a", "ghost"], T0).await.as_deref(),
        Some("pall-ghost-01")
    );

    s.set_paused(QueueSelector::All, false)
        .await
        .expect("resume *");
    assert!(stats(s).await.queues.iter().all(|q| !q.paused));
    assert_eq!(
        fetch_jid(s, &["b", "a"], T0).await.as_deref(),
        Some("pall-b-00001")
    );
    c.finish(T0).await;
}

/// Re-enqueued jobs (retry promotion, scheduled promotion, MUTATE requeue) go to the back of
/// their queue.
pub async fn reenqueued_jobs_go_to_back_of_queue<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("back-retry-01"), Retry, T0).await;
    put(s, &spec("back-dead-001").retry(-1), Dead, T0).await;
    push(s, &[spec("back-sched-01").at(T0 + 30 * SEC)], T0).await;
    push(s, &[spec("back-early-01"), spec("back-early-02")], T0 + SEC).await;
    let t = T0 + MIN;
    assert_eq!(
        promote(s, t).await,
        2,
        "the retry and the scheduled job are due"
    );
    push(s, &[spec("back-early-03")], t + SEC).await;
    assert_eq!(
        mutate(s, MutateOp::Requeue, Dead, None, t + 2 * SEC).await,
        1
    );
    let order = jids(s, Enqueued, Some("default")).await;
    assert_eq!(&order[..2], ["back-early-01", "back-early-02"], "{order:?}");
    let mut promoted = order[2..4].to_vec();
    promoted.sort();
    assert_eq!(promoted, ["back-retry-01", "back-sched-01"], "{order:?}");
    assert_eq!(&order[4..], ["back-early-03", "back-dead-001"], "{order:?}");
    for want in &order {
        assert_eq!(
            fetch_jid(s, &["default"], t + 3 * SEC).await.as_ref(),
            Some(want)
        );
    }
    c.finish(t + 3 * SEC).await;
}
