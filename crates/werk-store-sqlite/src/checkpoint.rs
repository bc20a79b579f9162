//! WAL checkpoints, run by Werk instead of SQLite's automatic ones.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the threshold, and its
//! outcome is not reported to the caller: a failed fsync of the database file during it would
//! go unnoticed. Here the writer's connection has no automatic checkpoints (its WAL hook only
//! records the WAL's size); the writer checkpoints itself after a commit that leaves the WAL at
//! [`PASSIVE_PAGES`] or more, once that commit's answers are with the syncer — so no request's
//! COMMIT includes it, and it overlaps the syncer's fdatasync. `PASSIVE` copies every committed
//! frame no reader still needs; at [`RESTART_PAGES`] (readers kept the WAL from being copied
//! whole) `RESTART` waits for them, so the next commit starts the WAL over: the WAL stays
//! bounded.
//!
//! (A checkpoint on a thread of its own was tried first: it kept commits shorter, but it let
//! the WAL grow under a steady load — a checkpoint that never catches up with the writer never
//! lets the WAL start over — and on a nearly full disk its growth of the database file took
//! the space the next commit needed.)
//!
//! SQLite syncs the WAL before a checkpoint copies it and the database file after; an I/O error
//! of a checkpoint (a failed fsync among them) is as fatal as a failed fsync of the WAL in
//! [`crate::syncer`]: the process aborts, and start-up recovers from the WAL, which a failed
//! checkpoint never resets.

use rusqlite::{Connection, ErrorCode};

/// WAL pages (4 KiB) after which a checkpoint runs: SQLite's own default threshold.
pub const PASSIVE_PAGES: i64 = 1000;
/// WAL pages after which the checkpoint waits for readers, so the WAL starts over.
pub const RESTART_PAGES: i64 = 4000;

/// The checkpoint mode for a WAL of `pages` pages, if one is due.
pub(crate) fn due(pages: i64) -> Option<&'static str> {
    if pages >= RESTART_PAGES {
        Some("RESTART")
    } else if pages >= PASSIVE_PAGES {
        Some("PASSIVE")
    } else {
        None
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
