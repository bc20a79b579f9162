use super::*;

// ---------------------------------------------------------------------------------------------
// Keyset pages (page) and delete_jobs
// ---------------------------------------------------------------------------------------------

/// One [`Store::page`] call.
async fn page<S: Store>(
    s: &S,
    state: JobState,
    filter: &JobFilter,
    after: Option<Cursor>,
    limit: u64,
) -> Page {
    s.page(PageQuery {
        state,
        filter: filter.clone(),
        after,
        limit,
    })
    .await
    .expect("page")
}

fn jf(
    queue: Option<&str>,
    jobtype: Option<&str>,
    jid: Option<&str>,
    text: Option<&str>,
) -> JobFilter {
    JobFilter {
        queue: queue.map(str::to_string),
        jobtype: jobtype.map(str::to_string),
        jid: jid.map(str::to_string),
        text: text.map(str::to_string),
    }
}

fn by_text(text: &str) -> JobFilter {
    jf(None, None, None, Some(text))
}

/// Whether the job matches the filter as [`JobFilter`] defines it.
fn matches_filter(j: &StoredJob, f: &JobFilter) -> bool {
    f.queue.as_ref().is_none_or(|q| *q == j.queue)
        && f.jobtype.as_ref().is_none_or(|t| *t == j.jobtype)
        && f.jid.as_ref().is_none_or(|x| *x == j.jid)
        && f.text.as_ref().is_none_or(|t| {
            j.payload
                .to_ascii_lowercase()
                .contains(&t.to_ascii_lowercase())
        })
}

fn page_jids(jobs: &[(Cursor, StoredJob)]) -> Vec<String> {
    jobs.iter().map(|(_, j)| j.jid.clone()).collect()
}

/// Pages through `state`'s jobs matching `filter` from `after` on, `limit` (> 0) at a time,
/// following `next` (through its URL form) until it is `None`; returns the jobs with their
/// cursors.
///
/// The paging rule the suite holds backends to: a page has at most `limit` jobs, each in `state`,
/// matching the filter and as `get` returns it, their cursors strictly increasing from `after`
/// on (for the sets the cursor's score is [`StoredJob::at`]); a page with fewer than `limit` jobs
/// has `next = None`; a full page has `None` or a cursor, which it may give even when no job
/// follows (the next page is then empty). So following `next` until `None` yields every matching
/// job exactly once, in order; that is all the cases rely on.
async fn walk_from<S: Store>(
    s: &S,
    state: JobState,
    filter: &JobFilter,
    mut after: Option<Cursor>,
    limit: u64,
) -> Vec<(Cursor, StoredJob)> {
    let what = format!("page({state}, {filter:?}, limit {limit})");
    let mut out: Vec<(Cursor, StoredJob)> = Vec::new();
    for _ in 0..1000 {
        let p = page(s, state, filter, after, limit).await;
        let n = p.jobs.len() as u64;
        assert!(n <= limit, "{what} after {after:?} returned {n} jobs");
        for (c, j) in &p.jobs {
            assert_eq!(j.state, state, "{what} returned {}", j.jid);
            assert!(
                matches_filter(j, filter),
                "{what} returned {} which does not match: {}",
                j.jid,
                j.payload
            );
            assert_eq!(
                get(s, &j.jid).await.as_ref(),
                Some(j),
                "{what}: get({}) must agree with the page",
                j.jid
            );
            if state != Enqueued {
                assert_eq!(
                    c.score, j.at,
                    "{what}: the cursor score of {} is its at",
                    j.jid
                );
            }
            let prev = out.last().map(|(c, _)| *c).or(after);
            assert!(
                prev.is_none_or(|p| *c > p),
                "{what}: cursor {c} of {} does not follow {prev:?}",
                j.jid
            );
            out.push((*c, j.clone()));
        }
        match p.next {
            None => return out,
            Some(next) => {
                assert_eq!(
                    n, limit,
                    "{what} after {after:?}: a page of {n} (< limit) jobs must be the last (next {next})"
                );
                let form = next.to_string();
                after = Some(
                    form.parse()
                        .unwrap_or_else(|e| panic!("{what}: cursor {form:?} does not parse: {e}")),
                );
            }
        }
    }
    panic!("{what}: more than 1000 pages (next never None?)");
}

async fn walk<S: Store>(
    s: &S,
    state: JobState,
    filter: &JobFilter,
    limit: u64,
) -> Vec<(Cursor, StoredJob)> {
    walk_from(s, state, filter, None, limit).await
}

/// Asserts that walking `state`'s jobs matching `filter` yields `want`, in one page and in pages
/// of 1, 2 and 3, the same order each time. Jobs in one group of `want` share their order key:
/// their order among themselves is the backend's tie-breaker.
async fn assert_walks<S: Store>(s: &S, state: JobState, filter: &JobFilter, want: &[&[&str]]) {
    let what = format!("page({state}, {filter:?})");
    let full = page_jids(&walk(s, state, filter, 1000).await);
    let flat: Vec<&str> = want.iter().flat_map(|g| g.iter().copied()).collect();
    assert_eq!(
        full.len(),
        flat.len(),
        "{what}: got {full:?}, want {want:?}"
    );
    let mut i = 0;
    for g in want {
        let mut got: Vec<&str> = full[i..i + g.len()].iter().map(String::as_str).collect();
        let mut w = g.to_vec();
        got.sort_unstable();
        w.sort_unstable();
        assert_eq!(
            got, w,
            "{what}: got {full:?}, want {want:?} (a group in any order)"
        );
        i += g.len();
    }
    for limit in [1, 2, 3] {
        let got = page_jids(&walk(s, state, filter, limit).await);
        assert_eq!(
            got, full,
            "{what} in pages of {limit}: same jobs, same order as one page"
        );
    }
}

async fn delete<S: Store>(s: &S, state: JobState, jids: Vec<String>) -> u64 {
    s.delete_jobs(state, jids).await.expect("delete_jobs")
}

/// page walks each state in its order whatever the page size (the paging rule: [`walk_from`]):
/// scheduled by `at`, working by reservation expiry, retry by `next_at`, dead by time of death
/// (jobs sharing a time in a stable order, also when a page ends among them), enqueued by the
/// global enqueue sequence across queues (a requeued job at the end, though pushed first).
pub async fn page_walks_each_state_in_order<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let all = JobFilter::default();
    // Scheduled: at = [50, 10, 30, 10, 20, 10] min.
    for (i, m) in [50, 10, 30, 10, 20, 10].into_iter().enumerate() {
        push(
            s,
            &[spec(&format!("pw-sched-{i:04}")).at(T0 + m * MIN)],
            T0 + i as Millis,
        )
        .await;
    }
    assert_walks(
        s,
        Scheduled,
        &all,
        &[
            &["pw-sched-0001", "pw-sched-0003", "pw-sched-0005"],
            &["pw-sched-0004"],
            &["pw-sched-0002"],
            &["pw-sched-0000"],
        ],
    )
    .await;

    // Working: all fetched at T0, reserve_for = [600, 60, 300, 60, 900] s.
    for (i, rf) in [600, 60, 300, 60, 900].into_iter().enumerate() {
        put(
            s,
            &spec(&format!("pw-work-{i:04}"))
                .queue("pw-w")
                .reserve_for(rf),
            Working,
            T0,
        )
        .await;
    }
    assert_walks(
        s,
        Working,
        &all,
        &[
            &["pw-work-0001", "pw-work-0003"],
            &["pw-work-0002"],
            &["pw-work-0000"],
            &["pw-work-0004"],
        ],
    )
    .await;

    // Retry: failed 100 s apart (more than the jitter) in the order 4, 2, 0, 3, 1.
    for (k, r) in [4, 2, 0, 3, 1].into_iter().enumerate() {
        let t = T0 + k as Millis * 100 * SEC;
        put(
            s,
            &spec(&format!("pw-retry-{r:04}")).queue("pw-r"),
            Retry,
            t,
        )
        .await;
    }
    assert_walks(
        s,
        Retry,
        &all,
        &[
            &["pw-retry-0004"],
            &["pw-retry-0002"],
            &["pw-retry-0000"],
            &["pw-retry-0003"],
            &["pw-retry-0001"],
        ],
    )
    .await;

    // Dead: 3 and 1 died at once, then 4, 0, 2.
    for (k, d) in [(0, 3), (0, 1), (1, 4), (2, 0), (3, 2)] {
        put(
            s,
            &spec(&format!("pw-dead-{d:04}")).queue("pw-d").retry(-1),
            Dead,
            T0 + k * 100 * SEC,
        )
        .await;
    }
    assert_walks(
        s,
        Dead,
        &all,
        &[
            &["pw-dead-0003", "pw-dead-0001"],
            &["pw-dead-0004"],
            &["pw-dead-0000"],
            &["pw-dead-0002"],
        ],
    )
    .await;

    // Enqueued over three queues: 5 (pw-c) pushed first and failed; 3 (pw-a) and 0 (pw-b) in one
    // push, then 4 (pw-b), 1 (pw-a), 2 (pw-a); then 5 is requeued.
    let t = T0 + HOUR;
    put(s, &spec("pw-enq-00005").queue("pw-c"), Retry, t).await;
    push(
        s,
        &[
            spec("pw-enq-00003").queue("pw-a"),
            spec("pw-enq-00000").queue("pw-b"),
        ],
        t + 1,
    )
    .await;
    for (jid, q) in [
        ("pw-enq-00004", "pw-b"),
        ("pw-enq-00001", "pw-a"),
        ("pw-enq-00002", "pw-a"),
    ] {
        push(s, &[spec(jid).queue(q)], t + 2).await;
    }
    assert_eq!(
        mutate(
            s,
            MutateOp::Requeue,
            Retry,
            by_jids(&["pw-enq-00005"]),
            t + 3
        )
        .await,
        1
    );
    assert_walks(
        s,
        Enqueued,
        &all,
        &[
            &["pw-enq-00003"],
            &["pw-enq-00000"],
            &["pw-enq-00004"],
            &["pw-enq-00001"],
            &["pw-enq-00002"],
            &["pw-enq-00005"],
        ],
    )
    .await;
    c.finish(t + 3).await;
}

/// page filters: queue, jobtype and jid exactly; text as an ASCII-case-insensitive substring of
/// the stored JSON (args, jobtype, a failure's message, errtype and backtrace; `%` and `_` taken
/// literally); every given field must match; only jobs of the requested state. No match: an
/// empty page without `next`.
pub async fn page_filters_by_queue_jobtype_jid_and_text<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let hello = r#"["Hello World"]"#;
    let mailer = |jid: &str, q: &str| spec(jid).queue(q).jobtype("Mailer");
    put(
        s,
        &mailer("pf-sched-0001", "pf-a").args(hello),
        Scheduled,
        T0,
    )
    .await;
    put(
        s,
        &mailer("pf-dead-00001", "pf-a").args(hello).retry(-1),
        Dead,
        T0,
    )
    .await;
    put(
        s,
        &spec("pf-retry-0002").queue("pf-r").jobtype("Report"),
        Retry,
        T0,
    )
    .await;
    push(s, &[mailer("pf-retry-0001", "pf-r")], T0).await;
    assert_eq!(
        fetch_jid(s, &["pf-r"], T0).await.as_deref(),
        Some("pf-retry-0001")
    );
    let info = FailInfo::new(
        "Net::OpenTimeout",
        "Connection REFUSED by upstream",
        vec!["net.rb:7".into()],
    );
    assert!(matches!(
        s.fail("pf-retry-0001".into(), info, T0)
            .await
            .expect("fail"),
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    push(
        s,
        &[
            mailer("pf-enq-00001", "pf-a").args(hello),
            mailer("pf-enq-00002", "pf-b").args(r#"["x_y"]"#),
            spec("pf-enq-00003")
                .queue("pf-a")
                .jobtype("Report")
                .args(r#"["xzy","100% sure"]"#),
            mailer("pf-enq-000010", "pf-a"),
        ],
        T0 + SEC,
    )
    .await;

    const E1: &str = "pf-enq-00001";
    const E2: &str = "pf-enq-00002";
    const E3: &str = "pf-enq-00003";
    const E10: &str = "pf-enq-000010";
    const R1: &str = "pf-retry-0001";
    const R2: &str = "pf-retry-0002";
    let cases: Vec<(JobState, JobFilter, Vec<&[&str]>)> = vec![
        (
            Enqueued,
            jf(Some("pf-a"), None, None, None),
            vec![&[E1], &[E3], &[E10]],
        ),
        (
            Enqueued,
            jf(None, Some("Mailer"), None, None),
            vec![&[E1], &[E2], &[E10]],
        ),
        (Enqueued, jf(None, Some("mailer"), None, None), vec![]),
        (
            Enqueued,
            jf(Some("pf-a"), Some("Mailer"), None, None),
            vec![&[E1], &[E10]],
        ),
        (Enqueued, jf(None, Some("Report"), None, None), vec![&[E3]]),
        (Enqueued, jf(None, None, Some(E1), None), vec![&[E1]]),
        (Enqueued, jf(Some("pf-b"), None, Some(E1), None), vec![]),
        (Enqueued, jf(None, None, Some(R1), None), vec![]),
        (Retry, jf(None, None, Some(R1), None), vec![&[R1]]),
        (Retry, jf(Some("pf-r"), None, None, None), vec![&[R1, R2]]),
        (Retry, jf(Some("pf-a"), None, None, None), vec![]),
        (Enqueued, by_text("HELLO world"), vec![&[E1]]),
        (Enqueued, by_text(r#"["hello world"]"#), vec![&[E1]]),
        (Scheduled, by_text("hello WORLD"), vec![&["pf-sched-0001"]]),
        (Dead, by_text("hello"), vec![&["pf-dead-00001"]]),
        (Enqueued, by_text("x_y"), vec![&[E2]]),
        (Enqueued, by_text("%"), vec![&[E3]]),
        (Enqueued, by_text("0% SURE"), vec![&[E3]]),
        (Enqueued, by_text("MAILER"), vec![&[E1], &[E2], &[E10]]),
        (Enqueued, by_text(""), vec![&[E1], &[E2], &[E3], &[E10]]),
        (Retry, by_text("connection refused"), vec![&[R1]]),
        (Retry, by_text("openTIMEOUT"), vec![&[R1]]),
        (Retry, by_text("NET.RB:7"), vec![&[R1]]),
        (Retry, by_text("boom"), vec![&[R2]]),
        (
            Retry,
            jf(None, Some("Report"), None, Some("refused")),
            vec![],
        ),
        (
            Retry,
            jf(Some("pf-r"), Some("Mailer"), Some(R1), Some("Refused")),
            vec![&[R1]],
        ),
    ];
    for (state, filter, want) in &cases {
        assert_walks(s, *state, filter, want).await;
    }
    for state in JobState::ALL {
        for limit in [1, 10] {
            let p = page(s, state, &by_text("no such text anywhere"), None, limit).await;
            assert_eq!(
                p,
                Page {
                    jobs: Vec::new(),
                    next: None
                },
                "page({state}) with a text nothing matches, limit {limit}"
            );
        }
    }
    c.finish(T0 + SEC).await;
}

/// A walk stays correct while jobs move between its pages: from the cursor on it yields, once
/// each and in order, every job still in the state (also when the cursor's own job left), none
/// of those that left (ACK, FETCH, FAIL, kill), and those that arrived behind it (a push, a
/// requeue, a later failure).
pub async fn page_stays_correct_while_jobs_move<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let all = JobFilter::default();

    // Retry: six jobs failed 100 s apart, read two per page.
    for k in 1..=6 {
        let t = T0 + (k - 1) * 100 * SEC;
        put(
            s,
            &spec(&format!("pm-retry-{k:04}")).queue("pm-r"),
            Retry,
            t,
        )
        .await;
    }
    let t = T0 + 10 * MIN;
    let first = page(s, Retry, &all, None, 2).await;
    assert_eq!(page_jids(&first.jobs), ["pm-retry-0001", "pm-retry-0002"]);
    let next = first
        .next
        .expect("a full page with more jobs after it has a next cursor");
    // The cursor's own job is killed, an unseen one ACKed late, a new one fails after all.
    assert_eq!(
        mutate(s, MutateOp::Kill, Retry, by_jids(&["pm-retry-0002"]), t).await,
        1
    );
    assert_eq!(
        ack(s, "pm-retry-0004", t).await,
        AckOutcome::AckedLate(Retry)
    );
    put(s, &spec("pm-retry-0007").queue("pm-r"), Retry, t).await;
    for limit in [1, 2, 100] {
        assert_eq!(
            page_jids(&walk_from(s, Retry, &all, Some(next), limit).await),
            [
                "pm-retry-0003",
                "pm-retry-0005",
                "pm-retry-0006",
                "pm-retry-0007"
            ],
            "retry jobs after the first page, in pages of {limit}"
        );
    }

    // Enqueued: 1, 3, 5, 7 in pm-a and 2, 4, 6, 8 in pm-b, pushed in number order; three per page.
    let t = t + MIN;
    for k in 1..=8 {
        let q = if k % 2 == 1 { "pm-a" } else { "pm-b" };
        push(s, &[spec(&format!("pm-enq-{k:05}")).queue(q)], t).await;
    }
    let first = page(s, Enqueued, &all, None, 3).await;
    assert_eq!(
        page_jids(&first.jobs),
        ["pm-enq-00001", "pm-enq-00002", "pm-enq-00003"]
    );
    let next = first
        .next
        .expect("a full page with more jobs after it has a next cursor");
    // Seen 2 and unseen 4 are fetched (2 then fails and is requeued: to the end); the cursor's
    // own job 3 and unseen 6 are ACKed late; 9 is pushed.
    assert_eq!(
        fetch_jid(s, &["pm-b"], t).await.as_deref(),
        Some("pm-enq-00002")
    );
    assert_eq!(
        fetch_jid(s, &["pm-b"], t).await.as_deref(),
        Some("pm-enq-00004")
    );
    assert_eq!(
        ack(s, "pm-enq-00003", t).await,
        AckOutcome::AckedLate(Enqueued)
    );
    assert_eq!(
        ack(s, "pm-enq-00006", t).await,
        AckOutcome::AckedLate(Enqueued)
    );
    push(s, &[spec("pm-enq-00009").queue("pm-a")], t).await;
    assert!(matches!(
        fail(s, "pm-enq-00002", t).await,
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    assert_eq!(
        mutate(s, MutateOp::Requeue, Retry, by_jids(&["pm-enq-00002"]), t).await,
        1
    );
    for limit in [1, 2, 100] {
        assert_eq!(
            page_jids(&walk_from(s, Enqueued, &all, Some(next), limit).await),
            [
                "pm-enq-00005",
                "pm-enq-00007",
                "pm-enq-00008",
                "pm-enq-00009",
                "pm-enq-00002"
            ],
            "enqueued jobs after the first page, in pages of {limit}"
        );
    }
    c.finish(t).await;
}

/// How many jobs `stats` counts in `state`.
fn state_count(st: &mut Stats, state: JobState) -> &mut u64 {
    match state {
        Scheduled => &mut st.scheduled,
        Working => &mut st.working,
        Retry => &mut st.retries,
        Dead => &mut st.dead,
        Enqueued => panic!("suite bug: enqueued jobs are counted per queue"),
    }
}

/// delete_jobs deletes the named jobs that are in the given state and nothing else: jids of jobs
/// in other states, unknown or repeated jids count for nothing, and for working it deletes
/// nothing. Set and queue sizes follow (an emptied queue stays known), counters do not change, a
/// deleted tracked job's tracking data is forgotten, and its jid may be pushed again.
pub async fn delete_jobs_removes_only_jobs_in_that_state<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let t = populate(s, T0).await;
    put(s, &tracked("del-track-enq1", "q-tracked"), Enqueued, t).await;
    put(s, &tracked("del-track-rty1", "q-tracked-r"), Retry, t).await;
    c.watch_tracked(&["del-track-enq1", "del-track-rty1"]);

    for target in [Scheduled, Enqueued, Retry, Dead] {
        let before = all_lists(s).await;
        let mut want = stats(s).await;
        let victim = fx_jid(target, "alpha-red");
        let mut ask = vec![
            victim.clone(),
            "del-unknown-0001".to_string(),
            victim.clone(),
        ];
        ask.extend(
            JobState::ALL
                .into_iter()
                .filter(|x| *x != target)
                .map(|x| fx_jid(x, "beta-red")),
        );
        assert_eq!(
            delete(s, target, ask.clone()).await,
            1,
            "delete_jobs({target}, {ask:?})"
        );
        assert_eq!(get(s, &victim).await, None, "{victim} is gone");
        let after = all_lists(s).await;
        let what = format!("delete_jobs({target})");
        assert_others_untouched(&before, &after, target, None, &what);
        let rest: Vec<StoredJob> = before[&target]
            .iter()
            .filter(|j| j.jid != victim)
            .cloned()
            .collect();
        assert_eq!(after[&target], rest, "{what}: the other {target} jobs stay");
        if target == Enqueued {
            let q = want.queues.iter_mut().find(|q| q.name == "q-enq").unwrap();
            q.size -= 1;
        } else {
            *state_count(&mut want, target) -= 1;
        }
        assert_eq!(stats(s).await, want, "{what}: stats");
    }

    let before = all_lists(s).await;
    let st = stats(s).await;
    assert_eq!(
        delete(s, Working, fx_jids(Working)).await,
        0,
        "working jobs are never deleted"
    );
    assert_eq!(delete(s, Enqueued, Vec::new()).await, 0, "no jids");
    assert_eq!(
        all_lists(s).await,
        before,
        "nothing deleted, nothing changed"
    );
    assert_eq!(stats(s).await, st);

    assert_eq!(delete(s, Enqueued, fx_jids(Enqueued)).await, 2);
    assert!(
        stats(s)
            .await
            .queues
            .contains(&queue_stats("q-enq", 0, false)),
        "an emptied queue stays known: {:?}",
        stats(s).await.queues
    );

    assert_eq!(delete(s, Scheduled, strings(&["del-track-enq1"])).await, 0);
    assert_eq!(
        track_state(s, "del-track-enq1", t).await,
        Some(TrackState::Enqueued)
    );
    assert_eq!(delete(s, Enqueued, strings(&["del-track-enq1"])).await, 1);
    assert_eq!(delete(s, Retry, strings(&["del-track-rty1"])).await, 1);
    for jid in ["del-track-enq1", "del-track-rty1"] {
        assert_eq!(
            track(s, jid, t).await,
            None,
            "tracking data of deleted {jid}"
        );
        assert!(
            !track_set(s, jid, Some(50), None, None, t).await,
            "TRACK SET of deleted {jid} stores nothing"
        );
        assert_eq!(track(s, jid, t).await, None, "{jid} after TRACK SET");
    }

    let again = fx_jid(Enqueued, "alpha-red");
    push(s, &[spec(&again).queue("q-enq")], t).await;
    assert_eq!(jids(s, Enqueued, Some("q-enq")).await, [again]);
    c.finish(t).await;
}

/// delete_jobs is a manual delete: a deleted unique job keeps its lock until `unique_for` runs
/// out, and a deleted batch member stays pending (its batch's callbacks keep waiting).
pub async fn delete_jobs_keeps_unique_locks_and_batch_counts<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":60}"#;
    push(s, &[uniq("del-uniq-00001", "[1]", u)], T0).await;
    assert_eq!(delete(s, Enqueued, strings(&["del-uniq-00001"])).await, 1);
    assert_eq!(
        push_one(s, uniq("del-uniq-00002", "[1]", u), T0 + SEC).await,
        Err(PushError::NotUnique),
        "the deleted job's lock holds"
    );
    assert_eq!(
        push_one(s, uniq("del-uniq-00003", "[1]", u), T0 + MIN + SEC).await,
        Ok(()),
        "until unique_for runs out"
    );

    let bid = "del-batch-0001";
    batch_new(s, both_callbacks(bid), T0).await;
    c.watch_batches(&[bid]);
    push(
        s,
        &[member("del-member-001", bid), member("del-member-002", bid)],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    assert_eq!(delete(s, Enqueued, strings(&["del-member-001"])).await, 1);
    assert_eq!(counts(s, bid, T0).await, (2, 2, 0, "", ""));
    run_ok(s, "bq", "del-member-002", T0 + SEC).await;
    assert_eq!(
        counts(s, bid, T0 + SEC).await,
        (2, 1, 0, "", ""),
        "the deleted member still holds the complete callback"
    );
    assert_eq!(
        jids(s, Enqueued, Some("cb-complete")).await,
        Vec::<String>::new()
    );
    c.finish(T0 + MIN + SEC).await;
}
