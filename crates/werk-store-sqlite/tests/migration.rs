//! A database written by an earlier werk (before expiring jobs, unique jobs, batches and
//! tracking: none of their columns or tables) opens, keeps its jobs, and gains those features.

use rusqlite::Connection;
use werk_core::Job;
use werk_store::{CallbackState, NewBatch, NewJob, Store, StoreConfig, TrackState};
use werk_store_sqlite::SqliteStore;

const T0: i64 = 1_700_000_000_000;

#[tokio::test]
async fn database_without_the_expires_column_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let old = "
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO meta VALUES ('schema', 1);
        CREATE TABLE jobs (id INTEGER PRIMARY KEY, jid TEXT NOT NULL UNIQUE, state INTEGER NOT NULL,
            queue TEXT NOT NULL, jobtype TEXT NOT NULL, score INTEGER NOT NULL, ts INTEGER NOT NULL,
            reserved_at INTEGER, wid TEXT, payload TEXT NOT NULL);
        CREATE INDEX jobs_queue ON jobs (queue, score) WHERE state = 1;
        CREATE INDEX jobs_sets ON jobs (state, score) WHERE state <> 1;
        CREATE TABLE queues (name TEXT PRIMARY KEY, size INTEGER NOT NULL, paused INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE history (day TEXT PRIMARY KEY, processed INTEGER NOT NULL, failures INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO jobs (jid, state, queue, jobtype, score, ts, payload) VALUES
            ('old-job-0001', 1, 'default', 'Old', 0, 1700000000000,
             '{\"jid\":\"old-job-0001\",\"queue\":\"default\",\"jobtype\":\"Old\",\"args\":[],\"created_at\":\"2023-11-14T22:13:20Z\",\"enqueued_at\":\"2023-11-14T22:13:20Z\",\"retry\":25}');
        INSERT INTO queues VALUES ('default', 1, 0);
        INSERT INTO counters VALUES ('seq', 1);
    ";
    {
        let c = Connection::open(dir.path().join("werk.db")).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch(old).unwrap();
    }
    let store = SqliteStore::open(
        dir.path(),
        StoreConfig::default(),
        std::sync::Arc::new(werk_store::NoListener),
    )
    .unwrap();
    let text = r#"{"jid":"new-job-0001","jobtype":"New","args":[],"custom":{"expires_in":1}}"#;
    let (job, at) = Job::parse_for_push(text, T0).unwrap();
    assert!(store.push(vec![NewJob { job, at }], T0).await.unwrap()[0].is_ok());
    let q = vec!["default".to_string()];
    let first = store
        .fetch(q.clone(), "w".into(), T0 + 5_000)
        .await
        .unwrap();
    assert_eq!(first.map(|j| j.jid).as_deref(), Some("old-job-0001"));
    // The new job expired 4 s ago: dropped, not delivered.
    assert_eq!(store.fetch(q, "w".into(), T0 + 5_000).await.unwrap(), None);
    let st = store.stats().await.unwrap();
    assert_eq!(st.expired, 1);

    // Batches and tracking on the migrated database.
    let cb = r#"{"jid":"callback-0001","jobtype":"Done","args":[]}"#;
    let (complete, _) = Job::parse_for_push(cb, T0).unwrap();
    let batch = NewBatch {
        bid: "b-migrated000001".into(),
        parent_bid: None,
        description: None,
        complete: Some(complete),
        success: None,
    };
    assert_eq!(store.batch_new(batch, T0).await.unwrap(), Ok(()));
    let text = r#"{"jid":"member-0001","jobtype":"M","args":[],"custom":{"bid":"b-migrated000001","track":1}}"#;
    let (job, at) = Job::parse_for_push(text, T0).unwrap();
    assert!(store.push(vec![NewJob { job, at }], T0).await.unwrap()[0].is_ok());
    let bid = "b-migrated000001".to_string();
    assert_eq!(store.batch_commit(bid.clone(), T0).await.unwrap(), Ok(()));
    let q = vec!["default".to_string()];
    let member = store.fetch(q.clone(), "w".into(), T0).await.unwrap();
    assert_eq!(member.map(|j| j.jid).as_deref(), Some("member-0001"));
    store.ack("member-0001".into(), T0).await.unwrap();
    let t = store.track_get("member-0001".into(), T0).await.unwrap();
    assert_eq!(t.map(|t| t.state), Some(TrackState::Success));
    let st = store.batch_status(bid, T0).await.unwrap().unwrap();
    assert_eq!((st.total, st.pending), (1, 0));
    assert_eq!(st.complete_st, CallbackState::Enqueued);
    let callback = store.fetch(q, "w".into(), T0).await.unwrap();
    assert_eq!(callback.map(|j| j.jid).as_deref(), Some("callback-0001"));
    store.close().await;
}
