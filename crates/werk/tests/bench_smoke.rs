//! Smoke test of `werk bench` against a real `werk serve`: the JSON report parses, its counts
//! add up, and the server's INFO agrees; also with a password (in the URL and via FAKTORY_URL).

mod common;

use std::process::Command;

use common::{queue_size, set_size, Server, ServerOpts, WERK};
use serde_json::Value;

struct Run {
    ok: bool,
    json: Value,
    stderr: String,
}

/// `werk bench --json ARGS`, with the URL either as `--url` or in FAKTORY_URL.
fn bench(url: &str, via_env: bool, args: &[&str]) -> Run {
    let mut cmd = Command::new(WERK);
    cmd.arg("bench").arg("--json").args(args);
    if via_env {
        cmd.env("FAKTORY_URL", url);
    } else {
        cmd.env_remove("FAKTORY_URL").args(["--url", url]);
    }
    let out = cmd.output().expect("run werk bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = if out.status.success() {
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("werk bench did not print one JSON object ({e}):\n{stdout}\n{stderr}")
        })
    } else {
        Value::Null
    };
    Run {
        ok: out.status.success(),
        json,
        stderr,
    }
}

#[track_caller]
fn ok(run: Run) -> Value {
    assert!(run.ok, "werk bench failed: {}", run.stderr);
    run.json
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a count in {v}"))
}

/// Percentiles are present, ordered, and the histogram holds `count` values.
#[track_caller]
fn latency(v: &Value, cmd: &str, count: u64) {
    let l = &v["latency_us"][cmd];
    assert_eq!(l["count"].as_u64(), Some(count), "{cmd} count in {v}");
    let p: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| l[k].as_u64().unwrap_or_else(|| panic!("{cmd}.{k} in {v}")))
        .collect();
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "{cmd} percentiles {p:?}"
    );
}

#[track_caller]
fn common_checks(v: &Value, mode: &str) {
    assert_eq!(v["mode"], mode, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["io_errors"], 0, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert!(v["elapsed_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["throughput_per_s"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn mixed_pushb_and_work_counts_add_up() {
    let server = Server::start_default();
    let url = server.url();

    let v = ok(bench(
        &url,
        false,
        &["--mode", "mixed", "--jobs", "2000", "--connections", "4"],
    ));
    common_checks(&v, "mixed");
    assert_eq!(n(&v, "connections"), 4);
    assert_eq!((n(&v, "producers"), n(&v, "workers")), (2, 2));
    assert_eq!(n(&v, "jobs"), 2000);
    assert_eq!(n(&v, "pushed"), 2000);
    assert_eq!(n(&v, "fetched"), 2000);
    assert_eq!(n(&v, "acked"), 2000);
    assert_eq!(n(&v, "failed"), 0);
    assert_eq!(n(&v, "counted"), 2000);
    latency(&v, "PUSH", 2000);
    latency(&v, "FETCH", 2000);
    latency(&v, "ACK", 2000);
    latency(&v, "E2E", 2000);
    let info = server.conn().info();
    assert_eq!(info["faktory"]["total_processed"], 2000, "{info}");
    assert_eq!(info["faktory"]["total_failures"], 0, "{info}");
    assert_eq!(queue_size(&info, "bench").unwrap_or(0), 0, "{info}");
    assert_eq!(set_size(&info, "working"), 0, "{info}");

    let v = ok(bench(
        &url,
        false,
        &["--mode", "pushb", "--jobs", "5000", "--batch", "100"],
    ));
    common_checks(&v, "pushb");
    assert_eq!(n(&v, "pushed"), 5000);
    assert_eq!(n(&v, "rejected"), 0);
    assert_eq!(n(&v, "batch"), 100);
    latency(&v, "PUSHB", 50);
    let info = server.conn().info();
    assert_eq!(queue_size(&info, "bench"), Some(5000), "{info}");

    // Work mode stops at --jobs even though more are queued.
    let v = ok(bench(
        &url,
        false,
        &["--mode", "work", "--jobs", "500", "--connections", "3"],
    ));
    common_checks(&v, "work");
    assert_eq!(n(&v, "acked"), 500);
    latency(&v, "FETCH", 500);
    latency(&v, "ACK", 500);
    let info = server.conn().info();
    assert_eq!(queue_size(&info, "bench"), Some(4500), "{info}");
    assert_eq!(info["faktory"]["total_processed"], 2500, "{info}");
}

#[test]
fn password_in_url_or_env() {
    let server = Server::start(ServerOpts::new().password_env("secret"));
    let url = format!("tcp://:secret@{}", server.addr);

    let v = ok(bench(
        &url,
        false,
        &["--mode", "mixed", "--jobs", "300", "--connections", "2"],
    ));
    common_checks(&v, "mixed");
    assert_eq!(n(&v, "acked"), 300);
    assert_eq!(
        v["url"],
        format!("tcp://{}", server.addr),
        "no password in the report"
    );

    // FAKTORY_URL instead of --url; latency mode with a short schedule.
    let v = ok(bench(
        &url,
        true,
        &[
            "--mode",
            "latency",
            "--rate",
            "400",
            "--jobs",
            "200",
            "--connections",
            "4",
        ],
    ));
    common_checks(&v, "latency");
    assert_eq!(n(&v, "pushed"), 200);
    assert_eq!(n(&v, "acked"), 200);
    latency(&v, "PUSH", 200);
    latency(&v, "PUSH_scheduled", 200);
    let info = server.conn().info();
    assert_eq!(info["faktory"]["total_processed"], 500, "{info}");

    // A wrong or missing password is a failed run, not a silent one.
    let wrong = bench(
        &format!("tcp://:nope@{}", server.addr),
        false,
        &["--mode", "push", "--jobs", "10"],
    );
    assert!(!wrong.ok);
    assert!(
        wrong.stderr.contains("Invalid password"),
        "{}",
        wrong.stderr
    );
    let missing = bench(
        &format!("tcp://{}", server.addr),
        false,
        &["--mode", "push", "--jobs", "10"],
    );
    assert!(!missing.ok);
    assert!(
        missing.stderr.contains("requires a password"),
        "{}",
        missing.stderr
    );
}

/// `werk bench --json --compare B --flush ARGS` against A.
fn compare(a: &str, b: &str, args: &[&str]) -> Run {
    let mut all = vec!["--compare", b, "--flush"];
    all.extend_from_slice(args);
    bench(a, false, &all)
}

/// `--compare`: the scenario runs on both servers alternately, every run from empty; the report
/// has each round, both medians, the ratios and the disk probe; each server really did the
/// work (its INFO); without --flush it refuses.
#[test]
fn compare_runs_both_servers_alternately() {
    let a = Server::start_default();
    let b = Server::start(ServerOpts::new().password_env("pw"));
    let b_url = format!("tcp://:pw@{}", b.addr);
    let disk = tempfile::tempdir().unwrap();
    let disk_dir = disk.path().to_str().unwrap();

    let v = ok(compare(
        &a.url(),
        &b_url,
        &[
            "--rounds",
            "3",
            "--mode",
            "push",
            "--jobs",
            "300",
            "--connections",
            "3",
            "--disk",
            disk_dir,
        ],
    ));
    assert_eq!(v["rounds"], 3, "{v}");
    assert_eq!(v["key_command"], "PUSH", "{v}");
    let runs = v["runs"].as_array().expect("runs");
    let order: Vec<&str> = runs.iter().map(|r| r["side"].as_str().unwrap()).collect();
    assert_eq!(order, ["A", "B", "B", "A", "A", "B"], "{v}");
    for r in runs {
        let rep = &r["report"];
        common_checks(rep, "push");
        assert_eq!(n(rep, "pushed"), 300, "{rep}");
        latency(rep, "PUSH", 300);
    }
    assert!(
        !v["b"]["url"].as_str().unwrap().contains("pw"),
        "password shown: {v}"
    );
    for side in ["a", "b"] {
        let tps: Vec<f64> = runs
            .iter()
            .filter(|r| r["side"] == side.to_uppercase())
            .map(|r| r["report"]["throughput_per_s"].as_f64().unwrap())
            .collect();
        let mut sorted = tps.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(
            v[side]["median_throughput_per_s"].as_f64().unwrap(),
            (sorted[1] * 10.0).round() / 10.0,
            "{v}"
        );
        assert!(v[side]["median_p50_us"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v[side]["spread"].as_f64().unwrap() >= 1.0, "{v}");
    }
    let ratio = v["ratio_throughput"].as_f64().unwrap();
    let expect = v["a"]["median_throughput_per_s"].as_f64().unwrap()
        / v["b"]["median_throughput_per_s"].as_f64().unwrap();
    assert!((ratio - expect).abs() < 0.01 * expect, "{v}");
    assert!(v["ratio_p50"].as_f64().unwrap() > 0.0, "{v}");
    let d = &v["disk"];
    assert_eq!(d["dir"], disk_dir, "{v}");
    let p = &d["fdatasync_us"];
    assert!(
        p["p50"].as_u64().unwrap() <= p["p99"].as_u64().unwrap(),
        "{v}"
    );
    assert!(
        p["p99"].as_u64().unwrap() <= p["max"].as_u64().unwrap(),
        "{v}"
    );
    assert_eq!(
        std::fs::read_dir(disk.path()).unwrap().count(),
        0,
        "probe file left behind"
    );
    // Every run began with FLUSH: each server holds exactly the last run's 300 jobs.
    for s in [&a, &b] {
        let info = s.conn().info();
        assert_eq!(queue_size(&info, "bench"), Some(300), "{info}");
    }

    // Work mode fills each side before each run.
    let v = ok(compare(
        &a.url(),
        &b_url,
        &[
            "--rounds",
            "1",
            "--mode",
            "work",
            "--jobs",
            "200",
            "--connections",
            "2",
            "--no-disk",
        ],
    ));
    assert!(v["disk"].is_null(), "{v}");
    for r in v["runs"].as_array().unwrap() {
        assert_eq!(n(&r["report"], "acked"), 200, "{v}");
    }

    let refused = bench(&a.url(), false, &["--compare", &b_url, "--mode", "push"]);
    assert!(!refused.ok);
    assert!(refused.stderr.contains("--flush"), "{}", refused.stderr);
}
