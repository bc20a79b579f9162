//! The backend conformance suite, run against the embedded SQLite store.

use werk_store::conformance::Harness;
use werk_store::{Listener, StoreConfig};
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
            match open::<FSYNC>(self.dir.path(), self.config.clone(), self.listener.clone()) {
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

mod no_sync {
    werk_store::conformance_tests!(super::NoSyncHarness);
}
