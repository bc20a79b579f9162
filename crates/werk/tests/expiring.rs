//! Expiring jobs (`custom.expires_at` / `custom.expires_in`) against the real `werk serve`.

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn expired_jobs_are_dropped_at_fetch_and_swept_from_queues() {
    let s = Server::start(
        ServerOpts::new()
            .fetch_timeout_ms(100)
            .scan_interval_ms(100),
    );
    let mut c = s.conn();
    c.push_ok(
        &json!({"jid": "exp-soon-0001", "jobtype": "T", "args": [], "queue": "q",
                      "custom": {"expires_in": 0.3}}),
    );
    c.push_ok(
        &json!({"jid": "exp-live-0001", "jobtype": "T", "args": [], "queue": "q",
                      "custom": {"expires_in": 3600}}),
    );
    c.push_ok(
        &json!({"jid": "exp-past-0001", "jobtype": "T", "args": [], "queue": "idle",
                      "custom": {"expires_at": "2020-01-01T00:00:00Z"}}),
    );
    c.push_ok(
        &json!({"jid": "exp-soon-0002", "jobtype": "T", "args": [], "queue": "idle",
                      "custom": {"expires_in": 0.3}}),
    );
    // exp-soon-0002 expires (the clock passing is the condition; nothing in the server happens
    // at that moment).
    thread::sleep(Duration::from_millis(600));
    // The FETCH meets the expired job first (unless the sweep took it): it gets the live one.
    let mut w = s.worker("exp-worker");
    let job = w.fetch_job("q");
    assert_eq!(job["jid"], "exp-live-0001");
    assert_eq!(
        job["custom"],
        json!({"expires_in": 3600}),
        "custom kept as pushed"
    );
    w.ack("exp-live-0001").expect_ok();
    assert!(w.fetch("q").is_none());
    // Nobody fetches from `idle`: the sweep (every 100 ms here) empties it anyway.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut info = c.info();
    while info["faktory"]["queues"]["idle"] != 0 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        info = c.info();
    }
    assert_eq!(info["faktory"]["queues"]["idle"], 0, "{info}");
    assert_eq!(info["faktory"]["total_expired"], 3, "{info}");
    assert_eq!(
        info["faktory"]["total_processed"], 1,
        "expired jobs are not processed"
    );
}

#[test]
fn expiry_of_the_wrong_type_is_refused() {
    let s = Server::start_default();
    let mut c = s.conn();
    let r = c.push(&json!({"jid": "exp-bad-00001", "jobtype": "T", "args": [],
                           "custom": {"expires_in": "600"}}));
    let e = r.expect_err();
    assert!(e.contains("custom.expires_in"), "{e}");
    let r = c.push(&json!({"jid": "exp-bad-00002", "jobtype": "T", "args": [],
                           "custom": {"expires_at": "next week"}}));
    assert!(r.expect_err().contains("custom.expires_at"));
}
