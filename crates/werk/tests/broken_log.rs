//! A server whose log (stderr) can no longer be written — a pipe whose reader died — keeps
//! serving and still stops on SIGTERM. Before the fix, tracing-subscriber reported the failed
//! write with `eprintln!`, which panics on a broken stderr: the task that logged died, and the
//! signal task died at "SIGTERM received" before it could stop the server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Conn;
use serde_json::json;

#[test]
fn a_broken_log_pipe_neither_stops_serving_nor_blocks_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_werk"))
        .args([
            "serve",
            "-b",
            "127.0.0.1:0",
            "-w",
            ":0",
            "-l",
            "debug",
            "-d",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("werk listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    // The log's reader goes away: every log line from now on fails to be written.
    drop(child.stderr.take());
    let mut c = Conn::connect(addr);
    c.handshake(None, None);
    for i in 0..20 {
        c.push_ok(&json!({"jid": format!("broken-log-{i:04}"), "jobtype": "T", "args": [], "queue": "bl"}));
        let (_, job) = c.fetch("bl").expect("a job");
        c.cmd(&format!(r#"ACK {{"jid":{}}}"#, job["jid"]))
            .expect_ok();
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("werk did not stop within 20 s of SIGTERM with a broken log pipe");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
