//! Throttles (`conf.d` `[throttles]`): a slot *is* a working job of the queue fetched less than
//! the throttle's `timeout` ago, so a throttle has no state of its own and is exact after a
//! crash. A FETCH treats a queue whose slots are all held as empty.

use crate::Millis;

/// A throttle's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleLimit {
    /// At most this many jobs of the queue working at once, across all workers.
    Concurrency(u32),
    /// At most this many jobs of the queue working at once per worker process (wid).
    PerWorker(u32),
}

/// A throttled queue (`conf.d/throttles.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    pub queue: String,
    pub limit: ThrottleLimit,
    /// A working job counts against the limit for at most this long after its FETCH (ms); then
    /// its slot is reclaimed although the job keeps its reservation. `None`: while it works.
    pub timeout: Option<Millis>,
}

impl Throttle {
    /// Working jobs of the queue fetched after this instant hold a slot at `now`.
    pub fn slots_since(&self, now: Millis) -> Millis {
        self.timeout
            .map_or(Millis::MIN, |to| now.saturating_sub(to))
    }

    /// Whether slots are counted per worker process (the FETCH's wid) or across all workers.
    pub fn per_worker(&self) -> bool {
        matches!(self.limit, ThrottleLimit::PerWorker(_))
    }

    /// Whether `held` slots (counted as [`Throttle::slots_since`] and
    /// [`Throttle::per_worker`] say) leave none for another FETCH.
    pub fn is_full(&self, held: u64) -> bool {
        let (ThrottleLimit::Concurrency(n) | ThrottleLimit::PerWorker(n)) = self.limit;
        held >= u64::from(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_limits() {
        let t = Throttle {
            queue: "q".into(),
            limit: ThrottleLimit::Concurrency(2),
            timeout: Some(1_000),
        };
        assert_eq!(t.slots_since(5_000), 4_000);
        assert!(!t.per_worker());
        assert!(!t.is_full(1));
        assert!(t.is_full(2));
        let w = Throttle {
            limit: ThrottleLimit::PerWorker(1),
            timeout: None,
            ..t
        };
        assert_eq!(
            w.slots_since(5_000),
            Millis::MIN,
            "no timeout: while it works"
        );
        assert!(w.per_worker());
        assert!(!w.is_full(0) && w.is_full(1));
    }
}
