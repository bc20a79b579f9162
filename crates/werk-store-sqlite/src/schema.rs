//! The database layout.
//!
//! One `jobs` table holds every stored job with its state; partial indexes give each state its
//! order without keeping anything in memory:
//! * `jobs_queue (queue, score) WHERE state = 1`: each queue in FIFO order (`score` is a
//!   sequence number taken at every enqueue, so re-enqueued jobs go to the back);
//! * `jobs_sets (state, score) WHERE state <> 1`: scheduled / working / retry / dead ordered by
//!   their time (`at`, `reserved_until`, `next_at`, `dead_until`);
//! * the unique `jid` index: a jid names at most one stored job.
//!
//! `batches` holds each batch's counters and callback states, changed in the same transaction
//! as the member job's push, ACK or FAIL (and the callback job's push and ACK); a job's
//! `batch` column says its role (`m:<bid>` member never failed, `f:<bid>` member whose last run
//! failed, `c:<bid>` / `s:<bid>` complete / success callback). `tracking` holds the progress of
//! jobs pushed with `custom.track = 1` (`final`: `success` / `failed` once the job is gone).
//!
//! `cron_fires` holds each cron entry's last fired tick, written in the same transaction as the
//! job it enqueued (exactly once per tick).
//!
//! Queue sizes, set sizes and counters are kept in `queues` and `counters`, updated in the same
//! transaction as the jobs they count, so they are exact after any crash.

use rusqlite::Connection;

/// Bumped when the layout changes.
pub const SCHEMA_VERSION: i64 = 1;

/// Changes to databases created by an earlier werk (additive: an earlier werk can still open
/// the result). Run after [`CREATE`].
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    // Expiring jobs: the `expires` column (ms; NULL = never) and its index.
    if conn.prepare("SELECT expires FROM jobs LIMIT 0").is_err() {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN expires INTEGER")?;
    }
    // Unique jobs: the `uniq` column (`start:<key>` / `success:<key>`).
    if conn.prepare("SELECT uniq FROM jobs LIMIT 0").is_err() {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN uniq TEXT")?;
    }
    // Batches and tracking: the job's batch role (`m:`/`f:` member, `c:`/`s:` callback + bid)
    // and whether it is tracked.
    if conn.prepare("SELECT batch FROM jobs LIMIT 0").is_err() {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN batch TEXT")?;
    }
    if conn.prepare("SELECT track FROM jobs LIMIT 0").is_err() {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN track INTEGER")?;
    }
    // A batch's `created_at` as served, with nanoseconds.
    if conn
        .prepare("SELECT created_stamp FROM batches LIMIT 0")
        .is_err()
    {
        conn.execute_batch("ALTER TABLE batches ADD COLUMN created_stamp TEXT")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS batches_deadline ON batches (deadline)
             WHERE deadline IS NOT NULL;
         CREATE INDEX IF NOT EXISTS batches_updated ON batches (updated_at);
         CREATE INDEX IF NOT EXISTS batches_created ON batches (created_at, bid);
         CREATE INDEX IF NOT EXISTS tracking_done ON tracking (updated_at)
             WHERE final IS NOT NULL;",
    )?;
    conn.execute_batch("CREATE INDEX IF NOT EXISTS unique_locks_until ON unique_locks (until)")?;
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS jobs_expiring ON jobs (expires)
         WHERE expires IS NOT NULL AND state = 1",
    )
}

pub const CREATE: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY,
    jid         TEXT NOT NULL UNIQUE,
    state       INTEGER NOT NULL,
    queue       TEXT NOT NULL,
    jobtype     TEXT NOT NULL,
    score       INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    reserved_at INTEGER,
    wid         TEXT,
    payload     TEXT NOT NULL,
    expires     INTEGER,
    uniq        TEXT,
    batch       TEXT,
    track       INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (queue, score) WHERE state = 1;
CREATE INDEX IF NOT EXISTS jobs_sets ON jobs (state, score) WHERE state <> 1;
CREATE TABLE IF NOT EXISTS queues (
    name   TEXT PRIMARY KEY,
    size   INTEGER NOT NULL,
    paused INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unique_locks (
    key   TEXT PRIMARY KEY,
    jid   TEXT NOT NULL,
    until INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cron_fires (
    entry    TEXT PRIMARY KEY,
    tick     INTEGER NOT NULL,
    jid      TEXT NOT NULL,
    fired_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    bid               TEXT PRIMARY KEY,
    parent            TEXT,
    description       TEXT,
    created_at        INTEGER NOT NULL,
    committed         INTEGER NOT NULL,
    deadline          INTEGER,
    total             INTEGER NOT NULL,
    pending           INTEGER NOT NULL,
    failed            INTEGER NOT NULL,
    children          INTEGER NOT NULL,
    children_complete INTEGER NOT NULL,
    children_success  INTEGER NOT NULL,
    complete_job      TEXT,
    success_job       TEXT,
    complete_st       INTEGER NOT NULL,
    success_st        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tracking (
    jid        TEXT PRIMARY KEY,
    percent    INTEGER,
    descr      TEXT,
    updated_at INTEGER NOT NULL,
    final      TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    day       TEXT PRIMARY KEY,
    processed INTEGER NOT NULL,
    failures  INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Connection settings shared by the writer and readers.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: in WAL mode every commit syncs the WAL, so a committed transaction survives power
    // loss, not only a process crash. (The writer then switches to NORMAL and syncs the WAL
    // itself, off its own thread: see `syncer`.)
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Plans never depend on bound values: without this, SQLite re-prepares the FETCH query at
    // every call (its queue parameter is compared with the partial indexes' constants).
    // Bounded page cache (KiB when negative): memory does not grow with the backlog.
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}
