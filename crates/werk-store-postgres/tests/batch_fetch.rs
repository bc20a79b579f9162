//! Batched FETCHes (the `batch_fetch` module, issue 12) against a real PostgreSQL: FETCHes
//! waiting at once served by one statement, each with its own job and worker id, with the
//! cases that leave the batch (an expired head, a damaged payload, a second queue) and a
//! reservation whose request went away.
//!
//! Batches are formed deterministically: a transaction of the test's own locks the `jobs`
//! table (`EXCLUSIVE`, which FETCH's `FOR UPDATE` waits for); a FETCH per lane then occupies
//! every lane, the FETCHes under test are sent while every lane is busy, and the transaction
//! ends: a lane takes the queued FETCHes together.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::oneshot;
use werk_core::JobState;
use werk_store::{NewJob, StoredJob};
use werk_store_postgres::{PgStore, FETCH_LANES};

mod lanes_util;
use lanes_util::{fresh, job, wait_for_lock_waiters, wait_queued, SEC, T0};

type Answer = werk_store::Result<Option<StoredJob>>;

fn plain(jid: &str, queue: &str) -> NewJob {
    job(&format!(
        r#"{{"jid":"{jid}","jobtype":"T","queue":"{queue}","args":[]}}"#
    ))
}

async fn push(s: &PgStore, jobs: Vec<NewJob>) {
    let res = s.push(jobs, T0).await.expect("push");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
}

fn fetch(s: &Arc<PgStore>, queues: &[&str], wid: &str) -> tokio::task::JoinHandle<Answer> {
    let (s, wid) = (s.clone(), wid.to_string());
    let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
    tokio::spawn(async move { s.fetch(queues, wid, T0 + SEC).await })
}

/// Occupies every FETCH lane (see the module documentation). Returns the sender that ends the
/// locking transaction and the blockers' FETCH tasks (queue `blk`, empty).
async fn occupy_lanes(
    s: &Arc<PgStore>,
) -> (oneshot::Sender<()>, Vec<tokio::task::JoinHandle<Answer>>) {
    let (release, released) = oneshot::channel::<()>();
    let (held, is_held) = oneshot::channel::<()>();
    let s2 = s.clone();
    tokio::spawn(async move {
        let holder = s2.pool().get().await.expect("connection");
        holder
            .batch_execute("BEGIN; LOCK TABLE jobs IN EXCLUSIVE MODE")
            .await
            .unwrap();
        held.send(()).unwrap();
        let _ = released.await;
        holder.batch_execute("COMMIT").await.unwrap();
    });
    is_held.await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..FETCH_LANES {
        tasks.push(fetch(s, &["blk"], &format!("blocker-{i}")));
        wait_for_lock_waiters(s, i + 1, "FETCH").await;
    }
    (release, tasks)
}

/// Logs how many rows each UPDATE statement on `jobs` reserved (a statement-level trigger).
async fn log_reservations(s: &PgStore) {
    let c = s.pool().get().await.expect("connection");
    c.batch_execute(
        "CREATE TABLE reserve_log (n bigint NOT NULL);
         CREATE FUNCTION log_reserve() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO reserve_log SELECT count(*) FROM changed WHERE state = 2;
         RETURN NULL; END $$;
         CREATE TRIGGER log_reserve AFTER UPDATE ON jobs REFERENCING NEW TABLE AS changed
             FOR EACH STATEMENT EXECUTE FUNCTION log_reserve();",
    )
    .await
    .unwrap();
}

async fn largest_reservation(s: &PgStore) -> i64 {
    let c = s.pool().get().await.expect("connection");
    c.query_one("SELECT coalesce(max(n), 0) FROM reserve_log", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_fetches_are_served_by_one_statement() {
    let s = fresh().await;
    let jids: Vec<String> = (0..30).map(|i| format!("job-{i:04}")).collect();
    push(&s, jids.iter().map(|j| plain(j, "q")).collect()).await;
    log_reservations(&s).await;
    let (release, blockers) = occupy_lanes(&s).await;
    let k = 20;
    let tasks: Vec<_> = (0..k)
        .map(|i| {
            (
                format!("wid-{i:02}"),
                fetch(&s, &["q"], &format!("wid-{i:02}")),
            )
        })
        .collect();
    wait_queued(k, "FETCH", || s.queued_fetches()).await;
    release.send(()).unwrap();
    for b in blockers {
        assert_eq!(b.await.unwrap().unwrap(), None, "queue blk is empty");
    }
    let mut got = BTreeSet::new();
    for (wid, t) in tasks {
        let j = t.await.unwrap().unwrap().expect("a job for every FETCH");
        assert_eq!(j.state, JobState::Working);
        let r = j.reservation.as_ref().expect("reserved");
        assert_eq!(r.wid, wid, "the job went to its own request's worker");
        let stored = s.get(j.jid.clone()).await.unwrap().expect("stored");
        assert_eq!(stored.reservation.map(|r| r.wid), Some(wid));
        assert!(got.insert(j.jid), "a job delivered twice");
    }
    let oldest: BTreeSet<String> = jids[..k].iter().cloned().collect();
    assert_eq!(got, oldest, "the k oldest jobs, one each");
    let n = largest_reservation(&s).await;
    assert!(
        n >= 10,
        "the waiting FETCHes were not served by one statement (largest: {n})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_damaged_heads_and_a_second_queue() {
    let s = fresh().await;
    push(
        &s,
        vec![
            plain("first-0001", "q"),
            job(r#"{"jid":"expiring-01","jobtype":"T","queue":"q","args":[],"custom":{"expires_in":1}}"#),
            plain("damaged-01", "q"),
            plain("second-001", "q"),
            plain("other-0001", "other"),
            plain("other-0002", "other"),
            plain("other-0003", "other"),
        ],
    )
    .await;
    let c = s.pool().get().await.expect("connection");
    c.execute(
        "UPDATE jobs SET payload = '{not json' WHERE jid = 'damaged-01'",
        &[],
    )
    .await
    .unwrap();
    let (release, blockers) = occupy_lanes(&s).await;
    // At T0 + 1 s the expiring job has expired.
    let tasks: Vec<_> = (0..6)
        .map(|i| fetch(&s, &["q", "other"], &format!("wid-{i}")))
        .collect();
    wait_queued(6, "FETCH", || s.queued_fetches()).await;
    release.send(()).unwrap();
    for b in blockers {
        b.await.unwrap().unwrap();
    }
    let mut got = BTreeSet::new();
    let mut none = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Some(j) => assert!(got.insert(j.jid), "a job delivered twice"),
            None => none += 1,
        }
    }
    let want: BTreeSet<String> = [
        "first-0001",
        "second-001",
        "other-0001",
        "other-0002",
        "other-0003",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
    assert_eq!(none, 1, "six FETCHes, five good jobs");
    assert_eq!(s.get("expiring-01".into()).await.unwrap(), None, "dropped");
    let damaged = s.get("damaged-01".into()).await.unwrap().expect("kept");
    assert_eq!(damaged.state, JobState::Dead, "quarantined");
    assert_eq!(s.stats().await.unwrap().expired, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_nobody_awaits_is_given_back_in_place() {
    let s = fresh().await;
    push(
        &s,
        (0..4).map(|i| plain(&format!("job-{i:04}"), "q")).collect(),
    )
    .await;
    let (release, blockers) = occupy_lanes(&s).await;
    let gone = fetch(&s, &["q"], "wid-gone");
    let kept = fetch(&s, &["q"], "wid-kept");
    wait_queued(2, "FETCH", || s.queued_fetches()).await;
    // The first request's connection goes away while its FETCH waits in the queue.
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    release.send(()).unwrap();
    for b in blockers {
        b.await.unwrap().unwrap();
    }
    let j = kept.await.unwrap().unwrap().expect("a job");
    // Whichever job the lane reserved for the request that went away is enqueued again, in
    // its old place: the next FETCHes get the remaining three in order.
    let mut rest = Vec::new();
    while let Some(next) = s
        .fetch(vec!["q".into()], "w2".into(), T0 + 2 * SEC)
        .await
        .unwrap()
    {
        rest.push(next.jid);
    }
    let mut want: Vec<String> = (0..4).map(|i| format!("job-{i:04}")).collect();
    want.retain(|x| *x != j.jid);
    assert_eq!(rest, want);
}
