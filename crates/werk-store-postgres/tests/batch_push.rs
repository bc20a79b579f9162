//! Batched PUSHes (the `batch_push` module, issue 12) against a real PostgreSQL: concurrent
//! PUSHes of plain jobs inserted by one statement, with every outcome a PUSH can have, and the
//! fallback to one PUSH at a time when the shared statement is refused.
//!
//! Batches are formed deterministically: a transaction of the test's own inserts the jids of
//! [`PUSH_LANES`] "blocker" jobs and stays open; PUSHes of those jids occupy every lane
//! (each waits on the unique index for that transaction); the PUSHes under test are sent while
//! every lane is busy, then the transaction rolls back: a lane takes the queued PUSHes
//! together.

use std::sync::Arc;

use tokio::sync::oneshot;
use werk_core::{JobState, PushError};
use werk_store::NewJob;
use werk_store_postgres::{PgStore, PUSH_LANES};

mod lanes_util;
use lanes_util::{fresh, job, wait_for_lock_waiters, wait_queued, SEC, T0};

type Answer = werk_store::Result<Vec<Result<(), PushError>>>;

fn plain(jid: &str, queue: &str, arg: &str) -> NewJob {
    job(&format!(
        r#"{{"jid":"{jid}","jobtype":"T","queue":"{queue}","args":["{arg}"]}}"#
    ))
}

/// Occupies every PUSH lane (see the module documentation). Returns the sender that rolls the
/// blocking transaction back, and the blockers' PUSH tasks.
async fn occupy_lanes(
    s: &Arc<PgStore>,
) -> (oneshot::Sender<()>, Vec<tokio::task::JoinHandle<Answer>>) {
    let blockers: Vec<String> = (0..PUSH_LANES).map(|i| format!("blocker-{i}")).collect();
    let (release, released) = oneshot::channel::<()>();
    let (held, is_held) = oneshot::channel::<()>();
    let (s2, jids) = (s.clone(), blockers.clone());
    tokio::spawn(async move {
        let holder = s2.pool().get().await.expect("connection");
        holder.batch_execute("BEGIN").await.unwrap();
        for jid in &jids {
            holder
                .execute(
                    "INSERT INTO jobs (jid, state, queue, jobtype, score, ts, payload)
                     VALUES ($1, 0, 'blk', 'T', 0, 0, '{}')",
                    &[jid],
                )
                .await
                .unwrap();
        }
        held.send(()).unwrap();
        let _ = released.await;
        holder.batch_execute("ROLLBACK").await.unwrap();
    });
    is_held.await.unwrap();
    let mut tasks = Vec::new();
    for (i, jid) in blockers.into_iter().enumerate() {
        let s2 = s.clone();
        tasks.push(tokio::spawn(async move {
            s2.push(vec![plain(&jid, "blk", "b")], T0).await
        }));
        wait_for_lock_waiters(s, i + 1, "PUSH").await;
    }
    (release, tasks)
}

/// Logs the rows of every INSERT statement on `jobs` (a statement-level trigger).
async fn log_inserts(s: &PgStore) {
    let c = s.pool().get().await.expect("connection");
    c.batch_execute(
        "CREATE TABLE insert_log (n bigint NOT NULL);
         CREATE FUNCTION log_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO insert_log SELECT count(*) FROM added; RETURN NULL; END $$;
         CREATE TRIGGER log_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS added
             FOR EACH STATEMENT EXECUTE FUNCTION log_insert();",
    )
    .await
    .unwrap();
}

async fn largest_insert(s: &PgStore) -> i64 {
    let c = s.pool().get().await.expect("connection");
    c.query_one("SELECT coalesce(max(n), 0) FROM insert_log", &[])
        .await
        .unwrap()
        .get(0)
}

/// Jids of `queue`'s enqueued jobs in FIFO order.
async fn queue_order(s: &PgStore, queue: &str) -> Vec<String> {
    let c = s.pool().get().await.expect("connection");
    c.query(
        "SELECT jid FROM jobs WHERE state = 1 AND queue = $1 ORDER BY score",
        &[&queue],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_one_statement_with_every_outcome() {
    let s = fresh().await;
    // Stored before: one to be pushed again identically (a retry: OK), one to be pushed with
    // other args under its jid (a duplicate).
    assert!(s
        .push(
            vec![
                plain("stored-retry", "q", "x"),
                plain("stored-other", "q", "x")
            ],
            T0
        )
        .await
        .unwrap()
        .iter()
        .all(|r| r.is_ok()));
    log_inserts(&s).await;
    let (release, blockers) = occupy_lanes(&s).await;

    let mut requests: Vec<Vec<NewJob>> = (0..12)
        .map(|i| vec![plain(&format!("single-{i:02}"), "q", "a")])
        .collect();
    // A PUSHB whose order must hold, with a scheduled job in it.
    requests.push(vec![
        plain("pushb-0001", "pb", "1"),
        plain("pushb-0002", "pb", "2"),
        job(r#"{"jid":"pushb-at","jobtype":"T","queue":"pb","args":[],"at":"2030-01-01T00:00:00Z"}"#),
        plain("pushb-0003", "pb", "3"),
    ]);
    requests.push(vec![plain("stored-retry", "q", "x")]);
    requests.push(vec![plain("stored-other", "q", "different")]);
    // The same new job in two requests (a client's retry racing its first try): one row.
    requests.push(vec![plain("twice-new", "q", "t")]);
    requests.push(vec![plain("twice-new", "q", "t")]);
    let n = requests.len();
    let mut tasks = Vec::new();
    for r in requests {
        let s2 = s.clone();
        tasks.push(tokio::spawn(async move { s2.push(r, T0 + SEC).await }));
    }
    wait_queued(n, "PUSH", || s.queued_pushes()).await;
    release.send(()).unwrap();
    for b in blockers {
        assert_eq!(b.await.unwrap().unwrap(), vec![Ok(())], "a blocker");
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().expect("no store error"));
    }
    for (i, a) in answers[..12].iter().enumerate() {
        assert_eq!(a, &vec![Ok(())], "single {i}");
    }
    assert_eq!(answers[12], vec![Ok(()); 4], "the PUSHB");
    assert_eq!(answers[13], vec![Ok(())], "a retried push is OK");
    assert!(
        matches!(&answers[14][..], [Err(PushError::DuplicateJid(j, _))] if j == "stored-other"),
        "{:?}",
        answers[14]
    );
    assert_eq!(answers[15], vec![Ok(())]);
    assert_eq!(answers[16], vec![Ok(())], "the same job twice is a retry");
    // The same jid with other args, afterwards: a duplicate. (Not in the concurrent set: the
    // order in which spawned requests reach the queue is not fixed, and whichever of the two
    // contents comes first is the one stored.)
    let other = s
        .push(vec![plain("twice-new", "q", "other")], T0 + SEC)
        .await
        .unwrap();
    assert!(
        matches!(&other[..], [Err(PushError::DuplicateJid(j, _))] if j == "twice-new"),
        "{other:?}"
    );

    assert!(
        largest_insert(&s).await >= 15,
        "the queued PUSHes were not inserted by one statement (largest: {})",
        largest_insert(&s).await
    );
    assert_eq!(
        queue_order(&s, "pb").await,
        ["pushb-0001", "pushb-0002", "pushb-0003"]
    );
    let at = s.get("pushb-at".into()).await.unwrap().expect("stored");
    assert_eq!(at.state, JobState::Scheduled);
    let other = s.get("stored-other".into()).await.unwrap().expect("stored");
    assert!(
        other.payload.contains(r#""args":["x"]"#),
        "unchanged: {}",
        other.payload
    );
    let twice = s.get("twice-new".into()).await.unwrap().expect("stored");
    assert!(
        twice.payload.contains(r#""args":["t"]"#),
        "{}",
        twice.payload
    );
    let st = s.stats().await.unwrap();
    let q = st.queues.iter().find(|q| q.name == "q").map(|q| q.size);
    // 2 stored before + 12 singles + twice-new.
    assert_eq!(q, Some(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_falls_back_to_one_push_at_a_time() {
    let s = fresh().await;
    log_inserts(&s).await;
    // The server refuses any statement that inserts the poisoned jid.
    let c = s.pool().get().await.expect("connection");
    c.batch_execute(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.jid = 'poisoned-1' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER poison BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .await
    .unwrap();
    drop(c);
    let (release, blockers) = occupy_lanes(&s).await;
    let mut requests: Vec<Vec<NewJob>> = (0..8)
        .map(|i| vec![plain(&format!("good-000{i}"), "q", "g")])
        .collect();
    requests.insert(3, vec![plain("poisoned-1", "q", "p")]);
    let n = requests.len();
    let mut tasks = Vec::new();
    for r in requests {
        let s2 = s.clone();
        tasks.push(tokio::spawn(async move { s2.push(r, T0 + SEC).await }));
    }
    wait_queued(n, "PUSH", || s.queued_pushes()).await;
    release.send(()).unwrap();
    for b in blockers {
        b.await.unwrap().unwrap();
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let answer = t.await.unwrap();
        if i == 3 {
            let e = answer.expect_err("the poisoned push fails");
            assert!(e.to_string().contains("poisoned"), "{e}");
        } else {
            assert_eq!(answer.expect("a good push"), vec![Ok(())], "request {i}");
        }
    }
    assert_eq!(queue_order(&s, "q").await.len(), 8);
    assert_eq!(s.get("poisoned-1".into()).await.unwrap(), None);
}
