//! The states a stored job can be in (see `shared/job-state-machine.md`).

use std::fmt;

/// Where a job is. A job is in exactly one state, or it is gone (not stored at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Waits for its `at` time; ordered by `at`.
    Scheduled,
    /// Waits in its queue; FIFO by arrival into the queue.
    Enqueued,
    /// Reserved by a worker until `reserved_until`.
    Working,
    /// Failed, waits for `failure.next_at`.
    Retry,
    /// Out of retries or killed; kept until `dead_until`.
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Scheduled,
        JobState::Enqueued,
        JobState::Working,
        JobState::Retry,
        JobState::Dead,
    ];

    /// A small stable integer, for storage backends.
    pub fn code(self) -> i64 {
        match self {
            JobState::Scheduled => 0,
            JobState::Enqueued => 1,
            JobState::Working => 2,
            JobState::Retry => 3,
            JobState::Dead => 4,
        }
    }

    pub fn from_code(code: i64) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The name Faktory uses for the sorted set of this state (`INFO` `sets`, MUTATE targets).
    pub fn set_name(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Enqueued => "enqueued",
            JobState::Working => "working",
            JobState::Retry => "retries",
            JobState::Dead => "dead",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.set_name())
    }
}
