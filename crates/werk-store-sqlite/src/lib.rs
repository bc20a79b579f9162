//! Werk's embedded store: one SQLite database (bundled SQLite, WAL journal) in the data
//! directory.
//!
//! * Every change goes through one writer thread that commits waiting requests together
//!   ([`writer`]); a second thread fsyncs the WAL and only then answers ([`syncer`]): an answer
//!   means the change is on disk, concurrent requests share the fsync, and the next batch is
//!   applied while the previous one is flushed. Each request is one transaction's worth of atomic steps; a batch is all-or-nothing.
//!   A quick request (PUSH of a few jobs, ACK, FAIL) that finds no other request in flight and
//!   the writer thread idle runs on its caller's thread instead — the same code under the same
//!   lock, flushed before it returns — sparing the two hand-offs between threads.
//! * Reads (job lookups, pages, latency, history) use a separate read-only connection and see
//!   the last commit; sizes and counters come from an in-memory mirror published at each commit.
//! * Jobs live only on disk: memory holds the page cache (bounded) and per-queue counters.
//! * A lock file keeps a second process from opening the same data directory.

mod backup;
mod checkpoint;
mod metrics;
mod reader;
mod schema;
mod syncer;
mod writer;

pub use metrics::SqliteMetrics;
pub use syncer::Durability;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;
use werk_core::{FailInfo, JobState, Millis, PushError};
use werk_store::{
    AckOutcome, BatchError, BatchStatus, CronFire, DayStats, FailReply, Listener, Mutation,
    NewBatch, NewJob, Page, PageQuery, QueueSelector, Stats, Store, StoreConfig, StoreError,
    StoredJob, Throttle, TrackUpdate, Tracked,
};

use reader::Reader;
use writer::{Mem, Msg, Op, Prepared, Request, Resp, Writer};

pub use backup::{backup, BackupError, BackupReport};

/// The database file inside the data directory.
pub const DB_FILE: &str = "werk.db";
const LOCK_FILE: &str = "werk.lock";
/// Written (and fsynced) once the database exists, so that a database file that later goes
/// missing or is emptied is reported instead of silently starting an empty store.
const MARKER_FILE: &str = "werk.store";

/// Internal error: a database error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

impl Error {
    pub(crate) fn into_store_error(self) -> StoreError {
        match &self {
            Error::Sql(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DiskFull =>
            {
                StoreError::Full(self.to_string())
            }
            _ => StoreError::Backend(self.to_string()),
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("data directory {0} is in use by another werk process (lock file {1} is held)")]
    Locked(PathBuf, PathBuf),
    #[error("cannot open database {0}: {1}")]
    Db(PathBuf, rusqlite::Error),
    #[error("database {0} was written by a newer werk (schema version {1}, this werk knows {2}); use a newer werk")]
    Version(PathBuf, i64, i64),
    #[error(
        "database {path} is damaged: {detail}. Werk will not start with missing jobs. Keep a copy \
         of the data directory, then restore {path} from a backup (`sqlite3 {path} .recover` \
         salvages what is still readable)"
    )]
    Damaged { path: PathBuf, detail: String },
}

/// Options of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Run SQLite's `quick_check` over the whole database before serving (reads every page:
    /// catches truncated or overwritten files). On by default.
    pub integrity_check: bool,
    /// Databases larger than this (bytes, WAL included) are checked in the background while
    /// serving instead of before (the check reads about 300 MB/s here).
    pub blocking_check_limit: u64,
    /// When an answered change is on disk.
    pub durability: Durability,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            integrity_check: true,
            blocking_check_limit: 128 << 20,
            durability: Durability::Fsync,
        }
    }
}

/// Is this SQLite error a sign of a damaged (not merely busy or full) database?
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// The embedded store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    background_check: Mutex<Option<oneshot::Receiver<OpenError>>>,
    tx: Mutex<Option<Sender<Msg>>>,
    closed: AtomicBool,
    /// Requests sent to the writer and not yet answered ([`SqliteStore::call_with`]).
    in_flight: AtomicUsize,
    reader: Arc<Reader>,
    published: Arc<Mutex<Mem>>,
    throttles: Arc<Mutex<Vec<Throttle>>>,
    metrics: SqliteMetrics,
    /// Joined on drop, before the directory lock is released.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The writer, for running a quick request on the caller's thread while the writer's own
    /// thread is idle ([`SqliteStore::call_with`]).
    core: Arc<Mutex<writer::Core>>,
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`, with default options.
    pub fn open(
        dir: &Path,
        config: StoreConfig,
        listener: Listener,
    ) -> Result<SqliteStore, OpenError> {
        SqliteStore::open_with(dir, config, listener, SqliteOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open_with(
        dir: &Path,
        config: StoreConfig,
        listener: Listener,
        options: SqliteOptions,
    ) -> Result<SqliteStore, OpenError> {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::Dir(dir.to_path_buf(), e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(|e| OpenError::Dir(dir.to_path_buf(), e))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(OpenError::Locked(dir.to_path_buf(), lock_path));
        }
        let path = dir.join(DB_FILE);
        let db_err = |e: rusqlite::Error| {
            if is_damage(&e) {
                OpenError::Damaged {
                    path: path.clone(),
                    detail: e.to_string(),
                }
            } else {
                OpenError::Db(path.clone(), e)
            }
        };
        let marker = dir.join(MARKER_FILE);
        let db_len = std::fs::metadata(&path).map(|m| m.len()).ok();
        if marker.exists() && db_len.unwrap_or(0) == 0 {
            return Err(OpenError::Damaged {
                path: path.clone(),
                detail: if db_len.is_none() {
                    "the database file is missing".to_string()
                } else {
                    "the database file is empty".to_string()
                },
            });
        }
        let existed = db_len.is_some();
        let conn = Connection::open(&path).map_err(db_err)?;
        schema::configure(&conn).map_err(db_err)?;
        // Small databases are checked before serving; a large one (where reading every page
        // takes seconds) is checked in the background while serving, and a failure is reported
        // through `take_background_check`.
        let mut background_check = None;
        if existed && options.integrity_check {
            let size = db_len.unwrap_or(0) + wal_len(&path);
            if size <= options.blocking_check_limit {
                if let Some(detail) = quick_check(&conn).map_err(db_err)? {
                    return Err(OpenError::Damaged { path, detail });
                }
            } else {
                background_check = Some(spawn_check(path.clone()));
            }
        }
        conn.execute_batch(schema::CREATE).map_err(db_err)?;
        schema::migrate(&conn).map_err(db_err)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .ok();
        match version {
            Some(v) if v > schema::SCHEMA_VERSION => {
                return Err(OpenError::Version(path, v, schema::SCHEMA_VERSION))
            }
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [schema::SCHEMA_VERSION],
                )
                .map_err(db_err)?;
            }
        }
        if !marker.exists() {
            write_marker(&marker, dir).map_err(|e| OpenError::Dir(dir.to_path_buf(), e))?;
        }
        let mut mem = Mem::load(&conn).map_err(db_err)?;
        // The stored sizes are recounted from the jobs' indexes: before serving for a small
        // database; for a large one (10M jobs: seconds) in the background, which asks the
        // writer to recount for real only if it found a difference (see `spawn_recount`).
        let large = db_len.unwrap_or(0) + wal_len(&path) > options.blocking_check_limit;
        if !large {
            let fixed = mem.verify(&conn).map_err(db_err)?;
            if !fixed.is_empty() {
                writer::warn_rebuilt(&fixed);
                mem.store(&conn).map_err(db_err)?;
            }
        }
        let published = Arc::new(Mutex::new(mem.clone()));
        let mut readers = Vec::with_capacity(reader::POOL);
        for _ in 0..reader::POOL {
            let read_conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(db_err)?;
            read_conn
                .busy_timeout(std::time::Duration::from_secs(10))
                .map_err(db_err)?;
            readers.push(read_conn);
        }
        // The writer's commits only write the WAL; the syncer flushes it before answering.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        // No automatic checkpoints inside COMMIT: the WAL hook (which replaces SQLite's
        // automatic checkpointing) records the WAL's size, and the writer checkpoints after
        // the commit (see `checkpoint`).
        let wal_pages = Arc::new(AtomicI64::new(0));
        let mut conn = conn;
        {
            let pages = wal_pages.clone();
            conn.wal_hook(Some(
                move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
                    pages.store(i64::from(n), Ordering::Relaxed);
                    Ok(())
                },
            ))
            .map_err(db_err)?;
        }
        writer::register_redis_match(&conn).map_err(db_err)?;
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let (tx, rx) = mpsc::channel();
        let metrics = SqliteMetrics::default();
        let syncer = syncer::Syncer::start(
            options.durability,
            Path::new(&wal),
            tx.clone(),
            metrics.clone(),
        )
        .map_err(|e| OpenError::Dir(dir.to_path_buf(), e))?;
        let throttles = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer {
            txn_seq: 0,
            wal_pages,
            throttles: throttles.clone(),
            syncer,
            conn,
            config,
            listener,
            mem,
            published: published.clone(),
            degraded: false,
            metrics: metrics.clone(),
        };
        let core = Arc::new(Mutex::new(writer::Core {
            writer,
            idle: false,
        }));
        let thread_core = core.clone();
        let writer = std::thread::Builder::new()
            .name("werk-store-writer".into())
            .spawn(move || fatal_on_panic("writer", || Writer::run(thread_core, rx)))
            .map_err(|e| OpenError::Dir(dir.to_path_buf(), e))?;
        if large {
            spawn_recount(path.clone(), tx.clone());
        }
        Ok(SqliteStore {
            background_check: Mutex::new(background_check),
            tx: Mutex::new(Some(tx)),
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            reader: Arc::new(Reader::new(readers)),
            writer: Mutex::new(Some(writer)),
            core,
            published,
            throttles,
            metrics,
            _lock: lock,
        })
    }

    async fn call(&self, op: Op, now: Millis) -> Result<Resp, StoreError> {
        self.call_with(op, now, false).await
    }

    async fn call_with(&self, op: Op, now: Millis, early: bool) -> Result<Resp, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        let req = Request {
            op,
            now,
            reply: Some(reply),
            early,
        };
        let in_flight = InFlight::enter(&self.in_flight);
        if let Some(req) = self.run_here(req, in_flight.alone) {
            let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let tx = guard.as_ref().ok_or(StoreError::Closed)?;
            tx.send(Msg::Req(req)).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a quick request ([`Op::quick`]) on this thread if it is the only request in flight
    /// (`alone`) and the writer's thread is idle — sparing the two hand-offs between threads,
    /// each a wake-up — else gives it back.
    ///
    /// Only alone: with other requests in flight, the writer's thread would commit them
    /// together and flush once for all, while a request run here commits and flushes alone,
    /// blocking its thread meanwhile. Allowed whenever the writer's thread was idle, it made
    /// PUSH at 10 connections 14 %, mixed at 10 and 100 connections 3 % and 11 % slower
    /// (issue 15, 2026-12-03).
    fn run_here(&self, req: Request, alone: bool) -> Option<Request> {
        if !alone || req.early || !req.op.quick() {
            return Some(req);
        }
        let due = match self.core.try_lock() {
            Ok(mut core) if core.idle => {
                let mut due = false;
                fatal_on_panic("writer (on a caller's)", || due = core.writer.run_here(req));
                self.metrics.caller_runs.inc();
                due
            }
            _ => return Some(req),
        };
        if due {
            if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = tx.send(Msg::Checkpoint);
            }
        }
        None
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader))
            .await
            .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
            .map_err(Error::into_store_error)
    }
}

impl SqliteStore {
    /// The store's Prometheus metrics (commit and fsync histograms).
    pub fn metrics(&self) -> &SqliteMetrics {
        &self.metrics
    }

    /// Makes the writer thread panic, to test that the process then stops (see
    /// [`fatal_on_panic`]). Not for anything else.
    #[doc(hidden)]
    pub fn panic_writer(&self) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(Msg::Panic);
        }
    }

    /// The integrity check running in the background (see [`SqliteOptions::blocking_check_limit`]),
    /// if any: resolves with the damage it found, or is dropped (closed) when the database
    /// passed. Taken once.
    pub fn take_background_check(&self) -> Option<oneshot::Receiver<OpenError>> {
        self.background_check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Counts a request in flight for as long as it lives (its caller may be cancelled while it
/// waits).
struct InFlight<'a> {
    count: &'a AtomicUsize,
    /// No other request was in flight when this one entered.
    alone: bool,
}

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> InFlight<'a> {
        let before = count.fetch_add(1, Ordering::AcqRel);
        InFlight {
            count,
            alone: before == 0,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a store thread's body; a panic in it stops the process (after logging it), so that a
/// supervisor restarts werk and start-up recovers from what is on disk — rather than leaving a
/// process that answers every request with an error.
pub(crate) fn fatal_on_panic(thread: &str, body: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let msg = format!(
            "the store's {thread} thread panicked ({what}); werk stops so that it can be \
             restarted and recover from what is on disk"
        );
        tracing::error!("{msg}");
        eprintln!("werk: {msg}");
        std::process::abort();
    }
}

fn wal_len(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// SQLite's `quick_check` (reads every page): `Some(problems)` if the database is damaged.
fn quick_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let started = std::time::Instant::now();
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(20)")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())?;
    if problems.iter().any(|p| p != "ok") {
        return Ok(Some(format!(
            "integrity check failed: {}",
            problems.join("; ").replace('\n', " ")
        )));
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "integrity check passed"
    );
    Ok(None)
}

/// Runs [`quick_check`] on its own read-only connection and thread.
fn spawn_check(path: PathBuf) -> oneshot::Receiver<OpenError> {
    let (tx, rx) = oneshot::channel();
    tracing::info!(db = %path.display(), "large database: checking its integrity in the background");
    let run = move || {
        let result = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| quick_check(&c));
        let detail = match result {
            Ok(None) => return,
            Ok(Some(detail)) => detail,
            Err(e) if is_damage(&e) => e.to_string(),
            Err(e) => {
                tracing::warn!(error = %e, "the background integrity check could not run");
                return;
            }
        };
        let _ = tx.send(OpenError::Damaged { path, detail });
    };
    if let Err(e) = std::thread::Builder::new()
        .name("werk-store-check".into())
        .spawn(run)
    {
        tracing::warn!(error = %e, "cannot start the background integrity check");
    }
    rx
}

/// Recounts a large database's queue and set sizes on a read-only connection while the store
/// serves, comparing them with the stored sizes of the same snapshot. Only if they differ (a
/// bug or a damaged file: every change stores its sizes in its own transaction) does it ask the
/// writer to recount and correct them within a transaction of its own ([`Op::Recount`]), which
/// holds up the writes for as long as the count takes — once, instead of at every start.
fn spawn_recount(path: PathBuf, writer: mpsc::Sender<Msg>) {
    let run = move || {
        let started = std::time::Instant::now();
        let differs = (|| -> rusqlite::Result<Vec<String>> {
            let mut conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let snapshot = conn.transaction()?;
            let mut mem = Mem::load(&snapshot)?;
            mem.verify(&snapshot)
        })();
        match differs {
            Ok(fixed) if fixed.is_empty() => {
                tracing::debug!(
                    ms = started.elapsed().as_millis() as u64,
                    "stored sizes recounted: all match"
                );
            }
            Ok(fixed) => {
                tracing::warn!(
                    found = %fixed.join(", "),
                    "stored queue and set sizes do not match the stored jobs; recounting them in the writer"
                );
                let _ = writer.send(Msg::Req(Request {
                    op: Op::Recount,
                    now: 0,
                    reply: None,
                    early: false,
                }));
            }
            Err(e) => {
                tracing::warn!(error = %e, "the background recount of stored sizes could not run")
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("werk-store-recount".into())
        .spawn(run)
    {
        tracing::warn!(error = %e, "cannot start the background recount of stored sizes");
    }
}

fn write_marker(marker: &Path, dir: &Path) -> std::io::Result<()> {
    let mut f = File::create(marker)?;
    std::io::Write::write_all(&mut f, b"werk embedded store (SQLite); see werk.db\n")?;
    f.sync_all()?;
    File::open(dir)?.sync_all()
}

fn unexpected(r: Resp) -> StoreError {
    let kind = match r {
        Resp::Push(_) => "push",
        Resp::Fetch(_) => "fetch",
        Resp::Ack(_) => "ack",
        Resp::Fail(_) => "fail",
        Resp::Count(_) => "count",
        Resp::Unit => "unit",
        Resp::Cron(_) => "cron",
        Resp::Batch(_) => "batch",
        Resp::Bool(_) => "bool",
        Resp::Imported(_) => "import",
    };
    StoreError::Backend(format!("internal error: unexpected {kind} response"))
}

impl Store for SqliteStore {
    async fn push(
        &self,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<Result<(), PushError>>, StoreError> {
        let jobs = jobs.into_iter().map(|j| Prepared::new(j, now)).collect();
        match self.call(Op::Push { jobs }, now).await? {
            Resp::Push(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn fetch(
        &self,
        queues: Vec<String>,
        wid: String,
        now: Millis,
    ) -> Result<Option<StoredJob>, StoreError> {
        self.fetch_impl(queues, wid, now, false).await
    }

    async fn fetch_early(
        &self,
        queues: Vec<String>,
        wid: String,
        now: Millis,
    ) -> Result<Option<StoredJob>, StoreError> {
        self.fetch_impl(queues, wid, now, true).await
    }

    async fn ack(&self, jid: String, now: Millis) -> Result<AckOutcome, StoreError> {
        match self.call(Op::Ack { jid }, now).await? {
            Resp::Ack(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn fail(
        &self,
        jid: String,
        info: FailInfo,
        now: Millis,
    ) -> Result<FailReply, StoreError> {
        match self.call(Op::Fail { jid, info }, now).await? {
            Resp::Fail(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn promote_due(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        self.count(Op::Promote { limit }, now)
            .await
            .map(|n| n as usize)
    }

    async fn reap_expired(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        self.count(Op::Reap { limit }, now)
            .await
            .map(|n| n as usize)
    }

    async fn sweep_expired(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        self.count(Op::Sweep { limit }, now)
            .await
            .map(|n| n as usize)
    }

    async fn purge_dead(&self, now: Millis, limit: usize) -> Result<usize, StoreError> {
        self.count(Op::Purge { limit }, now)
            .await
            .map(|n| n as usize)
    }

    async fn mutate(&self, m: Mutation, now: Millis) -> Result<u64, StoreError> {
        self.count(Op::Mutate { m }, now).await
    }

    async fn set_paused(&self, queues: QueueSelector, paused: bool) -> Result<(), StoreError> {
        match self
            .call(
                Op::SetPaused {
                    sel: queues,
                    paused,
                },
                0,
            )
            .await?
        {
            Resp::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn remove_queues(&self, queues: QueueSelector) -> Result<u64, StoreError> {
        self.count(Op::Remove { sel: queues }, 0).await
    }

    async fn queue_latency(
        &self,
        queues: Vec<String>,
        now: Millis,
    ) -> Result<Vec<f64>, StoreError> {
        self.read(move |r| r.latency(&queues, now)).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        match self.call(Op::Flush, 0).await? {
            Resp::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        Ok(self
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats())
    }

    async fn history(&self, days: u32, today: Millis) -> Result<Vec<DayStats>, StoreError> {
        self.read(move |r| r.history(days, today)).await
    }

    async fn get(&self, jid: String) -> Result<Option<StoredJob>, StoreError> {
        self.read(move |r| r.get(&jid)).await
    }

    async fn list(
        &self,
        state: JobState,
        queue: Option<String>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<StoredJob>, StoreError> {
        self.read(move |r| r.list(state, queue.as_deref(), offset, limit))
            .await
    }

    async fn page(&self, q: PageQuery) -> Result<Page, StoreError> {
        self.read(move |r| r.page(&q)).await
    }

    async fn import(
        &self,
        jobs: Vec<werk_store::ImportedJob>,
        now: Millis,
    ) -> Result<Vec<werk_store::ImportOutcome>, StoreError> {
        let jobs = werk_store::ImportedJob::prepare(jobs)?
            .into_iter()
            .map(|j| writer::Imported::new(j, now))
            .collect();
        match self.call(Op::Import { jobs }, now).await? {
            Resp::Imported(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_jobs(&self, state: JobState, jids: Vec<String>) -> Result<u64, StoreError> {
        self.count(Op::DeleteJobs { state, jids }, 0).await
    }

    async fn fire_cron(
        &self,
        entry: String,
        tick: Millis,
        job: NewJob,
        now: Millis,
    ) -> Result<CronFire, StoreError> {
        let job = Box::new(Prepared::new(job, now));
        match self.call(Op::FireCron { entry, tick, job }, now).await? {
            Resp::Cron(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn cron_last_fired(
        &self,
        entries: Vec<String>,
    ) -> Result<Vec<Option<Millis>>, StoreError> {
        self.read(move |r| r.cron_last_fired(&entries)).await
    }

    async fn batch_new(
        &self,
        batch: NewBatch,
        now: Millis,
    ) -> Result<Result<(), BatchError>, StoreError> {
        self.batch_op(
            Op::BatchNew {
                batch: Box::new(batch),
            },
            now,
        )
        .await
    }

    async fn batch_open(
        &self,
        bid: String,
        now: Millis,
    ) -> Result<Result<(), BatchError>, StoreError> {
        self.batch_op(Op::BatchOpen { bid }, now).await
    }

    async fn batch_commit(
        &self,
        bid: String,
        now: Millis,
    ) -> Result<Result<(), BatchError>, StoreError> {
        self.batch_op(Op::BatchCommit { bid }, now).await
    }

    async fn batch_status(
        &self,
        bid: String,
        now: Millis,
    ) -> Result<Option<BatchStatus>, StoreError> {
        self.read(move |r| r.batch_status(&bid, now)).await
    }

    async fn list_batches(
        &self,
        after: Option<(Millis, String)>,
        limit: u64,
        now: Millis,
    ) -> Result<Vec<BatchStatus>, StoreError> {
        self.read(move |r| r.list_batches(after, limit, now)).await
    }

    async fn track_set(&self, update: TrackUpdate, now: Millis) -> Result<bool, StoreError> {
        match self.call(Op::TrackSet { update }, now).await? {
            Resp::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    async fn track_get(&self, jid: String, now: Millis) -> Result<Option<Tracked>, StoreError> {
        self.read(move |r| r.track_get(&jid, now)).await
    }

    fn set_throttles(&self, throttles: Vec<Throttle>) {
        *self.throttles.lock().unwrap_or_else(|p| p.into_inner()) = throttles;
    }

    async fn close(&self) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.closed.store(true, Ordering::Release);
        if let Some(tx) = tx {
            let (done, rx) = oneshot::channel();
            if tx.send(Msg::Close(done)).is_ok() {
                let _ = rx.await;
            }
        }
    }
}

impl Drop for SqliteStore {
    /// A store dropped without [`Store::close`] still stops its writer (the syncer holds a
    /// sender of the writer's channel, so the channel alone would never close).
    /// The writer thread is joined (its last commit flushed, the WAL checkpointed) before the
    /// directory lock is released, so a new store opened on the same directory never runs
    /// beside it.
    fn drop(&mut self) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let (done, _) = oneshot::channel();
            let _ = tx.send(Msg::Close(done));
        }
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl SqliteStore {
    async fn fetch_impl(
        &self,
        queues: Vec<String>,
        wid: String,
        now: Millis,
        early: bool,
    ) -> Result<Option<StoredJob>, StoreError> {
        // Skip the writer entirely when no named queue has a fetchable job.
        {
            let mem = self.published.lock().unwrap_or_else(|p| p.into_inner());
            let any = queues
                .iter()
                .any(|q| mem.queues.get(q).is_some_and(|q| q.size > 0 && !q.paused));
            if !any {
                return Ok(None);
            }
        }
        match self
            .call_with(Op::Fetch { queues, wid }, now, early)
            .await?
        {
            Resp::Fetch(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn batch_op(&self, op: Op, now: Millis) -> Result<Result<(), BatchError>, StoreError> {
        match self.call(op, now).await? {
            Resp::Batch(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn count(&self, op: Op, now: Millis) -> Result<u64, StoreError> {
        match self.call(op, now).await? {
            Resp::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}
