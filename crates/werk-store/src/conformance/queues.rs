use super::*;

// ---------------------------------------------------------------------------------------------
// Queues: remove, latency
// ---------------------------------------------------------------------------------------------

/// QUEUE REMOVE: the queue's enqueued jobs → gone, the queue and its pause flag forgotten; jobs
/// of that queue in other states and other queues untouched; unknown names ignored.
pub async fn remove_queues_deletes_enqueued_jobs_and_forgets_queue<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("rmq-a-work-01").queue("a"), Working, T0).await;
    put(s, &spec("rmq-a-retry-1").queue("a"), Retry, T0).await;
    put(s, &spec("rmq-a-sched-1").queue("a"), Scheduled, T0).await;
    push(
        s,
        &[
            spec("rmq-a-000001").queue("a"),
            spec("rmq-b-000001").queue("b"),
        ],
        T0,
    )
    .await;
    push(s, &[spec("rmq-a-000002").queue("a")], T0).await;
    s.set_paused(QueueSelector::Names(strings(&["a"])), true)
        .await
        .expect("pause");
    let n = s
        .remove_queues(QueueSelector::Names(strings(&["a", "unknown"])))
        .await
        .expect("remove");
    assert_eq!(n, 2, "remove returns the number of jobs removed");
    assert_eq!(
        stats(s).await.queues,
        vec![queue_stats("b", 1, false)],
        "queue a is forgotten"
    );
    assert_eq!(get(s, "rmq-a-000001").await, None);
    assert_eq!(get(s, "rmq-a-000002").await, None);
    assert_eq!(state_of(s, "rmq-a-work-01").await, Some(Working));
    assert_eq!(state_of(s, "rmq-a-retry-1").await, Some(Retry));
    assert_eq!(state_of(s, "rmq-a-sched-1").await, Some(Scheduled));
    assert_eq!(state_of(s, "rmq-b-000001").await, Some(Enqueued));
    assert_eq!(
        ack(s, "rmq-a-work-01", T0).await,
        AckOutcome::Acked,
        "a working job of a removed queue"
    );
    push(s, &[spec("rmq-a-000003").queue("a")], T0 + SEC).await;
    assert_eq!(
        stats(s).await.queues[0],
        queue_stats("a", 1, false),
        "a queue pushed to after REMOVE is new and unpaused"
    );
    assert_eq!(
        fetch_jid(s, &["a"], T0 + SEC).await.as_deref(),
        Some("rmq-a-000003")
    );
    c.finish(T0 + SEC).await;
}

/// QUEUE REMOVE *: every queue and its enqueued jobs.
pub async fn remove_all_queues<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("rma-work-0001").queue("w"), Working, T0).await;
    push(
        s,
        &[
            spec("rma-a-000001").queue("a"),
            spec("rma-b-000001").queue("b"),
            spec("rma-b-000002").queue("b"),
        ],
        T0,
    )
    .await;
    s.set_paused(QueueSelector::Names(strings(&["b"])), true)
        .await
        .expect("pause");
    assert_eq!(
        s.remove_queues(QueueSelector::All).await.expect("remove *"),
        3
    );
    let st = stats(s).await;
    assert!(st.queues.is_empty(), "{:?}", st.queues);
    assert_eq!(st.working, 1);
    assert!(jids(s, Enqueued, None).await.is_empty());
    push(s, &[spec("rma-b-000003").queue("b")], T0).await;
    assert_eq!(
        fetch_jid(s, &["b"], T0).await.as_deref(),
        Some("rma-b-000003"),
        "b is no longer paused"
    );
    c.finish(T0).await;
}

fn assert_latency(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: one latency per queue, got {got:?}"
    );
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() < 0.01,
            "{what}: latencies {got:?}, want {want:?}"
        );
    }
}

/// QUEUE LATENCY: seconds since the `enqueued_at` of each queue's next job, 0 for empty and
/// unknown queues, in the order asked.
pub async fn queue_latency_measures_oldest_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let lat = |qs: &[&str], now| s.queue_latency(strings(qs), now);
    assert_latency(
        &lat(&["a", "nope"], T0).await.expect("latency"),
        &[0.0, 0.0],
        "empty store",
    );
    put(s, &spec("lat-c-000001").queue("c"), Working, T0).await; // c known and empty
    push(s, &[spec("lat-a-000001").queue("a")], T0).await;
    push(s, &[spec("lat-b-000001").queue("b")], T0 + 500).await;
    push(s, &[spec("lat-a-000002").queue("a")], T0 + 1000).await;
    let got = lat(&["a", "b", "c", "nope"], T0 + 8140)
        .await
        .expect("latency");
    assert_latency(&got, &[8.14, 7.64, 0.0, 0.0], "a, b, c, nope");
    assert_eq!(
        fetch_jid(s, &["a"], T0 + 9000).await.as_deref(),
        Some("lat-a-000001")
    );
    assert_latency(
        &lat(&["a"], T0 + 10_000).await.expect("latency"),
        &[9.0],
        "a after a fetch",
    );
    s.set_paused(QueueSelector::Names(strings(&["b"])), true)
        .await
        .expect("pause");
    assert_latency(
        &lat(&["b"], T0 + 10_500).await.expect("latency"),
        &[10.0],
        "paused b",
    );
    push(s, &[spec("lat-d-000001").queue("d").at(T0 + 20 * SEC)], T0).await;
    assert_eq!(promote(s, T0 + 30 * SEC).await, 1);
    assert_latency(
        &lat(&["d"], T0 + 35 * SEC).await.expect("latency"),
        &[5.0],
        "promoted job",
    );
    c.finish(T0 + 35 * SEC).await;
}
