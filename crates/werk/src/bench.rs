//! `werk bench`: a load generator for any Faktory-compatible server.
//!
//! It opens `--connections` connections with its own small async client (one command in flight
//! per connection, as real clients do: no pipelining), drives one of five workloads and reports
//! the throughput and the latency of every command type it sent (p50/p90/p99/p99.9/max, from an
//! HDR histogram per command type):
//!
//! * `push`: the connections PUSH `--jobs` jobs in total;
//! * `pushb`: the connections PUSHB `--jobs` jobs in batches of `--batch`;
//! * `work`: the connections FETCH + ACK (or FAIL a `--fail-ratio` share) until `--jobs` jobs
//!   are done or the queues are empty (filling them first is the caller's business);
//! * `mixed`: `--producers` connections PUSH while `--workers` connections FETCH + ACK at the
//!   same time; the throughput counts completed job lifecycles (ACKs);
//! * `latency`: the producers PUSH at a fixed offered `--rate` per second following a schedule
//!   (open loop: a late PUSH does not delay the schedule, and `PUSH_scheduled` measures from the
//!   time a PUSH was due, so queueing in the client is not hidden) while workers drain the queues.
//!
//! In `mixed` and `latency` modes the job carries its push time, and workers also record `E2E`:
//! the time from PUSH to the FETCH that delivered the job.
//!
//! Every run is bounded: by `--jobs`, and by `--duration-secs` (no new PUSH/PUSHB/FETCH after it,
//! replies still outstanding are awaited 3 s more). Error replies are counted; the exit status is
//! non-zero when a connection cannot be made or any error reply or broken connection occurred.

use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long connecting plus the HI/HELLO handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies outstanding at the `--duration-secs` cap are awaited this much longer (a FETCH may
/// wait for the server's fetch timeout, 2 s by default).
const GRACE: Duration = Duration::from_secs(3);
/// Worker connections BEAT this often so the server does not drop them as dead.
const BEAT_EVERY: Duration = Duration::from_secs(15);
/// Highest latency the histograms hold (larger values are clamped): 10 minutes in µs.
const HIST_MAX_US: u64 = 600_000_000;
/// Error messages kept for the report.
const ERROR_SAMPLES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// PUSH --jobs jobs.
    Push,
    /// PUSHB --jobs jobs in batches of --batch.
    Pushb,
    /// FETCH + ACK pre-filled queues until --jobs are done or the queues are empty.
    Work,
    /// Producers PUSH while workers FETCH + ACK; throughput = ACKs.
    Mixed,
    /// PUSH at a fixed --rate while workers drain; latency percentiles are the point.
    Latency,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Push => "push",
            Mode::Pushb => "pushb",
            Mode::Work => "work",
            Mode::Mixed => "mixed",
            Mode::Latency => "latency",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server: tcp://[:password@]host:port (FAKTORY_URL when absent). Several, comma-separated,
    /// for the nodes of a cluster: connections are spread over them in turn (so in mixed mode a
    /// job is usually pushed on one node and fetched on another).
    #[arg(
        long,
        env = "FAKTORY_URL",
        hide_env_values = true,
        default_value = "tcp://127.0.0.1:7419"
    )]
    pub(crate) url: String,
    /// Workload.
    #[arg(long, value_enum, default_value_t = Mode::Mixed)]
    pub(crate) mode: Mode,
    /// Connections (split between producers and workers in mixed and latency modes).
    #[arg(long, default_value_t = 10)]
    pub(crate) connections: usize,
    /// Producer connections in mixed and latency modes (default: half of --connections).
    #[arg(long)]
    pub(crate) producers: Option<usize>,
    /// Worker connections in mixed and latency modes (default: the rest of --connections).
    #[arg(long)]
    pub(crate) workers: Option<usize>,
    /// Jobs to push, or to process in work mode [default: 100000; in latency mode
    /// --rate × 80 % of --duration-secs, leaving time for the drain].
    #[arg(long)]
    pub(crate) jobs: Option<u64>,
    /// Jobs per PUSHB (pushb mode).
    #[arg(long, default_value_t = 100)]
    pub(crate) batch: usize,
    /// Size in bytes of the string argument of each job.
    #[arg(long, default_value_t = 16)]
    pub(crate) payload_bytes: usize,
    /// Queues, comma-separated: jobs are spread over them, workers FETCH from all of them.
    #[arg(long, default_value = "bench", value_delimiter = ',')]
    pub(crate) queues: Vec<String>,
    /// Time cap (s): no new command is sent after it and the run reports what it did.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) duration_secs: f64,
    /// Commands completed during the first seconds are not measured (they still count
    /// towards --jobs).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) warmup_secs: f64,
    /// Offered PUSH rate per second (latency mode), across all producer connections.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// Share of fetched jobs FAILed instead of ACKed (0..1; the workers of work, mixed and
    /// latency modes).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) fail_ratio: f64,
    /// Send FLUSH first: deletes ALL data on the server.
    #[arg(long)]
    pub(crate) flush: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// A second server: run the same scenario against --url (A) and this one (B) alternately,
    /// --rounds times each, and print every round, each side's median and the ratio A/B.
    /// Needs --flush (every run starts from an empty server). In work mode each run first
    /// fills the queues with PUSHB (not measured).
    #[arg(long, value_name = "URL")]
    pub(crate) compare: Option<String>,
    /// Rounds of --compare (each round runs A and B once; B goes first in even rounds).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Measure the disk first: fdatasync after an 8 KiB overwrite in this directory (put it on
    /// the server's disk; the default is the system's temporary directory), so the latencies
    /// can be read against the floor a durable server cannot go below.
    #[arg(long, value_name = "DIR")]
    pub(crate) disk: Option<std::path::PathBuf>,
    /// Do not measure the disk (a remote server's disk is not this machine's).
    #[arg(long, conflicts_with = "disk")]
    pub(crate) no_disk: bool,
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Where to connect, from `tcp://[:password@]host:port`.
struct Target {
    addr: String,
    password: Option<String>,
    /// The URL without the password, for reports.
    shown: String,
}

fn parse_url(url: &str) -> Result<Target> {
    let rest = if let Some(r) = url.strip_prefix("tcp://") {
        r
    } else if url.starts_with("tcp+tls://") {
        bail!("werk bench does not speak TLS (tcp+tls://)");
    } else if url.contains("://") {
        bail!("unsupported URL {url:?}: use tcp://[:password@]host:port");
    } else {
        url
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let password = userinfo
        .and_then(|u| u.split_once(':'))
        .map(|(_, p)| percent_decode(p))
        .transpose()?
        .filter(|p| !p.is_empty());
    if hostport.is_empty() {
        bail!("no host in URL {url:?}");
    }
    let has_port = match hostport.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => hostport.contains(':'),
    };
    let addr = if hostport.starts_with(':') {
        format!("127.0.0.1{hostport}")
    } else if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:7419")
    };
    Ok(Target {
        shown: format!("tcp://{addr}"),
        addr,
        password,
    })
}

/// A server URL as shown in reports: without its password (the text as given if unparsable).
pub(crate) fn shown_url(url: &str) -> String {
    parse_url(url.trim()).map_or_else(|_| url.to_string(), |t| t.shown)
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .context("bad %-escape in the URL's password")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the URL's password is not UTF-8")
}

/// One reply.
#[derive(Debug)]
enum Reply {
    /// `+...` (and `:n`, which no command uses)
    Simple(String),
    /// `-...`, the text after the dash
    Error(String),
    /// `$n` + n bytes
    Bulk(Vec<u8>),
    /// `$-1`
    Null,
}

impl Reply {
    fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "OK")
    }

    fn describe(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Error(s) => format!("-{s}"),
            Reply::Bulk(b) => {
                let text = String::from_utf8_lossy(b);
                let cut: String = text.chars().take(200).collect();
                format!("${} {cut}", b.len())
            }
            Reply::Null => "$-1".into(),
        }
    }
}

struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: BufWriter<OwnedWriteHalf>,
    line: Vec<u8>,
}

impl Conn {
    /// Connects and completes HI/HELLO (as a worker when `wid` is given).
    async fn open(addr: SocketAddr, password: Option<&str>, wid: Option<&str>) -> Result<Conn> {
        tokio::time::timeout(CONNECT_TIMEOUT, Conn::open_inner(addr, password, wid))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
    }

    async fn open_inner(
        addr: SocketAddr,
        password: Option<&str>,
        wid: Option<&str>,
    ) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut c = Conn {
            r: BufReader::with_capacity(64 * 1024, r),
            w: BufWriter::with_capacity(64 * 1024, w),
            line: Vec::with_capacity(256),
        };
        let hi = match c.read().await.context("no greeting from the server")? {
            Reply::Simple(s) if s.starts_with("HI ") => s,
            other => bail!("expected +HI, got {}", other.describe()),
        };
        let hi: Value = serde_json::from_str(&hi[3..]).context("the HI greeting is not JSON")?;
        let mut hello = json!({
            "hostname": hostname(),
            "pid": std::process::id(),
            "labels": ["werk-bench"],
            "v": 2,
        });
        if let Some(wid) = wid {
            hello["wid"] = json!(wid);
        }
        if let Some(salt) = hi.get("s").and_then(Value::as_str) {
            let Some(password) = password else {
                bail!("the server requires a password: use --url tcp://:PASSWORD@host:port");
            };
            let iterations = hi.get("i").and_then(Value::as_u64).unwrap_or(1);
            let iterations = u32::try_from(iterations).context("absurd iteration count in HI")?;
            hello["pwdhash"] = json!(werk_protocol::password_hash(password, salt, iterations));
        }
        match c.call(format!("HELLO {hello}").as_bytes()).await {
            Ok(r) if r.is_ok() => Ok(c),
            Ok(r) => bail!("HELLO refused: {}", r.describe()),
            Err(e) => bail!("HELLO got no reply: {e}"),
        }
    }

    async fn call(&mut self, line: &[u8]) -> std::io::Result<Reply> {
        self.w.write_all(line).await?;
        self.w.write_all(b"\r\n").await?;
        self.w.flush().await?;
        self.read().await
    }

    /// A call abandoned at `hard` (then `Ok(None)`: the time cap cut it).
    async fn call_until(&mut self, line: &[u8], hard: Instant) -> std::io::Result<Option<Reply>> {
        tokio::select! {
            r = self.call(line) => r.map(Some),
            _ = tokio::time::sleep_until(hard.into()) => Ok(None),
        }
    }

    async fn read(&mut self) -> std::io::Result<Reply> {
        use std::io::{Error, ErrorKind};
        self.line.clear();
        if self.r.read_until(b'\n', &mut self.line).await? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        let mut end = self.line.len();
        while end > 0 && matches!(self.line[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let text = String::from_utf8_lossy(&self.line[1.min(end)..end]).into_owned();
        match self.line.first() {
            Some(b'+') | Some(b':') => Ok(Reply::Simple(text)),
            Some(b'-') => Ok(Reply::Error(text)),
            Some(b'$') => {
                let n: i64 = text
                    .parse()
                    .map_err(|_| Error::other(format!("bad bulk length {text:?}")))?;
                if n < 0 {
                    return Ok(Reply::Null);
                }
                let mut buf = vec![0; n as usize + 2];
                self.r.read_exact(&mut buf).await?;
                if !buf.ends_with(b"\r\n") {
                    return Err(Error::other("bulk string not followed by CRLF"));
                }
                buf.truncate(n as usize);
                Ok(Reply::Bulk(buf))
            }
            _ => Err(Error::other(format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&self.line)
            ))),
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        if n > 0 {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    "werk-bench".into()
}

// ---------------------------------------------------------------------------------------------
// Shared state of a run
// ---------------------------------------------------------------------------------------------

/// What is measured. The first five are commands; the last two are derived latencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Push,
    Pushb,
    Fetch,
    Ack,
    Fail,
    /// Latency mode: from the time the PUSH was due by the schedule to its reply.
    PushScheduled,
    /// From PUSH (time in the job) to the FETCH that delivered it.
    E2e,
}

const CMDS: [Cmd; 7] = [
    Cmd::Push,
    Cmd::Pushb,
    Cmd::Fetch,
    Cmd::Ack,
    Cmd::Fail,
    Cmd::PushScheduled,
    Cmd::E2e,
];

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Push => "PUSH",
            Cmd::Pushb => "PUSHB",
            Cmd::Fetch => "FETCH",
            Cmd::Ack => "ACK",
            Cmd::Fail => "FAIL",
            Cmd::PushScheduled => "PUSH_scheduled",
            Cmd::E2e => "E2E",
        }
    }
}

/// Events that may count towards the throughput, depending on the mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Event {
    Pushed,
    Acked,
    Failed,
}

struct Shared {
    mode: Mode,
    jobs: u64,
    batch: usize,
    rate: f64,
    fail_ratio: f64,
    queues: Vec<String>,
    fetch_line: Vec<u8>,
    jid_prefix: String,
    /// The string argument as a JSON literal (with quotes).
    payload: String,
    start: Instant,
    measure_from: Instant,
    /// No new PUSH/PUSHB/FETCH after this.
    soft: Instant,
    /// Outstanding replies are abandoned at this.
    hard: Instant,
    /// Job numbers handed out to producers.
    next_job: AtomicU64,
    /// Workers' claims: a worker holds one while its FETCH is out, keeps it when it gets a job.
    claimed: AtomicU64,
    pushed: AtomicU64,
    rejected: AtomicU64,
    fetched: AtomicU64,
    empty_fetches: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
    io_errors: AtomicU64,
    /// A worker saw the queues empty (work mode).
    drained: AtomicBool,
    /// The server told a worker to quiet down or terminate.
    told_to_stop: AtomicBool,
    producers_left: AtomicUsize,
    /// Counted events (see `counts`) in the measured window, and when the last one completed.
    counted: AtomicU64,
    last_counted_ns: AtomicU64,
    /// Counted events since the start (warm-up included), for the progress bar.
    progress: AtomicU64,
    hists: Vec<Mutex<Histogram<u64>>>,
    error_samples: Mutex<Vec<String>>,
}

impl Shared {
    fn counts(&self, ev: Event) -> bool {
        match self.mode {
            Mode::Push | Mode::Pushb | Mode::Latency => ev == Event::Pushed,
            Mode::Work => ev == Event::Acked || ev == Event::Failed,
            Mode::Mixed => ev == Event::Acked,
        }
    }

    /// `n` events of kind `ev` completed at `at`; `measured` = inside the measured window.
    fn event(&self, ev: Event, n: u64, at: Instant, measured: bool) {
        let total = match ev {
            Event::Pushed => &self.pushed,
            Event::Acked => &self.acked,
            Event::Failed => &self.failed,
        };
        total.fetch_add(n, Relaxed);
        if self.counts(ev) {
            self.progress.fetch_add(n, Relaxed);
            if measured {
                self.counted.fetch_add(n, Relaxed);
                let ns = at.saturating_duration_since(self.start).as_nanos() as u64;
                self.last_counted_ns.fetch_max(ns, Relaxed);
            }
        }
    }

    fn measured(&self, at: Instant) -> bool {
        at >= self.measure_from
    }

    fn record(&self, cmd: Cmd, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.hists[cmd as usize]
            .lock()
            .unwrap()
            .saturating_record(us.min(HIST_MAX_US));
    }

    fn error(&self, cmd: Cmd, what: String) {
        self.errors.fetch_add(1, Relaxed);
        self.sample(format!("{}: {what}", cmd.name()));
    }

    fn io_error(&self, cmd: Cmd, e: std::io::Error) {
        self.io_errors.fetch_add(1, Relaxed);
        self.sample(format!("{}: connection lost: {e}", cmd.name()));
    }

    fn sample(&self, msg: String) {
        let mut s = self.error_samples.lock().unwrap();
        if s.len() < ERROR_SAMPLES {
            s.push(msg);
        }
    }

    /// `PUSH`-ready JSON of job number `n`, appended to `out`.
    fn write_job(&self, out: &mut Vec<u8>, n: u64) {
        let q = &self.queues[(n % self.queues.len() as u64) as usize];
        let _ = write!(
            out,
            r#"{{"jid":"{}{n}","jobtype":"WerkBench","queue":"{q}","args":[{},{}]}}"#,
            self.jid_prefix,
            self.payload,
            unix_micros()
        );
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Connection tasks
// ---------------------------------------------------------------------------------------------

/// PUSH mode producer, also mixed-mode producer.
async fn push_task(sh: Arc<Shared>, mut c: Conn) {
    let mut line = Vec::with_capacity(256);
    while Instant::now() < sh.soft {
        let n = sh.next_job.fetch_add(1, Relaxed);
        if n >= sh.jobs {
            break;
        }
        if !push_one(&sh, &mut c, &mut line, n, None).await {
            break;
        }
    }
    sh.producers_left.fetch_sub(1, Relaxed);
}

/// Sends one PUSH of job `n` and records it; `due` is its scheduled time in latency mode.
/// Returns false when the connection is done (time limit or I/O error).
async fn push_one(
    sh: &Shared,
    c: &mut Conn,
    line: &mut Vec<u8>,
    n: u64,
    due: Option<Instant>,
) -> bool {
    line.clear();
    line.extend_from_slice(b"PUSH ");
    sh.write_job(line, n);
    let t0 = Instant::now();
    match c.call_until(line, sh.hard).await {
        Ok(Some(r)) if r.is_ok() => {
            let t1 = Instant::now();
            let m = sh.measured(due.unwrap_or(t1));
            if m {
                sh.record(Cmd::Push, t1 - t0);
                if let Some(due) = due {
                    sh.record(Cmd::PushScheduled, t1 - due);
                }
            }
            sh.event(Event::Pushed, 1, t1, m);
            true
        }
        Ok(Some(r)) => {
            sh.error(Cmd::Push, r.describe());
            true
        }
        Ok(None) => false,
        Err(e) => {
            sh.io_error(Cmd::Push, e);
            false
        }
    }
}

/// PUSHB mode producer.
async fn pushb_task(sh: Arc<Shared>, mut c: Conn) {
    let mut line = Vec::with_capacity(sh.batch * (sh.payload.len() + 120) + 8);
    while Instant::now() < sh.soft {
        let first = sh.next_job.fetch_add(sh.batch as u64, Relaxed);
        if first >= sh.jobs {
            break;
        }
        let n = (sh.jobs - first).min(sh.batch as u64);
        line.clear();
        line.extend_from_slice(b"PUSHB [");
        for i in 0..n {
            if i > 0 {
                line.push(b',');
            }
            sh.write_job(&mut line, first + i);
        }
        line.push(b']');
        let t0 = Instant::now();
        match c.call_until(&line, sh.hard).await {
            Ok(Some(Reply::Bulk(b))) => {
                let t1 = Instant::now();
                let m = sh.measured(t1);
                if m {
                    sh.record(Cmd::Pushb, t1 - t0);
                }
                // A JSON object: jid → why that job was not pushed; `{}` when all were.
                let refused = match serde_json::from_slice::<Value>(&b) {
                    Ok(Value::Object(map)) => {
                        if let Some((jid, why)) = map.iter().next() {
                            sh.sample(format!("PUSHB: job {jid} refused: {why}"));
                        }
                        map.len() as u64
                    }
                    _ => {
                        sh.error(
                            Cmd::Pushb,
                            format!("unexpected reply {}", Reply::Bulk(b).describe()),
                        );
                        n
                    }
                };
                let refused = refused.min(n);
                if refused > 0 {
                    sh.rejected.fetch_add(refused, Relaxed);
                    sh.errors.fetch_add(refused, Relaxed);
                }
                sh.event(Event::Pushed, n - refused, t1, m);
            }
            Ok(Some(r)) => {
                sh.rejected.fetch_add(n, Relaxed);
                sh.error(Cmd::Pushb, r.describe());
            }
            Ok(None) => break,
            Err(e) => {
                sh.io_error(Cmd::Pushb, e);
                break;
            }
        }
    }
    sh.producers_left.fetch_sub(1, Relaxed);
}

/// Latency mode producer: job k is due at start + k / rate, whoever sends it.
async fn paced_task(sh: Arc<Shared>, mut c: Conn) {
    let mut line = Vec::with_capacity(256);
    loop {
        let k = sh.next_job.fetch_add(1, Relaxed);
        if k >= sh.jobs {
            break;
        }
        let due = sh.start + Duration::from_secs_f64(k as f64 / sh.rate);
        if due >= sh.soft {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if !push_one(&sh, &mut c, &mut line, k, Some(due)).await {
            break;
        }
    }
    sh.producers_left.fetch_sub(1, Relaxed);
}

/// FETCH + ACK/FAIL (work, mixed and latency modes).
async fn work_task(sh: Arc<Shared>, mut c: Conn, wid: String) {
    let mut rng = SmallRng::from_os_rng();
    let mut last_beat = Instant::now();
    let beat_line = format!(r#"BEAT {{"wid":"{wid}"}}"#).into_bytes();
    let e2e = matches!(sh.mode, Mode::Mixed | Mode::Latency);
    while Instant::now() < sh.soft {
        if last_beat.elapsed() >= BEAT_EVERY {
            last_beat = Instant::now();
            match c.call_until(&beat_line, sh.hard).await {
                Ok(Some(r)) if r.is_ok() => {}
                Ok(Some(Reply::Bulk(b))) => {
                    // {"state":"quiet"} or {"state":"terminate"}: stop, as a worker would.
                    sh.told_to_stop.store(true, Relaxed);
                    sh.sample(format!(
                        "BEAT: the server said {}",
                        String::from_utf8_lossy(&b)
                    ));
                    break;
                }
                Ok(Some(r)) => sh.sample(format!("BEAT: {}", r.describe())),
                Ok(None) => break,
                Err(e) => {
                    sh.io_error(Cmd::Fetch, e);
                    break;
                }
            }
        }
        if sh.claimed.fetch_add(1, Relaxed) >= sh.jobs {
            sh.claimed.fetch_sub(1, Relaxed);
            break;
        }
        let t0 = Instant::now();
        let job = match c.call_until(&sh.fetch_line, sh.hard).await {
            Ok(Some(Reply::Bulk(b))) => b,
            Ok(Some(Reply::Null)) => {
                sh.claimed.fetch_sub(1, Relaxed);
                sh.empty_fetches.fetch_add(1, Relaxed);
                if sh.mode == Mode::Work {
                    sh.drained.store(true, Relaxed);
                    break;
                }
                if sh.producers_left.load(Relaxed) == 0 {
                    break;
                }
                continue;
            }
            Ok(Some(r)) => {
                sh.claimed.fetch_sub(1, Relaxed);
                sh.error(Cmd::Fetch, r.describe());
                break;
            }
            Ok(None) => {
                sh.claimed.fetch_sub(1, Relaxed);
                break;
            }
            Err(e) => {
                sh.claimed.fetch_sub(1, Relaxed);
                sh.io_error(Cmd::Fetch, e);
                break;
            }
        };
        let t1 = Instant::now();
        let m = sh.measured(t1);
        sh.fetched.fetch_add(1, Relaxed);
        if m {
            sh.record(Cmd::Fetch, t1 - t0);
        }
        let parsed: Option<Value> = serde_json::from_slice(&job).ok();
        let Some(jid) = parsed
            .as_ref()
            .and_then(|v| v.get("jid"))
            .and_then(Value::as_str)
        else {
            sh.error(
                Cmd::Fetch,
                format!(
                    "a job without a jid: {}",
                    String::from_utf8_lossy(&job[..job.len().min(200)])
                ),
            );
            continue;
        };
        if e2e && m && jid.starts_with(&sh.jid_prefix) {
            let sent = parsed.as_ref().and_then(|v| v["args"][1].as_u64());
            if let Some(sent) = sent {
                sh.record(
                    Cmd::E2e,
                    Duration::from_micros(unix_micros().saturating_sub(sent)),
                );
            }
        }
        let fail = sh.fail_ratio > 0.0 && rng.random_bool(sh.fail_ratio);
        let jid_json = serde_json::to_string(jid).unwrap_or_default();
        let (cmd, line) = if fail {
            (
                Cmd::Fail,
                format!(
                    r#"FAIL {{"jid":{jid_json},"errtype":"WerkBench","message":"failure induced by werk bench --fail-ratio","backtrace":[]}}"#
                ),
            )
        } else {
            (Cmd::Ack, format!(r#"ACK {{"jid":{jid_json}}}"#))
        };
        // Sent even after the soft deadline: the job is already reserved by us.
        let t2 = Instant::now();
        match c.call_until(line.as_bytes(), sh.hard).await {
            Ok(Some(r)) if r.is_ok() => {
                let t3 = Instant::now();
                let m = sh.measured(t3);
                if m {
                    sh.record(cmd, t3 - t2);
                }
                let ev = if fail { Event::Failed } else { Event::Acked };
                sh.event(ev, 1, t3, m);
            }
            Ok(Some(r)) => sh.error(cmd, r.describe()),
            Ok(None) => break,
            Err(e) => {
                sh.io_error(cmd, e);
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

pub fn run(args: BenchArgs) -> Result<()> {
    if args.compare.is_some() {
        return crate::bench_compare::run(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let disk = crate::bench_compare::probe_disk_if_asked(&args)?;
    let (ok, _) = runtime.block_on(run_async(args, disk.as_ref(), true))?;
    // Connections still open are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if !ok {
        bail!("errors occurred (see the report)");
    }
    Ok(())
}

/// The validated plan of a run.
struct Plan {
    producers: usize,
    workers: usize,
    jobs: u64,
}

fn plan(args: &BenchArgs) -> Result<Plan> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(args.duration_secs > 0.0 && args.duration_secs.is_finite()) {
        bail!("--duration-secs must be positive");
    }
    if !(args.warmup_secs >= 0.0 && args.warmup_secs < args.duration_secs) {
        bail!("--warmup-secs must be in [0, --duration-secs)");
    }
    if !(0.0..=1.0).contains(&args.fail_ratio) {
        bail!("--fail-ratio must be in [0, 1]");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.queues.is_empty() {
        bail!("--queues needs at least one queue");
    }
    for q in &args.queues {
        if q.is_empty()
            || !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            bail!("invalid queue name {q:?} (allowed: letters, digits, . _ -)");
        }
    }
    if args.mode == Mode::Latency && !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be positive");
    }
    let (producers, workers) = match args.mode {
        Mode::Push | Mode::Pushb => (args.connections, 0),
        Mode::Work => (0, args.connections),
        Mode::Mixed | Mode::Latency => {
            let (p, w) = match (args.producers, args.workers) {
                (Some(p), Some(w)) => (p, w),
                (Some(p), None) => (p, args.connections.saturating_sub(p)),
                (None, Some(w)) => (args.connections.saturating_sub(w), w),
                (None, None) => (args.connections.div_ceil(2), args.connections / 2),
            };
            if p == 0 || w == 0 {
                bail!(
                    "{} mode needs at least one producer and one worker connection (got {p} and {w})",
                    args.mode.name()
                );
            }
            (p, w)
        }
    };
    let jobs = match (args.jobs, args.mode) {
        (Some(j), _) => j,
        (None, Mode::Latency) => ((args.rate * args.duration_secs * 0.8) as u64).max(1),
        (None, _) => 100_000,
    };
    Ok(Plan {
        producers,
        workers,
        jobs,
    })
}

/// One run of the scenario; prints its report when `print`, and returns whether it was free of
/// errors with its JSON summary.
pub(crate) async fn run_async(
    args: BenchArgs,
    disk: Option<&crate::bench_compare::Disk>,
    print: bool,
) -> Result<(bool, Value)> {
    let plan = plan(&args)?;
    let targets = args
        .url
        .split(',')
        .map(|u| parse_url(u.trim()))
        .collect::<Result<Vec<Target>>>()?;
    let mut addrs = Vec::with_capacity(targets.len());
    for target in &targets {
        let addr = tokio::net::lookup_host(&target.addr)
            .await
            .with_context(|| format!("cannot resolve {}", target.addr))?
            .next()
            .with_context(|| format!("{} resolves to nothing", target.addr))?;
        addrs.push((addr, target.password.clone()));
    }
    let shown = targets
        .iter()
        .map(|t| t.shown.as_str())
        .collect::<Vec<_>>()
        .join(",");

    if args.flush {
        let (addr, password) = &addrs[0];
        let mut c = Conn::open(*addr, password.as_deref(), None).await?;
        let r = c.call(b"FLUSH").await.context("FLUSH got no reply")?;
        if !r.is_ok() {
            bail!("FLUSH refused: {}", r.describe());
        }
    }

    // Connect everything before the clock starts.
    let run_tag: u64 = rand::rng().random::<u64>() & 0xffff_ffff_ffff;
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..plan.producers + plan.workers {
        let wid = (i >= plan.producers).then(|| format!("bench-{run_tag:012x}-{i}"));
        let (addr, pw) = addrs[i % addrs.len()].clone();
        connecting.spawn(async move {
            let c = Conn::open(addr, pw.as_deref(), wid.as_deref()).await;
            (i, wid, c)
        });
    }
    let mut conns: Vec<Option<(Option<String>, Conn)>> =
        (0..plan.producers + plan.workers).map(|_| None).collect();
    while let Some(res) = connecting.join_next().await {
        let (i, wid, c) = res.context("a connecting task failed")?;
        let c = c.with_context(|| format!("connection {} of {}", i + 1, conns.len()))?;
        conns[i] = Some((wid, c));
    }

    let hist = || {
        Mutex::new(Histogram::<u64>::new_with_bounds(1, HIST_MAX_US, 3).expect("histogram bounds"))
    };
    let start = Instant::now();
    let soft = start + Duration::from_secs_f64(args.duration_secs);
    let sh = Arc::new(Shared {
        mode: args.mode,
        jobs: plan.jobs,
        batch: args.batch,
        rate: args.rate,
        fail_ratio: args.fail_ratio,
        fetch_line: format!("FETCH {}", args.queues.join(" ")).into_bytes(),
        queues: args.queues.clone(),
        jid_prefix: format!("wb{run_tag:012x}-"),
        payload: serde_json::to_string(&"x".repeat(args.payload_bytes))?,
        start,
        measure_from: start + Duration::from_secs_f64(args.warmup_secs),
        soft,
        hard: soft + GRACE,
        next_job: AtomicU64::new(0),
        claimed: AtomicU64::new(0),
        pushed: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        fetched: AtomicU64::new(0),
        empty_fetches: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        io_errors: AtomicU64::new(0),
        drained: AtomicBool::new(false),
        told_to_stop: AtomicBool::new(false),
        producers_left: AtomicUsize::new(plan.producers),
        counted: AtomicU64::new(0),
        last_counted_ns: AtomicU64::new(0),
        progress: AtomicU64::new(0),
        hists: CMDS.iter().map(|_| hist()).collect(),
        error_samples: Mutex::new(Vec::new()),
    });

    let show_progress = !args.json && std::io::stdout().is_terminal();
    let progress = show_progress.then(|| {
        let pb = indicatif::ProgressBar::new(plan.jobs);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} {msg}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(match args.mode {
            Mode::Push | Mode::Pushb | Mode::Latency => "pushed",
            Mode::Work => "done",
            Mode::Mixed => "acked",
        });
        let sh = sh.clone();
        let pb2 = pb.clone();
        let ticker = tokio::spawn(async move {
            loop {
                pb2.set_position(sh.progress.load(Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (pb, ticker)
    });

    let mut tasks = tokio::task::JoinSet::new();
    for (wid, c) in conns.into_iter().flatten() {
        let sh = sh.clone();
        match (args.mode, wid) {
            (_, Some(wid)) => tasks.spawn(work_task(sh, c, wid)),
            (Mode::Pushb, None) => tasks.spawn(pushb_task(sh, c)),
            (Mode::Latency, None) => tasks.spawn(paced_task(sh, c)),
            (_, None) => tasks.spawn(push_task(sh, c)),
        };
    }
    // Every call is abandoned at sh.hard; this is only a safety net.
    let all_done = tokio::time::timeout_at((sh.hard + Duration::from_secs(2)).into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if all_done.is_err() {
        tasks.abort_all();
    }
    let end = Instant::now();
    if let Some((pb, ticker)) = progress {
        ticker.abort();
        pb.set_position(sh.progress.load(Relaxed));
        pb.finish_and_clear();
    }
    report(&args, &plan, &shown, &sh, end, disk, print)
}

/// Prints the report; returns whether the run was free of errors.
fn report(
    args: &BenchArgs,
    plan: &Plan,
    shown: &str,
    sh: &Shared,
    end: Instant,
    disk: Option<&crate::bench_compare::Disk>,
    print: bool,
) -> Result<(bool, Value)> {
    let pushed = sh.pushed.load(Relaxed);
    let rejected = sh.rejected.load(Relaxed);
    let acked = sh.acked.load(Relaxed);
    let failed = sh.failed.load(Relaxed);
    let errors = sh.errors.load(Relaxed);
    let io_errors = sh.io_errors.load(Relaxed);
    let counted = sh.counted.load(Relaxed);
    let last = sh.start + Duration::from_nanos(sh.last_counted_ns.load(Relaxed));
    // Throughput over the measured window up to the last counted event (a worker's final empty
    // FETCH, which waits for the server's fetch timeout, is not part of it).
    let window_end = if counted > 0 { last } else { end };
    let elapsed = window_end
        .saturating_duration_since(sh.measure_from)
        .as_secs_f64();
    let throughput = if elapsed > 0.0 {
        counted as f64 / elapsed
    } else {
        0.0
    };
    let complete = match args.mode {
        Mode::Push | Mode::Pushb => pushed + rejected == plan.jobs,
        Mode::Work => acked + failed == plan.jobs || sh.drained.load(Relaxed),
        Mode::Mixed | Mode::Latency => pushed + rejected == plan.jobs && acked + failed == pushed,
    };
    let counted_what = match args.mode {
        Mode::Push => "PUSHed jobs",
        Mode::Pushb => "jobs PUSHed by PUSHB",
        Mode::Latency => "PUSHed jobs (achieved rate)",
        Mode::Work => "ACKed + FAILed jobs",
        Mode::Mixed => "ACKed jobs",
    };
    let samples = sh.error_samples.lock().unwrap().clone();
    let lat: Vec<(Cmd, Histogram<u64>)> = CMDS
        .iter()
        .map(|c| (*c, sh.hists[*c as usize].lock().unwrap().clone()))
        .filter(|(_, h)| !h.is_empty())
        .collect();

    let out = {
        let mut latency = serde_json::Map::new();
        for (c, h) in &lat {
            latency.insert(
                c.name().into(),
                json!({
                    "count": h.len(),
                    "mean": (h.mean() * 10.0).round() / 10.0,
                    "p50": h.value_at_quantile(0.5),
                    "p90": h.value_at_quantile(0.9),
                    "p99": h.value_at_quantile(0.99),
                    "p999": h.value_at_quantile(0.999),
                    "max": h.max(),
                }),
            );
        }
        let out = json!({
            "mode": args.mode.name(),
            "url": shown,
            "connections": plan.producers + plan.workers,
            "producers": plan.producers,
            "workers": plan.workers,
            "jobs": plan.jobs,
            "batch": (args.mode == Mode::Pushb).then_some(args.batch),
            "rate": (args.mode == Mode::Latency).then_some(args.rate),
            "payload_bytes": args.payload_bytes,
            "queues": args.queues,
            "fail_ratio": args.fail_ratio,
            "warmup_s": args.warmup_secs,
            "duration_cap_s": args.duration_secs,
            "elapsed_s": (elapsed * 1e6).round() / 1e6,
            "wall_s": ((end - sh.start).as_secs_f64() * 1e3).round() / 1e3,
            "throughput_per_s": (throughput * 10.0).round() / 10.0,
            "throughput_counts": counted_what,
            "counted": counted,
            "pushed": pushed,
            "rejected": rejected,
            "fetched": sh.fetched.load(Relaxed),
            "empty_fetches": sh.empty_fetches.load(Relaxed),
            "acked": acked,
            "failed": failed,
            "errors": errors,
            "io_errors": io_errors,
            "error_samples": samples,
            "complete": complete,
            "told_to_stop": sh.told_to_stop.load(Relaxed),
            "latency_us": latency,
            "disk": disk.map(|d| d.json()),
        });
        out
    };
    if !print {
        // Summarised by the caller (--compare).
    } else if args.json {
        println!("{out}");
    } else {
        let mut o = std::io::stdout().lock();
        let who = match args.mode {
            Mode::Mixed | Mode::Latency => {
                format!(" ({} producers, {} workers)", plan.producers, plan.workers)
            }
            _ => String::new(),
        };
        writeln!(
            o,
            "werk bench: mode {} against {}, {} connections{who}, {} jobs, payload {} B, queues {}{}{}",
            args.mode.name(),
            shown,
            plan.producers + plan.workers,
            plan.jobs,
            args.payload_bytes,
            args.queues.join(","),
            if args.mode == Mode::Pushb { format!(", batch {}", args.batch) } else { String::new() },
            if args.mode == Mode::Latency { format!(", offered rate {}/s", args.rate) } else { String::new() },
        )?;
        writeln!(
            o,
            "pushed {pushed}, refused {rejected}, fetched {}, acked {acked}, failed {failed}, errors {errors}, broken connections {io_errors}{}",
            sh.fetched.load(Relaxed),
            if complete { "" } else { " — INCOMPLETE (time cap reached or errors)" }
        )?;
        writeln!(
            o,
            "elapsed {elapsed:.3} s{}, throughput {throughput:.1}/s ({counted_what})",
            if args.warmup_secs > 0.0 {
                format!(" after {} s warm-up", args.warmup_secs)
            } else {
                String::new()
            }
        )?;
        writeln!(o)?;
        writeln!(
            o,
            "{:<15} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency (µs)", "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        for (c, h) in &lat {
            writeln!(
                o,
                "{:<15} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
                c.name(),
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            )?;
        }
        if let Some(d) = disk {
            writeln!(o)?;
            d.print(&mut o)?;
            if let Some((_, h)) = lat.iter().find(|(c, _)| *c == Cmd::Push) {
                let q = |q| h.value_at_quantile(q) as f64;
                d.print_against(&mut o, "PUSH against the disk:", q(0.5), q(0.99))?;
            }
        }
        for s in &samples {
            writeln!(o, "error: {s}")?;
        }
    }
    if print && args.mode == Mode::Work && acked + failed == 0 {
        eprintln!("werk bench: no job was fetched: fill the queues first (e.g. --mode pushb)");
    }
    if print && !args.json && !complete && Instant::now() >= sh.soft {
        eprintln!(
            "werk bench: the {} s time cap ended the run before all jobs were done",
            args.duration_secs
        );
    }
    Ok((errors == 0 && io_errors == 0, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("tcp://:s%40cret@example.com:7500").unwrap();
        assert_eq!(t.addr, "example.com:7500");
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.shown, "tcp://example.com:7500");
        let t = parse_url("tcp://localhost").unwrap();
        assert_eq!(t.addr, "localhost:7419");
        assert!(t.password.is_none());
        let t = parse_url("tcp://user:pw@127.0.0.1:1/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:1");
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!(parse_url("tcp://:7419").unwrap().addr, "127.0.0.1:7419");
        assert_eq!(parse_url("tcp://[::1]:9").unwrap().addr, "[::1]:9");
        assert_eq!(parse_url("tcp://[::1]").unwrap().addr, "[::1]:7419");
        assert!(parse_url("tcp+tls://x:1").is_err());
        assert!(parse_url("http://x:1").is_err());
    }
}
