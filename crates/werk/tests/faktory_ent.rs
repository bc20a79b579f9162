//! Enterprise features through the real `faktory` crate (its `ent` feature) against the real
//! `werk` binary: unique jobs and expiring jobs. (Raw-protocol details are in `expiring.rs`
//! and below.)

mod common;

use std::io;
use std::time::Duration;

use common::*;
use faktory::{Client, Error, JobBuilder, Worker};
use serde_json::json;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

async fn client(s: &Server) -> Client {
    timeout(T, Client::connect_to(&s.url()))
        .await
        .expect("connect timed out")
        .expect("faktory Client connects")
}

async fn worker(s: &Server) -> Worker<io::Error> {
    Worker::builder()
        .register_fn("report", |_job| async { Ok::<(), io::Error>(()) })
        .connect_to(&s.url())
        .await
        .expect("worker connects")
}

#[tokio::test(flavor = "multi_thread")]
async fn unique_jobs_through_the_faktory_crate() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(300));
    let mut c = client(&s).await;
    let job = || {
        JobBuilder::new("report")
            .args(vec![json!(2026), json!("Q4")])
            .queue("reports")
            .unique_for(3600)
            .build()
    };
    c.enqueue(job()).await.expect("first copy is accepted");
    match c.enqueue(job()).await {
        Err(Error::Protocol(faktory::error::Protocol::UniqueConstraintViolation { msg })) => {
            assert_eq!(msg, "Job not unique")
        }
        other => panic!("expected NOTUNIQUE, got {other:?}"),
    }
    // Other args: another identity.
    c.enqueue(
        JobBuilder::new("report")
            .args(vec![json!(2026), json!("Q3")])
            .queue("reports")
            .unique_for(3600)
            .build(),
    )
    .await
    .expect("other args are accepted");
    // Once the first copy succeeded (unique_until success), the identity is free again.
    let mut w = worker(&s).await;
    assert!(timeout(T, w.run_one(0, &["reports"]))
        .await
        .unwrap()
        .unwrap());
    c.enqueue(job()).await.expect("free again after the ACK");

    // unique_until start: free as soon as a worker takes it.
    let start = || {
        JobBuilder::new("report")
            .args(vec![json!("start")])
            .queue("early")
            .unique_for(3600)
            .unique_until_start()
            .build()
    };
    c.enqueue(start()).await.unwrap();
    assert!(c.enqueue(start()).await.is_err());
    assert!(timeout(T, w.run_one(0, &["early"])).await.unwrap().unwrap());
    c.enqueue(start()).await.expect("free once fetched");
}

#[tokio::test(flavor = "multi_thread")]
async fn expiring_jobs_through_the_faktory_crate() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(300));
    let mut c = client(&s).await;
    c.enqueue(
        JobBuilder::new("report")
            .queue("exp")
            .expires_in(chrono::Duration::milliseconds(300))
            .build(),
    )
    .await
    .unwrap();
    c.enqueue(
        JobBuilder::new("report")
            .queue("exp")
            .expires_at(chrono::Utc::now() - chrono::Duration::seconds(5))
            .build(),
    )
    .await
    .unwrap();
    // The first job's 300 ms run out (the clock passing is the condition).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut w = worker(&s).await;
    let had = timeout(T, w.run_one(0, &["exp"])).await.unwrap().unwrap();
    assert!(!had, "both jobs expired: nothing to run");
    let info = s.conn().info();
    assert_eq!(info["faktory"]["total_expired"], 2, "{info}");
}

/// The wire form: PUSH answers `-NOTUNIQUE Job not unique`; PUSHB maps the refused jid to
/// `NOTUNIQUE Job not unique` and stores the others.
#[test]
fn notunique_on_the_wire() {
    let s = Server::start_default();
    let mut c = s.conn();
    let job = |jid: &str, arg: i64| json!({"jid": jid, "jobtype": "T", "args": [arg], "custom": {"unique_for": 60}});
    c.push_ok(&job("wire-uniq-0001", 1));
    assert_eq!(
        c.push(&job("wire-uniq-0002", 1)).wire_str(),
        "-NOTUNIQUE Job not unique\r\n"
    );
    let r = c.cmd(&format!(
        "PUSHB {}",
        json!([
            job("wire-uniq-0003", 1),
            job("wire-uniq-0004", 2),
            job("wire-uniq-0005", 2)
        ])
    ));
    assert_eq!(
        r.json(),
        json!({"wire-uniq-0003": "NOTUNIQUE Job not unique", "wire-uniq-0005": "NOTUNIQUE Job not unique"})
    );
    assert_eq!(c.info()["faktory"]["queues"]["default"], 2);
}
