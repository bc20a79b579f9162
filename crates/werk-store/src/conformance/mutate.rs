use super::*;

// ---------------------------------------------------------------------------------------------
// MUTATE
// ---------------------------------------------------------------------------------------------

/// The fixture's three jobs per state: (kind, jobtype, color in `custom`).
const KINDS: [(&str, &str, &str); 3] = [
    ("alpha-red", "Alpha", "red"),
    ("alpha-blue", "Alpha", "blue"),
    ("beta-red", "Beta", "red"),
];

fn fx_prefix(state: JobState) -> &'static str {
    match state {
        Scheduled => "sched",
        Enqueued => "enq",
        Working => "work",
        Retry => "retry",
        Dead => "dead",
    }
}

pub(super) fn fx_jid(state: JobState, kind: &str) -> String {
    format!("{}-{kind}", fx_prefix(state))
}

fn fx_queue(state: JobState) -> String {
    format!("q-{}", fx_prefix(state))
}

pub(super) fn fx_jids(state: JobState) -> Vec<String> {
    KINDS.iter().map(|(k, _, _)| fx_jid(state, k)).collect()
}

/// Three jobs in every state (see [`KINDS`]), each state's in queue `q-<state>`, created from
/// `now` on in steps of 1.001 s (so no two share a time). Returns the time after the last.
pub(super) async fn populate<S: Store>(s: &S, now: Millis) -> Millis {
    let mut t = now;
    for state in [Scheduled, Working, Retry, Dead, Enqueued] {
        for (kind, jobtype, color) in KINDS {
            let mut sp = spec(&fx_jid(state, kind))
                .queue(&fx_queue(state))
                .jobtype(jobtype)
                .custom(&format!("{{\"color\":\"{color}\"}}"));
            if state == Scheduled {
                sp = sp.at(t + HOUR);
            }
            if state == Dead {
                sp = sp.retry(-1);
            }
            put(s, &sp, state, t).await;
            t += SEC + 1;
        }
    }
    t
}

/// Every state's jobs, in list order.
pub(super) async fn all_lists<S: Store>(s: &S) -> BTreeMap<JobState, Vec<StoredJob>> {
    let mut m = BTreeMap::new();
    for state in JobState::ALL {
        m.insert(state, list(s, state, None).await);
    }
    m
}

fn sorted_jids(jobs: &[StoredJob]) -> Vec<String> {
    let mut v: Vec<String> = jobs.iter().map(|j| j.jid.clone()).collect();
    v.sort();
    v
}

/// Asserts that the states other than `target` and `dest` are exactly as `before`.
pub(super) fn assert_others_untouched(
    before: &BTreeMap<JobState, Vec<StoredJob>>,
    after: &BTreeMap<JobState, Vec<StoredJob>>,
    target: JobState,
    dest: Option<JobState>,
    what: &str,
) {
    for state in JobState::ALL {
        if state != target && Some(state) != dest {
            assert_eq!(
                before[&state], after[&state],
                "{what} must not touch {state} jobs"
            );
        }
    }
}

/// MUTATE clear removes the whole target set, ignoring any filter, and nothing else.
pub async fn mutate_clear_empties_target_only<H: Harness>() {
    for target in [Scheduled, Retry, Dead] {
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let t = populate(s, T0).await;
        let before = all_lists(s).await;
        let filter = Some(MutateFilter {
            jids: strings(&["matches-nothing"]),
            regexp: None,
            jobtype: Some("Nothing".into()),
        });
        assert_eq!(
            mutate(s, MutateOp::Clear, target, filter, t).await,
            3,
            "clear {target}"
        );
        let after = all_lists(s).await;
        assert!(after[&target].is_empty(), "clear {target} empties it");
        assert_others_untouched(&before, &after, target, None, &format!("clear {target}"));
        for jid in fx_jids(target) {
            assert_eq!(get(s, &jid).await, None, "{jid} is gone after clear");
        }
        c.finish(t).await;
    }
}

/// MUTATE discard with no filter at all (or an empty filter) is the same as clear.
pub async fn mutate_discard_without_filter_clears_target<H: Harness>() {
    for target in [Scheduled, Retry, Dead] {
        for filter in [None, Some(MutateFilter::default())] {
            let c = Ctx::<H>::new().await;
            let s = c.s();
            let t = populate(s, T0).await;
            let before = all_lists(s).await;
            let what = format!("discard {target} with filter {filter:?}");
            assert_eq!(
                mutate(s, MutateOp::Discard, target, filter, t).await,
                3,
                "{what}"
            );
            let after = all_lists(s).await;
            assert!(after[&target].is_empty(), "{what} empties it");
            assert_others_untouched(&before, &after, target, None, &what);
            c.finish(t).await;
        }
    }
}

/// MUTATE kill: scheduled / retry → dead until now + dead_retention, `failure` kept.
pub async fn mutate_kill_moves_jobs_to_dead<H: Harness>() {
    for target in [Scheduled, Retry] {
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let t = populate(s, T0).await + MIN;
        let before = all_lists(s).await;
        let what = format!("kill {target}");
        assert_eq!(
            mutate(s, MutateOp::Kill, target, None, t).await,
            3,
            "{what}"
        );
        let after = all_lists(s).await;
        assert!(after[&target].is_empty(), "{what} empties it");
        assert_others_untouched(&before, &after, target, Some(Dead), &what);
        let dead = &after[&Dead];
        assert_eq!(
            &dead[..3],
            &before[&Dead][..],
            "{what}: earlier dead jobs untouched and first"
        );
        assert_eq!(
            sorted_jids(&dead[3..]),
            sorted_jids(&before[&target]),
            "{what}"
        );
        for old in &before[&target] {
            let got = must_get(s, &old.jid).await;
            assert_eq!(
                (got.state, got.at),
                (Dead, t + DEFAULT_RETENTION),
                "{what}: {}",
                old.jid
            );
            assert_eq!(
                payload(&got).failure,
                payload(old).failure,
                "{what} keeps failure"
            );
            assert_eq!(
                payload(&got).args.map(|a| a.get().to_string()),
                payload(old).args.map(|a| a.get().to_string())
            );
        }
        c.finish(t).await;
    }
}

/// MUTATE requeue: scheduled / retry / dead → enqueued at the back of the job's own queue, the
/// listener told, `failure` kept.
pub async fn mutate_requeue_moves_jobs_to_their_queue<H: Harness>() {
    for target in [Scheduled, Retry, Dead] {
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let t = populate(s, T0).await + MIN;
        let queue = fx_queue(target);
        push(s, &[spec("requeue-early").queue(&queue)], t).await;
        c.rec.take();
        let before = all_lists(s).await;
        let what = format!("requeue {target}");
        let t2 = t + SEC;
        assert_eq!(
            mutate(s, MutateOp::Requeue, target, None, t2).await,
            3,
            "{what}"
        );
        let after = all_lists(s).await;
        assert!(after[&target].is_empty(), "{what} empties it");
        assert_others_untouched(&before, &after, target, Some(Enqueued), &what);
        let in_queue = list(s, Enqueued, Some(&queue)).await;
        assert_eq!(
            in_queue[0].jid, "requeue-early",
            "{what}: requeued jobs go to the back"
        );
        assert_eq!(
            sorted_jids(&in_queue[1..]),
            sorted_jids(&before[&target]),
            "{what}"
        );
        for old in &before[&target] {
            let got = must_get(s, &old.jid).await;
            assert_eq!(
                (got.state, got.at),
                (Enqueued, t2),
                "{what}: {} enqueued now",
                old.jid
            );
            assert_eq!(
                payload(&got).failure,
                payload(old).failure,
                "{what} keeps failure"
            );
        }
        assert!(
            c.rec.take().contains(&queue),
            "{what}: the listener is told about {queue}"
        );
        for _ in 0..4 {
            assert!(
                fetch(s, &[&queue], t2).await.is_some(),
                "{what}: requeued jobs are fetchable"
            );
        }
        c.finish(t2).await;
    }
}

/// Applies one filter to each target with `op`, checks the count, the jobs affected and that
/// nothing else changed.
async fn check_filter<H: Harness>(op: MutateOp, filter: MutateFilter, kinds: &[&str], what: &str) {
    for target in [Scheduled, Retry, Dead] {
        if op == MutateOp::Kill && target == Dead {
            continue;
        }
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let t = populate(s, T0).await;
        let before = all_lists(s).await;
        let what = format!("{op:?} {target} {what}");
        let n = mutate(s, op, target, Some(filter.clone()), t).await;
        let hit: Vec<String> = kinds.iter().map(|k| fx_jid(target, k)).collect();
        let after = all_lists(s).await;
        let dest = match op {
            MutateOp::Kill => Some(Dead),
            MutateOp::Requeue => Some(Enqueued),
            _ => None,
        };
        assert_others_untouched(&before, &after, target, dest, &what);
        let want_left: Vec<String> = before[&target]
            .iter()
            .map(|j| j.jid.clone())
            .filter(|j| !hit.contains(j))
            .collect();
        let left: Vec<String> = after[&target].iter().map(|j| j.jid.clone()).collect();
        assert_eq!(left, want_left, "{what}: jobs left in {target}");
        assert_eq!(n, hit.len() as u64, "{what}: affected count");
        for jid in &hit {
            assert_eq!(state_of(s, jid).await, dest, "{what}: {jid}");
        }
        c.finish(t).await;
    }
}

/// A non-empty `jids` filter selects by jid and ignores `jobtype` and `regexp`.
pub async fn mutate_filter_jids_take_priority<H: Harness>() {
    let mut f = MutateFilter {
        jids: Vec::new(),
        regexp: Some("*\"color\":\"red\"*".into()),
        jobtype: Some("Beta".into()),
    };
    for target in [Scheduled, Retry, Dead] {
        f.jids.push(fx_jid(target, "alpha-blue"));
    }
    f.jids.push("no-such-jid-1".into());
    check_filter::<H>(MutateOp::Discard, f.clone(), &["alpha-blue"], "jids").await;
    check_filter::<H>(MutateOp::Kill, f.clone(), &["alpha-blue"], "jids").await;
    check_filter::<H>(MutateOp::Requeue, f, &["alpha-blue"], "jids").await;
}

/// A `jobtype` filter (without jids or regexp) selects that jobtype.
pub async fn mutate_filter_by_jobtype<H: Harness>() {
    let f = MutateFilter {
        jids: Vec::new(),
        regexp: None,
        jobtype: Some("Alpha".into()),
    };
    check_filter::<H>(
        MutateOp::Discard,
        f.clone(),
        &["alpha-red", "alpha-blue"],
        "jobtype",
    )
    .await;
    check_filter::<H>(
        MutateOp::Kill,
        f.clone(),
        &["alpha-red", "alpha-blue"],
        "jobtype",
    )
    .await;
    check_filter::<H>(
        MutateOp::Requeue,
        f,
        &["alpha-red", "alpha-blue"],
        "jobtype",
    )
    .await;
}

/// `regexp` is a glob (`*`, `?`, `[...]`) over the stored JSON; with `jobtype` both must match.
pub async fn mutate_filter_by_glob<H: Harness>() {
    let glob = |g: &str, jt: Option<&str>| MutateFilter {
        jids: Vec::new(),
        regexp: Some(g.to_string()),
        jobtype: jt.map(str::to_string),
    };
    let cases: [(MutateFilter, &[&str]); 6] = [
        (
            glob("*\"jobtype\":\"Alpha\"*", None),
            &["alpha-red", "alpha-blue"],
        ),
        (
            glob("*\"color\":\"red\"*", None),
            &["alpha-red", "beta-red"],
        ),
        (glob("*\"color\":\"red\"*", Some("Alpha")), &["alpha-red"]),
        (glob("*\"jobtype\":\"Bet?\"*", None), &["beta-red"]),
        (
            glob("*\"jobtype\":\"[AX]lpha\"*", None),
            &["alpha-red", "alpha-blue"],
        ),
        (glob("*\"color\":\"green\"*", None), &[]),
    ];
    for (f, kinds) in cases {
        let what = format!("glob {:?} jobtype {:?}", f.regexp, f.jobtype);
        check_filter::<H>(MutateOp::Discard, f, kinds, &what).await;
    }
    let f = glob("*\"color\":\"blue\"*", None);
    check_filter::<H>(MutateOp::Requeue, f.clone(), &["alpha-blue"], "glob blue").await;
    check_filter::<H>(MutateOp::Kill, f, &["alpha-blue"], "glob blue").await;
}

/// `regexp` is a Redis `SCAN MATCH` glob (Faktory hands it to Redis), matched against the job's
/// JSON as stored and served: `\` escapes the next character (the `faktory` crate's
/// `Filter::from_pattern(r#"*\"args\":\[\"x\"\]*"#)`), `[...]` is a class with ranges (also
/// backwards) and `^`, and an unescaped `[` always starts a class.
pub async fn mutate_filter_is_a_redis_glob<H: Harness>() {
    let cases: [(&str, &[&str]); 7] = [
        (r#"*\"args\":\[\"x\"\]*"#, &["glob-args-x"]),
        // Unescaped, `["x"]` is a class of one byte: nothing has `"args":"` or `"args":x`.
        (r#"*"args":["x"]*"#, &[]),
        (
            r#"*\"args\":\[\"[x-y]\"\]*"#,
            &["glob-args-x", "glob-args-y"],
        ),
        (
            r#"*\"args\":\[\"[y-x]\"\]*"#,
            &["glob-args-x", "glob-args-y"],
        ),
        (r#"*\"args\":\[\"[^x]\"\]*"#, &["glob-args-y"]),
        (r#"*\"args\":\[\"x\",*"#, &["glob-args-xy"]),
        (r#"*\[\"?\"\]*"#, &["glob-args-x", "glob-args-y"]),
    ];
    for (pattern, want) in cases {
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let mut t = T0;
        for (kind, args) in [("x", r#"["x"]"#), ("y", r#"["y"]"#), ("xy", r#"["x","y"]"#)] {
            put(s, &spec(&format!("glob-args-{kind}")).args(args), Retry, t).await;
            t += SEC;
        }
        let filter = MutateFilter {
            jids: Vec::new(),
            regexp: Some(pattern.to_string()),
            jobtype: None,
        };
        let n = mutate(s, MutateOp::Requeue, Retry, Some(filter), t).await;
        assert_eq!(n, want.len() as u64, "requeue count for {pattern}");
        for kind in ["x", "y", "xy"] {
            let jid = format!("glob-args-{kind}");
            let expect = if want.contains(&jid.as_str()) {
                Enqueued
            } else {
                Retry
            };
            assert_eq!(state_of(s, &jid).await, Some(expect), "{pattern}: {jid}");
        }
        c.finish(t).await;
    }
}

/// MUTATE acts only on its target set, even when its jids name jobs in other states.
pub async fn mutate_never_touches_other_states<H: Harness>() {
    let everyone: Vec<String> = JobState::ALL.iter().flat_map(|s| fx_jids(*s)).collect();
    for target in [Scheduled, Retry, Dead] {
        for op in [MutateOp::Discard, MutateOp::Kill, MutateOp::Requeue] {
            if op == MutateOp::Kill && target == Dead {
                continue;
            }
            let f = MutateFilter {
                jids: everyone.clone(),
                ..MutateFilter::default()
            };
            let kinds: Vec<&str> = KINDS.iter().map(|(k, _, _)| *k).collect();
            check_filter::<H>(op, f, &kinds, "naming jobs of every state").await;
        }
    }
}
