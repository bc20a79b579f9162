//! `werk backup DEST` of the embedded store while the server runs and producers push: the copy
//! is a data directory a server opens as it is, holding every job acknowledged before the
//! backup began and only jobs that were pushed; a non-empty destination is refused.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;

#[test]
fn backup_while_serving_is_consistent_and_opens_as_a_data_dir() {
    if skip_on_postgres("werk backup copies the embedded store") {
        return;
    }
    let s = Server::start(ServerOpts::new());
    let mut c = s.conn();
    for i in 0..20 {
        c.push_ok(
            &json!({"jid": format!("before-{i:06}"), "jobtype": "T", "args": [i], "queue": "bq"}),
        );
    }
    // A producer keeps pushing while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(Mutex::new(HashSet::new()));
    let producer = {
        let (stop, pushed) = (stop.clone(), pushed.clone());
        let mut p = s.conn();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                let jid = format!("during-{i:06}");
                p.push_ok(&json!({"jid": jid, "jobtype": "T", "args": [i], "queue": "bq"}));
                pushed.lock().unwrap().insert(jid);
                i += 1;
            }
        })
    };
    // Wait (deadline) until the producer is under way, so the backup runs during writes. Few
    // jobs so far: they are in the WAL, not yet checkpointed into the database file (a plain
    // file copy misses them — seen failing that way).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while pushed.lock().unwrap().len() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the producer never pushed"
        );
        std::thread::yield_now();
    }
    let dest = tempfile::tempdir().unwrap();
    let copy = dest.path().join("copy");
    let out = Command::new(env!("CARGO_BIN_EXE_werk"))
        .args([
            "backup",
            copy.to_str().unwrap(),
            "-d",
            s.data_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up"));
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let pushed = pushed.lock().unwrap().clone();

    // Into a non-empty directory: refused, nothing overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_werk"))
        .args([
            "backup",
            copy.to_str().unwrap(),
            "-d",
            s.data_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // The copy serves: all jobs from before, a prefix of the ones during, nothing else.
    let logs = tempfile::tempdir().unwrap();
    let b = Server::spawn(logs.path(), copy.clone(), ServerOpts::new());
    let mut bc = b.conn();
    let mut got = Vec::new();
    while let Some((_, j)) = bc.fetch("bq") {
        got.push(j["jid"].as_str().unwrap().to_string());
    }
    let before: Vec<&String> = got.iter().filter(|j| j.starts_with("before-")).collect();
    assert_eq!(before.len(), 20, "every job acknowledged before the backup");
    let during: Vec<&String> = got.iter().filter(|j| j.starts_with("during-")).collect();
    assert!(
        during.iter().all(|j| pushed.contains(*j)),
        "only pushed jobs"
    );
    assert!(!during.is_empty(), "the backup ran while jobs were pushed");
    let expected: Vec<String> = (0..during.len())
        .map(|i| format!("during-{i:06}"))
        .collect();
    let during: Vec<String> = during.into_iter().cloned().collect();
    assert_eq!(
        during, expected,
        "a consistent cut: the first N pushes, in order"
    );
}
