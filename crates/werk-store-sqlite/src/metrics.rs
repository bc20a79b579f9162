//! The embedded store's Prometheus metrics, updated by the writer and syncer threads (one
//! uncontended lock per commit or flush) and added to a server's registry with
//! [`SqliteMetrics::register`]. Documented in `docs/metrics.md`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Commit and flush histograms. Clones share the same histograms.
#[derive(Debug, Clone)]
pub struct SqliteMetrics {
    /// Writing a batch's counters and its COMMIT (the writer thread).
    pub(crate) commit_duration: Histogram,
    /// Requests per committed batch (group commit size).
    pub(crate) commit_requests: Histogram,
    /// fdatasync of the WAL (the syncer thread; empty with `Durability::None`).
    pub(crate) fsync_duration: Histogram,
    /// One WAL checkpoint (the writer thread, after a commit).
    pub(crate) checkpoint_duration: Histogram,
    /// Requests applied, committed and flushed by their caller's thread, the writer's being
    /// idle ([`crate::writer::Writer::run_here`]).
    pub(crate) caller_runs: Counter,
}

impl Default for SqliteMetrics {
    fn default() -> Self {
        SqliteMetrics {
            // 10 µs to 10.5 s, doubling.
            commit_duration: Histogram::new(exponential_buckets(10e-6, 2.0, 21)),
            // 1 to 1024 (MAX_BATCH), doubling.
            commit_requests: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            fsync_duration: Histogram::new(exponential_buckets(10e-6, 2.0, 21)),
            checkpoint_duration: Histogram::new(exponential_buckets(10e-6, 2.0, 21)),
            caller_runs: Counter::default(),
        }
    }
}

impl SqliteMetrics {
    /// Adds the histograms to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "werk_store_commit_duration",
            "Time the store's writer takes to write a batch's counters and COMMIT it (the fsync is not included)",
            Unit::Seconds,
            self.commit_duration.clone(),
        );
        registry.register(
            "werk_store_commit_requests",
            "Requests committed together in one transaction (group commit)",
            self.commit_requests.clone(),
        );
        registry.register_with_unit(
            "werk_store_fsync_duration",
            "Time of one fdatasync of the WAL, shared by every batch committed before it started",
            Unit::Seconds,
            self.fsync_duration.clone(),
        );
        registry.register_with_unit(
            "werk_store_checkpoint_duration",
            "Time of one WAL checkpoint (copying committed pages into the database file and syncing it), run by the writer after a commit",
            Unit::Seconds,
            self.checkpoint_duration.clone(),
        );
        registry.register(
            "werk_store_caller_runs",
            "Requests (PUSH of up to 16 jobs, ACK, FAIL) applied, committed and flushed by the connection's own thread because the writer's thread was idle, sparing two hand-offs between threads",
            self.caller_runs.clone(),
        );
    }

    /// Requests run by their caller's thread so far (see `werk_store_caller_runs`).
    pub fn caller_runs(&self) -> u64 {
        self.caller_runs.get()
    }
}
