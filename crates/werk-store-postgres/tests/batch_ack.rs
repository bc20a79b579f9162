//! Batched ACKs (the `batch_ack` module, issue 12) against a real PostgreSQL: many concurrent
//! ACKs with mixed outcomes applied in shared transactions, and the fallback to one
//! transaction per ACK when a batched transaction fails.
//!
//! Batches are formed deterministically: the test holds row locks on [`ACK_LANES`] "blocker"
//! jobs, ACKs them one at a time (each occupies a lane, waiting for the lock), sends the ACKs
//! under test while every lane is busy, then releases the locks: the queued ACKs are taken
//! together.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;
use werk_core::tracking::TrackState;
use werk_core::{Job, JobState};
use werk_store::{AckOutcome, NewBatch, NewJob, StoreError};
use werk_store_postgres::{PgStore, ACK_LANES};

mod lanes_util;
use lanes_util::{fresh, job, wait_for_lock_waiters, wait_queued, SEC, T0};

fn plain(jid: &str, queue: &str, custom: &str) -> NewJob {
    job(&format!(
        r#"{{"jid":"{jid}","jobtype":"T","queue":"{queue}","args":["{jid}"],"custom":{custom}}}"#
    ))
}

async fn push(s: &PgStore, jobs: Vec<NewJob>) {
    let res = s.push(jobs, T0).await.expect("push");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
}

/// Fetches every job of `queue` (they become working).
async fn fetch_all(s: &PgStore, queue: &str) -> usize {
    let mut n = 0;
    while s
        .fetch(vec![queue.to_string()], "w1".into(), T0 + SEC)
        .await
        .expect("fetch")
        .is_some()
    {
        n += 1;
    }
    n
}

type AckTask = tokio::task::JoinHandle<werk_store::Result<AckOutcome>>;

/// Occupies every ACK lane: row-locks the blocker jobs (working, queue `blk`) in a
/// transaction of a connection of its own, then ACKs them one at a time, each waiting until
/// its lane waits for the lock. Returns the sender that commits that transaction (releasing
/// the lanes) and the blockers' ACK tasks.
async fn occupy_lanes(s: &Arc<PgStore>) -> (oneshot::Sender<()>, Vec<AckTask>) {
    let blockers: Vec<String> = (0..ACK_LANES).map(|i| format!("blocker-{i}")).collect();
    push(s, blockers.iter().map(|j| plain(j, "blk", "{}")).collect()).await;
    assert_eq!(fetch_all(s, "blk").await, ACK_LANES);
    let (release, released) = oneshot::channel::<()>();
    let (locked, is_locked) = oneshot::channel::<()>();
    let (s2, locks) = (s.clone(), blockers.clone());
    tokio::spawn(async move {
        let holder = s2.pool().get().await.expect("connection");
        holder.batch_execute("BEGIN").await.unwrap();
        holder
            .query(
                "SELECT 1 FROM jobs WHERE jid = ANY($1) FOR UPDATE",
                &[&locks],
            )
            .await
            .unwrap();
        locked.send(()).unwrap();
        let _ = released.await;
        holder.batch_execute("COMMIT").await.unwrap();
    });
    is_locked.await.unwrap();
    let mut tasks = Vec::new();
    for (i, jid) in blockers.into_iter().enumerate() {
        let s2 = s.clone();
        tasks.push(tokio::spawn(async move { s2.ack(jid, T0 + 2 * SEC).await }));
        wait_for_lock_waiters(s, i + 1, "ACK").await;
    }
    (release, tasks)
}

async fn delete_attempts(s: &PgStore) -> i64 {
    let c = s.pool().get().await.expect("connection");
    c.query_one("SELECT last_value FROM delete_attempts", &[])
        .await
        .unwrap()
        .get(0)
}

/// Counts every DELETE statement on `jobs` and the rows each deleted (transactional log),
/// plus the statements attempted (a sequence: survives rollbacks).
async fn log_deletes(s: &PgStore) {
    let c = s.pool().get().await.expect("connection");
    c.batch_execute(
        "CREATE TABLE delete_log (n bigint NOT NULL);
         CREATE SEQUENCE delete_attempts;
         CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO delete_log SELECT count(*) FROM gone; RETURN NULL; END $$;
         CREATE TRIGGER log_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS gone
             FOR EACH STATEMENT EXECUTE FUNCTION log_delete();
         CREATE FUNCTION count_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM nextval('delete_attempts'); RETURN NULL; END $$;
         CREATE TRIGGER count_attempt BEFORE DELETE ON jobs
             FOR EACH STATEMENT EXECUTE FUNCTION count_attempt();",
    )
    .await
    .unwrap();
}

async fn largest_delete(s: &PgStore) -> i64 {
    let c = s.pool().get().await.expect("connection");
    c.query_one("SELECT coalesce(max(n), 0) FROM delete_log", &[])
        .await
        .unwrap()
        .get(0)
}

fn callback(jid: &str, queue: &str) -> Job {
    job(&format!(
        r#"{{"jid":"{jid}","jobtype":"CB","queue":"{queue}","args":[]}}"#
    ))
    .job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acks_with_mixed_outcomes_share_a_transaction() {
    let s = fresh().await;
    log_deletes(&s).await;

    // Working jobs: plain, batch members, unique, tracked, and ones ACKed twice.
    let plain_jids: Vec<String> = (0..40).map(|i| format!("plain-{i:03}")).collect();
    push(&s, plain_jids.iter().map(|j| plain(j, "q", "{}")).collect()).await;
    let nb = NewBatch {
        bid: "b1".into(),
        parent_bid: None,
        description: None,
        complete: Some(callback("cb-complete-b1", "cbc")),
        success: Some(callback("cb-success-b1", "cbs")),
    };
    assert_eq!(s.batch_new(nb, T0).await.unwrap(), Ok(()));
    let members: Vec<String> = (0..10).map(|i| format!("member-{i:02}")).collect();
    push(
        &s,
        members
            .iter()
            .map(|j| plain(j, "q", r#"{"bid":"b1"}"#))
            .collect(),
    )
    .await;
    assert_eq!(s.batch_commit("b1".into(), T0).await.unwrap(), Ok(()));
    let uniques: Vec<String> = (0..5).map(|i| format!("unique-{i}")).collect();
    push(
        &s,
        uniques
            .iter()
            .map(|j| plain(j, "q", r#"{"unique_for":3600}"#))
            .collect(),
    )
    .await;
    let tracked: Vec<String> = (0..3).map(|i| format!("tracked-{i}")).collect();
    push(
        &s,
        tracked
            .iter()
            .map(|j| plain(j, "q", r#"{"track":1}"#))
            .collect(),
    )
    .await;
    let twice: Vec<String> = (0..5).map(|i| format!("twice-{i:03}")).collect();
    push(&s, twice.iter().map(|j| plain(j, "q", "{}")).collect()).await;
    let done: Vec<String> = (0..3).map(|i| format!("done-{i:04}")).collect();
    push(&s, done.iter().map(|j| plain(j, "q", "{}")).collect()).await;
    assert_eq!(fetch_all(&s, "q").await, 40 + 10 + 5 + 3 + 5 + 3);
    // Already ACKed (one at a time, before the lanes are blocked).
    for j in &done {
        assert_eq!(
            s.ack(j.clone(), T0 + 2 * SEC).await.unwrap(),
            AckOutcome::Acked
        );
    }
    // Enqueued (a late ACK), scheduled (not ACKable) and unknown jobs.
    let enqueued: Vec<String> = (0..5).map(|i| format!("enqueued-{i}")).collect();
    push(&s, enqueued.iter().map(|j| plain(j, "e", "{}")).collect()).await;
    let scheduled: Vec<String> = (0..2).map(|i| format!("scheduled-{i}")).collect();
    push(
        &s,
        scheduled
            .iter()
            .map(|j| {
                job(&format!(
                    r#"{{"jid":"{j}","jobtype":"T","queue":"q","args":[],"at":"2100-01-01T00:00:00Z"}}"#
                ))
            })
            .collect(),
    )
    .await;
    let unknown: Vec<String> = (0..5).map(|i| format!("unknown-{i}")).collect();

    let mut expected: Vec<(String, AckOutcome)> = Vec::new();
    for j in plain_jids
        .iter()
        .chain(&members)
        .chain(&uniques)
        .chain(&tracked)
    {
        expected.push((j.clone(), AckOutcome::Acked));
    }
    for j in &done {
        expected.push((j.clone(), AckOutcome::NotWorking));
    }
    for j in &enqueued {
        expected.push((j.clone(), AckOutcome::AckedLate(JobState::Enqueued)));
    }
    for j in scheduled.iter().chain(&unknown) {
        expected.push((j.clone(), AckOutcome::NotWorking));
    }

    let (release, blockers) = occupy_lanes(&s).await;
    let mut tasks = Vec::new();
    let requests: Vec<String> = expected
        .iter()
        .map(|(j, _)| j.clone())
        .chain(twice.iter().cloned())
        .chain(twice.iter().cloned())
        .collect();
    let n_requests = requests.len();
    for jid in requests {
        let s2 = s.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = s2.ack(jid.clone(), T0 + 3 * SEC).await;
            (jid, outcome)
        }));
    }
    // Every request is queued behind the busy lanes.
    wait_queued(n_requests, "ACK", || s.queued_acks()).await;
    release.send(()).unwrap();
    for b in blockers {
        assert_eq!(b.await.unwrap().unwrap(), AckOutcome::Acked);
    }
    let mut got: BTreeMap<String, Vec<AckOutcome>> = BTreeMap::new();
    for t in tasks {
        let (jid, outcome) = t.await.unwrap();
        got.entry(jid).or_default().push(outcome.expect("ack"));
    }
    for (jid, want) in &expected {
        assert_eq!(got[jid], vec![*want], "ACK {jid}");
    }
    for j in &twice {
        let mut o = got[j].clone();
        o.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            o,
            vec![AckOutcome::Acked, AckOutcome::NotWorking],
            "ACKed twice: {j}"
        );
    }
    assert!(
        largest_delete(&s).await > 50,
        "the queued ACKs were deleted by one statement (largest: {})",
        largest_delete(&s).await
    );

    // Counters exact: every ACK that deleted a job, once.
    let acked = ACK_LANES + 3 + 40 + 10 + 5 + 3 + 5 + 5;
    let st = s.stats().await.unwrap();
    assert_eq!((st.processed, st.failures) as (u64, u64), (acked as u64, 0));
    let h = s.history(1, T0 + 3 * SEC).await.unwrap();
    assert_eq!(h.iter().map(|d| d.processed).sum::<u64>(), acked as u64);
    assert_eq!(st.working, 0);
    assert_eq!(st.scheduled, 2, "scheduled jobs are not ACKed");
    for j in &scheduled {
        assert_eq!(
            s.get(j.clone()).await.unwrap().map(|j| j.state),
            Some(JobState::Scheduled)
        );
    }

    // Batch callbacks: the complete callback enqueued exactly once.
    let sizes: BTreeMap<String, u64> = st.queues.iter().map(|q| (q.name.clone(), q.size)).collect();
    assert_eq!(
        sizes.get("cbc"),
        Some(&1),
        "complete callback once: {sizes:?}"
    );
    assert_eq!(
        sizes.get("cbs"),
        None,
        "success waits for the complete callback's ACK"
    );
    assert_eq!(sizes.get("e"), Some(&0));
    // Unique locks released: the same identities can be pushed again.
    let again: Vec<NewJob> = uniques
        .iter()
        .map(|j| {
            let mut n = plain(j, "q", r#"{"unique_for":3600}"#);
            n.job.jid = format!("{j}-again");
            n
        })
        .collect();
    let res = s.push(again, T0 + 4 * SEC).await.unwrap();
    assert!(
        res.iter().all(|r| r.is_ok()),
        "unique locks released: {res:?}"
    );
    // Tracking saw the ACKs.
    for j in &tracked {
        let t = s
            .track_get(j.clone(), T0 + 4 * SEC)
            .await
            .unwrap()
            .expect("tracked");
        assert_eq!(t.state, TrackState::Success, "{j}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_falls_back_to_one_transaction_per_ack() {
    let s = fresh().await;
    log_deletes(&s).await;
    let jids: Vec<String> = (0..20).map(|i| format!("good-{i:04}")).collect();
    push(&s, jids.iter().map(|j| plain(j, "q", "{}")).collect()).await;
    push(&s, vec![plain("poison-1", "q", "{}")]).await;
    assert_eq!(fetch_all(&s, "q").await, 21);
    // Deleting the poison row fails the statement that tries it.
    s.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'poisoned row %', OLD.jid; END $$;
             CREATE TRIGGER poison BEFORE DELETE ON jobs FOR EACH ROW
                 WHEN (OLD.jid = 'poison-1') EXECUTE FUNCTION poison();",
        )
        .await
        .unwrap();
    let (release, blockers) = occupy_lanes(&s).await;
    let mut tasks = Vec::new();
    for jid in jids.iter().cloned().chain(["poison-1".to_string()]) {
        let s2 = s.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = s2.ack(jid.clone(), T0 + 3 * SEC).await;
            (jid, outcome)
        }));
    }
    wait_queued(jids.len() + 1, "ACK", || s.queued_acks()).await;
    let before = delete_attempts(&s).await;
    release.send(()).unwrap();
    for b in blockers {
        assert_eq!(b.await.unwrap().unwrap(), AckOutcome::Acked);
    }
    for t in tasks {
        let (jid, outcome) = t.await.unwrap();
        if jid == "poison-1" {
            match outcome {
                Err(StoreError::Backend(text)) => {
                    assert!(text.contains("poisoned row poison-1"), "{text}")
                }
                other => panic!("the poison ACK: {other:?}"),
            }
        } else {
            assert_eq!(outcome.unwrap(), AckOutcome::Acked, "ACK {jid}");
        }
    }
    let after = delete_attempts(&s).await;
    // The blockers' 4 DELETEs ran before `before`; then one batched attempt that failed and
    // 21 single ones.
    assert_eq!(
        after - before,
        1 + 21,
        "one batched attempt, then one per ACK"
    );
    assert_eq!(
        largest_delete(&s).await,
        1,
        "the batched DELETE was rolled back"
    );
    let st = s.stats().await.unwrap();
    assert_eq!(st.processed, (ACK_LANES + 20) as u64);
    assert_eq!(st.working, 1, "the poison job is still working");
}
