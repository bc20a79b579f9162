//! The registry of worker processes (connections whose HELLO carried a `wid`), their
//! heartbeats and their quiet/terminate state. Heartbeat loss closes a worker's connections but
//! never moves a job: only reservation expiry does.
//!
//! Two modes, chosen by the store ([`Store::shared_workers`]):
//!
//! * **In memory** (the embedded stores: one node is the whole cluster). As in Faktory: a
//!   restart forgets workers, and they re-register on reconnect.
//! * **Shared** (PostgreSQL: several nodes). The store keeps one registry for the cluster, so a
//!   worker process whose connections land on different nodes is one worker: HELLO, BEAT, the
//!   web UI's signals, heartbeat expiry (by the last BEAT on *any* node) and the Busy page go
//!   through it. The local map then holds only this node's connections (their cancellation
//!   tokens) and a cache of each local wid's state for FETCH's "not running → no job" check, so
//!   a FETCH costs no extra round trip. The cache is refreshed by HELLO, by a BEAT through this
//!   node, by a signal from this node's web UI, and by the periodic [`sync`] (at least every
//!   [`SHARED_SYNC`]): a quiet or terminate signalled through another node stops this node's
//!   FETCHes within that period (the worker itself learns it from its next BEAT, on any node,
//!   at once). The same sync closes this node's connections of a worker the cluster no longer
//!   has (heartbeat expiry, or a registration dropped while this node was cut off from the
//!   database for longer than the heartbeat timeout).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use werk_core::time::now_millis;
use werk_core::worker::WorkerState;
use werk_core::Millis;
use werk_store::{Store, StoreError, WorkerHello};

use crate::Shared;

/// One worker process as the Busy page shows it.
pub use werk_store::WorkerInfo;

/// The longest time between two [`sync`]s of a node in shared mode (more often when the
/// heartbeat timeout is short: a quarter of it, at least 100 ms).
pub const SHARED_SYNC: Duration = Duration::from_secs(1);

struct Record {
    info: WorkerInfo,
    conns: HashMap<u64, CancellationToken>,
}

#[derive(Default)]
pub struct Workers {
    map: Mutex<HashMap<String, Record>>,
}

/// What a HELLO said about the process.
pub struct Hello<'a> {
    pub wid: &'a str,
    pub hostname: &'a str,
    pub pid: i64,
    pub labels: &'a [String],
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection of a worker process. The first connection of a wid creates the
    /// record; later ones join it.
    pub fn register(&self, hello: Hello<'_>, conn: u64, token: CancellationToken, now: Millis) {
        let mut map = self.lock();
        let rec = map.entry(hello.wid.to_string()).or_insert_with(|| Record {
            info: WorkerInfo {
                wid: hello.wid.to_string(),
                hostname: hello.hostname.to_string(),
                pid: hello.pid,
                labels: hello.labels.to_vec(),
                started_at: now,
                last_beat: now,
                state: WorkerState::Running,
                rss_kb: 0,
                connections: 0,
            },
            conns: HashMap::new(),
        });
        rec.conns.insert(conn, token);
        rec.info.connections = rec.conns.len();
    }

    /// A connection closed; the record goes with its last connection.
    pub fn unregister(&self, wid: &str, conn: u64) {
        let mut map = self.lock();
        if let Some(rec) = map.get_mut(wid) {
            rec.conns.remove(&conn);
            rec.info.connections = rec.conns.len();
            if rec.conns.is_empty() {
                map.remove(wid);
            }
        }
    }

    /// A BEAT: records the heartbeat and advances the state. `None` if the wid is unknown.
    pub fn beat(
        &self,
        wid: &str,
        requested: WorkerState,
        rss_kb: i64,
        now: Millis,
    ) -> Option<WorkerState> {
        let mut map = self.lock();
        let rec = map.get_mut(wid)?;
        rec.info.last_beat = now;
        rec.info.rss_kb = rss_kb;
        rec.info.state = rec.info.state.advance(requested);
        Some(rec.info.state)
    }

    /// The state of a wid (resolved on every FETCH, so quieting affects every connection; in
    /// shared mode the cached state, see the module documentation).
    pub fn state(&self, wid: &str) -> WorkerState {
        self.lock()
            .get(wid)
            .map_or(WorkerState::Running, |r| r.info.state)
    }

    /// Moves one worker (or all, with `None`) to `to` (operator action).
    pub fn signal(&self, wid: Option<&str>, to: WorkerState) -> usize {
        let mut map = self.lock();
        let mut n = 0;
        for rec in map.values_mut() {
            if wid.is_none_or(|w| w == rec.info.wid) {
                rec.info.state = rec.info.state.advance(to);
                n += 1;
            }
        }
        n
    }

    /// Drops workers silent since before `cutoff` and closes their connections.
    pub fn reap(&self, cutoff: Millis) -> usize {
        let mut map = self.lock();
        let dead: Vec<String> = map
            .values()
            .filter(|r| r.info.last_beat < cutoff)
            .map(|r| r.info.wid.clone())
            .collect();
        for wid in &dead {
            if let Some(rec) = map.remove(wid) {
                tracing::info!(wid, "worker missed its heartbeats; closing its connections");
                for token in rec.conns.values() {
                    token.cancel();
                }
            }
        }
        dead.len()
    }

    /// Sets the cached state of a local wid (shared mode: the registry's answer).
    fn cache_state(&self, wid: &str, state: WorkerState) {
        if let Some(rec) = self.lock().get_mut(wid) {
            rec.info.state = state;
        }
    }

    /// This node's wids and their connections, for [`sync`].
    fn local_conns(&self) -> Vec<(String, Vec<u64>)> {
        self.lock()
            .iter()
            .map(|(wid, rec)| (wid.clone(), rec.conns.keys().copied().collect()))
            .collect()
    }

    /// Closes the given connections of a wid the cluster no longer has (shared mode). A
    /// connection registered since the snapshot is left alone.
    fn close(&self, wid: &str, conns: &[u64]) -> usize {
        let mut map = self.lock();
        let Some(rec) = map.get_mut(wid) else {
            return 0;
        };
        let mut n = 0;
        for conn in conns {
            if let Some(token) = rec.conns.remove(conn) {
                token.cancel();
                n += 1;
            }
        }
        rec.info.connections = rec.conns.len();
        if rec.conns.is_empty() {
            map.remove(wid);
        }
        n
    }

    pub fn list(&self) -> Vec<WorkerInfo> {
        let mut v: Vec<WorkerInfo> = self.lock().values().map(|r| r.info.clone()).collect();
        v.sort_by(|a, b| a.wid.cmp(&b.wid));
        v
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---- the registry, in either mode ----------------------------------------------------------

/// The oldest last-seen time of a node whose connections still count (shared mode).
fn alive_since<S: Store>(shared: &Shared<S>, now: Millis) -> Millis {
    now - shared.config.heartbeat_timeout.as_millis() as i64
}

/// HELLO with a wid: registers connection `conn` (closed through `token` on heartbeat loss).
/// An error (shared mode: the store) refuses the HELLO; nothing is registered.
pub async fn hello<S: Store>(
    shared: &Shared<S>,
    hello: Hello<'_>,
    conn: u64,
    token: CancellationToken,
) -> Result<(), StoreError> {
    let now = now_millis();
    if !shared.store.shared_workers() {
        shared.workers.register(hello, conn, token, now);
        return Ok(());
    }
    // Registered in the store first: a sync that sees the local connection finds the worker.
    let state = shared
        .store
        .worker_hello(
            WorkerHello {
                wid: hello.wid.to_string(),
                hostname: hello.hostname.to_string(),
                pid: hello.pid,
                labels: hello.labels.to_vec(),
            },
            conn,
            now,
        )
        .await?;
    let wid = hello.wid;
    shared.workers.register(hello, conn, token, now);
    shared.workers.cache_state(wid, state);
    Ok(())
}

/// A registered connection closed.
pub async fn bye<S: Store>(shared: &Shared<S>, wid: &str, conn: u64) {
    shared.workers.unregister(wid, conn);
    if shared.store.shared_workers() {
        let now = now_millis();
        if let Err(e) = shared
            .store
            .worker_bye(wid.to_string(), conn, alive_since(shared, now))
            .await
        {
            // The connection stays counted until the worker expires or this node is silent
            // for the heartbeat timeout.
            tracing::warn!(wid, error = %e, "cannot unregister a worker connection");
        }
    }
}

/// BEAT: the worker's new state, or `None` for an unknown wid.
pub async fn beat<S: Store>(
    shared: &Shared<S>,
    wid: &str,
    requested: WorkerState,
    rss_kb: i64,
) -> Result<Option<WorkerState>, StoreError> {
    let now = now_millis();
    if !shared.store.shared_workers() {
        return Ok(shared.workers.beat(wid, requested, rss_kb, now));
    }
    let state = shared
        .store
        .worker_beat(wid.to_string(), requested, rss_kb, now)
        .await?;
    if let Some(state) = state {
        shared.workers.cache_state(wid, state);
    }
    Ok(state)
}

/// Moves one worker (or all, with `None`) to `to` (the web UI). Returns how many it matched.
pub async fn signal<S: Store>(
    shared: &Shared<S>,
    wid: Option<&str>,
    to: WorkerState,
) -> Result<usize, StoreError> {
    if !shared.store.shared_workers() {
        return Ok(shared.workers.signal(wid, to));
    }
    let n = shared
        .store
        .worker_signal(wid.map(str::to_string), to)
        .await?;
    // This node's FETCHes stop at once; the others' at their next sync.
    shared.workers.signal(wid, to);
    Ok(n)
}

/// The workers of the whole cluster, sorted by wid.
pub async fn list<S: Store>(shared: &Shared<S>) -> Result<Vec<WorkerInfo>, StoreError> {
    if !shared.store.shared_workers() {
        return Ok(shared.workers.list());
    }
    shared
        .store
        .worker_list(alive_since(shared, now_millis()))
        .await
}

/// How many workers the cluster has.
pub async fn count<S: Store>(shared: &Shared<S>) -> Result<usize, StoreError> {
    if !shared.store.shared_workers() {
        return Ok(shared.workers.len());
    }
    Ok(list(shared).await?.len())
}

/// How often the background task runs [`sync`].
pub fn sync_period<S: Store>(shared: &Shared<S>) -> Duration {
    let beat_check = (shared.config.heartbeat_timeout / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(15));
    if shared.store.shared_workers() {
        beat_check.min(SHARED_SYNC)
    } else {
        beat_check
    }
}

/// The background task's step: heartbeat expiry. In memory: drops workers silent for the
/// heartbeat timeout and closes their connections. Shared: [`Store::worker_sync`] (this node is
/// alive; workers whose last BEAT on any node is too old are removed), then this node closes
/// its connections of every wid the cluster no longer has and refreshes the cached states.
/// Returns how many workers expired (shared: removed by this node's call).
pub async fn sync<S: Store>(shared: &Shared<S>) -> usize {
    let now = now_millis();
    let cutoff = alive_since(shared, now);
    if !shared.store.shared_workers() {
        return shared.workers.reap(cutoff);
    }
    let local = shared.workers.local_conns();
    let wids = local.iter().map(|(wid, _)| wid.clone()).collect();
    let synced = match shared.store.worker_sync(wids, cutoff, now).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot sync the worker registry; will retry");
            return 0;
        }
    };
    for ((wid, conns), state) in local.iter().zip(synced.states) {
        match state {
            Some(state) => shared.workers.cache_state(wid, state),
            None => {
                let closed = shared.workers.close(wid, conns);
                if closed > 0 {
                    tracing::info!(
                        wid,
                        connections = closed,
                        "worker no longer registered in the cluster (missed its heartbeats); \
                         closing its connections on this node"
                    );
                }
            }
        }
    }
    synced.expired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(wid: &str) -> Hello<'_> {
        Hello {
            wid,
            hostname: "h",
            pid: 1,
            labels: &[],
        }
    }

    #[test]
    fn lifecycle() {
        let w = Workers::default();
        let t1 = CancellationToken::new();
        w.register(hello("w1"), 1, t1.clone(), 0);
        w.register(hello("w1"), 2, CancellationToken::new(), 0);
        assert_eq!(w.list()[0].connections, 2);
        assert_eq!(
            w.beat("w1", WorkerState::Quiet, 10, 5),
            Some(WorkerState::Quiet)
        );
        assert_eq!(
            w.beat("w1", WorkerState::Running, 10, 6),
            Some(WorkerState::Quiet)
        );
        assert_eq!(w.beat("nope", WorkerState::Running, 0, 0), None);
        w.unregister("w1", 2);
        assert_eq!(w.len(), 1);
        assert_eq!(w.reap(7), 1);
        assert!(t1.is_cancelled());
        assert!(w.is_empty());
    }
}
