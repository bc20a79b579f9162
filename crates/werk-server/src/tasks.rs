//! Background tasks. Each one is a store operation (so each move is one atomic, durable step)
//! run on an interval; an error is logged and the task tries again next time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;
use werk_core::time::now_millis;
use werk_store::Store;

use crate::Shared;

/// Most jobs moved per store request by a task (it repeats while it keeps finding that many).
const TASK_BATCH: usize = 1000;

/// Per-task counters for INFO's `tasks`.
#[derive(Default)]
pub struct TaskStat {
    pub cycles: AtomicU64,
    pub moved: AtomicU64,
    pub wall_micros: AtomicU64,
}

#[derive(Default)]
pub struct TaskStats {
    pub scheduled: TaskStat,
    pub expired: TaskStat,
    pub reaper: TaskStat,
    pub dead: TaskStat,
    pub workers: TaskStat,
}

impl TaskStat {
    fn record(&self, moved: usize, started: Instant) {
        self.cycles.fetch_add(1, Ordering::Relaxed);
        self.moved.fetch_add(moved as u64, Ordering::Relaxed);
        self.wall_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

pub fn spawn_all<S: Store>(shared: &Arc<Shared<S>>, tracker: &TaskTracker) {
    let c = &shared.config;
    every(shared, tracker, c.scan_interval, |s| async move {
        let t = Instant::now();
        let n = drain(|| s.store.promote_due(now_millis(), TASK_BATCH), "promote").await;
        s.counters.tasks.scheduled.record(n, t);
    });
    every(shared, tracker, c.scan_interval, |s| async move {
        let t = Instant::now();
        let n = drain(|| s.store.sweep_expired(now_millis(), TASK_BATCH), "expire").await;
        if n > 0 {
            tracing::info!(jobs = n, "expired jobs removed from their queues");
        }
        s.counters.tasks.expired.record(n, t);
    });
    every(shared, tracker, c.reap_interval, |s| async move {
        let t = Instant::now();
        let n = drain(|| s.store.reap_expired(now_millis(), TASK_BATCH), "reap").await;
        if n > 0 {
            tracing::info!(jobs = n, "reservations expired; failed them");
        }
        s.counters.tasks.reaper.record(n, t);
    });
    every(shared, tracker, c.purge_interval, |s| async move {
        let t = Instant::now();
        let n = drain(|| s.store.purge_dead(now_millis(), TASK_BATCH), "purge").await;
        s.counters.tasks.dead.record(n, t);
    });
    every(
        shared,
        tracker,
        crate::workers::sync_period(shared),
        |s| async move {
            let t = Instant::now();
            let n = crate::workers::sync(&s).await;
            s.signals.prune();
            s.counters.tasks.workers.record(n, t);
        },
    );
}

/// Runs a batched store operation until it moves fewer than a full batch (bounded).
async fn drain<F, Fut>(mut op: F, what: &str) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = werk_store::Result<usize>>,
{
    let mut total = 0;
    for _ in 0..100 {
        match op().await {
            Ok(n) => {
                total += n;
                if n < TASK_BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(task = what, error = %e, "background task failed; will retry");
                break;
            }
        }
    }
    total
}

fn every<S, F, Fut>(shared: &Arc<Shared<S>>, tracker: &TaskTracker, period: Duration, f: F)
where
    S: Store,
    F: Fn(Arc<Shared<S>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let shared = shared.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                _ = tick.tick() => f(shared.clone()).await,
            }
        }
    });
}
