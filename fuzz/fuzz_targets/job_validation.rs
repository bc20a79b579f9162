//! Fuzzes PUSH validation (`werk_core::Job::parse_for_push`) and the retry policy applied to
//! the jobs it accepts (`werk_core::retry::apply_failure`).
//!
//! The input is the PUSH argument (decoded as UTF-8, lossily).
//!
//! Checked:
//! * no panics (the fuzz build has overflow checks on);
//! * an accepted job has a jid of at least 8 bytes, a queue matching `[a-zA-Z0-9._-]+`, a
//!   non-empty jobtype, `retry` set, `reserve_for` <= 86400, a `created_at` (which parses when
//!   the server filled it in), and its `at` time is the parse of its `at` text;
//! * `to_json` parses back with `Job::from_stored` and re-serialises byte for byte, and pushing
//!   the stored payload again is accepted unchanged (a FETCHed job can be re-pushed);
//! * up to 6 successive failures through `apply_failure`: `failure.remaining >= 0`,
//!   `retry_count` counts up from 0 (or from what the job carried), `failed_at` and `next_at`
//!   parse as RFC 3339, `next_at` is exactly the retry time returned, and `retry: 0` discards,
//!   negative `retry` kills; the failed job still round-trips through storage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use werk_core::job::{valid_queue_name, MAX_RESERVE_FOR};
use werk_core::retry::{apply_failure, FailInfo, FailOutcome};
use werk_core::time::{format_millis, parse_rfc3339, Millis};
use werk_core::Job;

const NOW: Millis = 1_700_000_000_000;

fn round_trip(job: &Job) -> String {
    let json = job.to_json();
    let back =
        Job::from_stored(&json).unwrap_or_else(|e| panic!("stored job unreadable: {e}: {json}"));
    assert_eq!(
        back.to_json(),
        json,
        "stored job does not re-serialise identically"
    );
    json
}

fn ts(s: &str, what: &str) -> Millis {
    parse_rfc3339(s).unwrap_or_else(|e| panic!("{what} {s:?} is not RFC 3339: {e}"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // Extreme clocks must not panic either (timestamps fall back, they do not overflow).
    let _ = Job::parse_for_push(&text, Millis::MIN);
    let _ = Job::parse_for_push(&text, Millis::MAX);

    let Ok((mut job, at)) = Job::parse_for_push(&text, NOW) else {
        return;
    };
    let decoded = Job::decode(&text).expect("accepted but does not decode");

    assert!(job.jid.len() >= 8, "short jid accepted: {:?}", job.jid);
    assert!(
        valid_queue_name(&job.queue),
        "bad queue accepted: {:?}",
        job.queue
    );
    assert!(
        job.queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "{:?}",
        job.queue
    );
    assert!(!job.jobtype.is_empty());
    assert!(job.retry.is_some(), "retry not defaulted");
    assert!(job.reserve_for <= MAX_RESERVE_FOR);
    assert!(job.args.as_ref().is_some_and(|a| a.get().starts_with('[')));
    assert!(!job.created_at.is_empty());
    if decoded.created_at.is_empty() {
        assert_eq!(job.created_at, format_millis(NOW));
        assert_eq!(ts(&job.created_at, "created_at"), NOW);
    }
    match at {
        Some(ms) => assert_eq!(ts(&job.at, "at"), ms),
        None => assert!(job.at.is_empty()),
    }

    let json = round_trip(&job);
    let (again, again_at) = Job::parse_for_push(&json, NOW + 1)
        .unwrap_or_else(|e| panic!("stored payload is not pushable: {e}: {json}"));
    assert_eq!(
        again.to_json(),
        json,
        "re-pushing a stored payload changes it"
    );
    assert_eq!(again_at, at);

    let retry = job.retry.unwrap();
    let carried = job.failure.clone();
    let info = FailInfo::new(
        text.get(..text.len().min(40)).unwrap_or("E"),
        &text,
        text.lines().take(60).map(str::to_owned).collect(),
    );
    let mut now = NOW;
    for i in 0..6i64 {
        now += 1_000;
        let outcome = apply_failure(&mut job, &info, now, (i as u32 * 7) % 30);
        let f = job.failure.clone().expect("no failure recorded");
        assert!(f.remaining >= 0, "negative remaining {}", f.remaining);
        let expected_count = match &carried {
            None => i,
            Some(c) => c.retry_count.saturating_add(i + 1),
        };
        assert_eq!(f.retry_count, expected_count);
        let failed_at = ts(&f.failed_at, "failure.failed_at");
        if carried.is_none() {
            assert_eq!(
                failed_at,
                NOW + 1_000,
                "failed_at is not the first failure's time"
            );
        }
        match outcome {
            FailOutcome::Retry { next_at } => {
                assert!(retry > 0 && f.retry_count < retry);
                assert!(
                    next_at >= now + 15_000,
                    "retry too soon: {next_at} at {now}"
                );
                assert_eq!(
                    ts(&f.next_at, "failure.next_at"),
                    next_at,
                    "next_at text != retry time"
                );
            }
            FailOutcome::Dead => {
                assert!(retry < 0 || (retry > 0 && f.retry_count >= retry));
                assert!(f.next_at.is_empty());
            }
            FailOutcome::Discarded => assert_eq!(retry, 0),
        }
        round_trip(&job);
        if !matches!(outcome, FailOutcome::Retry { .. }) {
            break;
        }
    }
});
