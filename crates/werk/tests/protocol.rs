//! Raw-TCP end-to-end tests of the Faktory wire protocol as Werk speaks it. Replies are
//! compared byte for byte wherever the protocol reference gives the bytes.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const FAST_FETCH: u64 = 300;

fn fast() -> ServerOpts {
    ServerOpts::new().fetch_timeout_ms(FAST_FETCH)
}

// ---------------------------------------------------------------------------------------------
// Greeting and HELLO
// ---------------------------------------------------------------------------------------------

#[test]
fn hi_without_password_is_byte_exact() {
    let s = Server::start_default();
    let mut c = Conn::connect(s.addr);
    let line = c.read_line().expect("HI line");
    assert_eq!(String::from_utf8_lossy(&line), r#"+HI {"v":2}"#);
}

/// Parses `+HI {"v":2,"i":<n>,"s":"<hex>"}` strictly (key order v, i, s; no spaces).
fn parse_password_hi(line: &str) -> (u64, String) {
    let rest = line
        .strip_prefix(r#"+HI {"v":2,"i":"#)
        .unwrap_or_else(|| panic!("HI must start with +HI {{\"v\":2,\"i\": — got {line:?}"));
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    assert!(!digits.is_empty(), "no iteration count in {line:?}");
    let rest = &rest[digits.len()..];
    let rest = rest
        .strip_prefix(r#","s":""#)
        .unwrap_or_else(|| panic!("expected ,\"s\":\" after i in {line:?}"));
    let salt = rest
        .strip_suffix(r#""}"#)
        .unwrap_or_else(|| panic!("HI must end with \"}} — got {line:?}"));
    assert!(
        !salt.is_empty()
            && salt.len() <= 16
            && salt
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "salt must be 1-16 lowercase hex chars: {salt:?}"
    );
    (digits.parse().unwrap(), salt.to_string())
}

#[test]
fn hi_with_password_carries_iterations_and_salt() {
    let s = Server::start(ServerOpts::new().password("sekrit"));
    let mut salts = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::connect(s.addr);
        let line = String::from_utf8(c.read_line().unwrap()).unwrap();
        let (i, salt) = parse_password_hi(&line);
        assert!(
            (4000..=8095).contains(&i),
            "iterations {i} outside [4000, 8095]"
        );
        salts.push(salt);
    }
    salts.dedup();
    assert_eq!(
        salts.len(),
        3,
        "every connection must get a fresh random salt: {salts:?}"
    );
}

fn hello_with(c: &mut Conn, hello: Value) -> Reply {
    c.send(&format!("HELLO {hello}"));
    c.read_reply().expect("HELLO reply")
}

#[test]
fn hello_with_correct_password_is_accepted() {
    let s = Server::start(ServerOpts::new().password("correct horse"));
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    let i = hi["i"].as_u64().unwrap();
    let salt = hi["s"].as_str().unwrap();
    let r = hello_with(
        &mut c,
        json!({"v": 2, "pwdhash": pwdhash("correct horse", salt, i)}),
    );
    assert_eq!(r.wire(), b"+OK\r\n");
    // The connection is usable afterwards.
    assert!(c.info()["server"].is_object());
}

#[test]
fn password_from_env_variable() {
    let s = Server::start(ServerOpts::new().password_env("from-env"));
    let mut c = s.conn(); // handshake hashes "from-env"
    c.push_ok(&job(&jid("envpw"), "X"));
    // ...and a wrong one is refused.
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    let r = hello_with(
        &mut c,
        json!({"v":2,"pwdhash": pwdhash("wrong", hi["s"].as_str().unwrap(), hi["i"].as_u64().unwrap())}),
    );
    assert_eq!(r.wire(), b"-ERR Invalid password\r\n");
}

#[test]
fn hello_with_wrong_password_is_refused_and_closed() {
    let s = Server::start(ServerOpts::new().password("right"));
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    let r = hello_with(
        &mut c,
        json!({"v":2,"pwdhash": pwdhash("wrong", hi["s"].as_str().unwrap(), hi["i"].as_u64().unwrap())}),
    );
    assert_eq!(r.wire(), b"-ERR Invalid password\r\n");
    c.expect_closed(Duration::from_secs(5));
}

#[test]
fn hello_without_pwdhash_is_refused_when_password_set() {
    let s = Server::start(ServerOpts::new().password("right"));
    let mut c = Conn::connect(s.addr);
    c.read_hi();
    let r = hello_with(&mut c, json!({"v": 2, "hostname": "x"}));
    assert_eq!(r.wire(), b"-ERR Invalid password\r\n");
    c.expect_closed(Duration::from_secs(5));
}

#[test]
fn uppercase_hex_pwdhash_is_refused() {
    let s = Server::start(ServerOpts::new().password("pw"));
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    let h = pwdhash("pw", hi["s"].as_str().unwrap(), hi["i"].as_u64().unwrap()).to_uppercase();
    let r = hello_with(&mut c, json!({"v": 2, "pwdhash": h}));
    assert_eq!(r.wire(), b"-ERR Invalid password\r\n");
}

#[test]
fn legacy_hello_without_v_hashes_once() {
    // The Python client omits "v" and applies SHA-256 exactly once.
    let s = Server::start(ServerOpts::new().password("pypass"));
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    let salt = hi["s"].as_str().unwrap();
    let r = hello_with(
        &mut c,
        json!({"hostname": "py", "pid": 1, "labels": ["python"], "pwdhash": pwdhash("pypass", salt, 1)}),
    );
    assert_eq!(r.wire(), b"+OK\r\n");

    // v < 2 is legacy too.
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    let r = hello_with(
        &mut c,
        json!({"v": 1, "pwdhash": pwdhash("pypass", hi["s"].as_str().unwrap(), 1)}),
    );
    assert_eq!(r.wire(), b"+OK\r\n");

    // Without "v", the advertised iteration count must NOT be used.
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    let i = hi["i"].as_u64().unwrap();
    assert!(i > 1);
    let r = hello_with(
        &mut c,
        json!({"pwdhash": pwdhash("pypass", hi["s"].as_str().unwrap(), i)}),
    );
    assert_eq!(r.wire(), b"-ERR Invalid password\r\n");

    // With v:2 a single iteration is wrong.
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    let r = hello_with(
        &mut c,
        json!({"v": 2, "pwdhash": pwdhash("pypass", hi["s"].as_str().unwrap(), 1)}),
    );
    assert_eq!(r.wire(), b"-ERR Invalid password\r\n");
}

#[test]
fn password_hash_test_vector() {
    // Sanity check of the test helper against the reference vector.
    assert_eq!(
        pwdhash("foobar", "55104dc76695721d", 1545),
        "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30"
    );
}

#[test]
fn pwdhash_ignored_without_server_password() {
    let s = Server::start_default();
    let mut c = Conn::connect(s.addr);
    c.read_hi();
    let r = hello_with(
        &mut c,
        json!({"v": 2, "pwdhash": "deadbeef", "wid": "", "username": "u"}),
    );
    assert_eq!(r.wire(), b"+OK\r\n");
}

#[test]
fn first_line_must_be_hello() {
    let s = Server::start_default();
    // Another command first: closed without reply.
    let mut c = Conn::connect(s.addr);
    c.read_hi();
    c.send("INFO");
    c.expect_closed(Duration::from_secs(5));
    // HELLO without a JSON object: closed without reply.
    let mut c = Conn::connect(s.addr);
    c.read_hi();
    c.send("HELLO");
    c.expect_closed(Duration::from_secs(5));
    // Invalid JSON: closed without reply.
    let mut c = Conn::connect(s.addr);
    c.read_hi();
    c.send("HELLO {not json");
    c.expect_closed(Duration::from_secs(5));
    // The server still works.
    s.conn().push_ok(&job(&jid("after-bad-hello"), "X"));
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let s = Server::start(fast());
    let mut c = Conn::connect(s.addr);
    c.read_hi();
    c.send_bytes(b"HELLO {\"v\":2}\n");
    assert_eq!(c.read_reply().unwrap().wire(), b"+OK\r\n");
    let j = jid("lf");
    c.send_bytes(format!("PUSH {}\n", job(&j, "Lf")).as_bytes());
    assert_eq!(c.read_reply().unwrap().wire(), b"+OK\r\n");
    c.send_bytes(b"FETCH default\n");
    let got = c.read_reply().unwrap().json();
    assert_eq!(got["jid"], j);
    c.send_bytes(format!("ACK {{\"jid\":\"{j}\"}}\n").as_bytes());
    assert_eq!(c.read_reply().unwrap().wire(), b"+OK\r\n");
    c.send_bytes(b"INFO\n");
    assert!(c.read_reply().unwrap().json()["faktory"].is_object());
}

#[test]
fn handshake_timeout_drops_silent_client_without_blocking_others() {
    const HANDSHAKE_MS: u64 = 300;
    let s = Server::start(
        fast()
            .arg("--handshake-timeout-ms")
            .arg(HANDSHAKE_MS.to_string()),
    );
    let mut silent = Conn::connect(s.addr);
    silent.read_hi();
    let mut never_reads = Conn::connect(s.addr); // does not even read the greeting
                                                 // Others are served while the silent clients hang around.
    let t = Instant::now();
    let mut c = s.conn();
    let c_opened = Instant::now();
    let j = jid("busy");
    c.push_ok(&job(&j, "X"));
    assert_eq!(c.fetch_job("default")["jid"], j);
    c.ack(&j).expect_ok();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "other connections were blocked: {:?}",
        t.elapsed()
    );
    // The silent ones are dropped after the handshake timeout.
    silent.expect_closed(Duration::from_secs(5));
    let hi = never_reads.read_line().expect("greeting was sent");
    assert!(hi.starts_with(b"+HI "));
    never_reads.expect_closed(Duration::from_secs(5));
    // A connection that completed its HELLO has no idle timeout: still served once it is twice
    // the handshake timeout old (the condition here is the passing of time itself; the server
    // does nothing at that moment that could be waited for instead).
    let age = Duration::from_millis(2 * HANDSHAKE_MS);
    thread::sleep(age.saturating_sub(c_opened.elapsed()));
    assert!(c_opened.elapsed() >= age);
    c.push_ok(&job(&jid("still-alive"), "X"));
}

// ---------------------------------------------------------------------------------------------
// PUSH / FETCH / ACK
// ---------------------------------------------------------------------------------------------

#[test]
fn push_fetch_ack_round_trip() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let j = jid("rt");
    c.send(&format!(
        r#"PUSH {{"jid":"{j}","jobtype":"Report","args":[7,"x"]}}"#
    ));
    assert_eq!(c.read_reply().unwrap().wire(), b"+OK\r\n");

    let info = c.info();
    assert_eq!(queue_size(&info, "default"), Some(1));

    let mut w = s.worker("wid-roundtrip-1");
    let (raw, got) = w.fetch("default").expect("a job");
    assert_eq!(got["jid"], j);
    assert_eq!(got["jobtype"], "Report");
    assert_eq!(got["queue"], "default");
    assert_eq!(
        got["retry"], 25,
        "retry defaults to 25 and is stored: {raw}"
    );
    assert_eq!(got["args"], json!([7, "x"]));
    let enq = parse_ts(got["enqueued_at"].as_str().expect("enqueued_at"));
    let created = parse_ts(got["created_at"].as_str().expect("created_at"));
    assert!(got["enqueued_at"].as_str().unwrap().ends_with('Z'));
    let now = chrono::Utc::now();
    assert!(
        (now - enq.to_utc()).num_seconds().abs() < 30,
        "enqueued_at {enq} far from now"
    );
    assert!(created <= enq);
    assert!(got.get("failure").is_none(), "{raw}");

    let info = c.info();
    assert_eq!(queue_size(&info, "default"), Some(0));
    assert_eq!(set_size(&info, "working"), 1);

    assert_eq!(w.ack(&j).wire(), b"+OK\r\n");
    let info = c.info();
    assert_eq!(set_size(&info, "working"), 0);
    assert_eq!(info["faktory"]["total_processed"], 1);
    assert_eq!(info["faktory"]["total_failures"], 0);
    // Gone for good.
    assert!(w.fetch("default").is_none());
}

#[test]
fn args_and_custom_are_served_verbatim() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let j = jid("verbatim");
    let args = r#"[12345678901234567890, "a b  c", 1.0, -0.5e10, 123456789012345678901234567890, {"k": [true, null]}]"#;
    let custom = r#"{"trace": "x y", "big": 98765432109876543210}"#;
    let line = format!(
        r#"PUSH {{"jid": "{j}", "jobtype": "Verbatim", "args": {args}, "custom": {custom}, "queue": "vq"}}"#
    );
    assert_eq!(c.cmd(&line).wire(), b"+OK\r\n");
    let (raw, got) = c.fetch("vq").expect("job");
    assert!(
        raw.contains(args),
        "args not verbatim.\n sent: {args}\n served: {raw}"
    );
    assert!(
        raw.contains(custom),
        "custom not verbatim.\n sent: {custom}\n served: {raw}"
    );
    assert_eq!(got["args"][1], "a b  c");
    assert_eq!(got["queue"], "vq");
    c.ack(&j).expect_ok();
}

#[test]
fn unknown_top_level_fields_and_priority_are_not_served() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let j = jid("prio");
    c.push_ok(&json!({"jid": j, "jobtype": "P", "args": [], "priority": 5, "whatever": {"a": 1}}));
    let (raw, got) = c.fetch("default").expect("job");
    assert!(
        got.get("priority").is_none() && got.get("whatever").is_none(),
        "{raw}"
    );
    for k in ["jid", "queue", "jobtype", "args", "retry"] {
        assert!(got.get(k).is_some(), "served job lacks {k}: {raw}");
    }
}

#[test]
fn explicit_fields_are_kept() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let j = jid("fields");
    c.push_ok(&json!({
        "jid": j, "jobtype": "F", "args": [1], "queue": "fq", "retry": 3, "reserve_for": 600,
        "backtrace": 7, "created_at": "2024-01-02T03:04:05.678Z"
    }));
    let got = c.fetch_job("fq");
    assert_eq!(got["retry"], 3);
    assert_eq!(got["reserve_for"], 600);
    assert_eq!(got["backtrace"], 7);
    assert_eq!(
        parse_ts(got["created_at"].as_str().unwrap()),
        parse_ts("2024-01-02T03:04:05.678Z")
    );
}

#[test]
fn push_validation_errors_have_exact_texts() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let cases: Vec<(String, &str)> = vec![
        (
            r#"PUSH {"jid":"short","jobtype":"X","args":[]}"#.into(),
            "-ERR jobs must have a reasonable jid parameter",
        ),
        (
            r#"PUSH {"jobtype":"X","args":[]}"#.into(),
            "-ERR jobs must have a reasonable jid parameter",
        ),
        (
            r#"PUSH {"jid":"","jobtype":"","args":null}"#.into(),
            "-ERR jobs must have a reasonable jid parameter",
        ),
        (
            r#"PUSH {"jid":"valid-jid-1","jobtype":"","args":[]}"#.into(),
            "-ERR jobs must have a jobtype parameter",
        ),
        (
            r#"PUSH {"jid":"valid-jid-2","args":[]}"#.into(),
            "-ERR jobs must have a jobtype parameter",
        ),
        (
            r#"PUSH {"jid":"valid-jid-3","jobtype":"X"}"#.into(),
            "-ERR jobs must have an args parameter",
        ),
        (
            r#"PUSH {"jid":"valid-jid-4","jobtype":"X","args":null}"#.into(),
            "-ERR jobs must have an args parameter",
        ),
        (
            r#"PUSH {"jid":"valid-jid-5","jobtype":"X","args":[],"reserve_for":86401}"#.into(),
            "-ERR jobs cannot be reserved for more than one day",
        ),
        (
            r#"PUSH {"jid":"valid-jid-6","jobtype":"X","args":[],"queue":"bad queue!"}"#.into(),
            r#"-ERR cannot get "bad queue!" queue: queue names must match \A[a-zA-Z0-9._-]+\z"#,
        ),
    ];
    for (line, want) in &cases {
        let r = c.cmd(line);
        assert_eq!(r.wire_str(), format!("{want}\r\n"), "for {line}");
    }
    // Prefix-only checks where the tail is a parser message.
    let r = c.cmd("PUSH {not json");
    assert!(r.expect_err().starts_with("ERR invalid JSON: "), "{r:?}");
    let r = c.cmd(r#"PUSH {"jid":"valid-jid-7","jobtype":"X","args":[],"at":"tomorrow"}"#);
    assert!(
        r.expect_err()
            .starts_with(r#"ERR invalid timestamp for 'at': "tomorrow": "#),
        "{r:?}"
    );
    let r = c.cmd(r#"PUSH {"jid":"valid-jid-8","jobtype":"X","args":[],"reserve_for":"soon"}"#);
    assert!(r.expect_err().starts_with("ERR invalid JSON"), "{r:?}");
    let r = c.cmd(r#"PUSH {"jid":"valid-jid-9","jobtype":"X","args":"nope"}"#);
    assert!(
        r.expect_err().starts_with("ERR "),
        "args must be an array: {r:?}"
    );
    let r = c.cmd(r#"PUSH ["valid-jid-10"]"#);
    assert!(r.expect_err().starts_with("ERR invalid JSON"), "{r:?}");
    // Nothing was stored by any of these.
    let info = c.info();
    assert_eq!(info["faktory"]["total_enqueued"], 0, "{info}");
    assert_eq!(set_size(&info, "scheduled"), 0);
    // The connection is still fine; JSON with spaces and extra leading whitespace is accepted.
    assert_eq!(
        c.cmd(r#"PUSH   {"jid": "valid-jid-11", "jobtype": "X", "args": [1, 2]}"#)
            .wire(),
        b"+OK\r\n"
    );
}

#[test]
fn duplicate_jid_is_refused() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let j = jid("dup");
    c.push_ok(&job(&j, "X"));
    // Another job (here: another jobtype) under a taken jid. (The same job again is a
    // retried push, answered OK: faktory_client.rs, `retried_push_is_ok_and_stores_one_job`.)
    let r = c.push(&job(&j, "Y"));
    assert!(
        r.expect_err()
            .starts_with(&format!("ERR duplicate jid {j}")),
        "{r:?}"
    );
    let info = c.info();
    assert_eq!(queue_size(&info, "default"), Some(1));
    assert_eq!(c.fetch_job("default")["jid"], j);
    assert!(c.fetch("default").is_none(), "a second copy was stored");
}

#[test]
fn pushb_reply_map() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let r = c.cmd(
        r#"PUSHB [{"jid":"a1b2c3d4e5","jobtype":"X","args":[]},{"jid":"f6g7h8i9j0","jobtype":"","args":[]}]"#,
    );
    assert_eq!(
        r.wire_str(),
        "$51\r\n{\"f6g7h8i9j0\":\"jobs must have a jobtype parameter\"}\r\n"
    );

    let r = c.cmd(r#"PUSHB [{"jid":"b1b2c3d4e5","jobtype":"X","args":[1]}, {"jid": "b6g7h8i9j0", "jobtype": "Y", "args": [2], "queue": "other"}]"#);
    assert_eq!(r.wire(), b"$2\r\n{}\r\n");

    let r = c.cmd("PUSHB []");
    assert_eq!(r.wire(), b"$2\r\n{}\r\n");

    // Several failures, successes not rolled back.
    let r = c.cmd(r#"PUSHB [{"jid":"short","jobtype":"X","args":[]},{"jid":"c1c2c3c4c5","jobtype":"X","args":[]},{"jid":"c6c7c8c9c0","jobtype":"X"}]"#);
    let m = r.json();
    assert_eq!(
        m,
        json!({"short": "jobs must have a reasonable jid parameter", "c6c7c8c9c0": "jobs must have an args parameter"})
    );

    let mut got = Vec::new();
    while let Some((_, j)) = c.fetch("default other") {
        got.push(j["jid"].as_str().unwrap().to_string());
    }
    assert_eq!(
        got,
        vec!["a1b2c3d4e5", "b1b2c3d4e5", "c1c2c3c4c5", "b6g7h8i9j0"]
    );

    let r = c.cmd("PUSHB {\"jid\":\"notanarray\"}");
    assert!(r.expect_err().starts_with("ERR invalid JSON"), "{r:?}");
    let r = c.cmd("PUSHB [garbage");
    assert!(r.expect_err().starts_with("ERR invalid JSON"), "{r:?}");
}

#[test]
fn fetch_respects_queue_order_and_fifo() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let push = |c: &mut Conn, q: &str, id: &str| {
        c.push_ok(&json!({"jid": id, "jobtype": "O", "args": [], "queue": q}))
    };
    push(&mut c, "low", "low-job-1");
    push(&mut c, "low", "low-job-2");
    push(&mut c, "high", "high-job-1");
    push(&mut c, "mid", "mid-job-1");
    push(&mut c, "high", "high-job-2");
    let order: Vec<String> = (0..5)
        .map(|_| {
            c.fetch_job("empty high mid low")["jid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        order,
        [
            "high-job-1",
            "high-job-2",
            "mid-job-1",
            "low-job-1",
            "low-job-2"
        ]
    );
    // A different order of the same queues.
    push(&mut c, "low", "low-job-3");
    push(&mut c, "high", "high-job-3");
    assert_eq!(c.fetch_job("low high")["jid"], "low-job-3");
    assert_eq!(c.fetch_job("low high")["jid"], "high-job-3");
}

#[test]
fn fetch_on_empty_returns_null_after_fetch_timeout() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let t = Instant::now();
    let r = c.cmd("FETCH nothing-here default");
    let el = t.elapsed();
    assert_eq!(r.wire(), b"$-1\r\n");
    assert!(
        el >= Duration::from_millis(FAST_FETCH - 50),
        "returned too early: {el:?}"
    );
    assert!(
        el < Duration::from_millis(FAST_FETCH + 1700),
        "returned too late: {el:?}"
    );
}

#[test]
fn fetch_default_timeout_is_about_two_seconds() {
    let s = Server::start_default();
    let mut c = s.conn();
    let t = Instant::now();
    assert_eq!(c.cmd("FETCH default").wire(), b"$-1\r\n");
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(1800) && el < Duration::from_millis(4500),
        "{el:?}"
    );
}

#[test]
fn blocked_fetch_is_woken_by_push_from_another_connection() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(8000));
    let mut w = s.worker("wid-wake");
    let mut p = s.conn();

    for (queues, target) in [("wake", "wake"), ("wake-a wake-b", "wake-b")] {
        w.send(&format!("FETCH {queues}"));
        // The FETCH is parked (found nothing, waits for a wake-up) before the job is pushed.
        wait_fetches_waiting(&mut p, 1);
        let j = jid("wake");
        let t = Instant::now();
        p.push_ok(&json!({"jid": j, "jobtype": "W", "args": [], "queue": target}));
        let r = w.read_reply().expect("fetch reply");
        let el = t.elapsed();
        assert_eq!(r.json()["jid"], j);
        assert!(
            el < Duration::from_millis(1500),
            "blocked FETCH woke only after {el:?}"
        );
        w.ack(&j).expect_ok();
    }
}

#[test]
fn ack_of_unknown_jid_is_ok_and_double_ack_is_ok() {
    let s = Server::start(fast());
    let mut c = s.conn();
    assert_eq!(c.cmd(r#"ACK {"jid":"nope12345"}"#).wire(), b"+OK\r\n");
    let j = jid("ack2");
    c.push_ok(&job(&j, "A"));
    c.fetch_job("default");
    c.ack(&j).expect_ok();
    c.ack(&j).expect_ok();
    let info = c.info();
    assert_eq!(
        info["faktory"]["total_processed"], 1,
        "unknown/double ACK must not count: {info}"
    );
    // A late ACK of a job that is enqueued (its reservation ended, or was never committed)
    // removes it and counts it: an ACK answered +OK is never followed by another delivery.
    let j2 = jid("ack-enq");
    c.push_ok(&job(&j2, "A"));
    c.ack(&j2).expect_ok();
    assert!(
        c.fetch("default").is_none(),
        "an enqueued job was delivered after its ACK got +OK"
    );
    let info = c.info();
    assert_eq!(
        info["faktory"]["total_processed"], 2,
        "a late ACK counts: {info}"
    );
    // Malformed ACK payloads are errors.
    assert!(c.cmd("ACK {}").expect_err().starts_with("ERR "));
    assert!(c.cmd("ACK nope").expect_err().starts_with("ERR "));
}

// ---------------------------------------------------------------------------------------------
// FAIL and retries
// ---------------------------------------------------------------------------------------------

fn push_fetch(c: &mut Conn, j: &Value, queue: &str) -> Value {
    c.push_ok(j);
    let got = c.fetch_job(queue);
    assert_eq!(got["jid"], j["jid"]);
    got
}

fn requeue_and_fetch(c: &mut Conn, set: &str, jid: &str, queue: &str) -> Value {
    c.mutate(&json!({"cmd": "requeue", "target": set, "filter": {"jids": [jid]}}))
        .expect_ok();
    let got = c.fetch_job(queue);
    assert_eq!(got["jid"], jid);
    got
}

#[test]
fn fail_moves_job_to_retries_with_failure_info() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let j = jid("fail");
    push_fetch(
        &mut c,
        &json!({"jid": j, "jobtype": "F", "args": [1]}),
        "default",
    );
    let r = c.fail(
        &json!({"jid": j, "errtype": "RuntimeError", "message": "boom", "backtrace": ["l1", "l2"]}),
    );
    assert_eq!(r.wire(), b"+OK\r\n");

    let info = c.info();
    assert_eq!(set_size(&info, "retries"), 1, "{info}");
    assert_eq!(set_size(&info, "working"), 0);
    assert_eq!(info["faktory"]["total_failures"], 1);
    assert_eq!(info["faktory"]["total_processed"], 1);

    // Not fetchable until due (first retry waits >= 15 s).
    assert!(c.fetch("default").is_none());

    let got = requeue_and_fetch(&mut c, "retries", &j, "default");
    let f = &got["failure"];
    assert_eq!(f["retry_count"], 0, "{got}");
    assert_eq!(f["remaining"], 25, "{got}");
    assert_eq!(f["message"], "boom");
    assert_eq!(f["errtype"], "RuntimeError");
    assert_eq!(f["backtrace"], json!(["l1", "l2"]));
    let failed_at = parse_ts(f["failed_at"].as_str().expect("failed_at"));
    let next_at = parse_ts(f["next_at"].as_str().expect("next_at"));
    let delay = (next_at - failed_at).num_milliseconds();
    assert!(
        (14_000..=46_000).contains(&delay),
        "first retry delay must be 15-44 s, got {delay} ms"
    );
    assert_eq!(got["args"], json!([1]));
    assert_eq!(set_size(&c.info(), "retries"), 0);
}

#[test]
fn fail_field_defaults_and_truncation() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let j = jid("trunc");
    push_fetch(&mut c, &job(&j, "T"), "default");
    let long_type = "E".repeat(150);
    let long_msg = "m".repeat(1500);
    let bt: Vec<String> = (0..60).map(|i| format!("frame {i}")).collect();
    c.fail(&json!({"jid": j, "errtype": format!("  {long_type}  "), "message": long_msg, "backtrace": bt}))
        .expect_ok();
    let got = requeue_and_fetch(&mut c, "retries", &j, "default");
    let f = &got["failure"];
    assert_eq!(f["errtype"].as_str().unwrap(), &long_type[..100]);
    assert_eq!(f["message"].as_str().unwrap(), &"m".repeat(1000));
    assert_eq!(f["backtrace"].as_array().unwrap().len(), 50);
    assert_eq!(f["backtrace"][49], "frame 49");
    // Second failure of the same job: counters move, failed_at stays.
    let first_failed_at = f["failed_at"].clone();
    c.fail(&json!({"jid": j})).expect_ok();
    let got = requeue_and_fetch(&mut c, "retries", &j, "default");
    let f = &got["failure"];
    assert_eq!(f["retry_count"], 1);
    assert_eq!(f["remaining"], 24);
    assert_eq!(f["errtype"], "unknown");
    assert_eq!(f["message"], "unknown");
    assert_eq!(f["failed_at"], first_failed_at);
    c.ack(&j).expect_ok();
}

#[test]
fn fail_errors() {
    let s = Server::start(fast());
    let mut c = s.conn();
    assert_eq!(
        c.cmd(r#"FAIL {"jid":"nope12345"}"#).wire_str(),
        "-ERR Job not found nope12345\r\n"
    );
    assert_eq!(
        c.cmd(r#"FAIL {"jid":""}"#).wire_str(),
        "-ERR missing JID\r\n"
    );
    let r = c.cmd(r#"FAIL {"jid":"nope12345","backtrace":"not-a-list"}"#);
    assert!(r.expect_err().starts_with("ERR invalid FAIL"), "{r:?}");
    // FAIL of an enqueued (not working) job is "not found" too and leaves it alone.
    let j = jid("enq");
    c.push_ok(&job(&j, "X"));
    assert_eq!(
        c.fail(&json!({"jid": j})).wire_str(),
        format!("-ERR Job not found {j}\r\n")
    );
    assert_eq!(c.fetch_job("default")["jid"], j);
    // FAIL after ACK is not found.
    c.ack(&j).expect_ok();
    assert_eq!(
        c.fail(&json!({"jid": j})).wire_str(),
        format!("-ERR Job not found {j}\r\n")
    );
    let info = c.info();
    assert_eq!(info["faktory"]["total_failures"], 0);
    assert_eq!(set_size(&info, "retries"), 0);
}

#[test]
fn retry_policy_zero_negative_and_exhaustion() {
    let s = Server::start(fast());
    let mut c = s.conn();
    // retry: 0 -> discarded on failure (but counted).
    let j0 = jid("r0");
    push_fetch(
        &mut c,
        &json!({"jid": j0, "jobtype": "R", "args": [], "retry": 0}),
        "default",
    );
    c.fail(&json!({"jid": j0, "message": "x"})).expect_ok();
    let info = c.info();
    assert_eq!(
        (set_size(&info, "retries"), set_size(&info, "dead")),
        (0, 0),
        "{info}"
    );
    assert_eq!(info["faktory"]["total_failures"], 1);

    // retry: -1 -> dead at once.
    let jn = jid("rneg");
    push_fetch(
        &mut c,
        &json!({"jid": jn, "jobtype": "R", "args": [], "retry": -1}),
        "default",
    );
    c.fail(&json!({"jid": jn})).expect_ok();
    let info = c.info();
    assert_eq!(
        (set_size(&info, "retries"), set_size(&info, "dead")),
        (0, 1),
        "{info}"
    );

    // retry: 1 -> first failure retries, second failure is death.
    let j1 = jid("r1");
    push_fetch(
        &mut c,
        &json!({"jid": j1, "jobtype": "R", "args": [], "retry": 1}),
        "default",
    );
    c.fail(&json!({"jid": j1})).expect_ok();
    assert_eq!(set_size(&c.info(), "retries"), 1);
    let got = requeue_and_fetch(&mut c, "retries", &j1, "default");
    assert_eq!(got["failure"]["remaining"], 1);
    c.fail(&json!({"jid": j1})).expect_ok();
    let info = c.info();
    assert_eq!(
        (set_size(&info, "retries"), set_size(&info, "dead")),
        (0, 2),
        "{info}"
    );
    let got = requeue_and_fetch(&mut c, "dead", &j1, "default");
    assert_eq!(got["failure"]["retry_count"], 1);
    assert_eq!(got["failure"]["remaining"], 0);
    c.ack(&j1).expect_ok();
    let info = c.info();
    // Failures: r0, rneg, r1 twice; processed: those four plus the final ACK.
    assert_eq!(info["faktory"]["total_failures"], 4);
    assert_eq!(info["faktory"]["total_processed"], 5);
}

// ---------------------------------------------------------------------------------------------
// BEAT
// ---------------------------------------------------------------------------------------------

#[test]
fn beat_unknown_worker_and_ok() {
    let s = Server::start(fast());
    let mut p = s.conn();
    assert_eq!(
        p.cmd(r#"BEAT {"wid":"ghost"}"#).wire_str(),
        "-ERR unknown worker ghost\r\n"
    );
    let mut w = s.worker("wid-beat-1");
    assert_eq!(w.cmd(r#"BEAT {"wid":"wid-beat-1"}"#).wire(), b"+OK\r\n");
    assert_eq!(
        w.cmd(r#"BEAT {"wid": "wid-beat-1", "rss_kb": 54176}"#)
            .wire(),
        b"+OK\r\n"
    );
    // The registry is looked up by the wid in the payload, from any connection.
    assert_eq!(
        p.cmd(r#"BEAT {"wid":"wid-beat-1","current_state":""}"#)
            .wire(),
        b"+OK\r\n"
    );
    assert!(p
        .cmd("BEAT not-json")
        .expect_err()
        .starts_with("ERR invalid BEAT"));
    // When the worker's last connection closes, it is forgotten.
    w.send("END");
    w.expect_closed(Duration::from_secs(5));
    let r = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        let r = p.cmd(r#"BEAT {"wid":"wid-beat-1"}"#);
        (!r.is_ok()).then_some(r)
    })
    .expect("worker still registered after its connection closed");
    assert_eq!(r.wire_str(), "-ERR unknown worker wid-beat-1\r\n");
}

#[test]
fn beat_state_changes_and_quiet_worker_gets_no_jobs() {
    let s = Server::start(fast());
    let mut p = s.conn();
    let mut w = s.worker("wid-quiet-1");
    let j = jid("quiet");
    p.push_ok(&job(&j, "Q"));
    assert_eq!(
        w.cmd(r#"BEAT {"wid":"wid-quiet-1","current_state":"quiet"}"#)
            .wire(),
        b"$17\r\n{\"state\":\"quiet\"}\r\n"
    );
    // Plain BEATs now report quiet too.
    assert_eq!(
        w.cmd(r#"BEAT {"wid":"wid-quiet-1"}"#).wire(),
        b"$17\r\n{\"state\":\"quiet\"}\r\n"
    );
    // A quiet worker gets nothing even though a job is waiting.
    let t = Instant::now();
    assert_eq!(w.cmd("FETCH default").wire(), b"$-1\r\n");
    assert!(t.elapsed() >= Duration::from_millis(FAST_FETCH - 50));
    assert_eq!(queue_size(&p.info(), "default"), Some(1));
    // Another connection with the same wid is quiet too.
    let mut w2 = s.worker("wid-quiet-1");
    assert_eq!(w2.cmd("FETCH default").wire(), b"$-1\r\n");
    // quiet -> terminate; never backwards.
    assert_eq!(
        w.cmd(r#"BEAT {"wid":"wid-quiet-1","current_state":"terminate"}"#)
            .wire(),
        b"$21\r\n{\"state\":\"terminate\"}\r\n"
    );
    assert_eq!(
        w.cmd(r#"BEAT {"wid":"wid-quiet-1","current_state":"quiet"}"#)
            .wire(),
        b"$21\r\n{\"state\":\"terminate\"}\r\n"
    );
    assert_eq!(w.cmd("FETCH default").wire(), b"$-1\r\n");
    // Producers are unaffected.
    assert_eq!(p.fetch_job("default")["jid"], j);
}

// ---------------------------------------------------------------------------------------------
// MUTATE
// ---------------------------------------------------------------------------------------------

fn push_scheduled(c: &mut Conn, id: &str, jobtype: &str, args: Value) {
    c.push_ok(&json!({"jid": id, "jobtype": jobtype, "args": args, "at": rfc3339_in(3600.0), "queue": "mq"}));
}

fn sets(c: &mut Conn) -> (u64, u64, u64) {
    let i = c.info();
    (
        set_size(&i, "scheduled"),
        set_size(&i, "retries"),
        set_size(&i, "dead"),
    )
}

fn drain(c: &mut Conn, queues: &str) -> Vec<String> {
    let mut v = Vec::new();
    while let Some((_, j)) = c.fetch(queues) {
        v.push(j["jid"].as_str().unwrap().to_string());
    }
    v.sort();
    v
}

/// Werk's own LIST (for `werk scheduled|retries|dead list`): a set's jobs in its order, in
/// pages (`next`), filtered by job type and by MUTATE's glob; bad arguments are errors.
#[test]
fn list_pages_a_set_with_mutates_filters() {
    let s = Server::start(fast());
    let mut c = s.conn();
    for (id, jobtype, arg) in [
        ("list-001", "Alpha", "apple"),
        ("list-002", "Beta", "banana"),
        ("list-003", "Alpha", "cherry"),
    ] {
        push_scheduled(&mut c, id, jobtype, json!([arg]));
    }
    let page = |c: &mut Conn, arg: Value| {
        let r = c.cmd(&format!("LIST {arg}"));
        r.json()
    };
    let jids = |v: &Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"]["jid"].as_str().unwrap().to_string())
            .collect()
    };
    let all = page(&mut c, json!({"target": "scheduled"}));
    assert_eq!(jids(&all), ["list-001", "list-002", "list-003"]);
    assert!(all["next"].is_null());
    assert!(all["jobs"][0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(all["jobs"][1]["job"]["args"], json!(["banana"]));

    let first = page(&mut c, json!({"target": "scheduled", "limit": 2}));
    assert_eq!(jids(&first), ["list-001", "list-002"]);
    let next = first["next"].as_str().expect("a next page").to_string();
    let second = page(
        &mut c,
        json!({"target": "scheduled", "limit": 2, "after": next}),
    );
    assert_eq!(jids(&second), ["list-003"]);

    let alpha = page(&mut c, json!({"target": "scheduled", "jobtype": "Alpha"}));
    assert_eq!(jids(&alpha), ["list-001", "list-003"]);
    let glob = page(&mut c, json!({"target": "scheduled", "regexp": "*an*"}));
    assert_eq!(jids(&glob), ["list-002"]);
    assert_eq!(
        jids(&page(&mut c, json!({"target": "dead"}))),
        Vec::<String>::new()
    );

    assert!(c
        .cmd(r#"LIST {"target":"working"}"#)
        .expect_err()
        .contains("target"));
    assert!(c.cmd("LIST nonsense").expect_err().contains("JSON"));
    assert!(c
        .cmd(r#"LIST {"target":"dead","after":"x"}"#)
        .expect_err()
        .contains("cursor"));
    c.cmd("INFO").bulk();
}

#[test]
fn mutate_kill_requeue_discard_clear_by_jids() {
    let s = Server::start(fast());
    let mut c = s.conn();
    for id in ["sched-001", "sched-002", "sched-003", "sched-004"] {
        push_scheduled(&mut c, id, "Alpha", json!([]));
    }
    assert_eq!(sets(&mut c), (4, 0, 0));
    assert!(
        c.fetch("mq").is_none(),
        "scheduled jobs must not be fetchable"
    );

    c.mutate(
        &json!({"cmd":"kill","target":"scheduled","filter":{"jids":["sched-001","sched-002"]}}),
    )
    .expect_ok();
    assert_eq!(sets(&mut c), (2, 0, 2));

    c.mutate(&json!({"cmd":"requeue","target":"scheduled","filter":{"jids":["sched-003"]}}))
        .expect_ok();
    assert_eq!(sets(&mut c), (1, 0, 2));
    assert_eq!(drain(&mut c, "mq"), ["sched-003"]);

    c.mutate(&json!({"cmd":"discard","target":"scheduled","filter":{"jids":["sched-004"]}}))
        .expect_ok();
    assert_eq!(sets(&mut c), (0, 0, 2));

    c.mutate(&json!({"cmd":"requeue","target":"dead","filter":{"jids":["sched-002"]}}))
        .expect_ok();
    assert_eq!(sets(&mut c), (0, 0, 1));
    assert_eq!(drain(&mut c, "mq"), ["sched-002"]);

    // Unknown jids are fine.
    c.mutate(&json!({"cmd":"kill","target":"retries","filter":{"jids":["no-such-jid"]}}))
        .expect_ok();

    c.mutate(&json!({"cmd":"clear","target":"dead"}))
        .expect_ok();
    assert_eq!(sets(&mut c), (0, 0, 0));
    assert!(c.fetch("mq").is_none());
}

#[test]
fn mutate_filters_by_jobtype_and_pattern() {
    let s = Server::start(fast());
    let mut c = s.conn();
    push_scheduled(&mut c, "type-a-1", "Alpha", json!([1]));
    push_scheduled(&mut c, "type-b-1", "Beta", json!([2]));
    push_scheduled(&mut c, "type-b-2", "Beta", json!(["needle-xyz"]));
    push_scheduled(&mut c, "type-c-1", "Gamma", json!(["needle-xyz"]));

    c.mutate(&json!({"cmd":"requeue","target":"scheduled","filter":{"jobtype":"Beta"}}))
        .expect_ok();
    assert_eq!(sets(&mut c).0, 2);
    assert_eq!(drain(&mut c, "mq"), ["type-b-1", "type-b-2"]);

    c.mutate(&json!({"cmd":"kill","target":"scheduled","filter":{"regexp":"*needle-xyz*"}}))
        .expect_ok();
    assert_eq!(sets(&mut c), (1, 0, 1));

    // discard without a filter object = clear.
    c.mutate(&json!({"cmd":"discard","target":"scheduled"}))
        .expect_ok();
    assert_eq!(sets(&mut c), (0, 0, 1));
    c.mutate(&json!({"cmd":"requeue","target":"dead","filter":{"jobtype":"Gamma"}}))
        .expect_ok();
    assert_eq!(drain(&mut c, "mq"), ["type-c-1"]);
    assert_eq!(sets(&mut c), (0, 0, 0));
}

#[test]
fn mutate_accepts_json_with_spaces() {
    let s = Server::start(fast());
    let mut c = s.conn();
    push_scheduled(&mut c, "spaced-001", "Spaced", json!([]));
    push_scheduled(&mut c, "spaced-002", "Spaced", json!([]));
    assert_eq!(
        c.cmd(r#"MUTATE {"cmd": "requeue", "target": "scheduled", "filter": {"jids": ["spaced-001"]}}"#).wire(),
        b"+OK\r\n"
    );
    assert_eq!(drain(&mut c, "mq"), ["spaced-001"]);
    assert_eq!(
        c.cmd(r#"MUTATE {"cmd": "clear", "target": "scheduled"}"#)
            .wire(),
        b"+OK\r\n"
    );
    assert_eq!(sets(&mut c), (0, 0, 0));
}

#[test]
fn mutate_on_retries() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let a = jid("mr-a");
    let b = jid("mr-b");
    for j in [&a, &b] {
        push_fetch(&mut c, &job(j, "MR"), "default");
        c.fail(&json!({"jid": j, "message": "m"})).expect_ok();
    }
    assert_eq!(sets(&mut c), (0, 2, 0));
    c.mutate(&json!({"cmd":"kill","target":"retries","filter":{"jids":[a]}}))
        .expect_ok();
    assert_eq!(sets(&mut c), (0, 1, 1));
    let got = requeue_and_fetch(&mut c, "retries", &b, "default");
    assert_eq!(got["failure"]["message"], "m", "requeue keeps the failure");
    let got = requeue_and_fetch(&mut c, "dead", &a, "default");
    assert_eq!(got["failure"]["message"], "m");
    assert_eq!(sets(&mut c), (0, 0, 0));
    assert_eq!(set_size(&c.info(), "working"), 2);
}

#[test]
fn mutate_errors() {
    let s = Server::start(fast());
    let mut c = s.conn();
    assert_eq!(
        c.cmd(r#"MUTATE {"cmd":"clear","target":"bogus"}"#)
            .wire_str(),
        "-ERR invalid target for mutation command\r\n"
    );
    assert_eq!(
        c.cmd(r#"MUTATE {"cmd":"explode","target":"dead"}"#)
            .wire_str(),
        "-ERR unknown mutate operation\r\n"
    );
    assert!(c.cmd("MUTATE {nope").expect_err().starts_with("ERR "));
    assert!(c.cmd("MUTATE").expect_err().starts_with("ERR "));
    // The connection survives.
    c.cmd("INFO").json();
}

// ---------------------------------------------------------------------------------------------
// QUEUE
// ---------------------------------------------------------------------------------------------

#[test]
fn queue_pause_resume() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let a = jid("pa");
    c.push_ok(&json!({"jid": a, "jobtype": "P", "args": [], "queue": "pq"}));
    assert_eq!(c.cmd("QUEUE PAUSE pq").wire(), b"+OK\r\n");
    // Paused queues still accept pushes and are listed with their size.
    let b = jid("pb");
    c.push_ok(&json!({"jid": b, "jobtype": "P", "args": [], "queue": "pq"}));
    assert_eq!(queue_size(&c.info(), "pq"), Some(2));
    // FETCH skips them (all requested queues paused: $-1 after the timeout).
    let t = Instant::now();
    assert_eq!(c.cmd("FETCH pq").wire(), b"$-1\r\n");
    assert!(t.elapsed() >= Duration::from_millis(FAST_FETCH - 50));
    // ...but serves the other queues in the list.
    let o = jid("po");
    c.push_ok(&json!({"jid": o, "jobtype": "P", "args": [], "queue": "open"}));
    assert_eq!(c.fetch_job("pq open")["jid"], o);
    // Sub-command word is case-insensitive.
    assert_eq!(c.cmd("QUEUE resume pq").wire(), b"+OK\r\n");
    assert_eq!(c.fetch_job("pq")["jid"], a);
    assert_eq!(c.fetch_job("pq")["jid"], b);
    // Pausing an unknown queue is a no-op.
    assert_eq!(c.cmd("QUEUE PAUSE never-seen").wire(), b"+OK\r\n");
}

#[test]
fn queue_pause_resume_all() {
    let s = Server::start(fast());
    let mut c = s.conn();
    c.push_ok(&json!({"jid": "all-q1-job", "jobtype": "P", "args": [], "queue": "q1"}));
    c.push_ok(&json!({"jid": "all-q2-job", "jobtype": "P", "args": [], "queue": "q2"}));
    c.cmd("QUEUE PAUSE *").expect_ok();
    assert!(c.fetch("q1 q2").is_none());
    c.cmd("QUEUE RESUME q2").expect_ok();
    assert_eq!(c.fetch_job("q1 q2")["jid"], "all-q2-job");
    c.cmd("QUEUE RESUME *").expect_ok();
    assert_eq!(c.fetch_job("q1 q2")["jid"], "all-q1-job");
}

#[test]
fn queue_remove() {
    let s = Server::start(fast());
    let mut c = s.conn();
    for i in 0..3 {
        c.push_ok(
            &json!({"jid": format!("rm-job-{i}"), "jobtype": "R", "args": [], "queue": "doomed"}),
        );
    }
    c.push_ok(&json!({"jid": "keep-job-1", "jobtype": "R", "args": [], "queue": "kept"}));
    assert_eq!(queue_size(&c.info(), "doomed"), Some(3));
    assert_eq!(
        c.cmd("QUEUE REMOVE doomed unknown-queue").wire(),
        b"+OK\r\n"
    );
    let info = c.info();
    assert_eq!(
        queue_size(&info, "doomed"),
        None,
        "removed queue still listed: {info}"
    );
    assert_eq!(queue_size(&info, "kept"), Some(1));
    assert_eq!(info["faktory"]["total_enqueued"], 1);
    assert!(c.fetch("doomed").is_none());
    // Its jids are gone: they can be pushed again.
    c.push_ok(&json!({"jid": "rm-job-0", "jobtype": "R", "args": [], "queue": "doomed"}));
    c.cmd("QUEUE REMOVE *").expect_ok();
    let info = c.info();
    assert_eq!(info["faktory"]["total_queues"], 0, "{info}");
    assert!(c.fetch("doomed kept").is_none());
}

#[test]
fn queue_latency_and_errors() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let r = c.cmd("QUEUE LATENCY nothing");
    assert_eq!(r.json().as_object().map(|m| m.len()), Some(1), "{r:?}");
    assert_eq!(r.json()["nothing"].as_f64(), Some(0.0), "{r:?}");
    c.push_ok(&json!({"jid": "lat-job-1", "jobtype": "L", "args": [], "queue": "lat"}));
    // The job must age (time passing is the condition; the server does nothing meanwhile).
    thread::sleep(Duration::from_millis(400));
    let r = c.cmd("QUEUE LATENCY lat nothing");
    let m = r.json();
    let lat = m["lat"]
        .as_f64()
        .unwrap_or_else(|| panic!("latency not a number: {r:?}"));
    assert!((0.3..30.0).contains(&lat), "latency {lat}");
    assert_eq!(m["nothing"].as_f64(), Some(0.0));
    assert_eq!(
        c.cmd("QUEUE LATENCY *").wire_str(),
        "-ERR QUEUE LATENCY does not support wildcards\r\n"
    );
    assert_eq!(
        c.cmd("QUEUE UNPAUSE x").wire_str(),
        "-ERR no such QUEUE subcommand: UNPAUSE\r\n"
    );
    assert!(c.cmd("QUEUE").expect_err().starts_with("ERR"));
    assert!(c.cmd("QUEUE PAUSE").expect_err().starts_with("ERR"));
    c.cmd("INFO").json();
}

// ---------------------------------------------------------------------------------------------
// INFO, END, unknown commands, FLUSH
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_u64(v: &Value, path: &str) -> u64 {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("INFO {path} must be an unsigned integer: {v}"))
}

#[test]
fn info_has_the_full_shape() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let _other = s.conn();
    c.push_ok(&json!({"jid": "info-job-1", "jobtype": "I", "args": [], "queue": "iq"}));
    c.push_ok(&json!({"jid": "info-job-2", "jobtype": "I", "args": [], "queue": "iq2"}));
    c.push_ok(&json!({"jid": "info-job-3", "jobtype": "I", "args": [], "queue": "iq2"}));
    c.push_ok(&json!({"jid": "info-job-4", "jobtype": "I", "args": [], "at": rfc3339_in(600.0)}));
    let before = c.info();
    let info = c.info();

    let now = info["now"].as_str().expect("now is a string");
    let parsed = parse_ts(now);
    assert!(now.ends_with('Z'), "now must be UTC with Z: {now}");
    assert!((chrono::Utc::now() - parsed.to_utc()).num_seconds().abs() < 30);
    let t = info["server_utc_time"].as_str().expect("server_utc_time");
    let b = t.as_bytes();
    assert!(
        t.len() == 12
            && t.ends_with(" UTC")
            && b[2] == b':'
            && b[5] == b':'
            && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit()),
        "server_utc_time must be HH:MM:SS UTC: {t:?}"
    );

    let f = &info["faktory"];
    let queues = f["queues"].as_object().expect("faktory.queues object");
    assert_eq!(queues.get("iq").and_then(Value::as_u64), Some(1));
    assert_eq!(queues.get("iq2").and_then(Value::as_u64), Some(2));
    for (q, n) in queues {
        assert!(n.is_u64(), "queue {q} size {n}");
    }
    let sum: u64 = queues.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(assert_u64(&info, "faktory.total_enqueued"), sum);
    assert_eq!(
        assert_u64(&info, "faktory.total_queues"),
        queues.len() as u64
    );
    for set in ["dead", "retries", "scheduled", "working"] {
        assert_u64(&info, &format!("faktory.sets.{set}"));
    }
    assert_eq!(set_size(&info, "scheduled"), 1);
    assert!(
        f["tasks"].is_object(),
        "faktory.tasks must be present: {info}"
    );
    assert_u64(&info, "faktory.total_failures");
    assert_u64(&info, "faktory.total_processed");

    let srv = &info["server"];
    assert!(srv["description"].is_string());
    let v = srv["faktory_version"].as_str().expect("faktory_version");
    let core = v.split(['-', '+']).next().unwrap();
    let parts: Vec<&str> = core.split('.').collect();
    assert!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())),
        "faktory_version must be semver X.Y.Z: {v:?}"
    );
    assert_u64(&info, "server.uptime");
    assert!(assert_u64(&info, "server.connections") >= 2);
    assert!(
        assert_u64(&info, "server.command_count") > assert_u64(&before, "server.command_count")
    );
    assert_u64(&info, "server.used_memory_mb");
}

#[test]
fn end_closes_without_reply() {
    let s = Server::start_default();
    let mut c = s.conn();
    c.send("END");
    c.expect_closed(Duration::from_secs(5));
    // Connection count drops back.
    let mut d = s.conn();
    let n = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        let n = d.info()["server"]["connections"].as_u64().unwrap();
        (n == 1).then_some(n)
    });
    assert_eq!(n, Some(1), "connections should count only the open one");
}

#[test]
fn unknown_commands() {
    let s = Server::start(fast());
    let mut c = s.conn();
    assert_eq!(
        c.cmd(r#"push {"jid":"x"}"#).wire_str(),
        "-ERR unknown command push\r\n"
    );
    assert_eq!(c.cmd("PING").wire_str(), "-ERR unknown command PING\r\n");
    assert_eq!(c.cmd("info").wire_str(), "-ERR unknown command info\r\n");
    let r = c.cmd("");
    assert!(r.expect_err().starts_with("ERR unknown command"), "{r:?}");
    // The connection keeps working.
    c.push_ok(&job(&jid("after-unknown"), "X"));
}

#[test]
fn flush_deletes_everything() {
    let s = Server::start(fast());
    let mut c = s.conn();
    c.push_ok(&json!({"jid": "flush-q-1", "jobtype": "F", "args": [], "queue": "fq"}));
    c.push_ok(&json!({"jid": "flush-s-1", "jobtype": "F", "args": [], "at": rfc3339_in(600.0)}));
    push_fetch(&mut c, &job("flush-r-1", "F"), "default");
    c.fail(&json!({"jid": "flush-r-1"})).expect_ok();
    push_fetch(
        &mut c,
        &json!({"jid": "flush-d-1", "jobtype": "F", "args": [], "retry": -1}),
        "default",
    );
    c.fail(&json!({"jid": "flush-d-1"})).expect_ok();
    push_fetch(&mut c, &job("flush-w-1", "F"), "default");
    let info = c.info();
    assert_eq!(
        ["scheduled", "retries", "dead", "working"].map(|k| set_size(&info, k)),
        [1, 1, 1, 1],
        "{info}"
    );

    assert_eq!(c.cmd("FLUSH").wire(), b"+OK\r\n");
    let info = c.info();
    assert_eq!(
        ["scheduled", "retries", "dead", "working"].map(|k| set_size(&info, k)),
        [0; 4],
        "{info}"
    );
    assert_eq!(info["faktory"]["total_enqueued"], 0);
    assert_eq!(info["faktory"]["total_processed"], 0);
    assert_eq!(info["faktory"]["total_failures"], 0);
    assert!(c.fetch("fq default").is_none());
    // The flushed reservation is gone too.
    assert_eq!(
        c.fail(&json!({"jid": "flush-w-1"})).wire_str(),
        "-ERR Job not found flush-w-1\r\n"
    );
    // All jids are free again.
    c.push_ok(&json!({"jid": "flush-q-1", "jobtype": "F", "args": [], "queue": "fq"}));
    assert_eq!(c.fetch_job("fq")["jid"], "flush-q-1");
}

// ---------------------------------------------------------------------------------------------
// Scheduled jobs
// ---------------------------------------------------------------------------------------------

#[test]
fn scheduled_job_becomes_fetchable_when_due() {
    let s = Server::start(fast().scan_interval_ms(100));
    let mut c = s.conn();
    let j = jid("sched");
    let at = rfc3339_in(1.2);
    c.push_ok(&json!({"jid": j, "jobtype": "S", "args": [1], "at": at, "queue": "sq"}));
    let info = c.info();
    assert_eq!(set_size(&info, "scheduled"), 1);
    assert_eq!(queue_size(&info, "sq").unwrap_or(0), 0);
    assert!(c.fetch("sq").is_none(), "fetched before it was due");
    let got = wait_for(Duration::from_secs(6), Duration::from_millis(10), || {
        c.fetch("sq").map(|x| x.1)
    })
    .expect("scheduled job never became fetchable");
    let now = chrono::Utc::now();
    let due = parse_ts(&at).to_utc();
    assert!(
        now >= due,
        "served {} ms before its at",
        (due - now).num_milliseconds()
    );
    assert!(
        (now - due).num_milliseconds() < 3000,
        "promotion lag too large"
    );
    assert_eq!(got["jid"], j);
    assert_eq!(got["queue"], "sq");
    let enq = parse_ts(
        got["enqueued_at"]
            .as_str()
            .expect("enqueued_at set on promotion"),
    );
    assert!(enq.to_utc() >= due - chrono::Duration::milliseconds(5));
    assert!(got["at"].is_string(), "at is kept after promotion");
    assert_eq!(set_size(&c.info(), "scheduled"), 0);
    c.ack(&j).expect_ok();
}

#[test]
fn at_in_the_past_is_enqueued_immediately() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let j = jid("past");
    c.push_ok(&json!({"jid": j, "jobtype": "S", "args": [], "at": rfc3339_in(-60.0)}));
    assert_eq!(set_size(&c.info(), "scheduled"), 0);
    assert_eq!(c.fetch_job("default")["jid"], j);
    // Offsets other than Z are accepted.
    let j2 = jid("offset");
    c.push_ok(&json!({"jid": j2, "jobtype": "S", "args": [], "at": "2001-02-03T04:05:06+02:00"}));
    assert_eq!(c.fetch_job("default")["jid"], j2);
}

// ---------------------------------------------------------------------------------------------
// Durability and process lifecycle
// ---------------------------------------------------------------------------------------------

#[test]
fn data_survives_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fast();
    let mut s = Server::start_in(dir.path(), opts.clone());
    let mut c = s.conn();
    for i in 0..5 {
        c.push_ok(&json!({"jid": format!("durable-{i}"), "jobtype": "D", "args": [i, "x y"], "queue": "durable"}));
    }
    push_fetch(
        &mut c,
        &json!({"jid": "working-1", "jobtype": "D", "args": [], "queue": "work"}),
        "work",
    );
    push_fetch(
        &mut c,
        &json!({"jid": "working-2", "jobtype": "D", "args": [], "queue": "work"}),
        "work",
    );
    push_fetch(
        &mut c,
        &json!({"jid": "acked-one", "jobtype": "D", "args": [], "queue": "work"}),
        "work",
    );
    c.ack("acked-one").expect_ok();
    c.push_ok(&json!({"jid": "paused-1", "jobtype": "D", "args": [], "queue": "pausedq"}));
    c.cmd("QUEUE PAUSE pausedq").expect_ok();
    c.push_ok(&json!({"jid": "sched-one", "jobtype": "D", "args": [], "at": rfc3339_in(3600.0)}));
    push_fetch(&mut c, &job("retry-one", "D"), "default");
    c.fail(&json!({"jid": "retry-one", "message": "before crash"}))
        .expect_ok();
    let before = c.info();
    drop(c);

    s.kill();
    let s = Server::start_in(dir.path(), opts);
    let mut c = s.conn();
    let info = c.info();
    assert_eq!(queue_size(&info, "durable"), Some(5), "{info}");
    assert_eq!(queue_size(&info, "pausedq"), Some(1), "{info}");
    assert_eq!(set_size(&info, "working"), 2, "{info}");
    assert_eq!(set_size(&info, "scheduled"), 1, "{info}");
    assert_eq!(set_size(&info, "retries"), 1, "{info}");
    assert_eq!(
        info["faktory"]["total_processed"],
        before["faktory"]["total_processed"]
    );
    assert_eq!(
        info["faktory"]["total_failures"],
        before["faktory"]["total_failures"]
    );

    // FIFO order and payloads survive.
    for i in 0..5 {
        let got = c.fetch_job("durable");
        assert_eq!(got["jid"], format!("durable-{i}"));
        assert_eq!(got["args"], json!([i, "x y"]));
    }
    // The acked job is gone; the reserved ones are not handed out again...
    assert!(c.fetch("work").is_none());
    // ...but their reservations survived: ACK and FAIL find them.
    c.ack("working-1").expect_ok();
    assert_eq!(c.fail(&json!({"jid": "working-2"})).wire(), b"+OK\r\n");
    assert_eq!(
        c.fail(&json!({"jid": "acked-one"})).wire_str(),
        "-ERR Job not found acked-one\r\n"
    );
    // The pause survived.
    assert!(
        c.fetch("pausedq").is_none(),
        "queue was unpaused by the restart"
    );
    c.cmd("QUEUE RESUME pausedq").expect_ok();
    assert_eq!(c.fetch_job("pausedq")["jid"], "paused-1");
    // The failure record survived.
    let got = requeue_and_fetch(&mut c, "retries", "retry-one", "default");
    assert_eq!(got["failure"]["message"], "before crash");
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), ServerOpts::new());
    let mut c = s.conn();
    c.push_ok(&job("graceful-1", "G"));
    // A worker blocked in FETCH must not hold up the shutdown for long.
    let mut w = s.worker("wid-graceful");
    w.send("FETCH empty-queue");
    let t = Instant::now();
    let st = s.terminate(Duration::from_secs(10));
    assert!(
        st.success(),
        "werk exited with {st} after SIGTERM; log:\n{}",
        s.log()
    );
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        t.elapsed()
    );
    let s = Server::start_in(dir.path(), ServerOpts::new());
    assert_eq!(s.conn().fetch_job("default")["jid"], "graceful-1");
}

#[test]
fn missing_data_dir_is_created() {
    if skip_on_postgres("with --database-url werk keeps no store in the data directory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("werk-data");
    let s = Server::spawn(dir.path(), data.clone(), ServerOpts::new());
    s.conn().push_ok(&job(&jid("created"), "X"));
    assert!(data.is_dir());
}

#[test]
fn overlong_line_is_refused_and_only_that_connection_closed() {
    let s = Server::start(fast().arg("--max-line-bytes").arg("1024"));
    let mut other = s.conn();
    let mut c = s.conn();
    // Just under the limit is fine.
    let pad = "p".repeat(800);
    c.push_ok(&json!({"jid": "short-enough", "jobtype": "L", "args": [pad]}));
    // Over the limit: -ERR, then close.
    let pad = "q".repeat(3000);
    c.send(&format!(
        "PUSH {}",
        json!({"jid": "too-long-1", "jobtype": "L", "args": [pad]})
    ));
    let r = c.read_reply().expect("an error reply before the close");
    assert!(r.expect_err().starts_with("ERR "), "{r:?}");
    c.expect_closed(Duration::from_secs(5));
    // The other connection is unaffected; the long job was not stored.
    assert_eq!(other.fetch_job("default")["jid"], "short-enough");
    assert!(other.fetch("default").is_none());
    other.push_ok(&job(&jid("other-ok"), "X"));
}

#[test]
fn many_connections_interleave() {
    let s = Server::start(fast());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let addr = s.addr;
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                c.handshake(None, Some(&format!("wid-many-{t}")));
                for i in 0..25 {
                    c.push_ok(&json!({"jid": format!("many-{t}-{i}"), "jobtype": "M", "args": [t, i], "queue": format!("mq{t}")}));
                }
                for i in 0..25 {
                    let got = c.fetch_job(&format!("mq{t}"));
                    assert_eq!(got["jid"], format!("many-{t}-{i}"));
                    c.ack(&format!("many-{t}-{i}")).expect_ok();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    let info = s.conn().info();
    assert_eq!(info["faktory"]["total_processed"], 200);
    assert_eq!(info["faktory"]["total_enqueued"], 0);
}

// ---------------------------------------------------------------------------------------------
// Edge cases: framing, slow or vanishing clients, state guards
// ---------------------------------------------------------------------------------------------

#[test]
fn partial_hello_line_is_dropped_after_handshake_timeout() {
    let s = Server::start(fast().arg("--handshake-timeout-ms").arg("300"));
    let mut c = Conn::connect(s.addr);
    c.read_hi();
    c.send_bytes(b"HELLO {\"v\":"); // never finished
    let took = c.expect_closed(Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn unterminated_overlong_line_is_cut_at_the_limit() {
    let s = Server::start(fast().arg("--max-line-bytes").arg("1024"));
    let mut c = s.conn();
    // 8 KiB without a newline: the server must not wait for the end of the line.
    c.send_bytes(format!("PUSH {{\"jid\":\"{}", "z".repeat(8192)).as_bytes());
    let r = c
        .read_reply()
        .expect("an error reply without waiting for a newline");
    assert!(r.expect_err().starts_with("ERR "), "{r:?}");
    c.expect_closed(Duration::from_secs(5));
    // The limit applies during the handshake too.
    let mut h = Conn::connect(s.addr);
    h.read_hi();
    h.send(&format!(
        "HELLO {}",
        json!({"v": 2, "hostname": "h".repeat(4000)})
    ));
    let mut buf = Vec::new();
    match h.read_reply() {
        Ok(Reply::Error(_)) | Err(_) => {}
        Ok(other) => buf.push(format!("{other:?}")),
    }
    assert!(
        buf.is_empty(),
        "an overlong HELLO must not be accepted: {buf:?}"
    );
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let mut batch = String::new();
    for i in 0..20 {
        batch.push_str(&format!(
            "PUSH {}\r\n",
            json!({"jid": format!("pipe-job-{i:02}"), "jobtype": "P", "args": [i]})
        ));
    }
    batch.push_str("FETCH default\r\nINFO\r\n");
    c.send_bytes(batch.as_bytes());
    for _ in 0..20 {
        c.read_reply().unwrap().expect_ok();
    }
    assert_eq!(c.read_reply().unwrap().json()["jid"], "pipe-job-00");
    assert_eq!(
        c.read_reply().unwrap().json()["faktory"]["total_enqueued"],
        19
    );
}

#[test]
fn error_messages_never_contain_cr_or_lf() {
    let s = Server::start(fast());
    let mut c = s.conn();
    c.send_bytes(b"PU\rSH x\r\n");
    let r = c.read_reply().expect("reply");
    assert!(
        !r.expect_err().contains(['\r', '\n']),
        "CR in an error line breaks RESP framing: {r:?}"
    );
    // A JSON error whose message would quote the input.
    c.send_bytes(b"QUEUE PA\rUSE x\r\n");
    let r = c.read_reply().expect("reply");
    assert!(!r.expect_err().contains(['\r', '\n']), "{r:?}");
    c.cmd("INFO").json();
}

#[test]
fn large_job_round_trips() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let big = "ü€".repeat(200_000); // ~1 MiB of multi-byte UTF-8
    c.push_ok(
        &json!({"jid": "large-job-1", "jobtype": "Big", "args": [big, "\u{1F600}", "\u{0000}"]}),
    );
    let (raw, got) = c.fetch("default").expect("job");
    assert!(raw.len() > 1_000_000);
    assert_eq!(got["args"][0].as_str().map(str::len), Some(big.len()));
    assert_eq!(got["args"][1], "\u{1F600}");
    assert_eq!(got["args"][2], "\u{0000}");
}

#[test]
fn fetch_without_usable_queue_names_answers() {
    let s = Server::start(fast());
    let mut c = s.conn();
    // Faktory errors, the protocol document says "default": either is compatible, but the
    // server must answer in time and keep the connection usable.
    let t = Instant::now();
    match c.cmd("FETCH") {
        Reply::Null | Reply::Error(_) => {}
        other => panic!("FETCH with no queue: {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3));
    c.cmd("INFO").json();
}

#[test]
fn one_job_goes_to_exactly_one_of_two_blocked_fetchers() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(1500));
    let mut a = s.worker("wid-compete-a");
    let mut b = s.worker("wid-compete-b");
    a.send("FETCH compete");
    b.send("FETCH compete");
    // Both FETCHes are parked before the one job arrives.
    let mut p = s.conn();
    wait_fetches_waiting(&mut p, 2);
    p.push_ok(&json!({"jid": "compete-job-1", "jobtype": "C", "args": [], "queue": "compete"}));
    let ra = a.read_reply().unwrap();
    let rb = b.read_reply().unwrap();
    let got: Vec<&Reply> = [&ra, &rb]
        .into_iter()
        .filter(|r| matches!(r, Reply::Bulk(_)))
        .collect();
    assert_eq!(got.len(), 1, "one job, two deliveries? a={ra:?} b={rb:?}");
    assert_eq!(got[0].json()["jid"], "compete-job-1");
}

#[test]
fn client_vanishing_during_blocked_fetch_does_not_swallow_the_job() {
    // A fetch timeout far longer than the waits below: the blocked FETCH must end because the
    // server noticed the disconnect, not because its wait ran out.
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(30_000));
    let mut p = s.conn();
    {
        let mut w = s.worker("wid-vanish");
        w.send("FETCH vanish");
        wait_fetches_waiting(&mut p, 1);
        // w is dropped: the socket closes while the FETCH is blocked.
    }
    // The server notices the close and ends the wait.
    wait_fetches_waiting(&mut p, 0);
    p.push_ok(&json!({"jid": "vanish-job-1", "jobtype": "V", "args": [], "queue": "vanish"}));
    // The job must still be fetchable by a live worker (not reserved for a dead connection).
    let mut w2 = s.worker("wid-vanish-2");
    let got = w2.fetch("vanish");
    let info = p.info();
    assert!(
        got.is_some(),
        "job was handed to a closed connection and sits in working for reserve_for: {info}"
    );
}

#[test]
fn fail_leaves_non_working_jobs_alone_and_late_ack_removes_them() {
    let s = Server::start(fast());
    let mut c = s.conn();
    // A job in retries: FAIL is refused ...
    push_fetch(&mut c, &job("guard-retry-1", "G"), "default");
    c.fail(&json!({"jid": "guard-retry-1"})).expect_ok();
    assert_eq!(
        c.fail(&json!({"jid": "guard-retry-1"})).wire_str(),
        "-ERR Job not found guard-retry-1\r\n"
    );
    // ... but a late ACK (its worker finished it after all) is +OK and removes it.
    c.ack("guard-retry-1").expect_ok();
    // A scheduled job was never delivered: +OK for compatibility, nothing moves.
    c.push_ok(
        &json!({"jid": "guard-sched-1", "jobtype": "G", "args": [], "at": rfc3339_in(600.0)}),
    );
    c.ack("guard-sched-1").expect_ok();
    // A dead job: a late ACK removes it too.
    push_fetch(
        &mut c,
        &json!({"jid": "guard-dead-1", "jobtype": "G", "args": [], "retry": -1}),
        "default",
    );
    c.fail(&json!({"jid": "guard-dead-1"})).expect_ok();
    c.ack("guard-dead-1").expect_ok();
    let info = c.info();
    assert_eq!(
        (
            set_size(&info, "retries"),
            set_size(&info, "scheduled"),
            set_size(&info, "dead")
        ),
        (0, 1, 0),
        "{info}"
    );
    assert_eq!(
        info["faktory"]["total_processed"], 4,
        "two FAILs and two late ACKs count, the ACK of the scheduled job does not: {info}"
    );
    assert_eq!(info["faktory"]["total_failures"], 2, "{info}");
}

#[test]
fn duplicate_jids_across_states_and_within_pushb() {
    let s = Server::start(fast());
    let mut c = s.conn();
    // Working, retry, scheduled, dead: all refuse a second job (another jobtype) with the
    // same jid.
    push_fetch(&mut c, &job("dupe-working", "D"), "default");
    assert!(c
        .push(&job("dupe-working", "E"))
        .expect_err()
        .starts_with("ERR duplicate jid"));
    c.fail(&json!({"jid": "dupe-working"})).expect_ok();
    assert!(c
        .push(&job("dupe-working", "E"))
        .expect_err()
        .starts_with("ERR duplicate jid"));
    c.push_ok(&json!({"jid": "dupe-sched", "jobtype": "D", "args": [], "at": rfc3339_in(600.0)}));
    assert!(c
        .push(&job("dupe-sched", "E"))
        .expect_err()
        .starts_with("ERR duplicate jid"));
    // Inside one PUSHB.
    let r = c.cmd(r#"PUSHB [{"jid":"dupe-bulk-1","jobtype":"D","args":[]},{"jid":"dupe-bulk-1","jobtype":"D","args":[1]}]"#);
    let m = r.json();
    assert!(
        m["dupe-bulk-1"]
            .as_str()
            .unwrap_or("")
            .starts_with("duplicate jid"),
        "{r:?}"
    );
    assert_eq!(queue_size(&c.info(), "default"), Some(1));
    // After the ACK a jid is free again.
    let j = c.fetch_job("default");
    c.ack(j["jid"].as_str().unwrap()).expect_ok();
    c.push_ok(&job("dupe-bulk-1", "D"));
}

#[test]
fn scheduled_job_with_bad_queue_is_refused_at_push() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let r = c.push(&json!({"jid": "sched-badq-1", "jobtype": "S", "args": [], "at": rfc3339_in(60.0), "queue": "no spaces"}));
    assert_eq!(
        r.wire_str(),
        "-ERR cannot get \"no spaces\" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z\r\n"
    );
    assert_eq!(set_size(&c.info(), "scheduled"), 0);
}

#[test]
fn connections_count_only_after_hello() {
    let s = Server::start(fast());
    let mut c = s.conn();
    let mut pending: Vec<Conn> = (0..3).map(|_| Conn::connect(s.addr)).collect();
    let _done: Vec<Conn> = (0..2).map(|_| s.conn()).collect();
    // The server has accepted the pending ones (it greeted them), but they sent no HELLO.
    for p in &mut pending {
        p.read_hi();
    }
    assert_eq!(c.info()["server"]["connections"], 3);
}

#[test]
fn silent_worker_is_reaped_but_its_job_stays_reserved() {
    // On PostgreSQL every BEAT is a transaction; on a loaded machine one can take long enough
    // that a 1 s timeout expires a worker that is beating, so the timeout is 2 s there.
    let timeout_secs: u64 = if on_postgres() { 2 } else { 1 };
    let s = Server::start(
        fast()
            .arg("--heartbeat-timeout-secs")
            .arg(timeout_secs.to_string()),
    );
    let mut p = s.conn();
    p.push_ok(&job("reaped-job-1", "R"));
    let mut silent = s.worker("wid-silent");
    assert_eq!(silent.fetch_job("default")["jid"], "reaped-job-1");
    let mut beating = s.worker("wid-beating");
    let t = Instant::now();
    // The beating worker survives; the silent one is closed. (The sleep paces the heartbeats
    // over 2.5 heartbeat timeouts; the closing is then waited for with a deadline.)
    while t.elapsed() < Duration::from_millis(2500 * timeout_secs) {
        beating.cmd(r#"BEAT {"wid":"wid-beating"}"#).expect_ok();
        thread::sleep(Duration::from_millis(300));
    }
    silent.expect_closed(Duration::from_secs(5));
    assert_eq!(
        p.cmd(r#"BEAT {"wid":"wid-silent"}"#).wire_str(),
        "-ERR unknown worker wid-silent\r\n"
    );
    beating.cmd(r#"BEAT {"wid":"wid-beating"}"#).expect_ok();
    // Producers are never reaped.
    p.cmd("INFO").json();
    // Heartbeat loss alone never moves a job.
    let info = p.info();
    assert_eq!(set_size(&info, "working"), 1, "{info}");
    assert_eq!(info["faktory"]["total_failures"], 0);
    p.ack("reaped-job-1").expect_ok();
    assert_eq!(set_size(&p.info(), "working"), 0);
}

#[test]
fn second_server_on_the_same_data_dir_is_refused() {
    if skip_on_postgres(
        "the lock guards the embedded store's files; nodes sharing a database is PostgreSQL's point",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), fast());
    s.conn().push_ok(&job("single-owner-1", "X"));
    let r = std::panic::catch_unwind(|| Server::start_in(dir.path(), fast()));
    match r {
        // Refused to start, and for the reason that the data directory is locked (not, say, a
        // crash or a startup timeout).
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(
                msg.starts_with("werk exited") && msg.contains("is in use by another werk process"),
                "the second server did not refuse because of the lock: {msg}"
            );
        }
        Ok(mut second) => {
            second.kill();
            panic!("a second werk started on a data dir that is in use");
        }
    }
    assert_eq!(s.conn().fetch_job("default")["jid"], "single-owner-1");
}

#[test]
fn missing_password_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(WERK)
        .args(["serve", "-b", "127.0.0.1:0", "-w", ":0", "-d"])
        .arg(dir.path().join("data"))
        .arg("--password-file")
        .arg(dir.path().join("no-such-file"))
        .env_remove("FAKTORY_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run werk");
    assert!(
        !out.status.success(),
        "werk must not start (without auth!) when its password file is missing"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("werk listening on"),
        "werk announced it is listening without its password"
    );
}

#[test]
fn faktory_password_env_naming_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("secret");
    std::fs::write(&pw_file, "from-file  \n").unwrap();
    // FAKTORY_PASSWORD=/path: the password is read from that file.
    let s = Server::start_in(
        dir.path(),
        ServerOpts::new().password_env(pw_file.to_str().unwrap()),
    );
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    let (salt, i) = (
        hi["s"].as_str().expect("password configured").to_string(),
        hi["i"].as_u64().unwrap(),
    );
    c.send(&format!(
        "HELLO {}",
        json!({"v": 2, "pwdhash": pwdhash("from-file", &salt, i)})
    ));
    assert_eq!(
        c.read_reply().unwrap().wire(),
        b"+OK\r\n",
        "password is the file's content, trailing whitespace trimmed"
    );
}

#[test]
fn binary_garbage_and_non_utf8_lines() {
    let s = Server::start(fast());
    // A TLS ClientHello on the plaintext port: closed without reply.
    let mut t = Conn::connect(s.addr);
    t.read_hi();
    t.send_bytes(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, b'\n',
    ]);
    t.expect_closed(Duration::from_secs(5));
    // Non-UTF-8 bytes in a command after the handshake: an error, and the connection lives on.
    let mut c = s.conn();
    c.send_bytes(b"PUSH {\"jid\":\"\xff\xfe\xfd-invalid\",\"jobtype\":\"X\",\"args\":[]}\r\n");
    let r = c.read_reply().expect("a reply to a non-UTF-8 line");
    assert!(r.expect_err().starts_with("ERR "), "{r:?}");
    c.send_bytes(b"\xc3\x28 garbage\r\n");
    let r = c.read_reply().expect("a reply");
    assert!(r.expect_err().starts_with("ERR "), "{r:?}");
    c.push_ok(&job("after-garbage-1", "X"));
}

#[test]
fn flush_is_durable_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), fast());
    let mut c = s.conn();
    c.push_ok(&job("flushed-job-1", "F"));
    c.cmd("QUEUE PAUSE default").expect_ok();
    c.cmd("FLUSH").expect_ok();
    drop(c);
    s.kill();
    let s = Server::start_in(dir.path(), fast());
    let mut c = s.conn();
    let info = c.info();
    assert_eq!(info["faktory"]["total_enqueued"], 0, "{info}");
    c.push_ok(&job("flushed-job-2", "F"));
    assert_eq!(
        c.fetch_job("default")["jid"],
        "flushed-job-2",
        "pause should be gone after FLUSH"
    );
}

#[test]
fn scheduled_job_due_during_downtime_is_promoted_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fast().scan_interval_ms(100);
    let mut s = Server::start_in(dir.path(), opts.clone());
    let at = rfc3339_in(0.5);
    s.conn()
        .push_ok(&json!({"jid": "downtime-job-1", "jobtype": "S", "args": [], "at": at}));
    s.kill();
    // The job falls due while the server is down: the clock passing `at` is the condition.
    let due = parse_ts(&at).with_timezone(&chrono::Utc) + chrono::Duration::milliseconds(100);
    let left = (due - chrono::Utc::now()).to_std().unwrap_or_default();
    thread::sleep(left);
    assert!(chrono::Utc::now() > due);
    let s = Server::start_in(dir.path(), opts);
    let mut c = s.conn();
    let got = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        c.fetch("default").map(|x| x.1)
    });
    assert_eq!(
        got.expect("promoted after restart")["jid"],
        "downtime-job-1"
    );
}

#[test]
fn queue_remove_leaves_working_jobs_alone() {
    let s = Server::start(fast());
    let mut c = s.conn();
    push_fetch(
        &mut c,
        &json!({"jid": "rm-working-1", "jobtype": "R", "args": [], "queue": "rmw"}),
        "rmw",
    );
    c.push_ok(&json!({"jid": "rm-waiting-1", "jobtype": "R", "args": [], "queue": "rmw"}));
    c.cmd("QUEUE REMOVE rmw").expect_ok();
    let info = c.info();
    assert_eq!(set_size(&info, "working"), 1, "{info}");
    // The reservation is intact: FAIL finds it and it goes to retries.
    c.fail(&json!({"jid": "rm-working-1"})).expect_ok();
    assert_eq!(set_size(&c.info(), "retries"), 1);
}

#[test]
fn racing_ack_and_fail_leave_no_job_and_fail_each_at_most_once() {
    let s = Server::start(fast());
    let mut c = s.conn();
    const N: usize = 150;
    for i in 0..N {
        c.push_ok(&json!({"jid": format!("race-af-{i:04}"), "jobtype": "R", "args": []}));
    }
    for _ in 0..N {
        c.fetch_job("default");
    }
    let addr = s.addr;
    let acker = thread::spawn(move || {
        let mut a = Conn::connect(addr);
        a.handshake(None, None);
        (0..N)
            .map(|i| a.ack(&format!("race-af-{i:04}")).is_ok())
            .collect::<Vec<bool>>()
    });
    let failer = thread::spawn(move || {
        let mut f = Conn::connect(addr);
        f.handshake(None, None);
        (0..N)
            .map(|i| {
                let r = f.fail(&json!({"jid": format!("race-af-{i:04}")}));
                match &r {
                    r if r.is_ok() => true,
                    Reply::Error(e) if e.starts_with("ERR Job not found") => false,
                    other => panic!("FAIL: {other:?}"),
                }
            })
            .collect::<Vec<bool>>()
    });
    let acks = acker.join().unwrap();
    let fails = failer.join().unwrap();
    assert!(acks.iter().all(|&ok| ok), "ACK always answers +OK");
    let failed = fails.iter().filter(|&&f| f).count() as u64;
    let info = c.info();
    assert_eq!(set_size(&info, "working"), 0, "{info}");
    assert_eq!(
        (set_size(&info, "retries"), queue_size(&info, "default").unwrap_or(0)),
        (0, 0),
        "every job got an ACK +OK, so none is left (an ACK after the FAIL removes the retry): {info}"
    );
    assert_eq!(info["faktory"]["total_failures"], failed);
    assert_eq!(
        info["faktory"]["total_processed"],
        N as u64 + failed,
        "each job is processed once by whichever came first, and once more by an ACK after \
         a FAIL: {info}"
    );
}

#[test]
fn requeue_racing_the_scheduler_makes_no_copies() {
    let s = Server::start(fast().scan_interval_ms(10));
    let mut c = s.conn();
    const N: usize = 60;
    for i in 0..N {
        let at = rfc3339_in(0.3 + (i as f64) * 0.01);
        c.push_ok(
            &json!({"jid": format!("race-sched-{i:04}"), "jobtype": "R", "args": [], "at": at}),
        );
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1200) {
        c.mutate(&json!({"cmd": "requeue", "target": "scheduled"}))
            .expect_ok();
        // Paces the requeues over the 1.2 s in which the jobs fall due (not a synchronisation).
        thread::sleep(Duration::from_millis(5));
    }
    let mut seen = std::collections::HashMap::<String, u32>::new();
    while let Some((_, j)) = c.fetch("default") {
        *seen
            .entry(j["jid"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dups.is_empty(), "copies: {dups:?}");
    assert_eq!(
        seen.len(),
        N,
        "jobs lost: only {} of {N} delivered",
        seen.len()
    );
    assert_eq!(set_size(&c.info(), "scheduled"), 0);
}

#[test]
fn sigterm_answers_blocked_fetch_and_refuses_further_commands() {
    let mut s = Server::start(ServerOpts::new().fetch_timeout_ms(5000));
    let mut idle = s.conn();
    let mut w = s.worker("wid-shutdown");
    w.send("FETCH nothing-here");
    wait_fetches_waiting(&mut idle, 1);
    unsafe {
        libc::kill(s.pid(), libc::SIGTERM);
    }
    // The blocked FETCH is answered (not cut off mid-wait) well before its 5 s timeout: `$-1`,
    // as at its timeout.
    let t = Instant::now();
    match w.read_reply() {
        Ok(Reply::Null) => {}
        other => panic!("blocked FETCH during shutdown: {other:?}, want $-1"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "FETCH held the shutdown for {:?}",
        t.elapsed()
    );
    // Any further command is refused or finds the connection closed; never a success reply.
    match idle.try_cmd("INFO") {
        Ok(Reply::Error(e)) => assert_eq!(e, "ERR shutdown in progress"),
        Ok(other) => panic!("command accepted after SIGTERM: {other:?}"),
        Err(_) => {}
    }
    let st = s.terminate(Duration::from_secs(10));
    assert!(st.success(), "exit status {st}");
}
