//! PgStore's sweeps, MUTATE, QUEUE commands, FLUSH and reads (src/ops.rs) against a real
//! PostgreSQL (werk-testpg): one cluster for this test binary, a fresh database per test.
//! Assertions mirror the conformance suite's cases for the same methods
//! (crates/werk-store/src/conformance/{expiry,sets,mutate,queues,stats,paging,durability}.rs),
//! plus chunked MUTATE over more rows than one chunk and two stores sweeping at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use werk_core::time::local_day;
use werk_core::{FailInfo, FailOutcome, Job, JobState, Millis};
use werk_store::{
    AckOutcome, Cursor, DayStats, EnqueueListener, FailReply, JobFilter, MutateFilter, MutateOp,
    Mutation, NewJob, PageQuery, QueueSelector, QueueStats, StoreConfig, StoreError, StoredJob,
};
use werk_store_postgres::PgStore;
use werk_testpg::PgCluster;

mod lanes_util;
use lanes_util::wait_for_lock_waiters;

use JobState::{Dead, Enqueued, Retry, Scheduled, Working};

const T0: Millis = 1_700_000_000_000;
const SEC: Millis = 1000;
const MIN: Millis = 60 * SEC;
const HOUR: Millis = 60 * MIN;
const DAY: Millis = 24 * HOUR;
const RETENTION: Millis = 180 * DAY;

/// A fresh database on the test process's shared cluster.
async fn fresh_db() -> String {
    tokio::task::spawn_blocking(|| PgCluster::fresh_database().expect("fresh database"))
        .await
        .expect("create database task")
}

#[derive(Default)]
struct Rec(Mutex<Vec<String>>);
impl EnqueueListener for Rec {
    fn enqueued(&self, queue: &str) {
        self.0.lock().unwrap().push(queue.to_string());
    }
}
impl Rec {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

async fn open_with(url: &str, config: StoreConfig) -> (PgStore, Arc<Rec>) {
    let rec = Arc::new(Rec::default());
    let store = PgStore::connect(url, config, rec.clone())
        .await
        .expect("connect");
    (store, rec)
}

async fn fresh() -> (PgStore, Arc<Rec>) {
    open_with(&fresh_db().await, StoreConfig::default()).await
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A job description: jid, queue, jobtype and extra JSON fields (`,"k":v...`).
struct Spec {
    jid: String,
    queue: String,
    jobtype: String,
    extra: String,
}

fn spec(jid: &str) -> Spec {
    Spec {
        jid: jid.into(),
        queue: "default".into(),
        jobtype: "T".into(),
        extra: String::new(),
    }
}

impl Spec {
    fn queue(mut self, q: &str) -> Spec {
        self.queue = q.into();
        self
    }
    fn jobtype(mut self, t: &str) -> Spec {
        self.jobtype = t.into();
        self
    }
    fn with(mut self, fields: &str) -> Spec {
        self.extra.push(',');
        self.extra.push_str(fields);
        self
    }
    fn new_job(&self, now: Millis) -> NewJob {
        let args = if self.extra.contains("\"args\"") {
            ""
        } else {
            r#","args":[1]"#
        };
        let json = format!(
            r#"{{"jid":"{}","jobtype":"{}","queue":"{}"{args}{}}}"#,
            self.jid, self.jobtype, self.queue, self.extra
        );
        let (job, at) = Job::parse_for_push(&json, now).expect("valid job");
        NewJob { job, at }
    }
}

async fn push(s: &PgStore, specs: &[Spec], now: Millis) {
    let jobs = specs.iter().map(|sp| sp.new_job(now)).collect();
    let res = s.push(jobs, now).await.expect("push");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
}

async fn fetch_jid(s: &PgStore, queues: &[&str], now: Millis) -> Option<String> {
    s.fetch(strings(queues), "w1".into(), now)
        .await
        .expect("fetch")
        .map(|j| j.jid)
}

async fn state_of(s: &PgStore, jid: &str) -> Option<JobState> {
    s.get(jid.into()).await.expect("get").map(|j| j.state)
}

async fn must_get(s: &PgStore, jid: &str) -> StoredJob {
    s.get(jid.into()).await.expect("get").expect("job exists")
}

/// Puts a job into `state` at `now` the way clients do (a scheduled job one hour ahead, a dead
/// one through a failure with `retry: -1` or a kill).
async fn put(s: &PgStore, sp: Spec, state: JobState, now: Millis) -> StoredJob {
    let sp = match state {
        Scheduled if !sp.extra.contains("\"at\"") => {
            let at = werk_core::time::format_millis(now + HOUR);
            sp.with(&format!(r#""at":"{at}""#))
        }
        _ => sp,
    };
    push(s, std::slice::from_ref(&sp), now).await;
    if matches!(state, Working | Retry | Dead) {
        assert_eq!(
            fetch_jid(s, &[&sp.queue], now).await.as_deref(),
            Some(sp.jid.as_str())
        );
        if state != Working {
            let info = FailInfo::new("E", "boom", Vec::new());
            match s.fail(sp.jid.clone(), info, now).await.expect("fail") {
                FailReply::Failed(FailOutcome::Retry { .. }) if state == Dead => {
                    let n = mutate(s, MutateOp::Kill, Retry, by_jids(&[&sp.jid]), now).await;
                    assert_eq!(n, 1);
                }
                FailReply::Failed(FailOutcome::Retry { .. }) => {}
                FailReply::Failed(FailOutcome::Dead) if state == Dead => {}
                other => panic!("FAIL of {} gave {other:?}", sp.jid),
            }
        }
    }
    let got = must_get(s, &sp.jid).await;
    assert_eq!(got.state, state, "{} put in {state}", sp.jid);
    got
}

async fn mutate(
    s: &PgStore,
    op: MutateOp,
    target: JobState,
    filter: Option<MutateFilter>,
    now: Millis,
) -> u64 {
    s.mutate(Mutation { op, target, filter }, now)
        .await
        .expect("mutate")
}

fn by_jids(jids: &[&str]) -> Option<MutateFilter> {
    Some(MutateFilter {
        jids: strings(jids),
        ..MutateFilter::default()
    })
}

async fn list(s: &PgStore, state: JobState, queue: Option<&str>) -> Vec<StoredJob> {
    s.list(state, queue.map(str::to_string), 0, 100_000)
        .await
        .expect("list")
}

async fn jids(s: &PgStore, state: JobState, queue: Option<&str>) -> Vec<String> {
    list(s, state, queue)
        .await
        .into_iter()
        .map(|j| j.jid)
        .collect()
}

fn payload(j: &StoredJob) -> Job {
    Job::from_stored(&j.payload).expect("stored JSON parses")
}

// ---- the MUTATE fixture (conformance/mutate.rs) -------------------------------------------

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

fn fx_jid(state: JobState, kind: &str) -> String {
    format!("{}-{kind}", fx_prefix(state))
}

fn fx_queue(state: JobState) -> String {
    format!("q-{}", fx_prefix(state))
}

fn fx_jids(state: JobState) -> Vec<String> {
    KINDS.iter().map(|(k, _, _)| fx_jid(state, k)).collect()
}

/// Three jobs in every state, each state's in queue `q-<state>`, 1.001 s apart. Returns the
/// time after the last.
async fn populate(s: &PgStore, now: Millis) -> Millis {
    let mut t = now;
    for state in [Scheduled, Working, Retry, Dead, Enqueued] {
        for (kind, jobtype, color) in KINDS {
            let mut sp = spec(&fx_jid(state, kind))
                .queue(&fx_queue(state))
                .jobtype(jobtype)
                .with(&format!(r#""custom":{{"color":"{color}"}}"#));
            if state == Dead {
                sp = sp.with(r#""retry":-1"#);
            }
            put(s, sp, state, t).await;
            t += SEC + 1;
        }
    }
    t
}

async fn all_lists(s: &PgStore) -> BTreeMap<JobState, Vec<StoredJob>> {
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

fn assert_others_untouched(
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
                "{what} must not touch {state}"
            );
        }
    }
}

// ---- sweeps -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_removes_only_expired_enqueued_jobs() {
    let (s, _) = fresh().await;
    let mut specs = Vec::new();
    for i in 0..5 {
        specs.push(
            spec(&format!("sweep-exp-{i:02}"))
                .queue("qa")
                .with(r#""custom":{"expires_in":5}"#),
        );
    }
    specs.push(
        spec("sweep-live-01")
            .queue("qa")
            .with(r#""custom":{"expires_in":3600}"#),
    );
    specs.push(spec("sweep-plain-1").queue("qb"));
    let at = werk_core::time::format_millis(T0 + HOUR);
    specs.push(
        spec("sweep-sched-1")
            .queue("qb")
            .with(&format!(r#""at":"{at}","custom":{{"expires_in":5}}"#)),
    );
    push(&s, &specs, T0).await;
    assert_eq!(s.sweep_expired(T0 + 4 * SEC, 100).await.unwrap(), 0);
    assert_eq!(s.sweep_expired(T0 + 6 * SEC, 3).await.unwrap(), 3);
    assert_eq!(s.sweep_expired(T0 + 6 * SEC, 100).await.unwrap(), 2);
    assert_eq!(s.sweep_expired(T0 + 7 * SEC, 100).await.unwrap(), 0);
    assert_eq!(jids(&s, Enqueued, Some("qa")).await, vec!["sweep-live-01"]);
    assert_eq!(jids(&s, Enqueued, Some("qb")).await, vec!["sweep-plain-1"]);
    assert_eq!(state_of(&s, "sweep-sched-1").await, Some(Scheduled));
    let st = s.stats().await.unwrap();
    assert_eq!(st.expired, 5);
    let sizes: Vec<(String, u64)> = st.queues.iter().map(|q| (q.name.clone(), q.size)).collect();
    assert_eq!(sizes, vec![("qa".to_string(), 1), ("qb".to_string(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_drops_expired_unique_locks_and_tracking_of_swept_jobs() {
    let (s, _) = fresh().await;
    push(
        &s,
        &[
            spec("uniq-job-0001").with(r#""custom":{"unique_for":10}"#),
            spec("track-exp-001").with(r#""custom":{"track":1,"expires_in":5}"#),
        ],
        T0,
    )
    .await;
    let client = s.pool().get().await.unwrap();
    client
        .execute(
            "INSERT INTO tracking (jid, percent, updated_at) VALUES ('track-exp-001', 5, $1)
             ON CONFLICT (jid) DO NOTHING",
            &[&T0],
        )
        .await
        .unwrap();
    let locks = || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM unique_locks", &[])
            .await
            .unwrap()
            .get(0);
        n
    };
    assert_eq!(locks().await, 1);
    assert_eq!(s.sweep_expired(T0 + 9 * SEC, 100).await.unwrap(), 1);
    assert_eq!(locks().await, 1, "an unexpired lock stays");
    let tracked: i64 = client
        .query_one("SELECT count(*) FROM tracking", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tracked, 0, "an expired job's tracking data is forgotten");
    assert_eq!(s.sweep_expired(T0 + 10 * SEC, 100).await.unwrap(), 0);
    assert_eq!(locks().await, 0, "an expired lock is dropped");
    assert_eq!(state_of(&s, "uniq-job-0001").await, Some(Enqueued));
}

/// An expired batch member swept counts as a failed run (the batch's complete callback is
/// enqueued once it is committed and nothing is pending, and the listener told); an
/// uncommitted batch past its deadline is dropped by the same pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_counts_an_expired_batch_member_as_failed() {
    let (s, rec) = fresh().await;
    let callback = spec("cb-complete-01").queue("callbacks").new_job(T0).job;
    let batch = |bid: &str| werk_store::NewBatch {
        bid: bid.into(),
        parent_bid: None,
        description: None,
        complete: Some(callback.clone()),
        success: None,
    };
    assert_eq!(
        s.batch_new(batch("bid-sweep-01"), T0).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        s.batch_new(batch("bid-never-01"), T0).await.unwrap(),
        Ok(())
    );
    push(
        &s,
        &[spec("sweep-member-1").with(r#""custom":{"bid":"bid-sweep-01","expires_in":5}"#)],
        T0,
    )
    .await;
    assert_eq!(
        s.batch_commit("bid-sweep-01".into(), T0).await.unwrap(),
        Ok(())
    );
    rec.take();
    assert_eq!(s.sweep_expired(T0 + 6 * SEC, 100).await.unwrap(), 1);
    let st = s
        .batch_status("bid-sweep-01".into(), T0 + 6 * SEC)
        .await
        .unwrap()
        .expect("batch");
    assert_eq!((st.total, st.pending, st.failed), (1, 0, 1));
    assert_eq!(st.complete_st, werk_store::CallbackState::Enqueued);
    assert_eq!(
        rec.take(),
        vec!["callbacks"],
        "the callback's queue is announced"
    );
    let later = T0 + werk_store::BATCH_COMMIT_DEADLINE + SEC;
    s.sweep_expired(later, 100).await.unwrap();
    assert_eq!(
        s.batch_status("bid-never-01".into(), later).await.unwrap(),
        None
    );
    assert!(s
        .batch_status("bid-sweep-01".into(), later)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_dead_removes_only_expired_dead_jobs() {
    let retention = 10 * MIN;
    let url = fresh_db().await;
    let (s, _) = open_with(
        &url,
        StoreConfig {
            dead_retention: retention,
            ..StoreConfig::default()
        },
    )
    .await;
    let dead = |jid: &str| spec(jid).with(r#""retry":-1"#);
    let d1 = put(&s, dead("purge-d1-0001"), Dead, T0).await;
    assert_eq!(d1.at, T0 + retention);
    put(&s, dead("purge-d2-0001"), Dead, T0 + 5 * MIN).await;
    let before = s.stats().await.unwrap();
    assert_eq!(s.purge_dead(T0 + retention - 1, 100).await.unwrap(), 0);
    assert_eq!(s.purge_dead(T0 + retention, 100).await.unwrap(), 1);
    assert_eq!(state_of(&s, "purge-d1-0001").await, None);
    assert_eq!(state_of(&s, "purge-d2-0001").await, Some(Dead));
    assert_eq!(s.purge_dead(T0 + 14 * MIN, 100).await.unwrap(), 0);
    assert_eq!(s.purge_dead(T0 + 15 * MIN, 100).await.unwrap(), 1);
    assert_eq!(s.stats().await.unwrap().dead, 0);
    let t = T0 + 20 * MIN;
    for i in 0..3 {
        put(&s, dead(&format!("purge-lim-{i:04}")), Dead, t + i).await;
    }
    assert_eq!(s.purge_dead(t + HOUR, 2).await.unwrap(), 2);
    assert_eq!(jids(&s, Dead, None).await, vec!["purge-lim-0002"]);
    assert_eq!(s.purge_dead(t + HOUR, 2).await.unwrap(), 1);
    let after = s.stats().await.unwrap();
    assert_eq!(
        (after.processed, after.failures),
        (before.processed + 3, before.failures + 3),
        "purging counts nothing (3 FAILs did)"
    );
}

/// Two stores (nodes) sweeping and purging one database at once: every job is removed exactly
/// once and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_sweeping_at_once_remove_each_job_once() {
    let url = fresh_db().await;
    let config = StoreConfig {
        dead_retention: MIN,
        ..StoreConfig::default()
    };
    let (a, _) = open_with(&url, config.clone()).await;
    let (b, _) = open_with(&url, config).await;
    let specs: Vec<Spec> = (0..200)
        .map(|i| spec(&format!("race-exp-{i:04}")).with(r#""custom":{"expires_in":1}"#))
        .collect();
    push(&a, &specs, T0).await;
    for i in 0..40 {
        let sp = spec(&format!("race-dead-{i:04}")).queue("dq");
        put(&a, sp.with(r#""retry":-1"#), Dead, T0).await;
    }
    let later = T0 + HOUR;
    let ((sa, pa), (sb, pb)) = tokio::join!(sweep_all(&a, later), sweep_all(&b, later));
    assert_eq!((sa + sb, pa + pb), (200, 40));
    let st = a.stats().await.unwrap();
    assert_eq!((st.expired, st.dead, st.enqueued()), (200, 0, 0));
}

/// Sweeps and purges in small steps until nothing is left; returns (swept, purged).
async fn sweep_all(s: &PgStore, now: Millis) -> (usize, usize) {
    let (mut swept, mut purged) = (0, 0);
    loop {
        let x = s.sweep_expired(now, 7).await.unwrap();
        let y = s.purge_dead(now, 3).await.unwrap();
        swept += x;
        purged += y;
        if x == 0 && y == 0 {
            return (swept, purged);
        }
    }
}

// ---- MUTATE -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_clear_and_unfiltered_discard_empty_target_only() {
    for target in [Scheduled, Retry, Dead] {
        for (op, filter) in [
            (
                MutateOp::Clear,
                Some(MutateFilter {
                    jids: strings(&["matches-nothing"]),
                    regexp: None,
                    jobtype: Some("Nothing".into()),
                }),
            ),
            (MutateOp::Discard, None),
            (MutateOp::Discard, Some(MutateFilter::default())),
        ] {
            let (s, _) = fresh().await;
            let t = populate(&s, T0).await;
            let before = all_lists(&s).await;
            let what = format!("{op:?} {target} {filter:?}");
            assert_eq!(mutate(&s, op, target, filter, t).await, 3, "{what}");
            let after = all_lists(&s).await;
            assert!(after[&target].is_empty(), "{what} empties it");
            assert_others_untouched(&before, &after, target, None, &what);
            for jid in fx_jids(target) {
                assert_eq!(state_of(&s, &jid).await, None, "{what}: {jid}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_kill_moves_jobs_to_dead() {
    for target in [Scheduled, Retry] {
        let (s, _) = fresh().await;
        let t = populate(&s, T0).await + MIN;
        let before = all_lists(&s).await;
        let what = format!("kill {target}");
        assert_eq!(mutate(&s, MutateOp::Kill, target, None, t).await, 3);
        let after = all_lists(&s).await;
        assert!(after[&target].is_empty(), "{what} empties it");
        assert_others_untouched(&before, &after, target, Some(Dead), &what);
        let dead = &after[&Dead];
        assert_eq!(&dead[..3], &before[&Dead][..], "{what}: earlier dead first");
        assert_eq!(sorted_jids(&dead[3..]), sorted_jids(&before[&target]));
        for old in &before[&target] {
            let got = must_get(&s, &old.jid).await;
            assert_eq!((got.state, got.at), (Dead, t + RETENTION), "{what}");
            assert_eq!(payload(&got).failure, payload(old).failure, "keeps failure");
        }
        assert_eq!(
            mutate(&s, MutateOp::Kill, Dead, None, t).await,
            0,
            "kill of the dead set does nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_requeue_moves_jobs_to_their_queue() {
    for target in [Scheduled, Retry, Dead] {
        let (s, rec) = fresh().await;
        let t = populate(&s, T0).await + MIN;
        let queue = fx_queue(target);
        push(&s, &[spec("requeue-early").queue(&queue)], t).await;
        rec.take();
        let before = all_lists(&s).await;
        let what = format!("requeue {target}");
        let t2 = t + SEC;
        assert_eq!(mutate(&s, MutateOp::Requeue, target, None, t2).await, 3);
        let after = all_lists(&s).await;
        assert!(after[&target].is_empty(), "{what} empties it");
        assert_others_untouched(&before, &after, target, Some(Enqueued), &what);
        let in_queue = list(&s, Enqueued, Some(&queue)).await;
        assert_eq!(in_queue[0].jid, "requeue-early", "{what}: to the back");
        let moved: Vec<String> = in_queue[1..].iter().map(|j| j.jid.clone()).collect();
        let in_order: Vec<String> = before[&target].iter().map(|j| j.jid.clone()).collect();
        assert_eq!(moved, in_order, "{what}: in the set's order");
        for old in &before[&target] {
            let got = must_get(&s, &old.jid).await;
            assert_eq!((got.state, got.at), (Enqueued, t2), "{what}");
            assert_eq!(payload(&got).failure, payload(old).failure, "keeps failure");
            assert_eq!(
                werk_core::time::parse_rfc3339(&payload(&got).enqueued_at),
                Ok(t2),
                "fresh enqueued_at"
            );
        }
        assert!(rec.take().contains(&queue), "{what}: listener told");
        for _ in 0..4 {
            assert!(fetch_jid(&s, &[&queue], t2).await.is_some());
        }
    }
}

/// One filter applied to each target with `op`: the count, the jobs affected, nothing else.
async fn check_filter(op: MutateOp, filter: MutateFilter, kinds: &[&str], what: &str) {
    for target in [Scheduled, Retry, Dead] {
        if op == MutateOp::Kill && target == Dead {
            continue;
        }
        let (s, _) = fresh().await;
        let t = populate(&s, T0).await;
        let before = all_lists(&s).await;
        let what = format!("{op:?} {target} {what}");
        let n = mutate(&s, op, target, Some(filter.clone()), t).await;
        let hit: Vec<String> = kinds.iter().map(|k| fx_jid(target, k)).collect();
        let after = all_lists(&s).await;
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
        assert_eq!(left, want_left, "{what}: jobs left");
        assert_eq!(n, hit.len() as u64, "{what}: affected count");
        for jid in &hit {
            assert_eq!(state_of(&s, jid).await, dest, "{what}: {jid}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_filter_jids_take_priority_and_never_touch_other_states() {
    let mut f = MutateFilter {
        jids: Vec::new(),
        regexp: Some(r#"*"color":"red"*"#.into()),
        jobtype: Some("Beta".into()),
    };
    for target in [Scheduled, Retry, Dead] {
        f.jids.push(fx_jid(target, "alpha-blue"));
    }
    f.jids.push("no-such-jid-1".into());
    for op in [MutateOp::Discard, MutateOp::Kill, MutateOp::Requeue] {
        check_filter(op, f.clone(), &["alpha-blue"], "jids").await;
    }
    let everyone: Vec<String> = JobState::ALL.iter().flat_map(|s| fx_jids(*s)).collect();
    let f = MutateFilter {
        jids: everyone,
        ..MutateFilter::default()
    };
    let kinds: Vec<&str> = KINDS.iter().map(|(k, _, _)| *k).collect();
    check_filter(MutateOp::Discard, f, &kinds, "naming jobs of every state").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_filter_by_jobtype_and_glob() {
    let glob = |g: &str, jt: Option<&str>| MutateFilter {
        jids: Vec::new(),
        regexp: Some(g.to_string()),
        jobtype: jt.map(str::to_string),
    };
    let jobtype = MutateFilter {
        jobtype: Some("Alpha".into()),
        ..MutateFilter::default()
    };
    check_filter(
        MutateOp::Kill,
        jobtype,
        &["alpha-red", "alpha-blue"],
        "jobtype",
    )
    .await;
    let cases: [(MutateFilter, &[&str]); 5] = [
        (glob(r#"*"color":"red"*"#, None), &["alpha-red", "beta-red"]),
        (glob(r#"*"color":"red"*"#, Some("Alpha")), &["alpha-red"]),
        (glob(r#"*"jobtype":"Bet?"*"#, None), &["beta-red"]),
        (
            glob(r#"*"jobtype":"[AX]lpha"*"#, None),
            &["alpha-red", "alpha-blue"],
        ),
        (glob(r#"*"color":"green"*"#, None), &[]),
    ];
    for (f, kinds) in cases {
        let what = format!("glob {:?} jobtype {:?}", f.regexp, f.jobtype);
        check_filter(MutateOp::Discard, f, kinds, &what).await;
    }
    let f = glob(r#"*"color":"blue"*"#, None);
    check_filter(MutateOp::Requeue, f.clone(), &["alpha-blue"], "glob blue").await;
    check_filter(MutateOp::Kill, f, &["alpha-blue"], "glob blue").await;
}

/// The glob is Redis's (`\` escapes, classes with ranges and `^`), over the stored JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_filter_is_a_redis_glob() {
    let cases: [(&str, &[&str]); 5] = [
        (r#"*\"args\":\[\"x\"\]*"#, &["glob-args-x"]),
        (r#"*"args":["x"]*"#, &[]),
        (
            r#"*\"args\":\[\"[y-x]\"\]*"#,
            &["glob-args-x", "glob-args-y"],
        ),
        (r#"*\"args\":\[\"[^x]\"\]*"#, &["glob-args-y"]),
        (r#"*\[\"?\"\]*"#, &["glob-args-x", "glob-args-y"]),
    ];
    for (pattern, want) in cases {
        let (s, _) = fresh().await;
        let mut t = T0;
        for (kind, args) in [("x", r#"["x"]"#), ("y", r#"["y"]"#), ("xy", r#"["x","y"]"#)] {
            let sp = spec(&format!("glob-args-{kind}")).with(&format!(r#""args":{args}"#));
            put(&s, sp, Retry, t).await;
            t += SEC;
        }
        let filter = MutateFilter {
            regexp: Some(pattern.to_string()),
            ..MutateFilter::default()
        };
        let n = mutate(&s, MutateOp::Requeue, Retry, Some(filter), t).await;
        assert_eq!(n, want.len() as u64, "{pattern}");
        for kind in ["x", "y", "xy"] {
            let jid = format!("glob-args-{kind}");
            let expect = if want.contains(&jid.as_str()) {
                Enqueued
            } else {
                Retry
            };
            assert_eq!(state_of(&s, &jid).await, Some(expect), "{pattern}: {jid}");
        }
    }
}

/// A glob MUTATE over more rows than one chunk (500) sees every row once, and a requeue keeps
/// the set's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_glob_over_many_chunks() {
    let (s, _) = fresh().await;
    let n = 1203;
    let specs: Vec<Spec> = (0..n)
        .map(|i| {
            let at = werk_core::time::format_millis(T0 + HOUR + (i % 7) * SEC);
            spec(&format!("many-{i:05}")).queue("many").with(&format!(
                r#""at":"{at}","custom":{{"even":{}}}"#,
                i % 2 == 0
            ))
        })
        .collect();
    push(&s, &specs, T0).await;
    let order = jids(&s, Scheduled, None).await;
    let even = MutateFilter {
        regexp: Some(r#"*"even":true*"#.into()),
        ..MutateFilter::default()
    };
    let got = mutate(&s, MutateOp::Requeue, Scheduled, Some(even), T0 + SEC).await;
    assert_eq!(got, 602);
    let want: Vec<String> = order
        .iter()
        .filter(|j| j[5..].parse::<i64>().unwrap() % 2 == 0)
        .cloned()
        .collect();
    assert_eq!(
        jids(&s, Enqueued, Some("many")).await,
        want,
        "in the set's order"
    );
    let odd = MutateFilter {
        regexp: Some(r#"*"even":false*"#.into()),
        ..MutateFilter::default()
    };
    assert_eq!(
        mutate(&s, MutateOp::Kill, Scheduled, Some(odd.clone()), T0).await,
        601
    );
    assert_eq!(
        mutate(&s, MutateOp::Discard, Dead, Some(odd), T0).await,
        601
    );
    let st = s.stats().await.unwrap();
    assert_eq!((st.scheduled, st.dead, st.enqueued()), (0, 0, 602));
}

// ---- queues -------------------------------------------------------------------------------

fn qs(name: &str, size: u64, paused: bool) -> QueueStats {
    QueueStats {
        name: name.into(),
        size,
        paused,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_are_persisted_and_skip_unknown_queues() {
    let url = fresh_db().await;
    let (s, rec) = open_with(&url, StoreConfig::default()).await;
    push(
        &s,
        &[
            spec("pause-a-0001").queue("a"),
            spec("pause-b-0001").queue("b"),
        ],
        T0,
    )
    .await;
    s.set_paused(QueueSelector::Names(strings(&["a", "nope"])), true)
        .await
        .unwrap();
    assert_eq!(fetch_jid(&s, &["a"], T0).await, None, "a is paused");
    let (s2, _) = open_with(&url, StoreConfig::default()).await;
    assert_eq!(
        s2.stats().await.unwrap().queues,
        vec![qs("a", 1, true), qs("b", 1, false)],
        "persisted, unknown queue not created"
    );
    s.set_paused(QueueSelector::All, true).await.unwrap();
    assert_eq!(fetch_jid(&s, &["a", "b"], T0).await, None);
    rec.take();
    s.set_paused(QueueSelector::All, false).await.unwrap();
    let mut told = rec.take();
    told.sort();
    assert_eq!(told, strings(&["a", "b"]), "resumed queues announced");
    assert_eq!(
        fetch_jid(&s, &["a"], T0).await.as_deref(),
        Some("pause-a-0001")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_queues_deletes_enqueued_jobs_and_forgets_queue() {
    let (s, _) = fresh().await;
    put(&s, spec("rmq-a-work-01").queue("a"), Working, T0).await;
    put(&s, spec("rmq-a-retry-1").queue("a"), Retry, T0).await;
    put(&s, spec("rmq-a-sched-1").queue("a"), Scheduled, T0).await;
    push(
        &s,
        &[
            spec("rmq-a-000001").queue("a"),
            spec("rmq-b-000001").queue("b"),
        ],
        T0,
    )
    .await;
    push(&s, &[spec("rmq-a-000002").queue("a")], T0).await;
    s.set_paused(QueueSelector::Names(strings(&["a"])), true)
        .await
        .unwrap();
    let n = s
        .remove_queues(QueueSelector::Names(strings(&["a", "unknown"])))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(s.stats().await.unwrap().queues, vec![qs("b", 1, false)]);
    assert_eq!(state_of(&s, "rmq-a-000001").await, None);
    assert_eq!(state_of(&s, "rmq-a-000002").await, None);
    assert_eq!(state_of(&s, "rmq-a-work-01").await, Some(Working));
    assert_eq!(state_of(&s, "rmq-a-retry-1").await, Some(Retry));
    assert_eq!(state_of(&s, "rmq-a-sched-1").await, Some(Scheduled));
    assert_eq!(state_of(&s, "rmq-b-000001").await, Some(Enqueued));
    assert_eq!(
        s.ack("rmq-a-work-01".into(), T0).await.unwrap(),
        AckOutcome::Acked
    );
    push(&s, &[spec("rmq-a-000003").queue("a")], T0 + SEC).await;
    assert_eq!(s.stats().await.unwrap().queues[0], qs("a", 1, false));
    assert_eq!(
        fetch_jid(&s, &["a"], T0 + SEC).await.as_deref(),
        Some("rmq-a-000003")
    );
    // QUEUE REMOVE *.
    push(&s, &[spec("rmq-c-000001").queue("c")], T0 + SEC).await;
    assert_eq!(s.remove_queues(QueueSelector::All).await.unwrap(), 2);
    let st = s.stats().await.unwrap();
    assert!(st.queues.is_empty(), "{:?}", st.queues);
    assert!(jids(&s, Enqueued, None).await.is_empty());
    assert_eq!((st.scheduled, st.retries), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_latency_measures_oldest_job() {
    let (s, _) = fresh().await;
    let lat = |q: &[&str], now| s.queue_latency(strings(q), now);
    assert_eq!(lat(&["a", "nope"], T0).await.unwrap(), vec![0.0, 0.0]);
    put(&s, spec("lat-c-000001").queue("c"), Working, T0).await;
    push(&s, &[spec("lat-a-000001").queue("a")], T0).await;
    push(&s, &[spec("lat-b-000001").queue("b")], T0 + 500).await;
    push(&s, &[spec("lat-a-000002").queue("a")], T0 + 1000).await;
    let got = lat(&["a", "b", "c", "nope"], T0 + 8140).await.unwrap();
    let want = [8.14, 7.64, 0.0, 0.0];
    assert_eq!(got.len(), 4);
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 0.01, "{got:?}");
    }
    assert_eq!(
        fetch_jid(&s, &["a"], T0 + 9000).await.as_deref(),
        Some("lat-a-000001")
    );
    assert_eq!(lat(&["a"], T0 + 10_000).await.unwrap(), vec![9.0]);
    s.set_paused(QueueSelector::Names(strings(&["b"])), true)
        .await
        .unwrap();
    assert_eq!(
        lat(&["b"], T0 + 10_500).await.unwrap(),
        vec![10.0],
        "paused"
    );
}

// ---- FLUSH, history -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_wipes_everything_but_cron_fires() {
    let (s, _) = fresh().await;
    let t = populate(&s, T0).await;
    assert_eq!(
        s.ack(fx_jid(Working, "alpha-red"), t).await.unwrap(),
        AckOutcome::Acked
    );
    s.set_paused(QueueSelector::Names(strings(&["q-enq"])), true)
        .await
        .unwrap();
    let client = s.pool().get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO cron_fires VALUES ('nightly', 1, 'j', 1);
             INSERT INTO tracking (jid, updated_at) VALUES ('x', 1);
             INSERT INTO unique_locks VALUES ('k', 'j', 9999999999999);",
        )
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.stats().await.unwrap(), werk_store::Stats::default());
    for state in JobState::ALL {
        assert!(
            list(&s, state, None).await.is_empty(),
            "{state} after FLUSH"
        );
    }
    let h = s.history(3, t).await.unwrap();
    assert!(
        h.iter().all(|d| d.processed == 0 && d.failures == 0),
        "{h:?}"
    );
    for (table, want) in [("cron_fires", 1i64), ("tracking", 0), ("unique_locks", 0)] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, want, "{table} after FLUSH");
    }
    push(
        &s,
        &[spec(&fx_jid(Enqueued, "alpha-red")).queue("q-enq")],
        t,
    )
    .await;
    assert_eq!(s.stats().await.unwrap().queues, vec![qs("q-enq", 1, false)]);
    assert!(fetch_jid(&s, &["q-enq"], t).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_has_one_entry_per_day_oldest_first() {
    let (s, _) = fresh().await;
    let d2 = T0 - 2 * DAY;
    put(&s, spec("hist-ack-0001"), Working, d2).await;
    assert_eq!(
        s.ack("hist-ack-0001".into(), d2).await.unwrap(),
        AckOutcome::Acked
    );
    put(&s, spec("hist-fail-001"), Retry, d2).await;
    put(&s, spec("hist-ack-0002").queue("other"), Working, T0).await;
    assert_eq!(
        s.ack("hist-ack-0002".into(), T0).await.unwrap(),
        AckOutcome::Acked
    );
    let day = |k: i64| local_day(T0 - k * DAY);
    let ds = |k: i64, processed: u64, failures: u64| DayStats {
        day: day(k),
        processed,
        failures,
    };
    assert_eq!(
        s.history(5, T0).await.unwrap(),
        vec![
            ds(4, 0, 0),
            ds(3, 0, 0),
            ds(2, 2, 1),
            ds(1, 0, 0),
            ds(0, 1, 0)
        ]
    );
    assert_eq!(s.history(1, T0).await.unwrap(), vec![ds(0, 1, 0)]);
    assert_eq!(
        s.history(2, T0 - DAY).await.unwrap(),
        vec![ds(2, 2, 1), ds(1, 0, 0)]
    );
    assert!(s.history(0, T0).await.unwrap().is_empty());
}

// ---- list, page, delete_jobs --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_in_state_order() {
    let (s, _) = fresh().await;
    for (i, m) in [50, 10, 30, 10, 20].into_iter().enumerate() {
        let at = werk_core::time::format_millis(T0 + m * MIN);
        let sp = spec(&format!("pg-sched-{i:04}")).with(&format!(r#""at":"{at}""#));
        push(&s, &[sp], T0 + i as Millis).await;
    }
    let want = [
        "pg-sched-0001",
        "pg-sched-0003",
        "pg-sched-0004",
        "pg-sched-0002",
        "pg-sched-0000",
    ];
    assert_eq!(jids(&s, Scheduled, None).await, want);
    for (off, lim) in [
        (0u64, 2u64),
        (2, 2),
        (4, 2),
        (5, 2),
        (1, 3),
        (3, 100),
        (9, 1),
    ] {
        let page: Vec<String> = s
            .list(Scheduled, None, off, lim)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.jid)
            .collect();
        let lo = (off as usize).min(want.len());
        let hi = ((off + lim) as usize).min(want.len());
        assert_eq!(page, want[lo..hi], "offset {off} limit {lim}");
    }
    for (i, rf) in [600, 60, 300].into_iter().enumerate() {
        let sp = spec(&format!("pg-work-{i:04}"))
            .queue("w")
            .with(&format!(r#""reserve_for":{rf}"#));
        put(&s, sp, Working, T0 + i as Millis).await;
    }
    assert_eq!(
        jids(&s, Working, None).await,
        ["pg-work-0001", "pg-work-0002", "pg-work-0000"]
    );
    push(
        &s,
        &[spec("pg-enq-x1").queue("x"), spec("pg-enq-y1").queue("y")],
        T0,
    )
    .await;
    push(&s, &[spec("pg-enq-x2").queue("x")], T0).await;
    assert_eq!(
        jids(&s, Enqueued, None).await,
        ["pg-enq-x1", "pg-enq-y1", "pg-enq-x2"]
    );
    assert_eq!(
        jids(&s, Enqueued, Some("x")).await,
        ["pg-enq-x1", "pg-enq-x2"]
    );
    let w = list(&s, Working, None).await;
    assert_eq!(
        w[0],
        must_get(&s, "pg-work-0001").await,
        "list agrees with get"
    );
}

async fn walk(s: &PgStore, state: JobState, filter: &JobFilter, limit: u64) -> Vec<String> {
    let mut after: Option<Cursor> = None;
    let mut out = Vec::new();
    loop {
        let p = s
            .page(PageQuery {
                state,
                filter: filter.clone(),
                after,
                limit,
            })
            .await
            .expect("page");
        assert!(p.jobs.len() as u64 <= limit);
        for (c, j) in &p.jobs {
            assert_eq!(j.state, state);
            assert_eq!(&must_get(s, &j.jid).await, j, "page agrees with get");
            if state != Enqueued {
                assert_eq!(c.score, j.at, "a set's cursor score is its at");
            }
            assert!(after.is_none_or(|a| *c > a), "cursors increase");
            after = Some(*c);
            out.push(j.jid.clone());
        }
        match p.next {
            None => return out,
            Some(next) => {
                assert_eq!(p.jobs.len() as u64, limit, "a short page is the last");
                after = Some(next.to_string().parse().expect("cursor parses"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_walks_each_state_in_order_and_filters() {
    let (s, _) = fresh().await;
    let t = populate(&s, T0).await;
    // Ties: three scheduled jobs at one time.
    let at = werk_core::time::format_millis(t + DAY);
    for i in 0..3 {
        let sp = spec(&format!("tie-job-{i}"))
            .queue("q-tie")
            .with(&format!(r#""at":"{at}","args":["Needle-{i}"]"#));
        push(&s, &[sp], t).await;
    }
    for state in JobState::ALL {
        let want = jids(&s, state, None).await;
        for limit in [1, 2, 3, 1000] {
            assert_eq!(
                walk(&s, state, &JobFilter::default(), limit).await,
                want,
                "{state}"
            );
        }
    }
    let f = |queue: Option<&str>, jobtype: Option<&str>, jid: Option<&str>, text: Option<&str>| {
        JobFilter {
            queue: queue.map(str::to_string),
            jobtype: jobtype.map(str::to_string),
            jid: jid.map(str::to_string),
            text: text.map(str::to_string),
        }
    };
    // Retry times carry random jitter: the order is the list's.
    let alphas: Vec<String> = jids(&s, Retry, None)
        .await
        .into_iter()
        .filter(|j| j.starts_with("retry-alpha"))
        .collect();
    assert_eq!(alphas.len(), 2);
    assert_eq!(
        walk(&s, Retry, &f(None, Some("Alpha"), None, None), 1).await,
        alphas
    );
    assert_eq!(
        walk(
            &s,
            Dead,
            &f(Some("q-dead"), None, Some("dead-beta-red"), None),
            2
        )
        .await,
        ["dead-beta-red"]
    );
    assert!(walk(&s, Dead, &f(Some("q-retry"), None, None, None), 2)
        .await
        .is_empty());
    assert_eq!(
        walk(&s, Scheduled, &f(None, None, None, Some("nEEDLE-1")), 1).await,
        ["tie-job-1"],
        "text is an ASCII-case-insensitive substring"
    );
    assert_eq!(
        walk(
            &s,
            Enqueued,
            &f(None, None, None, Some("\"COLOR\":\"RED\"")),
            1
        )
        .await,
        ["enq-alpha-red", "enq-beta-red"]
    );
    assert_eq!(
        walk(&s, Scheduled, &f(None, None, None, Some("%")), 5).await,
        Vec::<String>::new(),
        "no LIKE wildcards"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_stays_correct_while_jobs_move() {
    let (s, _) = fresh().await;
    for i in 0..6 {
        push(&s, &[spec(&format!("mv-0000{i}")).queue("mv")], T0 + i).await;
    }
    let first = s
        .page(PageQuery {
            state: Enqueued,
            filter: JobFilter::default(),
            after: None,
            limit: 2,
        })
        .await
        .unwrap();
    let ids: Vec<&str> = first.jobs.iter().map(|(_, j)| j.jid.as_str()).collect();
    assert_eq!(ids, ["mv-00000", "mv-00001"]);
    // mv-0 and mv-3 leave, mv-0 comes back at the end.
    assert_eq!(
        fetch_jid(&s, &["mv"], T0 + SEC).await.as_deref(),
        Some("mv-00000")
    );
    assert_eq!(
        s.delete_jobs(Enqueued, strings(&["mv-00003"]))
            .await
            .unwrap(),
        1
    );
    let info = FailInfo::new("E", "x", Vec::new());
    s.fail("mv-00000".into(), info, T0 + SEC).await.unwrap();
    mutate(&s, MutateOp::Requeue, Retry, None, T0 + 2 * SEC).await;
    let mut rest = Vec::new();
    let mut after = first.next;
    while let Some(a) = after {
        let p = s
            .page(PageQuery {
                state: Enqueued,
                filter: JobFilter::default(),
                after: Some(a),
                limit: 2,
            })
            .await
            .unwrap();
        rest.extend(p.jobs.iter().map(|(_, j)| j.jid.clone()));
        after = p.next;
    }
    assert_eq!(rest, ["mv-00002", "mv-00004", "mv-00005", "mv-00000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_jobs_removes_only_jobs_in_that_state() {
    let (s, _) = fresh().await;
    let t = populate(&s, T0).await;
    for target in [Scheduled, Enqueued, Retry, Dead] {
        let before = all_lists(&s).await;
        let victim = fx_jid(target, "alpha-red");
        let mut ask = vec![victim.clone(), "del-unknown-0001".into(), victim.clone()];
        ask.extend(
            JobState::ALL
                .into_iter()
                .filter(|x| *x != target)
                .map(|x| fx_jid(x, "beta-red")),
        );
        assert_eq!(s.delete_jobs(target, ask).await.unwrap(), 1, "{target}");
        assert_eq!(state_of(&s, &victim).await, None);
        let after = all_lists(&s).await;
        assert_others_untouched(&before, &after, target, None, "delete_jobs");
        let rest: Vec<StoredJob> = before[&target]
            .iter()
            .filter(|j| j.jid != victim)
            .cloned()
            .collect();
        assert_eq!(after[&target], rest);
    }
    let before = all_lists(&s).await;
    assert_eq!(s.delete_jobs(Working, fx_jids(Working)).await.unwrap(), 0);
    assert_eq!(s.delete_jobs(Enqueued, Vec::new()).await.unwrap(), 0);
    assert_eq!(all_lists(&s).await, before);
    // A unique lock stays (it runs out); tracking data is forgotten.
    push(
        &s,
        &[spec("del-uniq-0001").with(r#""custom":{"unique_for":60,"track":1}"#)],
        t,
    )
    .await;
    let client = s.pool().get().await.unwrap();
    client
        .execute(
            "INSERT INTO tracking (jid, updated_at) VALUES ('del-uniq-0001', $1)
             ON CONFLICT (jid) DO NOTHING",
            &[&t],
        )
        .await
        .unwrap();
    assert_eq!(
        s.delete_jobs(Enqueued, strings(&["del-uniq-0001"]))
            .await
            .unwrap(),
        1
    );
    let (locks, tracked): (i64, i64) = {
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM unique_locks), (SELECT count(*) FROM tracking)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((locks, tracked), (1, 0));
}

// ---- conflicts ----------------------------------------------------------------------------

/// A MUTATE that PostgreSQL aborts for a deadlock runs again and succeeds (the `retry`
/// module; seen in CI as `mutate: deadlock detected` when a UI "retry all" raced batched ACKs
/// and the reaper). The deadlock is made on purpose: MUTATE locks the retry set in score
/// order; another session holds the second row, MUTATE takes the first and waits for the
/// second, then the other session asks for the first. That session's `deadlock_timeout` is
/// long, so PostgreSQL aborts MUTATE's transaction, not the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_aborted_for_a_deadlock_runs_again() {
    let url = fresh_db().await;
    let (s, rec) = open_with(&url, StoreConfig::default()).await;
    let s = Arc::new(s);
    put(&s, spec("deadlock-1").queue("dl"), Retry, T0).await;
    put(&s, spec("deadlock-2").queue("dl"), Retry, T0).await;
    let (other, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("other session connects");
    tokio::spawn(conn);
    let ids: Vec<i64> = other
        .query(
            "SELECT id FROM jobs WHERE state = 3 ORDER BY score, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    other
        .batch_execute("BEGIN; SET LOCAL deadlock_timeout = '60s'")
        .await
        .unwrap();
    other
        .execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&ids[1]])
        .await
        .unwrap();
    rec.take();
    let t = T0 + MIN;
    let mutating = {
        let s = s.clone();
        tokio::spawn(async move {
            let m = Mutation {
                op: MutateOp::Requeue,
                target: Retry,
                filter: None,
            };
            werk_store::Store::mutate(&*s, m, t).await
        })
    };
    wait_for_lock_waiters(&s, 1, "MUTATE").await;
    // Closes the cycle; returns once PostgreSQL has aborted MUTATE's transaction.
    other
        .execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&ids[0]])
        .await
        .unwrap();
    other.batch_execute("COMMIT").await.unwrap();
    let moved = mutating.await.unwrap();
    assert_eq!(moved.expect("MUTATE runs again after the deadlock"), 2);
    assert_eq!(jids(&s, Retry, None).await, Vec::<String>::new());
    assert_eq!(jids(&s, Enqueued, Some("dl")).await.len(), 2);
    assert!(rec.take().contains(&"dl".to_string()), "listener told");
    // The deadlock really happened: PostgreSQL counts it (a backend reports its statistics
    // within about ten seconds of going idle; a fresh transaction per read sees the latest).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n: i64 = other
            .query_one(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL never counted a deadlock"
        );
        other
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

// ---- close --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_requests_in_flight_and_refuses_new_ones() {
    use std::time::{Duration, Instant};
    let url = fresh_db().await;
    let (s, _) = open_with(&url, StoreConfig::default()).await;
    let s = Arc::new(s);
    // Another session holds a lock the push needs, so the push is certainly in flight (holding
    // its pooled connection, inside its transaction) when close is called.
    let (blocker, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("blocker connects");
    tokio::spawn(conn);
    blocker
        .batch_execute("BEGIN; LOCK TABLE jobs IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let specs: Vec<Spec> = (0..300).map(|i| spec(&format!("close-{i:04}"))).collect();
    let pushing = {
        let s = s.clone();
        let jobs: Vec<NewJob> = specs.iter().map(|sp| sp.new_job(T0)).collect();
        tokio::spawn(async move { s.push(jobs, T0).await })
    };
    wait_for_lock_waiters(&s, 1, "PUSH").await;
    let closing = {
        let s = s.clone();
        tokio::spawn(async move { s.close().await })
    };
    // New requests are refused as soon as close has begun; close itself waits for the push.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(s.stats().await, Err(StoreError::Closed)) {
        assert!(Instant::now() < deadline, "close did not begin");
        tokio::task::yield_now().await;
    }
    assert!(
        !closing.is_finished(),
        "close returned with a push in flight"
    );
    blocker.batch_execute("COMMIT").await.unwrap();
    closing.await.unwrap();
    assert_eq!(s.pool().status().size, 0, "no connection left after close");
    let res = pushing
        .await
        .unwrap()
        .expect("the push in flight completes");
    assert!(res.iter().all(|r| r.is_ok()));
    let (other, _) = open_with(&url, StoreConfig::default()).await;
    let stored = other.stats().await.unwrap().enqueued();
    assert_eq!(
        stored, 300,
        "a push answered before close returned is stored"
    );
}

/// Counter and history rows are per backend (`shard = pg_backend_pid()`); the purge folds the
/// rows of backends that are gone into shard 0 without changing any total, and leaves live
/// backends' rows alone.
#[tokio::test]
async fn purge_folds_counter_rows_of_gone_backends_into_shard_zero() {
    let (s, _) = fresh().await;
    push(&s, &[spec("fold-job-1"), spec("fold-job-2")], T0).await;
    for _ in 0..2 {
        let jid = fetch_jid(&s, &["default"], T0).await.unwrap();
        assert_eq!(s.ack(jid, T0).await.unwrap(), AckOutcome::Acked);
    }
    let day = local_day(T0);
    let client = s.pool().get().await.unwrap();
    // Rows left by two backends that no longer exist (pids far above any live one).
    client
        .batch_execute(&format!(
            "INSERT INTO counters (name, shard, value) VALUES
                 ('processed', 2000000001, 5), ('processed', 2000000002, 7),
                 ('failures', 2000000001, 3);
             INSERT INTO history (day, shard, processed, failures) VALUES
                 ('{day}', 2000000001, 5, 3), ('{day}', 2000000002, 7, 0);"
        ))
        .await
        .unwrap();
    let before = s.stats().await.unwrap();
    assert_eq!((before.processed, before.failures), (14, 3));
    let history_before = s.history(1, T0).await.unwrap();
    let live_rows = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let live_before = live_rows(
        "SELECT count(*) FROM counters c WHERE shard <> 0 AND EXISTS
             (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.shard)",
    )
    .await;
    assert!(live_before >= 1, "the ACKs wrote rows of live backends");
    s.purge_dead(T0, 100).await.unwrap();
    let after = s.stats().await.unwrap();
    assert_eq!((after.processed, after.failures), (14, 3));
    assert_eq!(s.history(1, T0).await.unwrap(), history_before);
    let gone = live_rows("SELECT count(*) FROM counters WHERE shard > 2000000000").await
        + live_rows("SELECT count(*) FROM history WHERE shard > 2000000000").await;
    assert_eq!(gone, 0, "rows of gone backends folded");
    let live_after = live_rows(
        "SELECT count(*) FROM counters c WHERE shard <> 0 AND EXISTS
             (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.shard)",
    )
    .await;
    assert_eq!(live_after, live_before, "live backends' rows untouched");
}
