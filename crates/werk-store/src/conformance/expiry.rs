use super::*;

// ---------------------------------------------------------------------------------------------
// Expiring jobs
// ---------------------------------------------------------------------------------------------

pub(super) async fn expired_count<S: Store>(s: &S) -> u64 {
    s.stats().await.expect("stats").expired
}

/// A job past its expiry is dropped when a FETCH meets it (and counted); the FETCH goes on to
/// the next job. `expires_in` counts from the push; `expires_at` is absolute.
pub async fn expired_jobs_are_dropped_at_fetch_and_counted<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let at30 = js(&format_millis(T0 + 30 * SEC));
    push(
        s,
        &[
            spec("exp-abs-30s")
                .queue("q")
                .custom(&format!(r#"{{"expires_at":{at30}}}"#)),
            spec("exp-rel-60s")
                .queue("q")
                .custom(r#"{"expires_in":60}"#),
            spec("exp-rel-10s")
                .queue("q")
                .custom(r#"{"expires_in":10}"#),
            spec("exp-never-1").queue("q"),
        ],
        T0,
    )
    .await;
    let got = s
        .fetch(strings(&["q"]), WID.into(), T0 + 45 * SEC)
        .await
        .expect("fetch");
    assert_eq!(got.map(|j| j.jid).as_deref(), Some("exp-rel-60s"));
    assert_eq!(get(s, "exp-abs-30s").await, None, "expired: dropped");
    assert_eq!(
        get(s, "exp-rel-10s").await.map(|j| j.state),
        Some(Enqueued),
        "not met by the FETCH yet: still there"
    );
    assert_eq!(expired_count(s).await, 1);
    let got = s
        .fetch(strings(&["q"]), WID.into(), T0 + 46 * SEC)
        .await
        .expect("fetch");
    assert_eq!(got.map(|j| j.jid).as_deref(), Some("exp-never-1"));
    assert_eq!(expired_count(s).await, 2);
    let st = s.stats().await.expect("stats");
    assert_eq!(st.processed, 0, "expired jobs are not processed");
    assert_eq!(st.failures, 0);
    assert_eq!(st.working, 2);
    c.finish(T0 + 46 * SEC).await;
}

/// The sweep removes enqueued jobs past their expiry, up to its limit, and nothing else
/// (scheduled jobs wait for their time; jobs without expiry stay).
pub async fn sweep_removes_only_expired_enqueued_jobs<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut specs = Vec::new();
    for i in 0..5 {
        specs.push(
            spec(&format!("sweep-exp-{i:02}"))
                .queue("qa")
                .custom(r#"{"expires_in":5}"#),
        );
    }
    specs.push(
        spec("sweep-live-01")
            .queue("qa")
            .custom(r#"{"expires_in":3600}"#),
    );
    specs.push(spec("sweep-plain-1").queue("qb"));
    specs.push(
        spec("sweep-sched-1")
            .queue("qb")
            .at(T0 + HOUR)
            .custom(r#"{"expires_in":5}"#),
    );
    push(s, &specs, T0).await;
    assert_eq!(s.sweep_expired(T0 + 4 * SEC, 100).await.expect("sweep"), 0);
    assert_eq!(s.sweep_expired(T0 + 6 * SEC, 3).await.expect("sweep"), 3);
    assert_eq!(s.sweep_expired(T0 + 6 * SEC, 100).await.expect("sweep"), 2);
    assert_eq!(s.sweep_expired(T0 + 7 * SEC, 100).await.expect("sweep"), 0);
    assert_eq!(jids(s, Enqueued, Some("qa")).await, vec!["sweep-live-01"]);
    assert_eq!(jids(s, Enqueued, Some("qb")).await, vec!["sweep-plain-1"]);
    assert_eq!(
        get(s, "sweep-sched-1").await.map(|j| j.state),
        Some(Scheduled)
    );
    let st = s.stats().await.expect("stats");
    assert_eq!(st.expired, 5);
    let sizes: Vec<(String, u64)> = st.queues.iter().map(|q| (q.name.clone(), q.size)).collect();
    assert_eq!(sizes, vec![("qa".to_string(), 1), ("qb".to_string(), 1)]);
    c.finish(T0 + 7 * SEC).await;
}

/// The expiry and the expired count are durable.
pub async fn expiry_survives_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    push(
        c.s(),
        &[
            spec("reopen-exp-1")
                .queue("q")
                .custom(r#"{"expires_in":60}"#),
            spec("reopen-exp-2")
                .queue("q")
                .custom(r#"{"expires_in":60}"#),
        ],
        T0,
    )
    .await;
    c.reopen().await;
    assert_eq!(
        c.s().sweep_expired(T0 + 59 * SEC, 1).await.expect("sweep"),
        0
    );
    assert_eq!(
        c.s().sweep_expired(T0 + 61 * SEC, 1).await.expect("sweep"),
        1
    );
    c.reopen().await;
    assert_eq!(expired_count(c.s()).await, 1);
    let got = c
        .s()
        .fetch(strings(&["q"]), WID.into(), T0 + 61 * SEC)
        .await
        .expect("fetch");
    assert_eq!(got, None);
    assert_eq!(expired_count(c.s()).await, 2);
    c.finish(T0 + 61 * SEC).await;
}
