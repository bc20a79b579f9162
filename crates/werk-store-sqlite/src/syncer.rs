//! The durability pipeline: the writer commits with `synchronous=NORMAL` (SQLite writes the
//! transaction's WAL frames but does not fsync them) and hands the batch's answers to this
//! thread, which fdatasyncs the WAL file and only then answers. While one fdatasync runs, the
//! writer applies and commits the next batch, so the disk flush and the work overlap instead of
//! taking turns; every batch committed while a flush ran shares the next one. When nothing
//! else waits at a commit and no flush runs, the writer flushes on its own thread instead
//! ([`Syncer::answer`] with `here`): the same fdatasync of the same file, two wake-ups fewer.
//!
//! Why this is as durable as `synchronous=FULL`:
//! * An answer is sent only after an fdatasync of the WAL that *started after* the batch's
//!   COMMIT returned, and fdatasync flushes every page of the file written before it started —
//!   the batch's frames included (fsync works on the inode, so our own descriptor will do).
//! * SQLite still keeps the database consistent on its own in NORMAL mode: it syncs the WAL
//!   before every checkpoint, the database file after it, and the WAL header when it starts
//!   reusing the file. Recovery replays the WAL up to its last valid commit frame, so a crash
//!   during a later batch's write cannot damage an earlier, flushed batch.
//! * A batch committed but not yet flushed is visible to later requests (a FETCH may hand out a
//!   job whose PUSH has not been answered yet). If the machine then loses power, that PUSH was
//!   never answered `+OK`, so nothing promised is lost: the client retries it.
//! * A failed fdatasync is fatal (as in PostgreSQL since 2018): after one, the kernel may have
//!   dropped the dirty pages and a later fdatasync could report success for data that is not on
//!   disk. The process aborts without answering; start-up recovers from what is on disk.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use werk_store::StoreError;

use crate::writer::{Msg, Resp};
use crate::SqliteMetrics;

/// One answer held back until the flush.
pub(crate) type Answer = (oneshot::Sender<Result<Resp, StoreError>>, Resp);

/// How an answered change reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Answer only after the change is fsynced (the default; survives power loss).
    #[default]
    Fsync,
    /// Answer after the commit reaches the operating system (survives a crash of werk, not a
    /// crash of the machine: answered changes of the last moments can be lost). SQLite still
    /// syncs at each checkpoint, so the database stays consistent.
    None,
}

/// Hands committed batches' answers to the flushing thread.
pub(crate) enum Syncer {
    Fsync {
        tx: Option<Sender<Vec<Answer>>>,
        thread: Option<JoinHandle<()>>,
        /// The writer's own descriptor of the WAL, for flushing on its own thread.
        own: WalFile,
        metrics: SqliteMetrics,
    },
    None,
}

impl Syncer {
    /// Starts the flushing thread for the WAL file at `wal` (which must exist); it tells the
    /// writer (`writer`) each time a flush is done.
    pub fn start(
        durability: Durability,
        wal: &Path,
        writer: Sender<Msg>,
        metrics: SqliteMetrics,
    ) -> io::Result<Syncer> {
        match durability {
            Durability::None => Ok(Syncer::None),
            Durability::Fsync => {
                let file = WalFile::open(wal.to_path_buf())?;
                let own = WalFile::open(wal.to_path_buf())?;
                let (tx, rx) = mpsc::channel();
                let m = metrics.clone();
                let thread = std::thread::Builder::new()
                    .name("werk-store-sync".into())
                    .spawn(move || crate::fatal_on_panic("syncer", || run(file, rx, writer, m)))?;
                Ok(Syncer::Fsync {
                    tx: Some(tx),
                    thread: Some(thread),
                    own,
                    metrics,
                })
            }
        }
    }

    /// Answers a committed batch once it is durable: flushes on the caller's thread if `here`
    /// (the caller knows no flush is running and nothing else waits), else hands the batch to
    /// the flushing thread. Returns whether a flush was started there (the writer then hears
    /// [`Msg::Synced`] when it is done).
    pub fn answer(&mut self, answers: Vec<Answer>, here: bool) -> bool {
        match self {
            Syncer::Fsync {
                tx: Some(_),
                own,
                metrics,
                ..
            } if here => {
                flush(own, metrics);
                for (reply, resp) in answers {
                    let _ = reply.send(Ok(resp));
                }
                false
            }
            Syncer::Fsync { tx: Some(tx), .. } => {
                // Sent even when empty: a background change (promotion, reaping) must be flushed
                // too before its effects are answered to anyone.
                // The flushing thread only goes away by aborting the process, so a failed send
                // is unreachable; the answers are then dropped, never sent unflushed.
                tx.send(answers).is_ok()
            }
            Syncer::Fsync { tx: None, .. } => false,
            Syncer::None => {
                for (reply, resp) in answers {
                    let _ = reply.send(Ok(resp));
                }
                false
            }
        }
    }

    /// Flushes and answers everything handed over so far, then stops the thread.
    pub fn finish(&mut self) {
        if let Syncer::Fsync { tx, thread, .. } = self {
            tx.take();
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn run(mut file: WalFile, rx: Receiver<Vec<Answer>>, writer: Sender<Msg>, metrics: SqliteMetrics) {
    while let Ok(mut pending) = rx.recv() {
        // Everything committed by now shares this flush.
        while let Ok(more) = rx.try_recv() {
            pending.extend(more);
        }
        flush(&mut file, &metrics);
        for (reply, resp) in pending {
            let _ = reply.send(Ok(resp));
        }
        let _ = writer.send(Msg::Synced);
    }
}

/// fdatasyncs the WAL; aborts the process if that fails.
fn flush(file: &mut WalFile, metrics: &SqliteMetrics) {
    let started = std::time::Instant::now();
    let synced = file.sync();
    metrics
        .fsync_duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = synced {
        let msg = format!(
            "fdatasync of {} failed: {e}. The kernel may have dropped data it had accepted, \
             so werk stops without answering the requests waiting for this flush; restart it \
             to recover from what is on disk",
            file.path.display()
        );
        tracing::error!("{msg}");
        eprintln!("werk: {msg}");
        std::process::abort();
    }
}

/// Our own descriptor of SQLite's WAL file.
pub(crate) struct WalFile {
    path: PathBuf,
    /// `path` for `statx`, made once (not at every flush).
    cpath: CString,
    file: File,
    ino: (u64, u64),
}

impl WalFile {
    /// Opens the WAL and fsyncs its directory: SQLite syncs the directory when it first syncs
    /// a new WAL itself, but the syncer's own fdatasyncs bypass that, so without this the WAL's
    /// name would not be durable (on a filesystem that does not journal directory entries)
    /// until the first checkpoint.
    fn open(path: PathBuf) -> io::Result<WalFile> {
        let file = File::open(&path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the WAL's path"))?;
        Ok(WalFile {
            ino: identity(Some(&file), &cpath)?,
            path,
            cpath,
            file,
        })
    }

    /// fdatasync, after making sure our descriptor still names the file SQLite writes: SQLite
    /// only deletes the WAL when its last connection closes, which the writer prevents, but a
    /// flush of a stale file would silently make nothing durable, so check (one statx).
    fn sync(&mut self) -> io::Result<()> {
        if identity(None, &self.cpath)? != self.ino {
            tracing::warn!(path = %self.path.display(), "WAL file was replaced; reopening it");
            *self = WalFile::open(self.path.clone())?;
        }
        self.file.sync_data()
    }
}

/// The (device, inode) of an open file, or else of what a path names, asked with `statx` for
/// nothing but those.
///
/// Not `std::fs::metadata`: it asks for the timestamps too, and since Linux 6.13 (multigrain
/// timestamps, ext4/XFS/btrfs/tmpfs) a file whose change time was asked for gets a
/// fine-grained one at its next write, which dirties the inode at every write, so every
/// fdatasync then writes the inode block as well as the data. Measured on this project's
/// machine (6.18, ext4): every WAL flush issued data, inode and flush requests instead of data
/// and flush, and took ≈200 µs instead of ≈100 µs (p50).
fn identity(file: Option<&File>, path: &CStr) -> io::Result<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let (dirfd, c, flags) = match file {
        Some(f) => (f.as_raw_fd(), c"", libc::AT_EMPTY_PATH),
        None => (libc::AT_FDCWD, path, 0),
    };
    // SAFETY: `c` is a valid NUL-terminated path (empty with AT_EMPTY_PATH on an open
    // descriptor); `stx` is a plain C struct for the kernel to fill, read only after statx
    // reported success.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statx(dirfd, c.as_ptr(), flags, libc::STATX_INO, &mut stx) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    Ok((dev, stx.stx_ino))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// `identity` names the same (device, inode) as a full stat, for a path and for an open
    /// descriptor, and tells a replaced file apart — what the flush relies on to never sync a
    /// stale WAL.
    #[test]
    fn identity_is_device_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        let path = dir.path().join("werk.db-wal");
        let wal = c(&path);
        std::fs::write(&path, b"x").unwrap();
        let m = std::fs::metadata(&path).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(identity(None, &wal).unwrap(), (m.dev(), m.ino()));
        assert_eq!(identity(Some(&file), &wal).unwrap(), (m.dev(), m.ino()));
        let other = dir.path().join("other");
        std::fs::write(&other, b"y").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_ne!(identity(None, &wal).unwrap(), (m.dev(), m.ino()));
        assert_eq!(identity(Some(&file), &wal).unwrap(), (m.dev(), m.ino()));
        assert!(identity(None, &c(&dir.path().join("gone"))).is_err());
    }
}
