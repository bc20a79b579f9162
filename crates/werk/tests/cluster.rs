//! Several real `werk serve` nodes on one real PostgreSQL (issue 12): a job pushed on one node
//! is fetched on another, FIFO, never twice; a FETCH blocked on one node is woken by a PUSH on
//! another (through LISTEN/NOTIFY, and by polling while that listener is lost); INFO shows the
//! whole cluster; cron fires each tick once in the cluster; a node that dies leaves nothing
//! behind that the others do not finish; a database that goes away turns `/health` to 503 and
//! requests to `-ERR`, and the nodes serve again when it is back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use werk_testpg::PgCluster;

/// One database of a fresh cluster, and a way to run SQL on it.
struct Db {
    pg: PgCluster,
    url: String,
    name: String,
}

impl Db {
    fn new() -> Db {
        let pg = PgCluster::start().expect("start PostgreSQL");
        let name = "werk_cluster".to_string();
        let url = pg.create_database(&name).expect("create database");
        Db { pg, url, name }
    }

    /// Runs SQL with psql on database `db`; returns its unaligned, tuples-only output.
    fn psql(&self, db: &str, sql: &str) -> String {
        let psql = Path::new(werk_testpg::DEFAULT_BIN_DIR).join("psql");
        let out = Command::new(psql)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.pg.socket_dir())
            .args([
                "-p",
                &self.pg.port().to_string(),
                "-U",
                "werk",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("LC_ALL", "C")
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn node(&self, extra: &[&str]) -> Server {
        Server::start(
            ServerOpts::new()
                .web()
                .args(["--database-url", &self.url])
                .args(extra.iter().copied()),
        )
    }
}

/// A GET on the web UI: (status, body).
fn http_get(s: &Server, path: &str) -> (u16, String) {
    let url = s.web_url.as_deref().expect("web UI");
    let host = url.strip_prefix("http://").expect("http URL");
    let mut t = TcpStream::connect(host).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        t,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    t.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn push_on(c: &mut Conn, jid: &str, queue: &str) {
    c.push_ok(&json!({"jid": jid, "jobtype": "T", "args": [jid], "queue": queue}));
}

#[test]
fn a_job_pushed_on_one_node_is_fetched_on_another_in_fifo_order() {
    let db = Db::new();
    let (a, b) = (db.node(&[]), db.node(&[]));
    let mut pa = a.conn();
    for i in 0..20 {
        push_on(&mut pa, &format!("fifo-job-{i:02}"), "q");
    }
    let info = b.conn().info();
    assert_eq!(queue_size(&info, "q"), Some(20), "INFO on B: {info}");
    let mut wb = b.worker("w-b");
    for i in 0..20 {
        let job = wb.fetch_job("q");
        assert_eq!(job["jid"], format!("fifo-job-{i:02}"));
        wb.ack(job["jid"].as_str().unwrap()).expect_ok();
    }
    assert_eq!(queue_size(&a.conn().info(), "q"), Some(0));
    let info = a.conn().info();
    assert_eq!(
        info["faktory"]["total_processed"], 20,
        "processed on A: {info}"
    );
}

#[test]
fn fetches_racing_on_two_nodes_never_get_the_same_job() {
    let db = Db::new();
    let nodes = [
        db.node(&["--fetch-timeout-ms", "300"]),
        db.node(&["--fetch-timeout-ms", "300"]),
    ];
    let mut p = nodes[0].conn();
    let total = 300;
    for i in 0..total {
        push_on(&mut p, &format!("race-{i:03}"), "race");
    }
    let seen = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let mut threads = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        for t in 0..3 {
            let mut w = node.worker(&format!("w-{k}-{t}"));
            let seen = seen.clone();
            threads.push(thread::spawn(move || {
                while let Some((_, job)) = w.fetch("race") {
                    let jid = job["jid"].as_str().unwrap().to_string();
                    w.ack(&jid).expect_ok();
                    *seen.lock().unwrap().entry(jid).or_default() += 1;
                }
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), total, "every job delivered once");
}

/// The FETCH on B waits up to 20 s; answered with the job, it was woken by A's PUSH, not by
/// its timeout (which would answer nothing).
fn fetch_woken_by_push(a: &Server, b: &Server, jid: &str) -> Duration {
    let mut wb = b.worker(&format!("sleeper-{jid}"));
    wb.set_read_timeout(Duration::from_secs(30));
    wb.send("FETCH wake");
    wait_fetches_waiting(&mut b.conn(), 1);
    let pushed = Instant::now();
    push_on(&mut a.conn(), jid, "wake");
    let reply = wb.read_reply().expect("FETCH reply");
    let took = pushed.elapsed();
    assert_eq!(
        reply.json()["jid"],
        jid,
        "the blocked FETCH on B got A's job (after {took:?})"
    );
    wb.ack(jid).expect_ok();
    took
}

#[test]
fn a_fetch_blocked_on_one_node_is_woken_by_a_push_on_another() {
    let db = Db::new();
    let a = db.node(&[]);
    let b = db.node(&["--fetch-timeout-ms", "20000"]);
    wait_for_log(
        &b,
        "listening for other nodes' enqueues",
        Duration::from_secs(10),
    );
    for i in 0..5 {
        let took = fetch_woken_by_push(&a, &b, &format!("wake-up-job-{i}"));
        assert!(
            took < Duration::from_secs(10),
            "woken by its timeout, not by the push: {took:?}"
        );
        eprintln!("woken after {took:?}");
    }
}

#[test]
fn a_blocked_fetch_is_still_woken_while_its_node_cannot_listen() {
    let db = Db::new();
    let a = db.node(&[]);
    let b = db.node(&["--fetch-timeout-ms", "20000"]);
    wait_for_log(
        &b,
        "listening for other nodes' enqueues",
        Duration::from_secs(10),
    );
    // Both nodes keep their pooled connections; only new connections are refused, so B's
    // listener, once terminated, cannot come back.
    let mut wb = b.worker("deaf");
    wb.set_read_timeout(Duration::from_secs(30));
    wb.send("FETCH wake");
    wait_fetches_waiting(&mut b.conn(), 1);
    // Warm A's pool for the push and the notification.
    push_on(&mut a.conn(), "warm-up-job", "other");
    db.psql(
        "werk",
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name),
    );
    let killed = db.psql(
        "werk",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{}' AND query = 'LISTEN werk_enqueued'",
            db.name
        ),
    );
    assert_eq!(killed, "2", "both nodes' listeners terminated");
    wait_for_log(&b, "lost the wake-up listener", Duration::from_secs(10));
    let pushed = Instant::now();
    push_on(&mut a.conn(), "pushed-while-deaf", "wake");
    let reply = wb.read_reply().expect("FETCH reply");
    assert_eq!(
        reply.json()["jid"],
        "pushed-while-deaf",
        "the FETCH on deaf B found the job by polling (after {:?})",
        pushed.elapsed()
    );
    wb.ack("pushed-while-deaf").expect_ok();
    // Let the listeners back in: B hears A's pushes again.
    db.psql(
        "werk",
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name),
    );
    wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        (b.log()
            .matches("listening for other nodes' enqueues")
            .count()
            >= 2)
            .then_some(())
    })
    .expect("B listens again");
    let took = fetch_woken_by_push(&a, &b, "pushed-after-deaf");
    assert!(
        took < Duration::from_secs(10),
        "woken by notification: {took:?}"
    );
}

#[test]
fn cron_fires_each_tick_once_in_the_cluster() {
    let db = Db::new();
    let conf = r#"
[[cron]]
  schedule = "* * * * * *"
  [cron.job]
    type = "Tick"
    queue = "cron"
"#;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let tmp = tempfile::Builder::new()
            .prefix("werk-node-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(tmp.path().join("data/conf.d")).unwrap();
        std::fs::write(tmp.path().join("data/conf.d/cron.toml"), conf).unwrap();
        let s = Server::start_in(
            tmp.path(),
            ServerOpts::new().args(["--database-url", &db.url]),
        );
        nodes.push((s, tmp));
    }
    let mut c = nodes[0].0.conn();
    wait_info(&mut c, Duration::from_secs(30), "5 cron jobs", |i| {
        queue_size(i, "cron").unwrap_or(0) >= 5
    });
    for (s, _) in &mut nodes {
        s.terminate(Duration::from_secs(10));
    }
    // A cron job's created_at is its tick: one job per tick means as many ticks as jobs.
    let ticks = db.psql(
        &db.name,
        "SELECT count(*) || ' ' || count(DISTINCT payload::json->>'created_at') FROM jobs \
         WHERE queue = 'cron'",
    );
    let (n, distinct) = ticks.split_once(' ').unwrap();
    eprintln!("{n} cron jobs for {distinct} ticks from 3 nodes");
    assert!(n.parse::<u64>().unwrap() >= 5);
    assert_eq!(n, distinct, "a tick fired more than once");
}

#[test]
fn a_dead_node_s_reservations_are_finished_by_the_others() {
    let db = Db::new();
    let mut a = db.node(&["--time-scale", "0.01", "--reap-interval-ms", "50"]);
    let b = db.node(&["--time-scale", "0.01", "--reap-interval-ms", "50"]);
    let mut pa = a.conn();
    pa.push_ok(&json!({"jid": "orphaned-job", "jobtype": "T", "args": [], "queue": "q", "reserve_for": 60}));
    let mut wa = a.worker("dies");
    assert_eq!(wa.fetch_job("q")["jid"], "orphaned-job");
    a.kill();
    // 60 s scaled by 0.01: B's reaper moves it to the retry set, its scheduler back to q.
    let mut wb = b.worker("survivor");
    let job = wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
        wb.fetch("q").map(|(_, j)| j)
    })
    .expect("B gets the orphaned job back");
    assert_eq!(job["jid"], "orphaned-job");
    wb.ack("orphaned-job").expect_ok();
}

#[test]
fn health_turns_503_while_the_database_is_down_and_nodes_serve_again_after() {
    let mut db = Db::new();
    let a = db.node(&[]);
    let b = db.node(&[]);
    for s in [&a, &b] {
        let (status, body) = http_get(s, "/health");
        assert_eq!(status, 200, "{body}");
    }
    let mut ca = a.conn();
    push_on(&mut ca, "before-the-outage", "q");
    db.pg.kill().expect("kill PostgreSQL");
    // The postmaster is gone; its backends exit a moment later (a query may still be answered
    // in between), so wait for the 503 with a deadline.
    for s in [&a, &b] {
        let mut last = String::new();
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            let (status, body) = http_get(s, "/health");
            last = body;
            (status == 503).then_some(())
        })
        .unwrap_or_else(|| panic!("health while down never 503: {last}"));
        assert!(last.contains("\"ok\":false"), "{last}");
    }
    let r = ca.push(&json!({"jid": "during-the-outage", "jobtype": "T", "args": [], "queue": "q"}));
    let e = r.expect_err().to_string();
    eprintln!("PUSH while the database is down: {e}");
    db.pg.restart().expect("restart PostgreSQL");
    for s in [&a, &b] {
        let mut last = String::new();
        wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
            let (status, body) = http_get(s, "/health");
            last = body;
            (status == 200).then_some(())
        })
        .unwrap_or_else(|| panic!("health back to 200: {last}"));
    }
    // The same connection works again; the refused push can be retried.
    push_on(&mut ca, "during-the-outage", "q");
    let mut wb = b.worker("w");
    let jids: BTreeSet<String> = (0..2)
        .map(|_| wb.fetch_job("q")["jid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        jids,
        BTreeSet::from(["before-the-outage".into(), "during-the-outage".into()])
    );
}
