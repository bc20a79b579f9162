//! The cluster-wide worker registry (src/workers.rs) against a real PostgreSQL (werk-testpg):
//! two `PgStore`s on one database are two nodes. A worker process whose connections land on
//! both is one worker: a quiet signalled through one node is returned by the next BEAT on the
//! other, the list shows one worker with the connections of both, heartbeat expiry goes by the
//! last BEAT on any node, and a node that died does not keep its connections counted.

use std::sync::Arc;

use werk_core::worker::WorkerState::{self, Quiet, Running, Terminate};
use werk_core::Millis;
use werk_store::{NoListener, Store, StoreConfig, WorkerHello, WorkerInfo};
use werk_store_postgres::{schema, PgStore};
use werk_testpg::PgCluster;

const T0: Millis = 1_700_000_000_000;
const SEC: Millis = 1000;
/// The heartbeat timeout the tests use.
const TIMEOUT: Millis = 60 * SEC;

/// A fresh database on the test process's shared cluster.
async fn fresh_db() -> String {
    tokio::task::spawn_blocking(|| PgCluster::fresh_database().expect("fresh database"))
        .await
        .expect("create database task")
}

async fn open(url: &str) -> PgStore {
    PgStore::connect(url, StoreConfig::default(), Arc::new(NoListener))
        .await
        .expect("connect")
}

/// Two nodes on one fresh database.
async fn two_nodes() -> (PgStore, PgStore, String) {
    let url = fresh_db().await;
    let a = open(&url).await;
    let b = open(&url).await;
    assert_ne!(a.node_id(), b.node_id());
    (a, b, url)
}

fn hello(wid: &str) -> WorkerHello {
    WorkerHello {
        wid: wid.into(),
        hostname: "host-1".into(),
        pid: 4242,
        labels: vec!["rust".into(), "blue".into()],
    }
}

/// The list as node `s` sees it at `now`.
async fn list(s: &PgStore, now: Millis) -> Vec<WorkerInfo> {
    s.worker_list(now - TIMEOUT).await.expect("list")
}

fn conns(v: &[WorkerInfo]) -> Vec<(String, usize)> {
    v.iter().map(|w| (w.wid.clone(), w.connections)).collect()
}

async fn sync(s: &PgStore, wids: &[&str], now: Millis) -> werk_store::WorkerSync {
    s.worker_sync(
        wids.iter().map(|w| w.to_string()).collect(),
        now - TIMEOUT,
        now,
    )
    .await
    .expect("sync")
}

async fn beat(s: &PgStore, wid: &str, requested: WorkerState, now: Millis) -> Option<WorkerState> {
    s.worker_beat(wid.into(), requested, 1024, now)
        .await
        .expect("beat")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_a_shared_registry() {
    let (a, _b, _) = two_nodes().await;
    assert!(Store::shared_workers(&a));
}

/// BEAT on A, quiet through B, the next BEAT on A returns quiet; terminate likewise; the state
/// never goes back, whatever a BEAT asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_through_one_node_reaches_the_beat_on_the_other() {
    let (a, b, _) = two_nodes().await;
    sync(&a, &[], T0).await;
    sync(&b, &[], T0).await;
    assert_eq!(a.worker_hello(hello("w1"), 1, T0).await.unwrap(), Running);
    assert_eq!(b.worker_hello(hello("w1"), 1, T0).await.unwrap(), Running);
    assert_eq!(beat(&a, "w1", Running, T0 + SEC).await, Some(Running));

    assert_eq!(b.worker_signal(Some("w1".into()), Quiet).await.unwrap(), 1);
    assert_eq!(beat(&a, "w1", Running, T0 + 2 * SEC).await, Some(Quiet));
    // A's periodic sync (its FETCH check's cache) sees it too.
    assert_eq!(
        sync(&a, &["w1"], T0 + 2 * SEC).await.states,
        vec![Some(Quiet)]
    );
    // A HELLO of another connection, on either node, joins the quiet worker.
    assert_eq!(a.worker_hello(hello("w1"), 2, T0).await.unwrap(), Quiet);

    // Unknown wids: BEAT says so; a signal matches nothing.
    assert_eq!(beat(&a, "nobody", Running, T0).await, None);
    assert_eq!(
        a.worker_signal(Some("nobody".into()), Quiet).await.unwrap(),
        0
    );

    // Terminate for everyone, through A; B's next BEAT returns it. Never back to quiet.
    assert_eq!(a.worker_signal(None, Terminate).await.unwrap(), 1);
    assert_eq!(beat(&b, "w1", Quiet, T0 + 3 * SEC).await, Some(Terminate));
    assert_eq!(b.worker_signal(None, Quiet).await.unwrap(), 1);
    assert_eq!(beat(&a, "w1", Running, T0 + 4 * SEC).await, Some(Terminate));

    // A BEAT asking for quiet moves a running worker, and it stays quiet.
    a.worker_hello(hello("w2"), 3, T0).await.unwrap();
    assert_eq!(beat(&b, "w2", Quiet, T0 + SEC).await, Some(Quiet));
    assert_eq!(beat(&a, "w2", Running, T0 + 2 * SEC).await, Some(Quiet));
}

/// One worker with connections on both nodes is listed once with all of them, the same from
/// either node; it goes with its last connection, wherever that closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_with_connections_on_both_nodes() {
    let (a, b, _) = two_nodes().await;
    sync(&a, &[], T0).await;
    sync(&b, &[], T0).await;
    a.worker_hello(hello("w1"), 7, T0).await.unwrap();
    b.worker_hello(hello("w1"), 7, T0).await.unwrap(); // the same conn id on another node
    b.worker_hello(hello("w1"), 8, T0).await.unwrap();
    a.worker_hello(hello("w2"), 9, T0).await.unwrap();
    beat(&b, "w1", Running, T0 + 5 * SEC).await;

    for node in [&a, &b] {
        let l = list(node, T0 + 5 * SEC).await;
        assert_eq!(conns(&l), vec![("w1".into(), 3), ("w2".into(), 1)]);
        let w = &l[0];
        assert_eq!(
            (w.hostname.as_str(), w.pid, w.labels.clone()),
            ("host-1", 4242, vec!["rust".to_string(), "blue".to_string()])
        );
        assert_eq!(
            (w.started_at, w.last_beat, w.rss_kb),
            (T0, T0 + 5 * SEC, 1024)
        );
        assert_eq!(w.state, Running);
    }

    b.worker_bye("w1".into(), 7, T0).await.unwrap();
    b.worker_bye("w1".into(), 8, T0).await.unwrap();
    assert_eq!(
        conns(&list(&b, T0 + 6 * SEC).await),
        vec![("w1".into(), 1), ("w2".into(), 1)]
    );
    // Still registered for B's sync, though B has no connection of it any more.
    assert_eq!(
        sync(&b, &["w1"], T0 + 6 * SEC).await.states,
        vec![Some(Running)]
    );
    a.worker_bye("w1".into(), 7, T0).await.unwrap();
    assert_eq!(conns(&list(&b, T0 + 6 * SEC).await), vec![("w2".into(), 1)]);
    assert_eq!(beat(&b, "w1", Running, T0 + 7 * SEC).await, None);
    assert_eq!(
        sync(&a, &["w1", "w2"], T0 + 7 * SEC).await.states,
        vec![None, Some(Running)]
    );
    // A closing connection of a worker already gone changes nothing.
    b.worker_bye("w1".into(), 99, T0).await.unwrap();
    // The state is forgotten with the worker: a new HELLO starts it running.
    b.worker_signal(None, Quiet).await.unwrap();
    a.worker_bye("w2".into(), 9, T0).await.unwrap();
    assert_eq!(a.worker_hello(hello("w2"), 10, T0).await.unwrap(), Running);
}

/// Heartbeat expiry goes by the last BEAT on any node: a node whose own connections never
/// carry a BEAT keeps the worker while BEATs arrive elsewhere, and drops it (any node's sync)
/// when they stop everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_by_the_cluster_wide_last_beat() {
    let (a, b, _) = two_nodes().await;
    a.worker_hello(hello("w1"), 1, T0).await.unwrap();
    b.worker_hello(hello("w1"), 1, T0).await.unwrap();
    // BEATs only through A, every 15 s, for five minutes; B syncs all the while.
    let mut now = T0;
    while now < T0 + 300 * SEC {
        now += 15 * SEC;
        assert_eq!(beat(&a, "w1", Running, now).await, Some(Running));
        sync(&a, &["w1"], now).await;
        let s = sync(&b, &["w1"], now + 10 * SEC).await;
        assert_eq!((s.expired, s.states), (0, vec![Some(Running)]), "at {now}");
    }
    let last = now;
    // Silent, but not for the whole timeout yet.
    let s = sync(&b, &["w1"], last + TIMEOUT).await;
    assert_eq!((s.expired, s.states), (0, vec![Some(Running)]));
    assert_eq!(
        conns(&list(&b, last + TIMEOUT).await),
        vec![("w1".into(), 2)]
    );
    // Past it: B's sync removes the worker (and so closes B's connections); A's sync finds it
    // gone (and closes A's).
    let s = sync(&b, &["w1"], last + TIMEOUT + 1).await;
    assert_eq!((s.expired, s.states), (1, vec![None]));
    let s = sync(&a, &["w1"], last + TIMEOUT + 2).await;
    assert_eq!((s.expired, s.states), (0, vec![None]));
    assert!(list(&a, last + TIMEOUT + 2).await.is_empty());
    assert_eq!(beat(&a, "w1", Running, last + TIMEOUT + 3).await, None);
    // Its connection rows went with it.
    let c = a.pool().get().await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM worker_conns", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// A node that died (no sync for longer than the timeout) does not keep its connections
/// counted, and does not keep a worker registered after its last connection on a live node
/// closes, although the worker still BEATs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_connections_do_not_count() {
    let (a, b, url) = two_nodes().await;
    sync(&a, &[], T0).await;
    sync(&b, &[], T0).await;
    a.worker_hello(hello("w1"), 1, T0).await.unwrap();
    b.worker_hello(hello("w1"), 1, T0).await.unwrap();
    b.worker_hello(hello("w1"), 2, T0).await.unwrap();
    b.worker_hello(hello("only-b"), 3, T0).await.unwrap();
    assert_eq!(
        conns(&list(&a, T0).await),
        vec![("only-b".into(), 1), ("w1".into(), 3)]
    );
    // B dies without closing anything; the worker keeps BEATing through A.
    drop(b);
    let mut now = T0;
    for _ in 0..4 {
        now += 15 * SEC;
        beat(&a, "w1", Running, now).await;
        sync(&a, &["w1"], now).await;
    }
    // B was last seen at T0: at T0 + 60 s it still counts, after that it does not.
    assert_eq!(
        conns(&list(&a, T0 + TIMEOUT).await),
        vec![("only-b".into(), 1), ("w1".into(), 3)]
    );
    assert_eq!(
        conns(&list(&a, T0 + TIMEOUT + 1).await),
        vec![("w1".into(), 1)]
    );
    // The worker goes with its last connection on a live node.
    a.worker_bye("w1".into(), 1, T0 + TIMEOUT + 1)
        .await
        .unwrap();
    assert!(list(&a, T0 + TIMEOUT + 1).await.is_empty());
    assert_eq!(beat(&a, "w1", Running, now + 1).await, None);
    // Nothing BEATs for only-b: expired. B's node row, holding no connection any more, goes.
    let s = sync(&a, &[], T0 + TIMEOUT + 1).await;
    assert_eq!(s.expired, 1);
    let c = a.pool().get().await.unwrap();
    let nodes: Vec<String> = c
        .query("SELECT node FROM nodes", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(nodes, vec![a.node_id().to_string()]);

    // A node that comes back after being presumed dead counts again.
    let b2 = open(&url).await;
    b2.worker_hello(hello("w3"), 1, now).await.unwrap();
    assert_eq!(conns(&list(&a, now).await), vec![]);
    sync(&b2, &["w3"], now).await;
    assert_eq!(conns(&list(&a, now).await), vec![("w3".into(), 1)]);
    // Its own connections always count for itself, synced or not.
    assert_eq!(
        conns(&list(&b2, now + 10 * TIMEOUT).await),
        vec![("w3".into(), 1)]
    );
}

/// A HELLO racing the last close on another node: the worker ends up registered with the new
/// connection (never deleted under it), however the two interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_racing_the_last_close_on_another_node() {
    let (a, b, _) = two_nodes().await;
    sync(&a, &[], T0).await;
    sync(&b, &[], T0).await;
    for round in 0..150u64 {
        let wid = format!("race-{round}");
        a.worker_hello(hello(&wid), round, T0).await.unwrap();
        let (bye, hi) = tokio::join!(
            a.worker_bye(wid.clone(), round, T0),
            b.worker_hello(hello(&wid), round, T0)
        );
        bye.unwrap();
        hi.unwrap();
        let l = list(&a, T0).await;
        assert_eq!(conns(&l), vec![(wid.clone(), 1)], "round {round}");
        b.worker_bye(wid.clone(), round, T0).await.unwrap();
        assert!(list(&b, T0).await.is_empty(), "round {round}");
    }
}

/// A version 1 database (before the worker registry) is migrated, by several nodes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated() {
    let url = fresh_db().await;
    let first = open(&url).await;
    let c = first.pool().get().await.unwrap();
    c.batch_execute(
        "DROP TABLE worker_conns, workers, nodes;
         ALTER TABLE jobs DROP COLUMN reserve_ms;
         UPDATE werk_meta SET value = 1 WHERE key = 'schema_version'",
    )
    .await
    .unwrap();
    let stores = futures::future::join_all((0..3).map(|_| open(&url))).await;
    let v: i64 = c
        .query_one(
            "SELECT value FROM werk_meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, schema::SCHEMA_VERSION);
    stores[0].worker_hello(hello("w1"), 1, T0).await.unwrap();
    assert_eq!(beat(&stores[2], "w1", Running, T0 + 1).await, Some(Running));
}
