//! Crash test: the server is SIGKILLed at random moments under concurrent PUSH and FETCH+ACK
//! traffic and restarted on the same data directory, round after round. A ledger records every
//! PUSH answered `+OK` and every ACK answered `+OK`. At the end everything is drained and the
//! invariants of the job state machine are checked:
//!
//! * lost == 0: a job whose PUSH got `+OK` and whose ACK never got `+OK` (nor was even sent) is
//!   still stored: delivered in the final drain, or still reserved (`working`, proven by a
//!   `FAIL` that answers `+OK` instead of `-ERR Job not found`).
//! * resurrected == 0: no job is delivered, or still stored, after its ACK got `+OK`.
//! * no job is delivered twice within one server lifetime.
//!
//! Re-deliveries across a crash (at-least-once) are allowed and counted.
//!
//! A second scenario runs the server with its hidden `--time-scale 0.01`: jobs carry
//! `reserve_for: 60` (600 ms) and consumers FAIL a quarter of the jobs on first delivery, so the
//! reservation reaper and retry promotion run across the crashes too, and at the end every job
//! must come back by itself (expiry → retry → queue) and be ACKed in the final drain.
//!
//! Set `WERK_CRASH_SEED` to replay a run's kill timings.

mod common;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const ROUNDS: u32 = 12;
const MIN_ROUNDS: u32 = 10;
const PUSHERS: usize = 4;
const CONSUMERS: usize = 3;
const MAX_PUSHES_PER_THREAD_PER_ROUND: u32 = 3000;
/// Stop starting new rounds (once MIN_ROUNDS are done) after this much time.
const TIME_BUDGET: Duration = Duration::from_secs(40);
const QUEUES: &str = "crash-a crash-b";

#[derive(Default)]
struct Ledger {
    pushed_ok: HashSet<String>,
    /// PUSH written but no reply read (outcome unknown).
    push_unconfirmed: HashSet<String>,
    acked_ok: HashSet<String>,
    /// ACK written but no `+OK` read (outcome unknown).
    ack_unconfirmed: HashSet<String>,
    /// jid -> the server lives in which it was delivered.
    deliveries: HashMap<String, Vec<u32>>,
    /// Deliveries of a jid whose ACK had already been answered `+OK`.
    resurrected: Vec<String>,
    /// A jid delivered twice by the same server process.
    dup_same_life: Vec<String>,
    /// Unexpected replies.
    errors: Vec<String>,
    /// FAILs answered `+OK` (scaled scenario).
    failed_ok: u64,
    /// ACKs answered `+OK` whose reservation may already have expired (excluded from the
    /// resurrection check: a late ACK removes the job, but another worker may have fetched it
    /// again before that ACK arrived, and this ledger records deliveries when their reply is
    /// read, not when the FETCH was sent).
    acked_late: HashSet<String>,
}

impl Ledger {
    fn delivered(&mut self, jid: &str, life: u32) {
        if self.acked_ok.contains(jid) && !self.acked_late.contains(jid) {
            self.resurrected
                .push(format!("{jid} (delivered in life {life} after ACK +OK)"));
        }
        let lives = self.deliveries.entry(jid.to_string()).or_default();
        if lives.contains(&life) {
            self.dup_same_life.push(format!("{jid} (life {life})"));
        }
        lives.push(life);
    }
}

/// xorshift64* — enough randomness for kill timings, reproducible from a printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// What the traffic looks like.
#[derive(Clone, Copy)]
struct Mode {
    /// Jobs carry `reserve_for` (seconds, before time scaling).
    reserve_for: Option<u64>,
    /// FAIL every job whose sequence number is divisible by 4 on its first delivery.
    fail_some: bool,
    /// An ACK answered later than this after its FETCH was sent may have raced the reaper.
    late_ack_after: Option<Duration>,
}

const PLAIN: Mode = Mode {
    reserve_for: None,
    fail_some: false,
    late_ack_after: None,
};
const SCALED: Mode = Mode {
    reserve_for: Some(60),
    fail_some: true,
    late_ack_after: Some(Duration::from_millis(450)),
};

fn connect(addr: SocketAddr, wid: Option<&str>) -> io::Result<Conn> {
    let mut c = Conn::try_connect(addr)?;
    c.set_read_timeout(Duration::from_secs(10));
    match c.read_reply()? {
        Reply::Simple(s) if s.starts_with("HI ") => {}
        other => return Err(io::Error::other(format!("bad greeting {other:?}"))),
    }
    let mut hello = json!({"v": 2, "hostname": "crash-test"});
    if let Some(w) = wid {
        hello["wid"] = json!(w);
    }
    match c.try_cmd(&format!("HELLO {hello}"))? {
        r if r.is_ok() => Ok(c),
        other => Err(io::Error::other(format!("HELLO refused: {other:?}"))),
    }
}

fn pusher(addr: SocketAddr, life: u32, idx: usize, ledger: Arc<Mutex<Ledger>>, mode: Mode) {
    let Ok(mut c) = connect(addr, None) else {
        return;
    };
    for seq in 0..MAX_PUSHES_PER_THREAD_PER_ROUND {
        let jid = format!("crash-l{life}-p{idx}-{seq:05}");
        let queue = if seq % 3 == 0 { "crash-b" } else { "crash-a" };
        let mut job = json!({"jid": jid, "jobtype": "Crash", "args": [life, idx, seq, "payload with spaces"], "queue": queue});
        if let Some(r) = mode.reserve_for {
            job["reserve_for"] = json!(r);
        }
        let line = format!("PUSH {job}");
        if c.try_send(&line).is_err() {
            ledger.lock().unwrap().push_unconfirmed.insert(jid);
            return;
        }
        match c.read_reply() {
            Ok(r) if r.is_ok() => {
                ledger.lock().unwrap().pushed_ok.insert(jid);
            }
            Ok(other) => {
                let mut l = ledger.lock().unwrap();
                l.errors.push(format!("PUSH {jid}: {other:?}"));
                l.push_unconfirmed.insert(jid);
            }
            Err(_) => {
                ledger.lock().unwrap().push_unconfirmed.insert(jid);
                return;
            }
        }
    }
}

fn consumer(
    addr: SocketAddr,
    life: u32,
    idx: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    mode: Mode,
) {
    let wid = format!("crash-worker-l{life}-{idx}");
    let Ok(mut c) = connect(addr, Some(&wid)) else {
        return;
    };
    while !stop.load(Ordering::SeqCst) {
        let fetch_sent = Instant::now();
        let r = match c.try_cmd(&format!("FETCH {QUEUES}")) {
            Ok(r) => r,
            Err(_) => return,
        };
        let (jid, seq) = match &r {
            Reply::Null => continue,
            Reply::Bulk(b) => match serde_json::from_slice::<Value>(b) {
                Ok(v) => (
                    v["jid"].as_str().unwrap_or_default().to_string(),
                    v["args"][2].as_u64().unwrap_or(1),
                ),
                Err(e) => {
                    ledger
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("FETCH returned bad JSON ({e}): {r:?}"));
                    return;
                }
            },
            other => {
                ledger
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("FETCH: {other:?}"));
                return;
            }
        };
        let first_delivery = {
            let mut l = ledger.lock().unwrap();
            let first = !l.deliveries.contains_key(&jid);
            l.delivered(&jid, life);
            first
        };
        if mode.fail_some && first_delivery && seq % 4 == 0 {
            match c.try_cmd(&format!(
                "FAIL {}",
                json!({"jid": jid, "errtype": "CrashTest", "message": "planned"})
            )) {
                Ok(r) if r.is_ok() => ledger.lock().unwrap().failed_ok += 1,
                Ok(Reply::Error(e)) if e.starts_with("ERR Job not found") => {} // raced the reaper
                Ok(other) => ledger
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("FAIL {jid}: {other:?}")),
                Err(_) => return,
            }
            continue;
        }
        let ack = format!("ACK {}", json!({ "jid": jid }));
        if c.try_send(&ack).is_err() {
            ledger.lock().unwrap().ack_unconfirmed.insert(jid);
            return;
        }
        match c.read_reply() {
            Ok(r) if r.is_ok() => {
                let mut l = ledger.lock().unwrap();
                if mode
                    .late_ack_after
                    .is_some_and(|d| fetch_sent.elapsed() >= d)
                {
                    l.acked_late.insert(jid.clone());
                }
                l.acked_ok.insert(jid);
            }
            Ok(other) => {
                let mut l = ledger.lock().unwrap();
                l.errors.push(format!("ACK {jid}: {other:?}"));
                l.ack_unconfirmed.insert(jid);
            }
            Err(_) => {
                ledger.lock().unwrap().ack_unconfirmed.insert(jid);
                return;
            }
        }
    }
}

/// Print a line that shows up in CI logs even when the test passes (the harness captures
/// `println!`, not direct writes to the stderr handle).
fn summary(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn seed() -> u64 {
    let seed = std::env::var("WERK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: {seed} (set WERK_CRASH_SEED={seed} to replay)");
    seed
}

/// Runs the crash rounds on `dir`; returns how many ran.
fn run_rounds(
    dir: &std::path::Path,
    opts: &ServerOpts,
    mode: Mode,
    rng: &mut Rng,
    ledger: &Arc<Mutex<Ledger>>,
) -> u32 {
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < ROUNDS && (rounds < MIN_ROUNDS || started.elapsed() < TIME_BUDGET) {
        rounds += 1;
        let life = rounds;
        let mut server = Server::start_in(dir, opts.clone());
        let addr = server.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for i in 0..PUSHERS {
            let l = ledger.clone();
            handles.push(thread::spawn(move || pusher(addr, life, i, l, mode)));
        }
        for i in 0..CONSUMERS {
            let (l, s) = (ledger.clone(), stop.clone());
            handles.push(thread::spawn(move || consumer(addr, life, i, l, s, mode)));
        }
        let kill_after = Duration::from_millis(rng.range(50, 900));
        thread::sleep(kill_after);
        assert!(
            server.is_running(),
            "werk died by itself in round {life}; log:\n{}",
            server.log()
        );
        server.kill(); // SIGKILL, mid-traffic
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            h.join().expect("traffic thread panicked");
        }
        let l = ledger.lock().unwrap();
        eprintln!(
            "round {life}: killed after {kill_after:?}; totals so far: pushed_ok={} acked_ok={}",
            l.pushed_ok.len(),
            l.acked_ok.len()
        );
    }
    rounds
}

#[test]
fn sigkill_under_load_loses_and_resurrects_nothing() {
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOpts::new().fetch_timeout_ms(200);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let rounds = run_rounds(dir.path(), &opts, PLAIN, &mut rng, &ledger);

    // Final life: drain everything.
    let final_life = rounds + 1;
    let server = Server::start_in(dir.path(), opts);
    let mut c = server.conn();
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    let mut drained = 0u64;
    loop {
        assert!(
            Instant::now() < drain_deadline,
            "final drain did not finish"
        );
        let Some((_, job)) = c.fetch(QUEUES) else {
            break;
        };
        let jid = job["jid"].as_str().expect("jid").to_string();
        ledger.lock().unwrap().delivered(&jid, final_life);
        let r = c.ack(&jid);
        assert!(r.is_ok(), "ACK {jid} in the final drain: {r:?}");
        ledger.lock().unwrap().acked_ok.insert(jid);
        drained += 1;
    }

    let mut l = ledger.lock().unwrap();
    // Every jid that may still be stored: probe with FAIL (+OK = it was reserved/working).
    let candidates: Vec<String> = l
        .pushed_ok
        .iter()
        .chain(l.push_unconfirmed.iter())
        .filter(|j| !l.acked_ok.contains(*j))
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut in_flight = 0u64;
    let mut lost = Vec::new();
    let mut fail_ok_total = 0u64;
    for jid in &candidates {
        let r = c.fail(&json!({"jid": jid, "message": "crash-test probe"}));
        if r.is_ok() {
            in_flight += 1;
            fail_ok_total += 1;
        } else {
            assert_eq!(
                r.wire_str(),
                format!("-ERR Job not found {jid}\r\n"),
                "FAIL probe of {jid}"
            );
            if l.pushed_ok.contains(jid) && !l.ack_unconfirmed.contains(jid) {
                lost.push(jid.clone());
            }
        }
    }
    // ACKed jobs must be gone for good.
    let acked: Vec<String> = l.acked_ok.iter().cloned().collect();
    for jid in &acked {
        let r = c.fail(&json!({"jid": jid, "message": "crash-test probe"}));
        if r.is_ok() {
            fail_ok_total += 1;
            l.resurrected
                .push(format!("{jid} (still stored after ACK +OK)"));
        } else {
            assert_eq!(
                r.wire_str(),
                format!("-ERR Job not found {jid}\r\n"),
                "FAIL probe of {jid}"
            );
        }
    }

    let redelivered = l.deliveries.values().filter(|v| v.len() > 1).count();
    let delivered = l.deliveries.len();
    let info = c.info();
    summary(format!(
        "crash summary: rounds={rounds} pushed={} push_unconfirmed={} acked={} ack_unconfirmed={} \
         delivered={delivered} final_drain={drained} re-delivered={redelivered} in_flight_at_crash={in_flight} \
         lost={} resurrected={} duplicated_same_life={} unexpected_replies={} seed={seed} elapsed={:?}",
        l.pushed_ok.len(),
        l.push_unconfirmed.len(),
        l.acked_ok.len(),
        l.ack_unconfirmed.len(),
        lost.len(),
        l.resurrected.len(),
        l.dup_same_life.len(),
        l.errors.len(),
        started.elapsed()
    ));

    assert!(rounds >= MIN_ROUNDS);
    assert!(
        l.pushed_ok.len() > 100,
        "too little traffic to mean anything: {}",
        l.pushed_ok.len()
    );
    assert!(
        l.acked_ok.len() > 50,
        "too few ACKs to mean anything: {}",
        l.acked_ok.len()
    );
    assert!(
        lost.is_empty(),
        "{} jobs LOST (PUSH +OK, never ACKed, not stored): {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        l.resurrected.is_empty(),
        "RESURRECTED jobs: {:?}",
        &l.resurrected[..l.resurrected.len().min(20)]
    );
    assert!(
        l.dup_same_life.is_empty(),
        "jobs delivered twice by one server process: {:?}",
        l.dup_same_life
    );
    assert!(
        l.errors.is_empty(),
        "unexpected replies: {:?}",
        &l.errors[..l.errors.len().min(20)]
    );

    // The server's own bookkeeping agrees: nothing queued or reserved, every probed job in retries.
    assert_eq!(info["faktory"]["total_enqueued"], 0, "{info}");
    assert_eq!(set_size(&info, "working"), 0, "{info}");
    assert_eq!(set_size(&info, "retries"), fail_ok_total, "{info}");
    assert_eq!(
        set_size(&info, "scheduled") + set_size(&info, "dead"),
        0,
        "{info}"
    );
}

#[test]
fn sigkill_with_expiring_reservations_and_retries_every_job_comes_back() {
    let seed = seed();
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOpts::new()
        .fetch_timeout_ms(200)
        .scan_interval_ms(50)
        .args(["--reap-interval-ms", "50", "--time-scale", "0.01"]);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let rounds = run_rounds(dir.path(), &opts, SCALED, &mut rng, &ledger);

    // Final life: keep draining until nothing is queued, reserved, scheduled or waiting to retry.
    // Reservations (600 ms) expire into retries, which come back after their (scaled) backoff.
    let final_life = rounds + 1;
    let server = Server::start_in(dir.path(), opts);
    let mut c = server.conn();
    let drain_deadline = Instant::now() + Duration::from_secs(45);
    let mut drained = 0u64;
    let info = loop {
        assert!(
            Instant::now() < drain_deadline,
            "final drain did not finish: {}",
            c.info()
        );
        match c.fetch(QUEUES) {
            Some((_, job)) => {
                let jid = job["jid"].as_str().expect("jid").to_string();
                ledger.lock().unwrap().delivered(&jid, final_life);
                let r = c.ack(&jid);
                assert!(r.is_ok(), "ACK {jid} in the final drain: {r:?}");
                ledger.lock().unwrap().acked_ok.insert(jid);
                drained += 1;
            }
            None => {
                let info = c.info();
                let busy = ["working", "retries", "scheduled"]
                    .iter()
                    .map(|k| set_size(&info, k))
                    .sum::<u64>()
                    + info["faktory"]["total_enqueued"].as_u64().unwrap_or(0);
                if busy == 0 {
                    break info;
                }
            }
        }
    };

    let l = ledger.lock().unwrap();
    let lost: Vec<&String> = l
        .pushed_ok
        .iter()
        .filter(|j| !l.acked_ok.contains(*j) && !l.ack_unconfirmed.contains(*j))
        .collect();
    let redelivered = l.deliveries.values().filter(|v| v.len() > 1).count();
    summary(format!(
        "crash summary (time-scaled, expiring reservations, FAILs): rounds={rounds} pushed={} push_unconfirmed={} \
         acked={} acked_late={} ack_unconfirmed={} failed={} delivered={} final_drain={drained} re-delivered={redelivered} \
         lost={} resurrected={} unexpected_replies={} dead={} seed={seed} elapsed={:?}",
        l.pushed_ok.len(),
        l.push_unconfirmed.len(),
        l.acked_ok.len(),
        l.acked_late.len(),
        l.ack_unconfirmed.len(),
        l.failed_ok,
        l.deliveries.len(),
        lost.len(),
        l.resurrected.len(),
        l.errors.len(),
        set_size(&info, "dead"),
        started.elapsed()
    ));
    assert!(rounds >= MIN_ROUNDS);
    assert!(
        l.pushed_ok.len() > 100,
        "too little traffic to mean anything: {}",
        l.pushed_ok.len()
    );
    assert!(
        l.failed_ok > 10,
        "too few FAILs to mean anything: {}",
        l.failed_ok
    );
    assert!(
        lost.is_empty(),
        "{} jobs LOST (PUSH +OK, never came back): {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        l.resurrected.is_empty(),
        "RESURRECTED jobs: {:?}",
        &l.resurrected[..l.resurrected.len().min(20)]
    );
    assert!(
        l.errors.is_empty(),
        "unexpected replies: {:?}",
        &l.errors[..l.errors.len().min(20)]
    );
    assert_eq!(
        set_size(&info, "dead"),
        0,
        "no job can exhaust 25 retries here: {info}"
    );
}
