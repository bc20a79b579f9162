//! End-to-end tests with the real `faktory` crate (0.13, async) as producer and consumer.
//!
//! The crate's `Client` writes `END` in its `Drop` through `block_in_place`, so every test runs
//! on the multi-threaded runtime, and the server is declared first so it is dropped last.

mod common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use faktory::mutate::{Filter, JobSet};
use faktory::{Client, Job, JobBuilder, JobId, StopReason, Worker, WorkerId};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

fn fast() -> ServerOpts {
    ServerOpts::new().fetch_timeout_ms(300)
}

async fn client(s: &Server) -> Client {
    timeout(T, Client::connect_to(&s.url()))
        .await
        .expect("connect timed out")
        .expect("faktory Client connects")
}

/// INFO through our raw client (sets are not exposed by `current_info`).
fn raw_info(s: &Server) -> Value {
    s.conn().info()
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_enqueue_and_info() {
    let s = Server::start(fast());
    let mut c = client(&s).await;
    c.enqueue(Job::new("order", vec!["ISBN-13:9781718501850"]).on_queue("books"))
        .await
        .unwrap();
    c.enqueue(Job::new("order", vec![json!(1), json!("two")]).on_queue("books"))
        .await
        .unwrap();

    let st = c
        .current_info()
        .await
        .expect("INFO deserialises into FaktoryState");
    assert_eq!(st.data.queues.get("books"), Some(&2));
    assert_eq!(st.data.total_enqueued, 2);
    assert_eq!(st.data.total_queues, 1);
    assert_eq!(st.data.total_processed, 0);
    assert_eq!(st.data.total_failures, 0);
    assert!(st.server.connections >= 1);
    assert!(st.server.command_count >= 3);
    assert!(!st.server.description.is_empty());
    assert!(
        st.server.version.major >= 1,
        "version {}",
        st.server.version
    );
    assert!((chrono::Utc::now() - st.now).num_seconds().abs() < 30);
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_fetches_runs_and_acks() {
    let s = Server::start(fast());
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let mut w = Worker::builder()
        .hostname("e2e-host".to_string())
        .labels(vec!["rust".to_string(), "e2e".to_string()])
        .register_fn("order", move |job| {
            let tx = tx.clone();
            async move {
                tx.send(job).unwrap();
                Ok::<(), io::Error>(())
            }
        })
        .connect_to(&s.url())
        .await
        .expect("worker connects");

    let mut c = client(&s).await;
    let jid = JobId::new("x-job-id-0123456782");
    c.enqueue(
        JobBuilder::new("order")
            .jid(jid.clone())
            .args(vec!["ISBN-13:9781718501850"])
            .queue("roundtrip")
            .build(),
    )
    .await
    .unwrap();

    let had = timeout(T, w.run_one(0, &["roundtrip"]))
        .await
        .expect("run_one timed out")
        .unwrap();
    assert!(had, "worker found no job");
    let job = rx.try_recv().expect("handler ran");
    assert_eq!(job.id(), &jid);
    assert_eq!(job.kind(), "order");
    assert_eq!(job.queue, "roundtrip");
    assert_eq!(job.args(), &[Value::from("ISBN-13:9781718501850")]);
    assert_eq!(job.retry, Some(25));
    assert!(
        job.enqueued_at.is_some(),
        "enqueued_at must be served and parse as RFC 3339"
    );
    assert!(job.failure().is_none());

    // Drained: the next run_one finds nothing (FETCH answers $-1 after the fetch timeout).
    let had = timeout(T, w.run_one(0, &["roundtrip"]))
        .await
        .expect("run_one timed out")
        .unwrap();
    assert!(!had);

    let st = c.current_info().await.unwrap();
    assert_eq!(st.data.queues.get("roundtrip"), Some(&0));
    assert_eq!(st.data.total_processed, 1);
    let info = raw_info(&s);
    assert_eq!(set_size(&info, "working"), 0, "the ACK was applied: {info}");
    drop(c);
    drop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_handler_puts_job_in_retries() {
    let s = Server::start(fast());
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let mut w = Worker::builder()
        .register_fn("explode", move |job| {
            let calls = calls2.clone();
            let tx = tx.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tx.send(job).unwrap();
                Err(io::Error::other("kaboom"))
            }
        })
        .connect_to(&s.url())
        .await
        .unwrap();
    let mut c = client(&s).await;
    let jid = JobId::new("failing-job-0001");
    c.enqueue(
        JobBuilder::new("explode")
            .jid(jid.clone())
            .args(vec![1, 2])
            .queue("fq")
            .build(),
    )
    .await
    .unwrap();

    assert!(timeout(T, w.run_one(0, &["fq"])).await.unwrap().unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let first = rx.try_recv().unwrap();
    assert!(first.failure().is_none());

    let st = c.current_info().await.unwrap();
    assert_eq!(st.data.total_failures, 1);
    assert_eq!(st.data.total_processed, 1);
    let info = raw_info(&s);
    assert_eq!(set_size(&info, "retries"), 1, "{info}");
    assert_eq!(set_size(&info, "working"), 0, "{info}");

    // Bring it back with the crate's MUTATE helper and run it again: the crate must be able to
    // deserialise the failure the server recorded.
    let ids = [&jid];
    c.requeue(JobSet::Retries, Filter::from_ids(&ids))
        .await
        .unwrap();
    assert!(timeout(T, w.run_one(0, &["fq"])).await.unwrap().unwrap());
    let second = rx.try_recv().unwrap();
    let f = second
        .failure()
        .expect("failure info is served on the retry");
    assert_eq!(f.retry_count, 0);
    assert_eq!(f.retry_remaining, 25);
    assert_eq!(f.message.as_deref(), Some("kaboom"));
    assert!(f.next_at.is_some());
    assert!((chrono::Utc::now() - f.failed_at).num_seconds().abs() < 60);

    let info = raw_info(&s);
    assert_eq!(set_size(&info, "retries"), 1, "{info}");
    assert_eq!(info["faktory"]["total_failures"], 2);
    drop(c);
    drop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_for_unknown_jobtype_fails_the_job() {
    let s = Server::start(fast());
    let mut w = Worker::builder()
        .register_fn("known", |_| async { Ok::<(), io::Error>(()) })
        .connect_to(&s.url())
        .await
        .unwrap();
    let mut c = client(&s).await;
    c.enqueue(Job::new("unknown_kind", Vec::<Value>::new()))
        .await
        .unwrap();
    assert!(timeout(T, w.run_one(0, &["default"]))
        .await
        .unwrap()
        .unwrap());
    let info = raw_info(&s);
    assert_eq!(set_size(&info, "retries"), 1, "{info}");
    drop(c);
    drop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_fields_and_args_round_trip() {
    let s = Server::start(fast());
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let mut w = Worker::builder()
        .register_fn("custom_kind", move |job| {
            let tx = tx.clone();
            async move {
                tx.send(job).unwrap();
                Ok::<(), io::Error>(())
            }
        })
        .connect_to(&s.url())
        .await
        .unwrap();
    let mut c = client(&s).await;
    let args = vec![
        json!(12345678901234567890u64),
        json!("a b  c"),
        json!({"nested": [1, 2.5, null, true], "s": "x\"y"}),
        json!(-42),
    ];
    let created = chrono::Utc::now() - chrono::Duration::seconds(10);
    let job = JobBuilder::new("custom_kind")
        .jid(JobId::new("custom-jid-0001"))
        .args(args.clone())
        .queue("custom_q")
        .retry(3isize)
        .reserve_for(Duration::from_secs(600))
        .created_at(created)
        .add_to_custom_data("locale", "fr")
        .add_to_custom_data("trace", json!({"id": "abc", "n": 7}))
        .build();
    c.enqueue(job).await.unwrap();
    assert!(timeout(T, w.run_one(0, &["custom_q"]))
        .await
        .unwrap()
        .unwrap());
    let got = rx.try_recv().unwrap();
    assert_eq!(got.id(), &JobId::new("custom-jid-0001"));
    assert_eq!(got.args(), &args[..]);
    assert_eq!(got.queue, "custom_q");
    assert_eq!(got.retry, Some(3));
    assert_eq!(got.reserve_for, Some(Duration::from_secs(600)));
    assert_eq!(got.custom.get("locale"), Some(&json!("fr")));
    assert_eq!(got.custom.get("trace"), Some(&json!({"id": "abc", "n": 7})));
    assert_eq!(
        got.created_at.map(|t| t.timestamp_millis()),
        Some(created.timestamp_millis())
    );
    drop(c);
    drop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_many_reports_per_job_errors() {
    let s = Server::start(fast());
    let mut c = client(&s).await;
    let (n, errs) = c
        .enqueue_many([
            Job::new("bulk", vec![1]),
            Job::new("bulk", vec![2]),
            Job::new("bulk", vec![3]),
        ])
        .await
        .unwrap();
    assert_eq!((n, errs), (3, None));
    let bad = JobBuilder::new("bulk").jid(JobId::new("short")).build();
    let (n, errs) = c
        .enqueue_many([Job::new("bulk", vec![4]), bad])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let errs = errs.expect("the short jid is reported");
    assert_eq!(
        errs.get("short").map(String::as_str),
        Some("jobs must have a reasonable jid parameter")
    );
    let st = c.current_info().await.unwrap();
    assert_eq!(st.data.queues.get("default"), Some(&4));
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_control_from_the_crate() {
    let s = Server::start(fast());
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    let mut w = Worker::builder()
        .register_fn("qc", move |_| {
            let r = r2.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<(), io::Error>(())
            }
        })
        .connect_to(&s.url())
        .await
        .unwrap();
    let mut c = client(&s).await;
    c.enqueue(Job::new("qc", vec![1]).on_queue("qc1"))
        .await
        .unwrap();
    c.enqueue(Job::new("qc", vec![2]).on_queue("qc2"))
        .await
        .unwrap();

    c.queue_pause(&["qc1"]).await.unwrap();
    assert!(
        !timeout(T, w.run_one(0, &["qc1"])).await.unwrap().unwrap(),
        "paused queue served a job"
    );
    c.queue_resume(&["qc1"]).await.unwrap();
    assert!(timeout(T, w.run_one(0, &["qc1"])).await.unwrap().unwrap());

    c.queue_pause_all().await.unwrap();
    assert!(!timeout(T, w.run_one(0, &["qc2"])).await.unwrap().unwrap());
    c.queue_resume_all().await.unwrap();

    c.queue_remove(&["qc2"]).await.unwrap();
    let st = c.current_info().await.unwrap();
    assert!(!st.data.queues.contains_key("qc2"));
    assert!(!timeout(T, w.run_one(0, &["qc2"])).await.unwrap().unwrap());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    drop(c);
    drop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_job_mutations_from_the_crate() {
    let s = Server::start(fast());
    let mut c = client(&s).await;
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let a = JobId::new("sched-crate-a");
    let b = JobId::new("sched-crate-b");
    for (id, kind) in [(&a, "alpha"), (&b, "beta")] {
        c.enqueue(
            JobBuilder::new(kind)
                .jid(id.clone())
                .at(later)
                .queue("sq")
                .build(),
        )
        .await
        .unwrap();
    }
    assert_eq!(set_size(&raw_info(&s), "scheduled"), 2);

    let ids = [&a];
    c.requeue(JobSet::Scheduled, Filter::from_ids(&ids))
        .await
        .unwrap();
    c.kill(JobSet::Scheduled, Filter::from_kind("beta"))
        .await
        .unwrap();
    let info = raw_info(&s);
    assert_eq!(
        (set_size(&info, "scheduled"), set_size(&info, "dead")),
        (0, 1),
        "{info}"
    );
    assert_eq!(queue_size(&info, "sq"), Some(1));
    c.clear(JobSet::Dead).await.unwrap();
    assert_eq!(set_size(&raw_info(&s), "dead"), 0);
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn password_via_url() {
    let s = Server::start(fast().password("s3cr3t"));
    // Right password.
    let mut c = timeout(T, Client::connect_to(&format!("tcp://:s3cr3t@{}", s.addr)))
        .await
        .unwrap()
        .expect("correct password accepted");
    c.enqueue(Job::new("pw", vec![1])).await.unwrap();
    // Wrong password.
    let r = timeout(T, Client::connect_to(&format!("tcp://:wrong@{}", s.addr)))
        .await
        .unwrap();
    assert!(r.is_err(), "wrong password accepted");
    // No password.
    let r = timeout(T, Client::connect_to(&format!("tcp://{}", s.addr)))
        .await
        .unwrap();
    assert!(r.is_err(), "missing password accepted");
    // A worker with the password consumes the job.
    let mut w = Worker::builder()
        .register_fn("pw", |_| async { Ok::<(), io::Error>(()) })
        .connect_to(&format!("tcp://:s3cr3t@{}", s.addr))
        .await
        .expect("worker with password connects");
    assert!(timeout(T, w.run_one(0, &["default"]))
        .await
        .unwrap()
        .unwrap());
    assert_eq!(c.current_info().await.unwrap().data.total_processed, 1);
    drop(c);
    drop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_run_with_heartbeats_and_graceful_shutdown() {
    let s = Server::start(fast().web());
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut w = Worker::builder()
        .workers(2)
        .register_fn("tick", move |_| {
            let d = d2.clone();
            async move {
                d.fetch_add(1, Ordering::SeqCst);
                Ok::<(), io::Error>(())
            }
        })
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .connect_to(&s.url())
        .await
        .unwrap();
    let mut c = client(&s).await;
    for i in 0..10 {
        c.enqueue(Job::new("tick", vec![i])).await.unwrap();
    }
    let started = std::time::Instant::now();
    let jh = tokio::spawn(async move { w.run(&["default"]).await });

    let all = wait_async(T, || done.load(Ordering::SeqCst) == 10).await;
    assert!(all, "processed only {} of 10", done.load(Ordering::SeqCst));
    // The crate beats every 5 s; the worker stays alive past its first BEAT (an error reply
    // would end run): the server has answered a BEAT, and the worker still runs jobs after it.
    let beats = r#"werk_command_duration_seconds_count{command="BEAT"}"#;
    let beat = wait_async(Duration::from_secs(15), || {
        metric_value(&scrape_metrics(&s), beats).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(beat, "no BEAT within {:?}", started.elapsed());
    c.enqueue(Job::new("tick", vec![10])).await.unwrap();
    let more = wait_async(T, || done.load(Ordering::SeqCst) == 11).await;
    assert!(more, "no job run after the first BEAT");
    assert!(!jh.is_finished(), "worker stopped early: {:?}", jh.await);
    stop_tx.send(()).unwrap();
    let details = timeout(T, jh)
        .await
        .expect("graceful stop timed out")
        .unwrap()
        .expect("run ok");
    assert_eq!(details.reason, StopReason::GracefulShutdown);
    let st = c.current_info().await.unwrap();
    assert_eq!(st.data.total_processed, 11);
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_terminate_instruction_stops_the_worker() {
    let s = Server::start(fast());
    let wid = "e2e-terminate-worker-0001";
    let mut w = Worker::builder()
        .wid(WorkerId::new(wid))
        .register_fn("noop", |_| async { Ok::<(), io::Error>(()) })
        .connect_to(&s.url())
        .await
        .unwrap();
    let jh = tokio::spawn(async move { w.run(&["default"]).await });
    // The worker is running: its FETCH is parked on the empty queue.
    wait_info(&mut s.conn(), T, "the worker's FETCH", |i| {
        fetches_waiting(i) >= 1
    });
    // Operator asks the worker to terminate (BEAT for its wid from another connection).
    let r = s.conn().cmd(&format!(
        r#"BEAT {{"wid":"{wid}","current_state":"terminate"}}"#
    ));
    assert_eq!(r.wire(), b"$21\r\n{\"state\":\"terminate\"}\r\n");
    // Its next BEAT (every 5 s) gets the bulk terminate state.
    let details = timeout(Duration::from_secs(15), jh)
        .await
        .expect("worker did not stop after terminate")
        .unwrap()
        .expect("run returns Ok on a server instruction");
    assert_eq!(details.reason, StopReason::ServerInstruction);
}

async fn wait_async(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// The crate's own documented MUTATE filter, a Redis `SCAN MATCH` glob with escapes
/// (`Filter::from_pattern(r#"*\"args\":\[\"x\"\]*"#)`), requeues exactly the matching jobs of
/// the retry set.
#[tokio::test(flavor = "multi_thread")]
async fn requeue_retries_by_redis_glob_pattern() {
    let s = Server::start(fast());
    let mut w = Worker::builder()
        .register_fn("globbed", |_job| async {
            Err(io::Error::other("fail once"))
        })
        .connect_to(&s.url())
        .await
        .unwrap();
    let mut c = client(&s).await;
    for (jid, arg) in [("glob-job-x-0001", "x"), ("glob-job-y-0001", "y")] {
        c.enqueue(
            JobBuilder::new("globbed")
                .jid(JobId::new(jid))
                .args(vec![arg])
                .queue("gq")
                .build(),
        )
        .await
        .unwrap();
        assert!(timeout(T, w.run_one(0, &["gq"])).await.unwrap().unwrap());
    }
    assert_eq!(set_size(&raw_info(&s), "retries"), 2);

    let filter = Filter::from_pattern(r#"*\"args\":\[\"x\"\]*"#);
    c.requeue(JobSet::Retries, &filter).await.unwrap();

    let info = raw_info(&s);
    assert_eq!(
        set_size(&info, "retries"),
        1,
        "only the x job leaves: {info}"
    );
    let mut conn = s.conn();
    let job = conn.fetch_job("gq");
    assert_eq!(job["jid"], "glob-job-x-0001");
    assert_eq!(job["args"], json!(["x"]));
    drop(c);
    drop(w);
}

/// A producer that lost its connection retries its PUSH with the same jid: the same job
/// (jobtype, queue, args) is answered OK and stored once, in whatever state it reached; another
/// job under that jid is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn retried_push_is_ok_and_stores_one_job() {
    let s = Server::start(fast());
    let mut c = client(&s).await;
    let job = |args: Value| {
        JobBuilder::new("retried")
            .jid(JobId::new("retried-push-0001"))
            .args(vec![args])
            .queue("rq")
            .build()
    };
    c.enqueue(job(json!({"a": 1, "b": [2]}))).await.unwrap();
    // The retry: the same job (its created_at differs, a new Job is built every time).
    c.enqueue(job(json!({"a": 1, "b": [2]})))
        .await
        .expect("a retried push is OK");
    let (n, errs) = c
        .enqueue_many([job(json!({"a": 1, "b": [2]}))])
        .await
        .unwrap();
    assert_eq!((n, errs), (1, None), "a retried PUSHB entry is OK");
    assert_eq!(queue_size(&raw_info(&s), "rq"), Some(1), "one job stored");
    // Raw protocol, args formatted otherwise: the same job.
    let mut conn = s.conn();
    conn.cmd(r#"PUSH {"jid":"retried-push-0001","jobtype":"retried","queue":"rq","args":[ {"b":[2],"a":1} ]}"#)
        .expect_ok();
    // Another job under the same jid: refused.
    let err = c
        .enqueue(job(json!({"a": 2})))
        .await
        .expect_err("other args under a taken jid");
    assert!(format!("{err:?}").contains("duplicate jid"), "{err:?}");
    // Fetched and working: a retry is still OK and nothing is enqueued again.
    let fetched = conn.fetch_job("rq");
    assert_eq!(fetched["jid"], "retried-push-0001");
    c.enqueue(job(json!({"a": 1, "b": [2]}))).await.unwrap();
    let info = raw_info(&s);
    assert_eq!(queue_size(&info, "rq"), Some(0), "{info}");
    assert_eq!(set_size(&info, "working"), 1, "{info}");
    drop(c);
}

/// Times the server writes are never coarser than Faktory's (nanoseconds) and never before the
/// request: `created_at` of a job pushed without one, and `failed_at`.
#[tokio::test(flavor = "multi_thread")]
async fn server_written_times_have_sub_millisecond_precision() {
    let s = Server::start(fast());
    let mut conn = s.conn();
    let sub_ms = |t: &str| {
        let frac = t.trim_end_matches('Z').rsplit('.').next().unwrap_or("");
        frac.len() > 3
    };
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    for i in 0..20 {
        let jid = format!("precise-time-{i:04}");
        let before_push = chrono::Utc::now();
        conn.push_ok(&json!({"jid": jid, "jobtype": "T", "args": [], "queue": "pq"}));
        let job = conn.fetch_job("pq");
        let created = &job["created_at"];
        assert!(sub_ms(created.as_str().unwrap()), "created_at {created}");
        assert!(
            at(created) >= before_push,
            "created_at {created} < {before_push:?}"
        );
        let before_fail = chrono::Utc::now();
        conn.fail(&json!({"jid": jid, "message": "no"})).expect_ok();
        conn.mutate(&json!({"cmd": "requeue", "target": "retries", "filter": {"jids": [jid]}}))
            .expect_ok();
        let failed = conn.fetch_job("pq")["failure"]["failed_at"].clone();
        assert!(sub_ms(failed.as_str().unwrap()), "failed_at {failed}");
        assert!(
            at(&failed) >= before_fail,
            "failed_at {failed} < {before_fail:?}"
        );
        conn.ack(&jid).expect_ok();
    }
}
