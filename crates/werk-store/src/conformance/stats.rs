use super::*;

// ---------------------------------------------------------------------------------------------
// FLUSH, stats, history
// ---------------------------------------------------------------------------------------------

/// FLUSH: every job gone, queues, pause flags, counters and history wiped.
pub async fn flush_wipes_everything<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let t = populate(s, T0).await;
    assert_eq!(
        ack(s, &fx_jid(Working, "alpha-red"), t).await,
        AckOutcome::Acked
    );
    s.set_paused(QueueSelector::Names(strings(&["q-enq"])), true)
        .await
        .expect("pause");
    assert_ne!(counters(s).await, (0, 0));
    s.flush().await.expect("flush");

    assert_eq!(stats(s).await, Stats::default(), "stats after FLUSH");
    for state in JobState::ALL {
        assert!(
            list(s, state, None).await.is_empty(),
            "no {state} jobs after FLUSH"
        );
        for jid in fx_jids(state) {
            assert_eq!(get(s, &jid).await, None, "{jid} after FLUSH");
        }
    }
    let h = history(s, 3, t).await;
    assert_eq!(h.len(), 3);
    assert!(
        h.iter().all(|d| d.processed == 0 && d.failures == 0),
        "history after FLUSH: {h:?}"
    );
    assert_eq!(
        ack(s, &fx_jid(Working, "beta-red"), t).await,
        AckOutcome::NotWorking
    );
    assert_eq!(fetch(s, &["q-enq"], t).await, None);
    assert_eq!(
        promote(s, t + DAY).await,
        0,
        "no scheduled or retry jobs survive FLUSH"
    );

    push(s, &[spec(&fx_jid(Enqueued, "alpha-red")).queue("q-enq")], t).await;
    assert_eq!(
        stats(s).await.queues,
        vec![queue_stats("q-enq", 1, false)],
        "pause flags wiped"
    );
    assert!(fetch(s, &["q-enq"], t).await.is_some());
    c.finish(t).await;
}

/// Stats list the known queues sorted by name with size and pause flag; a queue stays known
/// (size 0) when emptied; set sizes and counters are right.
pub async fn stats_list_known_queues_sorted_with_sizes<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("st-zeta-00001").queue("zeta"),
            spec("st-mid-000001").queue("mid"),
            spec("st-alpha-0001").queue("alpha"),
            spec("st-zeta-00002").queue("zeta"),
            spec("st-mid-000002").queue("mid"),
            spec("st-mid-000003").queue("mid"),
            spec("st-sched-0001").queue("onlyscheduled").at(T0 + HOUR),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_jid(s, &["alpha"], T0).await.as_deref(),
        Some("st-alpha-0001")
    );
    s.set_paused(QueueSelector::Names(strings(&["mid"])), true)
        .await
        .expect("pause");
    let st = stats(s).await;
    assert_eq!(
        st.queues,
        vec![
            queue_stats("alpha", 0, false),
            queue_stats("mid", 3, true),
            queue_stats("zeta", 2, false)
        ]
    );
    assert_eq!(st.enqueued(), 5);
    assert_eq!(
        (st.scheduled, st.working, st.retries, st.dead),
        (1, 1, 0, 0)
    );
    c.finish(T0).await;
}

/// history(days, today): `days` entries ending with today's day, oldest first, idle days zero.
pub async fn history_has_one_entry_per_day_oldest_first<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let d2 = T0 - 2 * DAY;
    put(s, &spec("hist-ack-0001"), Working, d2).await;
    assert_eq!(ack(s, "hist-ack-0001", d2).await, AckOutcome::Acked);
    put(s, &spec("hist-fail-001"), Working, d2).await;
    assert!(matches!(
        fail(s, "hist-fail-001", d2).await,
        FailReply::Failed(_)
    ));
    put(s, &spec("hist-ack-0002").queue("other"), Working, T0).await;
    assert_eq!(ack(s, "hist-ack-0002", T0).await, AckOutcome::Acked);

    let day = |k: i64| local_day(T0 - k * DAY);
    let zero = |k: i64| DayStats {
        day: day(k),
        processed: 0,
        failures: 0,
    };
    let h = history(s, 5, T0).await;
    assert_eq!(
        h,
        vec![
            zero(4),
            zero(3),
            DayStats {
                day: day(2),
                processed: 2,
                failures: 1
            },
            zero(1),
            DayStats {
                day: day(0),
                processed: 1,
                failures: 0
            },
        ]
    );
    assert_eq!(
        history(s, 1, T0).await,
        vec![DayStats {
            day: day(0),
            processed: 1,
            failures: 0
        }]
    );
    assert_eq!(
        history(s, 2, T0 - DAY).await,
        vec![
            DayStats {
                day: day(2),
                processed: 2,
                failures: 1
            },
            zero(1)
        ],
        "history ends with the day of `today`"
    );
    assert!(
        history(s, 0, T0).await.is_empty(),
        "history(0) has no entries"
    );
    assert_eq!(counters(s).await, (3, 1), "totals count every day");
    c.finish(T0).await;
}

/// FLUSH forgets batches and tracking data too.
pub async fn flush_forgets_batches_and_tracking<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-flush-001";
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[spec("fl-track-001")
            .queue("fq")
            .custom(&format!(r#"{{"bid":{},"track":1}}"#, js(bid)))],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    assert!(track(s, "fl-track-001", T0).await.is_some());
    s.flush().await.expect("flush");
    assert_eq!(try_status(s, bid, T0).await, None);
    assert_eq!(track(s, "fl-track-001", T0).await, None);
    assert_eq!(
        s.batch_open(bid.into(), T0).await.expect("open"),
        Err(no_batch(bid))
    );
    assert_eq!(
        push_results(s, &[member("fl-mem-00001", bid)], T0).await[0],
        Err(PushError::NoSuchBatch(bid.to_string()))
    );
    batch_new(s, both_callbacks(bid), T0 + SEC).await;
    assert_eq!(
        counts(s, bid, T0 + SEC).await,
        (0, 0, 0, "", ""),
        "the bid is free again"
    );
    c.watch_batches(&[bid]);
    c.watch_tracked(&["fl-track-001"]);
    c.finish(T0 + SEC).await;
}
