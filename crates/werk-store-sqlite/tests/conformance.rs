//! The backend conformance suite, run against the embedded SQLite store.

use werk_store::conformance::Harness;
use werk_store::{Listener, StoreConfig};
use werk_store_sqlite::SqliteStore;

pub struct SqliteHarness {
    dir: tempfile::TempDir,
    config: StoreConfig,
    listener: Listener,
    store: Option<SqliteStore>,
}

impl Harness for SqliteHarness {
    type S = SqliteStore;

    async fn create(config: StoreConfig, listener: Listener) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), config.clone(), listener.clone()).expect("open");
        SqliteHarness {
            dir,
            config,
            listener,
            store: Some(store),
        }
    }

    fn store(&self) -> &SqliteStore {
        self.store.as_ref().expect("store is open")
    }

    async fn reopen(&mut self) {
        // Dropped without close, as a crash would leave it; the lock goes with the file handle.
        drop(self.store.take());
        // The old writer thread may still hold the database for a moment; retry briefly.
        for _ in 0..100 {
            match SqliteStore::open(self.dir.path(), self.config.clone(), self.listener.clone()) {
                Ok(s) => {
                    self.store = Some(s);
                    return;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        panic!("could not reopen the store");
    }
}

werk_store::conformance_tests!(SqliteHarness);
