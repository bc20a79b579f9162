use super::*;

// ---------------------------------------------------------------------------------------------
// Randomized model-based test
// ---------------------------------------------------------------------------------------------

/// xorshift64*: small, seeded, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize].clone()
    }
}

/// The model's view of one stored job.
#[derive(Debug, Clone)]
struct MJob {
    queue: String,
    jobtype: String,
    retry: i64,
    reserve_for: i64,
    /// Failures so far (the payload's `failure.retry_count` is this − 1).
    failures: i64,
    state: JobState,
    /// scheduled: at; working: reservation expiry; retry: next_at; dead: dead_until.
    at: Millis,
    /// Enqueue order; jobs enqueued by one promote/requeue call share a key (their relative
    /// order is the backend's choice).
    key: u64,
}

#[derive(Default)]
struct Model {
    jobs: BTreeMap<String, MJob>,
    gone: BTreeSet<String>,
    /// Known queues → paused.
    queues: BTreeMap<String, bool>,
    processed: u64,
    failures: u64,
    next_key: u64,
}

const MODEL_QUEUES: [&str; 3] = ["qa", "qb", "qc"];
const MODEL_JOBTYPES: [&str; 2] = ["Alpha", "Beta"];

impl Model {
    fn key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    fn enqueue(&mut self, jid: &str, key: u64) {
        let j = self.jobs.get_mut(jid).unwrap();
        j.state = Enqueued;
        j.key = key;
        let q = j.queue.clone();
        self.queues.entry(q).or_insert(false);
    }

    fn remove(&mut self, jid: &str) {
        self.jobs.remove(jid);
        self.gone.insert(jid.to_string());
    }

    fn in_state(&self, state: JobState) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.state == state)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// What a failure (FAIL or reaper) of a working job does: Some(retry_count) when it goes to
    /// retry, and the outcome kind.
    fn failure_outcome(&mut self, jid: &str) -> (i64, &'static str) {
        self.processed += 1;
        self.failures += 1;
        let j = self.jobs.get_mut(jid).unwrap();
        j.failures += 1;
        let rc = j.failures - 1;
        let kind = if j.retry == 0 {
            "discarded"
        } else if rc < j.retry {
            "retry"
        } else {
            "dead"
        };
        (rc, kind)
    }

    fn all_jids(&self) -> Vec<String> {
        self.jobs.keys().chain(self.gone.iter()).cloned().collect()
    }
}

/// A seeded random sequence of push / fetch / ack / fail / promote / reap / purge / mutate /
/// pause / remove / flush / reopen against the store and an in-memory model of the state
/// machine, comparing every job's state (and `at`) and the stats after each step.
///
/// `WERK_CONFORMANCE_SEED=<n>` runs one given seed, `WERK_CONFORMANCE_STEPS=<n>` sets the length.
pub async fn random_operations_match_model<H: Harness>() {
    let steps: usize = std::env::var("WERK_CONFORMANCE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seeds: Vec<u64> = match std::env::var("WERK_CONFORMANCE_SEED") {
        Ok(s) => vec![s.parse().expect("WERK_CONFORMANCE_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        run_model::<H>(seed, steps).await;
    }
}

async fn run_model<H: Harness>(seed: u64, steps: usize) {
    let retention = 10 * MIN;
    let mut c = Ctx::<H>::with_config(StoreConfig {
        dead_retention: retention,
        ..StoreConfig::default()
    })
    .await;
    let mut rng = Rng::new(seed);
    let mut m = Model::default();
    let mut now = T0;
    let mut serial = 0u64;
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();

    for step in 0..steps {
        now += rng.below(30 * SEC as u64) as Millis;
        if rng.chance(4) {
            now += 2000 * SEC;
        }
        let roll = rng.below(100);
        let mut what: String;
        let s = c.s();
        match roll {
            // PUSH / PUSHB of 1–3 jobs, sometimes reusing a jid.
            0..=19 => {
                let n = 1 + rng.below(3);
                let mut specs = Vec::new();
                let mut expect_dup = Vec::new();
                let mut in_batch: BTreeMap<String, (String, String)> = BTreeMap::new();
                for _ in 0..n {
                    let known = m.all_jids();
                    let jid = if !known.is_empty() && rng.chance(10) {
                        rng.pick(&known)
                    } else {
                        serial += 1;
                        format!("rnd-{seed}-{serial:05}")
                    };
                    let mut sp = spec(&jid)
                        .queue(rng.pick(&MODEL_QUEUES))
                        .jobtype(rng.pick(&MODEL_JOBTYPES))
                        .retry(rng.pick(&[25, 25, 2, 1, 0, -1]))
                        .reserve_for(rng.pick(&[0, 60, 90, 120, 600]));
                    match rng.below(10) {
                        0..=5 => {}
                        6 => sp = sp.at(now - rng.below(60_000) as Millis),
                        _ => sp = sp.at(now + 1 + rng.below(120_000) as Millis),
                    }
                    // A jid already taken: by the same job (jobtype, queue, args; the model's
                    // args are always `[]`) it is a retried push, else a duplicate.
                    let taken = m
                        .jobs
                        .get(&jid)
                        .map(|j| (j.queue.clone(), j.jobtype.clone()))
                        .or_else(|| in_batch.get(&jid).cloned());
                    expect_dup.push(taken.map(|t| t == (sp.queue.clone(), sp.jobtype.clone())));
                    in_batch
                        .entry(jid)
                        .or_insert((sp.queue.clone(), sp.jobtype.clone()));
                    specs.push(sp);
                }
                what = format!(
                    "push {:?}",
                    specs.iter().map(|j| &j.jid).collect::<Vec<_>>()
                );
                let res = push_results(s, &specs, now).await;
                for ((sp, taken), r) in specs.iter().zip(expect_dup).zip(res) {
                    if taken == Some(true) {
                        assert_eq!(
                            r,
                            Ok(()),
                            "seed {seed} step {step}: {what}: {} is a retried push",
                            sp.jid
                        );
                        *tally.entry("=retried pushes".into()).or_default() += 1;
                        continue;
                    }
                    if taken == Some(false) {
                        assert!(
                            matches!(r, Err(PushError::DuplicateJid(..))),
                            "seed {seed} step {step}: {what}: {} must be a duplicate, got {r:?}",
                            sp.jid
                        );
                        *tally.entry("=duplicates refused".into()).or_default() += 1;
                        continue;
                    }
                    assert!(
                        r.is_ok(),
                        "seed {seed} step {step}: {what}: {} refused: {r:?}",
                        sp.jid
                    );
                    m.gone.remove(&sp.jid);
                    let scheduled = sp.at.is_some_and(|at| at > now);
                    m.jobs.insert(
                        sp.jid.clone(),
                        MJob {
                            queue: sp.queue.clone(),
                            jobtype: sp.jobtype.clone(),
                            retry: sp.retry.unwrap(),
                            reserve_for: sp.reserve_for.unwrap(),
                            failures: 0,
                            state: Scheduled,
                            at: sp.at.unwrap_or(now),
                            key: 0,
                        },
                    );
                    if !scheduled {
                        let k = m.key();
                        m.enqueue(&sp.jid, k);
                    }
                }
            }
            // FETCH from a random ordered subset of queues (plus an unknown one).
            20..=42 => {
                let mut pool: Vec<&str> = MODEL_QUEUES.to_vec();
                pool.push("qzz");
                let mut qs = Vec::new();
                while !pool.is_empty() && (qs.is_empty() || rng.chance(50)) {
                    qs.push(pool.remove(rng.below(pool.len() as u64) as usize));
                }
                what = format!("fetch {qs:?}");
                let mut candidates = Vec::new();
                for q in &qs {
                    if m.queues.get(*q) != Some(&false) {
                        continue;
                    }
                    let in_q: Vec<(&String, &MJob)> = m
                        .jobs
                        .iter()
                        .filter(|(_, j)| j.state == Enqueued && j.queue == *q)
                        .collect();
                    if let Some(min) = in_q.iter().map(|(_, j)| j.key).min() {
                        candidates = in_q
                            .iter()
                            .filter(|(_, j)| j.key == min)
                            .map(|(k, _)| (*k).clone())
                            .collect();
                        break;
                    }
                }
                let got = fetch(s, &qs, now).await;
                match got {
                    None => assert!(
                        candidates.is_empty(),
                        "seed {seed} step {step}: {what} returned nothing, expected one of {candidates:?}"
                    ),
                    Some(j) => {
                        assert!(
                            candidates.contains(&j.jid),
                            "seed {seed} step {step}: {what} returned {}, expected one of {candidates:?}",
                            j.jid
                        );
                        let mj = m.jobs.get_mut(&j.jid).unwrap();
                        mj.state = Working;
                        mj.at = now + reservation_seconds(mj.reserve_for) * SEC;
                        *tally.entry("=fetched".into()).or_default() += 1;
                        what = format!("{what} -> {}", j.jid);
                    }
                }
            }
            // ACK of a working job, or of anything else (a late ACK of an enqueued, retry or
            // dead job removes it too; scheduled, gone and unknown jids are NotWorking).
            43..=53 => {
                let working = m.in_state(Working);
                let jid = if !working.is_empty() && rng.chance(75) {
                    rng.pick(&working)
                } else {
                    let mut all = m.all_jids();
                    all.push("rnd-unknown-jid".into());
                    rng.pick(&all)
                };
                what = format!("ack {jid}");
                let was = m.jobs.get(&jid).map(|j| j.state);
                let got = ack(s, &jid, now).await;
                let want = match was {
                    Some(Working) => AckOutcome::Acked,
                    Some(state @ (Enqueued | Retry | Dead)) => AckOutcome::AckedLate(state),
                    Some(Scheduled) | None => AckOutcome::NotWorking,
                };
                assert_eq!(got, want, "seed {seed} step {step}: {what}");
                if want != AckOutcome::NotWorking {
                    m.remove(&jid);
                    m.processed += 1;
                    let kind = match was {
                        Some(Working) => "=acked".to_string(),
                        Some(state) => format!("=acked late from {state}"),
                        None => unreachable!(),
                    };
                    *tally.entry(kind).or_default() += 1;
                }
            }
            // FAIL of a working job, or of anything else.
            54..=64 => {
                let working = m.in_state(Working);
                let jid = if !working.is_empty() && rng.chance(75) {
                    rng.pick(&working)
                } else {
                    let mut all = m.all_jids();
                    all.push("rnd-unknown-jid".into());
                    rng.pick(&all)
                };
                what = format!("fail {jid}");
                let was_working = m.jobs.get(&jid).is_some_and(|j| j.state == Working);
                let got = fail(s, &jid, now).await;
                if !was_working {
                    assert_eq!(
                        got,
                        FailReply::NotWorking,
                        "seed {seed} step {step}: {what}"
                    );
                } else {
                    let (rc, kind) = m.failure_outcome(&jid);
                    *tally.entry(format!("=failed to {kind}")).or_default() += 1;
                    match (kind, got) {
                        ("discarded", FailReply::Failed(FailOutcome::Discarded)) => m.remove(&jid),
                        ("dead", FailReply::Failed(FailOutcome::Dead)) => {
                            let j = m.jobs.get_mut(&jid).unwrap();
                            j.state = Dead;
                            j.at = now + retention;
                        }
                        ("retry", FailReply::Failed(FailOutcome::Retry { next_at })) => {
                            let lo = now + backoff_seconds(rc, 0) * SEC;
                            let hi = now + backoff_seconds(rc, 29) * SEC;
                            assert!(
                                (lo..=hi).contains(&next_at),
                                "seed {seed} step {step}: {what}: next_at {next_at} outside [{lo}, {hi}]"
                            );
                            let j = m.jobs.get_mut(&jid).unwrap();
                            j.state = Retry;
                            j.at = next_at;
                        }
                        (kind, got) => {
                            panic!("seed {seed} step {step}: {what}: expected {kind}, got {got:?}")
                        }
                    }
                }
            }
            // Scheduler and retry tick.
            65..=71 => {
                what = "promote_due".into();
                let due: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| matches!(j.state, Scheduled | Retry) && j.at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = promote(s, now).await;
                assert_eq!(
                    n,
                    due.len(),
                    "seed {seed} step {step}: promote_due count ({due:?})"
                );
                *tally.entry("=promoted".into()).or_default() += n;
                let k = m.key();
                for jid in &due {
                    m.enqueue(jid, k);
                }
            }
            // Reservation reaper.
            72..=76 => {
                what = "reap_expired".into();
                let expired: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == Working && j.at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = reap(s, now).await;
                assert_eq!(
                    n,
                    expired.len(),
                    "seed {seed} step {step}: reap count ({expired:?})"
                );
                for jid in &expired {
                    let (rc, kind) = m.failure_outcome(jid);
                    *tally.entry(format!("=reaped to {kind}")).or_default() += 1;
                    let got = get(s, jid).await;
                    match kind {
                        "discarded" => {
                            assert_eq!(
                                got, None,
                                "seed {seed} step {step}: reaped retry:0 job {jid}"
                            );
                            m.remove(jid);
                        }
                        "dead" => {
                            let j = m.jobs.get_mut(jid).unwrap();
                            j.state = Dead;
                            j.at = now + retention;
                        }
                        _ => {
                            let got = got.unwrap_or_else(|| {
                                panic!("seed {seed} step {step}: reaped {jid} vanished")
                            });
                            assert_eq!(got.state, Retry, "seed {seed} step {step}: reaped {jid}");
                            let lo = now + backoff_seconds(rc, 0) * SEC;
                            let hi = now + backoff_seconds(rc, 29) * SEC;
                            assert!(
                                (lo..=hi).contains(&got.at),
                                "seed {seed} step {step}: reaped {jid} next_at"
                            );
                            let f = payload(&got).failure.expect("failure");
                            assert_eq!(f.errtype, "ReservationExpired");
                            let j = m.jobs.get_mut(jid).unwrap();
                            j.state = Retry;
                            j.at = got.at;
                        }
                    }
                }
            }
            // MUTATE.
            77..=86 => {
                let target = rng.pick(&[Scheduled, Retry, Dead]);
                let mut op = rng.pick(&[
                    MutateOp::Clear,
                    MutateOp::Discard,
                    MutateOp::Kill,
                    MutateOp::Requeue,
                ]);
                if op == MutateOp::Kill && target == Dead {
                    op = MutateOp::Requeue;
                }
                let all = m.all_jids();
                let filter = match rng.below(10) {
                    0..=2 => None,
                    3..=6 => {
                        let mut jids = vec!["rnd-no-such-jid".to_string()];
                        for _ in 0..=rng.below(3) {
                            if !all.is_empty() {
                                jids.push(rng.pick(&all));
                            }
                        }
                        Some(MutateFilter {
                            jids,
                            regexp: None,
                            jobtype: Some("Nope".into()),
                        })
                    }
                    7..=8 => Some(MutateFilter {
                        jids: Vec::new(),
                        regexp: None,
                        jobtype: Some(rng.pick(&MODEL_JOBTYPES).to_string()),
                    }),
                    _ => Some(MutateFilter {
                        jids: Vec::new(),
                        regexp: Some(format!("*\"jobtype\":\"{}\"*", rng.pick(&MODEL_JOBTYPES))),
                        jobtype: None,
                    }),
                };
                what = format!("mutate {op:?} {target} {filter:?}");
                let hit: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(jid, j)| {
                        j.state == target
                            && match (&filter, op) {
                                (_, MutateOp::Clear) | (None, _) => true,
                                (Some(f), _) if !f.jids.is_empty() => f.jids.contains(jid),
                                (Some(f), _) => {
                                    let jt = f.jobtype.clone().or_else(|| {
                                        f.regexp
                                            .as_ref()
                                            .map(|r| r.split('"').nth(3).unwrap().to_string())
                                    });
                                    jt.is_none_or(|t| t == j.jobtype)
                                }
                            }
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = mutate(s, op, target, filter, now).await;
                assert_eq!(
                    n,
                    hit.len() as u64,
                    "seed {seed} step {step}: {what}: count ({hit:?})"
                );
                *tally.entry(format!("=mutated by {op:?}")).or_default() += hit.len();
                let k = m.key();
                for jid in &hit {
                    match op {
                        MutateOp::Clear | MutateOp::Discard => m.remove(jid),
                        MutateOp::Kill => {
                            let j = m.jobs.get_mut(jid).unwrap();
                            j.state = Dead;
                            j.at = now + retention;
                        }
                        MutateOp::Requeue => m.enqueue(jid, k),
                    }
                }
            }
            // QUEUE PAUSE / RESUME.
            87..=89 => {
                let paused = rng.chance(50);
                let sel = if rng.chance(15) {
                    QueueSelector::All
                } else {
                    QueueSelector::Names(vec![rng.pick(&MODEL_QUEUES).to_string()])
                };
                what = format!("set_paused {sel:?} {paused}");
                s.set_paused(sel.clone(), paused).await.expect("set_paused");
                for (name, p) in m.queues.iter_mut() {
                    if sel == QueueSelector::All || sel == QueueSelector::Names(vec![name.clone()])
                    {
                        *p = paused;
                    }
                }
            }
            // QUEUE REMOVE.
            90 => {
                let sel = if rng.chance(20) {
                    QueueSelector::All
                } else {
                    QueueSelector::Names(vec![rng.pick(&MODEL_QUEUES).to_string()])
                };
                what = format!("remove_queues {sel:?}");
                let names: Vec<String> = match &sel {
                    QueueSelector::All => m.queues.keys().cloned().collect(),
                    QueueSelector::Names(n) => n.clone(),
                };
                let hit: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == Enqueued && names.contains(&j.queue))
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = s.remove_queues(sel).await.expect("remove_queues");
                assert_eq!(
                    n,
                    hit.len() as u64,
                    "seed {seed} step {step}: {what}: count"
                );
                *tally.entry("=removed with queue".into()).or_default() += hit.len();
                for jid in &hit {
                    m.remove(jid);
                }
                for q in &names {
                    m.queues.remove(q);
                }
            }
            // Dead purge.
            91..=93 => {
                what = "purge_dead".into();
                let expired: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == Dead && j.at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = s.purge_dead(now, 1000).await.expect("purge_dead");
                assert_eq!(
                    n,
                    expired.len(),
                    "seed {seed} step {step}: purge count ({expired:?})"
                );
                *tally.entry("=purged".into()).or_default() += n;
                for jid in &expired {
                    m.remove(jid);
                }
            }
            // Crash and reopen.
            94..=97 => {
                what = "reopen".into();
                c.reopen().await;
            }
            // FLUSH (rarely).
            _ => {
                if rng.chance(20) {
                    what = "flush".into();
                    s.flush().await.expect("flush");
                    let jids: Vec<String> = m.jobs.keys().cloned().collect();
                    for jid in jids {
                        m.remove(&jid);
                    }
                    m.queues.clear();
                    m.processed = 0;
                    m.failures = 0;
                } else {
                    what = "nothing".into();
                }
            }
        }
        let kind: String = what
            .chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
            .collect();
        *tally.entry(kind).or_default() += 1;
        let ctx = format!(
            "seed {seed} step {step} (now = T0 + {} s) after {what}",
            (now - T0) / SEC
        );
        verify_model(c.s(), &m, &ctx, step % 10 == 9).await;
        if step % 25 == 24 {
            check_consistency(c.s()).await;
        }
    }
    eprintln!(
        "random_operations_match_model: seed {seed}, {steps} steps, {} jobs stored, {} gone, \
         processed {}, failures {}; operations {tally:?}",
        m.jobs.len(),
        m.gone.len(),
        m.processed,
        m.failures
    );
    c.finish(now).await;
}

async fn verify_model<S: Store>(s: &S, m: &Model, ctx: &str, check_gone: bool) {
    for (jid, want) in &m.jobs {
        let got = get(s, jid)
            .await
            .unwrap_or_else(|| panic!("{ctx}: job {jid} should be {} but is gone", want.state));
        assert_eq!(got.state, want.state, "{ctx}: state of {jid}");
        assert_eq!(got.queue, want.queue, "{ctx}: queue of {jid}");
        assert_eq!(got.jobtype, want.jobtype, "{ctx}: jobtype of {jid}");
        if want.state != Enqueued {
            assert_eq!(got.at, want.at, "{ctx}: at of {jid} ({})", want.state);
        }
        let failure = payload(&got).failure;
        if want.failures == 0 {
            assert!(
                failure.is_none(),
                "{ctx}: {jid} never failed but has {failure:?}"
            );
        } else {
            let f = failure.unwrap_or_else(|| panic!("{ctx}: {jid} failed but has no failure"));
            assert_eq!(
                f.retry_count,
                want.failures - 1,
                "{ctx}: retry_count of {jid}"
            );
        }
    }
    if check_gone {
        for jid in &m.gone {
            assert_eq!(state_of(s, jid).await, None, "{ctx}: {jid} should be gone");
        }
    }
    let st = stats(s).await;
    let count = |state| m.jobs.values().filter(|j| j.state == state).count() as u64;
    assert_eq!(
        (st.scheduled, st.working, st.retries, st.dead),
        (count(Scheduled), count(Working), count(Retry), count(Dead)),
        "{ctx}: set sizes (scheduled, working, retries, dead)"
    );
    assert_eq!(
        (st.processed, st.failures),
        (m.processed, m.failures),
        "{ctx}: counters"
    );
    let want_queues: Vec<QueueStats> = m
        .queues
        .iter()
        .map(|(name, paused)| QueueStats {
            name: name.clone(),
            size: m
                .jobs
                .values()
                .filter(|j| j.state == Enqueued && &j.queue == name)
                .count() as u64,
            paused: *paused,
        })
        .collect();
    assert_eq!(st.queues, want_queues, "{ctx}: queues");
}
