//! Batch accounting: when a batch's callbacks fire and when it counts as complete or succeeded
//! for its parent. Pure: a backend loads a batch's [`Progress`], applies an event, stores the
//! result and carries out the returned [`Advance`] (enqueue a callback job, tell the parent) in
//! the same transaction as the event.
//!
//! The rules (Faktory Enterprise's batches):
//! * A batch is **complete** once it is committed, none of its jobs is pending (each has
//!   succeeded or failed at least once) and every child batch is complete. Its `complete`
//!   callback is then enqueued; the batch counts as complete for its parent when that callback
//!   job is ACKed — at once if it has none.
//! * A batch **succeeds** once it is complete (callback done), no job is pending or failed and
//!   every child batch succeeded. Its `success` callback is then enqueued, and the batch counts
//!   as succeeded for its parent when that job is ACKed — at once if it has none.
//! * Each callback fires at most once: its stage only moves forward.

/// Where a callback is: not yet due, its job enqueued, or done (its job ACKed, or the batch has
/// no such callback and its condition held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    #[default]
    Pending,
    Enqueued,
    Done,
}

impl Stage {
    /// The stored code (`0`, `1`, `2`).
    pub fn code(self) -> i64 {
        match self {
            Stage::Pending => 0,
            Stage::Enqueued => 1,
            Stage::Done => 2,
        }
    }

    /// From a stored code; anything unknown is `Pending`.
    pub fn from_code(code: i64) -> Stage {
        match code {
            1 => Stage::Enqueued,
            2 => Stage::Done,
            _ => Stage::Pending,
        }
    }
}

/// A batch's counters as every backend stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub committed: bool,
    /// Member jobs that have not finished (ACK or failure) even once.
    pub pending: i64,
    /// Member jobs whose last run failed and that have not succeeded since.
    pub failed: i64,
    /// Child batches, and how many of them are complete / succeeded.
    pub children: i64,
    pub children_complete: i64,
    pub children_success: i64,
    pub complete: Stage,
    pub success: Stage,
    /// Whether the batch has a `complete` / `success` callback job.
    pub has_complete_job: bool,
    pub has_success_job: bool,
}

/// What a backend must do after [`Progress::advance`], in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Advance {
    /// Enqueue the `complete` callback job.
    pub fire_complete: bool,
    /// Enqueue the `success` callback job.
    pub fire_success: bool,
    /// The batch just became complete for its parent (no callback job to wait for).
    pub parent_complete: bool,
    /// The batch just succeeded for its parent (no callback job to wait for).
    pub parent_success: bool,
}

impl Advance {
    /// Whether anything changed (the batch must be stored).
    pub fn changed(&self) -> bool {
        self.fire_complete || self.fire_success || self.parent_complete || self.parent_success
    }
}

impl Progress {
    /// Fires whatever is now due. Call after every change of the counters.
    pub fn advance(&mut self) -> Advance {
        let mut out = Advance::default();
        if !self.committed {
            return out;
        }
        if self.complete == Stage::Pending
            && self.pending <= 0
            && self.children_complete >= self.children
        {
            if self.has_complete_job {
                self.complete = Stage::Enqueued;
                out.fire_complete = true;
            } else {
                self.complete = Stage::Done;
                out.parent_complete = true;
            }
        }
        if self.complete == Stage::Done
            && self.success == Stage::Pending
            && self.pending <= 0
            && self.failed <= 0
            && self.children_success >= self.children
        {
            if self.has_success_job {
                self.success = Stage::Enqueued;
                out.fire_success = true;
            } else {
                self.success = Stage::Done;
                out.parent_success = true;
            }
        }
        out
    }

    /// A member job's run ended: `first`, its first run; `failed_before`, its previous run
    /// failed; `ok`, this run succeeded (ACK) rather than failed (FAIL, an expired reservation,
    /// expiry before it ran). A member leaves `pending` at its first end; it is in `failed`
    /// while its last run failed. Call [`Progress::advance`] next.
    pub fn member_ran(&mut self, first: bool, failed_before: bool, ok: bool) {
        if first {
            self.pending -= 1;
        }
        match (failed_before, ok) {
            (false, false) => self.failed += 1,
            (true, true) => self.failed -= 1,
            _ => {}
        }
    }

    /// A callback job (`complete` or not: `success`) was ACKed. Returns whether that finished
    /// the callback (it was enqueued): the batch then counts as complete / succeeded for its
    /// parent, and a finished `complete` callback may make `success` due ([`Progress::advance`]).
    pub fn callback_acked(&mut self, complete: bool) -> bool {
        let st = if complete {
            &mut self.complete
        } else {
            &mut self.success
        };
        if *st != Stage::Enqueued {
            return false;
        }
        *st = Stage::Done;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(pending: i64) -> Progress {
        Progress {
            committed: true,
            pending,
            has_complete_job: true,
            has_success_job: true,
            ..Progress::default()
        }
    }

    #[test]
    fn nothing_fires_before_the_commit() {
        let mut p = Progress {
            committed: false,
            ..committed(0)
        };
        assert_eq!(p.advance(), Advance::default());
    }

    #[test]
    fn complete_then_success_each_once() {
        let mut p = committed(1);
        assert!(!p.advance().changed(), "a job is still pending");
        p.pending = 0;
        let a = p.advance();
        assert!(a.fire_complete && !a.fire_success, "{a:?}");
        assert_eq!(p.advance(), Advance::default(), "fires once");
        assert!(p.callback_acked(true));
        assert!(!p.callback_acked(true), "a second ACK changes nothing");
        let a = p.advance();
        assert!(a.fire_success && !a.fire_complete, "{a:?}");
        assert!(p.callback_acked(false));
        assert_eq!((p.complete, p.success), (Stage::Done, Stage::Done));
        assert_eq!(p.advance(), Advance::default());
    }

    #[test]
    fn a_failed_job_holds_success_not_completion() {
        let mut p = committed(0);
        p.failed = 1;
        assert!(p.advance().fire_complete);
        p.callback_acked(true);
        assert!(!p.advance().fire_success, "a job failed");
        p.failed = 0; // it succeeded on a retry
        assert!(p.advance().fire_success);
    }

    #[test]
    fn without_callback_jobs_the_parent_is_told_at_once() {
        let mut p = Progress {
            has_complete_job: false,
            has_success_job: false,
            ..committed(0)
        };
        let a = p.advance();
        assert!(a.parent_complete && a.parent_success, "{a:?}");
        assert!(!a.fire_complete && !a.fire_success);
        assert_eq!((p.complete, p.success), (Stage::Done, Stage::Done));
    }

    #[test]
    fn children_hold_their_parent() {
        let mut p = committed(0);
        p.children = 2;
        p.children_complete = 1;
        assert!(!p.advance().changed());
        p.children_complete = 2;
        assert!(p.advance().fire_complete);
        p.callback_acked(true);
        p.children_success = 1;
        assert!(!p.advance().changed());
        p.children_success = 2;
        assert!(p.advance().fire_success);
    }

    #[test]
    fn members_leave_pending_once_and_failed_when_they_succeed() {
        let mut p = committed(2);
        p.member_ran(true, false, false); // first run failed
        assert_eq!((p.pending, p.failed), (1, 1));
        p.member_ran(false, true, false); // failed again
        assert_eq!((p.pending, p.failed), (1, 1));
        p.member_ran(false, true, true); // then succeeded
        assert_eq!((p.pending, p.failed), (1, 0));
        p.member_ran(true, false, true); // the other succeeded at once
        assert_eq!((p.pending, p.failed), (0, 0));
    }

    #[test]
    fn stage_codes_round_trip() {
        for s in [Stage::Pending, Stage::Enqueued, Stage::Done] {
            assert_eq!(Stage::from_code(s.code()), s);
        }
        assert_eq!(Stage::from_code(7), Stage::Pending);
    }
}
