use super::*;

// ---------------------------------------------------------------------------------------------
// ACK and FAIL
// ---------------------------------------------------------------------------------------------

/// ACK: working → gone, `processed` counted in total and in today's history.
pub async fn ack_removes_working_job_and_counts_processed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("ack-me-00001"), Working, T0).await;
    put(s, &spec("ack-other-001").queue("other"), Working, T0).await;
    assert_eq!(ack(s, "ack-me-00001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        get(s, "ack-me-00001").await,
        None,
        "an acknowledged job is gone"
    );
    assert_eq!(
        state_of(s, "ack-other-001").await,
        Some(Working),
        "other reservations untouched"
    );
    let st = stats(s).await;
    assert_eq!((st.working, st.processed, st.failures), (1, 1, 0));
    let h = history(s, 1, T0 + SEC).await;
    assert_eq!(
        h,
        vec![DayStats {
            day: local_day(T0 + SEC),
            processed: 1,
            failures: 0
        }],
        "today's history counts the ACK"
    );
    assert_eq!(
        fetch_jid(s, &["default"], T0 + 2 * SEC).await,
        None,
        "an acked job is never delivered again"
    );
    c.finish(T0 + SEC).await;
}

/// A late ACK — of a job that is enqueued, retry or dead because its reservation ended while the
/// worker still ran it — is AckedLate(that state): the job → gone, `processed` counted in total
/// and in today's history, `failures` unchanged, the queue or set it was in one smaller, and it is
/// never delivered again (an ACK answered `+OK` ends the job). Other jobs are untouched.
pub async fn late_ack_of_enqueued_retry_or_dead_job_removes_it_and_counts_processed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut late = Vec::new();
    for (i, state) in [Enqueued, Retry, Dead].into_iter().enumerate() {
        let jid = format!("lateack-{}", state.set_name());
        let sp = spec(&jid)
            .queue(&jid)
            .retry(if state == Dead { -1 } else { 25 });
        late.push(put(s, &sp, state, T0 + i as Millis).await);
    }
    // A neighbour in each state (same queue for the enqueued one), which must stay.
    let mut kept = Vec::new();
    for (i, state) in [Enqueued, Retry, Dead].into_iter().enumerate() {
        let jid = format!("lateack-kept-{}", state.set_name());
        let queue = if state == Enqueued {
            late[0].queue.clone()
        } else {
            jid.clone()
        };
        let sp = spec(&jid)
            .queue(&queue)
            .retry(if state == Dead { -1 } else { 25 });
        kept.push(put(s, &sp, state, T0 + 10 + i as Millis).await);
    }
    let before = stats(s).await;
    assert_eq!(
        (before.enqueued(), before.retries, before.dead),
        (2, 2, 2),
        "before the late ACKs"
    );
    // The ACKs come the next day, so that day's history holds only them.
    let t = T0 + DAY;
    for j in &late {
        assert_eq!(
            ack(s, &j.jid, t).await,
            AckOutcome::AckedLate(j.state),
            "late ACK of {} job {}",
            j.state,
            j.jid
        );
        assert_eq!(get(s, &j.jid).await, None, "a late-ACKed job is gone");
    }
    let st = stats(s).await;
    assert_eq!(
        (st.enqueued(), st.retries, st.dead, st.working),
        (1, 1, 1, 0),
        "each late ACK takes its job out of the queue or set it was in"
    );
    assert_eq!(
        st.queues,
        vec![
            queue_stats("lateack-dead", 0, false),
            queue_stats("lateack-enqueued", 1, false),
            queue_stats("lateack-kept-dead", 0, false),
            queue_stats("lateack-kept-retries", 0, false),
            queue_stats("lateack-retries", 0, false),
        ],
        "queue sizes after the late ACKs"
    );
    assert_eq!(
        (st.processed, st.failures),
        (before.processed + 3, before.failures),
        "a late ACK counts processed, never a failure"
    );
    assert_eq!(
        history(s, 1, t).await,
        vec![DayStats {
            day: local_day(t),
            processed: 3,
            failures: 0
        }],
        "the day's history counts the late ACKs"
    );
    for k in &kept {
        assert_eq!(
            get(s, &k.jid).await.as_ref(),
            Some(k),
            "a late ACK of another job leaves {} as it was",
            k.jid
        );
    }
    for j in &late {
        assert_eq!(
            ack(s, &j.jid, t).await,
            AckOutcome::NotWorking,
            "a second ACK of {} finds nothing",
            j.jid
        );
    }
    assert_eq!(
        counters(s).await,
        (st.processed, st.failures),
        "a second ACK counts nothing"
    );
    // Never delivered again: the retry tick, a requeue of the dead set and FETCHes of every
    // queue bring back only the kept jobs.
    let u = t + 100 * DAY;
    assert_eq!(
        promote(s, u).await,
        1,
        "only the kept retry is left to come due"
    );
    assert_eq!(
        mutate(s, MutateOp::Requeue, Dead, None, u).await,
        1,
        "only the kept dead job is left to requeue"
    );
    let queues: Vec<String> = st.queues.iter().map(|q| q.name.clone()).collect();
    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
    let mut delivered = BTreeSet::new();
    while let Some(jid) = fetch_jid(s, &queues, u).await {
        delivered.insert(jid);
    }
    let want: BTreeSet<String> = kept.iter().map(|k| k.jid.clone()).collect();
    assert_eq!(delivered, want, "a late-ACKed job is never delivered again");
    c.finish(u).await;
}

/// ACK of a scheduled job (never delivered), of an unknown jid or of one already acknowledged is
/// NotWorking and changes nothing.
pub async fn ack_of_scheduled_gone_or_unknown_job_changes_nothing<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let sched = put(s, &spec("noack-sched-01"), Scheduled, T0).await;
    put(s, &spec("noack-acked1"), Working, T0).await;
    assert_eq!(ack(s, "noack-acked1", T0).await, AckOutcome::Acked);
    let before = snapshot(s, T0 + SEC).await;
    for jid in ["noack-sched-01", "noack-unknown", "noack-acked1"] {
        assert_eq!(
            ack(s, jid, T0 + SEC).await,
            AckOutcome::NotWorking,
            "ACK of {jid}"
        );
    }
    let after = snapshot(s, T0 + SEC).await;
    assert_same_snapshot(&before, &after, "after refused ACKs");
    assert_eq!(
        get(s, "noack-sched-01").await.as_ref(),
        Some(&sched),
        "a refused ACK leaves the scheduled job as it was"
    );
    assert_eq!(
        promote(s, T0 + 2 * HOUR).await,
        1,
        "the scheduled job still comes due"
    );
    assert_eq!(
        fetch_jid(s, &["default"], T0 + 2 * HOUR).await.as_deref(),
        Some("noack-sched-01")
    );
    c.finish(T0 + 2 * HOUR).await;
}

/// FAIL with retries left: working → retry; `failure` filled as werk_core::retry says (first
/// failure: retry_count 0, remaining = retry, failed_at now, next_at in 15–44 s).
pub async fn fail_moves_job_to_retry_with_failure_info<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-me-00001").retry(25), Working, T0).await;
    let t = T0 + 2 * SEC;
    let next_at = match fail(s, "fail-me-00001", t).await {
        FailReply::Failed(FailOutcome::Retry { next_at }) => next_at,
        other => panic!("FAIL with retries left gave {other:?}"),
    };
    assert!(
        (t + 15 * SEC..=t + 44 * SEC).contains(&next_at),
        "first retry is 15–44 s after the failure, got {} s",
        (next_at - t) as f64 / 1000.0
    );
    let got = must_get(s, "fail-me-00001").await;
    assert_eq!(
        (got.state, got.at, got.reservation.clone()),
        (Retry, next_at, None)
    );
    let f = payload(&got).failure.expect("failure object");
    assert_eq!((f.retry_count, f.remaining), (0, 25));
    assert_eq!(parse_rfc3339(&f.failed_at), Ok(t));
    assert_eq!(f.next_at, format_millis(next_at));
    assert_eq!(
        (f.errtype.as_str(), f.message.as_str()),
        ("RuntimeError", "boom")
    );
    assert_eq!(f.backtrace, boom().backtrace);
    let st = stats(s).await;
    assert_eq!(
        (st.retries, st.working, st.processed, st.failures),
        (1, 0, 1, 1)
    );
    assert_eq!(
        history(s, 1, t).await,
        vec![DayStats {
            day: local_day(t),
            processed: 1,
            failures: 1
        }]
    );
    assert_eq!(jids(s, Retry, None).await, vec!["fail-me-00001"]);
    assert_eq!(
        fetch_jid(s, &["default"], t).await,
        None,
        "a retry job is not fetchable"
    );
    c.finish(t).await;
}

/// A later failure: retry_count + 1, remaining − 1, failed_at kept from the first failure, error
/// fields replaced, backoff 16–74 s.
pub async fn second_failure_counts_up_and_keeps_failed_at<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-twice-01").retry(25), Working, T0).await;
    let t1 = T0 + SEC;
    let FailReply::Failed(FailOutcome::Retry { next_at }) = fail(s, "fail-twice-01", t1).await
    else {
        panic!("first FAIL must retry")
    };
    assert_eq!(promote(s, next_at).await, 1);
    assert_eq!(
        fetch_jid(s, &["default"], next_at).await.as_deref(),
        Some("fail-twice-01")
    );
    let t2 = next_at + 5 * SEC;
    let info = FailInfo::new("OtherError", "again", Vec::new());
    let next2 = match s
        .fail("fail-twice-01".into(), info, t2)
        .await
        .expect("fail")
    {
        FailReply::Failed(FailOutcome::Retry { next_at }) => next_at,
        other => panic!("second FAIL with retries left gave {other:?}"),
    };
    assert!(
        (t2 + 16 * SEC..=t2 + 74 * SEC).contains(&next2),
        "second retry is 16–74 s after the failure, got {} s",
        (next2 - t2) as f64 / 1000.0
    );
    let got = must_get(s, "fail-twice-01").await;
    assert_eq!((got.state, got.at), (Retry, next2));
    let f = payload(&got).failure.expect("failure object");
    assert_eq!((f.retry_count, f.remaining), (1, 24));
    assert_eq!(
        parse_rfc3339(&f.failed_at),
        Ok(t1),
        "failed_at keeps the first failure's time"
    );
    assert_eq!(f.next_at, format_millis(next2));
    assert_eq!(
        (f.errtype.as_str(), f.message.as_str()),
        ("OtherError", "again")
    );
    assert!(f.backtrace.is_empty());
    assert_eq!(counters(s).await, (2, 2));
    c.finish(t2).await;
}

/// FAIL with `retry` 0: working → gone (Discarded), still counted.
pub async fn fail_with_retry_zero_discards_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-zero-001").retry(0), Working, T0).await;
    assert_eq!(
        fail(s, "fail-zero-001", T0 + SEC).await,
        FailReply::Failed(FailOutcome::Discarded)
    );
    assert_eq!(
        get(s, "fail-zero-001").await,
        None,
        "a retry:0 job is dropped"
    );
    let st = stats(s).await;
    assert_eq!(
        (st.working, st.retries, st.dead, st.processed, st.failures),
        (0, 0, 0, 1, 1)
    );
    c.finish(T0 + SEC).await;
}

/// FAIL with `retry` < 0: working → dead until now + dead_retention; remaining is never negative.
pub async fn fail_with_negative_retry_kills_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-neg-0001").retry(-1), Working, T0).await;
    let t = T0 + SEC;
    assert_eq!(
        fail(s, "fail-neg-0001", t).await,
        FailReply::Failed(FailOutcome::Dead)
    );
    let got = must_get(s, "fail-neg-0001").await;
    assert_eq!(got.state, Dead);
    assert_eq!(
        got.at,
        t + DEFAULT_RETENTION,
        "dead_until = death + dead_retention"
    );
    let f = payload(&got).failure.expect("failure object");
    assert_eq!((f.retry_count, f.remaining), (0, 0));
    assert_eq!(parse_rfc3339(&f.failed_at), Ok(t));
    let st = stats(s).await;
    assert_eq!(
        (st.working, st.retries, st.dead, st.processed, st.failures),
        (0, 0, 1, 1, 1)
    );
    assert_eq!(
        promote(s, t + 365 * DAY).await,
        0,
        "dead jobs are never promoted"
    );
    c.finish(t).await;
}

/// With `retry` N the job runs N + 1 times, then dies (retry: 1 ⇒ retry, then dead).
pub async fn fail_with_retries_exhausted_kills_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-out-0001").retry(1), Working, T0).await;
    let FailReply::Failed(FailOutcome::Retry { next_at }) = fail(s, "fail-out-0001", T0).await
    else {
        panic!("first FAIL of a retry:1 job must retry")
    };
    assert_eq!(promote(s, next_at).await, 1);
    assert_eq!(
        fetch_jid(s, &["default"], next_at).await.as_deref(),
        Some("fail-out-0001")
    );
    let t = next_at + SEC;
    assert_eq!(
        fail(s, "fail-out-0001", t).await,
        FailReply::Failed(FailOutcome::Dead)
    );
    let got = must_get(s, "fail-out-0001").await;
    assert_eq!((got.state, got.at), (Dead, t + DEFAULT_RETENTION));
    let f = payload(&got).failure.expect("failure object");
    assert_eq!((f.retry_count, f.remaining), (1, 0));
    assert!(
        f.next_at.is_empty(),
        "a dead job has no next_at: {:?}",
        f.next_at
    );
    assert_eq!(counters(s).await, (2, 2));
    c.finish(t).await;
}

/// FAIL of a jid that is not working: NotWorking, nothing changes.
pub async fn fail_of_job_not_working_changes_nothing<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut kept = Vec::new();
    for (i, state) in [Scheduled, Enqueued, Retry, Dead].into_iter().enumerate() {
        let jid = format!("nofail-{}", state.set_name());
        let sp = spec(&jid)
            .queue(&jid)
            .retry(if state == Dead { -1 } else { 25 });
        kept.push(put(s, &sp, state, T0 + i as Millis).await);
    }
    put(s, &spec("nofail-acked1"), Working, T0).await;
    assert_eq!(ack(s, "nofail-acked1", T0).await, AckOutcome::Acked);
    let before = counters(s).await;
    for jid in ["nofail-unknown", "nofail-acked1"]
        .into_iter()
        .map(String::from)
        .chain(kept.iter().map(|j| j.jid.clone()))
    {
        assert_eq!(
            fail(s, &jid, T0 + SEC).await,
            FailReply::NotWorking,
            "FAIL of {jid}"
        );
    }
    assert_eq!(counters(s).await, before, "a refused FAIL counts nothing");
    for k in &kept {
        assert_eq!(
            get(s, &k.jid).await.as_ref(),
            Some(k),
            "a refused FAIL leaves {} as it was",
            k.jid
        );
    }
    c.finish(T0 + SEC).await;
}
