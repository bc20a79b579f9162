//! Enterprise job tracking end to end: `TRACK SET` / `TRACK GET` through the real `faktory`
//! crate (its `ent` feature builds every job with `custom.track = 1`) and the raw protocol,
//! against the real `werk` binary. States through push, fetch, FAIL, retry, ACK, death;
//! percent and desc; the shape for unknown jobs; and `reserve_until`, which extends a working
//! job's reservation durably (across a SIGKILL) and never shortens it.

mod common;

use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use faktory::ent::{JobState, Progress, ProgressUpdate};
use faktory::mutate::{Filter, JobSet};
use faktory::{Client, JobBuilder, JobId};
use serde_json::{json, Value};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

async fn client(s: &Server) -> Client {
    timeout(T, Client::connect_to(&s.url()))
        .await
        .expect("connect timed out")
        .expect("faktory Client connects")
}

/// TRACK GET until the state is `want` (FETCH is answered before its reservation commits, and
/// TRACK GET reads committed state, so "working" may show a moment after the FETCH reply).
async fn progress_in(c: &mut Client, jid: &JobId, want: JobState) -> Progress {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let p = progress(c, jid).await;
        if p.state == want || Instant::now() > deadline {
            assert_eq!(p.state, want, "{p:?}");
            return p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn progress(c: &mut Client, jid: &JobId) -> Progress {
    timeout(T, c.get_progress(jid))
        .await
        .expect("TRACK GET timed out")
        .expect("TRACK GET")
        .expect("TRACK GET answers JSON")
}

#[track_caller]
fn track_get(c: &mut Conn, jid: &str) -> Value {
    let r = c.cmd(&format!("TRACK GET {jid}"));
    match &r {
        Reply::Bulk(_) => r.json(),
        other => panic!("TRACK GET {jid}: expected bulk JSON, got {other:?}"),
    }
}

#[track_caller]
fn track_set(c: &mut Conn, upd: &Value) -> Reply {
    c.cmd(&format!("TRACK SET {upd}"))
}

/// INFO's `working` count.
fn working(c: &mut Conn) -> u64 {
    set_size(&c.info(), "working")
}

fn scaled() -> ServerOpts {
    ServerOpts::new()
        .fetch_timeout_ms(100)
        .scan_interval_ms(50)
        .args(["--reap-interval-ms", "50", "--time-scale", "0.01"])
}

// ---------------------------------------------------------------------------------------------
// Through the faktory crate
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn states_percent_and_desc_through_the_faktory_crate() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(100));
    let mut c = client(&s).await;
    let mut w = s.worker("track-w");

    let job = JobBuilder::new("Tracked")
        .queue("trk")
        .retry(3isize)
        .build();
    assert_eq!(
        job.custom.get("track"),
        Some(&json!(1)),
        "ent builds tracked jobs"
    );
    let jid = job.id().clone();
    c.enqueue(job).await.unwrap();

    let p = progress(&mut c, &jid).await;
    assert_eq!(&*p.jid, &*jid);
    assert_eq!(p.state, JobState::Enqueued);
    assert_eq!((p.percent, p.desc.as_deref()), (None, None));
    let t0 = p.updated_at.expect("updated_at is set");
    let age = chrono::Utc::now() - t0;
    assert!(
        age >= chrono::Duration::seconds(-2) && age < chrono::Duration::seconds(30),
        "updated_at {t0} is not about now"
    );

    let fetched = w.fetch_job("trk");
    assert_eq!(fetched["jid"], json!(&*jid));
    let p = progress_in(&mut c, &jid, JobState::Working).await;
    assert!(p.updated_at.unwrap() >= t0);

    c.set_progress(
        ProgressUpdate::builder(jid.clone())
            .percent(40)
            .desc("step 1 of 3".to_string())
            .build(),
    )
    .await
    .unwrap();
    let p = progress(&mut c, &jid).await;
    assert_eq!(p.state, JobState::Working);
    assert_eq!(p.percent, Some(40));
    assert_eq!(p.desc.as_deref(), Some("step 1 of 3"));
    let t1 = p.updated_at.unwrap();
    assert!(t1 >= t0);

    // Only percent: the desc is kept.
    c.set_progress(ProgressUpdate::set(jid.clone(), 75))
        .await
        .unwrap();
    let p = progress(&mut c, &jid).await;
    assert_eq!(p.percent, Some(75));
    assert_eq!(
        p.desc.as_deref(),
        Some("step 1 of 3"),
        "an update without desc keeps it"
    );
    assert!(p.updated_at.unwrap() >= t1);

    // FAIL: in the retry set → failed.
    w.fail(&json!({"jid": &*jid, "errtype": "E", "message": "boom"}))
        .expect_ok();
    assert_eq!(progress(&mut c, &jid).await.state, JobState::Failed);
    // Back to the queue → enqueued; fetched → working; ACK → success.
    c.requeue(JobSet::Retries, Filter::from_ids(&[&jid]))
        .await
        .unwrap();
    assert_eq!(progress(&mut c, &jid).await.state, JobState::Enqueued);
    w.fetch_job("trk");
    progress_in(&mut c, &jid, JobState::Working).await;
    w.ack(&jid).expect_ok();
    let p = progress(&mut c, &jid).await;
    assert_eq!(p.state, JobState::Success);

    // retry < 0: a failure goes to the dead set.
    let dying = JobBuilder::new("Tracked")
        .queue("trk")
        .retry(-1isize)
        .build();
    let djid = dying.id().clone();
    c.enqueue(dying).await.unwrap();
    w.fetch_job("trk");
    w.fail(&json!({"jid": &*djid, "errtype": "E", "message": "fatal"}))
        .expect_ok();
    assert_eq!(progress(&mut c, &djid).await.state, JobState::Dead);

    // retry = 0: discarded after its failure → failed.
    let once = JobBuilder::new("Tracked")
        .queue("trk")
        .retry(0isize)
        .build();
    let ojid = once.id().clone();
    c.enqueue(once).await.unwrap();
    w.fetch_job("trk");
    w.fail(&json!({"jid": &*ojid, "errtype": "E", "message": "gone"}))
        .expect_ok();
    assert_eq!(progress(&mut c, &ojid).await.state, JobState::Failed);

    // Scheduled → enqueued.
    let later = JobBuilder::new("Tracked")
        .queue("trk")
        .at(chrono::Utc::now() + chrono::Duration::hours(1))
        .build();
    let ljid = later.id().clone();
    c.enqueue(later).await.unwrap();
    assert_eq!(progress(&mut c, &ljid).await.state, JobState::Enqueued);

    // Never pushed → unknown, no updated_at.
    let ghost = JobId::new("never-pushed-jid-0001");
    let p = progress(&mut c, &ghost).await;
    assert_eq!(&*p.jid, "never-pushed-jid-0001");
    assert_eq!(p.state, JobState::Unknown);
    assert!(p.updated_at.is_none());
    assert_eq!((p.percent, p.desc), (None, None));
    // TRACK SET of an unknown jid is accepted (and stores nothing).
    c.set_progress(ProgressUpdate::set(ghost.clone(), 10))
        .await
        .unwrap();
    assert_eq!(progress(&mut c, &ghost).await.state, JobState::Unknown);
}

// ---------------------------------------------------------------------------------------------
// Raw protocol
// ---------------------------------------------------------------------------------------------

#[test]
fn wire_shapes_unknown_and_untracked_jobs() {
    let s = Server::start(ServerOpts::new().fetch_timeout_ms(100));
    let mut c = s.conn();
    let unknown = |jid: &str| json!({"jid": jid, "state": "unknown", "updated_at": ""});

    assert_eq!(
        track_get(&mut c, "no-such-jid-123"),
        unknown("no-such-jid-123")
    );

    // Untracked jobs (no custom.track, track = 0): TRACK SET is +OK but stores nothing.
    c.push_ok(&json!({"jid": "untracked-0001", "jobtype": "U", "args": []}));
    c.push_ok(
        &json!({"jid": "untracked-0002", "jobtype": "U", "args": [], "custom": {"track": 0}}),
    );
    for jid in ["untracked-0001", "untracked-0002"] {
        assert_eq!(
            track_set(&mut c, &json!({"jid": jid, "percent": 10, "desc": "x"})).wire_str(),
            "+OK\r\n"
        );
        assert_eq!(track_get(&mut c, jid), unknown(jid), "{jid} is not tracked");
    }

    // A tracked job: the exact key set before and after TRACK SET.
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    c.push_ok(
        &json!({"jid": "tracked-wire-01", "jobtype": "T", "args": [], "custom": {"track": 1}}),
    );
    let g = track_get(&mut c, "tracked-wire-01");
    let keys: HashSet<&str> = g.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        HashSet::from(["jid", "state", "updated_at"]),
        "no percent or desc before a TRACK SET: {g}"
    );
    assert_eq!(g["jid"], "tracked-wire-01");
    assert_eq!(g["state"], "enqueued");
    let t = parse_ts(g["updated_at"].as_str().unwrap());
    assert!(
        t >= before && t <= chrono::Utc::now() + chrono::Duration::seconds(2),
        "{g}"
    );

    assert_eq!(
        track_set(
            &mut c,
            &json!({"jid": "tracked-wire-01", "percent": 0, "desc": "queued"})
        )
        .wire_str(),
        "+OK\r\n"
    );
    let g = track_get(&mut c, "tracked-wire-01");
    assert_eq!(g["percent"], 0, "{g}");
    assert_eq!(g["desc"], "queued", "{g}");
    assert_eq!(g["state"], "enqueued", "{g}");
    let mut w = s.worker("wire-w");
    let got: Vec<Value> = (0..3).map(|_| w.fetch_job("default")).collect();
    assert_eq!(got[2]["jid"], "tracked-wire-01");
    assert!(w.fetch("default").is_none());
    let working_seen = wait_for(Duration::from_secs(2), Duration::from_millis(10), || {
        (track_get(&mut c, "tracked-wire-01")["state"] == "working").then_some(())
    });
    assert!(
        working_seen.is_some(),
        "{}",
        track_get(&mut c, "tracked-wire-01")
    );
    track_set(&mut c, &json!({"jid": "tracked-wire-01", "percent": 100})).expect_ok();
    w.ack("tracked-wire-01").expect_ok();
    let g = track_get(&mut c, "tracked-wire-01");
    assert_eq!(g["state"], "success", "{g}");
    assert_eq!(g["percent"], 100, "{g}");
    assert_eq!(g["desc"], "queued", "{g}");
    // The untracked jobs stay unknown through their life.
    w.ack("untracked-0001").expect_ok();
    assert_eq!(
        track_get(&mut c, "untracked-0001"),
        unknown("untracked-0001")
    );

    // Bad input: an error reply, the connection stays usable.
    let r = track_set(&mut c, &json!("not an object"));
    assert!(r.expect_err().starts_with("ERR"), "{r:?}");
    let r = c.cmd("TRACK SET {\"jid\":");
    assert!(r.expect_err().starts_with("ERR invalid JSON"), "{r:?}");
    assert_eq!(track_get(&mut c, "tracked-wire-01")["state"], "success");
}

/// `reserve_until` keeps a working job reserved past its `reserve_for`, also after a SIGKILL and
/// restart; once it passes, the job comes back (expiry → retry → queue).
#[test]
fn reserve_until_outlasts_reserve_for_across_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    // reserve_for 60 s × 0.01 = 600 ms.
    let mut s = Server::start_in(tmp.path(), scaled());
    let mut c = s.conn();
    let jid = "reserve-until-01";
    c.push_ok(&json!({"jid": jid, "jobtype": "Long", "args": [], "queue": "long", "reserve_for": 60, "custom": {"track": 1}}));
    let mut w = s.worker("long-w");
    w.fetch_job("long");
    let fetched = Instant::now();
    let hold = Duration::from_millis(4000);
    let until = rfc3339_in(hold.as_secs_f64());
    assert_eq!(
        track_set(
            &mut c,
            &json!({"jid": jid, "percent": 5, "desc": "long haul", "reserve_until": until})
        )
        .wire_str(),
        "+OK\r\n"
    );

    // Well past the 600 ms reservation: still working, not re-delivered.
    let mut other = s.worker("other-w");
    while fetched.elapsed() < Duration::from_millis(1300) {
        assert!(
            other.fetch("long").is_none(),
            "re-delivered after {:?} although reserved until {until}",
            fetched.elapsed()
        );
    }
    assert_eq!(working(&mut c), 1);
    assert_eq!(c.info()["faktory"]["total_failures"], 0);
    assert_eq!(track_get(&mut c, jid)["state"], "working");

    // SIGKILL and restart on the same data.
    drop((c, w, other));
    s.kill();
    let mut s = Server::start_in(tmp.path(), scaled());
    let restarted = fetched.elapsed();
    assert!(
        restarted < hold - Duration::from_millis(800),
        "restart took too long to test anything ({restarted:?})"
    );
    let mut c = s.conn();
    let g = track_get(&mut c, jid);
    assert_eq!(g["state"], "working", "{g}");
    assert_eq!(g["percent"], 5, "{g}");
    assert_eq!(g["desc"], "long haul", "{g}");
    let mut other = s.worker("other-w2");
    while fetched.elapsed() < hold - Duration::from_millis(300) {
        assert!(
            other.fetch("long").is_none(),
            "re-delivered after the restart at {:?}, before reserve_until ({hold:?})",
            fetched.elapsed()
        );
    }
    assert_eq!(working(&mut c), 1, "still reserved after the restart");

    // After reserve_until: the reservation expires and the job comes back.
    let back = wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
        other.fetch("long").map(|x| x.1)
    })
    .expect("the job never came back after its reserve_until");
    let at = fetched.elapsed();
    assert_eq!(back["jid"], jid);
    assert!(
        at >= hold - Duration::from_millis(100),
        "came back at {at:?}"
    );
    assert!(s.is_running());
}

/// `reserve_until` earlier than the current reservation changes nothing.
#[test]
fn reserve_until_never_shortens_a_reservation() {
    let s = Server::start(scaled());
    let mut c = s.conn();
    let jid = "reserve-short-01";
    // reserve_for 300 s × 0.01 = 3 s.
    c.push_ok(&json!({"jid": jid, "jobtype": "Long", "args": [], "queue": "long", "reserve_for": 300, "custom": {"track": 1}}));
    let mut w = s.worker("short-w");
    w.fetch_job("long");
    let fetched = Instant::now();
    track_set(
        &mut c,
        &json!({"jid": jid, "reserve_until": rfc3339_in(0.2)}),
    )
    .expect_ok();
    // Past the shorter time asked for (the clock is the condition), the reaper ran a whole cycle
    // and left the job reserved.
    thread::sleep(Duration::from_millis(400).saturating_sub(fetched.elapsed()));
    let info = wait_full_task_cycle(&mut c, "Busy");
    assert!(
        fetched.elapsed() < Duration::from_millis(2500),
        "too slow to tell"
    );
    assert_eq!(
        set_size(&info, "working"),
        1,
        "the reservation was shortened: {info}"
    );
    assert_eq!(info["faktory"]["total_failures"], 0, "{info}");
    assert!(w.fetch("long").is_none());
    // It still expires on its own reservation (≈3 s): the reaper runs in this setup.
    let mut other = s.worker("short-w2");
    let back = wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
        other.fetch("long").map(|x| x.1)
    })
    .expect("the job never came back");
    assert_eq!(back["jid"], jid);
    assert!(
        fetched.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        fetched.elapsed()
    );
    // An ACK after a reserve_until extension of a re-fetched job: success.
    track_set(
        &mut c,
        &json!({"jid": jid, "reserve_until": rfc3339_in(30.0)}),
    )
    .expect_ok();
    other.ack(jid).expect_ok();
    assert_eq!(track_get(&mut c, jid)["state"], "success");
}
