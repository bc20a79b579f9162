use super::*;
use crate::{ImportOutcome, ImportedJob};

// ---------------------------------------------------------------------------------------------
// Import (`werk import faktory`)
// ---------------------------------------------------------------------------------------------

/// An imported job as a PUSH would validate it, with `failure` (retry count, error) kept.
fn imported(sp: &Spec, state: JobState, at: Millis, failure: Option<&str>) -> ImportedJob {
    let NewJob { mut job, .. } = sp.new_job(T0);
    if let Some(f) = failure {
        job.failure = Some(serde_json::from_str(f).expect("failure JSON"));
    }
    ImportedJob { job, state, at }
}

async fn import<S: Store>(s: &S, jobs: Vec<ImportedJob>, now: Millis) -> Vec<ImportOutcome> {
    s.import(jobs, now).await.expect("import")
}

/// Import stores each job in its state: enqueued jobs at their queue's tail in the order given
/// (the queue becomes known, the listener hears of it), scheduled and retry jobs at their
/// time, dead jobs purged `dead_retention` after they died; failure info is kept; a jid
/// stored already or given twice changes nothing; the jobs work as any other afterwards.
pub async fn import_stores_each_job_in_its_state<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(s, &[spec("imp-there-001").queue("iq")], T0).await;
    c.rec.take();
    let failure = r#"{"retry_count":3,"failed_at":"2023-11-14T22:00:00.000Z","message":"boom","errtype":"E"}"#;
    let jobs = vec![
        imported(&spec("imp-enq-00001").queue("iq"), Enqueued, 0, None),
        imported(&spec("imp-enq-00002").queue("iq"), Enqueued, 0, None),
        imported(
            &spec("imp-sched-001").queue("iq"),
            Scheduled,
            T0 + HOUR,
            None,
        ),
        imported(
            &spec("imp-retry-001").queue("iq"),
            Retry,
            T0 + MIN,
            Some(failure),
        ),
        imported(
            &spec("imp-dead-0001").queue("dq"),
            Dead,
            T0 - DAY,
            Some(failure),
        ),
        imported(&spec("imp-there-001").queue("other"), Enqueued, 0, None),
        imported(
            &spec("imp-enq-00001").queue("iq"),
            Scheduled,
            T0 + DAY,
            None,
        ),
        imported(&spec("imp-new-queue").queue("fresh"), Enqueued, 0, None),
    ];
    let out = import(s, jobs, T0 + SEC).await;
    use ImportOutcome::{AlreadyStored, Stored};
    assert_eq!(
        out,
        vec![
            Stored,
            Stored,
            Stored,
            Stored,
            Stored,
            AlreadyStored,
            AlreadyStored,
            Stored
        ]
    );
    assert_eq!(
        jids(s, Enqueued, Some("iq")).await,
        strings(&["imp-there-001", "imp-enq-00001", "imp-enq-00002"]),
        "imported jobs go to the queue's tail, in the order given"
    );
    assert_eq!(must_get(s, "imp-there-001").await.queue, "iq", "unchanged");
    // Every job as one that got there here: a scheduled job's payload `at`, a retry's
    // `failure.next_at` are its time in the set.
    check_consistency(s).await;
    let sched = must_get(s, "imp-sched-001").await;
    assert_eq!((sched.state, sched.at), (Scheduled, T0 + HOUR));
    let retry = must_get(s, "imp-retry-001").await;
    assert_eq!((retry.state, retry.at), (Retry, T0 + MIN));
    let f = payload(&retry).failure.expect("failure kept");
    assert_eq!((f.retry_count, f.message.as_str()), (3, "boom"));
    let dead = must_get(s, "imp-dead-0001").await;
    let retention = StoreConfig::default().dead_retention;
    assert_eq!((dead.state, dead.at), (Dead, T0 - DAY + retention));
    assert!(payload(&dead).failure.is_some());
    let st = stats(s).await;
    assert!(st.queues.iter().any(|q| q.name == "fresh" && q.size == 1));
    assert_eq!((st.scheduled, st.retries, st.dead), (1, 1, 1));
    assert_eq!(
        (st.processed, st.failures),
        (0, 0),
        "an import counts nothing"
    );
    let told = c.rec.take();
    assert!(told.iter().any(|q| q == "fresh") && told.iter().any(|q| q == "iq"));

    // The imported jobs work as any other: the retry runs when due and keeps counting up.
    assert_eq!(promote(s, T0 + MIN).await, 1);
    assert_eq!(
        fetch_jid(s, &["iq"], T0 + MIN).await.as_deref(),
        Some("imp-there-001")
    );
    ack(s, "imp-there-001", T0 + MIN).await;
    assert_eq!(
        fetch_jid(s, &["iq"], T0 + MIN).await.as_deref(),
        Some("imp-enq-00001")
    );
    assert_eq!(
        fetch_jid(s, &["iq"], T0 + MIN).await.as_deref(),
        Some("imp-enq-00002")
    );
    assert_eq!(
        fetch_jid(s, &["iq"], T0 + MIN).await.as_deref(),
        Some("imp-retry-001")
    );
    assert!(matches!(
        fail(s, "imp-retry-001", T0 + MIN).await,
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    let again = payload(&must_get(s, "imp-retry-001").await)
        .failure
        .unwrap();
    assert_eq!(again.retry_count, 4, "the imported retry count goes on");

    // Run again: nothing changes.
    let before = stats(s).await;
    let rerun = import(
        s,
        vec![imported(&spec("imp-dead-0001").queue("dq"), Dead, T0, None)],
        T0 + HOUR,
    )
    .await;
    assert_eq!(rerun, vec![AlreadyStored]);
    assert_eq!(stats(s).await.dead, before.dead);
    c.finish(T0 + HOUR).await;
}

/// A state import does not take (working, or none) refuses the whole call: nothing stored.
pub async fn import_refuses_other_states_and_stores_nothing<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let jobs = vec![
        imported(&spec("imp-ok-000001"), Enqueued, 0, None),
        imported(&spec("imp-working-1"), Working, T0, None),
    ];
    assert!(s.import(jobs, T0).await.is_err());
    assert_eq!(state_of(s, "imp-ok-000001").await, None);
    c.finish(T0).await;
}
