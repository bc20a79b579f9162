//! INFO: the JSON shape strict clients (Rust's typed `FaktoryState`, Go's) deserialise.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};
use werk_protocol::Reply;
use werk_store::Store;

use crate::tasks::TaskStat;
use crate::Shared;

/// The Faktory protocol version Werk is compatible with (reported as `faktory_version`, which
/// clients parse as semver).
pub const FAKTORY_COMPAT_VERSION: &str = "1.10.0";

fn task(stat: &TaskStat, size: u64, moved_key: &str) -> Value {
    let mut m = Map::new();
    m.insert("cycles".into(), json!(stat.cycles.load(Ordering::Relaxed)));
    m.insert(moved_key.into(), json!(stat.moved.load(Ordering::Relaxed)));
    m.insert("size".into(), json!(size));
    m.insert(
        "wall_time_sec".into(),
        json!(stat.wall_micros.load(Ordering::Relaxed) as f64 / 1e6),
    );
    Value::Object(m)
}

/// Resident memory of this process in MiB (0 where /proc is unavailable).
pub fn rss_mb() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096 / (1024 * 1024)
}

pub async fn info<S: Store>(shared: &Shared<S>) -> Reply {
    match info_json(shared).await {
        Ok(body) => Reply::bulk(body.to_string()),
        Err(e) => Reply::error(e.to_string()),
    }
}

/// INFO's JSON (also the web UI's `/stats`).
pub async fn info_json<S: Store>(shared: &Shared<S>) -> Result<Value, werk_store::StoreError> {
    let stats = shared.store.stats().await?;
    let workers = crate::workers::count(shared).await?;
    let now = chrono::Utc::now();
    let queues: Map<String, Value> = stats
        .queues
        .iter()
        .map(|q| (q.name.clone(), json!(q.size)))
        .collect();
    let t = &shared.counters.tasks;
    let body = json!({
        "now": werk_core::time::format_nanos(now),
        "server_utc_time": now.format("%H:%M:%S UTC").to_string(),
        "faktory": {
            "queues": queues,
            "sets": {
                "dead": stats.dead,
                "retries": stats.retries,
                "scheduled": stats.scheduled,
                "working": stats.working,
            },
            "tasks": {
                "Busy": task(&t.reaper, stats.working, "reaped"),
                "Dead": task(&t.dead, stats.dead, "purged"),
                "Expired": task(&t.expired, stats.expired, "expired"),
                "Retries": task(&t.scheduled, stats.retries, "enqueued"),
                "Scheduled": task(&t.scheduled, stats.scheduled, "enqueued"),
                "Workers": task(&t.workers, workers as u64, "reaped"),
            },
            "total_expired": stats.expired,
            "total_failures": stats.failures,
            "total_processed": stats.processed,
            "total_enqueued": stats.enqueued(),
            "total_queues": stats.queues.len(),
        },
        "server": {
            "description": "Werk",
            "faktory_version": FAKTORY_COMPAT_VERSION,
            "werk_version": env!("CARGO_PKG_VERSION"),
            "uptime": shared.started.elapsed().as_secs(),
            "connections": shared.counters.connections.load(Ordering::Relaxed),
            "command_count": shared.counters.commands.load(Ordering::Relaxed),
            "fetches_waiting": shared.counters.fetches_waiting.load(Ordering::Relaxed),
            "used_memory_mb": rss_mb(),
        },
    });
    Ok(body)
}
