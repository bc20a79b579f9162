//! What the tests of the batching lanes (`batch_ack.rs`, `batch_push.rs`, `batch_fetch.rs`)
//! share: a store on a fresh database, jobs, and waiting (with a deadline) until the lanes are
//! busy and requests queue up behind them.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use werk_core::{Job, Millis};
use werk_store::{NewJob, NoListener, StoreConfig};
use werk_store_postgres::PgStore;
use werk_testpg::PgCluster;

pub const T0: Millis = 1_700_000_000_000;
pub const SEC: Millis = 1000;

/// A store on a fresh database of the test process's cluster.
pub async fn fresh() -> Arc<PgStore> {
    let url = tokio::task::spawn_blocking(|| PgCluster::fresh_database().expect("fresh database"))
        .await
        .expect("create database task");
    Arc::new(
        PgStore::connect(&url, StoreConfig::default(), Arc::new(NoListener))
            .await
            .expect("connect"),
    )
}

/// A job as PUSH validates it at `T0`.
pub fn job(json: &str) -> NewJob {
    let (job, at) = Job::parse_for_push(json, T0).expect("valid job");
    NewJob { job, at }
}

/// Waits (10 s deadline) until `n` sessions of this database wait for a lock (the lanes the
/// test occupied, or the requests it made wait).
pub async fn wait_for_lock_waiters(s: &PgStore, n: usize, what: &str) {
    let c = s.pool().get().await.expect("connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting as usize >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} {what} sessions never waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `queued()` (a store's count of requests no lane has taken) reaches `n`.
pub async fn wait_queued<F, Fut>(n: usize, what: &str, queued: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while queued().await < n {
        assert!(
            Instant::now() < deadline,
            "{n} {what}es never queued behind the busy lanes"
        );
        tokio::task::yield_now().await;
    }
}
