//! Time-dependent job lifecycle, end to end, with the server's hidden `--time-scale` knob
//! compressing reservations and retry backoff 100x (a 60 s reservation lasts 600 ms, the first
//! retry waits 150-440 ms): reservation expiry is a failure that goes through the retry policy,
//! failed jobs come back after their backoff, retries run out into the dead set, and
//! reservations expire after a restart too.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SCALE: f64 = 0.01;

fn scaled() -> ServerOpts {
    ServerOpts::new()
        .fetch_timeout_ms(200)
        .scan_interval_ms(50)
        .args([
            "--reap-interval-ms",
            "50",
            "--time-scale",
            &SCALE.to_string(),
        ])
}

#[track_caller]
fn wait_fetch(c: &mut Conn, queues: &str, limit: Duration) -> Value {
    wait_for(limit, Duration::from_millis(10), || {
        c.fetch(queues).map(|x| x.1)
    })
    .unwrap_or_else(|| panic!("no job became fetchable from {queues} within {limit:?}"))
}

#[test]
fn reservation_expiry_is_a_failure_that_goes_through_retries() {
    let s = Server::start(scaled());
    let mut c = s.conn();
    c.push_ok(&json!({"jid": "expiring-1", "jobtype": "E", "args": [1], "reserve_for": 60}));
    let mut w = s.worker("wid-expiry");
    let first = w.fetch_job("default");
    let fetched = Instant::now();
    // FETCH is answered before its reservation commits (at-least-once allows it), so INFO may
    // count it a moment later.
    wait_info(
        &mut c,
        Duration::from_secs(2),
        "the reservation to be counted",
        |i| set_size(i, "working") == 1,
    );

    let info = wait_info(
        &mut c,
        Duration::from_secs(10),
        "the reservation to expire",
        |i| set_size(i, "working") == 0,
    );
    let took = fetched.elapsed();
    assert!(
        took >= Duration::from_millis(550),
        "reservation of 60 s x {SCALE} expired after only {took:?}"
    );
    assert_eq!(
        info["faktory"]["total_failures"], 1,
        "expiry counts as a failure: {info}"
    );
    assert_eq!(info["faktory"]["total_processed"], 1, "{info}");
    // A late FAIL is refused and leaves the retry alone (a late ACK would remove it: see
    // late_ack_after_expiry_removes_the_job).
    assert_eq!(
        w.fail(&json!({"jid": "expiring-1"})).wire_str(),
        "-ERR Job not found expiring-1\r\n"
    );

    // The retry comes back after its (scaled) backoff with the failure recorded.
    let got = wait_fetch(&mut w, "default", Duration::from_secs(10));
    assert_eq!(got["jid"], "expiring-1");
    assert_eq!(got["args"], json!([1]));
    let f = &got["failure"];
    assert_eq!(f["errtype"], "ReservationExpired", "{got}");
    assert_eq!(f["message"], "Faktory job reservation expired", "{got}");
    assert_eq!(f["retry_count"], 0);
    assert_eq!(f["remaining"], 25);
    let e1 = parse_ts(first["enqueued_at"].as_str().unwrap());
    let e2 = parse_ts(got["enqueued_at"].as_str().expect("enqueued_at"));
    assert!(
        e2 > e1,
        "enqueued_at must be refreshed when a retry is enqueued ({e1} -> {e2})"
    );
    w.ack("expiring-1").expect_ok();
    let info = c.info();
    assert_eq!(info["faktory"]["total_processed"], 2, "{info}");
    assert_eq!(
        ["retries", "working", "dead"].map(|k| set_size(&info, k)),
        [0, 0, 0],
        "{info}"
    );
}

#[test]
fn late_ack_after_expiry_removes_the_job() {
    let s = Server::start(scaled());
    let mut c = s.conn();
    c.push_ok(&json!({"jid": "late-ack-1", "jobtype": "E", "args": [1], "reserve_for": 60}));
    let mut w = s.worker("wid-late-ack");
    w.fetch_job("default");
    wait_info(
        &mut c,
        Duration::from_secs(10),
        "the reservation to expire",
        |i| i["faktory"]["total_failures"] == 1 && set_size(i, "working") == 0,
    );
    // The worker was still running it and reports it done: +OK, and the job is gone whether
    // it still waits in retries or the retry tick already put it back in its queue.
    w.ack("late-ack-1").expect_ok();
    let info = c.info();
    assert_eq!(
        (set_size(&info, "retries"), default_queue_len(&info)),
        (0, 0),
        "a late ACK removes the job: {info}"
    );
    assert_eq!(
        info["faktory"]["total_processed"], 2,
        "expiry and late ACK: {info}"
    );
    assert_eq!(info["faktory"]["total_failures"], 1, "{info}");
    // Longer than the first retry's (scaled) backoff: it never comes back. The clock passing
    // the longest backoff is the first condition (nothing happens in the server then), a whole
    // scheduler cycle after it (which would have brought a retry back) the second.
    thread::sleep(Duration::from_millis(600));
    wait_full_task_cycle(&mut c, "Scheduled");
    assert!(
        w.fetch("default").is_none(),
        "a job whose ACK was answered +OK was delivered again"
    );
}

#[test]
fn reserve_for_is_clamped_to_at_least_60_seconds() {
    let s = Server::start(scaled());
    let mut c = s.conn();
    c.push_ok(&json!({"jid": "clamped-1", "jobtype": "E", "args": [], "reserve_for": 1}));
    c.fetch_job("default");
    let fetched = Instant::now();
    // reserve_for 1 s would expire after 10 ms; clamped to 60 s it lasts 600 ms. Wait for the
    // reaper to run a whole cycle after the unclamped expiry (fetched + 10 ms) and check that
    // it left the job alone, well within the 600 ms.
    while fetched.elapsed() < Duration::from_millis(20) {
        thread::yield_now();
    }
    let info = wait_full_task_cycle(&mut c, "Busy");
    assert!(
        fetched.elapsed() < Duration::from_millis(500),
        "the reaper was too slow to tell ({:?})",
        fetched.elapsed()
    );
    assert_eq!(
        set_size(&info, "working"),
        1,
        "reserve_for below 60 s was not clamped: {info}"
    );
    wait_info(
        &mut c,
        Duration::from_secs(10),
        "the clamped reservation to expire",
        |i| set_size(i, "working") == 0 && set_size(i, "retries") + default_queue_len(i) == 1,
    );
}

fn default_queue_len(info: &Value) -> u64 {
    queue_size(info, "default").unwrap_or(0)
}

#[test]
fn expiry_follows_retry_zero_and_negative_retry() {
    let s = Server::start(scaled());
    let mut c = s.conn();
    c.push_ok(
        &json!({"jid": "expire-r0", "jobtype": "E", "args": [], "reserve_for": 60, "retry": 0}),
    );
    c.push_ok(
        &json!({"jid": "expire-rneg", "jobtype": "E", "args": [], "reserve_for": 60, "retry": -1}),
    );
    c.fetch_job("default");
    c.fetch_job("default");
    let info = wait_info(
        &mut c,
        Duration::from_secs(10),
        "both reservations to expire",
        |i| set_size(i, "working") == 0,
    );
    assert_eq!(
        set_size(&info, "retries"),
        0,
        "retry:0 is discarded, retry:-1 dies: {info}"
    );
    assert_eq!(set_size(&info, "dead"), 1, "{info}");
    assert_eq!(info["faktory"]["total_failures"], 2);
    c.mutate(&json!({"cmd": "requeue", "target": "dead", "filter": {"jids": ["expire-rneg"]}}))
        .expect_ok();
    let got = c.fetch_job("default");
    assert_eq!(got["jid"], "expire-rneg");
    assert_eq!(got["failure"]["errtype"], "ReservationExpired");
    assert!(c.fetch("default").is_none(), "the retry:0 job must be gone");
}

#[test]
fn failed_jobs_come_back_after_backoff_until_dead() {
    let s = Server::start(scaled());
    let mut c = s.conn();
    c.push_ok(&json!({"jid": "backoff-1", "jobtype": "B", "args": ["x"], "retry": 2}));
    c.fetch_job("default");
    let mut failed_at_first = None;
    for attempt in 0..2u64 {
        c.fail(&json!({"jid": "backoff-1", "errtype": "Boom", "message": format!("attempt {attempt}")})).expect_ok();
        let failed = Instant::now();
        assert_eq!(set_size(&c.info(), "retries"), 1);
        let got = wait_fetch(&mut c, "default", Duration::from_secs(10));
        let waited = failed.elapsed();
        // delay(c) = c^4 + 15 + rand(0..29)*(c+1) seconds, scaled: at least 150 ms (c=0) / 160 ms (c=1).
        assert!(
            waited >= Duration::from_millis(140),
            "retry {attempt} came back after only {waited:?}"
        );
        let f = &got["failure"];
        assert_eq!(f["retry_count"], attempt, "{got}");
        assert_eq!(f["remaining"], 2 - attempt, "{got}");
        assert_eq!(f["message"], format!("attempt {attempt}"));
        if attempt == 0 {
            failed_at_first = Some(f["failed_at"].clone());
        } else {
            assert_eq!(
                Some(f["failed_at"].clone()),
                failed_at_first,
                "failed_at stays at the first failure"
            );
        }
    }
    // Third failure: retry_count reaches retry -> dead, not retried.
    c.fail(&json!({"jid": "backoff-1", "message": "final"}))
        .expect_ok();
    let info = c.info();
    assert_eq!(
        (set_size(&info, "retries"), set_size(&info, "dead")),
        (0, 1),
        "{info}"
    );
    // Neither the scheduler (a whole cycle) nor time (longer than any scaled backoff) brings
    // it back.
    thread::sleep(Duration::from_millis(600));
    wait_full_task_cycle(&mut c, "Scheduled");
    assert!(
        c.fetch("default").is_none(),
        "a dead job came back by itself"
    );
    let info = c.info();
    assert_eq!(info["faktory"]["total_failures"], 3);
    assert_eq!(info["faktory"]["total_processed"], 3);
}

#[test]
fn reservations_expire_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), scaled());
    let mut c = s.conn();
    c.push_ok(&json!({"jid": "restart-exp-1", "jobtype": "E", "args": [], "reserve_for": 60}));
    c.push_ok(&json!({"jid": "restart-exp-2", "jobtype": "E", "args": [], "reserve_for": 600}));
    c.fetch_job("default");
    c.fetch_job("default");
    // FETCH is answered before its reservation's fsync; a later write that is answered +OK
    // proves every earlier batch is committed (one writer, in order).
    c.push_ok(&json!({"jid": "restart-exp-sync", "jobtype": "E", "args": [], "queue": "other"}));
    drop(c);
    s.kill();
    // restart-exp-1 expires while the server is down, restart-exp-2 (6 s scaled) after it is up:
    // the downtime must outlast the first reservation (time passing is the condition).
    thread::sleep(Duration::from_millis(800));
    let s = Server::start_in(dir.path(), scaled());
    let mut c = s.conn();
    let info = wait_info(
        &mut c,
        Duration::from_secs(5),
        "the overdue reservation to expire",
        |i| set_size(i, "working") == 1,
    );
    assert_eq!(info["faktory"]["total_failures"], 1, "{info}");
    let info = wait_info(
        &mut c,
        Duration::from_secs(15),
        "the second reservation to expire",
        |i| set_size(i, "working") == 0,
    );
    assert_eq!(info["faktory"]["total_failures"], 2, "{info}");
    let mut seen = vec![
        wait_fetch(&mut c, "default", Duration::from_secs(10))["jid"]
            .as_str()
            .unwrap()
            .to_string(),
        wait_fetch(&mut c, "default", Duration::from_secs(10))["jid"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    seen.sort();
    assert_eq!(seen, ["restart-exp-1", "restart-exp-2"]);
}

#[test]
fn heartbeat_loss_does_not_release_jobs_early() {
    let s = Server::start(scaled().args(["--heartbeat-timeout-secs", "1"]));
    let mut c = s.conn();
    c.push_ok(&json!({"jid": "hb-loss-1", "jobtype": "H", "args": [], "reserve_for": 300}));
    let mut w = s.worker("wid-hb-loss");
    w.fetch_job("default");
    // The silent worker is dropped after ~1 s; its job stays reserved until reserve_for (3 s).
    w.expect_closed(Duration::from_secs(5));
    let info = c.info();
    assert_eq!(set_size(&info, "working"), 1, "{info}");
    assert_eq!(info["faktory"]["total_failures"], 0, "{info}");
    wait_info(
        &mut c,
        Duration::from_secs(10),
        "the reservation to expire",
        |i| set_size(i, "working") == 0,
    );
}
