//! Shared helpers for Werk's end-to-end suites: spawning and killing a `werk serve` child
//! process on a free port with its own data directory, and a tiny raw-protocol client over
//! `std::net::TcpStream` (every read has a timeout, so no test can hang on the socket).
//!
//! # Both backends
//!
//! Every suite runs on the embedded store, and the end-to-end suites run on PostgreSQL too:
//! a test target named `pg_*` (e.g. `tests/pg_protocol.rs`, which is just
//! `#[path = "protocol.rs"] mod protocol;`) compiles the same suite again, and this module,
//! knowing which target it is compiled into ([`backend`]), makes [`Server::spawn`] add
//! `--database-url` for a database of its own to every server. The database belongs to the
//! server's data directory: a server restarted on the same directory (after a kill, say) finds
//! its jobs again, and servers on different directories see nothing of each other — as with
//! the embedded store. The databases live in one PostgreSQL cluster per test process
//! ([`werk_testpg`], started on first use, stopped when the process exits). Cases that are
//! about the embedded store itself (its files, SQLite's durability flags, damaged files, a full
//! disk under the data directory) return early on PostgreSQL through [`skip_on_postgres`],
//! which says so on stderr.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The binary under test.
pub const WERK: &str = env!("CARGO_BIN_EXE_werk");

/// The store the servers of this test target use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded (SQLite) store in the data directory.
    Embedded,
    /// PostgreSQL (`--database-url`): test targets named `pg_*`.
    Postgres,
}

/// This test target's backend: [`Backend::Postgres`] in the `pg_*` targets.
pub fn backend() -> Backend {
    if env!("CARGO_CRATE_NAME").starts_with("pg_") {
        Backend::Postgres
    } else {
        Backend::Embedded
    }
}

/// Whether this test target serves from PostgreSQL.
pub fn on_postgres() -> bool {
    backend() == Backend::Postgres
}

/// For a test about the embedded store itself: on PostgreSQL, says on stderr that the test is
/// skipped and why, and returns `true` (the test then returns at once); on the embedded store,
/// `false`. The line goes to the process's stderr directly, not through `eprintln!`, so that
/// `cargo test` shows it even though the test passes (nextest shows it with
/// `--success-output immediate`).
///
/// ```ignore
/// if skip_on_postgres("reads the SQLite files in the data directory") {
///     return;
/// }
/// ```
#[must_use]
pub fn skip_on_postgres(why: &str) -> bool {
    if on_postgres() {
        let line = format!(
            "SKIPPED on PostgreSQL: {} ({}): {why}\n",
            thread::current().name().unwrap_or("a test"),
            env!("CARGO_CRATE_NAME"),
        );
        let _ = io::stderr().write_all(line.as_bytes());
    }
    on_postgres()
}

/// The PostgreSQL cluster of this test process, started on first use (its `atexit` hook stops
/// it when the process exits). Room for many connections: with `cargo test` every test of a
/// target shares it, and each server may open a pool of up to 16 plus its listener.
pub fn pg_cluster() -> &'static werk_testpg::PgCluster {
    static CLUSTER: OnceLock<werk_testpg::PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let options = werk_testpg::PgOptions::new().setting("max_connections", "400");
        werk_testpg::PgCluster::start_with(options)
            .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the pg_* suites: {e}"))
    })
}

/// The URL of the database that belongs to `data_dir`: the cluster's own `werk` database for
/// the first data directory of the process (most tests have one), a new database for each
/// further one.
pub fn database_url_for(data_dir: &Path) -> String {
    static DATABASES: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    let mut dbs = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(url) = dbs.get(data_dir) {
        return url.clone();
    }
    let cluster = pg_cluster();
    let url = if dbs.is_empty() {
        cluster.url()
    } else {
        let name = format!("werk_e2e_{}", dbs.len());
        cluster.create_database(&name).unwrap_or_else(|e| {
            panic!(
                "cannot create database {name} for {}: {e}",
                data_dir.display()
            )
        })
    };
    dbs.insert(data_dir.to_path_buf(), url.clone());
    url
}

/// How long a server may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default per-read socket timeout of the raw client (the longest blocking command, FETCH,
/// answers within the server's fetch timeout, 2 s by default).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------

/// How to start a server.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Extra CLI arguments after `serve -b 127.0.0.1:0 -w :0 -d DIR`.
    pub args: Vec<String>,
    /// Password to configure (written to a file passed with `--password-file`, or given via
    /// `FAKTORY_PASSWORD` when `password_via_env` is set).
    pub password: Option<String>,
    pub password_via_env: bool,
    /// Serve the web UI on a free loopback port (`-w 127.0.0.1:0` instead of `-w :0`); its
    /// URL is then in [`Server::web_url`].
    pub web: bool,
}

impl ServerOpts {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    /// Shorter FETCH timeout so empty fetches return fast.
    pub fn fetch_timeout_ms(self, ms: u64) -> Self {
        self.arg("--fetch-timeout-ms").arg(ms.to_string())
    }
    pub fn scan_interval_ms(self, ms: u64) -> Self {
        self.arg("--scan-interval-ms").arg(ms.to_string())
    }
    pub fn password(mut self, pw: &str) -> Self {
        self.password = Some(pw.to_string());
        self
    }
    /// Also serve the web UI (on `127.0.0.1:0`).
    pub fn web(mut self) -> Self {
        self.web = true;
        self
    }
    pub fn password_env(mut self, pw: &str) -> Self {
        self.password = Some(pw.to_string());
        self.password_via_env = true;
        self
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A running `werk serve` child. Killed (SIGKILL) on drop; when the test is panicking the tail
/// of the server's stderr log is printed to help diagnose the failure.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub port: u16,
    /// The directory passed with `-d`.
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub password: Option<String>,
    pub opts: ServerOpts,
    /// `http://127.0.0.1:PORT` of the web UI (servers started with [`ServerOpts::web`]).
    pub web_url: Option<String>,
    /// Keeps an owned temporary directory alive (servers made with [`Server::start`]).
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with default options in a fresh temporary directory.
    pub fn start_default() -> Server {
        Server::start(ServerOpts::new())
    }

    /// Starts a server in a fresh temporary directory (owned by the returned value).
    pub fn start(opts: ServerOpts) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("werk-e2e-")
            .tempdir()
            .expect("tempdir");
        let mut s = Server::start_in(tmp.path(), opts);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server whose data lives in `dir/data` (created if missing). Use this with a
    /// directory owned by the test to restart a server on the same data.
    pub fn start_in(dir: &Path, opts: ServerOpts) -> Server {
        let data_dir = dir.join("data");
        fs::create_dir_all(&data_dir).expect("create data dir");
        Server::spawn(dir, data_dir, opts)
    }

    /// Starts a server on exactly `data_dir` (which is not created beforehand); logs go to `dir`.
    pub fn spawn(dir: &Path, data_dir: PathBuf, opts: ServerOpts) -> Server {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let log_path = dir.join(format!("werk-{}-{n}.log", std::process::id()));
        let log = File::create(&log_path).expect("create log file");

        let mut cmd = Command::new(WERK);
        cmd.arg("serve")
            .args(["-b", "127.0.0.1:0", "-w"])
            .arg(if opts.web { "127.0.0.1:0" } else { ":0" })
            .arg("-d")
            .arg(&data_dir)
            .args(&opts.args)
            .env_remove("WERK_DATABASE_URL")
            .env_remove("FAKTORY_PASSWORD")
            .env_remove("FAKTORY_URL")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if on_postgres() {
            cmd.arg("--database-url").arg(database_url_for(&data_dir));
        }
        if let Some(pw) = &opts.password {
            if opts.password_via_env {
                cmd.env("FAKTORY_PASSWORD", pw);
            } else {
                let pw_file = dir.join(format!("password-{n}"));
                fs::write(&pw_file, format!("{pw}\n")).expect("write password file");
                cmd.arg("--password-file").arg(&pw_file);
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {WERK}: {e}"));

        // Read stdout on a thread: the first line announces the port; later lines (there should
        // be none) are drained so the child can never block on a full pipe.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = tx.send(line.clone());
                    }
                }
            }
        });

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut web_url = None;
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                // With the web UI on, its line comes first.
                Ok(l) if opts.web && web_url.is_none() && l.starts_with("werk web UI on ") => {
                    web_url = Some(l["werk web UI on ".len()..].trim_end().to_string());
                    continue;
                }
                Ok(l) => break l,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.kill();
                    let st = child.wait();
                    panic!(
                        "werk exited before announcing its port ({st:?}); log:\n{}",
                        tail(&log_path, 80)
                    );
                }
            }
            if let Ok(Some(st)) = child.try_wait() {
                // Give the reader a moment in case the line raced with the exit.
                if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                    break l;
                }
                panic!(
                    "werk exited at startup with {st}; log:\n{}",
                    tail(&log_path, 80)
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "werk did not print its listening line within {STARTUP_TIMEOUT:?}; log:\n{}",
                    tail(&log_path, 80)
                );
            }
        };
        assert!(
            !opts.web || web_url.is_some(),
            "werk did not print its web UI line before {line:?}"
        );
        let line = line.trim_end_matches(['\r', '\n']);
        let rest = line
            .strip_prefix("werk listening on ")
            .unwrap_or_else(|| panic!("unexpected first stdout line from werk: {line:?}"));
        let addr: SocketAddr = rest
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        assert_eq!(
            addr.ip().to_string(),
            "127.0.0.1",
            "listening line: {line:?}"
        );
        assert_ne!(
            addr.port(),
            0,
            "listening line must name the real port: {line:?}"
        );
        if on_postgres() {
            // Proof that this suite really runs on PostgreSQL: no embedded store was opened.
            for file in ["werk.db", "werk.lock"] {
                assert!(
                    !data_dir.join(file).exists(),
                    "a server given --database-url made {file} in its data directory"
                );
            }
        }

        Server {
            child: Some(child),
            addr,
            port: addr.port(),
            data_dir,
            log_path,
            password: opts.password.clone(),
            opts,
            web_url,
            _tmp: None,
        }
    }

    /// `tcp://[:password@]127.0.0.1:PORT` for client libraries.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("tcp://:{pw}@{}", self.addr),
            None => format!("tcp://{}", self.addr),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("server running").id() as i32
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit (SIGKILL and panic after that).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("server running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "werk did not exit within {timeout:?} of SIGTERM; log:\n{}",
                    tail(&self.log_path, 60)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Is the child still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A connected, handshaken producer connection.
    pub fn conn(&self) -> Conn {
        Conn::open(self)
    }

    /// A connected, handshaken worker connection with the given wid.
    pub fn worker(&self, wid: &str) -> Conn {
        Conn::open_worker(self, wid)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "---- werk log ({}) ----\n{}\n---- end of werk log ----",
                self.log_path.display(),
                tail(&self.log_path, 60)
            );
        }
    }
}

/// Last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read log: {e}>"));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Raw protocol client
// ---------------------------------------------------------------------------------------------

/// One RESP reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+...`
    Simple(String),
    /// `-...` (text after the dash, e.g. `ERR Job not found x`)
    Error(String),
    /// `$n` + payload
    Bulk(Vec<u8>),
    /// `$-1`
    Null,
    /// `:n`
    Int(i64),
}

impl Reply {
    /// The exact bytes this reply was read from (the parser is strict about CRLF and lengths,
    /// so comparing this with expected bytes is a byte-exact comparison).
    pub fn wire(&self) -> Vec<u8> {
        match self {
            Reply::Simple(s) => format!("+{s}\r\n").into_bytes(),
            Reply::Error(s) => format!("-{s}\r\n").into_bytes(),
            Reply::Int(n) => format!(":{n}\r\n").into_bytes(),
            Reply::Null => b"$-1\r\n".to_vec(),
            Reply::Bulk(b) => {
                let mut v = format!("${}\r\n", b.len()).into_bytes();
                v.extend_from_slice(b);
                v.extend_from_slice(b"\r\n");
                v
            }
        }
    }
    pub fn wire_str(&self) -> String {
        String::from_utf8_lossy(&self.wire()).into_owned()
    }
    pub fn is_ok(&self) -> bool {
        *self == Reply::Simple("OK".into())
    }
    #[track_caller]
    pub fn expect_ok(&self) {
        assert!(self.is_ok(), "expected +OK, got {self:?}");
    }
    #[track_caller]
    pub fn expect_err(&self) -> &str {
        match self {
            Reply::Error(e) => e,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }
    #[track_caller]
    pub fn bulk(&self) -> &[u8] {
        match self {
            Reply::Bulk(b) => b,
            other => panic!("expected a bulk reply, got {other:?}"),
        }
    }
    #[track_caller]
    pub fn bulk_str(&self) -> &str {
        std::str::from_utf8(self.bulk()).expect("bulk reply is UTF-8")
    }
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(self.bulk())
            .unwrap_or_else(|e| panic!("bulk reply is not JSON ({e}): {self:?}"))
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.wire_str())
    }
}

/// A raw protocol connection.
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    /// TCP connect only (no greeting read).
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        s.set_write_timeout(Some(READ_TIMEOUT))?;
        s.set_nodelay(true)?;
        let w = s.try_clone()?;
        Ok(Conn {
            r: BufReader::new(s),
            w,
        })
    }

    pub fn set_read_timeout(&mut self, d: Duration) {
        self.w.set_read_timeout(Some(d)).expect("set_read_timeout");
    }

    /// Connect and complete the handshake as a producer (password from the server's config).
    pub fn open(server: &Server) -> Conn {
        let mut c = Conn::connect(server.addr);
        c.handshake(server.password.as_deref(), None);
        c
    }

    /// Connect and complete the handshake as a worker.
    pub fn open_worker(server: &Server, wid: &str) -> Conn {
        let mut c = Conn::connect(server.addr);
        c.handshake(server.password.as_deref(), Some(wid));
        c
    }

    /// Read `+HI {...}`, send a v2 HELLO (hashing the password with the advertised
    /// iterations), expect `+OK`.
    #[track_caller]
    pub fn handshake(&mut self, password: Option<&str>, wid: Option<&str>) {
        let hi = self.read_hi();
        let mut hello =
            json!({"hostname": "e2e-test", "pid": std::process::id(), "labels": ["e2e"], "v": 2});
        if let Some(w) = wid {
            hello["wid"] = json!(w);
        }
        if let Some(salt) = hi.get("s").and_then(Value::as_str) {
            let pw = password.expect("server wants a password but the test has none");
            let iters = hi.get("i").and_then(Value::as_u64).unwrap_or(1);
            hello["pwdhash"] = json!(pwdhash(pw, salt, iters));
        }
        self.send(&format!("HELLO {hello}"));
        let r = self.read_reply().expect("reading HELLO reply");
        assert!(r.is_ok(), "HELLO was refused: {r:?}");
    }

    /// Read the greeting and return its JSON.
    #[track_caller]
    pub fn read_hi(&mut self) -> Value {
        let r = self.read_reply().expect("reading HI");
        match r {
            Reply::Simple(s) => {
                let j = s
                    .strip_prefix("HI ")
                    .unwrap_or_else(|| panic!("not a HI: {s:?}"));
                serde_json::from_str(j).unwrap_or_else(|e| panic!("HI JSON {j:?}: {e}"))
            }
            other => panic!("expected +HI, got {other:?}"),
        }
    }

    /// Send one line terminated by CRLF.
    #[track_caller]
    pub fn send(&mut self, line: &str) {
        self.try_send(line)
            .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
    }

    pub fn try_send(&mut self, line: &str) -> io::Result<()> {
        let mut b = Vec::with_capacity(line.len() + 2);
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.w.write_all(&b)?;
        self.w.flush()
    }

    /// Send raw bytes (no terminator added).
    #[track_caller]
    pub fn send_bytes(&mut self, b: &[u8]) {
        self.w.write_all(b).expect("send bytes");
        self.w.flush().expect("flush");
    }

    /// Send a command and read its reply; panics on I/O errors.
    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.try_cmd(line)
            .unwrap_or_else(|e| panic!("command {}: {e}", abbrev(line)))
    }

    pub fn try_cmd(&mut self, line: &str) -> io::Result<Reply> {
        self.try_send(line)?;
        self.read_reply()
    }

    /// Read one CRLF-terminated line (without the CRLF). A bare LF terminator is an error:
    /// every server reply must end with CRLF.
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = self.r.read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        if !buf.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "reply line not terminated by CRLF: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.truncate(buf.len() - 2);
        Ok(buf)
    }

    /// Read one reply (strict RESP parsing).
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.read_line()?;
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let (&kind, rest) = line.split_first().ok_or_else(|| bad("empty reply line"))?;
        let text = String::from_utf8(rest.to_vec()).map_err(|_| bad("reply line is not UTF-8"))?;
        match kind {
            b'+' => Ok(Reply::Simple(text)),
            b'-' => Ok(Reply::Error(text)),
            b':' => Ok(Reply::Int(
                text.parse().map_err(|_| bad("bad integer reply"))?,
            )),
            b'$' => {
                if text == "-1" {
                    return Ok(Reply::Null);
                }
                let n: usize = text
                    .parse()
                    .map_err(|_| bad(&format!("bad bulk length {text:?}")))?;
                let mut payload = vec![0u8; n + 2];
                self.r.read_exact(&mut payload)?;
                if !payload.ends_with(b"\r\n") {
                    return Err(bad("bulk payload not followed by CRLF (length mismatch?)"));
                }
                payload.truncate(n);
                Ok(Reply::Bulk(payload))
            }
            other => Err(bad(&format!(
                "unknown reply type {:?} in {:?}",
                other as char,
                String::from_utf8_lossy(&line)
            ))),
        }
    }

    /// Assert that the server closes this connection within `within` without sending
    /// anything (a reset also counts as closed). Returns how long it took.
    #[track_caller]
    pub fn expect_closed(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        self.w.set_read_timeout(Some(within)).expect("set timeout");
        let mut buf = [0u8; 256];
        match self.r.read(&mut buf) {
            Ok(0) => start.elapsed(),
            Ok(n) => panic!(
                "expected the server to close the connection, but it sent {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("server did not close the connection within {within:?}")
            }
            Err(_) => start.elapsed(), // reset
        }
    }

    // ---- command helpers ----

    #[track_caller]
    pub fn push(&mut self, job: &Value) -> Reply {
        self.cmd(&format!("PUSH {job}"))
    }

    #[track_caller]
    pub fn push_ok(&mut self, job: &Value) {
        let r = self.push(job);
        assert!(r.is_ok(), "PUSH {job} failed: {r:?}");
    }

    /// FETCH; returns the raw JSON text and its parsed value, or None on `$-1`.
    #[track_caller]
    pub fn fetch(&mut self, queues: &str) -> Option<(String, Value)> {
        match self.cmd(&format!("FETCH {queues}")) {
            Reply::Null => None,
            r @ Reply::Bulk(_) => Some((r.bulk_str().to_string(), r.json())),
            other => panic!("FETCH {queues}: unexpected reply {other:?}"),
        }
    }

    /// FETCH that must return a job.
    #[track_caller]
    pub fn fetch_job(&mut self, queues: &str) -> Value {
        self.fetch(queues)
            .unwrap_or_else(|| panic!("FETCH {queues} returned no job"))
            .1
    }

    #[track_caller]
    pub fn ack(&mut self, jid: &str) -> Reply {
        self.cmd(&format!("ACK {}", json!({ "jid": jid })))
    }

    #[track_caller]
    pub fn fail(&mut self, payload: &Value) -> Reply {
        self.cmd(&format!("FAIL {payload}"))
    }

    #[track_caller]
    pub fn info(&mut self) -> Value {
        let r = self.cmd("INFO");
        r.json()
    }

    #[track_caller]
    pub fn mutate(&mut self, m: &Value) -> Reply {
        self.cmd(&format!("MUTATE {m}"))
    }
}

/// A Faktory password hash: SHA-256 over password ++ salt, then `iterations - 1` more rounds
/// over the raw digest; lowercase hex.
pub fn pwdhash(password: &str, salt: &str, iterations: u64) -> String {
    let mut h = Sha256::new();
    h.update(password.as_bytes());
    h.update(salt.as_bytes());
    let mut d = h.finalize();
    for _ in 1..iterations.max(1) {
        d = Sha256::digest(d);
    }
    hex::encode(d)
}

/// A process-unique jid with a readable prefix (always ≥ 8 bytes).
pub fn jid(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{t:08x}", std::process::id())
}

/// A minimal valid job.
pub fn job(jid: &str, jobtype: &str) -> Value {
    json!({"jid": jid, "jobtype": jobtype, "args": []})
}

/// Size of a set in INFO (`scheduled`, `retries`, `dead`, `working`).
#[track_caller]
pub fn set_size(info: &Value, set: &str) -> u64 {
    info["faktory"]["sets"][set]
        .as_u64()
        .unwrap_or_else(|| panic!("INFO faktory.sets.{set} missing: {info}"))
}

/// Size of a queue in INFO (None when the queue is not listed).
pub fn queue_size(info: &Value, q: &str) -> Option<u64> {
    info["faktory"]["queues"].get(q).and_then(Value::as_u64)
}

/// Poll `f` every `every` until it returns Some or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every);
    }
}

/// Polls INFO on `c` until `f(INFO)` holds; returns the INFO that satisfied it. Panics (naming
/// `what` and showing the last INFO) after `limit`.
#[track_caller]
pub fn wait_info(c: &mut Conn, limit: Duration, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_for(limit, Duration::from_millis(20), || {
        last = c.info();
        f(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}; last INFO: {last}"))
}

/// INFO `server.fetches_waiting`: FETCHes that found no job and wait for one. A FETCH counted
/// there is registered for wake-ups, so a job pushed afterwards wakes it.
#[track_caller]
pub fn fetches_waiting(info: &Value) -> u64 {
    info["server"]["fetches_waiting"]
        .as_u64()
        .unwrap_or_else(|| panic!("INFO server.fetches_waiting missing: {info}"))
}

/// Waits until exactly `n` FETCHes are blocked waiting for a job (INFO `fetches_waiting`), e.g.
/// to know that a FETCH sent on another connection is parked before pushing the job that must
/// wake it.
#[track_caller]
pub fn wait_fetches_waiting(c: &mut Conn, n: u64) -> Value {
    wait_info(
        c,
        Duration::from_secs(10),
        &format!("{n} blocked FETCH(es)"),
        |i| fetches_waiting(i) == n,
    )
}

/// Cycles completed so far by a background task, by its INFO `faktory.tasks` key: `Busy` is the
/// reservation reaper, `Scheduled` (= `Retries`) the scheduler promoting due jobs.
#[track_caller]
pub fn task_cycles(info: &Value, task: &str) -> u64 {
    info["faktory"]["tasks"][task]["cycles"]
        .as_u64()
        .unwrap_or_else(|| panic!("INFO faktory.tasks.{task}.cycles missing: {info}"))
}

/// Waits until the background task `task` (see [`task_cycles`]) has completed two more cycles
/// than when called, so at least one whole cycle started after this call. Use it where a test
/// checks that something did *not* happen: the task that would have done it had its chance.
#[track_caller]
pub fn wait_full_task_cycle(c: &mut Conn, task: &str) -> Value {
    let start = task_cycles(&c.info(), task);
    wait_info(
        c,
        Duration::from_secs(20),
        &format!("a whole {task} task cycle after cycle {start}"),
        |i| task_cycles(i, task) >= start + 2,
    )
}

/// Waits until the server's stderr log contains `needle`; panics with the log's tail after
/// `within`.
#[track_caller]
pub fn wait_for_log(s: &Server, needle: &str, within: Duration) {
    wait_for_file_text(&s.log_path, needle, within);
}

/// Waits until the file at `path` contains `needle` (e.g. a log line); panics with the file's
/// tail after `within`.
#[track_caller]
pub fn wait_for_file_text(path: &Path, needle: &str, within: Duration) {
    let found = wait_for(within, Duration::from_millis(20), || {
        fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
            .then_some(())
    });
    assert!(
        found.is_some(),
        "{needle:?} not in {} within {within:?}; its end:\n{}",
        path.display(),
        tail(path, 40)
    );
}

/// RFC 3339 timestamp `secs` seconds from now (UTC, millisecond precision, `Z`).
pub fn rfc3339_in(secs: f64) -> String {
    let t = chrono::Utc::now() + chrono::Duration::milliseconds((secs * 1000.0) as i64);
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parse an RFC 3339 timestamp, panicking with context.
#[track_caller]
pub fn parse_ts(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
}

fn abbrev(s: &str) -> String {
    if s.len() > 120 {
        format!(
            "{}… ({} bytes)",
            &s[..s.char_indices().nth(100).map(|(i, _)| i).unwrap_or(s.len())],
            s.len()
        )
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the failure-mode suites (hostile.rs, full_disk.rs, damaged_data.rs)
// ---------------------------------------------------------------------------------------------

impl Conn {
    /// The underlying socket (for socket options, non-blocking probes, shutdown).
    pub fn stream(&self) -> &TcpStream {
        &self.w
    }

    /// Close abruptly: SO_LINGER 0, so the kernel sends RST instead of FIN.
    pub fn reset(self) {
        set_linger_zero(&self.w);
        drop(self);
    }
}

/// SO_LINGER {on, 0}: closing the socket then sends RST.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        io::Error::last_os_error()
    );
}

/// Number of open file descriptors of a process (None if /proc cannot tell).
pub fn open_fds(pid: i32) -> Option<usize> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Most connections a server keeps to PostgreSQL: its pool and its `LISTEN` connection.
pub const MAX_STORE_CONNECTIONS: usize = werk_store_postgres::POOL_SIZE + 1;

/// How many of a server's open fds are its connections to this test process's PostgreSQL
/// cluster (its pool, which opens connections as concurrent requests need them and keeps them,
/// and its `LISTEN` connection): TCP sockets whose remote port is the cluster's, matched by
/// inode between `/proc/PID/fd` and `/proc/PID/net/tcp{,6}`. Always 0 on the embedded store.
pub fn store_connections(pid: i32) -> usize {
    if !on_postgres() {
        return 0;
    }
    let socket_inodes: std::collections::BTreeSet<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let target = fs::read_link(e.ok()?.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            inode.parse().ok()
        })
        .collect();
    let port = pg_cluster().port();
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        for f in text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            let rem_port = f
                .get(2)
                .and_then(|a| u16::from_str_radix(a.rsplit(':').next()?, 16).ok());
            let inode = f.get(9).and_then(|i| i.parse::<u64>().ok());
            if let (Some(rem_port), Some(inode)) = (rem_port, inode) {
                n += usize::from(rem_port == port && socket_inodes.contains(&inode));
            }
        }
    }
    n
}

/// [`open_fds`] less the server's connections to PostgreSQL ([`store_connections`]): what
/// clients, listeners and files hold. Panics if the server holds more store connections than it
/// may ([`MAX_STORE_CONNECTIONS`]), so a leak there is still caught.
#[track_caller]
pub fn open_fds_besides_store(pid: i32) -> Option<usize> {
    let (fds, store) = open_fds_and_store(pid)?;
    assert!(
        store <= MAX_STORE_CONNECTIONS,
        "the server holds {store} connections to PostgreSQL (at most {MAX_STORE_CONNECTIONS})"
    );
    Some(fds)
}

/// ([`open_fds`] less the store's connections, [`store_connections`]), without judging them:
/// for a monitor that samples while a load runs and judges once it has settled.
pub fn open_fds_and_store(pid: i32) -> Option<(usize, usize)> {
    let store = store_connections(pid);
    Some((open_fds(pid)?.saturating_sub(store), store))
}

/// INFO `server.connections`.
#[track_caller]
pub fn info_connections(info: &Value) -> u64 {
    info["server"]["connections"]
        .as_u64()
        .unwrap_or_else(|| panic!("INFO server.connections missing: {info}"))
}

/// Median and maximum of a list of durations (zero for an empty list).
pub fn median_max(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    if s.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    (s[s.len() / 2], s[s.len() - 1])
}

/// The web UI's `/metrics` exposition (servers started with [`ServerOpts::web`]), fetched with a
/// plain HTTP/1.0 GET.
#[track_caller]
pub fn scrape_metrics(s: &Server) -> String {
    let url = s
        .web_url
        .as_deref()
        .expect("the server was started without the web UI");
    let host = url.strip_prefix("http://").expect("http:// web URL");
    let mut t = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    t.set_read_timeout(Some(READ_TIMEOUT))
        .expect("set_read_timeout");
    write!(t, "GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("send GET /metrics");
    let mut resp = String::new();
    t.read_to_string(&mut resp).expect("read /metrics");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET /metrics: {head}"
    );
    body.to_string()
}

/// The value of one series (`name{labels}` exactly as exposed) in a `/metrics` text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
