//! The backend conformance suite, run against the embedded SQLite store.
//!
//! Its crash-reopen is a real crash: the files are copied as they are on disk (database, WAL and
//! marker; not the `-shm` WAL index, which lives in shared memory and is rebuilt) while the
//! running store goes on untouched, and the copy is opened in a fresh directory, so SQLite must
//! recover the committed transactions from the WAL. The old store is abandoned, never closed:
//! its close path (final commit, `wal_checkpoint(TRUNCATE)`) never touches the copy.

use std::path::Path;

use werk_store::conformance::Harness;
use werk_store::{Listener, Store, StoreConfig};
use werk_store_sqlite::{Durability, SqliteOptions, SqliteStore};

/// The store with the default options; [`NoSyncHarness`] runs the same cases with
/// `Durability::None` (answers right after commit, no flushing thread).
pub type SqliteHarness = Harness2<true>;
pub type NoSyncHarness = Harness2<false>;

fn open<const FSYNC: bool>(
    dir: &std::path::Path,
    config: StoreConfig,
    listener: Listener,
) -> Result<SqliteStore, werk_store_sqlite::OpenError> {
    let options = SqliteOptions {
        durability: if FSYNC {
            Durability::Fsync
        } else {
            Durability::None
        },
        ..SqliteOptions::default()
    };
    SqliteStore::open_with(dir, config, listener, options)
}

pub struct Harness2<const FSYNC: bool> {
    dir: tempfile::TempDir,
    config: StoreConfig,
    listener: Listener,
    store: Option<SqliteStore>,
    /// Stores left behind by crash-reopens, still running on their old directories until the
    /// harness goes (they are never closed before the case ends).
    abandoned: Vec<(SqliteStore, tempfile::TempDir)>,
    /// Length of the WAL file in the last crash copy (0 when there was none).
    pub last_wal_len: u64,
}

/// Copies the store in `from` to the empty directory `to` as a crash would leave it: the database
/// file first, then the marker, then the WAL, each as it is on disk now. A read transaction is
/// held meanwhile, so no checkpoint (the store's own, or SQLite's) can reset or truncate the WAL
/// between the copies: every frame the database file may already hold is still in the copied
/// WAL. Returns the copied WAL's length.
fn crash_copy(from: &Path, to: &Path) -> u64 {
    let db = from.join(werk_store_sqlite::DB_FILE);
    let wal = from.join(format!("{}-wal", werk_store_sqlite::DB_FILE));
    // After close() the WAL is gone (checkpointed and deleted): nothing to pin then.
    let pin = wal.exists().then(|| {
        let c = rusqlite::Connection::open_with_flags(
            &db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("open a pinning reader");
        c.execute_batch("BEGIN").expect("BEGIN");
        c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .expect("start the read transaction");
        c
    });
    std::fs::copy(&db, to.join(werk_store_sqlite::DB_FILE)).expect("copy the database file");
    for entry in std::fs::read_dir(from).expect("read the store directory") {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        let skip = name == werk_store_sqlite::DB_FILE
            || name.ends_with("-wal")
            || name.ends_with("-shm")
            || name.ends_with(".lock");
        if !skip {
            std::fs::copy(from.join(&*name), to.join(&*name)).expect("copy a store file");
        }
    }
    let wal_len = if wal.exists() {
        let to_wal = to.join(format!("{}-wal", werk_store_sqlite::DB_FILE));
        std::fs::copy(&wal, to_wal).expect("copy the WAL")
    } else {
        0
    };
    if let Some(c) = pin {
        c.execute_batch("COMMIT").expect("end the read transaction");
    }
    wal_len
}

impl<const FSYNC: bool> Harness for Harness2<FSYNC> {
    type S = SqliteStore;

    async fn create(config: StoreConfig, listener: Listener) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open::<FSYNC>(dir.path(), config.clone(), listener.clone()).expect("open");
        Harness2 {
            dir,
            config,
            listener,
            store: Some(store),
            abandoned: Vec::new(),
            last_wal_len: 0,
        }
    }

    fn store(&self) -> &SqliteStore {
        self.store.as_ref().expect("store is open")
    }

    async fn reopen(&mut self) {
        // Every request the case saw answered is committed by now (Durability::None answers
        // right after the COMMIT, Fsync after the fsync too).
        let copy = tempfile::tempdir().expect("temp dir");
        self.last_wal_len = crash_copy(self.dir.path(), copy.path());
        let old = self.store.take().expect("store is open");
        let old_dir = std::mem::replace(&mut self.dir, copy);
        self.abandoned.push((old, old_dir));
        let s = open::<FSYNC>(self.dir.path(), self.config.clone(), self.listener.clone())
            .unwrap_or_else(|e| panic!("cannot open the crash copy: {e}"));
        self.store = Some(s);
    }
}

/// The crash copy really is one: a committed PUSH is only in the WAL (not checkpointed into the
/// database file) when the copy is taken, and it is there after the reopen.
#[test]
fn crash_reopen_recovers_committed_transactions_from_the_wal() {
    werk_store::conformance::run(async {
        let t0 = werk_store::conformance::T0;
        let mut h = SqliteHarness::create(
            StoreConfig::default(),
            std::sync::Arc::new(werk_store::NoListener),
        )
        .await;
        let (job, at) = werk_core::Job::parse_for_push(
            r#"{"jid":"crash-copy-001","jobtype":"T","args":[]}"#,
            t0,
        )
        .expect("job");
        let pushed = h
            .store()
            .push(vec![werk_store::NewJob { job, at }], t0)
            .await
            .expect("push");
        assert!(pushed[0].is_ok(), "{pushed:?}");
        h.reopen().await;
        assert!(h.last_wal_len > 0, "the crash copy has an empty WAL");
        let got = h.store().get("crash-copy-001".into()).await.expect("get");
        assert!(
            got.is_some(),
            "a committed PUSH was lost by the crash-reopen"
        );
    });
}

werk_store::conformance_tests!(SqliteHarness);

mod no_sync {
    werk_store::conformance_tests!(super::NoSyncHarness);
}
