//! The backend conformance suite (every case of werk_store::conformance), run against the
//! PostgreSQL store on a real PostgreSQL 15 (werk-testpg): one cluster for this test binary, a
//! fresh database per case.

use werk_store::conformance::Harness;
use werk_store::{Listener, StoreConfig};
use werk_store_postgres::PgStore;
use werk_testpg::PgCluster;

pub struct PgHarness {
    url: String,
    config: StoreConfig,
    listener: Listener,
    store: Option<PgStore>,
    /// Stores "crashed" by reopen: dropped without close only when the case ends.
    abandoned: Vec<PgStore>,
}

impl Harness for PgHarness {
    type S = PgStore;

    async fn create(config: StoreConfig, listener: Listener) -> Self {
        let url =
            tokio::task::spawn_blocking(|| PgCluster::fresh_database().expect("fresh database"))
                .await
                .expect("create database task");
        let store = PgStore::connect(&url, config.clone(), listener.clone())
            .await
            .expect("connect");
        PgHarness {
            url,
            config,
            listener,
            store: Some(store),
            abandoned: Vec::new(),
        }
    }

    fn store(&self) -> &PgStore {
        self.store.as_ref().expect("store is open")
    }

    /// A node that dies keeps nothing the database does not have: the old store is abandoned
    /// (never closed) and a new one connects to the same database.
    async fn reopen(&mut self) {
        if let Some(old) = self.store.take() {
            self.abandoned.push(old);
        }
        let s = PgStore::connect(&self.url, self.config.clone(), self.listener.clone())
            .await
            .expect("reconnect");
        self.store = Some(s);
    }
}

werk_store::conformance_tests!(PgHarness);
