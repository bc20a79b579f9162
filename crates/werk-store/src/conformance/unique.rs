use super::*;

// ---------------------------------------------------------------------------------------------
// Unique jobs
// ---------------------------------------------------------------------------------------------

pub(super) fn uniq(jid: &str, args: &str, custom: &str) -> Spec {
    spec(jid).queue("uq").args(args).custom(custom)
}

pub(super) async fn push_one<S: Store>(
    s: &S,
    j: Spec,
    now: Millis,
) -> std::result::Result<(), PushError> {
    push_results(s, &[j], now).await.pop().expect("one result")
}

/// Same type, queue and args while the lock is held: `NotUnique` (also inside one batch);
/// other args or another queue are other identities; the lock goes with the job's ACK.
pub async fn unique_job_refuses_copies_until_it_succeeds<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":3600}"#;
    let res = push_results(
        s,
        &[
            uniq("uniq-a-00001", "[1]", u),
            uniq("uniq-a-00002", "[1]", u),
            uniq("uniq-b-00001", "[2]", u),
            uniq("uniq-c-00001", "[1]", u).queue("other"),
            uniq("uniq-d-00001", "[1]", "{}"),
        ],
        T0,
    )
    .await;
    assert_eq!(res[0], Ok(()));
    assert_eq!(res[1], Err(PushError::NotUnique));
    assert_eq!(res[2], Ok(()), "other args");
    assert_eq!(res[3], Ok(()), "other queue");
    assert_eq!(res[4], Ok(()), "no unique_for: never locked");
    assert_eq!(get(s, "uniq-a-00002").await, None);
    assert_eq!(
        push_one(s, uniq("uniq-a-00003", "[1]", u), T0 + SEC).await,
        Err(PushError::NotUnique)
    );
    let got = s
        .fetch(strings(&["uq"]), WID.into(), T0 + SEC)
        .await
        .unwrap();
    assert_eq!(got.map(|j| j.jid).as_deref(), Some("uniq-a-00001"));
    assert_eq!(
        push_one(s, uniq("uniq-a-00004", "[1]", u), T0 + 2 * SEC).await,
        Err(PushError::NotUnique),
        "still locked while it runs (unique_until success)"
    );
    assert_eq!(
        ack(s, "uniq-a-00001", T0 + 3 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(
        push_one(s, uniq("uniq-a-00005", "[1]", u), T0 + 4 * SEC).await,
        Ok(())
    );
    c.finish(T0 + 4 * SEC).await;
}

/// `unique_until = "start"`: the lock goes when the job is fetched.
pub async fn unique_until_start_releases_at_fetch<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":3600,"unique_until":"start"}"#;
    assert_eq!(push_one(s, uniq("start-00001", "[]", u), T0).await, Ok(()));
    assert_eq!(
        push_one(s, uniq("start-00002", "[]", u), T0).await,
        Err(PushError::NotUnique)
    );
    let got = s
        .fetch(strings(&["uq"]), WID.into(), T0 + SEC)
        .await
        .unwrap();
    assert_eq!(got.map(|j| j.jid).as_deref(), Some("start-00001"));
    assert_eq!(
        push_one(s, uniq("start-00003", "[]", u), T0 + SEC).await,
        Ok(())
    );
    c.finish(T0 + SEC).await;
}

/// The lock lasts `unique_for` seconds, whatever happens to the job.
pub async fn unique_lock_expires_after_unique_for<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":60}"#;
    assert_eq!(push_one(s, uniq("ttl-000001", "[]", u), T0).await, Ok(()));
    assert_eq!(
        push_one(s, uniq("ttl-000002", "[]", u), T0 + 59 * SEC).await,
        Err(PushError::NotUnique)
    );
    assert_eq!(
        push_one(s, uniq("ttl-000003", "[]", u), T0 + 61 * SEC).await,
        Ok(())
    );
    assert_eq!(
        jids(s, Enqueued, Some("uq")).await,
        vec!["ttl-000001", "ttl-000003"]
    );
    c.finish(T0 + 61 * SEC).await;
}

/// A failure that will be retried keeps the lock; automatic death (no retries left) or a
/// discard (`retry: 0`) frees it.
pub async fn unique_lock_outlives_failures_but_not_death<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":3600}"#;
    push(
        s,
        &[
            uniq("fail-retry-1", "[1]", u).retry(3),
            uniq("fail-dead-01", "[2]", u).retry(-1),
            uniq("fail-gone-01", "[3]", u).retry(0),
        ],
        T0,
    )
    .await;
    for _ in 0..3 {
        let j = s
            .fetch(strings(&["uq"]), WID.into(), T0 + SEC)
            .await
            .unwrap()
            .unwrap();
        s.fail(j.jid, boom(), T0 + 2 * SEC).await.unwrap();
    }
    let t = T0 + 3 * SEC;
    assert_eq!(
        push_one(s, uniq("fail-retry-2", "[1]", u), t).await,
        Err(PushError::NotUnique),
        "in the retry set: still locked"
    );
    assert_eq!(get(s, "fail-dead-01").await.map(|j| j.state), Some(Dead));
    assert_eq!(
        push_one(s, uniq("fail-dead-02", "[2]", u), t).await,
        Ok(()),
        "dead: freed"
    );
    assert_eq!(
        push_one(s, uniq("fail-gone-02", "[3]", u), t).await,
        Ok(()),
        "discarded: freed"
    );
    c.finish(t).await;
}

/// Locks are durable.
pub async fn unique_lock_survives_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let u = r#"{"unique_for":3600}"#;
    assert_eq!(
        push_one(c.s(), uniq("reopen-u-01", "[]", u), T0).await,
        Ok(())
    );
    c.reopen().await;
    assert_eq!(
        push_one(c.s(), uniq("reopen-u-02", "[]", u), T0 + SEC).await,
        Err(PushError::NotUnique)
    );
    let j = c
        .s()
        .fetch(strings(&["uq"]), WID.into(), T0 + SEC)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack(c.s(), &j.jid, T0 + SEC).await, AckOutcome::Acked);
    c.reopen().await;
    assert_eq!(
        push_one(c.s(), uniq("reopen-u-03", "[]", u), T0 + 2 * SEC).await,
        Ok(())
    );
    c.finish(T0 + 2 * SEC).await;
}
