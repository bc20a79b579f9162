//! `werk backup DEST`: a consistent copy of the embedded store while the server runs.
//!
//! SQLite's online backup API copies the database page by page through an ordinary
//! connection of this process. The store runs in WAL mode, so that connection's read
//! transaction sees one committed state and the server's writer is never blocked by it; the
//! copy is made in **one step** (`step(-1)`), so it is that one state — every job whose
//! `+OK` was answered before the backup began, and no half of any transaction. The copy is
//! written to `DEST/werk.db.partial`, checked (`PRAGMA quick_check`), fsynced and renamed to
//! `DEST/werk.db`, and the directory fsynced: `DEST` is then a data directory `werk serve -d`
//! opens as it is. A crash during the backup leaves at most the `.partial` file.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::DB_FILE;

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupReport {
    /// Database pages copied.
    pub pages: u64,
    /// Bytes of the copy.
    pub bytes: u64,
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} has no Werk store ({DB_FILE} is missing)")]
    NoStore(PathBuf),
    #[error("{0} exists and is not empty: back up into a new or empty directory")]
    DestinationNotEmpty(PathBuf),
    #[error("the copy failed its integrity check: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// Copies the store in `data_dir` into the new or empty directory `dest` (created if needed).
pub fn backup(data_dir: &Path, dest: &Path) -> Result<BackupReport, BackupError> {
    let src_path = data_dir.join(DB_FILE);
    if !src_path.is_file() {
        return Err(BackupError::NoStore(data_dir.to_path_buf()));
    }
    if dest.exists() {
        let mut entries =
            std::fs::read_dir(dest).map_err(io(format!("cannot read {}", dest.display())))?;
        if entries.next().is_some() {
            return Err(BackupError::DestinationNotEmpty(dest.to_path_buf()));
        }
    } else {
        std::fs::create_dir_all(dest).map_err(io(format!("cannot create {}", dest.display())))?;
    }
    // Read-write without create: a WAL database's reader may need to write the -shm index,
    // and a missing file must not be created empty.
    let src = Connection::open_with_flags(
        &src_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(std::time::Duration::from_secs(30))?;
    let partial = dest.join(format!("{DB_FILE}.partial"));
    let _ = std::fs::remove_file(&partial);
    let pages = {
        let mut dst = Connection::open(&partial)?;
        {
            let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
            // One step: the whole database from one read transaction (see the module docs).
            loop {
                match b.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => continue,
                    // The writer holds a lock a moment (a checkpoint): try again.
                    rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    _ => {}
                }
            }
        }
        let check: String = dst.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(BackupError::Corrupt(check));
        }
        // The copy is an ordinary file database (no WAL of its own left behind).
        dst.pragma_update(None, "journal_mode", "DELETE")?;
        let pages: i64 = dst.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        u64::try_from(pages).unwrap_or(0)
    };
    let file = std::fs::File::open(&partial).map_err(io("cannot reopen the copy"))?;
    file.sync_all().map_err(io("cannot fsync the copy"))?;
    let bytes = file.metadata().map_err(io("cannot stat the copy"))?.len();
    let final_path = dest.join(DB_FILE);
    std::fs::rename(&partial, &final_path).map_err(io("cannot rename the copy into place"))?;
    std::fs::File::open(dest)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot fsync {}", dest.display())))?;
    Ok(BackupReport { pages, bytes })
}
