//! `werk import faktory`: a real `redis-server` (Debian's package) is filled in Faktory's exact
//! layout (LPUSH to queue lists + SADD `queues`, ZADD `scheduled`/`retries`/`dead` with unix
//! second scores, reservations in `working`), the real binary imports it, and a real `werk serve`
//! on the imported store must hand the jobs out as Faktory would have: queues oldest first,
//! sets at their times with their failures kept, jobs in progress enqueued again. Redis must be
//! unchanged afterwards (every key's DUMP compared), refused jobs listed with a non-zero exit,
//! a rerun must store nothing twice, and `--dry-run` nothing at all.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// A throwaway redis-server on a unix socket
// ---------------------------------------------------------------------------------------------

struct Redis {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("werk-redis-")
            .tempdir()
            .expect("tempdir");
        let sock = dir.path().join("redis.sock");
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&sock)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&log).expect("redis log"))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server (Debian package redis-server; .ci/run installs it): {e}")
            });
        let mut r = Redis {
            child,
            sock,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(mut con) = r.try_con() {
                if redis::cmd("PING").query::<String>(&mut con).ok().as_deref() == Some("PONG") {
                    return r;
                }
            }
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!(
                    "redis-server exited with {st}: {}",
                    fs::read_to_string(&r.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 15 s: {}",
                fs::read_to_string(&r.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    fn try_con(&self) -> redis::RedisResult<redis::Connection> {
        let con =
            redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(con)
    }

    fn con(&self) -> redis::Connection {
        self.try_con().expect("connect to redis-server")
    }

    /// DBSIZE and every key's DUMP: equal snapshots mean nothing was written.
    fn snapshot(&self) -> (u64, BTreeMap<Vec<u8>, Vec<u8>>) {
        let mut con = self.con();
        let size: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
        let dumps = keys
            .into_iter()
            .map(|k| {
                let d: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut con).unwrap();
                (k, d)
            })
            .collect();
        (size, dumps)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Faktory's layout, written as Faktory writes it
// ---------------------------------------------------------------------------------------------

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// RFC 3339 with microseconds, as Faktory's `util.Thens`.
fn stamp(secs: f64) -> String {
    chrono::DateTime::from_timestamp_micros((secs * 1e6) as i64)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A job as Faktory's Go client marshals it (`args` given as raw JSON text).
fn fjob(jid: &str, queue: &str, args: &str, extra: &str) -> String {
    format!(
        r#"{{"jid":"{jid}","queue":"{queue}","jobtype":"SomeJob","args":{args},"created_at":"2024-01-02T03:04:05.123456Z","enqueued_at":"2024-01-02T03:04:05.223456Z","retry":25{extra}}}"#
    )
}

fn failure(retry_count: i64, message: &str) -> String {
    format!(
        r#","failure":{{"retry_count":{retry_count},"remaining":{},"failed_at":"2024-01-03T00:00:00.000001Z","next_at":"2024-01-03T00:10:00Z","message":"{message}","errtype":"RuntimeError","backtrace":["app.rb:1","app.rb:2"]}}"#,
        25 - retry_count
    )
}

/// Enqueues as Faktory 1.10 does: the queue's name in `queues`, the job LPUSHed to `q:NAME`
/// (checked against the real Faktory 1.10.0 server).
fn enqueue(con: &mut redis::Connection, queue: &str, job: &str) {
    enqueue_at_key(con, queue, &format!("q:{queue}"), job);
}

/// Enqueues as Faktory did before its `prefixQueues` migration: the list named as the queue.
fn enqueue_legacy(con: &mut redis::Connection, queue: &str, job: &str) {
    enqueue_at_key(con, queue, queue, job);
}

fn enqueue_at_key(con: &mut redis::Connection, queue: &str, key: &str, job: &str) {
    redis::pipe()
        .cmd("SADD")
        .arg("queues")
        .arg(queue)
        .ignore()
        .cmd("LPUSH")
        .arg(key)
        .arg(job)
        .ignore()
        .query::<()>(con)
        .unwrap();
}

fn zadd(con: &mut redis::Connection, set: &str, score: f64, member: &str) {
    redis::cmd("ZADD")
        .arg(set)
        .arg(score)
        .arg(member)
        .query::<()>(con)
        .unwrap();
}

fn reservation(job: &str, expires: f64) -> String {
    format!(
        r#"{{"job":{job},"reserved_at":"{}","expires_at":"{}","wid":"faktory-worker-1"}}"#,
        stamp(expires - 1800.0),
        stamp(expires)
    )
}

// ---------------------------------------------------------------------------------------------
// Running the import
// ---------------------------------------------------------------------------------------------

struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The summary table: set → [found, stored, already stored, refused] (dry run: [found,
    /// would store, refused]).
    fn table(&self) -> BTreeMap<String, Vec<u64>> {
        let mut rows = BTreeMap::new();
        let mut lines = self.stdout.lines().skip_while(|l| !l.starts_with("set "));
        assert!(lines.next().is_some(), "no summary table in:\n{self}");
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let n = words
                .iter()
                .rev()
                .take_while(|w| w.parse::<u64>().is_ok())
                .count();
            assert!(n >= 3, "bad summary row {line:?} in:\n{self}");
            let name = words[..words.len() - n].join(" ");
            let nums = words[words.len() - n..]
                .iter()
                .map(|w| w.parse().unwrap())
                .collect();
            let last = name == "total";
            rows.insert(name, nums);
            if last {
                break;
            }
        }
        rows
    }

    #[track_caller]
    fn row(&self, set: &str) -> Vec<u64> {
        self.table()
            .remove(set)
            .unwrap_or_else(|| panic!("no row {set:?} in:\n{self}"))
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `werk import faktory ARGS` (killed after 60 s).
fn import(args: &[&str]) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(WERK)
        .args(["import", "faktory"])
        .args(args)
        .env_remove("WERK_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(File::create(&o).unwrap())
        .stderr(File::create(&e).unwrap())
        .spawn()
        .expect("spawn werk import");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "werk import did not finish within 60 s: {}",
                fs::read_to_string(&o).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| {
        let mut s = String::new();
        File::open(p).unwrap().read_to_string(&mut s).unwrap();
        s
    };
    Out {
        status,
        stdout: read(&o),
        stderr: read(&e),
    }
}

fn serve_opts() -> ServerOpts {
    ServerOpts::new()
        .fetch_timeout_ms(200)
        .scan_interval_ms(100)
}

/// FETCHes every job of `queue` (until one FETCH finds none); their jids in order.
fn drain(c: &mut Conn, queue: &str) -> Vec<String> {
    let mut jids = Vec::new();
    while let Some((_, j)) = c.fetch(queue) {
        jids.push(j["jid"].as_str().unwrap().to_string());
    }
    jids
}

/// FETCHes from `queue` until a job comes (a due job is moved there by the server's scan).
#[track_caller]
fn fetch_within(c: &mut Conn, queue: &str, limit: Duration) -> (String, Value) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(j) = c.fetch(queue) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "no job in {queue} within {limit:?}"
        );
    }
}

/// `got == want`, reporting the first difference (not thousands of jids).
#[track_caller]
fn assert_same_order(got: &[String], want: &[String]) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "order differs at position {i} of {} (got {}): got {:?}, want {:?}",
            want.len(),
            got.len(),
            &got[i..got.len().min(i + 3)],
            &want[i..want.len().min(i + 3)]
        );
    }
}

#[track_caller]
fn requeue_and_fetch(c: &mut Conn, set: &str, jid: &str, queue: &str) -> Value {
    c.mutate(&json!({"cmd": "requeue", "target": set, "filter": {"jids": [jid]}}))
        .expect_ok();
    let got = c.fetch_job(queue);
    assert_eq!(got["jid"], jid, "{got}");
    got
}

#[track_caller]
fn assert_failure(job: &Value, retry_count: i64, message: &str) {
    let f = &job["failure"];
    assert_eq!(f["retry_count"], retry_count, "{job}");
    assert_eq!(f["remaining"], 25 - retry_count, "{job}");
    assert_eq!(f["message"], message, "{job}");
    assert_eq!(f["errtype"], "RuntimeError", "{job}");
    assert_eq!(f["backtrace"], json!(["app.rb:1", "app.rb:2"]), "{job}");
    assert_eq!(f["failed_at"], "2024-01-03T00:00:00.000001Z", "{job}");
}

const UNICODE_ARGS: &str = r#"["héllo wörld ✓ 😀 日本語","\u00e9\n\"q\"",12345678901234567890123,1.50,-0.0,{"k":[],"z":null}]"#;

fn large_args() -> String {
    let body: String = (0..200_000u32)
        .map(|i| char::from(b'a' + ((i * 7 + i / 13) % 26) as u8))
        .collect();
    format!(r#"["{body}",1]"#)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn imports_every_set_in_faktory_order_without_touching_redis() {
    let redis = Redis::start();
    let mut con = redis.con();
    let now = unix_now();

    // Queues: LPUSH in push order, so each list's oldest job is at its tail.
    let default: Vec<String> = (1..=5).map(|i| format!("default-job-{i}")).collect();
    for (i, j) in default.iter().enumerate() {
        enqueue(
            &mut con,
            "default",
            &fjob(j, "default", &format!("[{i}]"), ""),
        );
        if i == 2 {
            // Refused (no jobtype), between valid jobs.
            enqueue(
                &mut con,
                "default",
                r#"{"jid":"no-jobtype-1","queue":"default","args":[]}"#,
            );
        }
    }
    let bulk: Vec<String> = (0..1050).map(|i| format!("bulk-job-{i:05}")).collect();
    {
        let mut p = redis::pipe();
        for j in &bulk {
            p.cmd("LPUSH")
                .arg("q:bulk")
                .arg(fjob(j, "bulk", "[]", ""))
                .ignore();
        }
        p.cmd("SADD").arg("queues").arg("bulk").ignore();
        p.query::<()>(&mut con).unwrap();
    }
    let large = large_args();
    enqueue(
        &mut con,
        "bytes",
        &fjob("unicode-job-1", "bytes", UNICODE_ARGS, ""),
    );
    enqueue(&mut con, "bytes", &fjob("large-job-1", "bytes", &large, ""));
    // Data of a Faktory from before the `q:` prefix: the list is named as the queue.
    enqueue_legacy(
        &mut con,
        "critical",
        &fjob("critical-job-1", "critical", "[]", ""),
    );
    enqueue_legacy(
        &mut con,
        "critical",
        &fjob("critical-job-2", "critical", "[]", ""),
    );
    redis::cmd("SADD")
        .arg("paused")
        .arg("critical")
        .query::<()>(&mut con)
        .unwrap();
    enqueue(
        &mut con,
        "bad queue!",
        &fjob("bad-queue-job-1", "bad queue!", "[]", ""),
    );
    // A job in progress (reserved by a Faktory worker).
    zadd(
        &mut con,
        "working",
        now + 1700.0,
        &reservation(&fjob("working-job-1", "default", "[42]", ""), now + 1700.0),
    );
    // Scheduled: one due (the server moves it to its queue), one an hour away.
    let due_at = stamp(now - 60.0);
    zadd(
        &mut con,
        "scheduled",
        now - 60.0,
        &fjob(
            "sched-due-1",
            "sched",
            "[]",
            &format!(r#","at":"{due_at}""#),
        ),
    );
    let later = stamp(now + 3600.0); // Faktory: `at` = the score
    zadd(
        &mut con,
        "scheduled",
        now + 3600.0,
        &fjob(
            "sched-later-1",
            "sched",
            "[]",
            &format!(r#","at":"{later}""#),
        ),
    );
    // Retries: one due now, one in an hour.
    zadd(
        &mut con,
        "retries",
        now - 5.0,
        &fjob("retry-due-1", "retryq", "[1]", &failure(3, "boom")),
    );
    zadd(
        &mut con,
        "retries",
        now + 3600.0,
        &fjob("retry-later-1", "retryq", "[2]", &failure(7, "later boom")),
    );
    // Dead: one job, and one member that is not JSON.
    zadd(
        &mut con,
        "dead",
        now - 100.0,
        &fjob("dead-job-1", "deadq", "[3]", &failure(25, "gave up")),
    );
    zadd(&mut con, "dead", now - 50.0, "{this is not json");

    let before = redis.snapshot();
    let tmp = tempfile::Builder::new()
        .prefix("werk-import-")
        .tempdir()
        .unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();

    let out = import(&["--redis", &redis.url(), "-d", data_arg]);
    assert!(!out.status.success(), "refused jobs: non-zero exit\n{out}");
    assert!(out.stderr.contains("3 job(s) were refused"), "{out}");
    assert!(out.stdout.contains("refused: 3 job(s)"), "{out}");
    for needle in [
        "queue default: jid \"no-jobtype-1\": jobs must have a jobtype parameter",
        "queue bad queue!: jid \"bad-queue-job-1\": cannot get \"bad queue!\" queue",
        "dead: no jid (member starts \"{this is not json\"): invalid JSON",
    ] {
        assert!(out.stdout.contains(needle), "missing {needle:?}:\n{out}");
    }
    assert_eq!(out.row("working"), vec![1, 1, 0, 0], "{out}");
    assert_eq!(out.row("queue default"), vec![6, 5, 0, 1], "{out}");
    assert_eq!(out.row("queue bulk"), vec![1050, 1050, 0, 0], "{out}");
    assert_eq!(out.row("queue bytes"), vec![2, 2, 0, 0], "{out}");
    assert_eq!(out.row("queue critical"), vec![2, 2, 0, 0], "{out}");
    assert_eq!(out.row("queue bad queue!"), vec![1, 0, 0, 1], "{out}");
    assert_eq!(out.row("scheduled"), vec![2, 2, 0, 0], "{out}");
    assert_eq!(out.row("retries"), vec![2, 2, 0, 0], "{out}");
    assert_eq!(out.row("dead"), vec![2, 1, 0, 1], "{out}");
    assert_eq!(out.row("total"), vec![1068, 1065, 0, 3], "{out}");
    assert!(
        out.stdout
            .contains("queue critical: paused in Faktory, paused in Werk"),
        "{out}"
    );

    // Run again: nothing is stored twice.
    let again = import(&["--redis", &redis.url(), "-d", data_arg]);
    assert!(!again.status.success(), "{again}");
    assert_eq!(again.row("total"), vec![1068, 0, 1065, 3], "{again}");
    assert_eq!(again.row("queue bulk"), vec![1050, 0, 1050, 0], "{again}");

    // Faktory's Redis is exactly as it was.
    assert!(redis.snapshot() == before, "the import changed Redis");

    let s = Server::start_in(tmp.path(), serve_opts());
    // The store is locked by the running server: a clear error, nothing done.
    let locked = import(&["--redis", &redis.url(), "-d", data_arg]);
    assert!(!locked.status.success(), "{locked}");
    assert!(
        locked
            .stderr
            .contains("stop the server first or use --database-url"),
        "{locked}"
    );

    let mut c = s.conn();
    let info = c.info();
    assert_eq!(set_size(&info, "dead"), 1, "{info}");
    assert_eq!(set_size(&info, "working"), 0, "{info}");

    // The job in progress first (fetched before any still waiting), then oldest first.
    let mut want = vec!["working-job-1".to_string()];
    want.extend(default.iter().cloned());
    assert_eq!(drain(&mut c, "default"), want);
    assert_same_order(&drain(&mut c, "bulk"), &bulk);

    // Args byte for byte.
    let (raw, j) = c.fetch("bytes").expect("unicode job");
    assert_eq!(j["jid"], "unicode-job-1");
    assert!(
        raw.contains(&format!(r#""args":{UNICODE_ARGS}"#)),
        "args changed: {raw}"
    );
    assert_eq!(j["created_at"], "2024-01-02T03:04:05.123456Z", "{raw}");
    let (raw, j) = c.fetch("bytes").expect("large job");
    assert_eq!(j["jid"], "large-job-1");
    assert!(
        raw.contains(&format!(r#""args":{large}"#)),
        "large args changed"
    );

    // Paused as in Faktory.
    assert!(c.fetch("critical").is_none(), "critical is paused");
    c.cmd("QUEUE RESUME critical").expect_ok();
    assert_eq!(
        drain(&mut c, "critical"),
        ["critical-job-1", "critical-job-2"]
    );

    // Due scheduled and retry jobs are moved to their queues; the later ones wait.
    let (_, j) = fetch_within(&mut c, "sched", Duration::from_secs(10));
    assert_eq!(j["jid"], "sched-due-1");
    let (_, j) = fetch_within(&mut c, "retryq", Duration::from_secs(10));
    assert_eq!(j["jid"], "retry-due-1");
    assert_failure(&j, 3, "boom");
    let info = c.info();
    assert_eq!(set_size(&info, "scheduled"), 1, "{info}");
    assert_eq!(set_size(&info, "retries"), 1, "{info}");

    let j = requeue_and_fetch(&mut c, "scheduled", "sched-later-1", "sched");
    // Scheduled at the score's time (to the millisecond).
    let at = parse_ts(j["at"].as_str().expect("at")).timestamp_millis();
    assert_eq!(at, ((now + 3600.0) * 1000.0).round() as i64, "{j}");
    let j = requeue_and_fetch(&mut c, "retries", "retry-later-1", "retryq");
    assert_failure(&j, 7, "later boom");
    assert_eq!(j["args"], json!([2]));
    let j = requeue_and_fetch(&mut c, "dead", "dead-job-1", "deadq");
    assert_failure(&j, 25, "gave up");
    assert_eq!(j["args"], json!([3]));

    assert!(redis.snapshot() == before, "Redis changed");
}

#[test]
fn dry_run_stores_nothing() {
    let redis = Redis::start();
    let mut con = redis.con();
    let now = unix_now();
    for i in 0..3 {
        enqueue(
            &mut con,
            "default",
            &fjob(&format!("dry-run-job-{i}"), "default", "[]", ""),
        );
    }
    zadd(
        &mut con,
        "retries",
        now + 600.0,
        &fjob("dry-run-retry", "default", "[]", &failure(1, "x")),
    );
    enqueue(&mut con, "default", r#"{"jid":"dry-bad-1","args":[]}"#);
    let before = redis.snapshot();

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = import(&[
        "--redis",
        &redis.url(),
        "-d",
        data.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        !out.status.success(),
        "a refused job fails a dry run too\n{out}"
    );
    assert_eq!(out.row("queue default"), vec![4, 3, 1], "{out}");
    assert_eq!(out.row("retries"), vec![1, 1, 0], "{out}");
    assert!(out.stdout.contains("dry run: nothing was stored"), "{out}");
    assert!(out.stdout.contains("jid \"dry-bad-1\""), "{out}");
    assert!(!data.exists(), "a dry run must not create the store");
    assert!(redis.snapshot() == before, "Redis changed");

    // Without the bad job, a dry run succeeds; the store still holds nothing.
    redis::cmd("LREM")
        .arg("q:default")
        .arg(0)
        .arg(r#"{"jid":"dry-bad-1","args":[]}"#)
        .query::<()>(&mut con)
        .unwrap();
    let out = import(&[
        "--redis",
        &redis.url(),
        "-d",
        data.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(out.status.success(), "{out}");
    assert_eq!(out.row("total"), vec![4, 4, 0], "{out}");
    let s = Server::start_in(tmp.path(), serve_opts());
    let info = s.conn().info();
    assert_eq!(queue_size(&info, "default").unwrap_or(0), 0, "{info}");
    assert_eq!(set_size(&info, "retries"), 0, "{info}");
}

#[test]
fn imports_into_postgresql() {
    let redis = Redis::start();
    let mut con = redis.con();
    let now = unix_now();
    for i in 0..3 {
        enqueue(
            &mut con,
            "pgq",
            &fjob(&format!("pg-job-{i}"), "pgq", &format!("[{i}]"), ""),
        );
    }
    zadd(
        &mut con,
        "dead",
        now - 10.0,
        &fjob("pg-dead-job", "pgq", "[9]", &failure(25, "pg dead")),
    );
    zadd(
        &mut con,
        "working",
        now + 100.0,
        &reservation(&fjob("pg-working-job", "pgq", "[7]", ""), now + 100.0),
    );
    let before = redis.snapshot();

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let url = database_url_for(&data);
    let out = import(&["--redis", &redis.url(), "--database-url", &url]);
    assert!(out.status.success(), "{out}");
    assert_eq!(out.row("total"), vec![5, 5, 0, 0], "{out}");
    let again = import(&["--redis", &redis.url(), "--database-url", &url]);
    assert!(again.status.success(), "{again}");
    assert_eq!(again.row("total"), vec![5, 0, 5, 0], "{again}");
    assert!(redis.snapshot() == before, "Redis changed");

    let s = Server::start_in(
        tmp.path(),
        serve_opts().args(["--database-url", url.as_str()]),
    );
    let mut c = s.conn();
    assert_eq!(
        drain(&mut c, "pgq"),
        ["pg-working-job", "pg-job-0", "pg-job-1", "pg-job-2"]
    );
    let j = requeue_and_fetch(&mut c, "dead", "pg-dead-job", "pgq");
    assert_failure(&j, 25, "pg dead");
}
