//! One worker registry across the cluster (issue 12): two real `werk serve` nodes on one real
//! PostgreSQL. A worker process whose connections land on both nodes is one worker: a quiet
//! posted to one node's web UI is answered by the BEAT on the other and stops the other node's
//! FETCHes; the Busy page of either node lists it once with both connections; heartbeat expiry
//! goes by the last BEAT on any node, so connections close on both nodes only when the BEATs
//! stop everywhere.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use werk_testpg::PgCluster;

const QUIET: &str = "$17\r\n{\"state\":\"quiet\"}\r\n";
const TERMINATE: &str = "$21\r\n{\"state\":\"terminate\"}\r\n";

/// A fresh PostgreSQL with one database, and nodes serving it.
struct Db {
    _pg: PgCluster,
    url: String,
}

impl Db {
    fn new() -> Db {
        let pg = PgCluster::start().expect("start PostgreSQL");
        let url = pg
            .create_database("werk_cluster_workers")
            .expect("create database");
        Db { _pg: pg, url }
    }

    fn node(&self, extra: &[&str]) -> Server {
        Server::start(
            ServerOpts::new()
                .web()
                .fetch_timeout_ms(200)
                .args(["--database-url", &self.url])
                .args(extra.iter().copied()),
        )
    }
}

/// One HTTP/1.0 request to `s`'s web UI (so the answer is never chunked): (status, Location,
/// body).
fn http(s: &Server, method: &str, path: &str, form: &str) -> (u16, String, String) {
    let url = s.web_url.as_deref().expect("web UI");
    let host = url.strip_prefix("http://").expect("http URL");
    let mut t = TcpStream::connect(host).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    if method == "POST" {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", form.len()));
    }
    req.push_str("\r\n");
    req.push_str(form);
    t.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    t.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let location = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, location, body.to_string())
}

/// The Busy page's process rows: (wid, cells as text).
fn busy_rows(s: &Server) -> Vec<(String, Vec<String>)> {
    let (status, _, html) = http(s, "GET", "/busy", "");
    assert_eq!(status, 200, "GET /busy: {html}");
    let table = &html[html.find("id=\"processes\"").expect("#processes")..];
    let table = &table[..table.find("</table>").expect("end of #processes")];
    let mut rows = Vec::new();
    let mut rest = table;
    while let Some(at) = rest.find("<tr data-wid=\"") {
        let after = &rest[at + "<tr data-wid=\"".len()..];
        let wid = after[..after.find('"').unwrap()].to_string();
        let end = after.find("</tr>").unwrap();
        let cells = after[..end]
            .split("<td")
            .skip(1)
            .map(|c| strip_tags(&format!("<td{c}")))
            .collect();
        rows.push((wid, cells));
        rest = &after[end..];
    }
    rows
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// The Busy page's (wid, state, connections) of every process.
fn busy(s: &Server) -> Vec<(String, String, String)> {
    busy_rows(s)
        .into_iter()
        .map(|(wid, cells)| {
            // wid, host:pid, labels, state, RSS, started, last beat, connections, actions
            (wid, cells[3].clone(), cells[7].clone())
        })
        .collect()
}

/// Waits (up to 10 s) until `s`'s Busy page shows exactly `want`.
#[track_caller]
fn wait_busy(s: &Server, want: &[(&str, &str, &str)], what: &str) {
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    let mut last = Vec::new();
    wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        last = busy(s);
        (last == want).then_some(())
    })
    .unwrap_or_else(|| panic!("{what}: Busy page shows {last:?}, want {want:?}"));
}

fn beat(c: &mut Conn, wid: &str) -> String {
    c.cmd(&format!(r#"BEAT {{"wid":"{wid}"}}"#)).wire_str()
}

/// Quiet through node B's web UI reaches the BEAT and the FETCHes on node A; the Busy page of
/// either node lists the worker once, with its connections on both nodes; terminate likewise.
#[test]
fn quiet_via_one_node_reaches_the_worker_on_the_other_and_busy_shows_one_worker() {
    let db = Db::new();
    let (a, b) = (db.node(&[]), db.node(&[]));
    let mut on_a = a.worker("cw-1");
    let mut on_b = b.worker("cw-1");
    // Another worker process, only on A, that never BEATs: A's FETCH check learns its state
    // from A's periodic sync alone.
    let mut only_a = a.worker("cw-2");
    assert_eq!(beat(&mut on_a, "cw-1"), "+OK\r\n");

    for node in [&a, &b] {
        wait_busy(
            node,
            &[("cw-1", "running", "2"), ("cw-2", "running", "1")],
            "both connections counted",
        );
    }
    let info = b.conn().info();
    assert_eq!(info["faktory"]["tasks"]["Workers"]["size"], 2, "{info}");

    let (status, location, body) = http(&b, "POST", "/busy", "wid=cw-1&signal=quiet");
    assert_eq!((status, location.as_str()), (303, "/busy"), "{body}");
    // The next BEAT, on the other node, says quiet; so does one on B.
    assert_eq!(beat(&mut on_a, "cw-1"), QUIET);
    assert_eq!(beat(&mut on_b, "cw-1"), QUIET);
    for node in [&a, &b] {
        wait_busy(
            node,
            &[("cw-1", "quiet", "2"), ("cw-2", "running", "1")],
            "quiet shown on every node",
        );
    }
    // A quiet worker gets no job, on either node.
    let mut p = a.conn();
    p.push_ok(&json!({"jid": "cw-job-1", "jobtype": "T", "args": [], "queue": "cwq"}));
    assert!(on_a.fetch("cwq").is_none());
    assert!(on_b.fetch("cwq").is_none());

    // Quiet cw-2 (connected to A only) through B: A stops giving it jobs after its next sync
    // (at most a second), without any BEAT. Until then it may still get one.
    http(&b, "POST", "/busy", "wid=cw-2&signal=quiet");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match only_a.fetch("cwq") {
            None => break,
            Some((got, _)) => {
                only_a.ack(&got).expect_ok();
                let again = jid("cw-again");
                p.push_ok(&json!({"jid": again, "jobtype": "T", "args": [], "queue": "cwq"}));
            }
        }
        assert!(
            Instant::now() < deadline,
            "A kept giving jobs to quiet cw-2"
        );
    }
    assert_eq!(beat(&mut only_a, "cw-2"), QUIET);

    // Terminate everyone through A; both nodes' BEATs say so, and it never goes back.
    let (status, _, _) = http(&a, "POST", "/busy", "wid=all&signal=terminate");
    assert_eq!(status, 303);
    assert_eq!(beat(&mut on_b, "cw-1"), TERMINATE);
    assert_eq!(beat(&mut only_a, "cw-2"), TERMINATE);
    http(&b, "POST", "/busy", "wid=cw-1&signal=quiet");
    assert_eq!(beat(&mut on_a, "cw-1"), TERMINATE);

    // The worker goes with its last connection, wherever that is.
    drop(on_a);
    wait_busy(
        &b,
        &[("cw-1", "terminate", "1"), ("cw-2", "terminate", "1")],
        "A's connection closed",
    );
    drop(on_b);
    drop(only_a);
    wait_busy(&a, &[], "every connection closed");
    assert_eq!(
        b.conn().cmd(r#"BEAT {"wid":"cw-1"}"#).wire_str(),
        "-ERR unknown worker cw-1\r\n"
    );
}

/// With `--heartbeat-timeout-secs 1`: a worker whose BEATs all go to node A keeps its silent
/// connection on node B (B does not expire it by its own silence), while a worker that BEATs
/// nowhere is closed; when the BEATs stop, its connections close on both nodes.
#[test]
fn heartbeat_expiry_closes_connections_on_every_node_only_when_beats_stop_everywhere() {
    let db = Db::new();
    let args = ["--heartbeat-timeout-secs", "1"];
    let (a, b) = (db.node(&args), db.node(&args));
    let mut beats_on_a = a.worker("cw-exp");
    let mut silent_on_b = b.worker("cw-exp");
    let mut elsewhere = b.worker("cw-silent");
    wait_busy(
        &b,
        &[("cw-exp", "running", "2"), ("cw-silent", "running", "1")],
        "registered",
    );

    // BEATs through A only, for three heartbeat timeouts. (The sleep paces the heartbeats; the
    // closing is waited for with a deadline.)
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        assert_eq!(beat(&mut beats_on_a, "cw-exp"), "+OK\r\n");
        thread::sleep(Duration::from_millis(250));
    }
    // The worker that BEATs nowhere was closed on B; cw-exp's silent connection on B was not.
    elsewhere.expect_closed(Duration::from_secs(5));
    silent_on_b.cmd("INFO").json();
    wait_busy(&a, &[("cw-exp", "running", "2")], "cw-silent expired");

    // The BEATs stop: both nodes close their connections of cw-exp.
    beats_on_a.expect_closed(Duration::from_secs(5));
    silent_on_b.expect_closed(Duration::from_secs(5));
    wait_busy(&b, &[], "cw-exp expired");
    assert_eq!(
        a.conn().cmd(r#"BEAT {"wid":"cw-exp"}"#).wire_str(),
        "-ERR unknown worker cw-exp\r\n"
    );
}
