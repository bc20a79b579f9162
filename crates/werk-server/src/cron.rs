//! The cron ticker: pushes each entry's job once per tick.
//!
//! Every tick goes through [`Store::fire_cron`], which enqueues the job and records the tick in
//! one commit and refuses a tick already recorded — so a tick is enqueued exactly once, whether
//! the ticker is retried after an error, restarted after a crash, or (with a shared store) runs
//! on several nodes.
//!
//! Which tick to fire: each entry remembers its last handled tick (loaded from the store; for a
//! brand-new entry, the moment it was first loaded, so a new entry never fires for the past).
//! When woken, the ticker takes the latest tick in (last, now]: on time (at most
//! [`CronOptions::late`] old) it fires; older, it was missed (the server was down or stalled)
//! and the entry's `missed` policy decides — `once` fires it (one job, however many ticks were
//! missed), `skip` drops it. The configuration can be swapped at any time (SIGHUP); entries keep
//! their state across reloads as long as their definition (and so their id) is unchanged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use werk_core::cron::{CronConfig, CronEntry, Missed};
use werk_core::time::{format_millis, now_millis};
use werk_core::Millis;
use werk_store::{CronFire, NewJob, Store};

use crate::Shared;

/// Settings of the ticker.
#[derive(Debug, Clone, Copy)]
pub struct CronOptions {
    /// A tick found later than this is "missed" and handled by its entry's `missed` policy.
    pub late: Duration,
}

impl Default for CronOptions {
    fn default() -> Self {
        CronOptions {
            late: Duration::from_secs(10),
        }
    }
}

/// A random jid like the ones Faktory clients make (24 hex digits).
fn new_jid() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs until the server shuts down.
pub async fn run<S: Store>(
    shared: Arc<Shared<S>>,
    mut config: watch::Receiver<Arc<CronConfig>>,
    options: CronOptions,
) {
    let late = options.late.as_millis() as Millis;
    // Entry id → last handled tick.
    let mut last: HashMap<String, Millis> = HashMap::new();
    let mut reload = true;
    loop {
        let cfg = config.borrow_and_update().clone();
        let now = now_millis();
        if reload {
            let new: Vec<String> = cfg
                .entries
                .iter()
                .map(|e| e.id.clone())
                .filter(|id| !last.contains_key(id))
                .collect();
            match shared.store.cron_last_fired(new.clone()).await {
                Ok(ticks) => {
                    for (id, tick) in new.into_iter().zip(ticks) {
                        last.insert(id, tick.unwrap_or(now));
                    }
                    last.retain(|id, _| cfg.entries.iter().any(|e| &e.id == id));
                    reload = false;
                    tracing::info!(entries = cfg.entries.len(), "cron schedule loaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read cron state; will retry");
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
        }
        let mut wake = now + 1000;
        for entry in &cfg.entries {
            let Some(&done) = last.get(&entry.id) else {
                continue;
            };
            if let Some(tick) = entry.latest_in(done, now) {
                let missed = now - tick > late;
                if missed && entry.missed == Missed::Skip {
                    tracing::info!(
                        entry = %entry.id, file = %entry.file, index = entry.index,
                        tick = %format_millis(tick),
                        "cron tick missed (server down or stalled); skipped as configured"
                    );
                    last.insert(entry.id.clone(), tick);
                } else if fire(&*shared.store, &shared.metrics, entry, tick, now, missed).await {
                    last.insert(entry.id.clone(), tick);
                }
            }
            let from = last.get(&entry.id).copied().unwrap_or(now).max(now);
            if let Some(next) = entry.next_after(from) {
                wake = wake.min(next);
            }
        }
        let sleep = Duration::from_millis((wake - now_millis()).clamp(0, 1000) as u64);
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            changed = config.changed() => {
                if changed.is_err() {
                    // The configuration's owner is gone: keep the current schedule.
                    tokio::time::sleep(sleep).await;
                } else {
                    reload = true;
                }
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Fires one tick; false if it must be tried again (the store failed).
async fn fire<S: Store>(
    store: &S,
    metrics: &crate::metrics::Metrics,
    entry: &CronEntry,
    tick: Millis,
    now: Millis,
    late: bool,
) -> bool {
    let job = entry.make_job(new_jid(), tick);
    let jid = job.jid.clone();
    let counters = metrics.job(&job.queue, &job.jobtype);
    match store
        .fire_cron(entry.id.clone(), tick, NewJob { job, at: None }, now)
        .await
    {
        Ok(CronFire::Fired) => {
            counters.pushed();
            tracing::info!(
                entry = %entry.id, file = %entry.file, index = entry.index,
                jobtype = %entry.job.jobtype, queue = %entry.job.queue, %jid,
                tick = %format_millis(tick), late,
                "cron job enqueued"
            );
            true
        }
        Ok(CronFire::AlreadyFired) => {
            tracing::debug!(entry = %entry.id, tick = %format_millis(tick), "cron tick already fired");
            true
        }
        Ok(CronFire::Refused(e)) => {
            tracing::warn!(
                entry = %entry.id, file = %entry.file, index = entry.index,
                tick = %format_millis(tick), error = %e,
                "cron job refused; this tick is skipped"
            );
            true
        }
        Err(e) => {
            tracing::error!(entry = %entry.id, tick = %format_millis(tick), error = %e, "cron job not enqueued; will retry");
            false
        }
    }
}
