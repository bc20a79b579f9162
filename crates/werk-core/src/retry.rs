//! What a failure does to a job: Faktory's retry policy and backoff.

use serde::{Deserialize, Serialize};

use crate::job::Job;
use crate::time::{format_millis, format_stamp, parse_rfc3339, Millis, MAX_MILLIS};

/// The `failure` object carried by a job that has failed at least once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(default)]
    pub failed_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub errtype: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backtrace: Vec<String>,
    #[serde(default)]
    pub retry_count: i64,
    #[serde(default)]
    pub remaining: i64,
}

/// What a worker (or the reservation reaper) reports about a failed execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailInfo {
    pub errtype: String,
    pub message: String,
    pub backtrace: Vec<String>,
}

/// Longest `errtype` kept, in bytes.
pub const MAX_ERRTYPE: usize = 100;
/// Longest `message` kept, in bytes.
pub const MAX_MESSAGE: usize = 1000;
/// Most backtrace lines kept.
pub const MAX_BACKTRACE: usize = 50;

impl FailInfo {
    /// Normalises what a FAIL carried: trimmed, truncated on character boundaries, `unknown`
    /// when empty, at most 50 backtrace lines.
    pub fn new(errtype: &str, message: &str, mut backtrace: Vec<String>) -> FailInfo {
        backtrace.truncate(MAX_BACKTRACE);
        FailInfo {
            errtype: or_unknown(truncate_chars(errtype.trim(), MAX_ERRTYPE)),
            message: or_unknown(truncate_chars(message.trim(), MAX_MESSAGE)),
            backtrace,
        }
    }

    /// The failure the reservation reaper records.
    pub fn reservation_expired() -> FailInfo {
        FailInfo {
            errtype: "ReservationExpired".to_string(),
            message: "Faktory job reservation expired".to_string(),
            backtrace: Vec::new(),
        }
    }
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s.to_string()
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Where a failed job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Into the retry set until `next_at`.
    Retry { next_at: Millis },
    /// Out of retries (or `retry` < 0): into the dead set.
    Dead,
    /// `retry` = 0: dropped.
    Discarded,
}

/// Retry delay in seconds after failure number `count` (0 for the first), with `r` in 0..=29:
/// `count⁴ + 15 + r·(count + 1)`.
pub fn backoff_seconds(count: i64, r: u32) -> i64 {
    let c = count.clamp(0, 10_000);
    c.saturating_pow(4)
        .saturating_add(15)
        .saturating_add(i64::from(r.min(29)) * (c + 1))
}

/// Applies a failure to a job (updates its `failure` object) and decides where it goes.
/// `r` is a uniform random integer in 0..=29 for the backoff jitter.
///
/// First failure: `retry_count` 0, `remaining` = `retry`, `failed_at` = now. Later failures:
/// `retry_count` + 1, `remaining` − 1 while positive; `failed_at` keeps the first failure's time.
/// Then `retry` = 0 discards, `retry_count` < `retry` retries, anything else is dead.
pub fn apply_failure(job: &mut Job, info: &FailInfo, now: Millis, r: u32) -> FailOutcome {
    apply_failure_with(job, info, now, r, |ms| ms)
}

/// [`apply_failure`] with the retry delay (ms) passed through `scale_delay` (time compression
/// for tests).
pub fn apply_failure_with(
    job: &mut Job,
    info: &FailInfo,
    now: Millis,
    r: u32,
    scale_delay: impl Fn(Millis) -> Millis,
) -> FailOutcome {
    let retry = job.retry_limit();
    let failure = match job.failure.take() {
        None => Failure {
            failed_at: format_stamp(now),
            next_at: String::new(),
            message: info.message.clone(),
            errtype: info.errtype.clone(),
            backtrace: info.backtrace.clone(),
            retry_count: 0,
            // Faktory stores `retry` here, which is negative for `retry: -1`; strict clients
            // (Rust's usize) cannot read that, so Werk never writes a negative count.
            remaining: retry.max(0),
        },
        Some(mut f) => {
            f.retry_count = f.retry_count.saturating_add(1);
            if f.remaining > 0 {
                f.remaining -= 1;
            }
            f.remaining = f.remaining.max(0);
            // A `failure` can arrive with the PUSH, so `failed_at` may be any text; only a real
            // timestamp is kept (clients require it to parse).
            if parse_rfc3339(&f.failed_at).is_err() {
                f.failed_at = format_stamp(now);
            }
            f.message = info.message.clone();
            f.errtype = info.errtype.clone();
            f.backtrace = info.backtrace.clone();
            f.next_at = String::new();
            f
        }
    };
    let outcome = if retry == 0 {
        FailOutcome::Discarded
    } else if failure.retry_count < retry {
        // A pushed `failure` can carry any retry_count: keep the delay from overflowing and
        // `next_at` within what RFC 3339 can write.
        let delay = scale_delay(backoff_seconds(failure.retry_count, r).saturating_mul(1000));
        FailOutcome::Retry {
            next_at: now.saturating_add(delay).min(MAX_MILLIS),
        }
    } else {
        FailOutcome::Dead
    };
    let mut failure = failure;
    if let FailOutcome::Retry { next_at } = outcome {
        failure.next_at = format_millis(next_at);
    }
    job.failure = Some(failure);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job(retry: i64) -> Job {
        Job::parse_for_push(
            &format!(r#"{{"jid":"0123456789","jobtype":"X","args":[],"retry":{retry}}}"#),
            0,
        )
        .unwrap()
        .0
    }

    fn boom() -> FailInfo {
        FailInfo::new("E", "boom", vec!["a".into()])
    }

    #[test]
    fn backoff_table() {
        assert_eq!((backoff_seconds(0, 0), backoff_seconds(0, 29)), (15, 44));
        assert_eq!((backoff_seconds(1, 0), backoff_seconds(1, 29)), (16, 74));
        assert_eq!((backoff_seconds(2, 0), backoff_seconds(2, 29)), (31, 118));
        assert_eq!((backoff_seconds(3, 0), backoff_seconds(3, 29)), (96, 212));
        assert_eq!((backoff_seconds(5, 0), backoff_seconds(5, 29)), (640, 814));
    }

    #[test]
    fn retry_one_means_two_executions() {
        let mut j = job(1);
        let first = apply_failure(&mut j, &boom(), 1_000, 0);
        assert_eq!(first, FailOutcome::Retry { next_at: 16_000 });
        let f = j.failure.clone().unwrap();
        assert_eq!((f.retry_count, f.remaining), (0, 1));
        assert_eq!(parse_rfc3339(&f.failed_at), Ok(1_000));
        assert_eq!(f.next_at, format_millis(16_000));
        assert_eq!(apply_failure(&mut j, &boom(), 50_000, 0), FailOutcome::Dead);
        let f = j.failure.unwrap();
        assert_eq!((f.retry_count, f.remaining), (1, 0));
        assert_eq!(
            parse_rfc3339(&f.failed_at),
            Ok(1_000),
            "failed_at keeps the first failure"
        );
        assert!(f.next_at.is_empty());
    }

    /// Found by the `job_validation` fuzz target: a failure object pushed by the client with an
    /// unparseable `failed_at` was kept on the next failure.
    #[test]
    fn pushed_failure_with_bad_failed_at_gets_a_real_time() {
        let text = r#"{"jid":"0123456789","jobtype":"X","args":[],"retry":5,
            "failure":{"failed_at":"2025-01\u00e9:00.5Z","retry_count":0,"remaining":5}}"#;
        let mut j = Job::parse_for_push(text, 0).unwrap().0;
        apply_failure(&mut j, &boom(), 7_000, 0);
        assert_eq!(parse_rfc3339(&j.failure.unwrap().failed_at), Ok(7_000));

        let text = r#"{"jid":"0123456789","jobtype":"X","args":[],"retry":5,
            "failure":{"failed_at":"2025-01-01T10:00:00.5Z","retry_count":0,"remaining":5}}"#;
        let mut j = Job::parse_for_push(text, 0).unwrap().0;
        apply_failure(&mut j, &boom(), 7_000, 0);
        assert_eq!(
            j.failure.unwrap().failed_at,
            "2025-01-01T10:00:00.5Z",
            "a real time is kept"
        );
    }

    /// Found with the `job_validation` fuzz target: a pushed failure with a large retry_count
    /// (and a larger retry) overflowed the delay in ms (a panic with overflow checks, a retry in
    /// the past without), or put `next_at` after year 9999, where it is not valid RFC 3339.
    #[test]
    fn huge_pushed_retry_count_keeps_next_at_writable() {
        for count in [800, 9_999, i64::MAX - 2] {
            let text = format!(
                r#"{{"jid":"0123456789","jobtype":"X","args":[],"retry":{},
                    "failure":{{"failed_at":"2025-01-01T10:00:00Z","retry_count":{count}}}}}"#,
                i64::MAX
            );
            let mut j = Job::parse_for_push(&text, 0).unwrap().0;
            let outcome = apply_failure(&mut j, &boom(), 1_700_000_000_000, 29);
            assert_eq!(
                outcome,
                FailOutcome::Retry {
                    next_at: MAX_MILLIS
                },
                "{count}"
            );
            let next_at = j.failure.unwrap().next_at;
            assert_eq!(parse_rfc3339(&next_at), Ok(MAX_MILLIS), "{next_at}");
        }
    }

    #[test]
    fn zero_discards_and_negative_dies() {
        assert_eq!(
            apply_failure(&mut job(0), &boom(), 0, 0),
            FailOutcome::Discarded
        );
        let mut j = job(-1);
        assert_eq!(apply_failure(&mut j, &boom(), 0, 0), FailOutcome::Dead);
        assert_eq!(j.failure.unwrap().remaining, 0);
    }

    #[test]
    fn default_retry_gives_26_executions() {
        let mut j = job(25);
        let mut failures = 0;
        loop {
            failures += 1;
            match apply_failure(&mut j, &boom(), 0, 7) {
                FailOutcome::Retry { .. } => continue,
                FailOutcome::Dead => break,
                FailOutcome::Discarded => unreachable!(),
            }
        }
        assert_eq!(failures, 26);
    }

    #[test]
    fn fail_info_normalisation() {
        let long = "é".repeat(600);
        let info = FailInfo::new("  ", &long, (0..80).map(|i| i.to_string()).collect());
        assert_eq!(info.errtype, "unknown");
        assert!(info.message.len() <= MAX_MESSAGE && info.message.len() >= MAX_MESSAGE - 1);
        assert_eq!(info.backtrace.len(), 50);
    }

    proptest! {
        #[test]
        fn backoff_within_bounds(c in 0i64..30, r in 0u32..30) {
            let d = backoff_seconds(c, r);
            prop_assert!(d >= c.pow(4) + 15);
            prop_assert!(d <= c.pow(4) + 15 + 29 * (c + 1));
        }

        #[test]
        fn retries_bounded(retry in -3i64..40, r in 0u32..30) {
            let mut j = job(retry);
            let mut runs = 1;
            loop {
                match apply_failure(&mut j, &boom(), 0, r) {
                    FailOutcome::Retry { next_at } => { prop_assert!(next_at >= 15_000); runs += 1; }
                    FailOutcome::Dead => { prop_assert!(retry != 0); break; }
                    FailOutcome::Discarded => { prop_assert_eq!(retry, 0); break; }
                }
                prop_assert!(j.failure.as_ref().unwrap().remaining >= 0);
            }
            prop_assert_eq!(runs, retry.max(0) + 1);
        }
    }
}
