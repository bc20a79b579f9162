//! Enterprise throttles end to end over the raw protocol against the real `werk` binary:
//! `conf.d/throttles.toml` in the config directory limits how many jobs of a queue are working
//! at once, across all workers (`concurrency`) or per worker process (`worker`). A FETCH that
//! would exceed a limit treats the queue as empty and moves on to the next one; ACK and FAIL give
//! the slot back, and so does `timeout` (real seconds, not scaled by `--time-scale`). Invalid
//! files are refused at start; SIGHUP reloads them.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn write_throttles(config_dir: &Path, text: &str) {
    let dir = config_dir.join("conf.d");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("throttles.toml"), text).unwrap();
}

fn opts() -> ServerOpts {
    ServerOpts::new().fetch_timeout_ms(150)
}

/// Starts a server whose data dir (= config dir) holds `throttles.toml` with `text`.
fn start_with(tmp: &Path, text: &str, opts: ServerOpts) -> Server {
    write_throttles(&tmp.join("data"), text);
    Server::start_in(tmp, opts)
}

fn push_n(c: &mut Conn, queue: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let jid = jid(&format!("{queue}-{i}"));
            c.push_ok(&json!({"jid": jid, "jobtype": "T", "args": [i], "queue": queue}));
            jid
        })
        .collect()
}

fn jid_of(job: &Value) -> String {
    job["jid"].as_str().expect("jid").to_string()
}

fn hup(s: &Server) {
    unsafe {
        libc::kill(s.pid(), libc::SIGHUP);
    }
}

const CONF: &str = r#"
[throttles]
slow = { concurrency = 2, timeout = 60 }
perw = { worker = 1, timeout = 60 }
"#;

#[test]
fn concurrency_limit_is_shared_by_all_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start_with(tmp.path(), CONF, opts());
    let mut c = s.conn();
    push_n(&mut c, "slow", 5);
    let other = push_n(&mut c, "other", 2);
    let (mut w1, mut w2, mut w3) = (s.worker("cc-1"), s.worker("cc-2"), s.worker("cc-3"));

    let a = w1.fetch_job("slow");
    let b = w2.fetch_job("slow");
    assert_eq!(a["queue"], "slow");
    assert_eq!(b["queue"], "slow");
    // Two working: the third FETCH finds `slow` "empty" (5 jobs are still queued)…
    assert!(
        w3.fetch("slow").is_none(),
        "a third slow job was handed out"
    );
    assert!(
        w1.fetch("slow").is_none(),
        "the same worker cannot exceed it either"
    );
    assert_eq!(queue_size(&c.info(), "slow"), Some(3));
    // … and falls through to the next queue of the FETCH.
    let o = w3.fetch_job("slow other");
    assert_eq!(jid_of(&o), other[0], "fell through to `other`: {o}");
    // Unthrottled queues are unaffected.
    let o2 = w3.fetch_job("other");
    assert_eq!(jid_of(&o2), other[1]);
    w3.ack(&other[0]).expect_ok();
    w3.ack(&other[1]).expect_ok();

    // ACK frees a slot.
    w1.ack(&jid_of(&a)).expect_ok();
    let d = w3.fetch_job("slow");
    assert_eq!(d["queue"], "slow");
    assert!(
        w1.fetch("slow").is_none(),
        "limit 2 again: b and d are working"
    );
    // FAIL frees a slot too.
    w2.fail(&json!({"jid": jid_of(&b), "errtype": "E", "message": "x"}))
        .expect_ok();
    let e = w1.fetch_job("slow");
    assert_eq!(e["queue"], "slow");
    assert!(w2.fetch("slow").is_none());
    // The last one (b waits in the retry set).
    w3.ack(&jid_of(&d)).expect_ok();
    let f = w3.fetch_job("slow");
    assert_eq!(queue_size(&c.info(), "slow").unwrap_or(0), 0);
    w1.ack(&jid_of(&e)).expect_ok();
    w3.ack(&jid_of(&f)).expect_ok();
    let idle = wait_for(Duration::from_secs(3), Duration::from_millis(20), || {
        let info = c.info();
        (set_size(&info, "working") == 0).then_some(())
    });
    assert!(idle.is_some(), "jobs still working: {}", c.info());
}

#[test]
fn worker_limit_applies_per_worker_process() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start_with(tmp.path(), CONF, opts());
    let mut c = s.conn();
    push_n(&mut c, "perw", 5);
    push_n(&mut c, "fallback", 1);
    let mut a1 = s.worker("pw-A");
    let mut a2 = s.worker("pw-A"); // a second connection of the same process
    let mut b1 = s.worker("pw-B");

    let ja = a1.fetch_job("perw");
    assert!(
        a1.fetch("perw").is_none(),
        "worker A already has its one perw job"
    );
    assert!(
        a2.fetch("perw").is_none(),
        "the limit is per worker process (wid), not per connection"
    );
    let fb = a2.fetch_job("perw fallback");
    assert_eq!(fb["queue"], "fallback", "falls through: {fb}");
    let jb = b1.fetch_job("perw");
    assert_eq!(jb["queue"], "perw", "worker B has its own slot");
    assert!(b1.fetch("perw").is_none());
    // A third worker process gets its own slot.
    let mut c1 = s.worker("pw-C");
    let jc = c1.fetch_job("perw");
    assert_eq!(jc["queue"], "perw");

    // ACK by A frees A's slot (for any of A's connections).
    a1.ack(&jid_of(&ja)).expect_ok();
    let ja2 = a2.fetch_job("perw");
    assert_eq!(ja2["queue"], "perw");
    assert!(a1.fetch("perw").is_none());
    assert!(b1.fetch("perw").is_none());
    assert_eq!(queue_size(&c.info(), "perw"), Some(1));
}

/// A slot is reclaimed after `timeout` real seconds although the job keeps running (and is
/// still ACKed fine). `--time-scale` does not scale the timeout.
#[test]
fn timeout_reclaims_the_slot_in_real_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start_with(
        tmp.path(),
        "[throttles]\none = { concurrency = 1, timeout = 1 }\n",
        opts().args(["--time-scale", "0.01", "--reap-interval-ms", "50"]),
    );
    let mut c = s.conn();
    // reserve_for 600 s × 0.01 = 6 s: the reservation outlives the test's waits.
    for i in 0..3 {
        c.push_ok(&json!({"jid": format!("one-timeout-{i}"), "jobtype": "T", "args": [], "queue": "one", "reserve_for": 600}));
    }
    let (mut w1, mut w2) = (s.worker("to-1"), s.worker("to-2"));
    let a = w1.fetch_job("one");
    let fetched = Instant::now();
    // Throttle timeouts are judged by FETCH itself against the clock: FETCH keeps finding the
    // slot held over most of the second (timeout × 0.01 = 10 ms would have passed long ago).
    let mut tries = 0;
    while fetched.elapsed() < Duration::from_millis(700) {
        assert!(
            w2.fetch("one").is_none(),
            "slot reclaimed before its 1 s timeout, after {:?}",
            fetched.elapsed()
        );
        tries += 1;
    }
    assert!(tries >= 2, "only {tries} FETCHes in the first 700 ms");
    let b = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        w2.fetch("one").map(|x| x.1)
    })
    .expect("the slot was never reclaimed");
    let took = fetched.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(3000),
        "reclaimed after {took:?}, want ≈1 s"
    );
    assert_ne!(a["jid"], b["jid"]);
    // The first job was not failed or re-delivered: it is still working and ACKs fine.
    let info = c.info();
    assert_eq!(set_size(&info, "working"), 2, "{info}");
    assert_eq!(info["faktory"]["total_failures"], 0, "{info}");
    w1.ack(&jid_of(&a)).expect_ok();
    // b holds the only slot now (for ≤1 s).
    assert!(w1.fetch("one").is_none());
    w2.ack(&jid_of(&b)).expect_ok();
    assert_eq!(w1.fetch_job("one")["jid"], "one-timeout-2");
}

#[test]
fn invalid_throttles_file_is_refused_at_start() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "[throttles]\nslow = { concurrency = \"two\", timeout = 60 }\n",
            &["throttles.toml", "slow", "concurrency"],
        ),
        (
            "[throttles]\nok = { concurrency = 1 }\nperw = { worker = -1, timeout = 60 }\n",
            &["throttles.toml", "perw", "worker"],
        ),
        (
            "[throttles]\nnolimit = { timeout = 60 }\n",
            &["throttles.toml", "nolimit"],
        ),
        (
            "[throttles]\nslow = { concurrency = 2,\n",
            &["throttles.toml"],
        ),
    ];
    for (text, needles) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir_all(&data).unwrap();
        write_throttles(&data, text);
        let out = Command::new(WERK)
            .args(["serve", "-b", "127.0.0.1:0", "-w", ":0", "-d"])
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "werk started with an invalid throttles.toml:\n{text}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "it must refuse before listening"
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "stderr lacks {needle:?} for\n{text}\nstderr:\n{stderr}"
            );
        }
    }
}

/// `-c DIR` names the config directory; SIGHUP reloads the limits (raised, then removed).
#[test]
fn sighup_reloads_throttles_from_the_config_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    write_throttles(
        &conf,
        "[throttles]\nslow = { concurrency = 1, timeout = 60 }\n",
    );
    let s = Server::start_in(tmp.path(), opts().arg("-c").arg(conf.to_str().unwrap()));
    let mut c = s.conn();
    push_n(&mut c, "slow", 6);
    let mut ws: Vec<Conn> = (0..4).map(|i| s.worker(&format!("hup-{i}"))).collect();
    ws[0].fetch_job("slow");
    assert!(ws[1].fetch("slow").is_none(), "limit 1 from -c DIR");

    write_throttles(
        &conf,
        "[throttles]\nslow = { concurrency = 3, timeout = 60 }\n",
    );
    hup(&s);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while got < 2 {
        assert!(
            Instant::now() < deadline,
            "the raised limit did not take effect within 5 s of SIGHUP (got {got} more)"
        );
        if ws[1 + got].fetch("slow").is_some() {
            got += 1;
        }
    }
    assert!(ws[3].fetch("slow").is_none(), "limit 3 after the reload");

    // An invalid file on SIGHUP keeps the running limits.
    write_throttles(&conf, "[throttles]\nslow = { concurrency = \"many\" }\n");
    hup(&s);
    wait_for_log(&s, "configuration not reloaded", Duration::from_secs(5));
    assert!(
        ws[3].fetch("slow").is_none(),
        "a bad reload must keep limit 3"
    );

    // Removing the throttle lifts the limit.
    fs::write(conf.join("conf.d/throttles.toml"), "# no throttles\n").unwrap();
    hup(&s);
    let got = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        ws[3].fetch("slow")
    });
    assert!(
        got.is_some(),
        "the limit stayed after the throttle was removed"
    );
    assert!(ws[3].fetch("slow").is_some(), "no limit at all any more");
    assert!(
        s.log().contains("throttles.toml"),
        "the bad reload is logged naming the file"
    );
}

/// A FETCH blocked on a throttled queue gets the job once a slot is freed, within its fetch
/// timeout.
#[test]
fn freed_slot_wakes_a_waiting_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start_with(
        tmp.path(),
        "[throttles]\nslow = { concurrency = 1, timeout = 60 }\n",
        ServerOpts::new().fetch_timeout_ms(3000),
    );
    let mut c = s.conn();
    push_n(&mut c, "slow", 2);
    let (mut w1, mut w2) = (s.worker("wake-1"), s.worker("wake-2"));
    let a = w1.fetch_job("slow");
    let sent = Instant::now();
    w2.send("FETCH slow");
    // The FETCH is parked (the throttle makes the queue look empty) before the slot is freed.
    wait_fetches_waiting(&mut c, 1);
    w1.ack(&jid_of(&a)).expect_ok();
    let r = w2.read_reply().expect("FETCH reply");
    let took = sent.elapsed();
    assert!(
        matches!(r, Reply::Bulk(_)),
        "the waiting FETCH got {r:?} after {took:?}"
    );
    assert!(
        took < Duration::from_millis(2000),
        "the FETCH waited {took:?}: the freed slot did not wake it"
    );
}
