//! End-to-end tests with the Python client (`faktory` 1.0.0 from PyPI, cdrx/faktory_worker_python).
//!
//! The client is installed once into a virtualenv cached under the target directory
//! (`CARGO_TARGET_TMPDIR`); the venv is built in a private directory and moved into place with
//! an atomic rename, so concurrent test processes never see a half-built one. The scripts live
//! in `tests/python/` at the repository root.
//!
//! These tests FAIL (they do not skip) when python3, venv or the package is unavailable: the
//! Python client is part of the compatibility promise. Set `WERK_TEST_PYTHON` to use another
//! interpreter than `python3`.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const PKG: &str = "faktory==1.0.0";
const VENV_NAME: &str = "py-venv-faktory-1.0.0";

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python")
}

/// Run a command with a wall-clock limit; panics on spawn failure or timeout.
fn run_limited(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = t_err.join().unwrap_or_default();
            panic!(
                "{what}: {cmd:?} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

fn venv_is_valid(dir: &Path) -> bool {
    let py = dir.join("bin").join("python");
    py.exists()
        && Command::new(&py)
            .args([
                "-c",
                "import faktory, sys; sys.exit(0 if faktory.__version__ == '1.0.0' else 1)",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

fn build_venv() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(&base).expect("create CARGO_TARGET_TMPDIR");
    let final_dir = base.join(VENV_NAME);
    if venv_is_valid(&final_dir) {
        return final_dir;
    }
    let python = std::env::var("WERK_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tmp = base.join(format!("{VENV_NAME}.tmp-{}-{nanos}", std::process::id()));
    // Remove the private build directory if anything below fails (or after a lost race).
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(tmp.clone());

    let out = run_limited(
        Command::new(&python).args(["-m", "venv"]).arg(&tmp),
        Duration::from_secs(180),
        "python venv",
    );
    assert!(
        out.status.success(),
        "`{python} -m venv` failed (python3 and python3-venv are required by this suite; .ci/run installs them): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_limited(
        Command::new(tmp.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                PKG,
            ])
            .env("PIP_NO_INPUT", "1"),
        Duration::from_secs(400),
        "pip install",
    );
    assert!(
        out.status.success(),
        "pip install {PKG} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        venv_is_valid(&tmp),
        "{PKG} installed but cannot be imported"
    );

    // Publish atomically. Someone else may have won the race with an equally good venv.
    if fs::rename(&tmp, &final_dir).is_err() {
        if venv_is_valid(&final_dir) {
            let _ = fs::remove_dir_all(&tmp);
        } else {
            let _ = fs::remove_dir_all(&final_dir);
            fs::rename(&tmp, &final_dir).expect("publish venv");
        }
    }
    assert!(
        venv_is_valid(&final_dir),
        "venv at {} is not usable",
        final_dir.display()
    );
    final_dir
}

/// The venv's python, built once per process (tests in this file run in parallel threads).
fn python() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(build_venv).join("bin").join("python")
}

struct PyRun {
    code: i32,
    out: Value,
    stderr: String,
}

/// Runs tests/python/<script> with args; returns the exit code and the JSON of its last
/// stdout line.
fn run_script(script: &str, args: &[&str]) -> PyRun {
    let py = python();
    let out = run_limited(
        Command::new(&py)
            .arg(scripts_dir().join(script))
            .args(args)
            .env("PYTHONUNBUFFERED", "1"),
        Duration::from_secs(90),
        script,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{script} printed nothing (exit {}); stderr:\n{stderr}",
                out.status
            )
        });
    let out_json: Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("{script} output is not JSON ({e}): {stdout}\nstderr:\n{stderr}")
    });
    PyRun {
        code: out.status.code().unwrap_or(-1),
        out: out_json,
        stderr,
    }
}

fn fast() -> ServerOpts {
    ServerOpts::new().fetch_timeout_ms(300)
}

#[test]
fn python_producer_pushes_jobs() {
    let s = Server::start(fast());
    let r = run_script("producer.py", &[&s.url(), "pyq", "3"]);
    assert_eq!(
        r.code, 0,
        "producer failed: {}\nstderr:\n{}",
        r.out, r.stderr
    );
    let jids: Vec<String> = serde_json::from_value(r.out["jids"].clone()).unwrap();
    assert_eq!(jids.len(), 3);
    assert_eq!(r.out["ok"], json!([true, true, true]));

    let mut c = s.conn();
    assert_eq!(queue_size(&c.info(), "pyq"), Some(3));
    for (i, jid) in jids.iter().enumerate() {
        let (raw, job) = c.fetch("pyq").expect("python job");
        assert_eq!(&job["jid"], jid.as_str());
        assert_eq!(job["jobtype"], "py_add");
        assert_eq!(job["queue"], "pyq");
        assert_eq!(job["retry"], 5, "the python client sends retry=5: {raw}");
        // json.dumps output is kept byte for byte (spaces, the big integer).
        let args = format!(r#"[{i}, "x y  z", 12345678901234567890, {{"k": "v w"}}]"#);
        assert!(
            raw.contains(&args),
            "args not verbatim.\n expected {args}\n served {raw}"
        );
        assert_eq!(job["custom"], json!({"origin": "python", "n": i}));
        assert!(
            job.get("priority").is_none(),
            "priority must be dropped: {raw}"
        );
        c.ack(jid).expect_ok();
    }
}

#[test]
fn python_worker_processes_and_acks() {
    let s = Server::start(fast());
    let mut c = s.conn();
    for i in 0..3 {
        c.push_ok(&json!({"jid": format!("py-work-{i}-0000"), "jobtype": "py_add", "args": [i, i * 10], "queue": "pyw"}));
    }
    let r = run_script("worker.py", &[&s.url(), "pyw", "3", "30"]);
    assert_eq!(r.code, 0, "worker failed: {}\nstderr:\n{}", r.out, r.stderr);
    let mut processed: Vec<Value> = r.out["processed"].as_array().unwrap().clone();
    processed.sort_by_key(|v| v[0].as_i64());
    assert_eq!(
        processed,
        vec![json!([0, 0]), json!([1, 10]), json!([2, 20])]
    );
    assert_eq!(r.out["failed"], json!([]));
    assert_eq!(
        r.out["beat"], "OK",
        "BEAT from the python worker (JSON with spaces) must be +OK"
    );

    let info = c.info();
    assert_eq!(info["faktory"]["total_processed"], 3, "{info}");
    assert_eq!(info["faktory"]["total_failures"], 0, "{info}");
    assert_eq!(
        set_size(&info, "working"),
        0,
        "python ACKs were not applied: {info}"
    );
    assert_eq!(queue_size(&info, "pyw"), Some(0));
}

#[test]
fn python_worker_failure_lands_in_retries() {
    let s = Server::start(fast());
    let mut c = s.conn();
    c.push_ok(
        &json!({"jid": "py-boom-job-1", "jobtype": "py_boom", "args": ["a b"], "queue": "pyf"}),
    );
    c.push_ok(&json!({"jid": "py-fine-job-1", "jobtype": "py_add", "args": [41], "queue": "pyf"}));
    let r = run_script("worker.py", &[&s.url(), "pyf", "2", "30"]);
    assert_eq!(r.code, 0, "worker failed: {}\nstderr:\n{}", r.out, r.stderr);
    assert_eq!(r.out["failed"], json!([["a b"]]));
    assert_eq!(r.out["processed"], json!([[41]]));

    let info = c.info();
    assert_eq!(set_size(&info, "retries"), 1, "{info}");
    assert_eq!(set_size(&info, "working"), 0, "{info}");
    assert_eq!(info["faktory"]["total_failures"], 1);
    assert_eq!(info["faktory"]["total_processed"], 2);

    c.mutate(
        &json!({"cmd": "requeue", "target": "retries", "filter": {"jids": ["py-boom-job-1"]}}),
    )
    .expect_ok();
    let job = c.fetch_job("pyf");
    assert_eq!(job["jid"], "py-boom-job-1");
    assert_eq!(job["failure"]["errtype"], "ValueError");
    assert_eq!(job["failure"]["message"], "boom from python");
    assert_eq!(job["failure"]["retry_count"], 0);
}

#[test]
fn python_password_auth() {
    let s = Server::start(fast().password_env("py-secret"));
    // Right password (single-iteration hash, no "v" in HELLO).
    let r = run_script("producer.py", &[&s.url(), "pya", "1"]);
    assert_eq!(
        r.code, 0,
        "producer with the right password failed: {}\nstderr:\n{}",
        r.out, r.stderr
    );
    // Wrong password: the client recognises "Invalid password".
    let bad = format!("tcp://:not-it@{}", s.addr);
    let r = run_script("producer.py", &[&bad, "pya", "1"]);
    assert_eq!(
        r.code, 3,
        "wrong password must raise FaktoryAuthenticationError: {}\n{}",
        r.out, r.stderr
    );
    assert_eq!(r.out["error"], "auth");
    // The worker authenticates too and consumes the job.
    let r = run_script("worker.py", &[&s.url(), "pya", "1", "30"]);
    assert_eq!(
        r.code, 0,
        "worker with password failed: {}\nstderr:\n{}",
        r.out, r.stderr
    );
    assert_eq!(r.out["processed"].as_array().map(Vec::len), Some(1));
    let info = s.conn().info();
    assert_eq!(info["faktory"]["total_processed"], 1, "{info}");
    assert_eq!(queue_size(&info, "pya"), Some(0));
}
