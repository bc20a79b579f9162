use super::*;

// ---------------------------------------------------------------------------------------------
// Throttles
// ---------------------------------------------------------------------------------------------

fn throttle(queue: &str, limit: ThrottleLimit, timeout: Option<Millis>) -> Throttle {
    Throttle {
        queue: queue.to_string(),
        limit,
        timeout,
    }
}

async fn fetch_as<S: Store>(s: &S, queues: &[&str], wid: &str, now: Millis) -> Option<String> {
    s.fetch(strings(queues), wid.to_string(), now)
        .await
        .expect("fetch")
        .map(|j| j.jid)
}

/// A concurrency throttle: at most `n` working jobs of the queue across workers; ACK or FAIL
/// frees a slot; other queues are not limited; throttles are configuration (not kept by a
/// reopen) and replaced as a whole.
pub async fn throttle_concurrency_limits_fetch<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let s = c.s();
    s.set_throttles(vec![throttle("thq", ThrottleLimit::Concurrency(2), None)]);
    push(
        s,
        &[
            spec("thc-job-0001").queue("thq"),
            spec("thc-job-0002").queue("thq"),
            spec("thc-job-0003").queue("thq"),
            spec("thc-job-0004").queue("thq"),
            spec("thc-job-0005").queue("thq"),
            spec("thc-free-001").queue("free"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_as(s, &["thq"], "wid-a", T0).await.as_deref(),
        Some("thc-job-0001")
    );
    assert_eq!(
        fetch_as(s, &["thq"], "wid-b", T0).await.as_deref(),
        Some("thc-job-0002")
    );
    assert_eq!(
        fetch_as(s, &["thq"], "wid-c", T0).await,
        None,
        "limit reached"
    );
    assert_eq!(fetch_as(s, &["thq"], "wid-a", T0).await, None);
    assert_eq!(
        fetch_as(s, &["free"], "wid-a", T0).await.as_deref(),
        Some("thc-free-001"),
        "other queues are not throttled"
    );
    assert_eq!(ack(s, "thc-job-0001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        fetch_as(s, &["thq"], "wid-c", T0 + SEC).await.as_deref(),
        Some("thc-job-0003")
    );
    fail(s, "thc-job-0002", T0 + 2 * SEC).await;
    assert_eq!(
        fetch_as(s, &["thq"], "wid-c", T0 + 2 * SEC)
            .await
            .as_deref(),
        Some("thc-job-0004")
    );
    assert_eq!(fetch_as(s, &["thq"], "wid-d", T0 + 2 * SEC).await, None);
    assert_eq!(
        jids(s, Enqueued, Some("thq")).await,
        vec!["thc-job-0005"],
        "a throttled queue keeps its jobs"
    );
    s.set_throttles(vec![]);
    assert_eq!(
        fetch_as(s, &["thq"], "wid-d", T0 + 3 * SEC)
            .await
            .as_deref(),
        Some("thc-job-0005"),
        "throttles replaced by none"
    );
    push(s, &[spec("thc-job-0006").queue("thq")], T0 + 3 * SEC).await;
    s.set_throttles(vec![throttle("thq", ThrottleLimit::Concurrency(1), None)]);
    assert_eq!(fetch_as(s, &["thq"], "wid-d", T0 + 3 * SEC).await, None);
    c.reopen().await;
    assert_eq!(
        fetch_as(c.s(), &["thq"], "wid-d", T0 + 4 * SEC)
            .await
            .as_deref(),
        Some("thc-job-0006"),
        "throttles are not persisted"
    );
    c.finish(T0 + 4 * SEC).await;
}

/// A per-worker throttle limits each wid separately.
pub async fn throttle_per_worker_limits_fetch<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    s.set_throttles(vec![throttle("pwq", ThrottleLimit::PerWorker(1), None)]);
    push(
        s,
        &[
            spec("thw-job-0001").queue("pwq"),
            spec("thw-job-0002").queue("pwq"),
            spec("thw-job-0003").queue("pwq"),
            spec("thw-job-0004").queue("pwq"),
            spec("thw-oth-0001").queue("oth"),
            spec("thw-oth-0002").queue("oth"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-a", T0).await.as_deref(),
        Some("thw-job-0001")
    );
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-a", T0).await,
        None,
        "wid-a is at its limit"
    );
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-b", T0).await.as_deref(),
        Some("thw-job-0002")
    );
    assert_eq!(fetch_as(s, &["pwq"], "wid-b", T0).await, None);
    assert_eq!(
        fetch_as(s, &["oth"], "wid-a", T0).await.as_deref(),
        Some("thw-oth-0001")
    );
    assert_eq!(
        fetch_as(s, &["oth"], "wid-a", T0).await.as_deref(),
        Some("thw-oth-0002"),
        "jobs of other queues do not count"
    );
    assert_eq!(fetch_as(s, &["pwq"], "wid-a", T0).await, None);
    assert_eq!(ack(s, "thw-job-0001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-a", T0 + SEC).await.as_deref(),
        Some("thw-job-0003")
    );
    assert_eq!(fetch_as(s, &["pwq"], "wid-b", T0 + SEC).await, None);
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-c", T0 + SEC).await.as_deref(),
        Some("thw-job-0004")
    );
    c.finish(T0 + SEC).await;
}

/// With a timeout, a working job holds its slot only that long after its FETCH; it keeps its
/// reservation.
pub async fn throttle_timeout_reclaims_slot<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    s.set_throttles(vec![throttle(
        "ttq",
        ThrottleLimit::Concurrency(1),
        Some(60 * SEC),
    )]);
    push(
        s,
        &[
            spec("tht-job-0001").queue("ttq"),
            spec("tht-job-0002").queue("ttq"),
            spec("tht-job-0003").queue("ttq"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_as(s, &["ttq"], "wid-a", T0).await.as_deref(),
        Some("tht-job-0001")
    );
    assert_eq!(fetch_as(s, &["ttq"], "wid-b", T0 + 59 * SEC).await, None);
    assert_eq!(
        fetch_as(s, &["ttq"], "wid-b", T0 + 60 * SEC)
            .await
            .as_deref(),
        Some("tht-job-0002"),
        "fetched 60 s ago: the slot is reclaimed"
    );
    assert_eq!(fetch_as(s, &["ttq"], "wid-c", T0 + 61 * SEC).await, None);
    let j = must_get(s, "tht-job-0001").await;
    assert_eq!(j.state, Working, "the job keeps its reservation");
    assert_eq!(j.reservation.map(|r| r.reserved_at), Some(T0));
    c.finish(T0 + 61 * SEC).await;
}

/// A throttled queue counts as empty: the FETCH goes on to the next queue it names.
pub async fn throttled_queue_falls_through_to_next_queue<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    s.set_throttles(vec![throttle("hot", ThrottleLimit::Concurrency(1), None)]);
    push(
        s,
        &[
            spec("thf-hot-0001").queue("hot"),
            spec("thf-hot-0002").queue("hot"),
            spec("thf-cold-001").queue("cold"),
        ],
        T0,
    )
    .await;
    let qs = ["hot", "cold"];
    assert_eq!(
        fetch_as(s, &qs, "wid-a", T0).await.as_deref(),
        Some("thf-hot-0001")
    );
    assert_eq!(
        fetch_as(s, &qs, "wid-a", T0).await.as_deref(),
        Some("thf-cold-001")
    );
    assert_eq!(fetch_as(s, &qs, "wid-a", T0).await, None);
    assert_eq!(ack(s, "thf-hot-0001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        fetch_as(s, &qs, "wid-a", T0 + SEC).await.as_deref(),
        Some("thf-hot-0002")
    );
    c.finish(T0 + SEC).await;
}
