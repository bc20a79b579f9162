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
    uniq        TEXT
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
