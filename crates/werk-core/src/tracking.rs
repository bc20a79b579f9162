//! Job tracking (`TRACK GET`): a tracked job's state is derived from where the job is, so it is
//! never stale; once the job is gone, from how it ended, for [`TRACK_RETENTION`].

use crate::{JobState, Millis};

/// How long tracking data outlives its job (Faktory keeps it ~30 minutes after the last update,
/// even for a job still waiting in its queue; Werk keeps it while the job exists and then this
/// long after the last update).
pub const TRACK_RETENTION: Millis = 30 * 60 * 1000;

/// A tracked job's state (`TRACK GET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackState {
    /// Scheduled or enqueued.
    Enqueued,
    Working,
    /// ACKed.
    Success,
    /// Its last run failed (in the retry set, or discarded after a failure).
    Failed,
    Dead,
}

impl TrackState {
    pub fn wire(self) -> &'static str {
        match self {
            TrackState::Enqueued => "enqueued",
            TrackState::Working => "working",
            TrackState::Success => "success",
            TrackState::Failed => "failed",
            TrackState::Dead => "dead",
        }
    }
}

/// How a tracked job that is gone ended (stored with its tracking data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Success,
    Failed,
}

/// The state `TRACK GET` reports: from the job's state while it exists (`job`); once it is gone,
/// from how it ended, until [`TRACK_RETENTION`] after the last update (`None`: unknown — never
/// tracked, removed by an operator or by expiry, or past retention).
pub fn state(
    job: Option<JobState>,
    ended: Option<Ending>,
    updated_at: Millis,
    now: Millis,
) -> Option<TrackState> {
    match job {
        Some(JobState::Scheduled | JobState::Enqueued) => Some(TrackState::Enqueued),
        Some(JobState::Working) => Some(TrackState::Working),
        Some(JobState::Retry) => Some(TrackState::Failed),
        Some(JobState::Dead) => Some(TrackState::Dead),
        None if updated_at.saturating_add(TRACK_RETENTION) <= now => None,
        None => match ended? {
            Ending::Success => Some(TrackState::Success),
            Ending::Failed => Some(TrackState::Failed),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_where_the_job_is_then_from_how_it_ended() {
        let t = 1_000_000;
        assert_eq!(
            state(Some(JobState::Scheduled), None, t, t),
            Some(TrackState::Enqueued)
        );
        assert_eq!(
            state(Some(JobState::Working), None, t, t),
            Some(TrackState::Working)
        );
        assert_eq!(
            state(Some(JobState::Retry), None, t, t),
            Some(TrackState::Failed)
        );
        assert_eq!(
            state(Some(JobState::Dead), None, t, t),
            Some(TrackState::Dead)
        );
        // A job that exists is reported whatever its age.
        assert_eq!(
            state(Some(JobState::Enqueued), None, t, t + 10 * TRACK_RETENTION),
            Some(TrackState::Enqueued)
        );
        assert_eq!(
            state(None, Some(Ending::Success), t, t + 1),
            Some(TrackState::Success)
        );
        assert_eq!(
            state(None, Some(Ending::Failed), t, t + 1),
            Some(TrackState::Failed)
        );
        assert_eq!(state(None, None, t, t + 1), None, "removed: unknown");
        assert_eq!(
            state(None, Some(Ending::Success), t, t + TRACK_RETENTION),
            None,
            "past retention"
        );
    }
}
