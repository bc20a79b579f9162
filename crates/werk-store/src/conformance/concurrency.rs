use super::*;

// ---------------------------------------------------------------------------------------------
// Concurrency: every step is guarded by the state the caller saw
// ---------------------------------------------------------------------------------------------

impl<H: Harness> Ctx<H> {
    /// Runs `f` with the harness shared (`Arc`) so it can spawn tasks, then takes it back.
    pub(super) async fn shared<T, F, Fut>(self, f: F) -> (Ctx<H>, T)
    where
        F: FnOnce(Arc<H>) -> Fut,
        Fut: Future<Output = T>,
    {
        let Ctx {
            h,
            rec,
            cfg,
            watched,
        } = self;
        let h = Arc::new(h);
        let out = f(h.clone()).await;
        let mut h = h;
        let h = loop {
            match Arc::try_unwrap(h) {
                Ok(h) => break h,
                Err(again) => {
                    h = again;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        };
        (
            Ctx {
                h,
                rec,
                cfg,
                watched,
            },
            out,
        )
    }
}

pub(super) async fn join_all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("task panicked"));
    }
    out
}

/// Parallel FETCHes from the same queues deliver every job exactly once.
pub async fn concurrent_fetches_deliver_each_job_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let n = 200;
    let all: Vec<String> = (0..n).map(|i| format!("conc-fetch-{i:05}")).collect();
    let specs: Vec<Spec> = all
        .iter()
        .enumerate()
        .map(|(i, j)| spec(j).queue(if i % 2 == 0 { "qa" } else { "qb" }))
        .collect();
    push(c.s(), &specs, T0).await;
    let (c, got) = c
        .shared(|h| async move {
            let mut tasks = Vec::new();
            for w in 0..8 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    let qs = if w % 2 == 0 {
                        ["qa", "qb"]
                    } else {
                        ["qb", "qa"]
                    };
                    let mut got = Vec::new();
                    while let Some(j) = h
                        .store()
                        .fetch(strings(&qs), format!("worker-{w}"), T0 + SEC)
                        .await
                        .expect("fetch")
                    {
                        got.push(j.jid);
                    }
                    got
                }));
            }
            join_all(tasks).await.concat()
        })
        .await;
    let mut got = got;
    got.sort();
    let mut dups = got.clone();
    dups.dedup();
    assert_eq!(
        dups.len(),
        got.len(),
        "a job was delivered twice by parallel FETCHes"
    );
    assert_eq!(got, all, "parallel FETCHes deliver every job");
    assert_eq!(stats(c.s()).await.working, n as u64);
    c.finish(T0 + SEC).await;
}

/// `fetch_early` (which may answer before its reservation is durable) still hands each job to
/// one caller only, in FIFO order, and any request made after it resolves — ACK, FAIL — sees
/// the reservation.
pub async fn fetch_early_delivers_once_and_later_requests_see_it<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let n = 60;
    let all: Vec<String> = (0..n).map(|i| format!("early-fetch-{i:04}")).collect();
    let specs: Vec<Spec> = all.iter().map(|j| spec(j)).collect();
    push(c.s(), &specs, T0).await;
    let (c, got) = c
        .shared(|h| async move {
            let mut tasks = Vec::new();
            for w in 0..4 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(j) = h
                        .store()
                        .fetch_early(strings(&["default"]), format!("early-{w}"), T0 + SEC)
                        .await
                        .expect("fetch_early")
                    {
                        assert_eq!(j.state, JobState::Working);
                        // Every other job is acknowledged, the rest failed, straight away.
                        let n: usize = j.jid[12..].parse().expect("jid number");
                        if n & 1 == 0 {
                            let r = h
                                .store()
                                .ack(j.jid.clone(), T0 + 2 * SEC)
                                .await
                                .expect("ack");
                            assert_eq!(
                                r,
                                AckOutcome::Acked,
                                "ACK right after fetch_early of {}",
                                j.jid
                            );
                        } else {
                            let r = h
                                .store()
                                .fail(j.jid.clone(), FailInfo::new("E", "m", vec![]), T0 + 2 * SEC)
                                .await
                                .expect("fail");
                            assert!(
                                matches!(r, FailReply::Failed(_)),
                                "FAIL right after fetch_early of {}",
                                j.jid
                            );
                        }
                        got.push(j.jid);
                    }
                    got
                }));
            }
            join_all(tasks).await.concat()
        })
        .await;
    let mut got = got;
    got.sort();
    let mut dups = got.clone();
    dups.dedup();
    assert_eq!(dups.len(), got.len(), "fetch_early delivered a job twice");
    assert_eq!(got, all, "fetch_early delivers every job");
    let st = stats(c.s()).await;
    assert_eq!((st.working, st.retries), (0, n as u64 / 2));
    assert_eq!((st.processed, st.failures), (n as u64, n as u64 / 2));
    c.finish(T0 + 2 * SEC).await;
}

/// Parallel PUSHes of the same jid store exactly one job; the others get DuplicateJid.
pub async fn concurrent_pushes_of_one_jid_store_it_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let (c, results) = c
        .shared(|h| async move {
            let mut tasks = Vec::new();
            for i in 0..16 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    let sp = spec("conc-same-jid").args(&format!("[{i}]"));
                    let sp = if i % 3 == 0 { sp.at(T0 + HOUR) } else { sp };
                    let r = h
                        .store()
                        .push(vec![sp.new_job(T0)], T0)
                        .await
                        .expect("push");
                    r.into_iter().next().expect("one result")
                }));
            }
            join_all(tasks).await
        })
        .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok, 1,
        "exactly one of the parallel pushes is accepted: {results:?}"
    );
    for r in results.iter().filter(|r| r.is_err()) {
        assert_duplicate(r, "conc-same-jid");
    }
    let st = stats(c.s()).await;
    assert_eq!(st.enqueued() + st.scheduled, 1);
    c.finish(T0).await;
}

/// Late ACKs and FAILs racing the reaper, the retry tick and a UI "retry now" (MUTATE requeue):
/// each expired job is taken by exactly one of ACK, FAIL or the reaper; every ACKed job is gone
/// (Acked if it came first, else AckedLate of the retry or enqueued copy the reaper left); every
/// FAILed job is stored once, failed once (retry_count 0), never lost; the counters add up.
pub async fn racing_ack_fail_reap_requeue_remove_acked_keep_one_copy_of_failed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let n = 40;
    let all: Vec<String> = (0..n).map(|i| format!("race-job-{i:05}")).collect();
    for (i, jid) in all.iter().enumerate() {
        put(
            c.s(),
            &spec(jid).queue("race").reserve_for(60),
            Working,
            T0 + i as Millis,
        )
        .await;
    }
    let t = T0 + 5 * MIN;
    let jobs = all.clone();
    let (c, (acks, fails, reaped)) = c
        .shared(|h| async move {
            let mut workers = Vec::new();
            for (i, jid) in jobs.into_iter().enumerate() {
                let h = h.clone();
                workers.push(tokio::spawn(async move {
                    if i % 2 == 0 {
                        let r = h.store().ack(jid.clone(), t).await.expect("ack");
                        (jid, Some(r), None)
                    } else {
                        let r = h.store().fail(jid.clone(), boom(), t).await.expect("fail");
                        (jid, None, Some(r))
                    }
                }));
            }
            let mut reapers = Vec::new();
            for k in 0..3 {
                let h = h.clone();
                reapers.push(tokio::spawn(async move {
                    let mut n = h.store().reap_expired(t, 7).await.expect("reap");
                    n += h.store().reap_expired(t, 1000).await.expect("reap");
                    if k == 0 {
                        h.store()
                            .mutate(
                                Mutation {
                                    op: MutateOp::Requeue,
                                    target: Retry,
                                    filter: None,
                                },
                                t,
                            )
                            .await
                            .expect("mutate");
                    } else {
                        h.store()
                            .promote_due(t + HOUR, 1000)
                            .await
                            .expect("promote");
                    }
                    n
                }));
            }
            let outcomes = join_all(workers).await;
            let reaped: usize = join_all(reapers).await.into_iter().sum();
            let acks: Vec<(String, AckOutcome)> = outcomes
                .iter()
                .filter_map(|(j, a, _)| a.map(|a| (j.clone(), a)))
                .collect();
            let fails: Vec<(String, FailReply)> = outcomes
                .iter()
                .filter_map(|(j, _, f)| f.map(|f| (j.clone(), f)))
                .collect();
            (acks, fails, reaped)
        })
        .await;
    let s = c.s();
    let acked = acks.iter().filter(|(_, a)| *a == AckOutcome::Acked).count();
    let acked_late = acks
        .iter()
        .filter(|(_, a)| matches!(a, AckOutcome::AckedLate(_)))
        .count();
    let failed = fails
        .iter()
        .filter(|(_, f)| *f != FailReply::NotWorking)
        .count();
    assert_eq!(
        acked + failed + reaped,
        n,
        "each expired job is taken by exactly one of ACK, FAIL or the reaper \
         (acked {acked}, failed {failed}, reaped {reaped})"
    );
    assert!(
        acked_late <= reaped,
        "only a reaped job can be ACKed late (acked late {acked_late}, reaped {reaped})"
    );
    for (jid, a) in &acks {
        assert!(
            matches!(
                a,
                AckOutcome::Acked | AckOutcome::AckedLate(Retry) | AckOutcome::AckedLate(Enqueued)
            ),
            "{jid}: the job was working, in retry or enqueued when its ACK came, got {a:?}"
        );
        assert_eq!(
            get(s, jid).await,
            None,
            "{jid} was ACKed ({a:?}) but is still stored"
        );
    }
    for (jid, _) in &fails {
        let got = must_get(s, jid).await;
        assert!(
            matches!(got.state, Retry | Enqueued),
            "{jid} is {}",
            got.state
        );
        let f = payload(&got)
            .failure
            .expect("a stored job here has failed once");
        assert_eq!(
            f.retry_count, 0,
            "{jid} was failed twice (FAIL and reaper both acted)"
        );
    }
    assert_eq!(
        counters(s).await,
        (
            (acked + acked_late + failed + reaped) as u64,
            (failed + reaped) as u64
        ),
        "processed = ACKs (in time or late) + failures, failures = FAILs + reaped"
    );
    let st = stats(s).await;
    assert_eq!(st.working, 0);
    assert_eq!(
        st.enqueued() + st.retries,
        fails.len() as u64,
        "exactly the FAILed half is left, one copy each"
    );
    c.finish(t + HOUR).await;
}

/// close() waits for every accepted request: each PUSH racing it is either committed (`Ok`, and
/// still there after a reopen) or refused with `Closed` (and absent); after close, requests are
/// refused with `Closed`.
pub async fn close_commits_accepted_requests_and_refuses_later_ones<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let (mut c, results) = c
        .shared(|h| async move {
            let mut tasks = Vec::new();
            for i in 0..40 {
                let hh = h.clone();
                tasks.push(tokio::spawn(async move {
                    let h = hh;
                    let jid = format!("close-race-{i:04}");
                    let r = h.store().push(vec![spec(&jid).new_job(T0)], T0).await;
                    (jid, r)
                }));
                if i == 20 {
                    h.store().close().await;
                }
            }
            let mut results = join_all(tasks).await;
            let after = h
                .store()
                .push(vec![spec("close-after-01").new_job(T0)], T0)
                .await;
            results.push(("close-after-01".to_string(), after));
            results
        })
        .await;
    let late = &results.last().unwrap().1;
    assert!(
        matches!(late, Err(StoreError::Closed)),
        "a PUSH after close() must fail with Closed, got {late:?}"
    );
    c.reopen().await;
    let s = c.s();
    for (jid, r) in &results {
        match r {
            Ok(v) => {
                assert!(v[0].is_ok(), "{jid}: {v:?}");
                assert_eq!(
                    state_of(s, jid).await,
                    Some(Enqueued),
                    "{jid} was accepted before close"
                );
            }
            Err(StoreError::Closed) => {
                assert_eq!(state_of(s, jid).await, None, "{jid} was refused but stored")
            }
            Err(e) => panic!("{jid}: a PUSH racing close() gave {e:?}, not Ok or Closed"),
        }
    }
    c.finish(T0).await;
}
