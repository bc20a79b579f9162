//! Damaged data, end to end: a store with 2000 jobs is built by a real server (stopped with
//! SIGTERM, so its WAL is checkpointed into werk.db), then damaged in one way per test — truncated,
//! overwritten in the middle, deleted or emptied under its marker file, replaced by text, header
//! wiped. `werk serve` must refuse to start, quickly, with a message naming werk.db and saying it
//! is damaged, must not touch the damaged file (so it can still be salvaged), and must refuse again
//! on a second attempt. The undamaged store serves all 2000 jobs, and `--skip-integrity-check`
//! on a damaged store terminates or serves within a time limit (which one is not asserted).
//!
//! The last three tests damage a single stored job inside its cell (the b-tree stays intact, so
//! SQLite's quick_check passes): werk may refuse such a store or skip the bad job, but one bad
//! row must not make the rest of its queue, the scheduler or the reaper stop for good.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const JOBS: usize = 2000;
const ARG_BYTES: usize = 200;
/// A refused start must end within this.
const REFUSAL_LIMIT: Duration = Duration::from_secs(15);

fn arg_of(i: usize) -> String {
    // 200 bytes, different for every job.
    let mut s = format!("payload-{i:05}-");
    while s.len() < ARG_BYTES {
        s.push(char::from(b'a' + (s.len() * 7 + i) as u8 % 26));
    }
    s
}

fn jid_of(i: usize) -> String {
    format!("damaged-data-{i:05}")
}

/// Builds a store of `JOBS` jobs in `dir/data` with a real server, stopped with SIGTERM.
fn build_store(dir: &Path) -> PathBuf {
    let mut s = Server::start_in(dir, ServerOpts::new());
    let mut c = s.conn();
    for b in 0..JOBS / 100 {
        let batch: Vec<Value> = (b * 100..(b + 1) * 100)
            .map(|i| json!({"jid": jid_of(i), "jobtype": "Damage", "args": [arg_of(i), i]}))
            .collect();
        let r = c.cmd(&format!("PUSHB {}", Value::Array(batch)));
        assert_eq!(r, Reply::Bulk(b"{}".to_vec()), "PUSHB batch {b}");
    }
    assert_eq!(queue_size(&c.info(), "default"), Some(JOBS as u64));
    drop(c);
    let data = s.data_dir.clone();
    let st = s.terminate(Duration::from_secs(30));
    assert!(
        st.success(),
        "werk exited with {st} after SIGTERM; log:\n{}",
        tail(&s.log_path, 30)
    );
    let db = data.join("werk.db");
    let wal = data.join("werk.db-wal");
    let wal_len = fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "after SIGTERM the WAL still holds {wal_len} bytes: damaging werk.db alone would not test what it should");
    let db_len = fs::metadata(&db).unwrap().len();
    assert!(
        db_len > 400 * 1024,
        "werk.db is only {db_len} bytes for {JOBS} jobs of {ARG_BYTES} bytes"
    );
    assert!(
        data.join("werk.store").exists(),
        "the werk.store marker is missing"
    );
    data
}

/// What a `werk serve` attempt did.
struct Attempt {
    /// None: still running when the limit passed (it was killed).
    status: Option<ExitStatus>,
    elapsed: Duration,
    stdout: String,
    stderr: String,
    /// The address it announced, if it got that far (the process is then still running and
    /// killed by the caller via `child`).
    listening: Option<SocketAddr>,
    child: Option<std::process::Child>,
    /// Where its stderr goes.
    err_path: PathBuf,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `werk serve -d data extra...` and waits up to `limit` for it to exit or announce
/// that it is listening.
fn attempt(dir: &Path, data: &Path, extra: &[&str], limit: Duration) -> Attempt {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let out_path = dir.join(format!("attempt-{n}.out"));
    let err_path = dir.join(format!("attempt-{n}.err"));
    let started = Instant::now();
    let mut child = Command::new(WERK)
        .args(["serve", "-b", "127.0.0.1:0", "-w", ":0", "-d"])
        .arg(data)
        .args(extra)
        .env_remove("FAKTORY_PASSWORD")
        .env_remove("FAKTORY_URL")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn werk");
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Attempt {
                status: Some(st),
                elapsed: started.elapsed(),
                stdout: read(&out_path),
                stderr: read(&err_path),
                listening: None,
                child: None,
                err_path: err_path.clone(),
            };
        }
        let out = read(&out_path);
        if let Some(line) = out
            .lines()
            .find_map(|l| l.strip_prefix("werk listening on "))
        {
            return Attempt {
                status: None,
                elapsed: started.elapsed(),
                listening: Some(line.trim().parse().expect("address")),
                stdout: out,
                stderr: read(&err_path),
                child: Some(child),
                err_path: err_path.clone(),
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Attempt {
                status: None,
                elapsed: started.elapsed(),
                stdout: out,
                stderr: read(&err_path),
                listening: None,
                child: None,
                err_path: err_path.clone(),
            };
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Tiny deterministic PRNG (xorshift64*).
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn file_bytes(p: &Path) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    File::open(p).ok()?.read_to_end(&mut v).ok()?;
    Some(v)
}

/// Builds a store, damages werk.db with `damage`, and checks that `werk serve` refuses it:
/// non-zero exit within `REFUSAL_LIMIT`, a message naming werk.db that contains `expect`, the
/// file left exactly as it was, and the same refusal on a second attempt.
fn assert_refused(kind: &str, expect: &str, damage: impl FnOnce(&Path)) {
    let tmp = tempfile::Builder::new()
        .prefix("werk-damaged-")
        .tempdir()
        .unwrap();
    let data = build_store(tmp.path());
    let db = data.join("werk.db");
    damage(&db);
    let before = file_bytes(&db);
    let db_str = db.to_string_lossy().into_owned();
    for round in 1..=2 {
        let a = attempt(tmp.path(), &data, &[], REFUSAL_LIMIT);
        let first_line = a
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        println!(
            "{kind} (attempt {round}): {} after {:.0} ms: {}",
            a.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "did not exit".into()),
            a.elapsed.as_secs_f64() * 1000.0,
            a.stderr
                .lines()
                .filter(|l| l.contains("werk.db"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        assert!(
            a.listening.is_none(),
            "{kind}: werk STARTED on a damaged store ({}); stderr:\n{}",
            a.stdout.trim(),
            a.stderr
        );
        let st = a.status.unwrap_or_else(|| {
            panic!(
                "{kind}: werk neither started nor exited within {REFUSAL_LIMIT:?}; stderr:\n{}",
                a.stderr
            )
        });
        assert!(
            !st.success(),
            "{kind}: werk exited successfully on a damaged store; stderr:\n{}",
            a.stderr
        );
        assert!(
            a.stderr.contains(&db_str),
            "{kind}: the error does not name {db_str}; stderr:\n{}",
            a.stderr
        );
        assert!(
            a.stderr.contains(expect),
            "{kind}: the error does not say {expect:?}; stderr:\n{}",
            a.stderr
        );
        assert!(!first_line.is_empty());
        assert_eq!(
            file_bytes(&db).map(|b| b.len()),
            before.as_ref().map(|b| b.len()),
            "{kind}: the refused start changed the size of werk.db (or created/removed it)"
        );
        assert!(
            file_bytes(&db) == before,
            "{kind}: the refused start modified werk.db"
        );
    }
}

#[test]
fn truncated_database_is_refused() {
    assert_refused("truncated to half", "is damaged", |db| {
        let len = fs::metadata(db).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(db)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    });
}

#[test]
fn random_block_in_the_middle_is_refused() {
    assert_refused("16 KiB of random bytes in the middle", "is damaged", |db| {
        let len = fs::metadata(db).unwrap().len();
        let mut f = OpenOptions::new().write(true).open(db).unwrap();
        f.seek(SeekFrom::Start(len / 2 - 1234)).unwrap();
        f.write_all(&random_bytes(0xDA3A6E, 16 * 1024)).unwrap();
        f.sync_all().unwrap();
    });
}

#[test]
fn deleted_database_under_its_marker_is_refused() {
    assert_refused("werk.db deleted, werk.store kept", "is damaged", |db| {
        fs::remove_file(db).unwrap();
    });
}

#[test]
fn emptied_database_is_refused() {
    assert_refused("werk.db emptied to 0 bytes", "is damaged", |db| {
        File::create(db).unwrap();
    });
}

#[test]
fn database_replaced_by_a_text_file_is_refused() {
    assert_refused("werk.db replaced by a text file", "is damaged", |db| {
        fs::write(
            db,
            "these are not the jobs you are looking for\n".repeat(200),
        )
        .unwrap();
    });
}

#[test]
fn wiped_database_header_is_refused() {
    assert_refused("first 4 KiB of werk.db zeroed", "is damaged", |db| {
        let mut f = OpenOptions::new().write(true).open(db).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        f.sync_all().unwrap();
    });
}

#[test]
fn undamaged_copy_serves_all_jobs() {
    let tmp = tempfile::Builder::new()
        .prefix("werk-damaged-")
        .tempdir()
        .unwrap();
    let orig = build_store(tmp.path());
    // Work on a copy, as the damage tests do.
    let copy_root = tmp.path().join("copy");
    let copy = copy_root.join("data");
    fs::create_dir_all(&copy).unwrap();
    for e in fs::read_dir(&orig).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let s = Server::spawn(
        &copy_root,
        copy.clone(),
        ServerOpts::new().fetch_timeout_ms(300),
    );
    let mut c = s.conn();
    assert_eq!(queue_size(&c.info(), "default"), Some(JOBS as u64));
    // Drain with four workers.
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let mut w = s.worker(&format!("drain-{t}"));
            thread::spawn(move || {
                let mut got = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(120);
                while let Some((_, job)) = w.fetch("default") {
                    assert!(Instant::now() < deadline, "draining took over 120 s");
                    let j = job["jid"].as_str().unwrap().to_string();
                    w.ack(&j).expect_ok();
                    got.push((j, job["args"].clone()));
                }
                got
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for h in handles {
        for (j, args) in h.join().expect("drain thread") {
            let i: usize = j
                .strip_prefix("damaged-data-")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unknown job {j}"));
            assert_eq!(args, json!([arg_of(i), i]), "args of {j}");
            assert!(seen.insert(j.clone()), "{j} delivered twice");
        }
    }
    assert_eq!(
        seen.len(),
        JOBS,
        "the undamaged copy served {} of {JOBS} jobs",
        seen.len()
    );
    println!("undamaged copy: all {JOBS} jobs served once, args intact");
}

#[test]
fn skip_integrity_check_on_a_damaged_store_terminates_or_serves() {
    let help = Command::new(WERK)
        .args(["serve", "--help"])
        .output()
        .expect("werk serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--skip-integrity-check"),
        "`werk serve --help` does not list --skip-integrity-check:\n{help}"
    );

    let tmp = tempfile::Builder::new()
        .prefix("werk-damaged-")
        .tempdir()
        .unwrap();
    let data = build_store(tmp.path());
    let db = data.join("werk.db");
    let len = fs::metadata(&db).unwrap().len();
    {
        let mut f = OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(SeekFrom::Start(len / 2 - 1234)).unwrap();
        f.write_all(&random_bytes(0xDA3A6E, 16 * 1024)).unwrap();
    }
    let mut a = attempt(
        tmp.path(),
        &data,
        &["--skip-integrity-check", "--fetch-timeout-ms", "300"],
        Duration::from_secs(20),
    );
    match (a.status, a.listening) {
        (Some(st), _) => println!(
            "--skip-integrity-check on a damaged store: exited with {st} after {:?}: {}",
            a.elapsed,
            a.stderr.lines().last().unwrap_or("")
        ),
        (None, Some(addr)) => {
            // It serves; whatever it answers, it must answer within the timeouts.
            let mut c = Conn::connect(addr);
            c.handshake(None, None);
            let info = c.try_cmd("INFO").map(|r| r.wire_str().chars().take(120).collect::<String>());
            let mut fetched = 0;
            let mut last = String::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match c.try_cmd("FETCH default") {
                    Ok(r @ Reply::Bulk(_)) => {
                        fetched += 1;
                        let j = serde_json::from_slice::<Value>(r.bulk()).ok().and_then(|v| v["jid"].as_str().map(String::from));
                        if let Some(j) = j {
                            let _ = c.try_cmd(&format!(r#"ACK {{"jid":"{j}"}}"#));
                        }
                    }
                    Ok(r) => {
                        last = r.wire_str();
                        break;
                    }
                    Err(e) => {
                        last = format!("I/O error: {e}");
                        break;
                    }
                }
            }
            let running = matches!(a.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
            println!(
                "--skip-integrity-check on a damaged store: started in {:?}; INFO -> {info:?}; fetched {fetched} of {JOBS} jobs, then {:?}; still running: {running}",
                a.elapsed,
                last.trim_end()
            );
        }
        (None, None) => panic!("--skip-integrity-check on a damaged store: neither started nor exited within 20 s; stderr:\n{}", a.stderr),
    }
}

// ---------------------------------------------------------------------------------------------
// One corrupt row. SQLite's quick_check verifies the b-tree structure, not what is stored in a
// cell: a job whose stored JSON was damaged inside its cell passes the start-up check. The
// server may then refuse to start, or skip/quarantine that one job — but it must not let one
// bad row make every other job of its queue (or every due retry, or every expired reservation)
// unreachable.
// ---------------------------------------------------------------------------------------------

/// Makes the stored JSON of job `marker` undecodable: every copy of `["<marker>` in the file
/// gets its `[` replaced by `x`. Returns how many copies were changed.
fn corrupt_stored_payload(db: &Path, marker: &str) -> usize {
    let mut bytes = fs::read(db).unwrap();
    let pat = format!("[\"{marker}");
    let pat = pat.as_bytes();
    let hits: Vec<usize> = bytes
        .windows(pat.len())
        .enumerate()
        .filter(|(_, w)| *w == pat)
        .map(|(i, _)| i)
        .collect();
    assert!(!hits.is_empty(), "{marker} not found in {}", db.display());
    for &h in &hits {
        bytes[h] = b'x';
    }
    fs::write(db, &bytes).unwrap();
    hits.len()
}

/// Either `werk serve` refuses the store as damaged, or it serves: then `check` gets the
/// address. Returns what happened, for the message.
fn refused_or_serving(dir: &Path, data: &Path, extra: &[&str], check: impl FnOnce(SocketAddr)) {
    let a = attempt(dir, data, extra, REFUSAL_LIMIT);
    match (a.status, a.listening) {
        (Some(st), _) => {
            let db = data.join("werk.db").to_string_lossy().into_owned();
            assert!(
                !st.success(),
                "werk exited successfully; stderr:\n{}",
                a.stderr
            );
            assert!(
                a.stderr.contains("is damaged") && a.stderr.contains(&db),
                "werk refused to start, but not with a message naming {db} as damaged:\n{}",
                a.stderr
            );
            println!(
                "corrupt row: start refused: {}",
                a.stderr.lines().last().unwrap_or("")
            );
        }
        (None, Some(addr)) => {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(addr))) {
                eprintln!(
                    "---- werk (on the damaged store) log ----\n{}\n---- end ----",
                    tail(&a.err_path, 12)
                );
                std::panic::resume_unwind(p);
            }
        }
        (None, None) => panic!(
            "werk neither started nor exited within {REFUSAL_LIMIT:?}; stderr:\n{}",
            a.stderr
        ),
    }
}

#[test]
fn one_corrupt_enqueued_job_does_not_wedge_its_queue() {
    let tmp = tempfile::Builder::new()
        .prefix("werk-damaged-")
        .tempdir()
        .unwrap();
    let data = build_store(tmp.path());
    // Job 0 is the head of the queue.
    let n = corrupt_stored_payload(&data.join("werk.db"), &arg_of(0)[..14]);
    println!("corrupt row: damaged {n} stored copy/copies of job 0 (the head of `default`)");
    refused_or_serving(tmp.path(), &data, &["--fetch-timeout-ms", "300"], |addr| {
        let mut c = Conn::connect(addr);
        c.handshake(None, None);
        let mut got = BTreeSet::new();
        let mut errors = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < JOBS - 1 && Instant::now() < deadline && errors.len() < 50 {
            match c.cmd("FETCH default") {
                r @ Reply::Bulk(_) => {
                    let j = r.json()["jid"].as_str().unwrap().to_string();
                    c.ack(&j).expect_ok();
                    got.insert(j);
                }
                Reply::Error(e) => {
                    errors.push(e);
                    thread::sleep(Duration::from_millis(20));
                }
                Reply::Null => break,
                other => panic!("FETCH: {other:?}"),
            }
        }
        println!(
            "corrupt row: served {} jobs; {} FETCH errors, e.g. {:?}",
            got.len(),
            errors.len(),
            errors.first()
        );
        let others: BTreeSet<String> = (1..JOBS).map(jid_of).collect();
        let unreachable = others.difference(&got).count();
        assert_eq!(
            unreachable, 0,
            "one corrupt stored job (job 0, the queue head) made {unreachable} other jobs of its queue unreachable: \
             every FETCH answers {:?} — werk neither refused the damaged store at start-up nor skipped the bad row",
            errors.first()
        );
    });
}

#[test]
fn one_corrupt_scheduled_job_does_not_wedge_the_scheduler() {
    let tmp = tempfile::Builder::new()
        .prefix("werk-damaged-")
        .tempdir()
        .unwrap();
    let mut s = Server::start_in(tmp.path(), ServerOpts::new());
    let mut c = s.conn();
    // 20 jobs due in 3 s, in a known order; job 0 is the first one due.
    for i in 0..20 {
        c.push_ok(&json!({"jid": jid_of(i), "jobtype": "Later", "queue": "later", "at": rfc3339_in(3.0 + i as f64 * 0.01), "args": [arg_of(i)]}));
    }
    assert_eq!(set_size(&c.info(), "scheduled"), 20);
    drop(c);
    let data = s.data_dir.clone();
    assert!(s.terminate(Duration::from_secs(30)).success());
    drop(s);
    corrupt_stored_payload(&data.join("werk.db"), &arg_of(0)[..14]);
    refused_or_serving(
        tmp.path(),
        &data,
        &["--fetch-timeout-ms", "300", "--scan-interval-ms", "50"],
        |addr| {
            let mut c = Conn::connect(addr);
            c.handshake(None, None);
            let mut got = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut last = None;
            while got.len() < 19 && Instant::now() < deadline {
                match c.cmd("FETCH later") {
                    r @ Reply::Bulk(_) => {
                        let j = r.json()["jid"].as_str().unwrap().to_string();
                        c.ack(&j).expect_ok();
                        got.insert(j);
                    }
                    r => last = Some(r),
                }
            }
            let info = c.info();
            println!(
                "corrupt scheduled row: {} of 19 healthy scheduled jobs came due; INFO sets {}",
                got.len(),
                info["faktory"]["sets"]
            );
            assert_eq!(
            got.len(),
            19,
            "one corrupt scheduled job (the first due) kept the {} other scheduled jobs from ever being \
             enqueued (last FETCH: {last:?}; INFO sets {}) — the scheduler's batch fails on the bad row every tick",
            19 - got.len(),
            info["faktory"]["sets"]
        );
        },
    );
}

#[test]
fn one_corrupt_working_job_does_not_stop_reservation_expiry() {
    let tmp = tempfile::Builder::new()
        .prefix("werk-damaged-")
        .tempdir()
        .unwrap();
    // Reservations of 60 s x 0.01 = 600 ms; the reaper of this first server never runs.
    let scaled = ["--time-scale", "0.01", "--reap-interval-ms", "600000"];
    let mut s = Server::start_in(tmp.path(), ServerOpts::new().args(scaled));
    let mut c = s.conn();
    for i in 0..5 {
        c.push_ok(&json!({"jid": jid_of(i), "jobtype": "Held", "queue": "held", "reserve_for": 60, "args": [arg_of(i)]}));
    }
    let mut w = s.worker("holder");
    for i in 0..5 {
        assert_eq!(w.fetch_job("held")["jid"], jid_of(i));
    }
    drop((c, w));
    let data = s.data_dir.clone();
    assert!(s.terminate(Duration::from_secs(30)).success());
    drop(s);
    corrupt_stored_payload(&data.join("werk.db"), &arg_of(0)[..14]);
    let extra = [
        "--time-scale",
        "0.01",
        "--reap-interval-ms",
        "50",
        "--scan-interval-ms",
        "50",
        "--fetch-timeout-ms",
        "300",
    ];
    refused_or_serving(tmp.path(), &data, &extra, |addr| {
        let mut c = Conn::connect(addr);
        c.handshake(None, None);
        let mut got = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while got.len() < 4 && Instant::now() < deadline {
            if let Reply::Bulk(b) = c.cmd("FETCH held") {
                let job: Value = serde_json::from_slice(&b).unwrap();
                let j = job["jid"].as_str().unwrap().to_string();
                c.ack(&j).expect_ok();
                got.insert(j);
            }
        }
        let info = c.info();
        println!(
            "corrupt working row: {} of 4 healthy expired reservations came back; INFO sets {}",
            got.len(),
            info["faktory"]["sets"]
        );
        assert_eq!(
            got.len(),
            4,
            "one corrupt reserved job (the first to expire) kept {} other expired reservations from ever \
             being failed and retried (INFO sets {}) — the reaper's batch fails on the bad row every tick, \
             so those jobs are never delivered again",
            4 - got.len(),
            info["faktory"]["sets"]
        );
    });
}

/// A store above `--blocking-check-mib` is checked in the background while werk serves: damage
/// found there stops werk with a non-zero status and the same message, and an undamaged one
/// keeps serving.
#[test]
fn background_check_of_a_large_store_stops_werk_on_damage() {
    let tmp = tempfile::Builder::new()
        .prefix("werk-damaged-bg-")
        .tempdir()
        .unwrap();
    let data = build_store(tmp.path());
    let db = data.join("werk.db");

    // Undamaged: serves, and is still serving after the check had time to finish.
    let mut a = attempt(
        tmp.path(),
        &data,
        &["--blocking-check-mib", "0"],
        REFUSAL_LIMIT,
    );
    let addr = a.listening.unwrap_or_else(|| {
        panic!(
            "undamaged store with a background check did not start; stderr:\n{}",
            a.stderr
        )
    });
    // The background check finishes (logs its pass), and werk is still serving after it.
    wait_for_file_text(
        &a.err_path,
        "integrity check passed",
        Duration::from_secs(60),
    );
    let running = matches!(a.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
    let log = fs::read_to_string(&a.err_path).unwrap_or_default();
    assert!(
        running,
        "werk stopped on an undamaged store; stderr:\n{log}"
    );
    assert!(
        log.contains("integrity check passed"),
        "no passed check in the log:\n{log}"
    );
    let mut c = Conn::connect(addr);
    c.handshake(None, None);
    assert!(c.info()["faktory"]["queues"].is_object());
    drop(c);
    drop(a);

    let len = fs::metadata(&db).unwrap().len();
    let mut f = OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(len / 2 - 1234)).unwrap();
    f.write_all(&random_bytes(0xBAC6, 16 * 1024)).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // Damaged: may get as far as listening, but must then stop on its own with status 1.
    let mut a = attempt(
        tmp.path(),
        &data,
        &["--blocking-check-mib", "0"],
        REFUSAL_LIMIT,
    );
    let status = match a.status {
        Some(st) => st,
        None => {
            let child = a.child.as_mut().expect("listening");
            let deadline = Instant::now() + REFUSAL_LIMIT;
            loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                assert!(
                    Instant::now() < deadline,
                    "werk kept serving a damaged store; stderr:\n{}",
                    fs::read_to_string(&a.err_path).unwrap_or_default()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let log = fs::read_to_string(&a.err_path).unwrap_or_default();
    println!("damaged store, background check: {status}");
    assert_eq!(status.code(), Some(1), "stderr:\n{log}");
    assert!(
        log.contains(&*db.to_string_lossy()) && log.contains("is damaged"),
        "the error does not name the damaged werk.db; stderr:\n{log}"
    );
}
