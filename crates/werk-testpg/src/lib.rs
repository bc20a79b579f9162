//! Throwaway PostgreSQL clusters for Werk's tests.
//!
//! [`PgCluster::start`] runs a real PostgreSQL 15 server — Debian's `postgresql-15` binaries
//! under `/usr/lib/postgresql/15/bin` — in a fresh temporary directory, and [`Drop`] stops it
//! and deletes the directory. Nothing of the machine's own PostgreSQL installation is used: no
//! packaged cluster, no `/etc/postgresql`, no `/var/run/postgresql`, no port 5432.
//!
//! ```no_run
//! # fn main() -> werk_testpg::Result<()> {
//! let pg = werk_testpg::PgCluster::start()?;
//! let url = pg.create_database("my_test")?; // postgresql://werk@127.0.0.1:PORT/my_test
//! // tokio_postgres::connect(&url, tokio_postgres::NoTls) ...
//! # Ok(()) }
//! ```
//!
//! # How a cluster is made
//!
//! 1. A temporary directory `werk-testpg-XXXXXX` (under `$TMPDIR`, else `/tmp`) holds
//!    everything: `data/` (the cluster), `postgres.log` (the server's output, kept across
//!    restarts) and the server's unix socket `.s.PGSQL.PORT`.
//! 2. `initdb -A trust -U werk -E UTF8 --no-locale` creates the cluster with one superuser,
//!    `werk`, and password-less (`trust`) access — acceptable because the server listens only
//!    on that private socket and on 127.0.0.1. With [`PgOptions::fsync`] off (the default)
//!    initdb gets `--no-sync` and the server `fsync=off`: fast, but a crash of the *machine*
//!    could corrupt the cluster. Tests that cut power or compare durability must turn it on.
//!    With fsync off, `initdb` runs only once per user and PostgreSQL installation: its result
//!    is kept as a template, `werk-testpg-template-UID-KEY` in the same base directory (about
//!    40 MB), and each cluster's `data/` is a copy of it, made in half an `initdb`'s time or
//!    less — which adds up where every test runs in its own process (nextest). The key changes
//!    with the programs (their directory, size and modification time), so an upgrade makes a
//!    new template; concurrent first runs each make one and atomically rename it into place.
//! 3. The `postgres` server is started directly as a child of the test process (no `pg_ctl`,
//!    which would detach it: this way the postmaster's pid is known exactly, an early exit is
//!    noticed at once, and [`PgCluster::kill`] is a plain `SIGKILL` of that pid). It listens on
//!    `127.0.0.1` only (`listen_addresses`) on a port that was free a moment before (if another
//!    process takes it meanwhile, the start is retried on a new port) and on a unix socket in
//!    the temporary directory. Settings are passed as `-c name=value` on its command line.
//! 4. Readiness is polled — `pg_isready` on both the socket and TCP until both accept
//!    connections — up to a deadline ([`PgOptions::start_timeout`], 60 s by default); a server
//!    that exits meanwhile fails the start at once with the tail of its log.
//! 5. A database named `werk` is created, so [`PgCluster::url`] works as is;
//!    [`PgCluster::create_database`] makes one more per test, so that tests can share a cluster.
//!
//! Stopping is a signal to the postmaster, as `pg_ctl stop` would send: [`PgCluster::stop`]
//! is a fast shutdown (`SIGINT`), `Drop` an immediate one (`SIGQUIT`, as `pg_ctl stop -m
//! immediate`), [`PgCluster::kill`] a crash (`SIGKILL`; the server's other processes notice
//! that their postmaster died and exit by themselves), and [`PgCluster::restart`] starts the
//! server again on the same data, port and socket, after a fast shutdown if it was running —
//! after a `kill`, the server performs crash recovery from its WAL before it accepts
//! connections. A cluster still running when the test process exits (say, one kept in a
//! `static`, which is never dropped) is stopped and its directory deleted by an `atexit` hook.
//!
//! # As root and as any other user
//!
//! PostgreSQL refuses to run as root (`initdb: cannot be run as root`), and CI runs the tests
//! as root. So:
//!
//! * **Not root:** everything runs as the current user; nothing else is needed.
//! * **Root:** the programs run as the unprivileged account `postgres` — which Debian's
//!   `postgresql-common` creates and `postgresql-15` depends on, so it exists wherever the
//!   binaries do — else as `nobody`; `WERK_TESTPG_USER=name` picks another. The temporary
//!   directory is created under a base every user can traverse (`$TMPDIR` if every ancestor is
//!   world-searchable, else `/tmp`) and handed to that account (`chown`, mode 0700). Each
//!   program is spawned with that account's uid and gid and no supplementary groups, set by
//!   the standard library between `fork` and `exec` ([`std::os::unix::process::CommandExt`]'s
//!   `uid`/`gid`; `setgroups(0)` comes with it) — what `setpriv --reuid --regid
//!   --clear-groups` does, but with no extra program, no PAM session (unlike `runuser`/`su`,
//!   which also fork, so the pid they give is not the postmaster's), and no change to the
//!   machine (unlike creating a dedicated user with `useradd`, which edits `/etc/passwd` and
//!   races when several test binaries do it at once). The test process itself stays root: it
//!   can still read the log, signal the server and delete the directory.
//!
//! # Environment
//!
//! * `WERK_TESTPG_BIN_DIR`: where `initdb`, `postgres`, `pg_isready` and `createdb` are
//!   (default `/usr/lib/postgresql/15/bin`; [`PgOptions::bin_dir`] overrides both). If they
//!   are missing, [`PgCluster::start`] fails saying which Debian package to install; it never
//!   skips.
//! * `WERK_TESTPG_USER`: the account to run as when root (default `postgres`, else `nobody`).
//! * `WERK_TESTPG_NO_TEMPLATE` (any value): run `initdb` for every cluster, as with fsync on,
//!   instead of copying the template.
//! * Variables `PG*` (`PGHOST`, `PGPORT`, …) of the test process are not passed to the
//!   PostgreSQL programs, and they run with `LC_ALL=C`, so that their messages are English.

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

/// Where Debian's `postgresql-15` package installs the server programs.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The Debian package that provides them.
pub const PACKAGE: &str = "postgresql-15";
/// The cluster's superuser (created by `initdb -U`); every URL connects as it.
pub const SUPERUSER: &str = "werk";
/// The database created with every cluster; [`PgCluster::url`] points at it.
pub const DEFAULT_DATABASE: &str = "werk";

/// The programs a cluster needs, all in the bin dir.
const PROGRAMS: [&str; 4] = ["initdb", "postgres", "pg_isready", "createdb"];
/// How long a stop may take before the postmaster is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How every cluster is initialised (plus `--no-sync` with fsync off).
const INITDB_ARGS: [&str; 8] = [
    "-A",
    "trust",
    "-U",
    SUPERUSER,
    "-E",
    "UTF8",
    "--no-locale",
    "--no-instructions",
];
/// Room for `/.s.PGSQL.65535` and the terminating NUL in `sockaddr_un.sun_path` (108 bytes).
const MAX_SOCKET_DIR_LEN: usize = 107 - "/.s.PGSQL.65535".len();

/// An error of this crate: a message saying what failed, with the output of the program that
/// failed (or the tail of the server's log) where there is one.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl Error {
    fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }

    fn io(what: impl fmt::Display, err: io::Error) -> Self {
        Error(format!("{what}: {err}"))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The server's `synchronous_commit` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SynchronousCommit {
    /// A commit returns once its WAL is flushed (and, with synchronous standbys, flushed there).
    #[default]
    On,
    /// A commit returns before its WAL is flushed: the last commits may be lost in a crash.
    Off,
    /// Flushed locally; standbys are not waited for.
    Local,
    /// Flushed locally and written (not flushed) on synchronous standbys.
    RemoteWrite,
    /// Flushed locally and applied on synchronous standbys.
    RemoteApply,
}

impl SynchronousCommit {
    /// The value as PostgreSQL spells it (and as `SHOW synchronous_commit` returns it).
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::Off => "off",
            SynchronousCommit::Local => "local",
            SynchronousCommit::RemoteWrite => "remote_write",
            SynchronousCommit::RemoteApply => "remote_apply",
        }
    }
}

/// How to make and run a cluster: a builder for [`PgCluster::start_with`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    fsync: bool,
    synchronous_commit: SynchronousCommit,
    settings: Vec<(String, String)>,
    data_files: Vec<(String, Vec<u8>)>,
    start_timeout: Duration,
    bin_dir: Option<PathBuf>,
    port: Option<u16>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            fsync: false,
            synchronous_commit: SynchronousCommit::On,
            settings: Vec::new(),
            data_files: Vec::new(),
            start_timeout: Duration::from_secs(60),
            bin_dir: None,
            port: None,
        }
    }
}

impl PgOptions {
    /// The defaults: fsync off, `synchronous_commit = on`, 60 s to start.
    pub fn new() -> Self {
        Self::default()
    }

    /// Real durability (`true`): initdb syncs the new cluster to disk and the server runs with
    /// `fsync=on`. Off by default (`initdb --no-sync`, `fsync=off`), which is faster and
    /// enough for tests that do not cut power: a killed server (see [`PgCluster::kill`]) still
    /// keeps every commit, since the operating system holds what it wrote.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// The server's `synchronous_commit` (default [`SynchronousCommit::On`]).
    pub fn synchronous_commit(mut self, value: SynchronousCommit) -> Self {
        self.synchronous_commit = value;
        self
    }

    /// Any other server setting, passed as `-c name=value` (e.g. `max_connections`,
    /// `wal_level`). Later settings of the same name win. `listen_addresses`, `port` and
    /// `unix_socket_directories` belong to this crate and are refused at start.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// A file written into the data directory after `initdb`, before the server first starts:
    /// owned by the account the server runs as, mode 0600 (what PostgreSQL demands of a TLS
    /// key). `name` is a plain file name; an existing file (`pg_hba.conf`, say) is replaced.
    /// For TLS: `server.crt` and `server.key` (the default `ssl_cert_file` / `ssl_key_file`,
    /// relative to the data directory) plus `.setting("ssl", "on")`; a `pg_hba.conf` of
    /// `local all all trust` and `hostssl all all 127.0.0.1/32 trust` then refuses plain TCP
    /// connections (keep a `local` line: werk-testpg creates databases over the socket).
    pub fn data_file(mut self, name: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        self.data_files.push((name.into(), contents.into()));
        self
    }

    /// How long a start (or restart, crash recovery included) may take before it fails.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Where the PostgreSQL programs are, instead of `$WERK_TESTPG_BIN_DIR` or
    /// [`DEFAULT_BIN_DIR`].
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Listen on this port instead of a free one picked at start (a failover harness builds
    /// the new standby where the dead primary was, so that clients' host lists stay valid).
    /// The start fails if the port is taken.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
}

/// The account the PostgreSQL programs run as when the test process is root.
#[derive(Clone, Debug)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

/// A running (or killed) PostgreSQL cluster in its own temporary directory.
///
/// Dropping it stops the server (immediate shutdown) and deletes the directory.
#[derive(Debug)]
pub struct PgCluster {
    /// `None` only while dropping.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    bin_dir: PathBuf,
    account: Option<Account>,
    options: PgOptions,
    port: u16,
    /// The postmaster, while it runs.
    postmaster: Option<Child>,
    /// Set by [`PgCluster::kill`], cleared by the next start.
    killed: bool,
    /// Key in the `atexit` registry.
    registry_id: u64,
    /// When `pg_basebackup` finished, for a standby.
    backed_up: Option<Instant>,
}

/// Why a postmaster did not come up.
enum LaunchError {
    /// Another process had the port (or its lock file).
    PortInUse(Error),
    /// Processes of a killed server are still attached to its shared memory; they exit soon.
    OldServerAlive(Error),
    Other(Error),
}

impl PgCluster {
    /// Starts a cluster with the default [`PgOptions`] (fsync off, `synchronous_commit = on`).
    pub fn start() -> Result<PgCluster> {
        Self::start_with(PgOptions::default())
    }

    /// Creates a cluster in a new temporary directory and starts its server; returns once it
    /// accepts connections on both its unix socket and 127.0.0.1.
    pub fn start_with(options: PgOptions) -> Result<PgCluster> {
        let mut cluster = Self::prepare(options)?;
        cluster.init_data_dir()?;
        cluster.write_data_files()?;
        cluster.first_launch()?;
        cluster.create_database(DEFAULT_DATABASE)?;
        Ok(cluster)
    }

    /// A **streaming-replication standby** of `primary`, in a new temporary directory of its
    /// own: `pg_basebackup -X stream -R` copies the primary's data over TCP (the replication
    /// connection is allowed by the `trust` lines `initdb` writes) and writes `standby.signal`
    /// and `primary_conninfo`; then the server starts with `options` (the same settings as the
    /// primary's, typically, so that `synchronous_standby_names` is in force once it is
    /// promoted) and this returns once it accepts (read-only) connections. Its walreceiver
    /// connects with the application name `cluster_name` if the options set one (PostgreSQL's
    /// default): name the standby so in the primary's `synchronous_standby_names` and its
    /// commits wait for it. Never use `*` there: `pg_basebackup -X stream` streams through a
    /// temporary replication slot and so reports flush positions — with `*` it counts as a
    /// synchronous standby itself, and commits are confirmed by a backup in progress.
    pub fn standby_of(primary: &PgCluster, options: PgOptions) -> Result<PgCluster> {
        let mut cluster = Self::prepare(options)?;
        let mut cmd = cluster.command("pg_basebackup");
        cmd.arg("-D")
            .arg(&cluster.data_dir)
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", SUPERUSER, "-X", "stream", "-R", "-c", "fast"]);
        if !cluster.options.fsync {
            cmd.arg("--no-sync");
        }
        run(cmd, "pg_basebackup")?;
        cluster.backed_up = Some(Instant::now());
        cluster.write_data_files()?;
        cluster.first_launch()?;
        Ok(cluster)
    }

    /// When a standby's `pg_basebackup` finished (before the server first started): its
    /// walreceiver cannot have confirmed a commit before then.
    pub fn backed_up_at(&self) -> Option<Instant> {
        self.backed_up
    }

    /// Promotes a standby to primary (`pg_ctl promote -w`: returns once it accepts writes).
    pub fn promote(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("promote").arg("-D").arg(&self.data_dir).args([
            "-w",
            "-t",
            &self.options.start_timeout.as_secs().to_string(),
        ]);
        run(cmd, "pg_ctl promote")
    }

    /// Runs `sql` with `psql` over the socket in database `werk` as the superuser; returns its
    /// output, unaligned, tuples only (one row a line, columns separated by `|`).
    pub fn sql(&self, sql: &str) -> Result<String> {
        let mut cmd = self.command("psql");
        cmd.arg("-h")
            .arg(&self.root)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                DEFAULT_DATABASE,
            ])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        let out = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::io("running psql", e))?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "werk-testpg: psql -c {sql:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether this server is a standby still (`standby.signal` is in its data directory until
    /// a promotion ends).
    pub fn is_standby(&self) -> bool {
        self.data_dir.join("standby.signal").exists()
    }

    /// A fast shutdown of the server (`SIGINT`), keeping the directory:
    /// [`restart`](Self::restart) starts it again.
    pub fn stop_server(&mut self) -> Result<()> {
        self.shutdown(libc::SIGINT, "fast shutdown")
    }

    /// Crashes the server as a machine crash would: every process of it at once, not only the
    /// postmaster ([`kill`](Self::kill) lets backends finish what they are doing before they
    /// notice that the postmaster died). The processes are stopped (`SIGSTOP`) first, so that
    /// none of them acts after another has died, then killed.
    pub fn kill_all(&mut self) -> Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let pid = pid as libc::pid_t;
        // SAFETY: kill(2) of our own child, then of its children (pids read from /proc).
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let children = children_of(pid);
        for &c in &children {
            unsafe { libc::kill(c, libc::SIGSTOP) };
        }
        for &c in &children {
            unsafe { libc::kill(c, libc::SIGKILL) };
        }
        self.kill()?;
        // The children are not ours to reap (they are the postmaster's, now init's): wait
        // until they are gone, so that the port and shared memory are free.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while children
            .iter()
            .any(|&c| Path::new(&format!("/proc/{c}/stat")).exists() && !is_zombie(c))
        {
            if Instant::now() >= deadline {
                return Err(Error::new(
                    "werk-testpg: the killed server's processes did not exit".to_string(),
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Freezes every process of the server (`SIGSTOP` to the postmaster and its children), as
    /// a stalled machine or a network partition would look to its peers; [`thaw`](Self::thaw)
    /// lets them go on. A frozen standby receives no WAL, so its primary's synchronous commits
    /// wait (and an asynchronous standby falls behind).
    pub fn freeze(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    /// Freezes the primary's WAL senders (`SIGSTOP`): its standbys receive nothing more —
    /// unlike a frozen standby, whose kernel still takes what is sent into its socket buffer —
    /// while its backends go on. Synchronous commits wait; asynchronous ones are answered and
    /// exist on this server only. [`thaw`](Self::thaw) (or a crash) ends it. Returns how many
    /// were frozen.
    pub fn freeze_wal_senders(&self) -> usize {
        let Some(pid) = self.pid() else {
            return 0;
        };
        let senders: Vec<libc::pid_t> = children_of(pid as libc::pid_t)
            .into_iter()
            .filter(|c| {
                fs::read(format!("/proc/{c}/cmdline"))
                    .is_ok_and(|t| String::from_utf8_lossy(&t).contains("walsender"))
            })
            .collect();
        for &c in &senders {
            // SAFETY: kill(2) of a child of our postmaster.
            unsafe { libc::kill(c, libc::SIGSTOP) };
        }
        senders.len()
    }

    /// Undoes [`freeze`](Self::freeze) (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal_all(libc::SIGCONT);
    }

    fn signal_all(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid() {
            let pid = pid as libc::pid_t;
            // SAFETY: kill(2) of our own child and of its children (pids read from /proc).
            unsafe { libc::kill(pid, signal) };
            for c in children_of(pid) {
                unsafe { libc::kill(c, signal) };
            }
        }
    }

    /// A new temporary directory, handed to the account, and the cluster's paths; nothing
    /// started.
    fn prepare(options: PgOptions) -> Result<PgCluster> {
        for (name, _) in &options.settings {
            if ["listen_addresses", "port", "unix_socket_directories"].contains(&name.as_str()) {
                return Err(Error::new(format!(
                    "werk-testpg: the setting {name} is chosen by werk-testpg itself"
                )));
            }
        }
        let bin_dir = options
            .bin_dir
            .clone()
            .or_else(|| std::env::var_os("WERK_TESTPG_BIN_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR));
        check_programs(&bin_dir)?;
        let account = unprivileged_account()?;

        let base = temp_base(account.is_some());
        let dir = tempfile::Builder::new()
            .prefix("werk-testpg-")
            .tempdir_in(&base)
            .map_err(|e| {
                Error::io(
                    format_args!("creating a temporary directory in {}", base.display()),
                    e,
                )
            })?;
        let root = dir.path().to_path_buf();
        if root.as_os_str().len() > MAX_SOCKET_DIR_LEN {
            return Err(Error::new(format!(
                "werk-testpg: the temporary directory {} is too long a path for a unix socket \
                 (at most {MAX_SOCKET_DIR_LEN} bytes); set TMPDIR to a shorter directory",
                root.display()
            )));
        }
        if let Some(a) = &account {
            std::os::unix::fs::chown(&root, Some(a.uid), Some(a.gid)).map_err(|e| {
                Error::io(format_args!("chown {} to {}", root.display(), a.name), e)
            })?;
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format_args!("chmod {}", root.display()), e))?;

        Ok(PgCluster {
            data_dir: root.join("data"),
            log_path: root.join("postgres.log"),
            root,
            dir: Some(dir),
            bin_dir,
            account,
            options,
            port: 0,
            postmaster: None,
            killed: false,
            registry_id: 0,
            backed_up: None,
        })
    }

    /// Starts the server for the first time: on [`PgOptions::port`], or on a free port (a new
    /// one if another process takes it meanwhile).
    fn first_launch(&mut self) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = match self.options.port {
                Some(p) => p,
                None => free_port()?,
            };
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(LaunchError::PortInUse(_)) if attempt < 5 && self.options.port.is_none() => {
                    continue
                }
                Err(
                    LaunchError::PortInUse(e)
                    | LaunchError::OldServerAlive(e)
                    | LaunchError::Other(e),
                ) => return Err(e),
            }
        }
    }

    /// The libpq URI of the `werk` database over TCP:
    /// `postgresql://werk@127.0.0.1:PORT/werk`. Works with `tokio_postgres::connect`,
    /// `deadpool_postgres`, `psql` and anything else that speaks libpq URIs.
    pub fn url(&self) -> String {
        self.url_for(DEFAULT_DATABASE)
    }

    /// The libpq URI of database `dbname` over TCP: `postgresql://werk@127.0.0.1:PORT/DBNAME`.
    pub fn url_for(&self, dbname: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(dbname.as_bytes())
        )
    }

    /// The libpq URI of database `dbname` over the unix socket, the socket directory
    /// percent-encoded as the host: `postgresql://werk@%2Ftmp%2Fwerk-testpg-XXXXXX:PORT/DBNAME`.
    pub fn socket_url_for(&self, dbname: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@{}:{}/{}",
            percent_encode(self.root.as_os_str().as_bytes()),
            self.port,
            percent_encode(dbname.as_bytes())
        )
    }

    /// The TCP port on 127.0.0.1 (also the number in the socket's name); it stays the same
    /// across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the unix socket `.s.PGSQL.PORT` (the cluster's temporary
    /// directory).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log (its stdout and stderr, across restarts).
    pub fn log_file(&self) -> &Path {
        &self.log_path
    }

    /// The server's log so far, for a failing test to print.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the postmaster runs (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.postmaster {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.as_ref().map(Child::id)
    }

    /// A new, empty database on a cluster shared by the whole test process (started with the
    /// default [`PgOptions`] on first use; the `atexit` hook stops it when the process exits),
    /// for tests that need a database of their own but not a cluster of their own. Blocks
    /// (call it from `spawn_blocking` in async tests). Databases are named `fresh_N`.
    pub fn fresh_database() -> Result<String> {
        static SHARED: std::sync::OnceLock<std::result::Result<PgCluster, String>> =
            std::sync::OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pg = SHARED
            .get_or_init(|| PgCluster::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::new(format!("the shared test cluster did not start: {e}")))?;
        pg.create_database(&format!("fresh_{}", NEXT.fetch_add(1, Ordering::SeqCst)))
    }

    /// Creates database `name` (a fresh copy of `template1`) and returns its
    /// [`url_for`](Self::url_for). Tests sharing one cluster give each their own database.
    ///
    /// `name` must be 1 to 63 of `a-z`, `0-9` and `_`, not starting with a digit, so that it
    /// needs no quoting in SQL or URLs. Fails if the database exists.
    pub fn create_database(&self, name: &str) -> Result<String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name.as_bytes()[0].is_ascii_digit()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(Error::new(format!(
                "werk-testpg: invalid database name {name:?} (use 1-63 of a-z, 0-9, _; not starting with a digit)"
            )));
        }
        let mut cmd = self.command("createdb");
        cmd.arg("-h")
            .arg(&self.root)
            .arg("-p")
            .arg(self.port.to_string());
        cmd.args(["-U", SUPERUSER, "--", name]);
        // Not waiting for a synchronous standby (there may be none yet, see
        // `PgCluster::standby_of`): the database exists on the primary once this returns.
        cmd.env("PGOPTIONS", "-c synchronous_commit=local");
        run(cmd, "createdb")?;
        Ok(self.url_for(name))
    }

    /// Stops the server with a fast shutdown (`SIGINT`: sessions are ended, a shutdown
    /// checkpoint is written) and deletes the directory. Unlike dropping, reports a failure.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown(libc::SIGINT, "fast shutdown")?;
        self.release_killed_shared_memory();
        self.unregister();
        let dir = self.dir.take().expect("directory present until drop");
        let path = dir.path().to_path_buf();
        dir.close()
            .map_err(|e| Error::io(format_args!("removing {}", path.display()), e))
    }

    /// Crashes the server: `SIGKILL` to the postmaster (which is then reaped). Its backends and
    /// auxiliary processes notice that the postmaster died and exit by themselves within
    /// moments; open connections break. What was committed before stays on disk (with
    /// [`PgOptions::fsync`] on, even across a power loss). [`restart`](Self::restart) brings
    /// the server back, running crash recovery first. Does nothing if the server is not running.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.postmaster.take() {
            // SIGKILL; an already exited child is fine too.
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| Error::io("waiting for the killed postmaster", e))?;
            self.killed = true;
            self.unregister();
        }
        Ok(())
    }

    /// Starts the server again on the same data directory, port and socket, after a fast
    /// shutdown if it is running. After a [`kill`](Self::kill) this waits (up to the start
    /// timeout) for the old server's processes to exit and for crash recovery to finish.
    pub fn restart(&mut self) -> Result<()> {
        if self.postmaster.is_some() {
            self.shutdown(libc::SIGINT, "fast shutdown")?;
        }
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(LaunchError::OldServerAlive(e)) => {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    thread::sleep(POLL_INTERVAL);
                }
                Err(LaunchError::PortInUse(e) | LaunchError::Other(e)) => return Err(e),
            }
        }
    }

    /// A command for one of the PostgreSQL programs, run as the right account with a clean
    /// environment, in the cluster's directory.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        for (key, _) in std::env::vars_os() {
            if key.as_bytes().starts_with(b"PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env("LC_ALL", "C")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        if let Some(a) = &self.account {
            // std drops supplementary groups (setgroups(0)) before setgid/setuid when root.
            cmd.uid(a.uid).gid(a.gid);
            cmd.env("HOME", &self.root)
                .env("USER", &a.name)
                .env("LOGNAME", &a.name);
        }
        cmd
    }

    /// Makes the data directory: a copy of the cached template when fsync is off (see
    /// [`Self::template`]), else a fresh `initdb` (which then syncs what it wrote).
    fn init_data_dir(&self) -> Result<()> {
        if self.options.fsync || std::env::var_os("WERK_TESTPG_NO_TEMPLATE").is_some() {
            return self.initdb(&self.data_dir);
        }
        let template = self.template()?;
        copy_data_dir(&template, &self.data_dir, self.account.as_ref()).map_err(|e| {
            Error::io(
                format_args!(
                    "copying the template data directory {} to {}",
                    template.display(),
                    self.data_dir.display()
                ),
                e,
            )
        })
    }

    /// The template data directory: what `initdb --no-sync` makes, made once and kept in the
    /// temporary base directory for every later cluster of the same user, programs and account
    /// (`werk-testpg-template-UID-KEY`). Several test processes may make it at once: each
    /// runs `initdb` in a directory of its own and renames the result into place, which
    /// succeeds for one and fails, with the directory then present, for the others — so the
    /// template, once there, is always complete.
    fn template(&self) -> Result<PathBuf> {
        let base = temp_base(self.account.is_some());
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        let path = base.join(format!(
            "werk-testpg-template-{uid}-{:016x}",
            self.template_key()
        ));
        if path.join("PG_VERSION").is_file() {
            return Ok(path);
        }
        let work = tempfile::Builder::new()
            .prefix("werk-testpg-initdb-")
            .tempdir_in(&base)
            .map_err(|e| {
                Error::io(
                    format_args!("creating a temporary directory in {}", base.display()),
                    e,
                )
            })?;
        if let Some(a) = &self.account {
            std::os::unix::fs::chown(work.path(), Some(a.uid), Some(a.gid)).map_err(|e| {
                Error::io(
                    format_args!("chown {} to {}", work.path().display(), a.name),
                    e,
                )
            })?;
        }
        let made = work.path().join("data");
        self.initdb(&made)?;
        match fs::rename(&made, &path) {
            Ok(()) => Ok(path),
            // Another process put its template there first.
            Err(_) if path.join("PG_VERSION").is_file() => Ok(path),
            Err(e) => Err(Error::io(
                format_args!("renaming {} to {}", made.display(), path.display()),
                e,
            )),
        }
    }

    /// What the template depends on: the programs (their directory, and the size and
    /// modification time of `postgres` and `initdb`, which change with an upgrade), the
    /// account they run as, and how `initdb` is run ([`INITDB_ARGS`]).
    fn template_key(&self) -> u64 {
        // FNV-1a: stable across Rust versions, unlike std's DefaultHasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes.iter().chain(&[0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(self.bin_dir.as_os_str().as_bytes());
        for program in ["postgres", "initdb"] {
            if let Ok(m) = fs::metadata(self.bin_dir.join(program)) {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                eat(&m.len().to_le_bytes());
                eat(&mtime.to_le_bytes());
            }
        }
        eat(self.account.as_ref().map_or(&[][..], |a| a.name.as_bytes()));
        for arg in INITDB_ARGS {
            eat(arg.as_bytes());
        }
        h
    }

    fn initdb(&self, data_dir: &Path) -> Result<()> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(data_dir);
        cmd.args(INITDB_ARGS);
        if !self.options.fsync {
            cmd.arg("--no-sync");
        }
        run(cmd, "initdb")
    }

    /// Writes [`PgOptions::data_file`]s into the data directory.
    fn write_data_files(&self) -> Result<()> {
        for (name, contents) in &self.options.data_files {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(Error::new(format!(
                    "werk-testpg: data file name {name:?} is not a plain file name"
                )));
            }
            let path = self.data_dir.join(name);
            let _ = fs::remove_file(&path);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| Error::io(format_args!("creating {}", path.display()), e))?;
            file.write_all(contents)
                .map_err(|e| Error::io(format_args!("writing {}", path.display()), e))?;
            if let Some(a) = &self.account {
                std::os::unix::fs::chown(&path, Some(a.uid), Some(a.gid)).map_err(|e| {
                    Error::io(format_args!("chown {} to {}", path.display(), a.name), e)
                })?;
            }
        }
        Ok(())
    }

    /// Spawns the postmaster and waits until it accepts connections on the socket and on TCP.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let other = LaunchError::Other;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| {
                other(Error::io(
                    format_args!("opening {}", self.log_path.display()),
                    e,
                ))
            })?;
        let log_start = log.seek(SeekFrom::End(0)).unwrap_or(0);
        let log_err = log
            .try_clone()
            .map_err(|e| other(Error::io("dup of the log file", e)))?;

        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(&self.data_dir);
        let fsync = if self.options.fsync { "on" } else { "off" };
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            ("port".into(), self.port.to_string()),
            (
                "unix_socket_directories".into(),
                self.root.to_string_lossy().into_owned(),
            ),
            ("fsync".into(), fsync.into()),
            (
                "synchronous_commit".into(),
                self.options.synchronous_commit.as_str().into(),
            ),
        ];
        settings.extend(self.options.settings.iter().cloned());
        for (name, value) in &settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdout(log).stderr(log_err);
        let child = cmd.spawn().map_err(|e| {
            other(Error::io(
                format_args!("starting {}", self.bin_dir.join("postgres").display()),
                e,
            ))
        })?;
        self.postmaster = Some(child);

        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            let child = self.postmaster.as_mut().expect("just spawned");
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.postmaster = None;
                    let tail = self.log_since(log_start);
                    let err = Error::new(format!(
                        "werk-testpg: postgres exited during startup ({status}); its log:\n{tail}"
                    ));
                    return Err(if tail.contains("Address already in use") {
                        LaunchError::PortInUse(err)
                    } else if tail.contains("pre-existing shared memory block")
                        || tail.contains("is another postmaster")
                    {
                        LaunchError::OldServerAlive(err)
                    } else {
                        LaunchError::Other(err)
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(other(Error::io("waiting for postgres", e))),
            }
            if self.is_ready(&self.root.to_string_lossy()) && self.is_ready("127.0.0.1") {
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.shutdown(libc::SIGQUIT, "immediate shutdown");
                return Err(other(Error::new(format!(
                    "werk-testpg: postgres did not accept connections within {:?}; its log:\n{}",
                    self.options.start_timeout,
                    self.log_since(log_start)
                ))));
            }
            thread::sleep(POLL_INTERVAL);
        }
        self.killed = false;
        self.register();
        Ok(())
    }

    /// `pg_isready` against `host` (the socket directory or 127.0.0.1): accepting connections.
    fn is_ready(&self, host: &str) -> bool {
        let mut cmd = self.command("pg_isready");
        cmd.args([
            "-q",
            "-h",
            host,
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-t",
            "5",
        ]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    /// Sends `signal` to the postmaster and waits for it to exit (it waits for its own
    /// children); past [`STOP_TIMEOUT`] it is killed and this fails.
    fn shutdown(&mut self, signal: libc::c_int, what: &str) -> Result<()> {
        let Some(mut child) = self.postmaster.take() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: plain kill(2) of our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::new(format!(
                        "werk-testpg: postgres did not finish its {what} within {STOP_TIMEOUT:?}; killed it"
                    )));
                }
                Err(e) => return Err(Error::io("waiting for postgres to stop", e)),
            }
        }
    }

    /// After a [`kill`](Self::kill) with no restart, the killed server's System V shared
    /// memory segment (PostgreSQL's interlock, a few bytes) would stay behind: mark it for
    /// removal (the kernel frees it once the last old process detaches).
    fn release_killed_shared_memory(&self) {
        if !self.killed || self.postmaster.is_some() {
            return;
        }
        let Ok(pidfile) = fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return;
        };
        // Line 7: "  KEY  SHMID".
        let Some(shmid) = pidfile
            .lines()
            .nth(6)
            .and_then(|l| l.split_whitespace().nth(1))
        else {
            return;
        };
        if let Ok(shmid) = shmid.parse::<libc::c_int>() {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.seek(SeekFrom::Start(offset));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    fn register(&mut self) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            // SAFETY: registers a plain extern "C" function.
            unsafe { libc::atexit(cleanup_at_exit) };
        });
        if self.registry_id == 0 {
            self.registry_id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        }
        let pid = self.pid().expect("registered while running") as libc::pid_t;
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|e| e.id != self.registry_id);
        reg.push(Registered {
            id: self.registry_id,
            pid,
            dir: self.root.clone(),
        });
    }

    fn unregister(&self) {
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|e| e.id != self.registry_id);
    }
}

impl Drop for PgCluster {
    /// Immediate shutdown (`SIGQUIT`, as `pg_ctl stop -m immediate`), then the directory is
    /// deleted. Errors are ignored.
    fn drop(&mut self) {
        let _ = self.shutdown(libc::SIGQUIT, "immediate shutdown");
        self.release_killed_shared_memory();
        self.unregister();
        // TempDir's own drop deletes the directory.
        self.dir.take();
    }
}

/// A running cluster, for the `atexit` hook.
struct Registered {
    id: u64,
    pid: libc::pid_t,
    dir: PathBuf,
}

static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// Stops the clusters that were never dropped (kept in statics, leaked) when the test
/// process exits, and deletes their directories.
extern "C" fn cleanup_at_exit() {
    let Ok(mut reg) = REGISTRY.try_lock() else {
        return;
    };
    for entry in reg.drain(..) {
        // SAFETY: kill/waitpid of our own child process.
        unsafe {
            if libc::kill(entry.pid, libc::SIGQUIT) == 0 {
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut status = 0;
                while libc::waitpid(entry.pid, &mut status, libc::WNOHANG) == 0 {
                    if Instant::now() >= deadline {
                        libc::kill(entry.pid, libc::SIGKILL);
                        libc::waitpid(entry.pid, &mut status, 0);
                        break;
                    }
                    thread::sleep(POLL_INTERVAL);
                }
            }
        }
        let _ = fs::remove_dir_all(&entry.dir);
    }
}

/// Copies a data directory: directories mode 0700 (PostgreSQL's demand), files with their
/// permissions, everything owned by `account` when there is one (the process is root).
fn copy_data_dir(from: &Path, to: &Path, account: Option<&Account>) -> io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o700))?;
    if let Some(a) = account {
        std::os::unix::fs::chown(to, Some(a.uid), Some(a.gid))?;
    }
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_data_dir(&entry.path(), &target, account)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
            if let Some(a) = account {
                std::os::unix::fs::chown(&target, Some(a.uid), Some(a.gid))?;
            }
        } else {
            return Err(io::Error::other(format!(
                "{} is neither a file nor a directory",
                entry.path().display()
            )));
        }
    }
    Ok(())
}

/// Fails, naming the package to install, if a program is missing.
fn check_programs(bin_dir: &Path) -> Result<()> {
    let missing: Vec<&str> = PROGRAMS
        .iter()
        .copied()
        .filter(|p| !bin_dir.join(p).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::new(format!(
        "werk-testpg: PostgreSQL server programs not found in {}: missing {}. Install Debian's \
         {PACKAGE} package (`apt-get install -y --no-install-recommends {PACKAGE}`; .ci/run does \
         this), or set WERK_TESTPG_BIN_DIR to a directory holding PostgreSQL 15's programs.",
        bin_dir.display(),
        missing.join(", ")
    )))
}

/// `None` unless the process is root; then the account to run PostgreSQL as.
fn unprivileged_account() -> Result<Option<Account>> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let names: Vec<String> = match std::env::var("WERK_TESTPG_USER") {
        Ok(name) if !name.is_empty() => vec![name],
        _ => vec!["postgres".into(), "nobody".into()],
    };
    for name in &names {
        if let Some(account) = lookup_user(name)? {
            if account.uid == 0 {
                return Err(Error::new(format!(
                    "werk-testpg: account {name} is root; PostgreSQL refuses to run as root"
                )));
            }
            return Ok(Some(account));
        }
    }
    Err(Error::new(format!(
        "werk-testpg: running as root, and none of the accounts {names:?} exists to run PostgreSQL \
         as (it refuses root); install {PACKAGE} (its postgresql-common creates `postgres`) or set \
         WERK_TESTPG_USER"
    )))
}

fn lookup_user(name: &str) -> Result<Option<Account>> {
    let cname = CString::new(name)
        .map_err(|_| Error::new(format!("werk-testpg: bad user name {name:?}")))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: getpwnam_r with a zeroed passwd, a buffer of buf.len() bytes, and a result
        // pointer; the strings it fills in point into buf, which outlives their use.
        unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            );
            if rc == libc::ERANGE && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            if rc != 0 {
                return Err(Error::io(
                    format_args!("looking up user {name}"),
                    io::Error::from_raw_os_error(rc),
                ));
            }
            if result.is_null() {
                return Ok(None);
            }
            let pw_name = CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned();
            return Ok(Some(Account {
                name: pw_name,
                uid: pwd.pw_uid,
                gid: pwd.pw_gid,
            }));
        }
    }
}

/// Where to create the temporary directory: `$TMPDIR` (std's temp dir), unless the
/// PostgreSQL account (when root) could not reach it — then `/tmp`.
fn temp_base(for_other_account: bool) -> PathBuf {
    let base = std::env::temp_dir();
    if !for_other_account {
        return base;
    }
    let searchable = base.ancestors().all(|dir| {
        fs::metadata(dir)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    if searchable {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

/// A TCP port on 127.0.0.1 that was free just now.
/// The pids whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&p| stat_field(p, 1).and_then(|f| f.parse().ok()) == Some(pid))
        .collect()
}

/// Field `n` after the command name of `/proc/PID/stat` (0: the state, 1: the parent pid).
fn stat_field(pid: libc::pid_t, n: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n).map(str::to_string)
}

fn is_zombie(pid: libc::pid_t) -> bool {
    stat_field(pid, 0).as_deref() == Some("Z")
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("local_addr", e))?
        .port();
    Ok(port)
}

/// Runs a program to completion; on failure the error carries its output.
fn run(mut cmd: Command, what: &str) -> Result<()> {
    let output = cmd
        .output()
        .map_err(|e| Error::io(format_args!("running {what}"), e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::new(format!(
        "werk-testpg: {what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_of_a_socket_dir() {
        assert_eq!(
            percent_encode(b"/tmp/werk-testpg-aB3_x"),
            "%2Ftmp%2Fwerk-testpg-aB3_x"
        );
    }

    #[test]
    fn missing_programs_name_the_package() {
        let err =
            PgCluster::start_with(PgOptions::new().bin_dir("/nonexistent/pg/bin")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(PACKAGE) && msg.contains("initdb"), "{msg}");
    }

    #[test]
    fn reserved_settings_are_refused() {
        let err = PgCluster::start_with(PgOptions::new().setting("port", "5432")).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }
}
