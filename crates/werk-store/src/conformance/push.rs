use super::*;

// ---------------------------------------------------------------------------------------------
// PUSH / PUSHB
// ---------------------------------------------------------------------------------------------

/// PUSH without `at`: (new) → enqueued, in stats, get and list, the listener told the queue, the
/// payload stamped with `enqueued_at`.
pub async fn push_enqueues_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[spec("jid-push-0001").queue("mail").jobtype("SendMail")],
        T0,
    )
    .await;

    let st = stats(s).await;
    assert_eq!(
        st.queues,
        vec![queue_stats("mail", 1, false)],
        "stats after one push"
    );
    assert_eq!(
        (
            st.scheduled,
            st.retries,
            st.dead,
            st.working,
            st.processed,
            st.failures
        ),
        (0, 0, 0, 0, 0, 0),
        "stats after one push"
    );
    let got = must_get(s, "jid-push-0001").await;
    assert_eq!(got.state, Enqueued);
    assert_eq!(
        (got.queue.as_str(), got.jobtype.as_str()),
        ("mail", "SendMail")
    );
    assert_eq!(got.at, T0, "an enqueued job's at is its enqueue time");
    assert_eq!(got.reservation, None);
    let job = payload(&got);
    assert_eq!(
        parse_rfc3339(&job.enqueued_at),
        Ok(T0),
        "payload enqueued_at"
    );
    // Written like Faktory, with nanoseconds, never before the push (parses back to it).
    assert_eq!(parse_rfc3339(&job.created_at), Ok(T0), "payload created_at");
    assert!(job.failure.is_none());
    assert_eq!(jids(s, Enqueued, Some("mail")).await, vec!["jid-push-0001"]);
    assert_eq!(jids(s, Enqueued, None).await, vec!["jid-push-0001"]);
    assert!(
        c.rec.take().iter().any(|q| q == "mail"),
        "the listener must be told about the queue a pushed job was enqueued to"
    );
    c.finish(T0).await;
}

/// PUSH with a future `at`: (new) → scheduled, not fetchable, ordered by `at`; the queue is not
/// created by a scheduled job.
pub async fn push_with_future_at_schedules_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let at = T0 + 10 * MIN;
    push(s, &[spec("jid-sched-0001").queue("later").at(at)], T0).await;

    let got = must_get(s, "jid-sched-0001").await;
    assert_eq!(got.state, Scheduled);
    assert_eq!(got.at, at, "a scheduled job's at is its at time");
    assert_eq!(got.queue, "later");
    let st = stats(s).await;
    assert_eq!(st.scheduled, 1);
    assert_eq!(st.enqueued(), 0);
    assert!(
        st.queues.is_empty(),
        "a queue is known once something was enqueued to it, not scheduled: {:?}",
        st.queues
    );
    assert_eq!(jids(s, Scheduled, None).await, vec!["jid-sched-0001"]);
    assert_eq!(
        fetch_jid(s, &["later"], T0 + SEC).await,
        None,
        "scheduled jobs are not fetchable"
    );
    assert_eq!(
        fetch_jid(s, &["later"], at + SEC).await,
        None,
        "not fetchable before promotion either"
    );
    c.finish(T0).await;
}

/// PUSH with `at` equal to now or in the past: (new) → enqueued at once.
pub async fn push_with_due_or_past_at_enqueues_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("jid-now-00001").at(T0),
            spec("jid-past-0001").at(T0 - HOUR),
        ],
        T0,
    )
    .await;
    for jid in ["jid-now-00001", "jid-past-0001"] {
        let got = must_get(s, jid).await;
        assert_eq!(got.state, Enqueued, "{jid}: at <= now is enqueued at once");
        assert_eq!(parse_rfc3339(&payload(&got).enqueued_at), Ok(T0));
    }
    assert_eq!(stats(s).await.scheduled, 0);
    assert!(c.rec.take().iter().any(|q| q == "default"));
    assert_eq!(
        fetch_jid(s, &["default"], T0).await.as_deref(),
        Some("jid-now-00001")
    );
    assert_eq!(
        fetch_jid(s, &["default"], T0).await.as_deref(),
        Some("jid-past-0001")
    );
    c.finish(T0).await;
}

/// PUSHB: one result per job, in order; jobs of different queues and states stored
/// independently.
pub async fn push_batch_results_are_independent<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let batch = [
        spec("jid-batch-001").queue("a"),
        spec("jid-batch-002").queue("b").at(T0 + MIN),
        spec("jid-batch-003").queue("a"),
        spec("jid-batch-004").queue("c"),
    ];
    let res = push_results(s, &batch, T0).await;
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    assert_eq!(
        jids(s, Enqueued, Some("a")).await,
        vec!["jid-batch-001", "jid-batch-003"]
    );
    assert_eq!(jids(s, Enqueued, Some("c")).await, vec!["jid-batch-004"]);
    assert_eq!(jids(s, Scheduled, None).await, vec!["jid-batch-002"]);
    let told: BTreeSet<String> = c.rec.take().into_iter().collect();
    assert!(
        told.contains("a") && told.contains("c"),
        "the listener must be told about queues a and c: {told:?}"
    );
    c.finish(T0).await;
}

pub(super) fn assert_duplicate(r: &Result<(), PushError>, jid: &str) {
    match r {
        Err(PushError::DuplicateJid(j, _)) => assert_eq!(j, jid, "DuplicateJid names the jid"),
        other => {
            panic!("push of duplicate jid {jid} must be refused with DuplicateJid, got {other:?}")
        }
    }
}

/// A jid already stored (in any state) is refused with DuplicateJid; the stored job is untouched
/// and the other jobs of the same batch are stored.
pub async fn push_duplicate_jid_is_refused<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut t = T0;
    let mut originals = Vec::new();
    for state in JobState::ALL {
        let jid = format!("dup-{}", state.set_name());
        originals.push(
            put(
                s,
                &spec(&jid).queue(&format!("q-{}", state.set_name())),
                state,
                t,
            )
            .await,
        );
        t += SEC;
    }
    let mut batch = vec![spec("dup-fresh-001").queue("fresh")];
    for o in &originals {
        batch.push(spec(&o.jid).queue("fresh").args("[\"second copy\"]"));
    }
    batch.push(spec("dup-fresh-002").queue("fresh"));
    let res = push_results(s, &batch, t).await;
    assert!(res[0].is_ok(), "{:?}", res[0]);
    assert!(res[res.len() - 1].is_ok(), "{:?}", res[res.len() - 1]);
    for (o, r) in originals.iter().zip(&res[1..]) {
        assert_duplicate(r, &o.jid);
        assert_eq!(
            get(s, &o.jid).await.as_ref(),
            Some(o),
            "the stored {} job must be untouched by a duplicate push",
            o.state
        );
    }
    assert_eq!(
        jids(s, Enqueued, Some("fresh")).await,
        vec!["dup-fresh-001", "dup-fresh-002"]
    );
    c.finish(t).await;
}

/// A retried PUSH (the producer could not know whether its first PUSH committed): a jid
/// already stored, in any state, by the same job (jobtype, queue, and args equal as JSON values)
/// is answered OK and changes nothing; another job under that jid is still a duplicate.
pub async fn push_retry_of_stored_job_is_ok_and_changes_nothing<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut t = T0;
    let mut originals = Vec::new();
    let first = |jid: &str, state: JobState| {
        spec(jid)
            .queue(&format!("q-{}", state.set_name()))
            .args(r#"[1,{"a":"b","c":[2]}]"#)
    };
    for state in JobState::ALL {
        let jid = format!("retried-{}", state.set_name());
        originals.push(put(s, &first(&jid, state), state, t).await);
        t += SEC;
    }
    let before = stats(s).await;
    let lists = all_lists(s).await;
    // The same jobs again (args formatted otherwise, another `retry`, scheduled): all OK.
    let again: Vec<Spec> = originals
        .iter()
        .map(|o| {
            first(&o.jid, o.state)
                .args(r#"[ 1, {"c":[2], "a":"b"} ]"#)
                .retry(3)
                .at(t + HOUR)
        })
        .collect();
    let res = push_results(s, &again, t).await;
    assert!(res.iter().all(|r| r.is_ok()), "retried pushes: {res:?}");
    for o in &originals {
        assert_eq!(
            get(s, &o.jid).await.as_ref(),
            Some(o),
            "{} untouched",
            o.state
        );
    }
    assert_eq!(all_lists(s).await, lists, "a retried push changes nothing");
    assert_eq!(stats(s).await, before, "a retried push changes no counter");
    // Another jobtype, queue or args under a taken jid: still refused.
    for o in &originals {
        let other = [
            first(&o.jid, o.state).jobtype("OtherJob"),
            first(&o.jid, o.state).queue("elsewhere"),
            first(&o.jid, o.state).args(r#"[1,{"a":"b","c":[3]}]"#),
        ];
        for r in push_results(s, &other, t).await {
            assert_duplicate(&r, &o.jid);
        }
    }
    // Within one PUSHB: the first copy is stored, an identical second one is OK.
    let res = push_results(s, &[spec("retried-pushb-1"), spec("retried-pushb-1")], t).await;
    assert_eq!(res, vec![Ok(()), Ok(())]);
    assert_eq!(
        jids(s, Enqueued, Some("default")).await,
        vec!["retried-pushb-1"]
    );
    c.finish(t).await;
}

/// A retried PUSH of a unique job is not refused as NOTUNIQUE because of the lock it took
/// itself; another jid with the same identity still is. A retried batch member is counted once.
pub async fn push_retry_of_unique_or_batch_member_is_ok<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = || uniq("retried-uniq-1", "[7]", r#"{"unique_for":3600}"#);
    assert_eq!(push_one(s, u(), T0).await, Ok(()));
    assert_eq!(
        push_one(s, u(), T0 + SEC).await,
        Ok(()),
        "retried unique push"
    );
    assert_eq!(
        push_one(
            s,
            uniq("retried-uniq-2", "[7]", r#"{"unique_for":3600}"#),
            T0 + SEC
        )
        .await,
        Err(PushError::NotUnique)
    );
    // Fetched (working), with the lock released at start: the retry is still the same job.
    let us = || {
        uniq(
            "retried-uniq-3",
            "[8]",
            r#"{"unique_for":3600,"unique_until":"start"}"#,
        )
    };
    assert_eq!(push_one(s, us(), T0).await, Ok(()));
    assert_eq!(
        fetch_jid(s, &["uq"], T0 + SEC).await.as_deref(),
        Some("retried-uniq-1")
    );
    assert_eq!(
        fetch_jid(s, &["uq"], T0 + SEC).await.as_deref(),
        Some("retried-uniq-3")
    );
    assert_eq!(push_one(s, us(), T0 + 2 * SEC).await, Ok(()));
    assert_eq!(state_of(s, "retried-uniq-3").await, Some(Working));
    assert_eq!(
        fetch_jid(s, &["uq"], T0 + 2 * SEC).await,
        None,
        "nothing was enqueued again"
    );

    let bid = "bid-retried-01";
    batch_new(s, both_callbacks(bid), T0).await;
    assert_eq!(push_one(s, member("retried-mem-1", bid), T0).await, Ok(()));
    assert_eq!(
        push_one(s, member("retried-mem-1", bid), T0 + SEC).await,
        Ok(())
    );
    let st = status(s, bid, T0 + SEC).await;
    assert_eq!(
        (st.total, st.pending),
        (1, 1),
        "the retried member is counted once"
    );
    assert_eq!(jids(s, Enqueued, Some("bq")).await, vec!["retried-mem-1"]);
    c.finish(T0 + 2 * SEC).await;
}

/// The same jid twice in one PUSHB: the first is stored, the second refused.
pub async fn push_duplicate_jid_within_batch_is_refused<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let batch = [
        spec("jid-twice-001").args("[\"first\"]"),
        spec("jid-other-001"),
        spec("jid-twice-001")
            .args("[\"second\"]")
            .queue("elsewhere"),
    ];
    let res = push_results(s, &batch, T0).await;
    assert!(res[0].is_ok() && res[1].is_ok(), "{res:?}");
    assert_duplicate(&res[2], "jid-twice-001");
    let got = must_get(s, "jid-twice-001").await;
    assert_eq!(got.queue, "default");
    assert!(
        got.payload.contains("[\"first\"]"),
        "the first copy is kept: {}",
        got.payload
    );
    assert_eq!(
        jids(s, Enqueued, Some("default")).await,
        vec!["jid-twice-001", "jid-other-001"]
    );
    assert_eq!(stats(s).await.enqueued(), 2);
    c.finish(T0).await;
}

/// A jid whose job is gone (acknowledged, discarded) can be pushed again.
pub async fn push_of_gone_jid_is_accepted<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("jid-again-001"), Working, T0).await;
    assert_eq!(ack(s, "jid-again-001", T0 + SEC).await, AckOutcome::Acked);
    push(s, &[spec("jid-again-001")], T0 + 2 * SEC).await;
    assert_eq!(state_of(s, "jid-again-001").await, Some(Enqueued));

    put(
        s,
        &spec("jid-again-002").queue("other").at(T0 + HOUR),
        Scheduled,
        T0,
    )
    .await;
    assert_eq!(
        mutate(
            s,
            MutateOp::Discard,
            Scheduled,
            by_jids(&["jid-again-002"]),
            T0
        )
        .await,
        1
    );
    push(s, &[spec("jid-again-002").queue("other")], T0 + 3 * SEC).await;
    assert_eq!(state_of(s, "jid-again-002").await, Some(Enqueued));
    c.finish(T0 + 3 * SEC).await;
}

/// `args` and `custom` come back byte for byte (big integers, spaces, number formatting), from
/// get, fetch, through a failure and a promotion, and after a reopen.
pub async fn args_and_custom_survive_byte_for_byte<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let args =
        r#"[12345678901234567890, "two  spaces", {"a" : "b c"}, 1.0, 1.5e-7, -0, "\u00e9\n"]"#;
    let custom = r#"{"big" : 18446744073709551616, "s":"x y"}"#;
    let want_args = format!("\"args\":{args}");
    let want_custom = format!("\"custom\":{custom}");
    let check = |j: &StoredJob, when: &str| {
        assert!(
            j.payload.contains(&want_args),
            "{when}: args changed: {}",
            j.payload
        );
        assert!(
            j.payload.contains(&want_custom),
            "{when}: custom changed: {}",
            j.payload
        );
    };
    let s = c.s();
    push(s, &[spec("jid-bytes-001").args(args).custom(custom)], T0).await;
    check(
        &must_get(s, "jid-bytes-001").await,
        "get of the enqueued job",
    );
    check(
        &fetch(s, &["default"], T0).await.expect("fetch"),
        "fetched payload",
    );
    let next_at = match fail(s, "jid-bytes-001", T0 + SEC).await {
        FailReply::Failed(FailOutcome::Retry { next_at }) => next_at,
        other => panic!("FAIL gave {other:?}"),
    };
    check(&must_get(s, "jid-bytes-001").await, "get of the retry job");
    assert_eq!(promote(s, next_at).await, 1);
    check(
        &fetch(s, &["default"], next_at).await.expect("fetch"),
        "payload fetched after a retry",
    );
    c.reopen().await;
    check(&must_get(c.s(), "jid-bytes-001").await, "get after reopen");
    c.finish(next_at).await;
}
