//! Enterprise batches end to end: the real `faktory` crate (its `ent` feature) and the raw
//! protocol against the real `werk` binary. Callback order and at-most-once firing, nested
//! batches, the wire form of errors and of `BATCH STATUS`, and a SIGKILL test: the server is
//! killed at random moments while workers ACK a batch's jobs as fast as they can, and each
//! callback still fires exactly once, complete before success.
//!
//! Set `WERK_CRASH_SEED` to replay the crash test's kill timings.

mod common;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use faktory::ent::{Batch, BatchId, CallbackState};
use faktory::mutate::{Filter, JobSet};
use faktory::{Client, Job, JobBuilder, Worker};
use serde_json::{json, Value};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `b-` + 14 URL-safe base64 characters.
fn is_bid(bid: &str) -> bool {
    bid.len() == 16
        && bid.starts_with("b-")
        && bid[2..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// BATCH NEW that must succeed; returns the bid.
#[track_caller]
fn batch_new(c: &mut Conn, spec: &Value) -> String {
    let r = c.cmd(&format!("BATCH NEW {spec}"));
    let bid = match &r {
        Reply::Bulk(_) => r.bulk_str().to_string(),
        other => panic!("BATCH NEW {spec}: expected a bulk bid, got {other:?}"),
    };
    assert!(
        is_bid(&bid),
        "bid {bid:?} is not b- + 14 URL-safe base64 chars"
    );
    bid
}

#[track_caller]
fn status(c: &mut Conn, bid: &str) -> Value {
    let r = c.cmd(&format!("BATCH STATUS {bid}"));
    match &r {
        Reply::Bulk(_) => r.json(),
        other => panic!("BATCH STATUS {bid}: expected bulk JSON, got {other:?}"),
    }
}

/// (complete_st, success_st)
#[track_caller]
fn cb_states(c: &mut Conn, bid: &str) -> (String, String) {
    let s = status(c, bid);
    (
        s["complete_st"].as_str().unwrap_or("<missing>").to_string(),
        s["success_st"].as_str().unwrap_or("<missing>").to_string(),
    )
}

#[track_caller]
fn counts(c: &mut Conn, bid: &str) -> (u64, u64, u64) {
    let s = status(c, bid);
    let n = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("BATCH STATUS {bid}: {k} is not a count: {s}"))
    };
    (n("total"), n("pending"), n("failed"))
}

#[track_caller]
fn member(jid: &str, queue: &str, bid: &str) -> Value {
    json!({"jid": jid, "jobtype": "Member", "args": [jid], "queue": queue, "custom": {"bid": bid}})
}

/// A job's `custom` object (or an empty one).
fn custom(job: &Value) -> serde_json::Map<String, Value> {
    job.get("custom")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

async fn client(s: &Server) -> Client {
    timeout(T, Client::connect_to(&s.url()))
        .await
        .expect("connect timed out")
        .expect("faktory Client connects")
}

// ---------------------------------------------------------------------------------------------
// Through the faktory crate
// ---------------------------------------------------------------------------------------------

/// Ten members (four fail their first run), complete + success callbacks. The status moves
/// through its states as the rules say; each callback runs once, complete before success;
/// reopening the batch and adding a job never fires a callback again.
#[tokio::test(flavor = "multi_thread")]
async fn callbacks_run_once_complete_then_success_through_the_faktory_crate() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(200));
    let mut c = client(&s).await;
    let mut probe = client(&s).await;
    let mut raw = s.conn();

    let batch = Batch::builder()
        .description("e2e: ten members")
        .with_callbacks(
            JobBuilder::new("BatchSuccess")
                .queue("callbacks")
                .args(vec!["on-success"])
                .build(),
            JobBuilder::new("BatchComplete")
                .queue("callbacks")
                .args(vec!["on-complete"])
                .build(),
        );
    let mut handle = timeout(T, c.start_batch(batch)).await.unwrap().unwrap();
    let bid = handle.id().clone();
    assert!(is_bid(&bid), "bid {:?}", &*bid);
    for i in 0..10 {
        handle
            .add(
                JobBuilder::new("Member")
                    .queue("members")
                    .args(vec![i])
                    .build(),
            )
            .await
            .unwrap();
    }
    let st = probe.get_batch_status(&bid).await.unwrap().expect("status");
    assert_eq!(&*st.bid, &*bid);
    assert_eq!(st.description.as_deref(), Some("e2e: ten members"));
    assert!(st.parent_bid.is_none());
    assert_eq!((st.total, st.pending, st.failed), (10, 10, 0));
    assert_eq!(st.complete_callback_state, CallbackState::Pending);
    assert_eq!(st.success_callback_state, CallbackState::Pending);
    let age = chrono::Utc::now() - st.created_at;
    assert!(
        age >= chrono::Duration::seconds(-2) && age < chrono::Duration::seconds(30),
        "created_at {} is not about now",
        st.created_at
    );
    handle.commit().await.unwrap();

    // Workers: members with an even index divisible by 3 fail their first run.
    let attempts: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let ran: Arc<Mutex<Vec<Job>>> = Arc::default();
    let (a, r1, r2) = (attempts.clone(), ran.clone(), ran.clone());
    let mut w = Worker::builder()
        .register_fn("Member", move |job: Job| {
            let a = a.clone();
            async move {
                let i = job.args()[0].as_i64().unwrap();
                let n = {
                    let mut m = a.lock().unwrap();
                    let e = m.entry(i).or_insert(0);
                    *e += 1;
                    *e
                };
                if i % 3 == 0 && n == 1 {
                    Err(io::Error::other(format!("member {i} fails once")))
                } else {
                    Ok(())
                }
            }
        })
        .register_fn("BatchComplete", move |job: Job| {
            let r = r1.clone();
            async move {
                r.lock().unwrap().push(job);
                Ok::<(), io::Error>(())
            }
        })
        .register_fn("BatchSuccess", move |job: Job| {
            let r = r2.clone();
            async move {
                r.lock().unwrap().push(job);
                Ok::<(), io::Error>(())
            }
        })
        .connect_to(&s.url())
        .await
        .expect("worker connects");

    // Runs jobs from `queue` until it is empty; returns how many ran.
    async fn run_all(w: &mut Worker<io::Error>, queue: &str) -> usize {
        let mut n = 0;
        while timeout(T, w.run_one(0, &[queue]))
            .await
            .expect("run_one timed out")
            .expect("run_one")
        {
            n += 1;
            assert!(n < 100, "queue {queue} never runs dry");
        }
        n
    }

    // Phase 1: every member ran once; 4 failed (0, 3, 6, 9) and wait in the retry set.
    assert_eq!(run_all(&mut w, "members").await, 10);
    let st = probe.get_batch_status(&bid).await.unwrap().unwrap();
    assert_eq!((st.total, st.pending, st.failed), (10, 0, 4));
    assert_eq!(
        st.complete_callback_state,
        CallbackState::Enqueued,
        "committed, nothing pending: complete fires although jobs failed"
    );
    assert_eq!(st.success_callback_state, CallbackState::Pending);
    assert!(ran.lock().unwrap().is_empty());
    assert_eq!(
        queue_size(&raw.info(), "callbacks"),
        Some(1),
        "only the complete callback is enqueued"
    );

    // Phase 2: the complete callback runs; success still waits for the failed members.
    assert_eq!(run_all(&mut w, "callbacks").await, 1);
    let st = probe.get_batch_status(&bid).await.unwrap().unwrap();
    assert_eq!(st.complete_callback_state, CallbackState::FinishedOk);
    assert_eq!(st.success_callback_state, CallbackState::Pending);
    assert_eq!(st.failed, 4);

    // Phase 3: bring the failed members back from the retry set; they succeed now.
    c.requeue(JobSet::Retries, Filter::empty()).await.unwrap();
    assert_eq!(run_all(&mut w, "members").await, 4);
    let st = probe.get_batch_status(&bid).await.unwrap().unwrap();
    assert_eq!((st.total, st.pending, st.failed), (10, 0, 0));
    assert_eq!(st.complete_callback_state, CallbackState::FinishedOk);
    assert_eq!(st.success_callback_state, CallbackState::Enqueued);

    // Phase 4: the success callback runs.
    assert_eq!(run_all(&mut w, "callbacks").await, 1);
    let st = probe.get_batch_status(&bid).await.unwrap().unwrap();
    assert_eq!(st.complete_callback_state, CallbackState::FinishedOk);
    assert_eq!(st.success_callback_state, CallbackState::FinishedOk);

    // Phase 5: reopen, add a member, commit, run it: no callback fires again.
    {
        let mut h = c
            .open_batch(&bid)
            .await
            .unwrap()
            .expect("an existing batch opens");
        h.add(
            JobBuilder::new("Member")
                .queue("members")
                .args(vec![100])
                .build(),
        )
        .await
        .unwrap();
        h.commit().await.unwrap();
    }
    assert_eq!(run_all(&mut w, "members").await, 1);
    let st = probe.get_batch_status(&bid).await.unwrap().unwrap();
    assert_eq!((st.total, st.pending, st.failed), (11, 0, 0));
    assert_eq!(
        run_all(&mut w, "callbacks").await,
        0,
        "a callback fired twice"
    );
    assert_eq!(st.complete_callback_state, CallbackState::FinishedOk);
    assert_eq!(st.success_callback_state, CallbackState::FinishedOk);

    // Unknown batches: open_batch gives None.
    assert!(c
        .open_batch(&BatchId::new("b-AAAAAAAAAAAAAA"))
        .await
        .unwrap()
        .is_none());

    let ran = ran.lock().unwrap();
    let kinds: Vec<&str> = ran.iter().map(|j| j.kind.as_str()).collect();
    assert_eq!(kinds, ["BatchComplete", "BatchSuccess"]);
    assert_eq!(ran[0].args(), [json!("on-complete")]);
    assert_eq!(ran[1].args(), [json!("on-success")]);
    for j in ran.iter() {
        assert_eq!(j.queue, "callbacks");
        assert!(
            !j.custom.contains_key("bid"),
            "a callback job is no member of the batch: {:?}",
            j.custom
        );
        assert!(!j.custom.contains_key("_pbid"), "{:?}", j.custom);
    }
    let attempts = attempts.lock().unwrap();
    assert_eq!(attempts.len(), 11);
    for (i, n) in attempts.iter() {
        let want = if i % 3 == 0 && *i < 10 { 2 } else { 1 };
        assert_eq!(*n, want, "member {i} ran {n} times");
    }
}

/// A child batch (created through `BatchHandle::start_batch`): the parent's callbacks wait for
/// the child's; the child's callback jobs carry `custom._pbid`; the child's jobs do not count
/// in the parent's totals.
#[tokio::test(flavor = "multi_thread")]
async fn nested_batch_parent_waits_for_child_callbacks() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(150));
    let mut c = client(&s).await;
    let mut raw = s.conn();
    let cb = |kind: &str| JobBuilder::new(kind).queue("cb").build();

    let parent_batch = Batch::builder()
        .description("parent")
        .with_callbacks(cb("ParentSuccess"), cb("ParentComplete"));
    let mut parent = c.start_batch(parent_batch).await.unwrap();
    let pbid = parent.id().clone();
    let cbid = {
        let child_batch = Batch::builder()
            .description("child")
            .with_callbacks(cb("ChildSuccess"), cb("ChildComplete"));
        let mut child = parent.start_batch(child_batch).await.unwrap();
        let cbid = child.id().clone();
        for i in 0..2 {
            child
                .add(
                    JobBuilder::new("ChildWork")
                        .queue("work")
                        .args(vec![i])
                        .build(),
                )
                .await
                .unwrap();
        }
        child.commit().await.unwrap();
        cbid
    };
    parent
        .add(JobBuilder::new("ParentWork").queue("work").build())
        .await
        .unwrap();
    parent.commit().await.unwrap();
    assert_ne!(&*pbid, &*cbid);

    let child_st = c.get_batch_status(&cbid).await.unwrap().unwrap();
    assert_eq!(
        child_st.parent_bid.as_deref().map(|s| s.as_str()),
        Some(pbid.as_str())
    );
    assert_eq!(child_st.total, 2);
    let parent_st = c.get_batch_status(&pbid).await.unwrap().unwrap();
    assert!(parent_st.parent_bid.is_none());
    assert_eq!(parent_st.total, 1, "the child's jobs are not the parent's");

    let mut w = s.worker("nested-w");
    // Run the parent's own job first: the parent stays incomplete while its child is.
    let mut work = Vec::new();
    for _ in 0..3 {
        work.push(w.fetch_job("work"));
    }
    assert!(w.fetch("work").is_none());
    let parent_job = work
        .iter()
        .position(|j| j["jobtype"] == "ParentWork")
        .expect("the parent's job");
    let pj = work.remove(parent_job);
    w.ack(pj["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(counts(&mut raw, &pbid), (1, 0, 0));
    assert_eq!(
        cb_states(&mut raw, &pbid),
        ("".into(), "".into()),
        "the parent's complete waits for its child"
    );
    assert!(w.fetch("cb").is_none(), "no callback yet");
    for j in &work {
        w.ack(j["jid"].as_str().unwrap()).expect_ok();
    }
    assert_eq!(counts(&mut raw, &cbid), (2, 0, 0));
    assert_eq!(cb_states(&mut raw, &cbid), ("1".into(), "".into()));
    assert_eq!(cb_states(&mut raw, &pbid), ("".into(), "".into()));

    // The child's complete callback: it carries the parent's bid, and no bid of its own.
    let cc = w.fetch_job("cb");
    assert_eq!(cc["jobtype"], "ChildComplete", "{cc}");
    assert_eq!(custom(&cc).get("_pbid"), Some(&json!(&*pbid)), "{cc}");
    assert!(!custom(&cc).contains_key("bid"), "{cc}");
    assert!(
        w.fetch("cb").is_none(),
        "only the child's complete callback"
    );
    w.ack(cc["jid"].as_str().unwrap()).expect_ok();
    // Child complete → the child's success and the parent's complete fire.
    assert_eq!(cb_states(&mut raw, &cbid), ("2".into(), "1".into()));
    assert_eq!(cb_states(&mut raw, &pbid), ("1".into(), "".into()));
    let mut two = [w.fetch_job("cb"), w.fetch_job("cb")];
    assert!(w.fetch("cb").is_none());
    two.sort_by_key(|j| j["jobtype"].as_str().unwrap().to_string());
    let (cs, pc) = (two[0].clone(), two[1].clone());
    assert_eq!(cs["jobtype"], "ChildSuccess");
    assert_eq!(custom(&cs).get("_pbid"), Some(&json!(&*pbid)), "{cs}");
    assert!(!custom(&cs).contains_key("bid"), "{cs}");
    assert_eq!(pc["jobtype"], "ParentComplete");
    assert!(!custom(&pc).contains_key("bid"), "{pc}");
    assert!(
        !custom(&pc).contains_key("_pbid"),
        "the parent has no parent: {pc}"
    );

    // Parent complete ACKed first: its success still waits for the child's success.
    w.ack(pc["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(cb_states(&mut raw, &pbid), ("2".into(), "".into()));
    assert!(w.fetch("cb").is_none());
    w.ack(cs["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(cb_states(&mut raw, &cbid), ("2".into(), "2".into()));
    assert_eq!(cb_states(&mut raw, &pbid), ("2".into(), "1".into()));
    let ps = w.fetch_job("cb");
    assert_eq!(ps["jobtype"], "ParentSuccess");
    assert!(!custom(&ps).contains_key("bid"), "{ps}");
    w.ack(ps["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(cb_states(&mut raw, &pbid), ("2".into(), "2".into()));
    assert!(w.fetch("cb work").is_none(), "nothing fires twice");
}

/// A failing child keeps its parent from succeeding (the parent still completes).
#[test]
fn failed_child_job_blocks_parent_success() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(150));
    let mut c = s.conn();
    let parent = batch_new(
        &mut c,
        &json!({"description": "p", "complete": {"jobtype": "PC", "queue": "cb"}, "success": {"jobtype": "PS", "queue": "cb"}}),
    );
    let child = batch_new(
        &mut c,
        &json!({"parent_bid": parent, "success": {"jobtype": "CS", "queue": "cb"}}),
    );
    c.push_ok(&member("fchild-job-1", "work", &child));
    c.cmd(&format!("BATCH COMMIT {child}")).expect_ok();
    c.cmd(&format!("BATCH COMMIT {parent}")).expect_ok();
    let mut w = s.worker("fchild-w");
    let j = w.fetch_job("work");
    w.fail(&json!({"jid": j["jid"], "errtype": "E", "message": "boom"}))
        .expect_ok();
    assert_eq!(counts(&mut c, &child), (1, 0, 1));
    // The child has no complete callback: it is complete at once, but it did not succeed.
    assert_eq!(cb_states(&mut c, &child), ("".into(), "".into()));
    assert_eq!(cb_states(&mut c, &parent), ("1".into(), "".into()));
    let pc = w.fetch_job("cb");
    assert_eq!(pc["jobtype"], "PC");
    w.ack(pc["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(cb_states(&mut c, &parent), ("2".into(), "".into()));
    assert!(
        w.fetch("cb").is_none(),
        "neither success fires while a child job failed"
    );

    // Requeue the failed job from the retry set and let it succeed: both successes fire.
    c.mutate(&json!({"cmd": "requeue", "target": "retries", "filter": {"jids": [j["jid"]]}}))
        .expect_ok();
    let again = w.fetch_job("work");
    assert_eq!(again["jid"], j["jid"]);
    w.ack(again["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(counts(&mut c, &child), (1, 0, 0));
    let cs = w.fetch_job("cb");
    assert_eq!(cs["jobtype"], "CS");
    assert_eq!(custom(&cs).get("_pbid"), Some(&json!(parent)));
    assert!(
        w.fetch("cb").is_none(),
        "the parent's success waits for the child's"
    );
    w.ack(cs["jid"].as_str().unwrap()).expect_ok();
    let ps = w.fetch_job("cb");
    assert_eq!(ps["jobtype"], "PS");
    w.ack(ps["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(cb_states(&mut c, &parent), ("2".into(), "2".into()));
    assert_eq!(cb_states(&mut c, &child), ("".into(), "2".into()));
}

// ---------------------------------------------------------------------------------------------
// Raw protocol
// ---------------------------------------------------------------------------------------------

#[test]
fn error_replies_on_the_wire() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(100));
    let mut c = s.conn();
    let ghost = "b-NoSuchBatch0000";

    // Unknown parent.
    let r = c.cmd(&format!(
        "BATCH NEW {}",
        json!({"parent_bid": ghost, "complete": {"jobtype": "C"}})
    ));
    assert_eq!(r.wire_str(), format!("-ERR No such batch {ghost}\r\n"));
    // No callback at all.
    for spec in [
        json!({"description": "no callbacks"}),
        json!({}),
        json!({"description": "nulls", "success": null, "complete": null}),
    ] {
        let r = c.cmd(&format!("BATCH NEW {spec}"));
        let e = r.expect_err();
        assert!(
            e.starts_with("ERR ") && e.to_lowercase().contains("callback"),
            "BATCH NEW {spec}: {r:?}"
        );
    }
    // Bad JSON.
    for bad in ["{\"description\": ", "[1,2]", "not json"] {
        let r = c.cmd(&format!("BATCH NEW {bad}"));
        assert!(
            r.expect_err().starts_with("ERR invalid JSON"),
            "BATCH NEW {bad}: {r:?}"
        );
    }
    // Unknown bid on OPEN / COMMIT / STATUS.
    for verb in ["OPEN", "COMMIT", "STATUS"] {
        let r = c.cmd(&format!("BATCH {verb} {ghost}"));
        assert_eq!(
            r.wire_str(),
            format!("-ERR No such batch {ghost}\r\n"),
            "BATCH {verb}"
        );
    }
    // PUSH into an unknown batch.
    let r = c.push(&member("ghost-member-1", "default", ghost));
    assert_eq!(r.wire_str(), format!("-ERR No such batch {ghost}\r\n"));
    // PUSHB: only that jid is refused.
    let real = batch_new(
        &mut c,
        &json!({"complete": {"jobtype": "C", "queue": "cb"}}),
    );
    let r = c.cmd(&format!(
        "PUSHB {}",
        json!([
            member("pushb-member-1", "default", &real),
            member("pushb-member-2", "default", ghost),
            member("pushb-member-3", "default", &real)
        ])
    ));
    assert_eq!(
        r.json(),
        json!({"pushb-member-2": format!("No such batch {ghost}")}),
        "{r:?}"
    );
    assert_eq!(counts(&mut c, &real), (2, 2, 0));
    assert_eq!(queue_size(&c.info(), "default"), Some(2));
    // Pushes refused for other reasons (duplicate jid, NOTUNIQUE) do not join the batch.
    let r = c.push(&member("pushb-member-1", "elsewhere", &real));
    assert!(r.expect_err().starts_with("ERR duplicate jid"), "{r:?}");
    let uniq = |jid: &str| json!({"jid": jid, "jobtype": "U", "args": [1], "queue": "uq", "custom": {"bid": real, "unique_for": 60}});
    c.push_ok(&uniq("uniq-member-1"));
    assert_eq!(
        c.push(&uniq("uniq-member-2")).wire_str(),
        "-NOTUNIQUE Job not unique\r\n"
    );
    assert_eq!(counts(&mut c, &real), (3, 3, 0));
    let mut uw = s.worker("uniq-w");
    let u = uw.fetch_job("uq");
    assert_eq!(u["jid"], "uniq-member-1");
    uw.ack("uniq-member-1").expect_ok();
    assert_eq!(counts(&mut c, &real), (3, 2, 0));
    // Nothing was stored for the refused jobs and refused batches.
    let mut w = s.worker("err-w");
    let mut got = Vec::new();
    while let Some((_, j)) = w.fetch("default") {
        got.push(j["jid"].as_str().unwrap().to_string());
        assert!(got.len() <= 2);
    }
    got.sort();
    assert_eq!(got, ["pushb-member-1", "pushb-member-3"]);
    // The server still answers normally on the same connection.
    assert!(c.cmd("INFO").bulk().len() > 2);
}

#[test]
fn status_json_shape_and_callback_job_defaults() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(100));
    let mut c = s.conn();
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    // Minimal callback objects: the server fills jid, args and queue.
    let bid = batch_new(
        &mut c,
        &json!({"description": "shape", "complete": {"jobtype": "Done"}, "success": {"jobtype": "Yay", "args": [1, "two"], "queue": "cbq", "jid": "my-success-cb-1"}}),
    );
    let st = status(&mut c, &bid);
    let keys: HashSet<&str> = st.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let want: HashSet<&str> = [
        "bid",
        "description",
        "created_at",
        "total",
        "pending",
        "failed",
        "complete_st",
        "success_st",
    ]
    .into();
    assert_eq!(keys, want, "status {st}");
    assert_eq!(st["bid"], json!(bid));
    assert_eq!(st["description"], "shape");
    let created = parse_ts(st["created_at"].as_str().expect("created_at string"));
    assert!(
        created >= before && created <= chrono::Utc::now() + chrono::Duration::seconds(2),
        "created_at {created} is not about now"
    );
    assert_eq!(st["total"], 0);
    assert_eq!(st["pending"], 0);
    assert_eq!(st["failed"], 0);
    assert_eq!(st["complete_st"], "");
    assert_eq!(st["success_st"], "");

    // BATCH OPEN answers the bid as a bulk string.
    assert_eq!(
        c.cmd(&format!("BATCH OPEN {bid}")).wire_str(),
        format!("${}\r\n{bid}\r\n", bid.len())
    );
    // Uncommitted: nothing fires although nothing is pending.
    let mut w = s.worker("shape-w");
    assert!(
        w.fetch("default cbq").is_none(),
        "an uncommitted batch fired"
    );
    // Empty batch committed: complete fires at once.
    assert_eq!(c.cmd(&format!("BATCH COMMIT {bid}")).wire_str(), "+OK\r\n");
    assert_eq!(cb_states(&mut c, &bid), ("1".into(), "".into()));
    let done = w.fetch_job("default cbq");
    assert_eq!(done["jobtype"], "Done");
    assert_eq!(done["queue"], "default");
    assert_eq!(done["args"], json!([]));
    let djid = done["jid"].as_str().expect("the server fills a jid");
    assert!(djid.len() >= 8, "jid {djid:?}");
    assert!(!custom(&done).contains_key("bid"), "{done}");
    assert!(!custom(&done).contains_key("_pbid"), "{done}");
    assert!(
        w.fetch("default cbq").is_none(),
        "success waits for complete's ACK"
    );
    w.ack(djid).expect_ok();
    assert_eq!(cb_states(&mut c, &bid), ("2".into(), "1".into()));
    let yay = w.fetch_job("default cbq");
    assert_eq!(yay["jobtype"], "Yay");
    assert_eq!(yay["jid"], "my-success-cb-1");
    assert_eq!(yay["queue"], "cbq");
    assert_eq!(yay["args"], json!([1, "two"]));
    assert!(!custom(&yay).contains_key("bid"), "{yay}");
    w.ack("my-success-cb-1").expect_ok();
    assert_eq!(cb_states(&mut c, &bid), ("2".into(), "2".into()));

    // A child batch without description: parent_bid shown, description omitted.
    let child = batch_new(
        &mut c,
        &json!({"parent_bid": bid, "success": {"jobtype": "ChildYay", "queue": "cbq"}}),
    );
    let st = status(&mut c, &child);
    let keys: HashSet<&str> = st.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let want: HashSet<&str> = [
        "bid",
        "parent_bid",
        "created_at",
        "total",
        "pending",
        "failed",
        "complete_st",
        "success_st",
    ]
    .into();
    assert_eq!(keys, want, "status {st}");
    assert_eq!(st["parent_bid"], json!(bid));

    // A success-only batch: success fires at once when the empty batch is committed; the
    // missing complete callback shows as "".
    let only = batch_new(
        &mut c,
        &json!({"success": {"jobtype": "OnlySuccess", "queue": "only"}}),
    );
    c.push_ok(&member("only-member-1", "work", &only));
    c.cmd(&format!("BATCH COMMIT {only}")).expect_ok();
    assert_eq!(cb_states(&mut c, &only), ("".into(), "".into()));
    let m = w.fetch_job("work");
    assert_eq!(m["custom"]["bid"], json!(only), "members keep custom.bid");
    w.ack("only-member-1").expect_ok();
    assert_eq!(counts(&mut c, &only), (1, 0, 0));
    assert_eq!(cb_states(&mut c, &only), ("".into(), "1".into()));
    let os = w.fetch_job("only");
    assert_eq!(os["jobtype"], "OnlySuccess");
    w.ack(os["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(cb_states(&mut c, &only), ("".into(), "2".into()));

    // Reopen + add + commit after both callbacks finished: nothing fires again.
    let bid_reply = c.cmd(&format!("BATCH OPEN {bid}"));
    assert_eq!(bid_reply.bulk_str(), bid);
    c.push_ok(&member("late-member-1", "work", &bid));
    c.cmd(&format!("BATCH COMMIT {bid}")).expect_ok();
    let late = w.fetch_job("work");
    w.ack(late["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(counts(&mut c, &bid), (1, 0, 0));
    assert_eq!(cb_states(&mut c, &bid), ("2".into(), "2".into()));
    assert!(
        w.fetch("default cbq only work").is_none(),
        "a callback fired twice"
    );
}

/// Members finishing before the commit fire nothing; a reopen while the complete callback is
/// enqueued (not yet ACKed), plus a new member, never fires it a second time.
#[test]
fn reopen_while_callback_enqueued_never_refires() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(100));
    let mut c = s.conn();
    let mut w = s.worker("reopen-w");
    let bid = batch_new(
        &mut c,
        &json!({"complete": {"jobtype": "C", "queue": "cb"}, "success": {"jobtype": "S", "queue": "cb"}}),
    );
    c.push_ok(&member("reopen-m-0001", "work", &bid));
    let m = w.fetch_job("work");
    w.ack(m["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(counts(&mut c, &bid), (1, 0, 0));
    assert_eq!(
        cb_states(&mut c, &bid),
        ("".into(), "".into()),
        "not committed yet"
    );
    assert!(
        w.fetch("cb").is_none(),
        "a callback fired before the commit"
    );
    c.cmd(&format!("BATCH COMMIT {bid}")).expect_ok();
    assert_eq!(cb_states(&mut c, &bid), ("1".into(), "".into()));

    // Reopen before the complete callback ran; add a member; commit; run everything.
    assert_eq!(c.cmd(&format!("BATCH OPEN {bid}")).bulk_str(), bid);
    c.push_ok(&member("reopen-m-0002", "work", &bid));
    assert_eq!(counts(&mut c, &bid), (2, 1, 0));
    c.cmd(&format!("BATCH COMMIT {bid}")).expect_ok();
    let m2 = w.fetch_job("work");
    w.ack(m2["jid"].as_str().unwrap()).expect_ok();
    let cc = w.fetch_job("cb");
    assert_eq!(cc["jobtype"], "C");
    assert!(
        w.fetch("cb").is_none(),
        "the complete callback was enqueued twice"
    );
    w.ack(cc["jid"].as_str().unwrap()).expect_ok();
    let sc = w.fetch_job("cb");
    assert_eq!(sc["jobtype"], "S");
    w.ack(sc["jid"].as_str().unwrap()).expect_ok();
    assert!(w.fetch("cb").is_none(), "a callback fired twice");
    assert_eq!(cb_states(&mut c, &bid), ("2".into(), "2".into()));
    // Committing again (already committed) changes nothing.
    c.cmd(&format!("BATCH COMMIT {bid}")).expect_ok();
    assert!(
        w.fetch("cb").is_none(),
        "a second COMMIT refired a callback"
    );
}

/// Callback jobs never carry `custom.bid`, not even one the client wrote into the callback
/// object; their other custom keys are kept (and a child's callbacks get `_pbid` besides).
#[test]
fn callback_jobs_never_carry_custom_bid() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(100));
    let mut c = s.conn();
    let mut w = s.worker("cbbid-w");
    let other = batch_new(
        &mut c,
        &json!({"complete": {"jobtype": "Other", "queue": "unused"}}),
    );
    let parent = batch_new(
        &mut c,
        &json!({"complete": {"jobtype": "P", "queue": "unused"}}),
    );
    let bid = batch_new(
        &mut c,
        &json!({"parent_bid": parent,
                "complete": {"jobtype": "C", "queue": "cb", "custom": {"bid": other, "keep": 1}}}),
    );
    c.cmd(&format!("BATCH COMMIT {bid}")).expect_ok();
    let cb = w.fetch_job("cb");
    assert_eq!(cb["jobtype"], "C");
    let cu = custom(&cb);
    assert_eq!(cu.get("keep"), Some(&json!(1)), "{cb}");
    assert_eq!(cu.get("_pbid"), Some(&json!(parent)), "{cb}");
    assert!(
        !cu.contains_key("bid"),
        "the callback job carries custom.bid: {cb}"
    );
    w.ack(cb["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(
        counts(&mut c, &other),
        (0, 0, 0),
        "the callback is no member of {other}"
    );
}

/// Member FAILs count in `failed` until an ACK; the batch status survives a restart.
#[test]
fn fail_then_ack_and_status_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = ServerOpts::new().fetch_timeout_ms(100);
    let mut s = Server::start_in(tmp.path(), opts.clone());
    let mut c = s.conn();
    let bid = batch_new(
        &mut c,
        &json!({"description": "durable", "complete": {"jobtype": "C", "queue": "cb"}, "success": {"jobtype": "S", "queue": "cb"}}),
    );
    c.cmd(&format!(
        "PUSHB {}",
        json!([
            member("dur-1-aaaa", "work", &bid),
            member("dur-2-aaaa", "work", &bid)
        ])
    ))
    .json();
    c.cmd(&format!("BATCH COMMIT {bid}")).expect_ok();
    let mut w = s.worker("dur-w");
    let a = w.fetch_job("work");
    w.fail(&json!({"jid": a["jid"], "errtype": "E", "message": "first"}))
        .expect_ok();
    assert_eq!(counts(&mut c, &bid), (2, 1, 1));
    drop((c, w));
    s.kill();
    s = Server::start_in(tmp.path(), opts);
    let mut c = s.conn();
    let st = status(&mut c, &bid);
    assert_eq!(st["description"], "durable");
    assert_eq!(counts(&mut c, &bid), (2, 1, 1));
    let mut w = s.worker("dur-w");
    let b = w.fetch_job("work");
    w.ack(b["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(counts(&mut c, &bid), (2, 0, 1));
    assert_eq!(cb_states(&mut c, &bid), ("1".into(), "".into()));
    c.mutate(&json!({"cmd": "requeue", "target": "retries", "filter": {"jids": [a["jid"]]}}))
        .expect_ok();
    let a2 = w.fetch_job("work");
    assert_eq!(a2["jid"], a["jid"]);
    // A second FAIL of a member already out of pending does not count it twice.
    w.fail(&json!({"jid": a["jid"], "errtype": "E", "message": "second"}))
        .expect_ok();
    assert_eq!(counts(&mut c, &bid), (2, 0, 1));
    c.mutate(&json!({"cmd": "requeue", "target": "retries", "filter": {"jids": [a["jid"]]}}))
        .expect_ok();
    let a3 = w.fetch_job("work");
    w.ack(a3["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(counts(&mut c, &bid), (2, 0, 0));
    let cc = w.fetch_job("cb");
    assert_eq!(cc["jobtype"], "C");
    w.ack(cc["jid"].as_str().unwrap()).expect_ok();
    let sc = w.fetch_job("cb");
    assert_eq!(sc["jobtype"], "S");
    w.ack(sc["jid"].as_str().unwrap()).expect_ok();
    assert_eq!(cb_states(&mut c, &bid), ("2".into(), "2".into()));
}

// ---------------------------------------------------------------------------------------------
// Crash test: SIGKILL during ACK storms of batches
// ---------------------------------------------------------------------------------------------

/// Batches, each with its members in one block of the queue: the first batches finish (and
/// their callbacks fire) while the storm on the later ones goes on, so kills land around
/// callbacks too.
const BATCHES: usize = 4;
const MEMBERS_PER_BATCH: usize = 250;
const MEMBERS: usize = BATCHES * MEMBERS_PER_BATCH;
const WORKERS: usize = 4;
const MIN_KILLS: u32 = 10;
/// Kills during the ACK storm needed for the run to mean anything.
const MIN_STORM_KILLS: u32 = 4;
/// Kills after every member had an ACK sent (the last callbacks firing).
const MIN_LATER_KILLS: u32 = 5;
const MAX_KILLS: u32 = 30;
/// No new life starts after this much time.
const KILL_BUDGET: Duration = Duration::from_secs(35);
const CRASH_QUEUES: &str = "callbacks members";

/// `kind#batch index`, e.g. `BatchComplete#2`.
type CbKey = String;

#[derive(Default)]
struct Ledger {
    /// Member jids whose ACK was sent (answered or not).
    member_ack_sent: HashSet<String>,
    member_ack_ok: HashSet<String>,
    /// Distinct jids delivered per callback.
    cb_jids: HashMap<CbKey, HashSet<String>>,
    cb_deliveries: HashMap<CbKey, u32>,
    cb_ack_ok: HashMap<CbKey, u32>,
    /// ACKs sent whose reply never came (the server died).
    cb_ack_unconfirmed: HashMap<CbKey, u32>,
    /// Deliveries of a callback after one of its ACKs was answered `+OK`.
    cb_resurrected: Vec<String>,
    /// Event sequence numbers per batch index.
    complete_first_ack_sent: HashMap<u64, u64>,
    success_first_fetched: HashMap<u64, u64>,
    /// ACKs answered `-ERR Job not found` (raced the reaper).
    late_acks: u32,
    errors: Vec<String>,
}

impl Ledger {
    fn cb_total(&self, m: &HashMap<CbKey, u32>) -> u32 {
        m.values().sum()
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn crash_seed() -> u64 {
    let seed = std::env::var("WERK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("batch crash test seed: {seed} (set WERK_CRASH_SEED={seed} to replay)");
    seed
}

fn connect_worker(addr: SocketAddr, wid: &str) -> io::Result<Conn> {
    let mut c = Conn::try_connect(addr)?;
    c.set_read_timeout(Duration::from_secs(10));
    match c.read_reply()? {
        Reply::Simple(s) if s.starts_with("HI ") => {}
        other => return Err(io::Error::other(format!("bad greeting {other:?}"))),
    }
    let hello = json!({"v": 2, "hostname": "batch-crash", "wid": wid});
    match c.try_cmd(&format!("HELLO {hello}"))? {
        r if r.is_ok() => Ok(c),
        other => Err(io::Error::other(format!("HELLO refused: {other:?}"))),
    }
}

/// FETCH + ACK as fast as possible until `stop` or the connection dies.
fn storm_worker(
    addr: SocketAddr,
    wid: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
) {
    let Ok(mut c) = connect_worker(addr, &wid) else {
        return;
    };
    while !stop.load(Ordering::SeqCst) {
        let r = match c.try_cmd(&format!("FETCH {CRASH_QUEUES}")) {
            Ok(r) => r,
            Err(_) => return,
        };
        let job: Value = match &r {
            Reply::Null => continue,
            Reply::Bulk(b) => match serde_json::from_slice(b) {
                Ok(v) => v,
                Err(e) => {
                    ledger
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("FETCH returned bad JSON ({e}): {r:?}"));
                    return;
                }
            },
            other => {
                ledger
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("FETCH: {other:?}"));
                return;
            }
        };
        let fetched_at = seq.fetch_add(1, Ordering::SeqCst);
        let jid = job["jid"].as_str().unwrap_or_default().to_string();
        let kind = job["jobtype"].as_str().unwrap_or_default().to_string();
        let is_cb = kind == "BatchComplete" || kind == "BatchSuccess";
        let k = job["args"][0].as_u64().unwrap_or(u64::MAX);
        let key: CbKey = format!("{kind}#{k}");
        {
            let mut l = ledger.lock().unwrap();
            if is_cb {
                if custom(&job).contains_key("bid") {
                    l.errors
                        .push(format!("callback job carries custom.bid: {job}"));
                }
                if l.cb_ack_ok.get(&key).copied().unwrap_or(0) > 0 {
                    l.cb_resurrected.push(format!("{key} {jid}"));
                }
                l.cb_jids
                    .entry(key.clone())
                    .or_default()
                    .insert(jid.clone());
                *l.cb_deliveries.entry(key.clone()).or_default() += 1;
                if kind == "BatchSuccess" {
                    l.success_first_fetched.entry(k).or_insert(fetched_at);
                }
                if kind == "BatchComplete" && !l.complete_first_ack_sent.contains_key(&k) {
                    let now = seq.fetch_add(1, Ordering::SeqCst);
                    l.complete_first_ack_sent.insert(k, now);
                }
            } else if kind != "Member" {
                l.errors.push(format!("unexpected job {job}"));
            } else {
                if !custom(&job).contains_key("bid") {
                    l.errors.push(format!("member lost its custom.bid: {job}"));
                }
                l.member_ack_sent.insert(jid.clone());
            }
        }
        let ack = format!("ACK {}", json!({ "jid": jid }));
        let reply = c.try_cmd(&ack);
        let mut l = ledger.lock().unwrap();
        match reply {
            Ok(r) if r.is_ok() => {
                if is_cb {
                    *l.cb_ack_ok.entry(key).or_default() += 1;
                } else {
                    l.member_ack_ok.insert(jid);
                }
            }
            // A late ACK after the reservation (600 ms) expired and the job was fetched again
            // by another worker: not an error of the batch bookkeeping.
            Ok(Reply::Error(e)) if e == format!("ERR Job not found {jid}") => l.late_acks += 1,
            Ok(other) => l.errors.push(format!("ACK {kind} {jid}: {other:?}")),
            Err(_) => {
                if is_cb {
                    *l.cb_ack_unconfirmed.entry(key).or_default() += 1;
                }
                return;
            }
        }
    }
}

/// Runs one server life with WORKERS storm workers until `until` returns, then SIGKILLs it.
fn life(
    dir: &std::path::Path,
    opts: &ServerOpts,
    n: u32,
    ledger: &Arc<Mutex<Ledger>>,
    seq: &Arc<AtomicU64>,
    until: impl FnOnce(&Server),
) {
    let mut server = Server::start_in(dir, opts.clone());
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (l, st, sq) = (ledger.clone(), stop.clone(), seq.clone());
            let wid = format!("storm-l{n}-{i}");
            thread::spawn(move || storm_worker(addr, wid, l, st, sq))
        })
        .collect();
    until(&server);
    assert!(
        server.is_running(),
        "werk died by itself in life {n}; log:\n{}",
        tail(&server.log_path, 40)
    );
    server.kill();
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().expect("storm worker panicked");
    }
}

/// The crash test: kill during ACK storms of batches; callbacks fire exactly once.
#[test]
fn kill_during_ack_storms_callbacks_fire_exactly_once() {
    let seed = crash_seed();
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    // Reservations of 60 s last 600 ms: jobs in flight at a kill come back quickly (expiry →
    // retry after a scaled backoff → queue).
    let opts = ServerOpts::new()
        .fetch_timeout_ms(100)
        .scan_interval_ms(50)
        .args(["--reap-interval-ms", "50", "--time-scale", "0.01"]);
    let started = Instant::now();

    // Set up the batches (no kills yet).
    let bids: Vec<String> = {
        let s = Server::start_in(tmp.path(), opts.clone());
        let mut c = s.conn();
        let mut bids = Vec::new();
        for k in 0..BATCHES {
            let bid = batch_new(
                &mut c,
                &json!({
                    "description": format!("ack storm {k}"),
                    "complete": {"jobtype": "BatchComplete", "args": [k], "queue": "callbacks", "reserve_for": 60},
                    "success": {"jobtype": "BatchSuccess", "args": [k], "queue": "callbacks", "reserve_for": 60}
                }),
            );
            let jobs: Vec<Value> = (0..MEMBERS_PER_BATCH)
                .map(|i| {
                    json!({"jid": format!("storm-member-{k}-{i:04}"), "jobtype": "Member", "args": [k, i],
                           "queue": "members", "reserve_for": 60, "custom": {"bid": bid}})
                })
                .collect();
            for chunk in jobs.chunks(50) {
                let r = c.cmd(&format!("PUSHB {}", Value::Array(chunk.to_vec())));
                assert_eq!(r.wire(), b"$2\r\n{}\r\n", "PUSHB members: {r:?}");
            }
            c.cmd(&format!("BATCH COMMIT {bid}")).expect_ok();
            let n = MEMBERS_PER_BATCH as u64;
            assert_eq!(counts(&mut c, &bid), (n, n, 0));
            bids.push(bid);
        }
        bids
    };

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let seq = Arc::new(AtomicU64::new(0));
    let mut kills = 0u32;
    // Kills while some member had no ACK sent yet, and after that.
    let (mut storm_kills, mut later_kills) = (0u32, 0u32);
    while kills < MAX_KILLS && started.elapsed() < KILL_BUDGET {
        let storm_on = ledger.lock().unwrap().member_ack_sent.len() < MEMBERS;
        if !storm_on && kills >= MIN_KILLS && later_kills >= MIN_LATER_KILLS {
            break;
        }
        kills += 1;
        // Short lives during the storm; longer ones after it.
        let run = if storm_on {
            rng.range(20, 110)
        } else {
            rng.range(20, 500)
        };
        // The life's length is the (random) crash point, not a synchronisation.
        life(tmp.path(), &opts, kills, &ledger, &seq, |_| {
            thread::sleep(Duration::from_millis(run))
        });
        if storm_on {
            storm_kills += 1;
        } else {
            later_kills += 1;
        }
        let l = ledger.lock().unwrap();
        eprintln!(
            "life {kills}: killed after {run} ms; members ACKed +OK {} / sent {}; callbacks delivered {} ACKed +OK {} unconfirmed {}",
            l.member_ack_ok.len(),
            l.member_ack_sent.len(),
            l.cb_total(&l.cb_deliveries),
            l.cb_total(&l.cb_ack_ok),
            l.cb_total(&l.cb_ack_unconfirmed),
        );
    }

    // Final life: run until every batch has succeeded, then a while longer (a refired callback
    // would show up).
    let mut final_status = Vec::new();
    life(tmp.path(), &opts, kills + 1, &ledger, &seq, |s| {
        let mut c = s.conn();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            final_status = bids.iter().map(|b| status(&mut c, b)).collect::<Vec<_>>();
            if final_status.iter().all(|st| st["success_st"] == "2") || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Then until nothing is left that could come back as a second callback delivery (no job
        // enqueued, reserved, retrying or scheduled), and the reaper and the scheduler have each
        // run a whole cycle after that.
        wait_info(
            &mut c,
            Duration::from_secs(30),
            "every job to be done",
            |i| {
                let queued: u64 = i["faktory"]["queues"]
                    .as_object()
                    .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
                queued == 0
                    && ["working", "retries", "scheduled"]
                        .iter()
                        .all(|set| set_size(i, set) == 0)
            },
        );
        wait_full_task_cycle(&mut c, "Busy");
        wait_full_task_cycle(&mut c, "Scheduled");
    });
    // One more life without workers: inspect what is left.
    let s = Server::start_in(tmp.path(), opts);
    let mut c = s.conn();
    let info = c.info();

    let l = ledger.lock().unwrap();
    let zero = 0u32;
    eprintln!(
        "batch crash summary: kills={kills} (during the storm {storm_kills}, after {later_kills}) members_ack_ok={} \
         cb_deliveries={:?} cb_ack_ok={:?} cb_ack_unconfirmed={:?} late_acks={} errors={} seed={seed} elapsed={:?}",
        l.member_ack_ok.len(),
        l.cb_deliveries,
        l.cb_ack_ok,
        l.cb_ack_unconfirmed,
        l.late_acks,
        l.errors.len(),
        started.elapsed()
    );
    assert!(kills >= MIN_KILLS, "only {kills} kills");
    assert!(
        storm_kills >= MIN_STORM_KILLS,
        "only {storm_kills} kills during the ACK storm: the kills missed it"
    );
    assert!(
        l.errors.is_empty(),
        "unexpected replies: {:?}",
        &l.errors[..l.errors.len().min(20)]
    );
    for (k, bid) in bids.iter().enumerate() {
        assert_eq!(
            final_status[k]["success_st"], "2",
            "batch {k} did not succeed within 30 s of the last restart: {}",
            final_status[k]
        );
        let st = status(&mut c, bid);
        assert_eq!(st["complete_st"], "2", "batch {k}: {st}");
        assert_eq!(st["success_st"], "2", "batch {k}: {st}");
        assert_eq!(st["total"], MEMBERS_PER_BATCH, "batch {k}: {st}");
        assert_eq!(st["pending"], 0, "batch {k}: {st}");
        assert_eq!(st["failed"], 0, "batch {k}: {st}");
        for i in 0..MEMBERS_PER_BATCH {
            let jid = format!("storm-member-{k}-{i:04}");
            assert!(
                l.member_ack_sent.contains(&jid),
                "member {jid} was never ACKed"
            );
        }
        for kind in ["BatchComplete", "BatchSuccess"] {
            let key = format!("{kind}#{k}");
            let jids = l.cb_jids.get(&key).cloned().unwrap_or_default();
            assert_eq!(
                jids.len(),
                1,
                "{key} fired as {} distinct jobs: {jids:?}",
                jids.len()
            );
            let ok = *l.cb_ack_ok.get(&key).unwrap_or(&zero);
            let unconfirmed = *l.cb_ack_unconfirmed.get(&key).unwrap_or(&zero);
            assert!(
                ok <= 1,
                "{key} was ACKed with +OK {ok} times: it fired twice"
            );
            // A kill between the ACK's commit and its reply loses the +OK, not the ACK.
            assert!(
                ok == 1 || unconfirmed >= 1,
                "{key}: no ACK ever sent for it (ok {ok}, unconfirmed {unconfirmed})"
            );
        }
        let c_ack = l.complete_first_ack_sent[&(k as u64)];
        let s_fetch = l.success_first_fetched[&(k as u64)];
        assert!(
            c_ack < s_fetch,
            "batch {k}: the success callback was fetched (event {s_fetch}) before the complete \
             callback's first ACK was sent (event {c_ack})"
        );
    }
    assert!(
        l.cb_resurrected.is_empty(),
        "callbacks delivered again after their ACK got +OK: {:?}",
        l.cb_resurrected
    );
    // Nothing left anywhere.
    for q in ["members", "callbacks"] {
        assert_eq!(queue_size(&info, q).unwrap_or(0), 0, "queue {q}: {info}");
    }
    for set in ["working", "retries", "scheduled", "dead"] {
        assert_eq!(set_size(&info, set), 0, "set {set}: {info}");
    }
}
