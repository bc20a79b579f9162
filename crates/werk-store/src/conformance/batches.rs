use super::*;

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

/// A callback job for [`NewBatch`], alone in `queue` so a FETCH of that queue finds it; its args
/// name its jid so the payload can be checked.
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

/// A batch with both callbacks, in queues `cb-complete` (jobtype `BatchComplete`) and
/// `cb-success` (`BatchSuccess`).
pub(super) fn both_callbacks(bid: &str) -> NewBatch {
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

/// A member job of `bid`, in queue `bq`.
pub(super) fn member(jid: &str, bid: &str) -> Spec {
    spec(jid)
        .queue("bq")
        .custom(&format!(r#"{{"bid":{}}}"#, js(bid)))
}

pub(super) fn no_batch(bid: &str) -> BatchError {
    BatchError::NoSuchBatch(bid.to_string())
}

pub(super) async fn batch_new<S: Store>(s: &S, b: NewBatch, now: Millis) {
    let bid = b.bid.clone();
    let res = s.batch_new(b, now).await.expect("batch_new");
    assert_eq!(res, Ok(()), "BATCH NEW {bid}");
}

pub(super) async fn commit<S: Store>(s: &S, bid: &str, now: Millis) {
    let res = s
        .batch_commit(bid.to_string(), now)
        .await
        .expect("batch_commit");
    assert_eq!(res, Ok(()), "BATCH COMMIT {bid}");
}

async fn open<S: Store>(s: &S, bid: &str, now: Millis) {
    let res = s
        .batch_open(bid.to_string(), now)
        .await
        .expect("batch_open");
    assert_eq!(res, Ok(()), "BATCH OPEN {bid}");
}

pub(super) async fn try_status<S: Store>(s: &S, bid: &str, now: Millis) -> Option<BatchStatus> {
    s.batch_status(bid.to_string(), now)
        .await
        .expect("batch_status")
}

pub(super) async fn status<S: Store>(s: &S, bid: &str, now: Millis) -> BatchStatus {
    try_status(s, bid, now)
        .await
        .unwrap_or_else(|| panic!("BATCH STATUS {bid}: no such batch"))
}

/// `(total, pending, failed, complete_st, success_st)` of a batch.
pub(super) async fn counts<S: Store>(
    s: &S,
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

/// FETCHes `jid` from `queue` and ACKs it.
pub(super) async fn run_ok<S: Store>(s: &S, queue: &str, jid: &str, now: Millis) {
    assert_eq!(
        fetch_jid(s, &[queue], now).await.as_deref(),
        Some(jid),
        "fetch of {jid} from {queue}"
    );
    assert_eq!(ack(s, jid, now).await, AckOutcome::Acked, "ACK of {jid}");
}

/// FETCHes `jid` from `queue` and FAILs it.
pub(super) async fn run_fail<S: Store>(s: &S, queue: &str, jid: &str, now: Millis) -> FailOutcome {
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

/// The job's `custom` as JSON (`Null` without one).
fn custom_of(j: &StoredJob) -> serde_json::Value {
    payload(j)
        .custom
        .map(|c| serde_json::from_str(c.get()).expect("custom is JSON"))
        .unwrap_or(serde_json::Value::Null)
}

/// FETCHes the one callback job waiting in `queue` and checks its type, args and custom
/// (`_pbid` for a child batch's callback, never a `bid`).
async fn take_callback<S: Store>(
    s: &S,
    queue: &str,
    jobtype: &str,
    pbid: Option<&str>,
    now: Millis,
) -> StoredJob {
    let waiting = jids(s, Enqueued, Some(queue)).await;
    assert_eq!(
        waiting.len(),
        1,
        "exactly one callback job waits in {queue}: {waiting:?}"
    );
    let j = fetch(s, &[queue], now)
        .await
        .unwrap_or_else(|| panic!("no callback job in {queue}"));
    assert_eq!(j.jobtype, jobtype, "callback job in {queue}");
    let custom = custom_of(&j);
    assert_eq!(
        custom.get("bid"),
        None,
        "a callback job is no batch member: {}",
        j.payload
    );
    assert_eq!(
        custom.get("_pbid").and_then(|v| v.as_str()),
        pbid,
        "custom._pbid of callback {}: {}",
        j.jid,
        j.payload
    );
    j
}

/// The callback jobs waiting in `queue`.
async fn waiting<S: Store>(s: &S, queue: &str) -> Vec<String> {
    jids(s, Enqueued, Some(queue)).await
}

/// BATCH NEW creates an uncommitted batch; STATUS shows it; members count at push; COMMIT and
/// OPEN flip `committed`. Unknown batches (and unknown parents) are refused.
pub async fn batch_new_then_status<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-status-01";
    let mut b = both_callbacks(bid);
    b.description = Some("nightly import".to_string());
    batch_new(s, b, T0).await;
    assert_eq!(
        status(s, bid, T0 + SEC).await,
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
    assert_eq!(try_status(s, unknown, T0).await, None);
    assert_eq!(
        s.batch_open(unknown.into(), T0).await.expect("open"),
        Err(no_batch(unknown))
    );
    assert_eq!(
        s.batch_commit(unknown.into(), T0).await.expect("commit"),
        Err(no_batch(unknown))
    );
    let orphan = new_batch(
        "bid-orphan-01",
        Some(unknown),
        Some(callback("cb-orphan-01", "cb-complete", "BatchComplete")),
        None,
    );
    assert_eq!(
        s.batch_new(orphan, T0).await.expect("batch_new"),
        Err(no_batch(unknown)),
        "a parent must exist"
    );
    assert_eq!(try_status(s, "bid-orphan-01", T0).await, None);

    push(
        s,
        &[member("st-mem-0001", bid), member("st-mem-0002", bid)],
        T0 + SEC,
    )
    .await;
    assert_eq!(counts(s, bid, T0 + SEC).await, (2, 2, 0, "", ""));
    commit(s, bid, T0 + 2 * SEC).await;
    let st = status(s, bid, T0 + 2 * SEC).await;
    assert!(st.committed, "committed after BATCH COMMIT");
    assert_eq!(counts(s, bid, T0 + 2 * SEC).await, (2, 2, 0, "", ""));
    assert!(waiting(s, "cb-complete").await.is_empty(), "jobs pending");
    open(s, bid, T0 + 3 * SEC).await;
    assert!(!status(s, bid, T0 + 3 * SEC).await.committed, "reopened");
    assert_eq!(status(s, bid, T0 + 3 * SEC).await.created_at, T0);
    c.watch_batches(&[bid]);
    c.finish(T0 + 3 * SEC).await;
}

/// `custom.bid` must name a live batch: unknown or expired-uncommitted is `NoSuchBatch`,
/// checked before the duplicate-jid and uniqueness checks; other jobs of the PUSHB are stored.
pub async fn push_into_unknown_or_expired_batch_is_refused<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let live = "bid-live-0001";
    let nope = "bid-nope-0001";
    batch_new(s, both_callbacks(live), T0).await;
    push(
        s,
        &[
            spec("nb-plain-001"),
            uniq("nb-uniq-0001", "[7]", r#"{"unique_for":3600}"#),
        ],
        T0,
    )
    .await;
    let res = push_results(
        s,
        &[
            member("nb-mem-00001", nope),
            member("nb-plain-001", nope),
            uniq(
                "nb-uniq-0002",
                "[7]",
                &format!(r#"{{"unique_for":3600,"bid":{}}}"#, js(nope)),
            ),
            member("nb-mem-00002", live),
        ],
        T0 + SEC,
    )
    .await;
    let refused = Err(PushError::NoSuchBatch(nope.to_string()));
    assert_eq!(res[0], refused, "unknown batch");
    assert_eq!(
        res[1], refused,
        "the batch is checked before the duplicate jid"
    );
    assert_eq!(res[2], refused, "the batch is checked before uniqueness");
    assert_eq!(res[3], Ok(()), "a live batch");
    assert_eq!(get(s, "nb-mem-00001").await, None);
    assert_eq!(get(s, "nb-uniq-0002").await, None);
    let plain = must_get(s, "nb-plain-001").await;
    assert_eq!((plain.state, plain.queue.as_str()), (Enqueued, "default"));
    assert_eq!(counts(s, live, T0 + SEC).await, (1, 1, 0, "", ""));

    let before = T0 + BATCH_COMMIT_DEADLINE - SEC;
    push(s, &[member("nb-mem-00003", live)], before).await;
    assert_eq!(counts(s, live, before).await, (2, 2, 0, "", ""));
    let after = T0 + BATCH_COMMIT_DEADLINE + SEC;
    let res = push_results(s, &[member("nb-mem-00004", live)], after).await;
    assert_eq!(
        res[0],
        Err(PushError::NoSuchBatch(live.to_string())),
        "the batch expired uncommitted"
    );
    assert_eq!(get(s, "nb-mem-00004").await, None);
    assert_eq!(try_status(s, live, after).await, None);
    assert_eq!(
        jids(s, Enqueued, Some("bq")).await,
        vec!["nb-mem-00002", "nb-mem-00003"],
        "members of an expired batch stay ordinary jobs"
    );
    c.finish(after).await;
}

/// The complete callback is enqueued once the batch is committed and every member job has
/// finished (ACK or FAIL), not before; the callback keeps its type and args and has no `bid`.
pub async fn batch_complete_fires_when_all_jobs_finished_and_committed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-complete-1";
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[
            member("cpl-mem-0001", bid),
            member("cpl-mem-0002", bid),
            member("cpl-mem-0003", bid),
        ],
        T0,
    )
    .await;
    run_ok(s, "bq", "cpl-mem-0001", T0 + SEC).await;
    assert_eq!(counts(s, bid, T0 + SEC).await, (3, 2, 0, "", ""));
    commit(s, bid, T0 + 2 * SEC).await;
    assert_eq!(counts(s, bid, T0 + 2 * SEC).await, (3, 2, 0, "", ""));
    run_ok(s, "bq", "cpl-mem-0002", T0 + 3 * SEC).await;
    assert_eq!(
        fetch_jid(s, &["bq"], T0 + 4 * SEC).await.as_deref(),
        Some("cpl-mem-0003")
    );
    assert_eq!(
        counts(s, bid, T0 + 4 * SEC).await,
        (3, 1, 0, "", ""),
        "a working job is still pending"
    );
    assert!(waiting(s, "cb-complete").await.is_empty());
    c.rec.take();
    assert_eq!(
        ack(s, "cpl-mem-0003", T0 + 5 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(s, bid, T0 + 5 * SEC).await, (3, 0, 0, "1", ""));
    assert_eq!(
        c.rec.take(),
        vec!["cb-complete"],
        "the listener hears of the callback"
    );
    assert!(
        waiting(s, "cb-success").await.is_empty(),
        "success waits for the complete callback"
    );
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 6 * SEC).await;
    assert_eq!(cb.jid, format!("cbc-{bid}"));
    assert_eq!(
        payload(&cb).args.map(|a| a.get().to_string()),
        Some(format!("[{}]", js(&cb.jid)))
    );

    // All jobs finished before the commit: nothing fires until the commit.
    let b2 = "bid-complete-2";
    batch_new(
        s,
        new_batch(
            b2,
            None,
            Some(callback("cb-cpl2-done", "cb-c2", "Complete2")),
            None,
        ),
        T0 + 6 * SEC,
    )
    .await;
    push(s, &[member("cpl-mem-0004", b2)], T0 + 6 * SEC).await;
    run_ok(s, "bq", "cpl-mem-0004", T0 + 7 * SEC).await;
    assert_eq!(
        counts(s, b2, T0 + 7 * SEC).await,
        (1, 0, 0, "", ""),
        "uncommitted: no callback"
    );
    assert!(waiting(s, "cb-c2").await.is_empty());
    commit(s, b2, T0 + 8 * SEC).await;
    assert_eq!(counts(s, b2, T0 + 8 * SEC).await, (1, 0, 0, "1", ""));
    take_callback(s, "cb-c2", "Complete2", None, T0 + 8 * SEC).await;
    c.watch_batches(&[bid, b2]);
    c.finish(T0 + 8 * SEC).await;
}

/// The success callback is enqueued only when the complete callback is ACKed (its FAILs do not
/// count); then its own ACK makes the batch succeeded.
pub async fn batch_success_waits_for_complete_callback_ack<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-success-1";
    batch_new(s, both_callbacks(bid), T0).await;
    push(s, &[member("suc-mem-0001", bid)], T0).await;
    commit(s, bid, T0).await;
    run_ok(s, "bq", "suc-mem-0001", T0 + SEC).await;
    assert_eq!(counts(s, bid, T0 + SEC).await, (1, 0, 0, "1", ""));
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 2 * SEC).await;
    assert!(matches!(
        fail(s, &cb.jid, T0 + 3 * SEC).await,
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    assert_eq!(
        counts(s, bid, T0 + 3 * SEC).await,
        (1, 0, 0, "1", ""),
        "a failing callback stays enqueued and is no member"
    );
    assert!(waiting(s, "cb-success").await.is_empty());
    let t = must_get(s, &cb.jid).await.at;
    assert_eq!(promote(s, t).await, 1);
    run_ok(s, "cb-complete", &cb.jid, t).await;
    assert_eq!(counts(s, bid, t).await, (1, 0, 0, "2", "1"));
    let scb = take_callback(s, "cb-success", "BatchSuccess", None, t + SEC).await;
    assert_eq!(ack(s, &scb.jid, t + 2 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bid, t + 2 * SEC).await, (1, 0, 0, "2", "2"));
    c.watch_batches(&[bid]);
    c.finish(t + 2 * SEC).await;
}

/// A failed member completes the batch (complete fires) but holds success until a retry of it
/// succeeds; a second failure does not count twice.
pub async fn batch_with_failures_completes_but_succeeds_only_after_retry_succeeds<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-failures-1";
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[member("fl-mem-00001", bid), member("fl-mem-00002", bid)],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    run_ok(s, "bq", "fl-mem-00001", T0 + SEC).await;
    assert!(matches!(
        run_fail(s, "bq", "fl-mem-00002", T0 + 2 * SEC).await,
        FailOutcome::Retry { .. }
    ));
    assert_eq!(counts(s, bid, T0 + 2 * SEC).await, (2, 0, 1, "1", ""));
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 3 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 3 * SEC).await, AckOutcome::Acked);
    assert_eq!(
        counts(s, bid, T0 + 3 * SEC).await,
        (2, 0, 1, "2", ""),
        "complete, but a member failed"
    );
    assert!(waiting(s, "cb-success").await.is_empty());

    let t = must_get(s, "fl-mem-00002").await.at;
    assert_eq!(promote(s, t).await, 1);
    run_fail(s, "bq", "fl-mem-00002", t).await;
    assert_eq!(
        counts(s, bid, t).await,
        (2, 0, 1, "2", ""),
        "failing again counts once"
    );
    let t = must_get(s, "fl-mem-00002").await.at;
    assert_eq!(promote(s, t).await, 1);
    run_ok(s, "bq", "fl-mem-00002", t).await;
    assert_eq!(counts(s, bid, t).await, (2, 0, 0, "2", "1"));
    take_callback(s, "cb-success", "BatchSuccess", None, t).await;
    c.watch_batches(&[bid]);
    c.finish(t).await;
}

/// Committing a batch without jobs fires at once: complete first, success after complete's
/// ACK; a batch without a complete callback fires success at once, and an undefined callback
/// shows `""` forever.
pub async fn empty_batch_commit_fires_callbacks<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let (b1, b2, b3) = ("bid-empty-001", "bid-empty-002", "bid-empty-003");
    batch_new(s, both_callbacks(b1), T0).await;
    batch_new(
        s,
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
        s,
        new_batch(
            b3,
            None,
            Some(callback("cb-e3-done-1", "cb-e3", "E3Complete")),
            None,
        ),
        T0,
    )
    .await;

    commit(s, b1, T0 + SEC).await;
    assert_eq!(counts(s, b1, T0 + SEC).await, (0, 0, 0, "1", ""));
    assert!(waiting(s, "cb-success").await.is_empty());
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 2 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 2 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, b1, T0 + 2 * SEC).await, (0, 0, 0, "2", "1"));
    take_callback(s, "cb-success", "BatchSuccess", None, T0 + 3 * SEC).await;

    commit(s, b2, T0 + 3 * SEC).await;
    assert_eq!(
        counts(s, b2, T0 + 3 * SEC).await,
        (0, 0, 0, "", "1"),
        "no complete callback: complete at once"
    );
    let cb = take_callback(s, "cb-e2", "E2Success", None, T0 + 4 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 4 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, b2, T0 + 4 * SEC).await, (0, 0, 0, "", "2"));

    commit(s, b3, T0 + 5 * SEC).await;
    let cb = take_callback(s, "cb-e3", "E3Complete", None, T0 + 5 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 6 * SEC).await, AckOutcome::Acked);
    assert_eq!(
        counts(s, b3, T0 + 6 * SEC).await,
        (0, 0, 0, "2", ""),
        "no success callback: shown pending forever"
    );
    c.watch_batches(&[b1, b2, b3]);
    c.finish(T0 + 6 * SEC).await;
}

/// Each callback is enqueued at most once: committing again, or reopening, adding a job and
/// committing again after the callbacks fired, enqueues nothing.
pub async fn batch_callbacks_fire_at_most_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-once-0001";
    batch_new(s, both_callbacks(bid), T0).await;
    push(s, &[member("once-mem-001", bid)], T0).await;
    commit(s, bid, T0).await;
    run_ok(s, "bq", "once-mem-001", T0 + SEC).await;
    commit(s, bid, T0 + 2 * SEC).await;
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 3 * SEC).await;
    commit(s, bid, T0 + 3 * SEC).await;
    assert!(
        waiting(s, "cb-complete").await.is_empty(),
        "no second complete"
    );
    assert_eq!(ack(s, &cb.jid, T0 + 4 * SEC).await, AckOutcome::Acked);
    let scb = take_callback(s, "cb-success", "BatchSuccess", None, T0 + 5 * SEC).await;
    assert_eq!(ack(s, &scb.jid, T0 + 5 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bid, T0 + 5 * SEC).await, (1, 0, 0, "2", "2"));

    open(s, bid, T0 + 10 * SEC).await;
    push(s, &[member("once-mem-002", bid)], T0 + 10 * SEC).await;
    assert_eq!(counts(s, bid, T0 + 10 * SEC).await, (2, 1, 0, "2", "2"));
    commit(s, bid, T0 + 11 * SEC).await;
    run_ok(s, "bq", "once-mem-002", T0 + 12 * SEC).await;
    open(s, bid, T0 + 13 * SEC).await;
    commit(s, bid, T0 + 14 * SEC).await;
    assert_eq!(counts(s, bid, T0 + 14 * SEC).await, (2, 0, 0, "2", "2"));
    assert!(waiting(s, "cb-complete").await.is_empty());
    assert!(waiting(s, "cb-success").await.is_empty());
    assert_eq!(stats(s).await.working, 0, "no callback job anywhere");
    c.watch_batches(&[bid]);
    c.finish(T0 + 14 * SEC).await;
}

/// A callback whose jid is taken by a stored job is enqueued under a fresh jid, and the store
/// follows that job: its ACK (not the other job's) makes the callback succeeded.
pub async fn batch_callback_with_taken_jid_gets_fresh_jid<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-taken-001";
    let taken = "cb-taken-0001";
    batch_new(
        s,
        new_batch(
            bid,
            None,
            Some(callback(taken, "cb-taken", "TakenComplete")),
            None,
        ),
        T0,
    )
    .await;
    push(s, &[spec(taken).queue("other")], T0).await;
    commit(s, bid, T0 + SEC).await;
    assert_eq!(counts(s, bid, T0 + SEC).await, (0, 0, 0, "1", ""));
    let cb = take_callback(s, "cb-taken", "TakenComplete", None, T0 + 2 * SEC).await;
    assert_ne!(cb.jid, taken, "the callback needs a fresh jid");
    assert!(cb.jid.len() >= 8, "a valid jid: {:?}", cb.jid);
    let other = must_get(s, taken).await;
    assert_eq!(
        (other.state, other.queue.as_str(), other.jobtype.as_str()),
        (Enqueued, "other", "TestJob"),
        "the job holding the jid is untouched"
    );
    run_ok(s, "other", taken, T0 + 3 * SEC).await;
    assert_eq!(
        counts(s, bid, T0 + 3 * SEC).await,
        (0, 0, 0, "1", ""),
        "the other job's ACK is not the callback's"
    );
    assert_eq!(ack(s, &cb.jid, T0 + 4 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bid, T0 + 4 * SEC).await, (0, 0, 0, "2", ""));
    c.watch_batches(&[bid]);
    c.finish(T0 + 4 * SEC).await;
}

/// A parent's callbacks wait for its child batches: complete for every child to be complete
/// (its complete callback ACKed, or at once without one), success for every child to have
/// succeeded. Child callbacks carry `custom._pbid`; children's jobs do not count in the parent.
pub async fn child_batch_holds_parent_callbacks<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let (p, c1, c2) = ("bid-parent-01", "bid-child-001", "bid-child-002");
    batch_new(
        s,
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
        s,
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
        s,
        new_batch(
            c2,
            Some(p),
            None,
            Some(callback("cb-c2-succ-1", "cb-c2s", "Child2Success")),
        ),
        T0,
    )
    .await;
    assert_eq!(status(s, c1, T0).await.parent_bid.as_deref(), Some(p));
    push(s, &[member("pc-mem-p0001", p)], T0).await;
    push(s, &[member("pc-mem-c0001", c1).queue("bq-c1")], T0).await;
    assert_eq!(counts(s, p, T0).await, (1, 1, 0, "", ""));
    assert_eq!(counts(s, c1, T0).await, (1, 1, 0, "", ""));

    commit(s, p, T0 + SEC).await;
    run_ok(s, "bq", "pc-mem-p0001", T0 + 2 * SEC).await;
    assert_eq!(
        counts(s, p, T0 + 2 * SEC).await,
        (1, 0, 0, "", ""),
        "the parent waits for its uncommitted children"
    );

    commit(s, c2, T0 + 3 * SEC).await;
    assert_eq!(
        counts(s, c2, T0 + 3 * SEC).await,
        (0, 0, 0, "", "1"),
        "child 2: complete at once (no complete callback), success enqueued"
    );
    let c2_success = take_callback(s, "cb-c2s", "Child2Success", Some(p), T0 + 3 * SEC).await;
    assert_eq!(counts(s, p, T0 + 3 * SEC).await, (1, 0, 0, "", ""));

    commit(s, c1, T0 + 4 * SEC).await;
    assert_eq!(counts(s, c1, T0 + 4 * SEC).await, (1, 1, 0, "", ""));
    run_ok(s, "bq-c1", "pc-mem-c0001", T0 + 5 * SEC).await;
    assert_eq!(counts(s, c1, T0 + 5 * SEC).await, (1, 0, 0, "1", ""));
    assert_eq!(
        counts(s, p, T0 + 5 * SEC).await,
        (1, 0, 0, "", ""),
        "child 1's complete callback is not ACKed yet"
    );
    let c1_done = take_callback(s, "cb-c1c", "ChildComplete", Some(p), T0 + 5 * SEC).await;
    assert_eq!(
        custom_of(&c1_done).get("k").and_then(|v| v.as_str()),
        Some("v"),
        "the callback's own custom is kept: {}",
        c1_done.payload
    );
    assert_eq!(ack(s, &c1_done.jid, T0 + 6 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, c1, T0 + 6 * SEC).await, (1, 0, 0, "2", "1"));
    assert_eq!(
        counts(s, p, T0 + 6 * SEC).await,
        (1, 0, 0, "1", ""),
        "every child complete: the parent's complete callback"
    );
    let p_done = take_callback(s, "cb-pc", "ParentComplete", None, T0 + 6 * SEC).await;
    assert_eq!(ack(s, &p_done.jid, T0 + 7 * SEC).await, AckOutcome::Acked);
    assert_eq!(
        counts(s, p, T0 + 7 * SEC).await,
        (1, 0, 0, "2", ""),
        "success waits for the children's success"
    );
    let c1_success = take_callback(s, "cb-c1s", "ChildSuccess", Some(p), T0 + 7 * SEC).await;
    assert_eq!(
        ack(s, &c1_success.jid, T0 + 8 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(s, c1, T0 + 8 * SEC).await, (1, 0, 0, "2", "2"));
    assert_eq!(counts(s, p, T0 + 8 * SEC).await, (1, 0, 0, "2", ""));
    assert!(waiting(s, "cb-ps").await.is_empty());
    assert_eq!(
        ack(s, &c2_success.jid, T0 + 9 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(s, c2, T0 + 9 * SEC).await, (0, 0, 0, "", "2"));
    assert_eq!(counts(s, p, T0 + 9 * SEC).await, (1, 0, 0, "2", "1"));
    let p_success = take_callback(s, "cb-ps", "ParentSuccess", None, T0 + 10 * SEC).await;
    assert_eq!(
        ack(s, &p_success.jid, T0 + 10 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(s, p, T0 + 10 * SEC).await, (1, 0, 0, "2", "2"));
    c.watch_batches(&[p, c1, c2]);
    c.finish(T0 + 10 * SEC).await;
}

/// Counts, commit state, callback states and the at-most-once rule survive crash-reopens.
pub async fn batch_counts_survive_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let bid = "bid-reopen-01";
    c.watch_batches(&[bid]);
    batch_new(c.s(), both_callbacks(bid), T0).await;
    push(
        c.s(),
        &[
            member("ro-mem-00001", bid),
            member("ro-mem-00002", bid),
            member("ro-mem-00003", bid),
        ],
        T0,
    )
    .await;
    run_ok(c.s(), "bq", "ro-mem-00001", T0 + SEC).await;
    run_fail(c.s(), "bq", "ro-mem-00002", T0 + 2 * SEC).await;
    let before = status(c.s(), bid, T0 + 2 * SEC).await;
    c.reopen().await;
    assert_eq!(status(c.s(), bid, T0 + 2 * SEC).await, before);
    assert_eq!(counts(c.s(), bid, T0 + 2 * SEC).await, (3, 1, 1, "", ""));
    commit(c.s(), bid, T0 + 3 * SEC).await;
    c.reopen().await;
    assert!(status(c.s(), bid, T0 + 3 * SEC).await.committed);
    run_ok(c.s(), "bq", "ro-mem-00003", T0 + 4 * SEC).await;
    assert_eq!(counts(c.s(), bid, T0 + 4 * SEC).await, (3, 0, 1, "1", ""));
    c.reopen().await;
    assert_eq!(counts(c.s(), bid, T0 + 4 * SEC).await, (3, 0, 1, "1", ""));
    let cb = take_callback(c.s(), "cb-complete", "BatchComplete", None, T0 + 5 * SEC).await;
    assert_eq!(ack(c.s(), &cb.jid, T0 + 5 * SEC).await, AckOutcome::Acked);
    c.reopen().await;
    assert_eq!(counts(c.s(), bid, T0 + 5 * SEC).await, (3, 0, 1, "2", ""));
    commit(c.s(), bid, T0 + 6 * SEC).await;
    assert!(waiting(c.s(), "cb-complete").await.is_empty());
    let t = must_get(c.s(), "ro-mem-00002").await.at;
    assert_eq!(promote(c.s(), t).await, 1);
    run_ok(c.s(), "bq", "ro-mem-00002", t).await;
    c.reopen().await;
    assert_eq!(counts(c.s(), bid, t).await, (3, 0, 0, "2", "1"));
    assert_eq!(waiting(c.s(), "cb-success").await.len(), 1);
    c.finish(t).await;
}

/// An uncommitted batch expires BATCH_COMMIT_DEADLINE after its NEW or latest OPEN: then it is
/// unknown to STATUS, OPEN, COMMIT and PUSH, and never fires. A committed batch does not expire.
/// `list_batches`: newest first (created_at, then bid, descending), keyset pages that neither
/// skip nor repeat, expired uncommitted batches left out.
pub async fn list_batches_newest_first_in_pages<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    // Two batches share a creation time: the bid breaks the tie.
    let made = [
        ("bid-list-a", T0),
        ("bid-list-b", T0 + SEC),
        ("bid-list-c", T0 + SEC),
        ("bid-list-d", T0 + 2 * SEC),
        ("bid-list-e", T0 + 3 * SEC),
    ];
    for (bid, t) in made {
        batch_new(s, both_callbacks(bid), t).await;
        if bid != "bid-list-e" {
            commit(s, bid, t).await;
        }
    }
    let now = T0 + 10 * SEC;
    let want = [
        "bid-list-e",
        "bid-list-d",
        "bid-list-c",
        "bid-list-b",
        "bid-list-a",
    ];
    let all = s.list_batches(None, 100, now).await.expect("list");
    let bids: Vec<&str> = all.iter().map(|b| b.bid.as_str()).collect();
    assert_eq!(bids, want);
    assert_eq!(all[0], try_status(s, "bid-list-e", now).await.unwrap());
    for size in [1, 2, 3] {
        let mut seen = Vec::new();
        let mut after = None;
        for _ in 0..10 {
            let page = s
                .list_batches(after.clone(), size, now)
                .await
                .expect("list");
            assert!(page.len() as u64 <= size);
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            after = Some((last.created_at, last.bid.clone()));
            seen.extend(page.into_iter().map(|b| b.bid));
        }
        assert_eq!(seen, want, "pages of {size}");
    }
    // The uncommitted one expires and is no longer listed.
    let late = T0 + 3 * SEC + BATCH_COMMIT_DEADLINE + SEC;
    let bids: Vec<String> = s
        .list_batches(None, 100, late)
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.bid)
        .collect();
    assert_eq!(bids, &want[1..]);
    c.finish(now).await;
}

pub async fn uncommitted_batch_expires<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let (b1, b2) = ("bid-expire-01", "bid-expire-02");
    batch_new(s, both_callbacks(b1), T0).await;
    assert!(try_status(s, b1, T0 + BATCH_COMMIT_DEADLINE - SEC)
        .await
        .is_some());
    open(s, b1, T0 + 20 * MIN).await;
    let deadline = T0 + 20 * MIN + BATCH_COMMIT_DEADLINE;
    assert!(
        try_status(s, b1, deadline - SEC).await.is_some(),
        "OPEN restarts the deadline"
    );
    let t = deadline + SEC;
    assert_eq!(try_status(s, b1, t).await, None);
    assert_eq!(
        s.batch_open(b1.into(), t).await.expect("open"),
        Err(no_batch(b1))
    );
    assert_eq!(
        s.batch_commit(b1.into(), t).await.expect("commit"),
        Err(no_batch(b1))
    );
    assert_eq!(
        push_results(s, &[member("exb-mem-0001", b1)], t).await[0],
        Err(PushError::NoSuchBatch(b1.to_string()))
    );
    assert!(waiting(s, "cb-complete").await.is_empty(), "never fires");

    batch_new(s, both_callbacks(b2), T0).await;
    push(s, &[member("exb-mem-0002", b2)], T0).await;
    commit(s, b2, T0 + SEC).await;
    let later = T0 + 2 * HOUR;
    assert_eq!(
        counts(s, b2, later).await,
        (1, 1, 0, "", ""),
        "a committed batch waits for its jobs"
    );
    open(s, b2, later).await;
    let t = later + BATCH_COMMIT_DEADLINE + SEC;
    assert_eq!(
        try_status(s, b2, t).await,
        None,
        "reopened and not committed again: expired"
    );
    run_ok(s, "bq", "exb-mem-0002", t).await;
    s.sweep_expired(t, 1000).await.expect("sweep");
    assert_eq!(try_status(s, b1, t).await, None);
    assert_eq!(try_status(s, b2, t).await, None);
    assert!(waiting(s, "cb-complete").await.is_empty());
    c.finish(t).await;
}

/// Late ACKs and the reaper's FAIL count for batches like ordinary ACKs and FAILs (and may fire
/// callbacks).
pub async fn late_ack_and_reaper_count_for_batches<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-late-0001";
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[
            member("late-mem-001", bid).reserve_for(60),
            member("late-mem-002", bid),
        ],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    assert_eq!(
        fetch_jid(s, &["bq"], T0).await.as_deref(),
        Some("late-mem-001")
    );
    assert_eq!(
        ack(s, "late-mem-002", T0 + SEC).await,
        AckOutcome::AckedLate(Enqueued)
    );
    assert_eq!(counts(s, bid, T0 + SEC).await, (2, 1, 0, "", ""));
    assert_eq!(reap(s, T0 + 61 * SEC).await, 1);
    assert_eq!(state_of(s, "late-mem-001").await, Some(Retry));
    assert_eq!(
        counts(s, bid, T0 + 61 * SEC).await,
        (2, 0, 1, "1", ""),
        "the reaper's FAIL finished the last job"
    );
    assert_eq!(
        ack(s, "late-mem-001", T0 + 62 * SEC).await,
        AckOutcome::AckedLate(Retry)
    );
    assert_eq!(counts(s, bid, T0 + 62 * SEC).await, (2, 0, 0, "1", ""));
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 63 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 63 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bid, T0 + 63 * SEC).await, (2, 0, 0, "2", "1"));
    c.watch_batches(&[bid]);
    c.finish(T0 + 63 * SEC).await;
}

/// A member job that expires (dropped at FETCH or by the sweep) counts as failed.
pub async fn expired_member_job_counts_as_failed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-expmem-01";
    let custom = format!(r#"{{"bid":{},"expires_in":10}}"#, js(bid));
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[
            spec("xm-mem-00001").queue("bx1").custom(&custom),
            spec("xm-mem-00002").queue("bx2").custom(&custom),
            member("xm-mem-00003", bid),
        ],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    let t = T0 + 11 * SEC;
    assert_eq!(fetch_jid(s, &["bx1"], t).await, None);
    assert_eq!(s.sweep_expired(t, 1000).await.expect("sweep"), 1);
    assert_eq!(expired_count(s).await, 2);
    assert_eq!(counts(s, bid, t).await, (3, 1, 2, "", ""));
    run_ok(s, "bq", "xm-mem-00003", t).await;
    assert_eq!(counts(s, bid, t).await, (3, 0, 2, "1", ""));
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, t).await;
    assert_eq!(ack(s, &cb.jid, t).await, AckOutcome::Acked);
    assert_eq!(
        counts(s, bid, t).await,
        (3, 0, 2, "2", ""),
        "expired members never succeed"
    );
    c.watch_batches(&[bid]);
    c.finish(t).await;
}

/// The sweep purges a batch BATCH_RETENTION after it succeeded, and one that never succeeds
/// `dead_retention` after its last change; a purged batch is unknown.
pub async fn finished_batches_are_purged_after_retention<H: Harness>() {
    let retention = 2 * DAY;
    let c = Ctx::<H>::with_config(StoreConfig {
        dead_retention: retention,
        ..StoreConfig::default()
    })
    .await;
    let s = c.s();
    let (ok, bad) = ("bid-purge-ok1", "bid-purge-bad");
    batch_new(
        s,
        new_batch(
            ok,
            None,
            None,
            Some(callback("cb-purge-ok1", "cb-ok", "OkSuccess")),
        ),
        T0,
    )
    .await;
    commit(s, ok, T0).await;
    let cb = take_callback(s, "cb-ok", "OkSuccess", None, T0 + SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 2 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, ok, T0 + 2 * SEC).await, (0, 0, 0, "", "2"));

    batch_new(
        s,
        new_batch(
            bad,
            None,
            Some(callback("cb-purge-bad", "cb-bad", "BadComplete")),
            None,
        ),
        T0,
    )
    .await;
    push(s, &[member("pg-mem-00001", bad).retry(-1)], T0).await;
    commit(s, bad, T0).await;
    assert_eq!(
        run_fail(s, "bq", "pg-mem-00001", T0 + SEC).await,
        FailOutcome::Dead
    );
    let cb = take_callback(s, "cb-bad", "BadComplete", None, T0 + 2 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 3 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bad, T0 + 3 * SEC).await, (1, 0, 1, "2", ""));

    // dead_retention (2 days) is shorter than BATCH_RETENTION: each rule stands on its own.
    let t = T0 + 3 * SEC + retention;
    s.sweep_expired(t - SEC, 1000).await.expect("sweep");
    assert!(try_status(s, bad, t - SEC).await.is_some());
    s.sweep_expired(t, 1000).await.expect("sweep");
    assert_eq!(
        try_status(s, bad, t).await,
        None,
        "a batch that never succeeds: purged dead_retention after its last change"
    );
    assert!(
        try_status(s, ok, t).await.is_some(),
        "a succeeded batch is kept for BATCH_RETENTION"
    );
    let t = T0 + 2 * SEC + BATCH_RETENTION;
    s.sweep_expired(t - SEC, 1000).await.expect("sweep");
    assert!(try_status(s, ok, t - SEC).await.is_some());
    s.sweep_expired(t, 1000).await.expect("sweep");
    assert_eq!(
        try_status(s, ok, t).await,
        None,
        "purged after BATCH_RETENTION"
    );
    assert_eq!(
        s.batch_open(ok.into(), t).await.expect("open"),
        Err(no_batch(ok))
    );
    c.watch_batches(&[ok, bad]);
    c.finish(t).await;
}
