//! WAL checkpoints, run by Werk instead of SQLite's automatic ones.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the threshold, on the
//! writer's thread, and its outcome is not reported to the caller: a failed fsync of the
//! database file during it would go unnoticed. Here the writer's connection has no automatic
//! checkpoints (its WAL hook only records the WAL's size); a thread of its own, on its own
//! connection, checkpoints when the writer says the WAL has grown:
//! * `PASSIVE` from [`PASSIVE_PAGES`] on: copies what it can without blocking the writer or any
//!   reader;
//! * `RESTART` from [`RESTART_PAGES`] on (a WAL that a steady load keeps from ever being fully
//!   copied at the moment the writer could start it over): waits for the writer's current
//!   transaction and the readers, so the next commit starts the WAL from its beginning — the
//!   WAL stays bounded.
//!
//! SQLite syncs the WAL before a checkpoint copies it and the database file after; an I/O error
//! of a checkpoint (a failed fsync among them) is as fatal as a failed fsync of the WAL in
//! [`crate::syncer`]: the process aborts, and start-up recovers from the WAL, which a failed
//! checkpoint never resets.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::{Connection, ErrorCode};

use crate::SqliteMetrics;

/// WAL pages (4 KiB) after which a passive checkpoint runs: SQLite's own default threshold.
pub const PASSIVE_PAGES: i64 = 1000;
/// WAL pages after which the checkpoint waits for the writer, so the WAL starts over.
pub const RESTART_PAGES: i64 = 16_000;

/// The checkpointing thread's handle.
pub(crate) struct Checkpointer {
    tx: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread, with its own connection to the database at `path`; `pages` is the
    /// WAL size the writer's WAL hook records.
    pub fn start(
        path: &Path,
        pages: Arc<AtomicI64>,
        metrics: SqliteMetrics,
    ) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        crate::schema::configure(&conn)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("werk-store-checkpoint".into())
            .spawn(move || crate::fatal_on_panic("checkpoint", || run(conn, rx, pages, metrics)))
            .map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot start the checkpoint thread: {e}")),
                )
            })?;
        Ok(Checkpointer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint (never blocks: one pending request is enough).
    pub fn nudge(&self) {
        if let Some(tx) = &self.tx {
            match tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }

    /// Stops the thread (after the checkpoint it may be running).
    pub fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn run(conn: Connection, rx: Receiver<()>, pages: Arc<AtomicI64>, metrics: SqliteMetrics) {
    while rx.recv().is_ok() {
        let wal = pages.load(Ordering::Relaxed);
        let mode = if wal >= RESTART_PAGES {
            "RESTART"
        } else {
            "PASSIVE"
        };
        let started = std::time::Instant::now();
        match checkpoint(&conn, mode) {
            Ok((busy, log, done)) => {
                metrics
                    .checkpoint_duration
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(mode, busy, log, done, "WAL checkpoint");
            }
            Err(e) => fatal_or_retry(&e, "a WAL checkpoint"),
        }
    }
}

/// Runs `PRAGMA wal_checkpoint(mode)`: (busy, frames in the WAL, frames copied).
pub(crate) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// An I/O error (a failed fsync, read or write of the WAL or database file) aborts the process;
/// anything else (busy, locked, a full disk: the WAL keeps everything) is logged and the next checkpoint tries again.
pub(crate) fn fatal_or_retry(e: &rusqlite::Error, what: &str) {
    let io = matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::SystemIoFailure);
    if !io {
        tracing::warn!(error = %e, "{what} did not run; the next one will try again");
        return;
    }
    let msg = format!(
        "{what} failed: {e}. The kernel may have dropped data it had accepted, so werk stops; \
         restart it to recover from the WAL, which a failed checkpoint never resets"
    );
    tracing::error!("{msg}");
    eprintln!("werk: {msg}");
    std::process::abort();
}
