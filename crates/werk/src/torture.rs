//! `werk torture`: proves "never loses a job" by crashing a real server again and again.
//!
//! It starts `werk serve` (this same executable) on a data directory with compressed time
//! (short reservations, short retry delays, fast promotion and reaping), runs producers and
//! workers against it, SIGKILLs the server's whole process group at random moments and restarts
//! it, over and over. Every reply is written to a ledger. At the end it drains the server (all
//! jobs ACKed, dead jobs requeued and ACKed) and checks:
//!
//! * **lost**: PUSH answered `+OK`, yet the job was never ACKed with `+OK` (nor was an ACK for
//!   it cut off by a crash, which may have committed) — it vanished;
//! * **resurrected**: a FETCH *sent after* the job's ACK was answered `+OK` delivered it again;
//!   in a cluster run, a job that a producer's retried PUSH (its first answer lost) stored
//!   again after the job's ACK is counted apart, as allowed: the server no longer knew the
//!   jid, so the retry made a new job (at-least-once on the producer's side, as with Faktory);
//! * **re-delivered** (allowed, at-least-once): deliveries beyond the first and one per
//!   accepted FAIL — jobs that were in flight at a crash or whose reservation expired.
//!
//! It prints the figures and ends with `N passed, M failed`; the exit status is non-zero when a
//! check fails.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::Rng;

mod cluster;

#[derive(Args, Debug, Clone)]
pub struct TortureArgs {
    /// Kill-and-restart rounds.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Producer connections.
    #[arg(long, default_value_t = 3)]
    producers: usize,
    /// Worker connections.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Shortest run of traffic before a kill (ms).
    #[arg(long, default_value_t = 150)]
    min_run_ms: u64,
    /// Longest run of traffic before a kill (ms).
    #[arg(long, default_value_t = 1200)]
    max_run_ms: u64,
    /// Share of fetched jobs a worker FAILs instead of ACKing (0..1).
    #[arg(long, default_value_t = 0.15)]
    fail_ratio: f64,
    /// Share of pushed jobs scheduled 0.2–2 s ahead (0..1).
    #[arg(long, default_value_t = 0.15)]
    scheduled_ratio: f64,
    /// Time compression passed to the server (retry delays and reservations).
    #[arg(long, default_value_t = 0.01)]
    time_scale: f64,
    /// Producers pause while more than this many accepted jobs are not yet acknowledged, so
    /// the backlog (and the final drain) stays bounded however long the run.
    #[arg(long, default_value_t = 2000)]
    max_backlog: usize,
    /// Give up on the final drain after this long (s).
    #[arg(long, default_value_t = 120)]
    drain_timeout_secs: u64,
    /// Stop starting new rounds after this long (s); the drain still runs.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
    /// Data directory (default: a new temporary directory, removed at the end).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shell command run after each kill, before the restart; the run fails if it fails. The
    /// power-loss test uses it to drop the writes a power cut would lose
    /// (`crates/werk-powerloss`, docs/durability.md).
    #[arg(long)]
    after_kill: Option<String>,
    /// Serve from this PostgreSQL database (`werk serve --database-url`) instead of the
    /// embedded store: every restart connects to it again, so the run proves that killing a
    /// werk node loses nothing of what it acknowledged. The database is FLUSHed first.
    #[arg(
        long,
        env = "WERK_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database_url: Option<String>,
    /// Extra argument for `werk serve` (repeatable), e.g. `--serve-arg=--durability
    /// --serve-arg=none` to show what the power-loss test catches without the fsync.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Print a line per round.
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

/// One reply as the harness needs it.
#[derive(Debug)]
enum Reply {
    Ok,
    Err(String),
    Bulk(Option<String>),
}

struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr, wid: Option<&str>) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.set_nodelay(true)?;
        let mut c = Client {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        };
        match c.read()? {
            Reply::Ok | Reply::Err(_) | Reply::Bulk(_) => {} // the HI greeting
        }
        let hello = match wid {
            Some(w) => format!(r#"HELLO {{"v":2,"wid":"{w}","hostname":"torture","pid":1}}"#),
            None => r#"HELLO {"v":2}"#.to_string(),
        };
        match c.call(&hello)? {
            Reply::Ok => Ok(c),
            other => Err(std::io::Error::other(format!("HELLO refused: {other:?}"))),
        }
    }

    fn call(&mut self, line: &str) -> std::io::Result<Reply> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\r\n")?;
        self.read()
    }

    fn read(&mut self) -> std::io::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        match line.as_bytes().first() {
            Some(b'+') => Ok(if line == "+OK" {
                Reply::Ok
            } else {
                Reply::Bulk(Some(line[1..].to_string()))
            }),
            Some(b'-') => Ok(Reply::Err(line[1..].to_string())),
            Some(b'$') => {
                let n: i64 = line[1..].parse().map_err(std::io::Error::other)?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut buf = vec![0; n as usize + 2];
                self.reader.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Ok(Reply::Bulk(Some(
                    String::from_utf8_lossy(&buf).into_owned(),
                )))
            }
            _ => Err(std::io::Error::other(format!("unexpected reply {line:?}"))),
        }
    }
}

#[derive(Default)]
struct Ledger {
    pushed_ok: HashSet<String>,
    push_unknown: u64,
    push_err: u64,
    /// When each jid's first ACK was answered `+OK`.
    acked_ok: HashMap<String, Instant>,
    /// Jids whose ACK was sent but not answered (the server died): they may be gone legitimately.
    ack_unknown: HashSet<String>,
    fails_ok: HashMap<String, u32>,
    fail_unknown: u64,
    deliveries: HashMap<String, u32>,
    resurrected: Vec<String>,
    /// Cluster mode: when a PUSH of the jid was last sent again (after a lost answer or an
    /// `-ERR`).
    retry_sent: HashMap<String, Instant>,
    /// Cluster mode: the jids delivered per cron tick (the job's `created_at`): one each.
    cron: HashMap<String, HashSet<String>>,
    /// Cluster mode: the success-callback jids delivered per batch token (the callback's
    /// first argument): one for every committed batch, none for the others.
    callbacks: HashMap<String, HashSet<String>>,
    /// Batch tokens whose `BATCH COMMIT` was answered `+OK`.
    committed: HashSet<String>,
    /// Batch tokens whose `BATCH COMMIT` outcome is unknown (not checked).
    commit_unknown: HashSet<String>,
}

struct World {
    /// The nodes; clients connect to one at random (a single server: one address).
    addrs: RwLock<Vec<SocketAddr>>,
    /// Cluster mode: a PUSH whose reply was lost or refused is sent again with the same jid
    /// (to any node) until it is answered `+OK`, as real clients retry; an `-ERR` answer is a
    /// transient failure (a node without its database), counted in `transient`.
    cluster: bool,
    transient: AtomicU64,
    /// Set by the cluster harness at a primary's death: (when, the first PUSH `+OK` after).
    watch: Mutex<Option<(Instant, Option<Instant>)>>,
    ledger: Mutex<Ledger>,
    producing: AtomicBool,
    stop: AtomicBool,
    /// Workers FAIL only while this is set (off during the final drain).
    failing: AtomicBool,
    next_jid: AtomicU64,
    run_id: u64,
}

struct Server {
    child: Child,
}

impl Server {
    fn start(
        exe: &PathBuf,
        dir: &std::path::Path,
        addr: SocketAddr,
        args: &TortureArgs,
    ) -> Result<Server> {
        // Cluster mode: each node's log goes to `serve.log` in its directory (the database's
        // failures are expected there, by the hundred).
        let stderr = if args.cluster.cluster {
            Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("serve.log"))
                    .context("cannot open the node's log")?,
            )
        } else {
            Stdio::inherit()
        };
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "-b", &addr.to_string(), "-w", ":0", "-d"])
            .arg(dir)
            .args([
                "--scan-interval-ms",
                "50",
                "--reap-interval-ms",
                "50",
                "--fetch-timeout-ms",
                "300",
            ])
            .args(["--time-scale", &args.time_scale.to_string(), "-l", "warn"])
            .args(&args.serve_args)
            .args(
                args.database_url
                    .iter()
                    .flat_map(|u| ["--database-url", u.as_str()]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0);
        let mut child = cmd.spawn().context("cannot start werk serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("werk listening on ") {
            let _ = child.kill();
            bail!("werk serve did not start (said {line:?})");
        }
        Ok(Server { child })
    }

    /// SIGKILL the server's whole process group, as a crash or OOM kill would.
    fn kill(mut self) {
        // SAFETY: signalling a process group we created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        // SAFETY: as above, a graceful SIGTERM.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn free_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl World {
    fn new(addrs: Vec<SocketAddr>, cluster: bool, run_id: u64) -> World {
        World {
            addrs: RwLock::new(addrs),
            cluster,
            transient: AtomicU64::new(0),
            watch: Mutex::new(None),
            ledger: Mutex::new(Ledger::default()),
            producing: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            failing: AtomicBool::new(true),
            next_jid: AtomicU64::new(0),
            run_id,
        }
    }

    /// A node at random.
    fn pick(&self) -> SocketAddr {
        let addrs = self.addrs.read().unwrap();
        addrs[rand::rng().random_range(0..addrs.len())]
    }

    /// Notes a PUSH of a new jid, sent at `sent` and answered `+OK` now (for the
    /// unavailability after a failover: only a first attempt sent after the primary's death
    /// counts — a retry may be answered from what is stored already, without a commit).
    fn push_answered(&self, sent: Instant) {
        let mut w = self.watch.lock().unwrap();
        if let Some((since, first @ None)) = &mut *w {
            if sent > *since {
                *first = Some(Instant::now());
            }
        }
    }
}

fn connect_retrying(world: &World, wid: Option<&str>) -> Option<Client> {
    while !world.stop.load(Ordering::Relaxed) {
        let addr = world.pick();
        match Client::connect(addr, wid) {
            Ok(c) => return Some(c),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    None
}

fn producer(world: Arc<World>, ratio_sched: f64, max_backlog: usize) {
    let mut rng = rand::rng();
    let mut client: Option<Client> = None;
    while !world.stop.load(Ordering::Relaxed) {
        if !world.producing.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        let backlog = {
            let l = world.ledger.lock().unwrap();
            l.pushed_ok.len().saturating_sub(l.acked_ok.len())
        };
        if backlog > max_backlog {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let Some(c) = client.as_mut() else {
            client = connect_retrying(&world, None);
            continue;
        };
        let jid = format!(
            "t{}-{:09}",
            world.run_id,
            world.next_jid.fetch_add(1, Ordering::Relaxed)
        );
        let retry = rng.random_range(1..=3);
        let at = if rng.random_bool(ratio_sched) {
            let when =
                chrono::Utc::now() + chrono::Duration::milliseconds(rng.random_range(200..2000));
            format!(
                r#","at":"{}""#,
                when.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )
        } else {
            String::new()
        };
        let line = format!(
            r#"PUSH {{"jid":"{jid}","jobtype":"Torture","args":[{n}],"queue":"q{q}","retry":{retry},"reserve_for":60{at}}}"#,
            n = rng.random_range(0..1_000_000),
            q = rng.random_range(0..2)
        );
        if world.cluster {
            client = push_until_answered(&world, client.take(), &jid, &line);
            continue;
        }
        match c.call(&line) {
            Ok(Reply::Ok) => {
                world.ledger.lock().unwrap().pushed_ok.insert(jid);
            }
            Ok(other) => {
                world.ledger.lock().unwrap().push_err += 1;
                eprintln!("torture: PUSH refused: {other:?}");
            }
            Err(_) => {
                world.ledger.lock().unwrap().push_unknown += 1;
                client = None;
            }
        }
    }
}

/// Cluster mode: sends `line` (a PUSH of `jid`) until a node answers `+OK`, reconnecting to
/// a random node after a lost reply or an `-ERR`. Returns the connection to go on with.
fn push_until_answered(
    world: &World,
    mut client: Option<Client>,
    jid: &str,
    line: &str,
) -> Option<Client> {
    let mut first = true;
    loop {
        if world.stop.load(Ordering::Relaxed) {
            // Sent, never answered: the job may or may not exist; the ledger does not count it.
            world.ledger.lock().unwrap().push_unknown += 1;
            return None;
        }
        let Some(c) = client.as_mut() else {
            client = connect_retrying(world, None);
            continue;
        };
        let sent = Instant::now();
        if !first {
            world
                .ledger
                .lock()
                .unwrap()
                .retry_sent
                .insert(jid.to_string(), sent);
        }
        match c.call(line) {
            Ok(Reply::Ok) => {
                world
                    .ledger
                    .lock()
                    .unwrap()
                    .pushed_ok
                    .insert(jid.to_string());
                if first {
                    world.push_answered(sent);
                }
                return client;
            }
            Ok(Reply::Err(_)) | Err(_) => {
                world.transient.fetch_add(1, Ordering::Relaxed);
                first = false;
                client = None;
                thread::sleep(Duration::from_millis(10));
            }
            Ok(other) => {
                world.ledger.lock().unwrap().push_err += 1;
                eprintln!("torture: PUSH answered {other:?}");
                return None;
            }
        }
    }
}

fn jid_of(payload: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    v.get("jid")?.as_str().map(str::to_string)
}

/// Notes a delivered cron job (per tick) or batch callback (per batch token).
fn note_special(l: &mut Ledger, payload: &str, jid: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) else {
        return;
    };
    let key = match v["jobtype"].as_str() {
        Some(cluster::CRON_JOBTYPE) => v["created_at"].as_str().map(|t| (true, t.to_string())),
        Some(cluster::CALLBACK_JOBTYPE) => v["args"][0].as_str().map(|t| (false, t.to_string())),
        _ => None,
    };
    if let Some((cron, key)) = key {
        let map = if cron { &mut l.cron } else { &mut l.callbacks };
        map.entry(key).or_default().insert(jid.to_string());
    }
}

fn worker(world: Arc<World>, n: usize, fail_ratio: f64) {
    let mut rng = rand::rng();
    let wid = format!("torture-{}-{n}", world.run_id);
    let mut client: Option<Client> = None;
    while !world.stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_mut() else {
            client = connect_retrying(&world, Some(&wid));
            continue;
        };
        let sent = Instant::now();
        let payload = match c.call("FETCH q0 q1") {
            Ok(Reply::Bulk(Some(p))) => p,
            Ok(Reply::Bulk(None)) => continue,
            Ok(other) => {
                if world.cluster {
                    world.transient.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("torture: FETCH answered {other:?}");
                }
                client = None;
                continue;
            }
            Err(_) => {
                client = None;
                continue;
            }
        };
        let Some(jid) = jid_of(&payload) else {
            eprintln!("torture: FETCH returned a job without jid: {payload}");
            continue;
        };
        {
            let mut l = world.ledger.lock().unwrap();
            if world.cluster {
                note_special(&mut l, &payload, &jid);
            }
            *l.deliveries.entry(jid.clone()).or_default() += 1;
            if l.acked_ok.get(&jid).is_some_and(|acked| *acked < sent) {
                l.resurrected.push(jid.clone());
            }
        }
        let fail = world.failing.load(Ordering::Relaxed) && rng.random_bool(fail_ratio);
        let line = if fail {
            format!(r#"FAIL {{"jid":"{jid}","errtype":"Torture","message":"induced failure"}}"#)
        } else {
            format!(r#"ACK {{"jid":"{jid}"}}"#)
        };
        match c.call(&line) {
            Ok(Reply::Ok) => {
                let mut l = world.ledger.lock().unwrap();
                if fail {
                    *l.fails_ok.entry(jid).or_default() += 1;
                } else {
                    l.acked_ok.entry(jid).or_insert_with(Instant::now);
                }
            }
            // A FAIL for a job whose reservation expired meanwhile: not an error.
            Ok(Reply::Err(e)) if fail && e.starts_with("ERR Job not found") => {}
            Ok(other) if !(world.cluster && matches!(other, Reply::Err(_))) => eprintln!(
                "torture: {} answered {other:?}",
                if fail { "FAIL" } else { "ACK" }
            ),
            // No answer (the server died), or, in a cluster, a node whose database failed: the
            // ACK may have committed (an unknown COMMIT outcome is answered -ERR too); the job
            // may be gone legitimately.
            answer => {
                if answer.is_ok() {
                    world.transient.fetch_add(1, Ordering::Relaxed);
                }
                let mut l = world.ledger.lock().unwrap();
                if fail {
                    l.fail_unknown += 1;
                } else {
                    l.ack_unknown.insert(jid);
                }
                client = None;
            }
        }
    }
}

/// INFO's counts: (enqueued, scheduled, retries, working, dead).
fn counts(c: &mut Client) -> std::io::Result<(u64, u64, u64, u64, u64)> {
    let Reply::Bulk(Some(text)) = c.call("INFO")? else {
        return Err(std::io::Error::other("INFO did not answer a bulk string"));
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(std::io::Error::other)?;
    let f = &v["faktory"];
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    Ok((
        n(&f["total_enqueued"]),
        n(&f["sets"]["scheduled"]),
        n(&f["sets"]["retries"]),
        n(&f["sets"]["working"]),
        n(&f["sets"]["dead"]),
    ))
}

pub fn run(args: TortureArgs) -> Result<()> {
    if args.min_run_ms > args.max_run_ms {
        bail!("--min-run-ms must not exceed --max-run-ms");
    }
    if args.cluster.cluster {
        return cluster::run(args);
    }
    let exe = std::env::current_exe().context("cannot find the werk executable")?;
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    let started = Instant::now();
    let world = Arc::new(World::new(vec![free_addr()?], false, run_id()));
    let addr = world.pick();
    if args.database_url.is_some() {
        // A shared database may hold jobs of earlier runs, which the ledger knows nothing of.
        let server = start_retrying(&exe, &dir, addr, &args)?;
        let mut admin = Client::connect(addr, None).context("cannot connect to FLUSH")?;
        match admin.call("FLUSH")? {
            Reply::Ok => {}
            other => bail!("FLUSH of the database failed: {other:?}"),
        }
        drop(admin);
        server.stop();
    }
    let threads = start_clients(&world, &args);

    let mut rng = rand::rng();
    let mut kills = 0u32;
    for round in 1..=args.rounds {
        if started.elapsed() > Duration::from_secs(args.max_secs) {
            println!("torture: time cap reached after {} rounds", round - 1);
            break;
        }
        let server = start_retrying(&exe, &dir, addr, &args)?;
        let run = rng.random_range(args.min_run_ms..=args.max_run_ms);
        thread::sleep(Duration::from_millis(run));
        server.kill();
        kills += 1;
        if let Some(cmd) = &args.after_kill {
            let st = Command::new("sh")
                .args(["-c", cmd])
                .status()
                .with_context(|| format!("cannot run --after-kill {cmd:?}"))?;
            if !st.success() {
                bail!("--after-kill {cmd:?} failed ({st}) after kill {kills}");
            }
        }
        if args.verbose {
            let l = world.ledger.lock().unwrap();
            println!(
                "round {round}: killed after {run} ms; pushed {} acked {}",
                l.pushed_ok.len(),
                l.acked_ok.len()
            );
        }
    }

    // Final drain: no new jobs, no induced failures; requeue the dead until everything is acked.
    world.producing.store(false, Ordering::Relaxed);
    world.failing.store(false, Ordering::Relaxed);
    let server = start_retrying(&exe, &dir, addr, &args)?;
    let drained = drain(&world, &args)?;
    world.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    server.stop();
    let extra = if args.after_kill.is_some() {
        format!(", after-kill commands {kills}")
    } else {
        String::new()
    };
    println!(
        "torture: rounds {kills}, kills {kills}{extra}, elapsed {:.1} s",
        started.elapsed().as_secs_f64()
    );
    verdict(&world, &args, drained, &[])
}

/// A run's id, part of every jid and worker id.
fn run_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id())
}

/// Starts the producer and worker threads.
fn start_clients(world: &Arc<World>, args: &TortureArgs) -> Vec<thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for _ in 0..args.producers {
        let w = world.clone();
        let (ratio, max_backlog) = (args.scheduled_ratio, args.max_backlog);
        threads.push(thread::spawn(move || producer(w, ratio, max_backlog)));
    }
    for n in 0..args.workers {
        let w = world.clone();
        let ratio = args.fail_ratio;
        threads.push(thread::spawn(move || worker(w, n, ratio)));
    }
    threads
}

/// The final drain: no new jobs, no induced failures; the dead are requeued until everything
/// is acknowledged. Returns whether it drained before the timeout. The caller stops the
/// clients afterwards.
fn drain(world: &World, args: &TortureArgs) -> Result<bool> {
    world.producing.store(false, Ordering::Relaxed);
    world.failing.store(false, Ordering::Relaxed);
    let drain_started = Instant::now();
    let mut admin = loop {
        match Client::connect(world.pick(), None) {
            Ok(c) => break c,
            Err(e) if drain_started.elapsed() > Duration::from_secs(30) => {
                return Err(e).context("cannot connect for the drain")
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut quiet_checks = 0;
    let drained = loop {
        if drain_started.elapsed() > Duration::from_secs(args.drain_timeout_secs) {
            break false;
        }
        thread::sleep(Duration::from_millis(200));
        let (q, s, r, w, d) = counts(&mut admin)?;
        if q + s + r + w == 0 && d > 0 {
            admin.call(r#"MUTATE {"cmd":"requeue","target":"dead"}"#)?;
        }
        if q + s + r + w + d == 0 {
            quiet_checks += 1;
            if quiet_checks >= 3 {
                break true;
            }
        } else {
            quiet_checks = 0;
        }
    };
    Ok(drained)
}

/// Prints the ledger's figures and checks (plus `extra` checks of the caller's); fails when
/// one fails.
fn verdict(world: &World, args: &TortureArgs, drained: bool, extra: &[bool]) -> Result<()> {
    let l = world.ledger.lock().unwrap();
    // Lost: accepted, never acknowledged, and no ACK of ours could have removed it either.
    let lost: Vec<&String> = l
        .pushed_ok
        .iter()
        .filter(|j| !l.acked_ok.contains_key(*j) && !l.ack_unknown.contains(*j))
        .collect();
    let mut redelivered = 0u64;
    for (jid, n) in &l.deliveries {
        let expected = 1 + l.fails_ok.get(jid).copied().unwrap_or(0);
        redelivered += u64::from(n.saturating_sub(expected));
    }
    // A delivery after the ACK of a job that a producer's retried PUSH (its first answer lost)
    // stored again after that ACK: the server no longer knew the jid, so the retry made a new
    // job — at-least-once on the producer's side, as with Faktory. Not a resurrection.
    let (recreated, resurrected): (Vec<&String>, Vec<&String>) = l
        .resurrected
        .iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .partition(|j| match (l.retry_sent.get(*j), l.acked_ok.get(*j)) {
            (Some(pushed), Some(acked)) => pushed > acked,
            _ => false,
        });
    let deliveries: u64 = l.deliveries.values().map(|n| u64::from(*n)).sum();
    let fails: u64 = l.fails_ok.values().map(|n| u64::from(*n)).sum();
    println!(
        "torture: pushed {} (+{} unanswered at a crash, {} refused), acked {} ({} unanswered), fails {} ({} unanswered), deliveries {}",
        l.pushed_ok.len(),
        l.push_unknown,
        l.push_err,
        l.acked_ok.len(),
        l.ack_unknown.len(),
        fails,
        l.fail_unknown,
        deliveries
    );
    if drained {
        println!(
            "torture: lost {}, resurrected {}, re-delivered {} (at-least-once, allowed), drained yes",
            lost.len(),
            resurrected.len(),
            redelivered,
        );
    } else {
        // Without a complete drain, jobs still queued cannot be told from lost ones.
        println!(
            "torture: NOT DRAINED within {} s: {} accepted jobs not yet acknowledged (lost unknown), resurrected {}, re-delivered {}",
            args.drain_timeout_secs,
            lost.len(),
            resurrected.len(),
            redelivered,
        );
    }
    for jid in lost.iter().take(if drained { 10 } else { 0 }) {
        println!("torture: LOST {jid}");
    }
    if world.cluster {
        println!(
            "torture: stored again by a producer's retry sent after the job's ACK (allowed): {}",
            recreated.len()
        );
    }
    for jid in resurrected.iter().take(10) {
        println!("torture: RESURRECTED {jid}");
    }
    let mut checks = vec![
        lost.is_empty(),
        resurrected.is_empty(),
        drained,
        l.push_err == 0,
        !l.pushed_ok.is_empty() && !l.acked_ok.is_empty(),
    ];
    checks.extend_from_slice(extra);
    let passed = checks.iter().filter(|c| **c).count();
    println!("{passed} passed, {} failed", checks.len() - passed);
    if passed != checks.len() {
        bail!("torture checks failed");
    }
    Ok(())
}

/// Starts the server, retrying briefly while the killed one's port or lock is released.
fn start_retrying(
    exe: &PathBuf,
    dir: &std::path::Path,
    addr: SocketAddr,
    args: &TortureArgs,
) -> Result<Server> {
    let mut last = None;
    for _ in 0..50 {
        match Server::start(exe, dir, addr, args) {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = Some(e);
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("cannot start werk serve")))
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!("werk-torture-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(TempDir(p));
        }
    }
    bail!("cannot create a temporary directory in {}", base.display())
}
