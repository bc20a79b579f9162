//! PgStore's Enterprise parts (cron fire records, batches, tracking, throttles) against a real
//! PostgreSQL (werk-testpg): one cluster for this test binary, a fresh database per test. The
//! cases mirror the conformance suite's (crates/werk-store/src/conformance/{cron,batches,
//! tracking,throttles}.rs) as far as the methods implemented so far reach (the parts that need
//! MUTATE, QUEUE REMOVE, FLUSH or the sweep are left to those methods' tests); "reopen" is a
//! second store connected to the same database. Plus races between two stores on one database.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use werk_core::time::{format_stamp, parse_rfc3339};
use werk_core::{FailOutcome, Job, JobState, Millis, PushError};
use werk_store::{
    AckOutcome, BatchError, BatchStatus, CallbackState, CronFire, EnqueueListener, FailReply,
    NewBatch, StoreConfig, StoredJob, Throttle, ThrottleLimit, TrackState, TrackUpdate, Tracked,
    BATCH_COMMIT_DEADLINE, TRACK_RETENTION,
};
use werk_store_postgres::PgStore;
use werk_testpg::PgCluster;

use JobState::{Enqueued, Retry, Working};

const T0: Millis = 1_700_000_000_000;
const SEC: Millis = 1000;
const MIN: Millis = 60 * SEC;
const HOUR: Millis = 60 * MIN;
const DAY: Millis = 24 * HOUR;

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

async fn open(url: &str) -> PgStore {
    open_with(url, StoreConfig::default()).await.0
}

async fn fresh() -> (PgStore, Arc<Rec>, String) {
    let url = fresh_db().await;
    let (s, rec) = open_with(&url, StoreConfig::default()).await;
    (s, rec, url)
}

// ---- jobs, as the conformance suite builds them ---------------------------------------------

use werk_store::conformance::{boom, js, spec, Spec};

async fn push_results(s: &PgStore, specs: Vec<Spec>, now: Millis) -> Vec<Result<(), PushError>> {
    s.push(specs.iter().map(|j| j.new_job(now)).collect(), now)
        .await
        .expect("push")
}

async fn push(s: &PgStore, specs: Vec<Spec>, now: Millis) {
    let res = push_results(s, specs, now).await;
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
}

async fn fetch_as(s: &PgStore, queues: &[&str], wid: &str, now: Millis) -> Option<StoredJob> {
    s.fetch(
        queues.iter().map(|q| q.to_string()).collect(),
        wid.to_string(),
        now,
    )
    .await
    .expect("fetch")
}

async fn fetch_jid(s: &PgStore, queues: &[&str], now: Millis) -> Option<String> {
    fetch_as(s, queues, "wid-test", now).await.map(|j| j.jid)
}

async fn ack(s: &PgStore, jid: &str, now: Millis) -> AckOutcome {
    s.ack(jid.to_string(), now).await.expect("ack")
}

async fn fail(s: &PgStore, jid: &str, now: Millis) -> FailReply {
    s.fail(jid.to_string(), boom(), now).await.expect("fail")
}

async fn get(s: &PgStore, jid: &str) -> Option<StoredJob> {
    s.get(jid.to_string()).await.expect("get")
}

async fn must_get(s: &PgStore, jid: &str) -> StoredJob {
    get(s, jid)
        .await
        .unwrap_or_else(|| panic!("{jid} is not stored"))
}

async fn state_of(s: &PgStore, jid: &str) -> Option<JobState> {
    get(s, jid).await.map(|j| j.state)
}

async fn promote(s: &PgStore, now: Millis) -> usize {
    s.promote_due(now, 1000).await.expect("promote_due")
}

async fn reap(s: &PgStore, now: Millis) -> usize {
    s.reap_expired(now, 1000).await.expect("reap_expired")
}

/// The enqueued jobs of `queue`, in FIFO order (read with SQL: listing is not implemented yet).
async fn waiting(s: &PgStore, queue: &str) -> Vec<String> {
    let client = s.pool().get().await.expect("client");
    client
        .query(
            "SELECT jid FROM jobs WHERE state = 1 AND queue = $1 ORDER BY score",
            &[&queue],
        )
        .await
        .expect("list")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn payload(j: &StoredJob) -> Job {
    Job::from_stored(&j.payload).expect("payload is a job")
}

// ---- batches helpers ---------------------------------------------------------------------------

fn callback(jid: &str, queue: &str, jobtype: &str) -> Job {
    spec(jid)
        .queue(queue)
        .jobtype(jobtype)
        .args(&format!("[{}]", js(jid)))
        .new_job(T0)
        .job
}

fn new_batch(
    bid: &str,
    parent: Option<&str>,
    complete: Option<Job>,
    success: Option<Job>,
) -> NewBatch {
    NewBatch {
        bid: bid.to_string(),
        parent_bid: parent.map(str::to_string),
        description: None,
        complete,
        success,
    }
}

fn both_callbacks(bid: &str) -> NewBatch {
    new_batch(
        bid,
        None,
        Some(callback(
            &format!("cbc-{bid}"),
            "cb-complete",
            "BatchComplete",
        )),
        Some(callback(
            &format!("cbs-{bid}"),
            "cb-success",
            "BatchSuccess",
        )),
    )
}

fn member(jid: &str, bid: &str) -> Spec {
    spec(jid)
        .queue("bq")
        .custom(&format!(r#"{{"bid":{}}}"#, js(bid)))
}

fn no_batch(bid: &str) -> BatchError {
    BatchError::NoSuchBatch(bid.to_string())
}

async fn batch_new(s: &PgStore, b: NewBatch, now: Millis) {
    let bid = b.bid.clone();
    assert_eq!(
        s.batch_new(b, now).await.expect("batch_new"),
        Ok(()),
        "BATCH NEW {bid}"
    );
}

async fn commit(s: &PgStore, bid: &str, now: Millis) {
    assert_eq!(
        s.batch_commit(bid.to_string(), now)
            .await
            .expect("batch_commit"),
        Ok(()),
        "BATCH COMMIT {bid}"
    );
}

async fn open_batch(s: &PgStore, bid: &str, now: Millis) {
    assert_eq!(
        s.batch_open(bid.to_string(), now)
            .await
            .expect("batch_open"),
        Ok(()),
        "BATCH OPEN {bid}"
    );
}

async fn try_status(s: &PgStore, bid: &str, now: Millis) -> Option<BatchStatus> {
    s.batch_status(bid.to_string(), now)
        .await
        .expect("batch_status")
}

async fn status(s: &PgStore, bid: &str, now: Millis) -> BatchStatus {
    try_status(s, bid, now)
        .await
        .unwrap_or_else(|| panic!("BATCH STATUS {bid}: no such batch"))
}

async fn counts(
    s: &PgStore,
    bid: &str,
    now: Millis,
) -> (u64, u64, u64, &'static str, &'static str) {
    let st = status(s, bid, now).await;
    (
        st.total,
        st.pending,
        st.failed,
        st.complete_st.wire(),
        st.success_st.wire(),
    )
}

async fn run_ok(s: &PgStore, queue: &str, jid: &str, now: Millis) {
    assert_eq!(
        fetch_jid(s, &[queue], now).await.as_deref(),
        Some(jid),
        "fetch of {jid} from {queue}"
    );
    assert_eq!(ack(s, jid, now).await, AckOutcome::Acked, "ACK of {jid}");
}

async fn run_fail(s: &PgStore, queue: &str, jid: &str, now: Millis) -> FailOutcome {
    assert_eq!(
        fetch_jid(s, &[queue], now).await.as_deref(),
        Some(jid),
        "fetch of {jid} from {queue}"
    );
    match fail(s, jid, now).await {
        FailReply::Failed(out) => out,
        other => panic!("FAIL of working job {jid} gave {other:?}"),
    }
}

fn custom_of(j: &StoredJob) -> serde_json::Value {
    payload(j)
        .custom
        .map(|c| serde_json::from_str(c.get()).expect("custom is JSON"))
        .unwrap_or(serde_json::Value::Null)
}

/// FETCHes the one callback job waiting in `queue` and checks its type and custom.
async fn take_callback(
    s: &PgStore,
    queue: &str,
    jobtype: &str,
    pbid: Option<&str>,
    now: Millis,
) -> StoredJob {
    let w = waiting(s, queue).await;
    assert_eq!(
        w.len(),
        1,
        "exactly one callback job waits in {queue}: {w:?}"
    );
    let j = fetch_as(s, &[queue], "wid-test", now)
        .await
        .unwrap_or_else(|| panic!("no callback job in {queue}"));
    assert_eq!(j.jobtype, jobtype, "callback job in {queue}");
    let custom = custom_of(&j);
    assert_eq!(custom.get("bid"), None, "no member: {}", j.payload);
    assert_eq!(
        custom.get("_pbid").and_then(|v| v.as_str()),
        pbid,
        "custom._pbid of {}: {}",
        j.jid,
        j.payload
    );
    j
}

// ---- cron --------------------------------------------------------------------------------------

async fn fire(s: &PgStore, entry: &str, tick: Millis, jid: &str, now: Millis) -> CronFire {
    s.fire_cron(
        entry.to_string(),
        tick,
        spec(jid).queue("cron").new_job(now),
        now,
    )
    .await
    .expect("fire_cron")
}

async fn last_fired(s: &PgStore, entries: &[&str]) -> Vec<Option<Millis>> {
    s.cron_last_fired(entries.iter().map(|e| e.to_string()).collect())
        .await
        .expect("cron_last_fired")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_tick_fires_once() {
    let (s, _, _) = fresh().await;
    let tick = T0 + MIN;
    assert_eq!(last_fired(&s, &["e1", "e2"]).await, vec![None, None]);
    assert_eq!(
        fire(&s, "e1", tick, "cron-001", tick + 5).await,
        CronFire::Fired
    );
    assert_eq!(last_fired(&s, &["e1", "e2"]).await, vec![Some(tick), None]);
    assert_eq!(
        fire(&s, "e1", tick, "cron-002", tick + 9).await,
        CronFire::AlreadyFired
    );
    assert_eq!(
        fire(&s, "e1", tick - MIN, "cron-003", tick + 9).await,
        CronFire::AlreadyFired,
        "an earlier tick"
    );
    assert_eq!(get(&s, "cron-002").await, None);
    assert_eq!(get(&s, "cron-003").await, None);
    assert_eq!(
        fire(&s, "e2", tick, "cron-004", tick + 9).await,
        CronFire::Fired
    );
    assert_eq!(
        fire(&s, "e1", tick + MIN, "cron-005", tick + MIN).await,
        CronFire::Fired
    );
    assert_eq!(
        last_fired(&s, &["e2", "e1", "unknown"]).await,
        vec![Some(tick), Some(tick + MIN), None]
    );
    assert_eq!(
        waiting(&s, "cron").await,
        vec!["cron-001", "cron-004", "cron-005"]
    );
    let j = must_get(&s, "cron-001").await;
    assert_eq!(j.state, Enqueued);
    assert_eq!(parse_rfc3339(&payload(&j).enqueued_at), Ok(tick + 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_refused_job_still_records_tick_and_survives_reopen() {
    let (s, _, url) = fresh().await;
    push(&s, vec![spec("cron-taken")], T0).await;
    let before = get(&s, "cron-taken").await;
    let out = fire(&s, "e1", T0 + MIN, "cron-taken", T0 + MIN).await;
    assert!(
        matches!(out, CronFire::Refused(PushError::DuplicateJid(ref j, _)) if j == "cron-taken"),
        "{out:?}"
    );
    assert_eq!(get(&s, "cron-taken").await, before);
    assert_eq!(last_fired(&s, &["e1"]).await, vec![Some(T0 + MIN)]);
    assert_eq!(
        fire(&s, "e1", T0 + MIN, "cron-other", T0 + MIN).await,
        CronFire::AlreadyFired
    );
    let tick = T0 + HOUR;
    assert_eq!(
        fire(&s, "daily", tick, "cron-daily-1", tick).await,
        CronFire::Fired
    );
    drop(s);
    let s = open(&url).await;
    assert_eq!(last_fired(&s, &["daily"]).await, vec![Some(tick)]);
    assert_eq!(state_of(&s, "cron-daily-1").await, Some(Enqueued));
    assert_eq!(
        fire(&s, "daily", tick, "cron-daily-2", tick + 1).await,
        CronFire::AlreadyFired
    );
    assert_eq!(
        fire(&s, "daily", tick + DAY, "cron-daily-4", tick + DAY).await,
        CronFire::Fired
    );
}

/// 16 callers on two stores racing on one tick: exactly one job is enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cron_fires_of_one_tick_enqueue_once() {
    let (a, _, url) = fresh().await;
    let b = open(&url).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let tick = T0 + MIN;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(
                async move { fire(&s, "race", tick, &format!("cron-race-{i:02}"), tick).await },
            )
        })
        .collect();
    let results: Vec<CronFire> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let fired = results.iter().filter(|r| **r == CronFire::Fired).count();
    assert_eq!(fired, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|r| matches!(r, CronFire::Fired | CronFire::AlreadyFired)));
    assert_eq!(waiting(&a, "cron").await.len(), 1);
}

// ---- batches ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_new_then_status() {
    let (s, _, _) = fresh().await;
    let bid = "bid-status-01";
    let mut b = both_callbacks(bid);
    b.description = Some("nightly import".to_string());
    batch_new(&s, b, T0).await;
    assert_eq!(
        status(&s, bid, T0 + SEC).await,
        BatchStatus {
            bid: bid.to_string(),
            parent_bid: None,
            description: Some("nightly import".to_string()),
            created_at: T0,
            created_stamp: format_stamp(T0),
            committed: false,
            total: 0,
            pending: 0,
            failed: 0,
            complete_st: CallbackState::Pending,
            success_st: CallbackState::Pending,
        }
    );
    let unknown = "bid-unknown-01";
    assert_eq!(try_status(&s, unknown, T0).await, None);
    assert_eq!(
        s.batch_open(unknown.into(), T0).await.unwrap(),
        Err(no_batch(unknown))
    );
    assert_eq!(
        s.batch_commit(unknown.into(), T0).await.unwrap(),
        Err(no_batch(unknown))
    );
    let orphan = new_batch(
        "bid-orphan-01",
        Some(unknown),
        Some(callback("cb-orphan-01", "cb-complete", "BatchComplete")),
        None,
    );
    assert_eq!(
        s.batch_new(orphan, T0).await.unwrap(),
        Err(no_batch(unknown)),
        "a parent must exist"
    );
    assert_eq!(try_status(&s, "bid-orphan-01", T0).await, None);

    push(
        &s,
        vec![member("st-mem-0001", bid), member("st-mem-0002", bid)],
        T0 + SEC,
    )
    .await;
    assert_eq!(counts(&s, bid, T0 + SEC).await, (2, 2, 0, "", ""));
    commit(&s, bid, T0 + 2 * SEC).await;
    assert!(status(&s, bid, T0 + 2 * SEC).await.committed);
    assert_eq!(counts(&s, bid, T0 + 2 * SEC).await, (2, 2, 0, "", ""));
    assert!(waiting(&s, "cb-complete").await.is_empty(), "jobs pending");
    open_batch(&s, bid, T0 + 3 * SEC).await;
    assert!(!status(&s, bid, T0 + 3 * SEC).await.committed, "reopened");
    assert_eq!(status(&s, bid, T0 + 3 * SEC).await.created_at, T0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_into_unknown_or_expired_batch_is_refused() {
    let (s, _, _) = fresh().await;
    let live = "bid-live-0001";
    let nope = "bid-nope-0001";
    batch_new(&s, both_callbacks(live), T0).await;
    push(
        &s,
        vec![
            spec("nb-plain-001"),
            spec("nb-uniq-0001")
                .args("[7]")
                .custom(r#"{"unique_for":3600}"#),
        ],
        T0,
    )
    .await;
    let res = push_results(
        &s,
        vec![
            member("nb-mem-00001", nope),
            member("nb-plain-001", nope),
            spec("nb-uniq-0002")
                .args("[7]")
                .custom(&format!(r#"{{"unique_for":3600,"bid":{}}}"#, js(nope))),
            member("nb-mem-00002", live),
        ],
        T0 + SEC,
    )
    .await;
    let refused = Err(PushError::NoSuchBatch(nope.to_string()));
    assert_eq!(res[0], refused, "unknown batch");
    assert_eq!(res[1], refused, "checked before the duplicate jid");
    assert_eq!(res[2], refused, "checked before uniqueness");
    assert_eq!(res[3], Ok(()), "a live batch");
    assert_eq!(get(&s, "nb-mem-00001").await, None);
    assert_eq!(get(&s, "nb-uniq-0002").await, None);
    let plain = must_get(&s, "nb-plain-001").await;
    assert_eq!((plain.state, plain.queue.as_str()), (Enqueued, "default"));
    assert_eq!(counts(&s, live, T0 + SEC).await, (1, 1, 0, "", ""));

    // A retried push of a stored member is answered OK and counted once.
    let res = push_results(&s, vec![member("nb-mem-00002", live)], T0 + SEC).await;
    assert_eq!(res, vec![Ok(())]);
    assert_eq!(counts(&s, live, T0 + SEC).await, (1, 1, 0, "", ""));

    let before = T0 + BATCH_COMMIT_DEADLINE - SEC;
    push(&s, vec![member("nb-mem-00003", live)], before).await;
    assert_eq!(counts(&s, live, before).await, (2, 2, 0, "", ""));
    let after = T0 + BATCH_COMMIT_DEADLINE + SEC;
    let res = push_results(&s, vec![member("nb-mem-00004", live)], after).await;
    assert_eq!(res[0], Err(PushError::NoSuchBatch(live.to_string())));
    assert_eq!(get(&s, "nb-mem-00004").await, None);
    assert_eq!(try_status(&s, live, after).await, None);
    assert_eq!(
        waiting(&s, "bq").await,
        vec!["nb-mem-00002", "nb-mem-00003"],
        "members of an expired batch stay ordinary jobs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_complete_fires_when_all_jobs_finished_and_committed() {
    let (s, rec, _) = fresh().await;
    let bid = "bid-complete-1";
    batch_new(&s, both_callbacks(bid), T0).await;
    push(
        &s,
        vec![
            member("cpl-mem-0001", bid),
            member("cpl-mem-0002", bid),
            member("cpl-mem-0003", bid),
        ],
        T0,
    )
    .await;
    run_ok(&s, "bq", "cpl-mem-0001", T0 + SEC).await;
    assert_eq!(counts(&s, bid, T0 + SEC).await, (3, 2, 0, "", ""));
    commit(&s, bid, T0 + 2 * SEC).await;
    assert_eq!(counts(&s, bid, T0 + 2 * SEC).await, (3, 2, 0, "", ""));
    run_ok(&s, "bq", "cpl-mem-0002", T0 + 3 * SEC).await;
    assert_eq!(
        fetch_jid(&s, &["bq"], T0 + 4 * SEC).await.as_deref(),
        Some("cpl-mem-0003")
    );
    assert_eq!(
        counts(&s, bid, T0 + 4 * SEC).await,
        (3, 1, 0, "", ""),
        "a working job is still pending"
    );
    assert!(waiting(&s, "cb-complete").await.is_empty());
    rec.take();
    assert_eq!(
        ack(&s, "cpl-mem-0003", T0 + 5 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(&s, bid, T0 + 5 * SEC).await, (3, 0, 0, "1", ""));
    assert_eq!(rec.take(), vec!["cb-complete"], "the listener hears of it");
    assert!(waiting(&s, "cb-success").await.is_empty());
    let cb = take_callback(&s, "cb-complete", "BatchComplete", None, T0 + 6 * SEC).await;
    assert_eq!(cb.jid, format!("cbc-{bid}"));
    assert_eq!(
        payload(&cb).args.map(|a| a.get().to_string()),
        Some(format!("[{}]", js(&cb.jid)))
    );
    assert_eq!(
        parse_rfc3339(&payload(&cb).enqueued_at),
        Ok(T0 + 5 * SEC),
        "enqueued by the ACK"
    );

    // All jobs finished before the commit: nothing fires until the commit.
    let b2 = "bid-complete-2";
    batch_new(
        &s,
        new_batch(
            b2,
            None,
            Some(callback("cb-cpl2-done", "cb-c2", "Complete2")),
            None,
        ),
        T0 + 6 * SEC,
    )
    .await;
    push(&s, vec![member("cpl-mem-0004", b2)], T0 + 6 * SEC).await;
    run_ok(&s, "bq", "cpl-mem-0004", T0 + 7 * SEC).await;
    assert_eq!(counts(&s, b2, T0 + 7 * SEC).await, (1, 0, 0, "", ""));
    assert!(waiting(&s, "cb-c2").await.is_empty());
    rec.take();
    commit(&s, b2, T0 + 8 * SEC).await;
    assert_eq!(rec.take(), vec!["cb-c2"]);
    assert_eq!(counts(&s, b2, T0 + 8 * SEC).await, (1, 0, 0, "1", ""));
    take_callback(&s, "cb-c2", "Complete2", None, T0 + 8 * SEC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_success_waits_for_complete_callback_ack() {
    let (s, _, _) = fresh().await;
    let bid = "bid-success-1";
    batch_new(&s, both_callbacks(bid), T0).await;
    push(&s, vec![member("suc-mem-0001", bid)], T0).await;
    commit(&s, bid, T0).await;
    run_ok(&s, "bq", "suc-mem-0001", T0 + SEC).await;
    assert_eq!(counts(&s, bid, T0 + SEC).await, (1, 0, 0, "1", ""));
    let cb = take_callback(&s, "cb-complete", "BatchComplete", None, T0 + 2 * SEC).await;
    assert!(matches!(
        fail(&s, &cb.jid, T0 + 3 * SEC).await,
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    assert_eq!(
        counts(&s, bid, T0 + 3 * SEC).await,
        (1, 0, 0, "1", ""),
        "a failing callback stays enqueued and is no member"
    );
    assert!(waiting(&s, "cb-success").await.is_empty());
    let t = must_get(&s, &cb.jid).await.at;
    assert_eq!(promote(&s, t).await, 1);
    run_ok(&s, "cb-complete", &cb.jid, t).await;
    assert_eq!(counts(&s, bid, t).await, (1, 0, 0, "2", "1"));
    let scb = take_callback(&s, "cb-success", "BatchSuccess", None, t + SEC).await;
    assert_eq!(ack(&s, &scb.jid, t + 2 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, bid, t + 2 * SEC).await, (1, 0, 0, "2", "2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_failures_completes_but_succeeds_only_after_retry_succeeds() {
    let (s, _, _) = fresh().await;
    let bid = "bid-failures-1";
    batch_new(&s, both_callbacks(bid), T0).await;
    push(
        &s,
        vec![member("fl-mem-00001", bid), member("fl-mem-00002", bid)],
        T0,
    )
    .await;
    commit(&s, bid, T0).await;
    run_ok(&s, "bq", "fl-mem-00001", T0 + SEC).await;
    assert!(matches!(
        run_fail(&s, "bq", "fl-mem-00002", T0 + 2 * SEC).await,
        FailOutcome::Retry { .. }
    ));
    assert_eq!(counts(&s, bid, T0 + 2 * SEC).await, (2, 0, 1, "1", ""));
    let cb = take_callback(&s, "cb-complete", "BatchComplete", None, T0 + 3 * SEC).await;
    assert_eq!(ack(&s, &cb.jid, T0 + 3 * SEC).await, AckOutcome::Acked);
    assert_eq!(
        counts(&s, bid, T0 + 3 * SEC).await,
        (2, 0, 1, "2", ""),
        "complete, but a member failed"
    );
    assert!(waiting(&s, "cb-success").await.is_empty());
    let t = must_get(&s, "fl-mem-00002").await.at;
    assert_eq!(promote(&s, t).await, 1);
    run_fail(&s, "bq", "fl-mem-00002", t).await;
    assert_eq!(
        counts(&s, bid, t).await,
        (2, 0, 1, "2", ""),
        "failing again counts once"
    );
    let t = must_get(&s, "fl-mem-00002").await.at;
    assert_eq!(promote(&s, t).await, 1);
    run_ok(&s, "bq", "fl-mem-00002", t).await;
    assert_eq!(counts(&s, bid, t).await, (2, 0, 0, "2", "1"));
    take_callback(&s, "cb-success", "BatchSuccess", None, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_batch_commit_fires_callbacks() {
    let (s, _, _) = fresh().await;
    let (b1, b2, b3) = ("bid-empty-001", "bid-empty-002", "bid-empty-003");
    batch_new(&s, both_callbacks(b1), T0).await;
    batch_new(
        &s,
        new_batch(
            b2,
            None,
            None,
            Some(callback("cb-e2-succ-1", "cb-e2", "E2Success")),
        ),
        T0,
    )
    .await;
    batch_new(
        &s,
        new_batch(
            b3,
            None,
            Some(callback("cb-e3-done-1", "cb-e3", "E3Complete")),
            None,
        ),
        T0,
    )
    .await;
    commit(&s, b1, T0 + SEC).await;
    assert_eq!(counts(&s, b1, T0 + SEC).await, (0, 0, 0, "1", ""));
    assert!(waiting(&s, "cb-success").await.is_empty());
    let cb = take_callback(&s, "cb-complete", "BatchComplete", None, T0 + 2 * SEC).await;
    assert_eq!(ack(&s, &cb.jid, T0 + 2 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, b1, T0 + 2 * SEC).await, (0, 0, 0, "2", "1"));
    take_callback(&s, "cb-success", "BatchSuccess", None, T0 + 3 * SEC).await;

    commit(&s, b2, T0 + 3 * SEC).await;
    assert_eq!(
        counts(&s, b2, T0 + 3 * SEC).await,
        (0, 0, 0, "", "1"),
        "no complete callback: complete at once"
    );
    let cb = take_callback(&s, "cb-e2", "E2Success", None, T0 + 4 * SEC).await;
    assert_eq!(ack(&s, &cb.jid, T0 + 4 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, b2, T0 + 4 * SEC).await, (0, 0, 0, "", "2"));

    commit(&s, b3, T0 + 5 * SEC).await;
    let cb = take_callback(&s, "cb-e3", "E3Complete", None, T0 + 5 * SEC).await;
    assert_eq!(ack(&s, &cb.jid, T0 + 6 * SEC).await, AckOutcome::Acked);
    assert_eq!(
        counts(&s, b3, T0 + 6 * SEC).await,
        (0, 0, 0, "2", ""),
        "no success callback: shown pending forever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_callbacks_fire_at_most_once() {
    let (s, _, _) = fresh().await;
    let bid = "bid-once-0001";
    batch_new(&s, both_callbacks(bid), T0).await;
    push(&s, vec![member("once-mem-001", bid)], T0).await;
    commit(&s, bid, T0).await;
    run_ok(&s, "bq", "once-mem-001", T0 + SEC).await;
    commit(&s, bid, T0 + 2 * SEC).await;
    let cb = take_callback(&s, "cb-complete", "BatchComplete", None, T0 + 3 * SEC).await;
    commit(&s, bid, T0 + 3 * SEC).await;
    assert!(
        waiting(&s, "cb-complete").await.is_empty(),
        "no second complete"
    );
    assert_eq!(ack(&s, &cb.jid, T0 + 4 * SEC).await, AckOutcome::Acked);
    assert_eq!(
        ack(&s, &cb.jid, T0 + 4 * SEC).await,
        AckOutcome::NotWorking,
        "a second ACK changes nothing"
    );
    let scb = take_callback(&s, "cb-success", "BatchSuccess", None, T0 + 5 * SEC).await;
    assert_eq!(ack(&s, &scb.jid, T0 + 5 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, bid, T0 + 5 * SEC).await, (1, 0, 0, "2", "2"));

    open_batch(&s, bid, T0 + 10 * SEC).await;
    push(&s, vec![member("once-mem-002", bid)], T0 + 10 * SEC).await;
    assert_eq!(counts(&s, bid, T0 + 10 * SEC).await, (2, 1, 0, "2", "2"));
    commit(&s, bid, T0 + 11 * SEC).await;
    run_ok(&s, "bq", "once-mem-002", T0 + 12 * SEC).await;
    open_batch(&s, bid, T0 + 13 * SEC).await;
    commit(&s, bid, T0 + 14 * SEC).await;
    assert_eq!(counts(&s, bid, T0 + 14 * SEC).await, (2, 0, 0, "2", "2"));
    assert!(waiting(&s, "cb-complete").await.is_empty());
    assert!(waiting(&s, "cb-success").await.is_empty());
    assert_eq!(
        s.stats().await.unwrap().working,
        0,
        "no callback job anywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_callback_with_taken_jid_gets_fresh_jid() {
    let (s, _, _) = fresh().await;
    let bid = "bid-taken-001";
    let taken = "cb-taken-0001";
    batch_new(
        &s,
        new_batch(
            bid,
            None,
            Some(callback(taken, "cb-taken", "TakenComplete")),
            None,
        ),
        T0,
    )
    .await;
    push(&s, vec![spec(taken).queue("other")], T0).await;
    commit(&s, bid, T0 + SEC).await;
    assert_eq!(counts(&s, bid, T0 + SEC).await, (0, 0, 0, "1", ""));
    let cb = take_callback(&s, "cb-taken", "TakenComplete", None, T0 + 2 * SEC).await;
    assert_ne!(cb.jid, taken, "the callback needs a fresh jid");
    assert!(cb.jid.len() >= 8, "a valid jid: {:?}", cb.jid);
    let other = must_get(&s, taken).await;
    assert_eq!(
        (other.state, other.queue.as_str(), other.jobtype.as_str()),
        (Enqueued, "other", "TestJob"),
        "the job holding the jid is untouched"
    );
    run_ok(&s, "other", taken, T0 + 3 * SEC).await;
    assert_eq!(
        counts(&s, bid, T0 + 3 * SEC).await,
        (0, 0, 0, "1", ""),
        "the other job's ACK is not the callback's"
    );
    assert_eq!(ack(&s, &cb.jid, T0 + 4 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, bid, T0 + 4 * SEC).await, (0, 0, 0, "2", ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_batch_holds_parent_callbacks() {
    let (s, _, _) = fresh().await;
    let (p, c1, c2) = ("bid-parent-01", "bid-child-001", "bid-child-002");
    batch_new(
        &s,
        new_batch(
            p,
            None,
            Some(callback("cb-p-done-01", "cb-pc", "ParentComplete")),
            Some(callback("cb-p-succ-01", "cb-ps", "ParentSuccess")),
        ),
        T0,
    )
    .await;
    let c1_complete = spec("cb-c1-done-1")
        .queue("cb-c1c")
        .jobtype("ChildComplete")
        .args("[]")
        .custom(r#"{"k":"v"}"#)
        .new_job(T0)
        .job;
    batch_new(
        &s,
        new_batch(
            c1,
            Some(p),
            Some(c1_complete),
            Some(callback("cb-c1-succ-1", "cb-c1s", "ChildSuccess")),
        ),
        T0,
    )
    .await;
    batch_new(
        &s,
        new_batch(
            c2,
            Some(p),
            None,
            Some(callback("cb-c2-succ-1", "cb-c2s", "Child2Success")),
        ),
        T0,
    )
    .await;
    assert_eq!(status(&s, c1, T0).await.parent_bid.as_deref(), Some(p));
    push(&s, vec![member("pc-mem-p0001", p)], T0).await;
    push(&s, vec![member("pc-mem-c0001", c1).queue("bq-c1")], T0).await;
    assert_eq!(counts(&s, p, T0).await, (1, 1, 0, "", ""));
    assert_eq!(counts(&s, c1, T0).await, (1, 1, 0, "", ""));

    commit(&s, p, T0 + SEC).await;
    run_ok(&s, "bq", "pc-mem-p0001", T0 + 2 * SEC).await;
    assert_eq!(
        counts(&s, p, T0 + 2 * SEC).await,
        (1, 0, 0, "", ""),
        "the parent waits for its uncommitted children"
    );
    commit(&s, c2, T0 + 3 * SEC).await;
    assert_eq!(counts(&s, c2, T0 + 3 * SEC).await, (0, 0, 0, "", "1"));
    let c2_success = take_callback(&s, "cb-c2s", "Child2Success", Some(p), T0 + 3 * SEC).await;
    assert_eq!(counts(&s, p, T0 + 3 * SEC).await, (1, 0, 0, "", ""));

    commit(&s, c1, T0 + 4 * SEC).await;
    assert_eq!(counts(&s, c1, T0 + 4 * SEC).await, (1, 1, 0, "", ""));
    run_ok(&s, "bq-c1", "pc-mem-c0001", T0 + 5 * SEC).await;
    assert_eq!(counts(&s, c1, T0 + 5 * SEC).await, (1, 0, 0, "1", ""));
    assert_eq!(counts(&s, p, T0 + 5 * SEC).await, (1, 0, 0, "", ""));
    let c1_done = take_callback(&s, "cb-c1c", "ChildComplete", Some(p), T0 + 5 * SEC).await;
    assert_eq!(
        custom_of(&c1_done).get("k").and_then(|v| v.as_str()),
        Some("v"),
        "the callback's own custom is kept: {}",
        c1_done.payload
    );
    assert_eq!(ack(&s, &c1_done.jid, T0 + 6 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, c1, T0 + 6 * SEC).await, (1, 0, 0, "2", "1"));
    assert_eq!(
        counts(&s, p, T0 + 6 * SEC).await,
        (1, 0, 0, "1", ""),
        "every child complete: the parent's complete callback"
    );
    let p_done = take_callback(&s, "cb-pc", "ParentComplete", None, T0 + 6 * SEC).await;
    assert_eq!(ack(&s, &p_done.jid, T0 + 7 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, p, T0 + 7 * SEC).await, (1, 0, 0, "2", ""));
    let c1_success = take_callback(&s, "cb-c1s", "ChildSuccess", Some(p), T0 + 7 * SEC).await;
    assert_eq!(
        ack(&s, &c1_success.jid, T0 + 8 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(&s, c1, T0 + 8 * SEC).await, (1, 0, 0, "2", "2"));
    assert_eq!(counts(&s, p, T0 + 8 * SEC).await, (1, 0, 0, "2", ""));
    assert!(waiting(&s, "cb-ps").await.is_empty());
    assert_eq!(
        ack(&s, &c2_success.jid, T0 + 9 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(&s, c2, T0 + 9 * SEC).await, (0, 0, 0, "", "2"));
    assert_eq!(counts(&s, p, T0 + 9 * SEC).await, (1, 0, 0, "2", "1"));
    let p_success = take_callback(&s, "cb-ps", "ParentSuccess", None, T0 + 10 * SEC).await;
    assert_eq!(
        ack(&s, &p_success.jid, T0 + 10 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(&s, p, T0 + 10 * SEC).await, (1, 0, 0, "2", "2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_counts_survive_reopen() {
    let (s, _, url) = fresh().await;
    let bid = "bid-reopen-01";
    batch_new(&s, both_callbacks(bid), T0).await;
    push(
        &s,
        vec![
            member("ro-mem-00001", bid),
            member("ro-mem-00002", bid),
            member("ro-mem-00003", bid),
        ],
        T0,
    )
    .await;
    run_ok(&s, "bq", "ro-mem-00001", T0 + SEC).await;
    run_fail(&s, "bq", "ro-mem-00002", T0 + 2 * SEC).await;
    let before = status(&s, bid, T0 + 2 * SEC).await;
    drop(s);
    let s = open(&url).await;
    assert_eq!(status(&s, bid, T0 + 2 * SEC).await, before);
    assert_eq!(counts(&s, bid, T0 + 2 * SEC).await, (3, 1, 1, "", ""));
    commit(&s, bid, T0 + 3 * SEC).await;
    run_ok(&s, "bq", "ro-mem-00003", T0 + 4 * SEC).await;
    drop(s);
    let s = open(&url).await;
    assert_eq!(counts(&s, bid, T0 + 4 * SEC).await, (3, 0, 1, "1", ""));
    let cb = take_callback(&s, "cb-complete", "BatchComplete", None, T0 + 5 * SEC).await;
    assert_eq!(ack(&s, &cb.jid, T0 + 5 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, bid, T0 + 5 * SEC).await, (3, 0, 1, "2", ""));
    commit(&s, bid, T0 + 6 * SEC).await;
    assert!(waiting(&s, "cb-complete").await.is_empty());
    let t = must_get(&s, "ro-mem-00002").await.at;
    assert_eq!(promote(&s, t).await, 1);
    run_ok(&s, "bq", "ro-mem-00002", t).await;
    assert_eq!(counts(&s, bid, t).await, (3, 0, 0, "2", "1"));
    assert_eq!(waiting(&s, "cb-success").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_batches_newest_first_in_pages() {
    let (s, _, _) = fresh().await;
    // Two batches share a creation time: the bid breaks the tie (bytewise: "B" < "a").
    let made = [
        ("bid-list-a", T0),
        ("bid-list-b", T0 + SEC),
        ("bid-list-c", T0 + SEC),
        ("bid-list-D", T0 + SEC),
        ("bid-list-d", T0 + 2 * SEC),
        ("bid-list-e", T0 + 3 * SEC),
    ];
    for (bid, t) in made {
        batch_new(&s, both_callbacks(bid), t).await;
        if bid != "bid-list-e" {
            commit(&s, bid, t).await;
        }
    }
    let now = T0 + 10 * SEC;
    let want = [
        "bid-list-e",
        "bid-list-d",
        "bid-list-c",
        "bid-list-b",
        "bid-list-D",
        "bid-list-a",
    ];
    let all = s.list_batches(None, 100, now).await.expect("list");
    let bids: Vec<&str> = all.iter().map(|b| b.bid.as_str()).collect();
    assert_eq!(bids, want);
    assert_eq!(all[0], status(&s, "bid-list-e", now).await);
    for size in [1, 2, 3] {
        let mut seen = Vec::new();
        let mut after = None;
        for _ in 0..10 {
            let page = s.list_batches(after.clone(), size, now).await.unwrap();
            assert!(page.len() as u64 <= size);
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.bid.clone()));
            seen.extend(page.into_iter().map(|b| b.bid));
        }
        assert_eq!(seen, want, "pages of {size}");
    }
    let late = T0 + 3 * SEC + BATCH_COMMIT_DEADLINE + SEC;
    let bids: Vec<String> = s
        .list_batches(None, 100, late)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.bid)
        .collect();
    assert_eq!(bids, &want[1..], "the expired uncommitted one is left out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_batch_expires() {
    let (s, _, _) = fresh().await;
    let (b1, b2) = ("bid-expire-01", "bid-expire-02");
    batch_new(&s, both_callbacks(b1), T0).await;
    assert!(try_status(&s, b1, T0 + BATCH_COMMIT_DEADLINE - SEC)
        .await
        .is_some());
    open_batch(&s, b1, T0 + 20 * MIN).await;
    let deadline = T0 + 20 * MIN + BATCH_COMMIT_DEADLINE;
    assert!(
        try_status(&s, b1, deadline - SEC).await.is_some(),
        "OPEN restarts the deadline"
    );
    let t = deadline + SEC;
    assert_eq!(try_status(&s, b1, t).await, None);
    assert_eq!(s.batch_open(b1.into(), t).await.unwrap(), Err(no_batch(b1)));
    assert_eq!(
        s.batch_commit(b1.into(), t).await.unwrap(),
        Err(no_batch(b1))
    );
    assert_eq!(
        push_results(&s, vec![member("exb-mem-0001", b1)], t).await[0],
        Err(PushError::NoSuchBatch(b1.to_string()))
    );
    assert!(waiting(&s, "cb-complete").await.is_empty(), "never fires");

    batch_new(&s, both_callbacks(b2), T0).await;
    push(&s, vec![member("exb-mem-0002", b2)], T0).await;
    commit(&s, b2, T0 + SEC).await;
    let later = T0 + 2 * HOUR;
    assert_eq!(
        counts(&s, b2, later).await,
        (1, 1, 0, "", ""),
        "a committed batch waits for its jobs"
    );
    open_batch(&s, b2, later).await;
    let t = later + BATCH_COMMIT_DEADLINE + SEC;
    assert_eq!(try_status(&s, b2, t).await, None, "reopened, not committed");
    run_ok(&s, "bq", "exb-mem-0002", t).await;
    assert!(waiting(&s, "cb-complete").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_ack_and_reaper_count_for_batches() {
    let (s, _, _) = fresh().await;
    let bid = "bid-late-0001";
    batch_new(&s, both_callbacks(bid), T0).await;
    push(
        &s,
        vec![
            member("late-mem-001", bid).reserve_for(60),
            member("late-mem-002", bid),
        ],
        T0,
    )
    .await;
    commit(&s, bid, T0).await;
    assert_eq!(
        fetch_jid(&s, &["bq"], T0).await.as_deref(),
        Some("late-mem-001")
    );
    assert_eq!(
        ack(&s, "late-mem-002", T0 + SEC).await,
        AckOutcome::AckedLate(Enqueued)
    );
    assert_eq!(counts(&s, bid, T0 + SEC).await, (2, 1, 0, "", ""));
    assert_eq!(reap(&s, T0 + 61 * SEC).await, 1);
    assert_eq!(state_of(&s, "late-mem-001").await, Some(Retry));
    assert_eq!(
        counts(&s, bid, T0 + 61 * SEC).await,
        (2, 0, 1, "1", ""),
        "the reaper's FAIL finished the last job"
    );
    assert_eq!(
        ack(&s, "late-mem-001", T0 + 62 * SEC).await,
        AckOutcome::AckedLate(Retry)
    );
    assert_eq!(counts(&s, bid, T0 + 62 * SEC).await, (2, 0, 0, "1", ""));
    let cb = take_callback(&s, "cb-complete", "BatchComplete", None, T0 + 63 * SEC).await;
    assert_eq!(ack(&s, &cb.jid, T0 + 63 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, bid, T0 + 63 * SEC).await, (2, 0, 0, "2", "1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_expired_at_fetch_counts_as_failed() {
    let (s, rec, _) = fresh().await;
    let bid = "bid-expmem-01";
    let custom = format!(r#"{{"bid":{},"expires_in":10}}"#, js(bid));
    batch_new(&s, both_callbacks(bid), T0).await;
    push(
        &s,
        vec![
            spec("xm-mem-00001").queue("bx1").custom(&custom),
            member("xm-mem-00003", bid),
        ],
        T0,
    )
    .await;
    commit(&s, bid, T0).await;
    let t = T0 + 11 * SEC;
    run_ok(&s, "bq", "xm-mem-00003", t).await;
    assert_eq!(counts(&s, bid, t).await, (2, 1, 0, "", ""));
    rec.take();
    assert_eq!(fetch_jid(&s, &["bx1"], t).await, None, "expired: dropped");
    assert_eq!(s.stats().await.unwrap().expired, 1);
    assert_eq!(
        counts(&s, bid, t).await,
        (2, 0, 1, "1", ""),
        "the expiry finished the last job, as a failure"
    );
    assert_eq!(
        rec.take(),
        vec!["cb-complete"],
        "the FETCH tells the listener"
    );
    let cb = take_callback(&s, "cb-complete", "BatchComplete", None, t).await;
    assert_eq!(ack(&s, &cb.jid, t).await, AckOutcome::Acked);
    assert_eq!(
        counts(&s, bid, t).await,
        (2, 0, 1, "2", ""),
        "expired members never succeed"
    );
}

/// Two stores (two nodes) on one database ACK the 60 members of one committed batch from 12
/// concurrent tasks: the counters are exact and each callback is enqueued exactly once, and
/// the complete callback's ACK racing the last members' ACKs still gives one success callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_acking_members_fire_each_callback_once() {
    let (a, _, url) = fresh().await;
    let b = open(&url).await;
    for round in 0..3 {
        let bid = format!("bid-race-{round}");
        batch_new(&a, both_callbacks(&bid), T0).await;
        let n = 60;
        push(
            &a,
            (0..n)
                .map(|i| member(&format!("race-{round}-{i:04}"), &bid))
                .collect(),
            T0,
        )
        .await;
        commit(&b, &bid, T0).await;
        for i in 0..n {
            let s = if i % 2 == 0 { &a } else { &b };
            assert!(fetch_jid(s, &["bq"], T0).await.is_some());
        }
        let (sa, sb) = (Arc::new(open(&url).await), Arc::new(open(&url).await));
        let tasks: Vec<_> = (0..12)
            .map(|t| {
                let s = if t % 2 == 0 { sa.clone() } else { sb.clone() };
                let jids: Vec<String> = (0..n)
                    .filter(|i| i % 12 == t)
                    .map(|i| format!("race-{round}-{i:04}"))
                    .collect();
                tokio::spawn(async move {
                    for jid in jids {
                        assert_eq!(ack(&s, &jid, T0 + SEC).await, AckOutcome::Acked);
                    }
                })
            })
            .collect();
        for t in futures::future::join_all(tasks).await {
            t.unwrap();
        }
        assert_eq!(counts(&a, &bid, T0 + SEC).await, (60, 0, 0, "1", ""));
        let cbs = waiting(&a, "cb-complete").await;
        assert_eq!(cbs, vec![format!("cbc-{bid}")], "one complete callback");
        let cb = take_callback(&a, "cb-complete", "BatchComplete", None, T0 + 2 * SEC).await;
        // Both stores try to finish the callback at once: one ACK wins, one success callback.
        let (x, y) = tokio::join!(
            ack(&sa, &cb.jid, T0 + 3 * SEC),
            ack(&sb, &cb.jid, T0 + 3 * SEC)
        );
        let mut outs = [x, y];
        outs.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(outs, [AckOutcome::Acked, AckOutcome::NotWorking]);
        assert_eq!(counts(&a, &bid, T0 + 3 * SEC).await, (60, 0, 0, "2", "1"));
        assert_eq!(waiting(&a, "cb-success").await, vec![format!("cbs-{bid}")]);
        run_ok(&a, "cb-success", &format!("cbs-{bid}"), T0 + 4 * SEC).await;
        assert_eq!(counts(&a, &bid, T0 + 4 * SEC).await, (60, 0, 0, "2", "2"));
        let st = a.stats().await.unwrap();
        assert_eq!((st.working, st.enqueued()), (0, 0));
    }
}

/// Members pushed on one store while the other fetches and ACKs them as they come, then the
/// commit racing the last ACKs: the batch's row lock orders them, every member is counted and
/// the complete callback fires once, after the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_commit_and_acks_are_all_counted() {
    let (a, _, url) = fresh().await;
    let b = Arc::new(open(&url).await);
    let a = Arc::new(a);
    let bid = "bid-pushrace";
    batch_new(&a, both_callbacks(bid), T0).await;
    let pusher = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                push(&a, vec![member(&format!("pushrace-{i:04}"), bid)], T0).await;
            }
        })
    };
    let worker = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut done = 0;
            while done < 40 {
                match fetch_jid(&b, &["bq"], T0).await {
                    Some(jid) => {
                        assert_eq!(ack(&b, &jid, T0).await, AckOutcome::Acked);
                        done += 1;
                    }
                    None => tokio::task::yield_now().await,
                }
            }
        })
    };
    pusher.await.unwrap();
    commit(&b, bid, T0).await;
    worker.await.unwrap();
    assert_eq!(counts(&a, bid, T0).await, (40, 0, 0, "1", ""));
    assert_eq!(waiting(&a, "cb-complete").await.len(), 1);
}

// ---- tracking ---------------------------------------------------------------------------------

fn tracked(jid: &str, queue: &str) -> Spec {
    spec(jid).queue(queue).custom(r#"{"track":1}"#)
}

async fn track(s: &PgStore, jid: &str, now: Millis) -> Option<Tracked> {
    s.track_get(jid.to_string(), now).await.expect("track_get")
}

async fn track_state(s: &PgStore, jid: &str, now: Millis) -> Option<TrackState> {
    track(s, jid, now).await.map(|t| t.state)
}

async fn track_set(
    s: &PgStore,
    jid: &str,
    percent: Option<u8>,
    desc: Option<&str>,
    reserve_until: Option<Millis>,
    now: Millis,
) -> bool {
    s.track_set(
        TrackUpdate {
            jid: jid.to_string(),
            percent,
            desc: desc.map(str::to_string),
            reserve_until,
        },
        now,
    )
    .await
    .expect("track_set")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_follows_job_states() {
    let (s, _, _) = fresh().await;
    push(
        &s,
        vec![
            tracked("tr-sched-001", "tq0").at(T0 + HOUR),
            tracked("tr-flow-0001", "tq1"),
            spec("tr-true-0001")
                .queue("tq2")
                .retry(-1)
                .custom(r#"{"track":true}"#),
            tracked("tr-disc-0001", "tq3").retry(0),
            spec("tr-exp-00001")
                .queue("tq7")
                .custom(r#"{"track":1,"expires_in":10}"#),
        ],
        T0,
    )
    .await;
    assert_eq!(
        track(&s, "tr-flow-0001", T0).await,
        Some(Tracked {
            jid: "tr-flow-0001".to_string(),
            state: TrackState::Enqueued,
            percent: None,
            desc: None,
            updated_at: T0,
        })
    );
    assert_eq!(
        track_state(&s, "tr-sched-001", T0).await,
        Some(TrackState::Enqueued),
        "scheduled shows as enqueued"
    );
    assert_eq!(
        fetch_jid(&s, &["tq1"], T0 + SEC).await.as_deref(),
        Some("tr-flow-0001")
    );
    let t = track(&s, "tr-flow-0001", T0 + SEC).await.unwrap();
    assert_eq!((t.state, t.updated_at), (TrackState::Working, T0 + SEC));
    fail(&s, "tr-flow-0001", T0 + 2 * SEC).await;
    let t = track(&s, "tr-flow-0001", T0 + 2 * SEC).await.unwrap();
    assert_eq!((t.state, t.updated_at), (TrackState::Failed, T0 + 2 * SEC));

    run_fail(&s, "tq2", "tr-true-0001", T0 + 2 * SEC).await;
    assert_eq!(
        track_state(&s, "tr-true-0001", T0 + 2 * SEC).await,
        Some(TrackState::Dead),
        "track: true also tracks"
    );
    assert_eq!(
        run_fail(&s, "tq3", "tr-disc-0001", T0 + 2 * SEC).await,
        FailOutcome::Discarded
    );
    assert_eq!(get(&s, "tr-disc-0001").await, None);
    assert_eq!(
        track_state(&s, "tr-disc-0001", T0 + 2 * SEC).await,
        Some(TrackState::Failed),
        "discarded after a failure"
    );
    assert_eq!(fetch_jid(&s, &["tq7"], T0 + 11 * SEC).await, None);
    assert_eq!(
        track(&s, "tr-exp-00001", T0 + 11 * SEC).await,
        None,
        "expired"
    );

    let next_at = must_get(&s, "tr-flow-0001").await.at;
    assert!(next_at < T0 + HOUR);
    promote(&s, next_at).await;
    let t = track(&s, "tr-flow-0001", next_at).await.unwrap();
    assert_eq!(
        (t.state, t.updated_at),
        (TrackState::Enqueued, T0 + 2 * SEC),
        "a promotion is no update"
    );
    run_ok(&s, "tq1", "tr-flow-0001", next_at + SEC).await;
    let t = track(&s, "tr-flow-0001", next_at + SEC).await.unwrap();
    assert_eq!(
        (t.state, t.updated_at),
        (TrackState::Success, next_at + SEC)
    );

    // A jid used again starts afresh.
    push(&s, vec![tracked("tr-flow-0001", "tq1")], next_at + 2 * SEC).await;
    assert_eq!(
        track(&s, "tr-flow-0001", next_at + 2 * SEC).await,
        Some(Tracked {
            jid: "tr-flow-0001".to_string(),
            state: TrackState::Enqueued,
            percent: None,
            desc: None,
            updated_at: next_at + 2 * SEC,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_set_keeps_progress_and_extends_reservation() {
    let (s, _, url) = fresh().await;
    push(
        &s,
        vec![
            tracked("ts-work-0001", "tsq").reserve_for(60),
            tracked("ts-wait-0001", "tsw"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_jid(&s, &["tsq"], T0).await.as_deref(),
        Some("ts-work-0001")
    );
    assert!(
        track_set(
            &s,
            "ts-work-0001",
            Some(10),
            Some("loading"),
            None,
            T0 + 10 * SEC
        )
        .await
    );
    assert_eq!(
        track(&s, "ts-work-0001", T0 + 10 * SEC).await,
        Some(Tracked {
            jid: "ts-work-0001".to_string(),
            state: TrackState::Working,
            percent: Some(10),
            desc: Some("loading".to_string()),
            updated_at: T0 + 10 * SEC,
        })
    );
    assert!(track_set(&s, "ts-work-0001", Some(50), None, None, T0 + 11 * SEC).await);
    assert!(
        track_set(
            &s,
            "ts-work-0001",
            None,
            Some("halfway"),
            None,
            T0 + 12 * SEC
        )
        .await
    );
    let t = track(&s, "ts-work-0001", T0 + 12 * SEC).await.unwrap();
    assert_eq!((t.percent, t.desc.as_deref()), (Some(50), Some("halfway")));

    track_set(
        &s,
        "ts-work-0001",
        None,
        None,
        Some(T0 + 10 * MIN),
        T0 + 20 * SEC,
    )
    .await;
    let j = must_get(&s, "ts-work-0001").await;
    let r = j.reservation.clone().unwrap();
    assert_eq!(
        (r.reserved_at, r.expires_at, j.at),
        (T0, T0 + 10 * MIN, T0 + 10 * MIN),
        "reservation extended"
    );
    track_set(
        &s,
        "ts-work-0001",
        None,
        None,
        Some(T0 + 5 * MIN),
        T0 + 25 * SEC,
    )
    .await;
    assert_eq!(
        must_get(&s, "ts-work-0001").await.at,
        T0 + 10 * MIN,
        "never shortened"
    );
    assert!(
        track_set(
            &s,
            "ts-wait-0001",
            Some(5),
            None,
            Some(T0 + HOUR),
            T0 + 25 * SEC
        )
        .await,
        "an enqueued tracked job stores its progress"
    );
    let w = must_get(&s, "ts-wait-0001").await;
    assert_eq!((w.state, w.reservation), (Enqueued, None));

    drop(s);
    let s = open(&url).await;
    assert_eq!(must_get(&s, "ts-work-0001").await.at, T0 + 10 * MIN);
    assert_eq!(reap(&s, T0 + 61 * SEC).await, 0);
    assert_eq!(reap(&s, T0 + 10 * MIN - SEC).await, 0);
    assert_eq!(state_of(&s, "ts-work-0001").await, Some(Working));
    let now = T0 + 10 * MIN - SEC;
    track_set(&s, "ts-work-0001", None, None, Some(T0 + 3 * DAY), now).await;
    assert_eq!(
        must_get(&s, "ts-work-0001").await.at,
        now + DAY,
        "capped at a day after now"
    );
    assert_eq!(reap(&s, now + DAY - SEC).await, 0);
    assert_eq!(reap(&s, now + DAY).await, 1);
    assert_eq!(
        track(&s, "ts-work-0001", now + DAY).await,
        Some(Tracked {
            jid: "ts-work-0001".to_string(),
            state: TrackState::Failed,
            percent: Some(50),
            desc: Some("halfway".to_string()),
            updated_at: now + DAY,
        }),
        "the reaper's FAIL is an update; progress is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_data_outlives_its_job_by_retention() {
    let (s, _, _) = fresh().await;
    push(
        &s,
        vec![
            tracked("tp-ack-00001", "tpa"),
            tracked("tp-disc-0001", "tpb").retry(0),
            tracked("tp-wait-0001", "tpc"),
        ],
        T0,
    )
    .await;
    run_ok(&s, "tpa", "tp-ack-00001", T0 + SEC).await;
    run_fail(&s, "tpb", "tp-disc-0001", T0 + 2 * SEC).await;
    let end = T0 + SEC + TRACK_RETENTION;
    assert_eq!(
        track_state(&s, "tp-ack-00001", end - 1).await,
        Some(TrackState::Success)
    );
    assert_eq!(track(&s, "tp-ack-00001", end).await, None, "past retention");
    assert_eq!(
        track_state(&s, "tp-disc-0001", end).await,
        Some(TrackState::Failed)
    );
    assert_eq!(track(&s, "tp-disc-0001", end + SEC).await, None);
    let late = T0 + 2 * HOUR;
    assert_eq!(
        track(&s, "tp-wait-0001", late)
            .await
            .map(|t| (t.state, t.updated_at)),
        Some((TrackState::Enqueued, T0)),
        "kept while the job exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_job_has_no_tracking() {
    let (s, _, _) = fresh().await;
    push(
        &s,
        vec![
            spec("un-plain-001").queue("uqa").reserve_for(60),
            spec("un-zero-0001").queue("uqb").custom(r#"{"track":0}"#),
            spec("un-two-00001").queue("uqb").custom(r#"{"track":2}"#),
        ],
        T0,
    )
    .await;
    for jid in [
        "un-plain-001",
        "un-zero-0001",
        "un-two-00001",
        "un-known-001",
    ] {
        assert_eq!(track(&s, jid, T0).await, None, "{jid}");
    }
    assert!(!track_set(&s, "un-zero-0001", Some(10), Some("x"), None, T0).await);
    assert!(!track_set(&s, "un-known-001", Some(10), Some("x"), None, T0).await);
    assert_eq!(track(&s, "un-zero-0001", T0).await, None);
    assert_eq!(
        fetch_jid(&s, &["uqa"], T0).await.as_deref(),
        Some("un-plain-001")
    );
    assert!(
        !track_set(
            &s,
            "un-plain-001",
            Some(20),
            None,
            Some(T0 + 5 * MIN),
            T0 + 10 * SEC
        )
        .await
    );
    assert_eq!(track(&s, "un-plain-001", T0 + 10 * SEC).await, None);
    let j = must_get(&s, "un-plain-001").await;
    assert_eq!(
        (j.at, j.reservation.map(|r| r.expires_at)),
        (T0 + 5 * MIN, Some(T0 + 5 * MIN)),
        "the reservation of an untracked job is extended too"
    );
}

// ---- throttles --------------------------------------------------------------------------------

fn throttle(queue: &str, limit: ThrottleLimit, timeout: Option<Millis>) -> Throttle {
    Throttle {
        queue: queue.to_string(),
        limit,
        timeout,
    }
}

async fn fetch_wid(s: &PgStore, queues: &[&str], wid: &str, now: Millis) -> Option<String> {
    fetch_as(s, queues, wid, now).await.map(|j| j.jid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_concurrency_limits_fetch() {
    let (s, rec, url) = fresh().await;
    s.set_throttles(vec![throttle("thq", ThrottleLimit::Concurrency(2), None)]);
    push(
        &s,
        vec![
            spec("thc-job-0001").queue("thq"),
            spec("thc-job-0002").queue("thq"),
            spec("thc-job-0003").queue("thq"),
            spec("thc-job-0004").queue("thq"),
            spec("thc-job-0005").queue("thq"),
            spec("thc-free-001").queue("free"),
        ],
        T0,
    )
    .await;
    let f = |q: &'static str, w: &'static str, t: Millis| {
        let s = &s;
        async move { fetch_wid(s, &[q], w, t).await }
    };
    assert_eq!(f("thq", "wid-a", T0).await.as_deref(), Some("thc-job-0001"));
    assert_eq!(f("thq", "wid-b", T0).await.as_deref(), Some("thc-job-0002"));
    assert_eq!(f("thq", "wid-c", T0).await, None, "limit reached");
    assert_eq!(f("thq", "wid-a", T0).await, None);
    assert_eq!(
        f("free", "wid-a", T0).await.as_deref(),
        Some("thc-free-001"),
        "other queues are not throttled"
    );
    rec.take();
    assert_eq!(ack(&s, "thc-job-0001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        rec.take(),
        vec!["thq"],
        "a freed slot wakes waiting FETCHes"
    );
    assert_eq!(
        f("thq", "wid-c", T0 + SEC).await.as_deref(),
        Some("thc-job-0003")
    );
    fail(&s, "thc-job-0002", T0 + 2 * SEC).await;
    assert_eq!(
        f("thq", "wid-c", T0 + 2 * SEC).await.as_deref(),
        Some("thc-job-0004")
    );
    assert_eq!(f("thq", "wid-d", T0 + 2 * SEC).await, None);
    assert_eq!(waiting(&s, "thq").await, vec!["thc-job-0005"]);
    s.set_throttles(vec![]);
    assert_eq!(
        f("thq", "wid-d", T0 + 3 * SEC).await.as_deref(),
        Some("thc-job-0005"),
        "throttles replaced by none"
    );
    push(&s, vec![spec("thc-job-0006").queue("thq")], T0 + 3 * SEC).await;
    s.set_throttles(vec![throttle("thq", ThrottleLimit::Concurrency(1), None)]);
    assert_eq!(f("thq", "wid-d", T0 + 3 * SEC).await, None);
    let other = open(&url).await;
    assert_eq!(
        fetch_wid(&other, &["thq"], "wid-d", T0 + 4 * SEC)
            .await
            .as_deref(),
        Some("thc-job-0006"),
        "throttles are not persisted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_per_worker_limits_fetch() {
    let (s, _, _) = fresh().await;
    s.set_throttles(vec![throttle("pwq", ThrottleLimit::PerWorker(1), None)]);
    push(
        &s,
        vec![
            spec("thw-job-0001").queue("pwq"),
            spec("thw-job-0002").queue("pwq"),
            spec("thw-job-0003").queue("pwq"),
            spec("thw-job-0004").queue("pwq"),
            spec("thw-oth-0001").queue("oth"),
            spec("thw-oth-0002").queue("oth"),
        ],
        T0,
    )
    .await;
    let f = |q: &'static str, w: &'static str, t: Millis| {
        let s = &s;
        async move { fetch_wid(s, &[q], w, t).await }
    };
    assert_eq!(f("pwq", "wid-a", T0).await.as_deref(), Some("thw-job-0001"));
    assert_eq!(f("pwq", "wid-a", T0).await, None, "wid-a is at its limit");
    assert_eq!(f("pwq", "wid-b", T0).await.as_deref(), Some("thw-job-0002"));
    assert_eq!(f("pwq", "wid-b", T0).await, None);
    assert_eq!(f("oth", "wid-a", T0).await.as_deref(), Some("thw-oth-0001"));
    assert_eq!(f("oth", "wid-a", T0).await.as_deref(), Some("thw-oth-0002"));
    assert_eq!(f("pwq", "wid-a", T0).await, None);
    assert_eq!(ack(&s, "thw-job-0001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        f("pwq", "wid-a", T0 + SEC).await.as_deref(),
        Some("thw-job-0003")
    );
    assert_eq!(f("pwq", "wid-b", T0 + SEC).await, None);
    assert_eq!(
        f("pwq", "wid-c", T0 + SEC).await.as_deref(),
        Some("thw-job-0004")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_timeout_reclaims_slot_and_throttled_queue_falls_through() {
    let (s, _, _) = fresh().await;
    s.set_throttles(vec![
        throttle("ttq", ThrottleLimit::Concurrency(1), Some(60 * SEC)),
        throttle("hot", ThrottleLimit::Concurrency(1), None),
    ]);
    push(
        &s,
        vec![
            spec("tht-job-0001").queue("ttq"),
            spec("tht-job-0002").queue("ttq"),
            spec("tht-job-0003").queue("ttq"),
            spec("thf-hot-0001").queue("hot"),
            spec("thf-hot-0002").queue("hot"),
            spec("thf-cold-001").queue("cold"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_wid(&s, &["ttq"], "wid-a", T0).await.as_deref(),
        Some("tht-job-0001")
    );
    assert_eq!(fetch_wid(&s, &["ttq"], "wid-b", T0 + 59 * SEC).await, None);
    assert_eq!(
        fetch_wid(&s, &["ttq"], "wid-b", T0 + 60 * SEC)
            .await
            .as_deref(),
        Some("tht-job-0002"),
        "fetched 60 s ago: the slot is reclaimed"
    );
    assert_eq!(fetch_wid(&s, &["ttq"], "wid-c", T0 + 61 * SEC).await, None);
    let j = must_get(&s, "tht-job-0001").await;
    assert_eq!(j.state, Working, "the job keeps its reservation");
    assert_eq!(j.reservation.map(|r| r.reserved_at), Some(T0));

    let qs = ["hot", "cold"];
    assert_eq!(
        fetch_wid(&s, &qs, "wid-a", T0).await.as_deref(),
        Some("thf-hot-0001")
    );
    assert_eq!(
        fetch_wid(&s, &qs, "wid-a", T0).await.as_deref(),
        Some("thf-cold-001")
    );
    assert_eq!(fetch_wid(&s, &qs, "wid-a", T0).await, None);
    assert_eq!(ack(&s, "thf-hot-0001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        fetch_wid(&s, &qs, "wid-a", T0 + SEC).await.as_deref(),
        Some("thf-hot-0002")
    );
}

/// Two stores with the same throttle, 16 concurrent FETCHes of a queue limited to 3: never
/// more than 3 working at once, across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_holds_across_two_stores() {
    let (a, _, url) = fresh().await;
    let b = open(&url).await;
    let limit = vec![throttle("lim", ThrottleLimit::Concurrency(3), None)];
    a.set_throttles(limit.clone());
    b.set_throttles(limit);
    push(
        &a,
        (0..20)
            .map(|i| spec(&format!("lim-{i:04}")).queue("lim"))
            .collect(),
        T0,
    )
    .await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { fetch_wid(&s, &["lim"], &format!("w{i}"), T0).await })
        })
        .collect();
    let got: BTreeSet<String> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap())
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(a.stats().await.unwrap().working, 3);
}

// ---- the sweep's part (sweep_expired, src/ops.rs, calls the batch and tracking housekeeping) --

async fn sweep(s: &PgStore, now: Millis) -> usize {
    s.sweep_expired(now, 1000).await.expect("sweep_expired")
}

/// A member job that expires counts as failed, whether dropped at FETCH or by the sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_member_job_counts_as_failed() {
    let (s, _, _) = fresh().await;
    let bid = "bid-expmem-01";
    let custom = format!(r#"{{"bid":{},"expires_in":10}}"#, js(bid));
    batch_new(&s, both_callbacks(bid), T0).await;
    push(
        &s,
        vec![
            spec("xm-mem-00001").queue("bx1").custom(&custom),
            spec("xm-mem-00002").queue("bx2").custom(&custom),
            member("xm-mem-00003", bid),
        ],
        T0,
    )
    .await;
    commit(&s, bid, T0).await;
    let t = T0 + 11 * SEC;
    assert_eq!(fetch_jid(&s, &["bx1"], t).await, None);
    assert_eq!(sweep(&s, t).await, 1);
    assert_eq!(s.stats().await.unwrap().expired, 2);
    assert_eq!(counts(&s, bid, t).await, (3, 1, 2, "", ""));
    run_ok(&s, "bq", "xm-mem-00003", t).await;
    assert_eq!(counts(&s, bid, t).await, (3, 0, 2, "1", ""));
    let cb = take_callback(&s, "cb-complete", "BatchComplete", None, t).await;
    assert_eq!(ack(&s, &cb.jid, t).await, AckOutcome::Acked);
    assert_eq!(counts(&s, bid, t).await, (3, 0, 2, "2", ""));
}

/// The sweep drops uncommitted batches past their deadline (they never fire, and a parent stops
/// waiting for them: here it then fires), and purges a batch BATCH_RETENTION after it succeeded
/// and one that never succeeds `dead_retention` after its last change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_drops_expired_and_finished_batches() {
    let url = fresh_db().await;
    let retention = 2 * DAY;
    let (s, _) = open_with(
        &url,
        StoreConfig {
            dead_retention: retention,
            ..StoreConfig::default()
        },
    )
    .await;
    // A parent with two children that are never committed.
    let (p, c) = ("bid-sw-parent", "bid-sw-child1");
    batch_new(
        &s,
        new_batch(
            p,
            None,
            Some(callback("cb-swp-done", "cb-swp", "ParentComplete")),
            None,
        ),
        T0,
    )
    .await;
    let mut nb = both_callbacks(c);
    nb.parent_bid = Some(p.into());
    batch_new(&s, nb, T0).await;
    let mut nb = both_callbacks(c);
    nb.bid = "bid-sw-child2".into();
    nb.parent_bid = Some(p.into());
    batch_new(&s, nb, T0).await;
    commit(&s, p, T0).await;
    assert_eq!(
        counts(&s, p, T0).await,
        (0, 0, 0, "", ""),
        "waits for its child"
    );
    let t = T0 + BATCH_COMMIT_DEADLINE;
    sweep(&s, t).await;
    assert_eq!(try_status(&s, "bid-sw-child2", t).await, None);
    assert_eq!(try_status(&s, c, t).await, None);
    assert_eq!(
        counts(&s, p, t).await,
        (0, 0, 0, "1", ""),
        "the parent stopped waiting for its expired child"
    );
    assert!(
        waiting(&s, "cb-complete").await.is_empty(),
        "the child never fired"
    );

    let (ok, bad) = ("bid-purge-ok1", "bid-purge-bad");
    batch_new(
        &s,
        new_batch(
            ok,
            None,
            None,
            Some(callback("cb-purge-ok1", "cb-ok", "OkSuccess")),
        ),
        T0,
    )
    .await;
    commit(&s, ok, T0).await;
    let cb = take_callback(&s, "cb-ok", "OkSuccess", None, T0 + SEC).await;
    assert_eq!(ack(&s, &cb.jid, T0 + 2 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, ok, T0 + 2 * SEC).await, (0, 0, 0, "", "2"));
    batch_new(
        &s,
        new_batch(
            bad,
            None,
            Some(callback("cb-purge-bad", "cb-bad", "BadComplete")),
            None,
        ),
        T0,
    )
    .await;
    push(&s, vec![member("pg-mem-00001", bad).retry(-1)], T0).await;
    commit(&s, bad, T0).await;
    assert_eq!(
        run_fail(&s, "bq", "pg-mem-00001", T0 + SEC).await,
        FailOutcome::Dead
    );
    let cb = take_callback(&s, "cb-bad", "BadComplete", None, T0 + 2 * SEC).await;
    assert_eq!(ack(&s, &cb.jid, T0 + 3 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(&s, bad, T0 + 3 * SEC).await, (1, 0, 1, "2", ""));

    let t = T0 + 3 * SEC + retention;
    sweep(&s, t - SEC).await;
    assert!(try_status(&s, bad, t - SEC).await.is_some());
    sweep(&s, t).await;
    assert_eq!(
        try_status(&s, bad, t).await,
        None,
        "never succeeds: dead_retention"
    );
    assert!(
        try_status(&s, ok, t).await.is_some(),
        "kept for BATCH_RETENTION"
    );
    let t = T0 + 2 * SEC + werk_store::BATCH_RETENTION;
    sweep(&s, t - SEC).await;
    assert!(try_status(&s, ok, t - SEC).await.is_some());
    sweep(&s, t).await;
    assert_eq!(
        try_status(&s, ok, t).await,
        None,
        "purged after BATCH_RETENTION"
    );
    assert_eq!(s.batch_open(ok.into(), t).await.unwrap(), Err(no_batch(ok)));
}

/// The sweep purges tracking data of gone jobs past TRACK_RETENTION; a waiting job's is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_data_purged_by_the_sweep() {
    let (s, _, _) = fresh().await;
    push(
        &s,
        vec![
            tracked("tp-ack-00001", "tpa"),
            tracked("tp-disc-0001", "tpb").retry(0),
            tracked("tp-wait-0001", "tpc"),
        ],
        T0,
    )
    .await;
    run_ok(&s, "tpa", "tp-ack-00001", T0 + SEC).await;
    run_fail(&s, "tpb", "tp-disc-0001", T0 + 2 * SEC).await;
    let late = T0 + 2 * HOUR;
    sweep(&s, late).await;
    assert_eq!(
        track(&s, "tp-ack-00001", T0 + 2 * SEC).await,
        None,
        "purged by the sweep (asked with an earlier clock)"
    );
    assert_eq!(track(&s, "tp-disc-0001", T0 + 2 * SEC).await, None);
    assert_eq!(
        track(&s, "tp-wait-0001", late)
            .await
            .map(|t| (t.state, t.updated_at)),
        Some((TrackState::Enqueued, T0))
    );
}
