//! Power-loss tests: the data directory lives on the FUSE filesystem of `crates/werk-powerloss`,
//! which keeps every write not covered by a completed fsync/fdatasync in memory and drops it
//! (all of it, or a random part) at a simulated power cut. A SIGKILL alone keeps the operating
//! system's page cache, so only this can show that an answered change was really on disk.
//!
//! * `power_cuts_lose_nothing_acknowledged`: `werk torture` with a cut after every kill;
//!   every PUSH answered `+OK` must be acknowledged in the end and no job delivered after its
//!   ACK's `+OK`. Tunable for long runs: `WERK_POWERLOSS_CUTS` (default 15),
//!   `WERK_POWERLOSS_MAX_SECS` (default 50), `WERK_POWERLOSS_SEED`; for experiments,
//!   `WERK_POWERLOSS_WERK` (another werk executable, e.g. one built with the fsync removed) and
//!   `WERK_POWERLOSS_TORTURE_ARGS` (extra `werk torture` arguments, split on whitespace).
//!   `…_by_one_producer_and_one_worker`: the same with one connection of each, whose requests
//!   the connection's own thread mostly runs (the store's writer thread being idle).
//! * `failed_fsync_stops_werk_unanswered`: a failing fsync makes werk abort without answering
//!   the request waiting for it, and the store opens again afterwards.
//!
//! FUSE must be available (`/dev/fuse`; root, or `fusermount3` from Debian's fuse3): without it
//! these tests fail, saying so.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{jid, job, wait_for, Server, ServerOpts};
use werk_powerloss::{DirModel, Mount, Options};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Mounts the power-loss filesystem at `TMP/mnt` over `TMP/backing` in a new temporary
/// directory (declared first, so it is removed after the unmount).
fn mount() -> (tempfile::TempDir, Mount) {
    let tmp = tempfile::Builder::new()
        .prefix("werk-powerloss-")
        .tempdir()
        .unwrap();
    let seed = env_u64(
        "WERK_POWERLOSS_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    println!("power-loss filesystem seed {seed} (WERK_POWERLOSS_SEED to repeat)");
    let (backing, mnt) = (tmp.path().join("backing"), tmp.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let opts = Options {
        seed,
        dir_model: DirModel::Journal,
    };
    let m = werk_powerloss::mount(&backing, &mnt, opts).unwrap_or_else(|e| {
        panic!(
            "cannot mount the power-loss FUSE filesystem, so the power-loss tests cannot run: {e}"
        )
    });
    (tmp, m)
}

fn stats(m: &Mount) -> String {
    std::fs::read_to_string(m.control()).expect("read the control file")
}

fn stat(stats: &str, name: &str) -> u64 {
    let mut words = stats.split_whitespace();
    while let Some(w) = words.next() {
        if w == name {
            return words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    panic!("{name} not in {stats:?}")
}

#[test]
fn power_cuts_lose_nothing_acknowledged() {
    power_cuts(&[]);
}

/// One producer and one worker leave the store's writer thread idle between requests, so their
/// PUSHes and ACKs are mostly applied, committed and flushed by the connection's own thread
/// (the store's `run_here`): this run covers that path as the one above covers the writer's.
/// With that path's flush removed on purpose (2026-12-03) it failed three runs out of three
/// (3, 1 and 8 acknowledged jobs lost); the test above failed too (9, 1 and 1 lost, 2 and 1
/// resurrected), but it had passed once with an earlier version of the path, which this run
/// caught (1, 1 and 3 lost).
#[test]
fn power_cuts_lose_nothing_acknowledged_by_one_producer_and_one_worker() {
    power_cuts(&["--producers", "1", "--workers", "1"]);
}

fn power_cuts(args: &[&str]) {
    let cuts = env_u64("WERK_POWERLOSS_CUTS", 15);
    let max_secs = env_u64("WERK_POWERLOSS_MAX_SECS", 50);
    let (_tmp, m) = mount();
    let data = m.mountpoint().join("data");
    let cut = format!("echo 'cut any' > '{}'", m.control().display());
    let werk = std::env::var("WERK_POWERLOSS_WERK").unwrap_or(env!("CARGO_BIN_EXE_werk").into());
    let extra = std::env::var("WERK_POWERLOSS_TORTURE_ARGS").unwrap_or_default();
    let out = Command::new(werk)
        .args(["torture", "--rounds", &cuts.to_string()])
        .args(args)
        .args(extra.split_whitespace())
        .args(["--max-secs", &max_secs.to_string()])
        .args(["--drain-timeout-secs", "60", "--data-dir"])
        .arg(&data)
        .args(["--after-kill", &cut])
        .output()
        .expect("run werk torture");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let st = stats(&m);
    println!("{stdout}\npower-loss filesystem: {st}");
    assert!(
        out.status.success(),
        "werk torture with power cuts failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("lost 0, resurrected 0"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "5 passed, 0 failed"),
        "{stdout}"
    );
    let rounds = format!("rounds {cuts}, kills {cuts}, after-kill commands {cuts}");
    assert!(stdout.contains(&rounds), "expected {rounds:?} in {stdout}");
    // The cuts really happened and really dropped unsynced writes.
    assert_eq!(stat(&st, "cuts"), cuts, "{st}");
    assert!(
        stat(&st, "pages_dropped") > 0,
        "no cut dropped anything: {st}"
    );
    assert_eq!(stat(&st, "failed_fsyncs"), 0, "{st}");
}

#[test]
fn failed_fsync_stops_werk_unanswered() {
    let (tmp, m) = mount();
    let data = m.mountpoint().join("data");
    let opts = ServerOpts::new().fetch_timeout_ms(200);

    let mut s = Server::spawn(tmp.path(), data.clone(), opts.clone());
    let mut c = s.conn();
    let kept = jid("kept");
    c.push_ok(&job(&kept, "PowerLoss"));

    m.command("fail-fsync on").unwrap();
    let doomed = jid("doomed");
    // An error means the abort closed the connection: no answer, as it must be.
    if let Ok(r) = c.try_cmd(&format!("PUSH {}", job(&doomed, "PowerLoss"))) {
        assert!(
            !r.is_ok(),
            "PUSH answered +OK although its fsync failed; log:\n{}",
            s.log()
        );
    }
    let exited = wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
        (!s.is_running()).then_some(())
    });
    assert!(
        exited.is_some(),
        "werk still runs after a failed fsync; log:\n{}",
        s.log()
    );
    let log = s.log();
    assert!(
        log.contains("fdatasync of") && log.contains("failed"),
        "werk did not report the failed fdatasync; log:\n{log}"
    );
    let st = stats(&m);
    assert!(stat(&st, "failed_fsyncs") >= 1, "{st}");

    // The disk recovers; the failure may have cost whatever was not yet synced (the kernel can
    // drop dirty pages after a failed fsync), so cut power too before restarting.
    m.command("fail-fsync off").unwrap();
    m.command("cut all").unwrap();
    let s2 = Server::spawn(tmp.path(), data, opts);
    let mut c2 = s2.conn();
    let (_, got) = c2.fetch("default").expect("the acknowledged PUSH survived");
    assert_eq!(got["jid"], kept.as_str());
    c2.ack(&kept).expect_ok();
    // The doomed job was never answered +OK: it may or may not be there, but nothing else is.
    if let Some((_, j)) = c2.fetch("default") {
        assert_eq!(j["jid"], doomed.as_str(), "unexpected job {j}");
    }
    println!("power-loss filesystem: {}", stats(&m));
}

/// A failed fsync of the database file — which only a WAL checkpoint syncs — is as fatal as a
/// failed fsync of the WAL: werk stops, and everything answered `+OK` is still in the WAL.
#[test]
fn failed_checkpoint_fsync_stops_werk_and_keeps_the_wal() {
    let (tmp, m) = mount();
    let data = m.mountpoint().join("data");
    let opts = ServerOpts::new().fetch_timeout_ms(200);
    let mut s = Server::spawn(tmp.path(), data.clone(), opts.clone());
    let mut c = s.conn();
    m.command("fail-fsync werk.db").unwrap();
    // ~5 MB of jobs: the WAL passes the checkpoint threshold (1,000 pages).
    let big = "x".repeat(20_000);
    let mut answered = Vec::new();
    for i in 0..300 {
        let j = jid(&format!("ckpt{i}"));
        let body = serde_json::json!({"jid": j, "jobtype": "PowerLoss", "args": [big], "queue": "default"});
        match c.try_cmd(&format!("PUSH {body}")) {
            Ok(r) if r.is_ok() => answered.push(j),
            _ => break,
        }
        if !s.is_running() {
            break;
        }
    }
    let exited = wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
        (!s.is_running()).then_some(())
    });
    assert!(
        exited.is_some(),
        "werk still runs after a checkpoint's fsync failed ({} PUSHes answered); log:\n{}",
        answered.len(),
        s.log()
    );
    let log = s.log();
    assert!(
        log.contains("a WAL checkpoint failed"),
        "werk did not report the failed checkpoint; log:\n{log}"
    );
    assert!(
        !answered.is_empty(),
        "no PUSH was answered before the checkpoint"
    );
    let st = stats(&m);
    assert!(stat(&st, "failed_fsyncs") >= 1, "{st}");
    // Power goes too; every PUSH answered +OK is still there after the restart.
    m.command("fail-fsync off").unwrap();
    m.command("cut all").unwrap();
    let s2 = Server::spawn(tmp.path(), data, opts);
    let mut c2 = s2.conn();
    let info = c2.info();
    let size = common::queue_size(&info, "default").unwrap_or(0);
    assert!(
        size >= answered.len() as u64,
        "{} PUSHes were answered +OK but the queue holds {size}",
        answered.len()
    );
    println!(
        "{} PUSHes answered before the checkpoint's fsync failed; all there after the restart ({})",
        answered.len(),
        stats(&m)
    );
}
