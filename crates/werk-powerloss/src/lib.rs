//! A FUSE filesystem that simulates losing power, for Werk's durability tests.
//!
//! It passes everything through to a *backing* directory, which plays the role of the disk's
//! durable contents, except that it holds back what a real disk could lose:
//!
//! * **File data.** Every write and truncation goes to an in-memory, page-granular (4 KiB)
//!   overlay of that file — the "page cache". Reads see the overlay over the backing file.
//!   `fsync`/`fdatasync` of a file (any descriptor of it: fsync works on the inode) writes that
//!   file's overlay into the backing file; only then is it durable. Closing a file does not.
//! * **Directory entries** (create, unlink, rename, mkdir, rmdir) are applied to the backing
//!   directory at once but recorded in an undo log; a cut can undo them. A rename or unlink
//!   moves the displaced file into a hidden trash directory so that it can come back. What
//!   makes them durable depends on the [`DirModel`]: with [`DirModel::Journal`] (ext4, XFS and
//!   btrfs in practice: metadata goes through an ordered journal that any fsync commits) every
//!   `fsync` of a file or directory commits all entries; with [`DirModel::Strict`] (POSIX
//!   taken literally) only an `fsync` of a directory does.
//!
//! A **cut** (written to the control file `/.powerloss` at the root of the mount) models the
//! power going out, and must be sent while no process uses the filesystem (after SIGKILLing
//! the server): `cut all` drops every unsynced write and undoes every uncommitted directory
//! entry; `cut random` lets a random subset survive, as a disk that reorders writes would —
//! each pending 4 KiB page independently (whole pages: SQLite's WAL frames carry checksums, so a
//! torn frame would be detected anyway), each pending truncation with probability ½, and a
//! random *prefix* of the uncommitted directory entries (the journal is ordered); `cut any`
//! picks one of the two at random. The choices come from a seeded generator.
//! `fail-fsync on` makes every later fsync fail with EIO (until `fail-fsync off`), keeping the
//! overlay: a failed fsync makes nothing durable; `fail-fsync NAME` fails only the fsyncs of
//! files named NAME (say `werk.db`, the database file a checkpoint syncs, not its WAL). Reading the control file returns counters.
//!
//! Files are served through the kernel's page cache (no `direct_io`), so shared `mmap` works
//! (SQLite maps its `-shm` file); the cache is dropped whenever a file is opened (no
//! `FOPEN_KEEP_CACHE`) and attributes are never cached, so a restarted process sees what
//! survived the cut. The `-shm` file gets no special treatment: its unsynced content is lost
//! like any other, which SQLite tolerates (it rebuilds the wal-index on recovery).
//! Requests are served one at a time (one session thread), so a cut never interleaves with one.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Name of the control file at the root of the mount.
pub const CONTROL_NAME: &str = ".powerloss";
/// Hidden directory in the backing directory holding unlinked or replaced files until their
/// removal is committed.
const TRASH: &str = ".powerloss-trash";
const CONTROL_INO: u64 = u64::MAX - 1;
const ROOT_INO: u64 = 1;
const PAGE: u64 = 4096;
/// Nothing is cached by the kernel beyond a request: entries and attributes may change at a cut.
const TTL: Duration = Duration::ZERO;

/// What makes a directory entry durable (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirModel {
    /// Any fsync (file or directory) commits every pending directory entry, in order.
    Journal,
    /// Only an fsync of a directory commits the pending directory entries.
    Strict,
}

/// How the filesystem behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Seed of the generator choosing what survives a `cut random`.
    pub seed: u64,
    pub dir_model: DirModel,
}

/// Counters, as read from the control file.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub cuts: u64,
    pub fsyncs: u64,
    pub failed_fsyncs: u64,
    pub pages_dropped: u64,
    pub pages_kept: u64,
    pub entries_undone: u64,
}

/// The unsynced state of one file.
struct Pending {
    pages: BTreeMap<u64, Box<[u8]>>,
    /// Logical size.
    size: u64,
    /// Smallest size since the last sync: backing bytes at or past it are stale (zero).
    floor: u64,
}

struct Node {
    /// Relative to the backing directory.
    path: PathBuf,
    pending: Option<Pending>,
}

/// One uncommitted directory change, with what undoes it.
enum NsOp {
    Created(PathBuf),
    Removed {
        path: PathBuf,
        trash: PathBuf,
    },
    Renamed {
        from: PathBuf,
        to: PathBuf,
        displaced: Option<PathBuf>,
    },
    MadeDir(PathBuf),
    RemovedDir(PathBuf),
}

struct State {
    backing: PathBuf,
    opts: Options,
    rng: StdRng,
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    next_trash: u64,
    log: Vec<NsOp>,
    /// `None`: fsyncs succeed; `Some(None)`: every fsync fails; `Some(Some(name))`: fsyncs of
    /// files named `name` fail.
    fail_fsync: Option<Option<String>>,
    stats: Stats,
}

/// The filesystem; mount it with [`mount`].
pub struct PowerLossFs {
    state: Mutex<State>,
}

impl PowerLossFs {
    /// A filesystem over `backing` (an existing directory).
    pub fn new(backing: &Path, opts: Options) -> io::Result<PowerLossFs> {
        let backing = backing.canonicalize()?;
        let trash = backing.join(TRASH);
        if trash.exists() {
            fs::remove_dir_all(&trash)?;
        }
        fs::create_dir(&trash)?;
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Node {
                path: PathBuf::new(),
                pending: None,
            },
        );
        let mut by_path = HashMap::new();
        by_path.insert(PathBuf::new(), ROOT_INO);
        Ok(PowerLossFs {
            state: Mutex::new(State {
                backing,
                rng: StdRng::seed_from_u64(opts.seed),
                opts,
                nodes,
                by_path,
                next_ino: ROOT_INO + 1,
                next_trash: 0,
                log: Vec::new(),
                fail_fsync: None,
                stats: Stats::default(),
            }),
        })
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A mounted [`PowerLossFs`]; unmounted (lazily, `MNT_DETACH`) on drop, also when a test panics.
pub struct Mount {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl Mount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The control file's path.
    pub fn control(&self) -> PathBuf {
        self.mountpoint.join(CONTROL_NAME)
    }

    /// Sends a command to the filesystem (see the crate documentation).
    pub fn command(&self, cmd: &str) -> io::Result<()> {
        command(&self.control(), cmd)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

/// Sends `cmd` to the filesystem whose control file is `control`.
pub fn command(control: &Path, cmd: &str) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(control)?;
    f.write_all_at(format!("{cmd}\n").as_bytes(), 0)
}

/// Mounts a power-loss filesystem over `backing` at `mountpoint` (both existing directories),
/// served by a background thread. Fails with a clear error when FUSE is unavailable.
pub fn mount(backing: &Path, mountpoint: &Path, opts: Options) -> io::Result<Mount> {
    if !Path::new("/dev/fuse").exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "/dev/fuse does not exist: FUSE is unavailable on this machine (load the fuse module \
             or run the container with --device /dev/fuse --cap-add SYS_ADMIN)",
        ));
    }
    let fs = PowerLossFs::new(backing, opts)?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("werk-powerloss".into()),
        MountOption::DefaultPermissions,
    ];
    let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot mount the FUSE filesystem at {} ({e}); as non-root this needs \
                 fusermount3 (Debian package fuse3)",
                mountpoint.display()
            ),
        )
    })?;
    let m = Mount {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
    };
    // The mount is live once the control file answers.
    m.command("ping")?;
    Ok(m)
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

fn attr_of(ino: u64, m: &fs::Metadata, size: u64) -> FileAttr {
    let kind = if m.is_dir() {
        FileType::Directory
    } else if m.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: system_time(m.atime(), m.atime_nsec()),
        mtime: system_time(m.mtime(), m.mtime_nsec()),
        ctime: system_time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: 0,
        blksize: PAGE as u32,
        flags: 0,
    }
}

fn control_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(CONTROL_INO),
        size: PAGE,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0o600,
        nlink: 1,
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
        rdev: 0,
        blksize: PAGE as u32,
        flags: 0,
    }
}

/// Reads as much of `buf` as the file has at `off`; the rest stays zero.
fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(())
}

impl State {
    fn abs(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn path_of(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.nodes
            .get(&ino)
            .map(|n| n.path.clone())
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        let p = self.path_of(parent)?;
        if p.as_os_str().is_empty() && (name == TRASH || name == CONTROL_NAME) {
            return Err(Errno::EACCES);
        }
        Ok(p.join(name))
    }

    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some(i) = self.by_path.get(rel) {
            return *i;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                path: rel.to_path_buf(),
                pending: None,
            },
        );
        self.by_path.insert(rel.to_path_buf(), ino);
        ino
    }

    /// Everything at `from` (or under it) is now at `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        let mut remapped = Vec::new();
        for (ino, n) in self.nodes.iter_mut() {
            if let Ok(rest) = n.path.strip_prefix(from) {
                let new = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                remapped.push((n.path.clone(), new.clone(), *ino));
                n.path = new;
            }
        }
        for (old, _, _) in &remapped {
            self.by_path.remove(old);
        }
        for (_, new, ino) in remapped {
            self.by_path.insert(new, ino);
        }
    }

    /// The file at `rel` is gone for good (its creation was undone).
    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.by_path.remove(rel) {
            self.nodes.remove(&ino);
        }
    }

    fn trash_path(&mut self) -> PathBuf {
        self.next_trash += 1;
        Path::new(TRASH).join(self.next_trash.to_string())
    }

    /// Moves whatever is at `rel` into the trash, returning where it went.
    fn move_to_trash(&mut self, rel: &Path) -> io::Result<PathBuf> {
        let t = self.trash_path();
        fs::rename(self.abs(rel), self.abs(&t))?;
        self.moved(rel, &t);
        Ok(t)
    }

    fn size(&self, ino: u64, m: &fs::Metadata) -> u64 {
        match self.nodes.get(&ino).and_then(|n| n.pending.as_ref()) {
            Some(p) => p.size,
            None => m.len(),
        }
    }

    fn attr(&mut self, ino: u64) -> Result<FileAttr, Errno> {
        if ino == CONTROL_INO {
            return Ok(control_attr());
        }
        let rel = self.path_of(ino)?;
        let m = fs::symlink_metadata(self.abs(&rel)).map_err(|e| errno(&e))?;
        Ok(attr_of(ino, &m, self.size(ino, &m)))
    }

    fn backing_file(&self, ino: u64) -> Result<File, Errno> {
        let rel = self.path_of(ino)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.abs(&rel))
            .map_err(|e| errno(&e))
    }

    /// The file's unsynced state, created on first use.
    fn pending(&mut self, ino: u64) -> Result<(&mut Pending, File), Errno> {
        let f = self.backing_file(ino)?;
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if node.pending.is_none() {
            let len = f.metadata().map_err(|e| errno(&e))?.len();
            node.pending = Some(Pending {
                pages: BTreeMap::new(),
                size: len,
                floor: len,
            });
        }
        Ok((node.pending.as_mut().expect("just set"), f))
    }

    /// One page as the file's current (volatile) contents have it.
    fn page(p: &Pending, f: &File, idx: u64) -> io::Result<Box<[u8]>> {
        if let Some(pg) = p.pages.get(&idx) {
            return Ok(pg.clone());
        }
        let mut buf = vec![0u8; PAGE as usize].into_boxed_slice();
        let start = idx * PAGE;
        if start < p.floor {
            let n = ((p.floor - start).min(PAGE)) as usize;
            read_full_at(f, &mut buf[..n], start)?;
        }
        Ok(buf)
    }

    fn read(&mut self, ino: u64, off: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let f = self.backing_file(ino)?;
        let Some(p) = self.nodes.get(&ino).and_then(|n| n.pending.as_ref()) else {
            let mut buf = vec![0u8; size as usize];
            let len = f.metadata().map_err(|e| errno(&e))?.len();
            let n = len.saturating_sub(off).min(u64::from(size)) as usize;
            read_full_at(&f, &mut buf[..n], off).map_err(|e| errno(&e))?;
            buf.truncate(n);
            return Ok(buf);
        };
        let end = (off + u64::from(size)).min(p.size);
        let mut out = Vec::with_capacity(end.saturating_sub(off) as usize);
        let mut pos = off;
        while pos < end {
            let idx = pos / PAGE;
            let pg = Self::page(p, &f, idx).map_err(|e| errno(&e))?;
            let from = (pos - idx * PAGE) as usize;
            let to = ((end - idx * PAGE).min(PAGE)) as usize;
            out.extend_from_slice(&pg[from..to]);
            pos = idx * PAGE + to as u64;
        }
        Ok(out)
    }

    fn write(&mut self, ino: u64, off: u64, data: &[u8]) -> Result<(), Errno> {
        let (p, f) = self.pending(ino)?;
        let end = off + data.len() as u64;
        let mut pos = off;
        while pos < end {
            let idx = pos / PAGE;
            let mut pg = Self::page(p, &f, idx).map_err(|e| errno(&e))?;
            let from = (pos - idx * PAGE) as usize;
            let to = ((end - idx * PAGE).min(PAGE)) as usize;
            let src = (pos - off) as usize;
            pg[from..to].copy_from_slice(&data[src..src + (to - from)]);
            p.pages.insert(idx, pg);
            pos = idx * PAGE + to as u64;
        }
        p.size = p.size.max(end);
        Ok(())
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let (p, _) = self.pending(ino)?;
        if size < p.size {
            let first_gone = size.div_ceil(PAGE);
            p.pages.split_off(&first_gone);
            if !size.is_multiple_of(PAGE) {
                if let Some(pg) = p.pages.get_mut(&(size / PAGE)) {
                    pg[(size % PAGE) as usize..].fill(0);
                }
            }
            p.floor = p.floor.min(size);
        }
        p.size = size;
        Ok(())
    }

    /// Writes a file's pending state into the backing file: it is now durable.
    fn apply(f: &File, p: &Pending) -> io::Result<()> {
        f.set_len(p.floor)?;
        for (idx, pg) in &p.pages {
            let start = idx * PAGE;
            if start < p.size {
                let n = (p.size - start).min(PAGE) as usize;
                f.write_all_at(&pg[..n], start)?;
            }
        }
        f.set_len(p.size)
    }

    fn fsync(&mut self, ino: u64, dir: bool) -> Result<(), Errno> {
        let fails = match &self.fail_fsync {
            None => false,
            Some(None) => true,
            Some(Some(name)) => self
                .nodes
                .get(&ino)
                .is_some_and(|n| n.path.file_name().is_some_and(|f| f == name.as_str())),
        };
        if fails {
            self.stats.failed_fsyncs += 1;
            return Err(Errno::EIO);
        }
        self.stats.fsyncs += 1;
        if !dir {
            let f = self.backing_file(ino)?;
            if let Some(p) = self.nodes.get_mut(&ino).and_then(|n| n.pending.take()) {
                Self::apply(&f, &p).map_err(|e| errno(&e))?;
            }
        }
        if dir || self.opts.dir_model == DirModel::Journal {
            self.commit_entries(self.log.len());
        }
        Ok(())
    }

    /// The first `n` uncommitted directory changes become durable.
    fn commit_entries(&mut self, n: usize) {
        let committed: Vec<NsOp> = self.log.drain(..n).collect();
        for op in committed {
            let trash = match op {
                NsOp::Removed { trash, .. } => Some(trash),
                NsOp::Renamed { displaced, .. } => displaced,
                _ => None,
            };
            if let Some(t) = trash {
                let abs = self.backing.join(&t);
                let _ = fs::remove_dir_all(&abs).or_else(|_| fs::remove_file(&abs));
                self.forget_path(&t);
            }
        }
    }

    fn undo(&mut self, op: NsOp) -> io::Result<()> {
        match op {
            NsOp::Created(p) => {
                fs::remove_file(self.abs(&p))?;
                self.forget_path(&p);
            }
            NsOp::Removed { path, trash } => {
                fs::rename(self.abs(&trash), self.abs(&path))?;
                self.moved(&trash, &path);
            }
            NsOp::Renamed {
                from,
                to,
                displaced,
            } => {
                fs::rename(self.abs(&to), self.abs(&from))?;
                self.moved(&to, &from);
                if let Some(t) = displaced {
                    fs::rename(self.abs(&t), self.abs(&to))?;
                    self.moved(&t, &to);
                }
            }
            NsOp::MadeDir(p) => {
                fs::remove_dir(self.abs(&p))?;
                self.forget_path(&p);
            }
            NsOp::RemovedDir(p) => fs::create_dir(self.abs(&p))?,
        }
        Ok(())
    }

    /// The power goes out: keep what a disk could have kept, drop the rest.
    fn cut(&mut self, random: bool) -> io::Result<()> {
        self.stats.cuts += 1;
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            let Some(p) = self.nodes.get_mut(&ino).and_then(|n| n.pending.take()) else {
                continue;
            };
            if !random {
                self.stats.pages_dropped += p.pages.len() as u64;
                continue;
            }
            let rel = self.nodes[&ino].path.clone();
            let f = OpenOptions::new().write(true).open(self.abs(&rel))?;
            if self.rng.random_bool(0.5) {
                f.set_len(p.floor)?;
            }
            for (idx, pg) in &p.pages {
                let start = idx * PAGE;
                if start < p.size && self.rng.random_bool(0.5) {
                    let n = (p.size - start).min(PAGE) as usize;
                    f.write_all_at(&pg[..n], start)?;
                    self.stats.pages_kept += 1;
                } else {
                    self.stats.pages_dropped += 1;
                }
            }
        }
        let keep = if random {
            self.rng.random_range(0..=self.log.len())
        } else {
            0
        };
        let undone = self.log.split_off(keep);
        self.stats.entries_undone += undone.len() as u64;
        for op in undone.into_iter().rev() {
            self.undo(op)?;
        }
        self.commit_entries(keep);
        Ok(())
    }

    fn control(&mut self, text: &str) -> Result<(), Errno> {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let r = match line {
                "ping" => Ok(()),
                "cut" | "cut all" => self.cut(false),
                "cut random" => self.cut(true),
                "cut any" => {
                    let random = self.rng.random_bool(0.5);
                    self.cut(random)
                }
                "fail-fsync on" => {
                    self.fail_fsync = Some(None);
                    Ok(())
                }
                "fail-fsync off" => {
                    self.fail_fsync = None;
                    Ok(())
                }
                other if other.starts_with("fail-fsync ") => {
                    self.fail_fsync = Some(Some(other["fail-fsync ".len()..].to_string()));
                    Ok(())
                }
                _ => return Err(Errno::EINVAL),
            };
            r.map_err(|e| {
                eprintln!("werk-powerloss: {line} failed: {e}");
                errno(&e)
            })?;
        }
        Ok(())
    }

    fn report(&self) -> String {
        let s = self.stats;
        format!(
            "cuts {} fsyncs {} failed_fsyncs {} pages_dropped {} pages_kept {} entries_undone {} \
             pending_entries {} fail_fsync {}\n",
            s.cuts,
            s.fsyncs,
            s.failed_fsyncs,
            s.pages_dropped,
            s.pages_kept,
            s.entries_undone,
            self.log.len(),
            self.fail_fsync.is_some()
        )
    }
}

impl Filesystem for PowerLossFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.st();
        if parent.0 == ROOT_INO && name == CONTROL_NAME {
            return reply.entry(&TTL, &control_attr(), Generation(0));
        }
        let rel = match st.child(parent.0, name) {
            Ok(r) => r,
            Err(_) => return reply.error(Errno::ENOENT),
        };
        match fs::symlink_metadata(st.abs(&rel)) {
            Ok(m) => {
                let ino = st.ino_for(&rel);
                let size = st.size(ino, &m);
                reply.entry(&TTL, &attr_of(ino, &m, size), Generation(0))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.st().attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.st();
        if ino.0 == CONTROL_INO {
            return reply.attr(&TTL, &control_attr());
        }
        let r = (|| {
            if let Some(size) = size {
                st.truncate(ino.0, size)?;
            }
            if let Some(mode) = mode {
                let rel = st.path_of(ino.0)?;
                fs::set_permissions(st.abs(&rel), fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| errno(&e))?;
            }
            st.attr(ino.0)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.st();
        let r = (|| {
            let rel = st.child(parent.0, name)?;
            fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(st.abs(&rel))
                .map_err(|e| errno(&e))?;
            st.log.push(NsOp::MadeDir(rel.clone()));
            let ino = st.ino_for(&rel);
            st.attr(ino)
        })();
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let r = (|| {
            let rel = st.child(parent.0, name)?;
            let m = fs::symlink_metadata(st.abs(&rel)).map_err(|e| errno(&e))?;
            if m.is_dir() {
                return Err(Errno::EISDIR);
            }
            let trash = st.move_to_trash(&rel).map_err(|e| errno(&e))?;
            st.log.push(NsOp::Removed { path: rel, trash });
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let r = (|| {
            let rel = st.child(parent.0, name)?;
            fs::remove_dir(st.abs(&rel)).map_err(|e| errno(&e))?;
            st.forget_path(&rel);
            st.log.push(NsOp::RemovedDir(rel));
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        let r = (|| {
            if !flags.is_empty() {
                return Err(Errno::EINVAL);
            }
            let from = st.child(parent.0, name)?;
            let to = st.child(newparent.0, newname)?;
            fs::symlink_metadata(st.abs(&from)).map_err(|e| errno(&e))?;
            let displaced = match fs::symlink_metadata(st.abs(&to)) {
                Ok(m) if m.is_dir() => return Err(Errno::EISDIR),
                Ok(_) => Some(st.move_to_trash(&to).map_err(|e| errno(&e))?),
                Err(_) => None,
            };
            fs::rename(st.abs(&from), st.abs(&to)).map_err(|e| errno(&e))?;
            st.moved(&from, &to);
            st.log.push(NsOp::Renamed {
                from,
                to,
                displaced,
            });
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == CONTROL_INO {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }
        match self.st().attr(ino.0) {
            // No FOPEN_KEEP_CACHE: the kernel drops its cached pages of the file at each open.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = self.st();
        if ino.0 == CONTROL_INO {
            let text = st.report();
            let b = text.as_bytes();
            let from = (offset as usize).min(b.len());
            let to = (from + size as usize).min(b.len());
            return reply.data(&b[from..to]);
        }
        match st.read(ino.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.st();
        let r = if ino.0 == CONTROL_INO {
            match std::str::from_utf8(data) {
                Ok(text) => st.control(text),
                Err(_) => Err(Errno::EINVAL),
            }
        } else {
            st.write(ino.0, offset, data)
        };
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.st().fsync(ino.0, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.st();
        let r = (|| {
            let rel = st.path_of(ino.0)?;
            let mut names: Vec<(PathBuf, FileType)> = Vec::new();
            for e in fs::read_dir(st.abs(&rel)).map_err(|e| errno(&e))? {
                let e = e.map_err(|e| errno(&e))?;
                if rel.as_os_str().is_empty() && e.file_name() == TRASH {
                    continue;
                }
                let kind = match e.file_type() {
                    Ok(t) if t.is_dir() => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                names.push((rel.join(e.file_name()), kind));
            }
            names.sort_by(|a, b| a.0.cmp(&b.0));
            let mut entries = vec![
                (ino.0, FileType::Directory, OsStr::new(".").to_os_string()),
                (ino.0, FileType::Directory, OsStr::new("..").to_os_string()),
            ];
            for (p, kind) in names {
                let i = st.ino_for(&p);
                let name = p.file_name().unwrap_or_default().to_os_string();
                entries.push((i, kind, name));
            }
            Ok(entries)
        })();
        match r {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.st().fsync(ino.0, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.st();
        let r = (|| {
            let rel = st.child(parent.0, name)?;
            let abs = st.abs(&rel);
            let existed = abs.exists();
            if existed && flags & libc::O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            if !existed {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode & !umask & 0o7777)
                    .open(&abs)
                    .map_err(|e| errno(&e))?;
                st.log.push(NsOp::Created(rel.clone()));
            }
            let ino = st.ino_for(&rel);
            if existed && flags & libc::O_TRUNC != 0 {
                st.truncate(ino, 0)?;
            }
            st.attr(ino)
        })();
        match r {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}
