//! Running a request again when PostgreSQL aborted it for a conflict with another transaction.
//!
//! Transactions of different requests lock rows in different orders — MUTATE walks a set in
//! score order, a batched ACK takes its jids as they came, a reaper pass its expired rows —
//! so two of them can wait for each other. PostgreSQL then aborts one (`40P01 deadlock
//! detected`, after `deadlock_timeout`); `40001` (a serialization failure) is the same kind
//! of answer. An aborted transaction applied nothing, so the request is simply run again: the
//! other transaction has gone on meanwhile. Without this, a UI "retry all" racing the reaper
//! and the workers' ACKs answered an error now and then (seen in CI), and a PUSH or ACK could
//! answer `-ERR` for a conflict that was no fault of the client's.
//!
//! Only these two codes are retried: any other error (a refused row, a lost connection, a
//! COMMIT whose outcome is unknown) goes back to the caller as before.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use werk_store::{Result, StoreError};

/// How many times a request runs at most (the first run included).
pub const ATTEMPTS: u32 = 5;

/// The SQLSTATEs after which a transaction applied nothing and may run again.
const CONFLICTS: [&str; 2] = ["40P01", "40001"];

/// Whether `e` is PostgreSQL's abort of a transaction for a conflict (the text is
/// [`crate::describe_error`]'s: `ERROR <SQLSTATE>: <message>`).
pub fn is_conflict(e: &StoreError) -> bool {
    let StoreError::Backend(text) = e else {
        return false;
    };
    text.strip_prefix("ERROR ")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(code, _)| CONFLICTS.contains(&code))
}

/// Runs `run` (one whole request: its own transaction or statement) until it is not aborted
/// for a conflict, at most [`ATTEMPTS`] times, pausing a random 1–20 ms times the attempt
/// between runs so that the two sides do not meet again in step.
pub async fn again<T, F, Fut>(what: &str, mut run: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match run().await {
            Err(e) if attempt < ATTEMPTS && is_conflict(&e) => {
                tracing::warn!(
                    request = what,
                    attempt,
                    error = %e,
                    "PostgreSQL aborted the request for a conflict with another transaction \
                     (nothing of it was applied); running it again"
                );
                let pause = rand::rng().random_range(1..=20u64) * u64::from(attempt);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_deadlocks_and_serialization_failures_are_conflicts() {
        let backend = |t: &str| StoreError::Backend(t.to_string());
        assert!(is_conflict(&backend("ERROR 40P01: deadlock detected")));
        assert!(is_conflict(&backend(
            "ERROR 40001: could not serialize access due to concurrent update"
        )));
        assert!(!is_conflict(&backend("ERROR 23505: duplicate key value")));
        assert!(!is_conflict(&backend(
            "COMMIT outcome unknown (the connection failed during COMMIT): ERROR 40P01: x"
        )));
        assert!(!is_conflict(&backend(
            "FATAL 57P01: terminating connection"
        )));
        assert!(!is_conflict(&StoreError::Full("ERROR 40P01: x".into())));
        assert!(!is_conflict(&StoreError::Closed));
    }

    #[tokio::test]
    async fn a_conflict_runs_again_and_other_errors_do_not() {
        let mut runs = 0;
        let r = again("t", || {
            runs += 1;
            let n = runs;
            async move {
                if n < 3 {
                    Err(StoreError::Backend("ERROR 40P01: deadlock detected".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);

        let mut runs = 0;
        let r: Result<()> = again("t", || {
            runs += 1;
            async { Err(StoreError::Backend("ERROR 23505: duplicate".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(runs, 1);

        let mut runs = 0;
        let r: Result<()> = again("t", || {
            runs += 1;
            async { Err(StoreError::Backend("ERROR 40P01: deadlock detected".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(runs, ATTEMPTS);
    }
}
