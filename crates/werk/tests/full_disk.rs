//! A full disk, end to end: the server runs with its data directory on an 8 MiB tmpfs that lives
//! in a private mount namespace (`unshare --mount`), so the mount disappears with the process and
//! nothing is ever left mounted on the host. The test fills the filesystem with 50 KB jobs and a
//! filler file, checks that every refusal is a clean `-ERR` and that every `+OK` job exists,
//! frees space and checks that the same server accepts jobs again, and finally drains the queue
//! (every accepted job delivered exactly once) and restarts a server on a snapshot of the files
//! taken before the drain (nothing accepted is missing from disk, and the database is intact).
//!
//! Needs root (mount) and util-linux (`unshare`, `nsenter`); without them the test FAILS with an
//! explanation rather than passing silently.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const TMPFS_SIZE: &str = "8m";
/// Size of each big job's payload.
const BIG: usize = 50_000;

/// `name` is an executable somewhere on PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Run a command with a time limit; its output.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{desc}: {e}")),
        Err(_) => {
            // SAFETY: signalling the child we spawned (still unreaped: the waiter holds it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{desc} did not finish within {limit:?}");
        }
    }
}

/// Preconditions, checked loudly: this test must not pass by doing nothing.
fn require_root_and_mounts(scratch: &Path) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "full_disk needs root to mount a small tmpfs (running as uid {euid}); run the suite as root \
         (CI does) — refusing to pass without testing anything"
    );
    for tool in [
        "unshare", "nsenter", "mount", "findmnt", "sh", "dd", "df", "rm",
    ] {
        assert!(
            on_path(tool),
            "full_disk needs `{tool}` on PATH (util-linux/coreutils)"
        );
    }
    let probe = scratch.join("probe");
    fs::create_dir_all(&probe).unwrap();
    let out = run(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size=1m werk-probe "$1" && df -k "$1""#)
            .arg("probe")
            .arg(&probe),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "full_disk cannot mount a tmpfs in a private mount namespace ({}): {}{}\n(the test needs \
         CAP_SYS_ADMIN; in a container run it --privileged)",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_dir(&probe).unwrap().count(),
        0,
        "the probe mount leaked into the host namespace"
    );
}

/// Is `path` a mount point in this process's mount namespace?
fn mounted_here(path: &Path) -> bool {
    let p = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

/// `werk serve` with its data directory on a fresh tmpfs in its own mount namespace.
struct NsServer {
    child: Option<Child>,
    addr: SocketAddr,
    pid: i32,
    data_dir: PathBuf,
    log_path: PathBuf,
}

impl NsServer {
    fn start(dir: &Path, extra: &[&str]) -> NsServer {
        let data_dir = dir.join("data");
        fs::create_dir_all(&data_dir).unwrap();
        let log_path = dir.join("werk-ns.log");
        let log = File::create(&log_path).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                r#"d="$1"; shift; mount -t tmpfs -o size={TMPFS_SIZE} werk-full-disk "$d" || exit 97; exec "$@""#
            ))
            .arg("werk-ns")
            .arg(&data_dir)
            .arg(WERK)
            .args(["serve", "-b", "127.0.0.1:0", "-w", ":0", "-d"])
            .arg(&data_dir)
            .args(extra)
            .env_remove("FAKTORY_PASSWORD")
            .env_remove("FAKTORY_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn unshare");
        // unshare and sh exec in place: the child's pid is werk's pid.
        let pid = child.id() as i32;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => break l,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(st)) = child.try_wait() {
                        panic!(
                            "werk (in its mount namespace) exited at startup: {st}; log:\n{}",
                            tail(&log_path, 40)
                        );
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "werk (in its mount namespace) did not start; log:\n{}",
                        tail(&log_path, 40)
                    );
                }
            }
        };
        let addr: SocketAddr = line
            .strip_prefix("werk listening on ")
            .unwrap_or_else(|| panic!("unexpected stdout line {line:?}"))
            .parse()
            .unwrap();
        NsServer {
            child: Some(child),
            addr,
            pid,
            data_dir,
            log_path,
        }
    }

    /// Runs a command inside the server's mount namespace.
    fn ns(&self, args: &[&str]) -> Output {
        run(
            Command::new("nsenter")
                .arg("-t")
                .arg(self.pid.to_string())
                .arg("-m")
                .arg("--")
                .args(args),
            Duration::from_secs(30),
        )
    }

    fn path(&self, name: &str) -> String {
        self.data_dir.join(name).to_string_lossy().into_owned()
    }

    /// Free bytes on the tmpfs, as `df` inside the namespace sees it.
    fn free_bytes(&self) -> u64 {
        let dir = self.data_dir.to_string_lossy().into_owned();
        let out = self.ns(&["df", "-B1", "--output=avail", &dir]);
        assert!(
            out.status.success(),
            "df: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df output: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The data directory as seen from inside the namespace, reachable from the host through
    /// /proc/<pid>/root.
    fn ns_data_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
            .join(self.data_dir.strip_prefix("/").unwrap())
    }

    fn conn(&self) -> Conn {
        let mut c = Conn::connect(self.addr);
        c.handshake(None, None);
        c
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "---- werk log ({}) ----\n{}\n---- end ----",
                self.log_path.display(),
                tail(&self.log_path, 60)
            );
        }
    }
}

fn big_job(j: &str, n: usize) -> Value {
    json!({"jid": j, "jobtype": "Big", "queue": "fill", "args": ["x".repeat(BIG), n]})
}

fn small_job(j: &str, n: usize) -> Value {
    json!({"jid": j, "jobtype": "Small", "queue": "fill", "args": [n]})
}

/// What the test knows about every job it tried to store.
#[derive(Default)]
struct Ledger {
    /// jid → answered +OK (or accepted in a PUSHB reply).
    accepted: BTreeSet<String>,
    /// jid → refusal text.
    refused: BTreeMap<String, String>,
    /// ACK answered +OK.
    acked: BTreeSet<String>,
    /// jid → number of deliveries seen.
    delivered: BTreeMap<String, u32>,
}

impl Ledger {
    #[track_caller]
    fn push(&mut self, c: &mut Conn, job: &Value) -> Reply {
        let j = job["jid"].as_str().unwrap().to_string();
        let r = c.push(job);
        match &r {
            r if r.is_ok() => {
                self.accepted.insert(j);
            }
            Reply::Error(e) => {
                assert!(e.starts_with("ERR "), "PUSH {j}: malformed error {e:?}");
                self.refused.insert(j, e.clone());
            }
            other => panic!("PUSH {j}: neither +OK nor -ERR: {other:?}"),
        }
        r
    }

    /// Record a fetched job; it must be one that was accepted and never acknowledged.
    #[track_caller]
    fn delivered(&mut self, job: &Value) -> String {
        let j = job["jid"].as_str().expect("jid").to_string();
        assert!(
            self.accepted.contains(&j),
            "FETCH delivered {j}, whose PUSH was refused ({:?}) — a refused job was stored",
            self.refused.get(&j)
        );
        assert!(
            !self.acked.contains(&j),
            "{j} was delivered again after its ACK was answered +OK"
        );
        *self.delivered.entry(j.clone()).or_default() += 1;
        j
    }
}

#[test]
fn full_disk_refuses_cleanly_recovers_without_restart_and_loses_nothing() {
    let tmp = tempfile::Builder::new()
        .prefix("werk-full-disk-")
        .tempdir()
        .unwrap();
    require_root_and_mounts(tmp.path());

    let mut s = NsServer::start(tmp.path(), &["--fetch-timeout-ms", "300"]);
    let mut c = s.conn();
    let mut l = Ledger::default();
    assert!(
        !mounted_here(&s.data_dir),
        "the tmpfs must not be visible in the test's mount namespace"
    );
    let fstype = s.ns(&[
        "findmnt",
        "-n",
        "-o",
        "FSTYPE",
        &s.data_dir.to_string_lossy(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&fstype.stdout).trim(),
        "tmpfs",
        "data dir is not on the tmpfs: {fstype:?}"
    );
    println!(
        "full disk: werk (pid {}) on an {TMPFS_SIZE} tmpfs, {} bytes free at start",
        s.pid,
        s.free_bytes()
    );

    // A 3 MiB reserve file, deleted later to free space for real.
    let reserve = s.path("reserve");
    let out = s.ns(&[
        "dd",
        "if=/dev/zero",
        &format!("of={reserve}"),
        "bs=1M",
        "count=3",
        "conv=fsync",
    ]);
    assert!(
        out.status.success(),
        "dd reserve: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 1. Push 50 KB jobs until refused: first three on their own (one of them stays reserved
    //    across the full-disk episode, to ACK it while the disk is full), then from four
    //    connections at once, so that group commits hit the full disk too.
    for n in 0..3 {
        let r = l.push(&mut c, &big_job(&format!("big-{n:04}"), n));
        assert!(r.is_ok(), "PUSH on an empty filesystem: {r:?}");
    }
    let held = l.delivered(&c.fetch_job("fill"));
    let addr = s.addr;
    let pushers: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                c.handshake(None, None);
                let mut out = Vec::new();
                let mut refusals = 0;
                for k in 0..150 {
                    let job = big_job(&format!("big-t{t}-{k:04}"), k);
                    let r = c.push(&job);
                    if !r.is_ok() {
                        refusals += 1;
                    }
                    out.push((job, r));
                    if refusals == 3 {
                        break;
                    }
                }
                out
            })
        })
        .collect();
    let mut first_refusal = None;
    for p in pushers {
        for (job, r) in p.join().expect("pusher thread") {
            let j = job["jid"].as_str().unwrap().to_string();
            match r {
                r if r.is_ok() => {
                    l.accepted.insert(j);
                }
                Reply::Error(e) => {
                    assert!(e.starts_with("ERR "), "PUSH {j}: malformed error {e:?}");
                    first_refusal.get_or_insert(e.clone());
                    l.refused.insert(j, e);
                }
                other => panic!("PUSH {j}: neither +OK nor -ERR: {other:?}"),
            }
        }
    }
    let first_refusal = first_refusal.unwrap_or_else(|| {
        panic!(
            "{} jobs of 50 KB were accepted on an {TMPFS_SIZE} filesystem",
            l.accepted.len()
        )
    });
    println!(
        "full disk: {} big jobs accepted (4 connections at once), {} refused, e.g. -{first_refusal} ({} bytes free)",
        l.accepted.len(),
        l.refused.len(),
        s.free_bytes()
    );
    assert!(
        l.accepted.len() >= 5,
        "the disk was full after only {} jobs",
        l.accepted.len()
    );
    assert!(
        first_refusal.to_lowercase().contains("full")
            || first_refusal.to_lowercase().contains("space"),
        "the refusal should say the storage is full: {first_refusal:?}"
    );

    // 2. Eat whatever is left with a filler file.
    let filler = s.path("filler");
    let out = s.ns(&["dd", "if=/dev/zero", &format!("of={filler}"), "bs=4k"]);
    assert!(
        !out.status.success(),
        "dd filled nothing? {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let free = s.free_bytes();
    println!("full disk: filler written, {free} bytes free");
    assert!(
        free < 64 * 1024,
        "the filesystem is not full: {free} bytes free"
    );

    // 3. With the disk full: PUSH and PUSHB are refused cleanly (or, if SQLite still has room
    //    in its own files, accepted — and then the job must exist).
    let mut outcomes = BTreeMap::<&str, (u32, u32)>::new();
    for i in 0..10 {
        let r = l.push(&mut c, &small_job(&format!("small-full-{i:02}"), i));
        let e = outcomes.entry("small PUSH").or_default();
        if r.is_ok() {
            e.0 += 1
        } else {
            e.1 += 1
        }
        let r = l.push(&mut c, &big_job(&format!("big-full-{i:02}"), i));
        let e = outcomes.entry("big PUSH").or_default();
        if r.is_ok() {
            e.0 += 1
        } else {
            e.1 += 1
        }
    }
    let batch: Vec<Value> = (0..5)
        .map(|i| big_job(&format!("pushb-full-{i}"), i))
        .collect();
    let r = c.cmd(&format!("PUSHB {}", Value::Array(batch.clone())));
    match &r {
        Reply::Error(e) => {
            assert!(e.starts_with("ERR "), "{e:?}");
            for j in &batch {
                l.refused
                    .insert(j["jid"].as_str().unwrap().to_string(), e.clone());
            }
            println!("full disk: PUSHB of 5 big jobs -> -{e}");
        }
        Reply::Bulk(_) => {
            let errs = r.json();
            let errs = errs
                .as_object()
                .unwrap_or_else(|| panic!("PUSHB reply is not an object: {r:?}"));
            for j in &batch {
                let j = j["jid"].as_str().unwrap().to_string();
                match errs.get(&j) {
                    Some(e) => {
                        l.refused.insert(j, e.to_string());
                    }
                    None => {
                        l.accepted.insert(j);
                    }
                }
            }
            println!(
                "full disk: PUSHB of 5 big jobs -> {} refused: {}",
                errs.len(),
                r.bulk_str()
            );
        }
        other => panic!("PUSHB on a full disk: unexpected reply {other:?}"),
    }
    println!("full disk: with the disk full (accepted, refused): {outcomes:?}");
    assert!(
        outcomes.values().map(|o| o.1).sum::<u32>() > 0,
        "nothing was refused while the filesystem had no free space at all"
    );
    // INFO only reads.
    let info = c.info();
    assert!(info["faktory"].is_object(), "INFO on a full disk: {info}");

    // FETCH and ACK of existing jobs: they work or fail cleanly.
    let mut pending_acks = Vec::new();
    match c.ack(&held) {
        r if r.is_ok() => {
            l.acked.insert(held.clone());
            println!("full disk: ACK of a job fetched earlier, with the disk full: +OK");
        }
        Reply::Error(e) => {
            assert!(e.starts_with("ERR "), "{e:?}");
            println!("full disk: ACK of a job fetched earlier, with the disk full: -{e}");
            pending_acks.push(held.clone());
        }
        other => panic!("ACK on a full disk: {other:?}"),
    }
    for _ in 0..3 {
        match c.cmd("FETCH fill") {
            r @ Reply::Bulk(_) => {
                let j = l.delivered(&r.json());
                match c.ack(&j) {
                    r if r.is_ok() => {
                        l.acked.insert(j.clone());
                        println!("full disk: FETCH + ACK {j} with the disk full: both +OK");
                    }
                    Reply::Error(e) => {
                        println!("full disk: FETCH {j} +OK, ACK refused: -{e}");
                        pending_acks.push(j);
                    }
                    other => panic!("ACK on a full disk: {other:?}"),
                }
            }
            Reply::Error(e) => println!("full disk: FETCH refused: -{e}"),
            other => panic!("FETCH on a full disk while jobs are queued: {other:?}"),
        }
    }
    assert!(
        s.is_running(),
        "werk died on a full disk; log:\n{}",
        tail(&s.log_path, 40)
    );

    // 4. Free space; the same server accepts jobs again.
    let out = s.ns(&["rm", "-f", &filler, &reserve]);
    assert!(
        out.status.success(),
        "rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "full disk: filler and reserve deleted, {} bytes free",
        s.free_bytes()
    );
    for i in 0..5 {
        let r = l.push(&mut c, &small_job(&format!("small-after-{i}"), i));
        assert!(r.is_ok(), "PUSH after space was freed (no restart): {r:?}");
    }
    let r = l.push(&mut c, &big_job("big-after-0", 0));
    assert!(r.is_ok(), "big PUSH after space was freed: {r:?}");
    let batch: Vec<Value> = (0..3)
        .map(|i| big_job(&format!("pushb-after-{i}"), i))
        .collect();
    let r = c.cmd(&format!("PUSHB {}", Value::Array(batch.clone())));
    assert_eq!(
        r,
        Reply::Bulk(b"{}".to_vec()),
        "PUSHB after space was freed"
    );
    for j in &batch {
        l.accepted.insert(j["jid"].as_str().unwrap().to_string());
    }
    for j in pending_acks.drain(..) {
        let r = c.ack(&j);
        assert!(r.is_ok(), "ACK of {j} after space was freed: {r:?}");
        l.acked.insert(j);
    }

    // 5. Snapshot the files as a crash would leave them (WAL first, then the database: a
    //    checkpoint in between only makes the WAL redundant), reachable through /proc/<pid>/root.
    let snap = tmp.path().join("snapshot");
    let snap_data = snap.join("data");
    fs::create_dir_all(&snap_data).unwrap();
    let src = s.ns_data_dir();
    for name in ["werk.db-wal", "werk.db", "werk.store"] {
        let from = src.join(name);
        if from.exists() {
            fs::copy(&from, snap_data.join(name))
                .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }
    let expected_on_disk: BTreeSet<String> = l.accepted.difference(&l.acked).cloned().collect();

    // 6. Drain: every accepted job exactly once.
    let mut empty = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while empty < 2 {
        assert!(Instant::now() < deadline, "draining took more than 60 s");
        match c.fetch("fill") {
            Some((_, job)) => {
                empty = 0;
                let j = l.delivered(&job);
                c.ack(&j).expect_ok();
                l.acked.insert(j);
            }
            None => empty += 1,
        }
    }
    let missing: Vec<_> = l
        .accepted
        .iter()
        .filter(|j| !l.delivered.contains_key(*j))
        .collect();
    assert!(
        missing.is_empty(),
        "jobs answered +OK were never delivered: {missing:?}"
    );
    let twice: Vec<_> = l.delivered.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "jobs delivered more than once: {twice:?}");
    let info = c.info();
    assert_eq!(
        ["working", "retries", "dead", "scheduled"].map(|k| set_size(&info, k)),
        [0, 0, 0, 0],
        "{info}"
    );
    assert_eq!(queue_size(&info, "fill").unwrap_or(0), 0, "{info}");
    println!(
        "full disk: {} jobs accepted in all ({} refused), every one delivered exactly once",
        l.accepted.len(),
        l.refused.len()
    );

    // 7. The tmpfs dies with the server; nothing stays mounted.
    drop(c);
    s.kill();
    assert!(
        !mounted_here(&s.data_dir),
        "a tmpfs is left mounted on {}",
        s.data_dir.display()
    );
    assert_eq!(
        fs::read_dir(&s.data_dir).unwrap().count(),
        0,
        "files leaked into the host's data dir"
    );
    let log = fs::read_to_string(&s.log_path).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "werk panicked during the full-disk episode:\n{}",
        tail(&s.log_path, 40)
    );

    // 8. A server on the snapshot (full integrity check) has exactly the jobs that were
    //    accepted and not yet acknowledged when the snapshot was taken.
    let mut s2 = Server::spawn(
        &snap,
        snap_data.clone(),
        ServerOpts::new().fetch_timeout_ms(300),
    );
    let mut c2 = s2.conn();
    let mut got = BTreeSet::new();
    let mut empty = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while empty < 2 {
        assert!(
            Instant::now() < deadline,
            "draining the snapshot took more than 60 s"
        );
        match c2.fetch("fill") {
            Some((_, job)) => {
                empty = 0;
                let j = job["jid"].as_str().unwrap().to_string();
                assert!(
                    got.insert(j.clone()),
                    "{j} delivered twice after the restart"
                );
                c2.ack(&j).expect_ok();
            }
            None => empty += 1,
        }
    }
    let lost: Vec<_> = expected_on_disk.difference(&got).collect();
    let extra: Vec<_> = got.difference(&expected_on_disk).collect();
    assert!(
        lost.is_empty(),
        "accepted jobs missing from the files after the full-disk episode: {lost:?}"
    );
    assert!(
        extra.is_empty(),
        "jobs on disk that were refused or already acknowledged: {extra:?}"
    );
    println!(
        "full disk: restart on a snapshot of the files: all {} pending jobs present, nothing else",
        got.len()
    );
    s2.terminate(Duration::from_secs(20));
}
