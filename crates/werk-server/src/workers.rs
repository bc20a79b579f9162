//! The registry of worker processes (connections whose HELLO carried a `wid`), their
//! heartbeats and their quiet/terminate state. In memory only, as in Faktory: a restart forgets
//! workers, and they re-register on reconnect. Heartbeat loss closes a worker's connections but
//! never moves a job: only reservation expiry does.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use werk_core::worker::WorkerState;
use werk_core::Millis;

/// One worker process as the Busy page shows it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub wid: String,
    pub hostname: String,
    pub pid: i64,
    pub labels: Vec<String>,
    pub started_at: Millis,
    pub last_beat: Millis,
    pub state: WorkerState,
    pub rss_kb: i64,
    pub connections: usize,
}

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

    /// The state of a wid (resolved on every FETCH, so quieting affects every connection).
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
