//! Runs `werk torture` (the crash-torture harness) for a bounded number of kill rounds: every
//! job whose PUSH got `+OK` must be acknowledged in the end (0 lost), and no job may be
//! delivered after its ACK got `+OK` (0 resurrected).

use std::process::Command;

/// Runs 20 kill rounds with `extra` arguments; asserts success and returns stdout.
fn twenty_rounds(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_werk"))
        .args([
            "torture",
            "--rounds",
            "20",
            "--max-secs",
            "240",
            "--drain-timeout-secs",
            "120",
        ])
        .args(extra)
        .output()
        .expect("run werk torture");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "werk torture failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("lost 0, resurrected 0"), "{stdout}");
    assert!(stdout.contains("rounds 20, kills 20"), "{stdout}");
    stdout
}

#[test]
fn torture_twenty_kill_rounds_lose_nothing() {
    let stdout = twenty_rounds(&[]);
    assert!(
        stdout.lines().any(|l| l == "5 passed, 0 failed"),
        "{stdout}"
    );
}

/// The same on PostgreSQL: werk nodes SIGKILLed again and again on one database (which keeps
/// running) lose nothing they acknowledged. The database is FLUSHed by `werk torture` first.
#[test]
fn torture_on_postgresql_twenty_kill_rounds_lose_nothing() {
    let pg = werk_testpg::PgCluster::start().expect("start PostgreSQL");
    let url = pg.create_database("torture").expect("create database");
    twenty_rounds(&["--database-url", &url]);
}
