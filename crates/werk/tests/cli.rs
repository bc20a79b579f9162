//! The shell commands (`werk info`, `werk queue …`, `werk job push`, `werk retries|scheduled|dead
//! …`, `werk batch status`) against a real server over the protocol: their output (table and
//! `--json`), what they change on the server, and their exit codes (0 done, 1 refused by the
//! server, 2 bad usage, 3 unreachable). TLS is in tls_config.rs.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

/// Runs `werk ARGS` against `url` (as FAKTORY_URL).
fn werk(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_werk"))
        .args(args)
        .env("FAKTORY_URL", url)
        .output()
        .expect("run werk")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

fn url(s: &Server) -> String {
    match &s.password {
        Some(p) => format!("tcp://:{p}@127.0.0.1:{}", s.port),
        None => format!("tcp://127.0.0.1:{}", s.port),
    }
}

#[test]
fn push_info_and_queues() {
    let s = Server::start(ServerOpts::new());
    let u = url(&s);
    let jid = ok(&werk(
        &u,
        &[
            "job",
            "push",
            "Mailer",
            "42",
            r#"{"to":"a@b"}"#,
            "hello",
            "--queue",
            "mail",
        ],
    ));
    let jid = jid.trim();
    assert_eq!(jid.len(), 24, "a new jid: {jid}");
    let mut c = s.conn();
    let (_, job) = c.fetch("mail").expect("the pushed job");
    assert_eq!(job["jid"], json!(jid));
    assert_eq!(job["jobtype"], json!("Mailer"));
    assert_eq!(job["args"], json!([42, {"to": "a@b"}, "hello"]));

    ok(&werk(
        &u,
        &[
            "job",
            "push",
            "A",
            "--queue",
            "q1",
            "--jid",
            "given-jid-001",
            "--retry",
            "2",
            "--custom",
            r#"{"k":1}"#,
        ],
    ));
    ok(&werk(&u, &["job", "push", "A", "--queue", "q1"]));
    // A negative retry count is a value, not an option.
    ok(&werk(
        &u,
        &[
            "job",
            "push",
            "Doomed",
            "--queue",
            "dq",
            "--retry",
            "-1",
            "--jid",
            "doomed-00001",
        ],
    ));
    let (_, doomed) = c.fetch("dq").expect("the doomed job");
    assert_eq!(doomed["retry"], json!(-1));
    let info = json_of(&werk(&u, &["info", "--json"]));
    assert_eq!(info["faktory"]["queues"]["q1"], json!(2));
    let text = ok(&werk(&u, &["info"]));
    assert!(text.contains("enqueued 2 in"), "{text}");
    let queues = ok(&werk(&u, &["queue", "list"]));
    assert!(
        queues
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["q1", "2"]),
        "{queues}"
    );

    ok(&werk(&u, &["queue", "pause", "q1"]));
    assert!(c.fetch("q1").is_none(), "paused");
    ok(&werk(&u, &["queue", "resume", "--all"]));
    let (_, j) = c.fetch("q1").expect("resumed");
    assert_eq!(
        (j["jid"].clone(), j["retry"].clone(), j["custom"].clone()),
        (json!("given-jid-001"), json!(2), json!({"k": 1}))
    );
    ok(&werk(&u, &["queue", "clear", "q1"]));
    assert_eq!(queue_size(&c.info(), "q1"), None, "cleared");

    // Bad usage is 2, a refusal 1, an unreachable server 3.
    assert_eq!(werk(&u, &["queue", "pause"]).status.code(), Some(2));
    assert_eq!(
        werk(&u, &["job", "push", "A", "--custom", "[1]"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        werk(&u, &["job", "push", "A", "--in", "5w"]).status.code(),
        Some(2)
    );
    let refused = werk(&u, &["job", "push", "A", "--queue", "bad queue name!"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused"));
    assert_eq!(werk("tcp://127.0.0.1:1", &["info"]).status.code(), Some(3));
    assert_eq!(werk("http://x", &["info"]).status.code(), Some(2));
}

#[test]
fn sets_list_requeue_delete_kill_and_batches() {
    let s = Server::start(ServerOpts::new().password("sekrit"));
    let u = url(&s);
    let mut c = s.conn();
    for (jid, jobtype, arg) in [
        ("sched-001", "Alpha", "apple"),
        ("sched-002", "Beta", "banana"),
        ("sched-003", "Alpha", "cherry"),
    ] {
        c.push_ok(&json!({"jid": jid, "jobtype": jobtype, "args": [arg], "queue": "sq", "at": rfc3339_in(3600.0)}));
    }
    ok(&werk(
        &u,
        &[
            "job",
            "push",
            "Later",
            "--in",
            "2h",
            "--queue",
            "sq",
            "--jid",
            "sched-004",
        ],
    ));
    let listed = json_of(&werk(&u, &["scheduled", "list", "--json"]));
    let jids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"]["jid"].as_str().unwrap())
        .collect();
    assert_eq!(jids, ["sched-001", "sched-002", "sched-003", "sched-004"]);
    let table = ok(&werk(&u, &["scheduled", "list", "--jobtype", "Alpha"]));
    assert!(table.starts_with("AT"), "{table}");
    assert!(
        table.contains("sched-001") && table.contains("sched-003") && !table.contains("sched-002"),
        "{table}"
    );
    let glob = json_of(&werk(
        &u,
        &["scheduled", "list", "--filter", "*banana*", "--json"],
    ));
    assert_eq!(glob.as_array().unwrap().len(), 1);
    assert_eq!(
        json_of(&werk(&u, &["scheduled", "list", "--limit", "2", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Acting on everything needs --all.
    assert_eq!(werk(&u, &["scheduled", "delete"]).status.code(), Some(2));
    ok(&werk(&u, &["scheduled", "requeue", "--jid", "sched-002"]));
    assert_eq!(
        c.fetch("sq").map(|(_, j)| j["jid"].clone()),
        Some(json!("sched-002"))
    );
    ok(&werk(&u, &["scheduled", "kill", "--jobtype", "Alpha"]));
    let i = c.info();
    assert_eq!((set_size(&i, "scheduled"), set_size(&i, "dead")), (1, 2));
    let dead = json_of(&werk(&u, &["dead", "list", "--json"]));
    assert_eq!(dead.as_array().unwrap().len(), 2);
    assert_eq!(werk(&u, &["dead", "kill", "--all"]).status.code(), Some(2));
    ok(&werk(&u, &["dead", "delete", "--filter", "*cherry*"]));
    ok(&werk(&u, &["scheduled", "delete", "--all"]));
    let i = c.info();
    assert_eq!((set_size(&i, "scheduled"), set_size(&i, "dead")), (0, 1));

    // A failed job in the retry set, with its error in the table.
    c.push_ok(
        &json!({"jid": "fails-0001", "jobtype": "Flaky", "args": [], "queue": "fq", "retry": 3}),
    );
    c.fetch("fq").expect("job");
    c.cmd(r#"FAIL {"jid":"fails-0001","errtype":"IOError","message":"disk on fire"}"#)
        .expect_ok();
    let retries = ok(&werk(&u, &["retries", "list"]));
    assert!(
        retries.contains("fails-0001") && retries.contains("IOError: disk on fire"),
        "{retries}"
    );
    ok(&werk(&u, &["retries", "requeue", "--all"]));
    assert_eq!(
        c.fetch("fq").map(|(_, j)| j["jid"].clone()),
        Some(json!("fails-0001"))
    );

    // Batches.
    let bid =
        c.cmd(r#"BATCH NEW {"description":"nightly","success":{"jobtype":"Done","queue":"bq"}}"#);
    let bid = String::from_utf8_lossy(bid.bulk()).trim().to_string();
    let status = json_of(&werk(&u, &["batch", "status", &bid, "--json"]));
    assert_eq!(
        (status["bid"].clone(), status["description"].clone()),
        (json!(bid), json!("nightly"))
    );
    let table = ok(&werk(&u, &["batch", "status", &bid]));
    assert!(table.contains("nightly"), "{table}");
    assert_eq!(
        werk(&u, &["batch", "status", "b-nope"]).status.code(),
        Some(1)
    );

    // A wrong password is refused plainly.
    let bad = werk(&format!("tcp://:wrong@127.0.0.1:{}", s.port), &["info"]);
    assert_ne!(bad.status.code(), Some(0));
    let none = werk(&format!("tcp://127.0.0.1:{}", s.port), &["info"]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("requires a password"));
}

/// `werk man DIR` writes a page per command from the same definitions as `--help` (the Debian
/// package ships them); `werk completions SHELL` prints a completion script.
#[test]
fn man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_werk"))
        .args(["man", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    ok(&out);
    let serve = std::fs::read_to_string(dir.path().join("werk-serve.1")).unwrap();
    assert!(
        serve.starts_with(".ie") || serve.contains(".TH"),
        "a roff page"
    );
    assert!(serve.contains("data\\-dir"), "documents --data-dir");
    for page in [
        "werk.1",
        "werk-import-faktory.1",
        "werk-retries-requeue.1",
        "werk-backup.1",
    ] {
        assert!(dir.path().join(page).is_file(), "{page}");
    }
    let bash = ok(&Command::new(env!("CARGO_BIN_EXE_werk"))
        .args(["completions", "bash"])
        .output()
        .unwrap());
    assert!(bash.contains("complete") && bash.contains("serve") && bash.contains("--database-url"));
    let bad = Command::new(env!("CARGO_BIN_EXE_werk"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
