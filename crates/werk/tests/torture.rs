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

/// The failover proof in small (issue 13; the long run is in docs/durability.md): a PostgreSQL
/// primary with a synchronous standby, three werk nodes, and — in a random order under load —
/// three primary failovers (replication stalled, every primary process killed, standby promoted,
/// a new standby built), four node kills, a standby restart and a session cut. Nothing
/// acknowledged is lost or resurrected; no new job is acknowledged after a failover before
/// the new standby's copy is complete; no cron tick is fired twice across the three nodes;
/// every committed batch's success callback is fired exactly once.
#[test]
fn cluster_torture_three_failovers_lose_nothing() {
    let out = Command::new(env!("CARGO_BIN_EXE_werk"))
        .args([
            "torture",
            "--cluster",
            "--failovers",
            "3",
            "--node-kills",
            "4",
        ])
        .args(["--standby-restarts", "1", "--cuts", "1"])
        .args(["--max-secs", "240", "--drain-timeout-secs", "120"])
        .output()
        .expect("run werk torture --cluster");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "werk torture --cluster failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("lost 0, resurrected 0"), "{stdout}");
    assert!(
        stdout.contains("node kills 4, failovers 3, standby restarts 1, cuts 1"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "9 passed, 0 failed"),
        "{stdout}"
    );
}
