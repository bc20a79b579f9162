//! The lifecycle of a worker process as the server tracks it: running → quiet → terminate.
//! Transitions never go backwards; asking for the current or an earlier state changes nothing.

/// A worker process's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkerState {
    Running,
    Quiet,
    Terminate,
}

impl WorkerState {
    /// Parses BEAT's `current_state`; unknown or empty strings mean running (no change).
    pub fn parse(s: &str) -> WorkerState {
        match s {
            "quiet" => WorkerState::Quiet,
            "terminate" => WorkerState::Terminate,
            _ => WorkerState::Running,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Quiet => "quiet",
            WorkerState::Terminate => "terminate",
        }
    }

    /// The state after a request to move to `to`: only forward moves take effect.
    pub fn advance(self, to: WorkerState) -> WorkerState {
        self.max(to)
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerState::*;
    use super::*;

    #[test]
    fn only_forward() {
        assert_eq!(Running.advance(Quiet), Quiet);
        assert_eq!(Quiet.advance(Running), Quiet);
        assert_eq!(Running.advance(Terminate), Terminate);
        assert_eq!(Terminate.advance(Quiet), Terminate);
        assert_eq!(WorkerState::parse("bogus"), Running);
    }
}
