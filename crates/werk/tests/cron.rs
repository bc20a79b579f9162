//! Cron against the real `werk serve` binary: entries from `conf.d/*.toml`, one job per tick,
//! SIGHUP reload, refused configurations, missed ticks (once / skip) and a SIGKILL crash test
//! around tick boundaries. Schedules use the seconds field, so no test waits for minutes; the
//! calendar rules (named zones, DST edges) are unit-tested in `werk_core::cron`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use werk_core::time::{now_millis, parse_rfc3339};

fn write_conf(data: &Path, name: &str, text: &str) {
    let dir = data.join("conf.d");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), text).unwrap();
}

fn opts() -> ServerOpts {
    ServerOpts::new().fetch_timeout_ms(100)
}

/// Fetches and ACKs everything in `queue` until it is empty; returns the jobs.
fn drain(s: &Server, queue: &str) -> Vec<Value> {
    let mut c = s.worker("cron-drainer");
    let mut jobs = Vec::new();
    while let Some((_, job)) = c.fetch(queue) {
        c.ack(job["jid"].as_str().unwrap()).expect_ok();
        jobs.push(job);
    }
    jobs
}

fn created(job: &Value) -> i64 {
    parse_rfc3339(job["created_at"].as_str().expect("created_at")).expect("created_at parses")
}

fn hup(s: &Server) {
    unsafe {
        libc::kill(s.pid(), libc::SIGHUP);
    }
}

const EVERY_SECOND: &str = r#"
[[cron]]
  schedule = "* * * * * *"
  [cron.job]
    type = "Tick"
    queue = "cron"
    args = [1, "x", { deep = [true, false] }]
    retry = 2
    [cron.job.custom]
      origin = "werk-cron-test"
"#;

#[test]
fn per_second_entry_enqueues_one_job_per_tick() {
    let tmp = tempfile::tempdir().unwrap();
    write_conf(&tmp.path().join("data"), "cron.toml", EVERY_SECOND);
    let started = Instant::now();
    let s = Server::start_in(tmp.path(), opts());
    // Three ticks enqueued.
    wait_info(&mut s.conn(), Duration::from_secs(10), "3 cron jobs", |i| {
        queue_size(i, "cron").unwrap_or(0) >= 3
    });
    let jobs = drain(&s, "cron");
    let secs = started.elapsed().as_secs();
    assert!(
        jobs.len() >= 3 && jobs.len() as u64 <= secs + 1,
        "expected one job per second, got {} in {secs}+ s: {jobs:?}",
        jobs.len()
    );
    let mut ticks: Vec<i64> = jobs.iter().map(created).collect();
    ticks.sort();
    for w in ticks.windows(2) {
        assert_eq!(
            w[1] - w[0],
            1000,
            "ticks are consecutive seconds: {ticks:?}"
        );
    }
    for job in &jobs {
        assert_eq!(created(job) % 1000, 0, "a tick is a whole second: {job}");
        assert_eq!(job["jobtype"], "Tick");
        assert_eq!(job["queue"], "cron");
        assert_eq!(
            job["args"],
            serde_json::json!([1, "x", {"deep": [true, false]}])
        );
        assert_eq!(job["retry"], 2);
        assert_eq!(job["custom"]["origin"], "werk-cron-test");
        let jid = job["jid"].as_str().unwrap();
        assert!(
            jid.len() == 24 && jid.chars().all(|c| c.is_ascii_hexdigit()),
            "jid {jid}"
        );
    }
    let distinct: BTreeSet<&str> = jobs.iter().map(|j| j["jid"].as_str().unwrap()).collect();
    assert_eq!(distinct.len(), jobs.len());
}

#[test]
fn invalid_entry_is_refused_naming_file_entry_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_conf(
        &data,
        "jobs.toml",
        r#"
[[cron]]
  schedule = "0 9 * * 1"
  [cron.job]
    type = "Weekly"

[[cron]]
  schedule = "0 9 * * 1"
  timezone = "Mars/Olympus_Mons"
  [cron.job]
    type = "Weekly"
"#,
    );
    let out = Command::new(WERK)
        .args(["serve", "-b", "127.0.0.1:0", "-w", ":0", "-d"])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "werk started with an invalid cron entry"
    );
    for needle in ["jobs.toml", "entry 2", "timezone"] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "it must refuse before listening"
    );
}

#[test]
fn cron_list_shows_next_runs_in_the_entry_zone() {
    let tmp = tempfile::tempdir().unwrap();
    write_conf(
        tmp.path(),
        "cron.toml",
        r#"
[[cron]]
  schedule = "0 9 * * 1"
  timezone = "Europe/Berlin"
  [cron.job]
    type = "WeeklyReport"
"#,
    );
    let out = Command::new(WERK)
        .args(["cron", "list", "--count", "3", "-c"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("WeeklyReport") && text.contains("Europe/Berlin"),
        "{text}"
    );
    let nexts: Vec<&str> = text.lines().filter(|l| l.contains("next:")).collect();
    assert_eq!(nexts.len(), 3, "{text}");
    for l in nexts {
        assert!(l.contains("T09:00:00+0"), "runs at 09:00 local: {l}");
    }
}

#[test]
fn sighup_reloads_entries_and_keeps_the_running_ones_on_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let s = Server::start_in(tmp.path(), opts());
    wait_for_log(&s, "cron schedule loaded entries=0", Duration::from_secs(5));
    assert!(drain(&s, "cron").is_empty(), "no entries yet");

    write_conf(&data, "cron.toml", EVERY_SECOND);
    hup(&s);
    wait_for_log(&s, "configuration reloaded", Duration::from_secs(5));
    let mut c = s.conn();
    wait_info(
        &mut c,
        Duration::from_secs(10),
        "2 cron jobs after SIGHUP",
        |i| queue_size(i, "cron").unwrap_or(0) >= 2,
    );
    let first = drain(&s, "cron");
    assert!(
        first.len() >= 2,
        "after SIGHUP the new entry fires: {first:?}"
    );

    write_conf(
        &data,
        "broken.toml",
        "[[cron]]\n  schedule = \"not a schedule\"\n",
    );
    hup(&s);
    wait_for_log(&s, "not reloaded", Duration::from_secs(5));
    assert!(s.log().contains("broken.toml"), "the error names the file");
    // A tick after the bad reload is enqueued.
    let refused_at = now_millis();
    let mut later = Vec::new();
    let ticked = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        later.extend(drain(&s, "cron"));
        later.iter().any(|j| created(j) > refused_at).then_some(())
    });
    assert!(
        ticked.is_some(),
        "the running entries go on after a bad reload: {later:?}"
    );
}

/// Two entries every 2 s, one `missed = "once"`, one `missed = "skip"`; the server is down for
/// ≈4.5 s. On restart the `once` entry fires exactly one job for the ticks it missed (the latest
/// of them), the `skip` entry none.
#[test]
fn missed_ticks_fire_once_or_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_conf(
        &data,
        "cron.toml",
        r#"
[[cron]]
  schedule = "*/2 * * * * *"
  missed = "once"
  [cron.job]
    type = "CatchUp"
    queue = "once"

[[cron]]
  schedule = "*/2 * * * * *"
  missed = "skip"
  [cron.job]
    type = "NoCatchUp"
    queue = "skip"
"#,
    );
    let o = opts().args(["--cron-late-secs", "1"]);
    let mut s = Server::start_in(tmp.path(), o.clone());
    // Both entries have fired (so the store knows when they last did).
    wait_info(
        &mut s.conn(),
        Duration::from_secs(10),
        "a tick of each entry",
        |i| queue_size(i, "once").unwrap_or(0) >= 1 && queue_size(i, "skip").unwrap_or(0) >= 1,
    );
    // A loaded machine may take long to restart; the run only counts when the restart happened
    // within one 2 s window, ≥1 s after its tick (so that tick was missed, not on time).
    for attempt in 1..=4 {
        let down_from = now_millis();
        s.terminate(Duration::from_secs(10));
        // Down for ≈4.5 s (time passing is the condition: ticks are missed meanwhile).
        thread::sleep(Duration::from_millis(4000));
        // Restart ≈1.2 s after a tick: the latest tick is then >1 s (--cron-late-secs) old.
        let phase = (now_millis() % 2000) as u64;
        thread::sleep(Duration::from_millis((1200 + 2000 - phase) % 2000));
        let before = now_millis();
        s = Server::start_in(tmp.path(), o.clone());
        let up_at = now_millis();
        let latest_missed = (before / 2000) * 2000;
        if up_at / 2000 != before / 2000 || before - latest_missed <= 1000 {
            println!(
                "attempt {attempt}: restart took {} ms across a tick; again",
                up_at - before
            );
            continue;
        }
        // The restarted server has dealt with the missed tick of both entries.
        wait_for_log(&s, "skipped as configured", Duration::from_secs(5));
        wait_for_log(&s, "late=true", Duration::from_secs(5));
        let in_downtime = |t: i64| t > down_from && t <= up_at;
        let once: Vec<i64> = drain(&s, "once").iter().map(created).collect();
        let skip: Vec<i64> = drain(&s, "skip").iter().map(created).collect();
        let once_missed: Vec<i64> = once.iter().copied().filter(|&t| in_downtime(t)).collect();
        let skip_missed: Vec<i64> = skip.iter().copied().filter(|&t| in_downtime(t)).collect();
        assert_eq!(
            once_missed,
            vec![latest_missed],
            "once: exactly one job, for the latest missed tick; got {once:?} (down {down_from}..{up_at})"
        );
        assert!(
            skip_missed.is_empty(),
            "skip: no job for missed ticks; got {skip:?} (down {down_from}..{up_at})"
        );
        return;
    }
    panic!("the server never restarted fast enough to test missed ticks");
}

/// SIGKILL the server at random moments around tick boundaries (every-second entry); at the end
/// every tick is enqueued at most once, and every tick while the server was up is there.
#[test]
fn kills_around_ticks_never_enqueue_a_tick_twice() {
    let tmp = tempfile::tempdir().unwrap();
    write_conf(&tmp.path().join("data"), "cron.toml", EVERY_SECOND);
    let mut seed: u64 = now_millis() as u64 | 1;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut down: Vec<(i64, i64)> = Vec::new();
    let mut killed_at = now_millis();
    let started = Instant::now();
    for round in 0..14 {
        let mut s = Server::start_in(tmp.path(), opts());
        down.push((killed_at, now_millis()));
        // Kill near a tick boundary: at a random offset from 850 to 1150 ms past a whole second.
        // (These sleeps choose when to crash, at random: not a synchronisation.)
        let run = 400 + rand(1200);
        thread::sleep(Duration::from_millis(run));
        let ms = (now_millis() % 1000) as u64;
        let target = (850 + rand(300)) % 1000;
        thread::sleep(Duration::from_millis((target + 1000 - ms) % 1000));
        killed_at = now_millis();
        s.kill();
        if round % 3 == 0 {
            thread::sleep(Duration::from_millis(1100 + rand(900)));
        }
    }
    let s = Server::start_in(tmp.path(), opts());
    let up = now_millis();
    down.push((killed_at, up));
    // Collect until the tick one second after the final start is in: every tick up to it must
    // be there (or fall in a downtime).
    let mut jobs = Vec::new();
    let caught_up = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        jobs.extend(drain(&s, "cron"));
        jobs.iter().any(|j| created(j) >= up + 1000).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "no tick after the final start: {jobs:?}"
    );
    jobs.extend(drain(&s, "cron"));
    let end = jobs.iter().map(created).max().unwrap() + 1000;
    let ticks: Vec<i64> = jobs.iter().map(created).collect();
    let distinct: BTreeSet<i64> = ticks.iter().copied().collect();
    println!(
        "cron crash test: {} rounds in {:?}, {} jobs, {} distinct ticks",
        down.len() - 1,
        started.elapsed(),
        ticks.len(),
        distinct.len()
    );
    assert_eq!(
        distinct.len(),
        ticks.len(),
        "a tick was enqueued twice: {ticks:?}"
    );
    let first = *distinct.iter().next().expect("some ticks fired");
    let last_expected = (end / 1000 - 1) * 1000;
    for t in (first..=last_expected).step_by(1000) {
        // While the server was down (plus a second of start-up slack), a tick may be missing:
        // `missed = once` fires only the latest tick of a downtime.
        let in_downtime = down
            .iter()
            .any(|&(from, to)| t > from - 1000 && t <= to + 1000);
        assert!(
            distinct.contains(&t) || in_downtime,
            "tick {t} fired nowhere though the server was up; ticks {distinct:?}, downtimes {down:?}"
        );
    }
}
