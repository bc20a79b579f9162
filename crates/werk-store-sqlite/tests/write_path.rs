//! The embedded store's write path under failure: a request that fails is undone alone, nobody
//! is woken (and no size published) for a change whose commit fails, drifted sizes are rebuilt
//! at open (in the background for a large database), a dropped store finishes its writer before
//! the directory is free again, a panic in a store thread stops the process, and Werk's own
//! checkpoints keep the WAL bounded.
//!
//! Failures are injected with SQLite triggers created on a second connection to the store's
//! database: `RAISE(ABORT)` when a row with a marked jid or queue name is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rusqlite::Connection;
use werk_core::time::now_millis;
use werk_core::Job;
use werk_store::{EnqueueListener, Listener, NewJob, NoListener, Store, StoreConfig};
use werk_store_sqlite::{SqliteOptions, SqliteStore, DB_FILE};

fn job(jid: &str, queue: &str, payload_bytes: usize) -> NewJob {
    let pad = "x".repeat(payload_bytes);
    let text = format!(r#"{{"jid":"{jid}","jobtype":"t","args":["{pad}"],"queue":"{queue}"}}"#);
    let (job, at) = Job::parse_for_push(&text, now_millis()).expect("valid job");
    NewJob { job, at }
}

/// Runs `sql` on a connection of its own to the store's database.
fn sql(dir: &Path, sql: &str) {
    let conn = Connection::open(dir.join(DB_FILE)).expect("open the database");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn.execute_batch(sql)
        .expect("run SQL on the store's database");
}

/// Records every queue the store announces as having a new job.
#[derive(Default)]
struct Announced(Mutex<Vec<String>>);

impl EnqueueListener for Announced {
    fn enqueued(&self, queue: &str) {
        self.0.lock().unwrap().push(queue.to_string());
    }
}

#[tokio::test]
async fn a_push_whose_commit_fails_wakes_no_one_and_hands_out_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let announced = Arc::new(Announced::default());
    let listener: Listener = announced.clone();
    let store = SqliteStore::open(dir.path(), StoreConfig::default(), listener).unwrap();
    // Writing the size of queue "poison" (done just before COMMIT) fails: every transaction
    // that enqueues into it fails as a whole.
    sql(
        dir.path(),
        "CREATE TRIGGER poison_queue BEFORE INSERT ON queues WHEN NEW.name = 'poison'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    );
    for round in 0..20 {
        let now = now_millis();
        let push = store.push(vec![job(&format!("poison-{round:04}"), "poison", 10)], now);
        let fetches = join_all(
            (0..5).map(|i| store.fetch_early(vec!["poison".into()], format!("w{i}"), now)),
        );
        let (pushed, fetched) = tokio::join!(push, fetches);
        assert!(
            pushed.is_err(),
            "round {round}: the push must fail, got {pushed:?}"
        );
        for f in fetched {
            let f = f.expect("a fetch is not the failing request");
            assert!(
                f.is_none(),
                "round {round}: a worker got {:?} although its PUSH failed",
                f.map(|j| j.jid)
            );
        }
    }
    assert!(
        !announced.0.lock().unwrap().iter().any(|q| q == "poison"),
        "FETCHes were woken for a push that never committed"
    );
    let stats = store.stats().await.unwrap();
    assert!(
        stats
            .queues
            .iter()
            .all(|q| q.name != "poison" || q.size == 0),
        "a size was published for a push that never committed: {:?}",
        stats.queues
    );
    // The store goes on serving.
    store
        .push(vec![job("fine-0001", "q", 10)], now_millis())
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert!(announced.0.lock().unwrap().iter().any(|q| q == "q"));
    store.close().await;
}

#[tokio::test]
async fn a_failing_request_is_undone_alone_and_answered_fetches_keep_their_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(dir.path(), StoreConfig::default(), Arc::new(NoListener)).unwrap();
    let n = 400;
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| job(&format!("job-{i:05}"), "q", 10))
        .collect();
    for r in store.push(jobs, now_millis()).await.unwrap() {
        r.unwrap();
    }
    sql(
        dir.path(),
        "CREATE TRIGGER poison_jid BEFORE INSERT ON jobs WHEN NEW.jid LIKE 'poison%'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    );
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed_pushes = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    while delivered.len() < n && Instant::now() < deadline {
        round += 1;
        let now = now_millis();
        let before =
            join_all((0..10).map(|i| store.fetch_early(vec!["q".into()], format!("a{i}"), now)));
        let push = store.push(vec![job(&format!("poison-{round:05}"), "q", 10)], now);
        let after =
            join_all((0..10).map(|i| store.fetch_early(vec!["q".into()], format!("b{i}"), now)));
        let (before, pushed, after) = tokio::join!(before, push, after);
        if pushed.is_err() {
            failed_pushes += 1;
        }
        for f in before.into_iter().chain(after) {
            if let Some(j) = f.expect("a fetch is not the failing request") {
                *delivered.entry(j.jid).or_default() += 1;
            }
        }
    }
    assert_eq!(failed_pushes, round, "every poisoned push fails");
    let twice: Vec<_> = delivered.iter().filter(|(_, &c)| c > 1).collect();
    assert!(twice.is_empty(), "jobs delivered twice: {twice:?}");
    assert_eq!(delivered.len(), n, "every job delivered once");
    // Answered early FETCHes commit with the next transaction at the latest: one more push,
    // answered once durable, follows them.
    store
        .push(vec![job("sentinel-01", "other", 10)], now_millis())
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.working, n as u64, "every delivered job is reserved");
    store.close().await;
}

#[tokio::test]
async fn drifted_sizes_are_rebuilt_at_open() {
    drifted_sizes_are_rebuilt(SqliteOptions::default()).await;
}

/// A database above the blocking-check size is recounted in the background while it serves,
/// and the writer corrects what that recount found.
#[tokio::test]
async fn drifted_sizes_of_a_large_database_are_rebuilt_in_the_background() {
    drifted_sizes_are_rebuilt(SqliteOptions {
        blocking_check_limit: 0,
        ..SqliteOptions::default()
    })
    .await;
}

async fn drifted_sizes_are_rebuilt(options: SqliteOptions) {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        SqliteStore::open_with(
            dir.path(),
            StoreConfig::default(),
            Arc::new(NoListener),
            options.clone(),
        )
        .unwrap()
    };
    {
        let store = open();
        let jobs = (0..5)
            .map(|i| job(&format!("job-{i:05}"), "q", 10))
            .collect();
        store.push(jobs, now_millis()).await.unwrap();
        store.close().await;
    }
    // A drift: the stored size of "q" says empty, the counters are off, and "r" has a job but
    // no size at all.
    sql(
        dir.path(),
        "UPDATE queues SET size = 0 WHERE name = 'q';
         UPDATE counters SET value = 7 WHERE name = 'dead';
         INSERT INTO counters (name, value) VALUES ('retries', 3)
             ON CONFLICT (name) DO UPDATE SET value = 3;
         UPDATE jobs SET queue = 'r' WHERE jid = 'job-00004';",
    );
    let store = open();
    let deadline = Instant::now() + Duration::from_secs(30);
    let sizes = loop {
        let stats = store.stats().await.unwrap();
        let sizes: BTreeMap<_, _> = stats
            .queues
            .iter()
            .map(|q| (q.name.clone(), q.size))
            .collect();
        let corrected = sizes.get("q") == Some(&4)
            && sizes.get("r") == Some(&1)
            && (stats.dead, stats.retries) == (0, 0);
        if corrected || Instant::now() > deadline {
            assert_eq!((stats.dead, stats.retries), (0, 0));
            break sizes;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(sizes.get("q"), Some(&4), "{sizes:?}");
    assert_eq!(sizes.get("r"), Some(&1), "{sizes:?}");
    let mut got = BTreeSet::new();
    for _ in 0..5 {
        let j = store
            .fetch(vec!["q".into(), "r".into()], "w".into(), now_millis())
            .await
            .unwrap()
            .expect("a stored job is fetched");
        got.insert(j.jid);
    }
    assert_eq!(got.len(), 5);
    store.close().await;
    drop(store);
    // The rebuilt sizes were stored: a second open finds nothing to correct.
    let store = open();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.working, 5);
    assert!(
        stats.queues.iter().all(|q| q.size == 0),
        "{:?}",
        stats.queues
    );
    store.close().await;
}

#[tokio::test]
async fn a_dropped_store_finishes_its_writer_before_the_directory_is_free() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let store =
            SqliteStore::open(dir.path(), StoreConfig::default(), Arc::new(NoListener)).unwrap();
        let jobs = (0..200)
            .map(|i| job(&format!("job-{round}-{i:05}"), "q", 200))
            .collect();
        store.push(jobs, now_millis()).await.unwrap();
        drop(store);
        // The writer has committed, flushed and checkpointed (TRUNCATE) before drop returned.
        let wal = std::fs::metadata(dir.path().join(format!("{DB_FILE}-wal")))
            .map(|m| m.len())
            .unwrap_or(0);
        assert_eq!(
            wal, 0,
            "round {round}: the writer was still running after drop"
        );
    }
    let store =
        SqliteStore::open(dir.path(), StoreConfig::default(), Arc::new(NoListener)).unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.queues[0].size, 1000, "{stats:?}");
    store.close().await;
}

#[tokio::test]
async fn checkpoints_keep_the_wal_bounded() {
    // 100 MB of jobs in all, 500 KB per commit: run by the writer's thread.
    wal_stays_bounded(200, 50, 10_000).await;
}

/// Single-job PUSHes from one caller run on the caller's thread (the writer's being idle), which
/// leaves the checkpoints to the writer's thread: they must still happen. With that hand-over
/// removed on purpose (2026-12-03) the WAL grew to 145 MB, the database file
/// stayed empty, and this test failed.
#[tokio::test]
async fn checkpoints_keep_the_wal_bounded_when_callers_run_their_requests() {
    let runs = wal_stays_bounded(4_000, 1, 10_000).await;
    assert!(
        runs > 2_000,
        "most of the 4,000 PUSHes ran on the caller's thread ({runs})"
    );
}

/// Pushes `commits` × `per_commit` jobs of `payload` bytes, one PUSH after the other, and
/// checks that checkpoints kept the WAL bounded; returns how many requests ran on the caller's
/// thread.
async fn wal_stays_bounded(commits: usize, per_commit: usize, payload: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(dir.path(), StoreConfig::default(), Arc::new(NoListener)).unwrap();
    let wal_path = dir.path().join(format!("{DB_FILE}-wal"));
    let mut max_wal = 0;
    for batch in 0..commits {
        let jobs = (0..per_commit)
            .map(|i| job(&format!("job-{batch}-{i:05}"), "q", payload))
            .collect();
        for r in store.push(jobs, now_millis()).await.unwrap() {
            r.unwrap();
        }
        max_wal = max_wal.max(std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0));
    }
    let db = std::fs::metadata(dir.path().join(DB_FILE)).unwrap().len();
    let total = (commits * per_commit * payload) as u64;
    let runs = store.metrics().caller_runs();
    eprintln!("largest WAL {max_wal} bytes; database file {db} bytes; {runs} run by the caller");
    assert!(
        db > total / 2,
        "the jobs were checkpointed into the database file ({db} bytes)"
    );
    // RESTART_PAGES (16 MiB) plus one commit at most; without checkpoints it reaches the total.
    assert!(
        max_wal < 20 << 20,
        "the WAL stays bounded ({max_wal} bytes)"
    );
    store.close().await;
    runs
}

/// Child side of [`a_panic_in_the_writer_stops_the_process`].
#[tokio::test]
async fn writer_panic_child() {
    let Some(dir) = std::env::var_os("WERK_PANIC_CHILD_DIR") else {
        return; // only runs as the child
    };
    let store = SqliteStore::open(
        Path::new(&dir),
        StoreConfig::default(),
        Arc::new(NoListener),
    )
    .unwrap();
    store
        .push(vec![job("before-panic", "q", 10)], now_millis())
        .await
        .unwrap();
    store.panic_writer();
    // A store that survived its writer would answer errors from here on; the process must
    // instead be gone before this loop ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let _ = store
            .push(vec![job("after-panic", "q", 10)], now_millis())
            .await;
        tokio::task::yield_now().await;
    }
    println!("CHILD-SURVIVED");
}

#[test]
fn a_panic_in_the_writer_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_panic_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("WERK_PANIC_CHILD_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("CHILD-SURVIVED"),
        "the process outlived its writer: {stdout}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("the store's writer thread panicked"),
        "{stderr}"
    );
    // What was answered before the panic is there after a restart.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store =
            SqliteStore::open(dir.path(), StoreConfig::default(), Arc::new(NoListener)).unwrap();
        assert!(store.get("before-panic".into()).await.unwrap().is_some());
        store.close().await;
    });
}
