//! The cluster-wide registry of worker processes ([`werk_store::Store::shared_workers`]): a
//! worker process whose connections land on different nodes is one worker. BEAT, the web UI's
//! quiet / terminate, heartbeat expiry and the Busy page read and write these tables, whichever
//! node serves them.
//!
//! # Tables (schema version 2)
//!
//! * `workers (wid PK, hostname, pid, labels, started_at, last_beat, state, rss_kb)`: one row
//!   per worker process, created by the HELLO of its first connection on any node. `last_beat`
//!   is the cluster-wide last heartbeat (`GREATEST` of what the nodes report, so a node whose
//!   clock lags cannot move it back). No index but the key: BEATs are HOT updates, and the
//!   expiry sweep reads a table of one row per worker process.
//! * `worker_conns (wid, node, conn)`: one row per open connection, keyed by the node's id
//!   ([`PgStore::node_id`], random per store instance) and the connection's id on that node.
//!   Deleted by the connection's close (its own node) or with its worker (`ON DELETE CASCADE`).
//! * `nodes (node PK, last_seen)`: each node's heartbeat, written by its
//!   [`PgStore::worker_sync`] (the server runs it at least once a second). Connections of a node
//!   not seen since the cutoff (the heartbeat timeout) are not counted: a node that died does
//!   not keep its connections on the Busy page, nor its workers registered when their last
//!   connection elsewhere closes. Its rows are not deleted (a node that was only cut off for a
//!   while counts again when it comes back); they go with their worker, and a silent node's row
//!   goes once it holds no connection.
//!
//! # Rules
//!
//! * The state only moves forward, by [`WorkerState::advance`]: BEAT and signal lock the row
//!   (`UPDATE … RETURNING` / `SELECT … FOR UPDATE`), compute the new state in Rust, and write it
//!   in the same transaction.
//! * A worker is removed when its last counted connection closes (the close locks the worker
//!   row first, so a HELLO racing on another node either joins before the count or re-creates
//!   the row after the delete), or when its `last_beat` is older than the cutoff (every node's
//!   sync, `FOR UPDATE SKIP LOCKED` so nodes never wait for one another). A node closes its own
//!   connections of a wid that is no longer registered at its next sync.
//! * The registry is soft state (Faktory keeps it in memory): HELLO, BEAT, close and sync
//!   commit with `synchronous_commit = off` (no flush wait; a crash of the database forgets at
//!   most the last fraction of a second of heartbeats, which the next BEATs rewrite). The web
//!   UI's signal commits durably.
//!
//! Every node's clock is used for `last_beat` and `last_seen`: nodes must keep their clocks in
//! sync (NTP) to well within the heartbeat timeout.

use werk_core::worker::WorkerState;
use werk_core::Millis;
use werk_store::{WorkerHello, WorkerInfo, WorkerSync};

use crate::{commit, pg, PgStore, Result, Transaction};

/// The `state` column.
fn state_code(s: WorkerState) -> i16 {
    match s {
        WorkerState::Running => 0,
        WorkerState::Quiet => 1,
        WorkerState::Terminate => 2,
    }
}

fn state_of(code: i16) -> WorkerState {
    match code {
        0 => WorkerState::Running,
        1 => WorkerState::Quiet,
        _ => WorkerState::Terminate,
    }
}

/// A connection id as stored (`bigint`).
fn conn_id(conn: u64) -> i64 {
    conn as i64
}

/// A new node id: random, so every store instance (every node, also several in one process)
/// is told apart.
pub(crate) fn new_node_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl PgStore {
    /// This store's node id in the worker registry.
    pub fn node_id(&self) -> &str {
        &self.worker_node
    }

    /// A transaction whose commit does not wait for the WAL flush (soft state only).
    async fn soft_tx(client: &mut deadpool_postgres::Object) -> Result<Transaction<'_>> {
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(pg)?;
        Ok(tx)
    }

    /// [`werk_store::Store::worker_hello`].
    pub async fn worker_hello(
        &self,
        hello: WorkerHello,
        conn: u64,
        now: Millis,
    ) -> Result<WorkerState> {
        let mut client = self.client().await?;
        let tx = Self::soft_tx(&mut client).await?;
        // Creates the worker, or locks the existing row (so a close racing on another node
        // sees this connection, or deleted the row first and this re-creates it).
        let stmt = tx
            .prepare_cached(
                "INSERT INTO workers AS w
                     (wid, hostname, pid, labels, started_at, last_beat, state, rss_kb)
                 VALUES ($1, $2, $3, $4, $5, $5, 0, 0)
                 ON CONFLICT (wid) DO UPDATE SET wid = w.wid
                 RETURNING w.state",
            )
            .await
            .map_err(pg)?;
        let state: i16 = tx
            .query_one(
                &stmt,
                &[&hello.wid, &hello.hostname, &hello.pid, &hello.labels, &now],
            )
            .await
            .map_err(pg)?
            .get(0);
        let stmt = tx
            .prepare_cached(
                "INSERT INTO worker_conns (wid, node, conn) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&hello.wid, &self.worker_node, &conn_id(conn)])
            .await
            .map_err(pg)?;
        commit(tx).await?;
        Ok(state_of(state))
    }

    /// [`werk_store::Store::worker_bye`].
    pub async fn worker_bye(&self, wid: String, conn: u64, alive_since: Millis) -> Result<()> {
        let mut client = self.client().await?;
        let tx = Self::soft_tx(&mut client).await?;
        let stmt = tx
            .prepare_cached("SELECT 1 FROM workers WHERE wid = $1 FOR UPDATE")
            .await
            .map_err(pg)?;
        if tx.query_opt(&stmt, &[&wid]).await.map_err(pg)?.is_none() {
            // Gone already (expired, or with the connection's other half): nothing to do.
            drop(tx);
            return Ok(());
        }
        let stmt = tx
            .prepare_cached("DELETE FROM worker_conns WHERE wid = $1 AND node = $2 AND conn = $3")
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&wid, &self.worker_node, &conn_id(conn)])
            .await
            .map_err(pg)?;
        // A new statement, so a new snapshot taken after the row lock: a HELLO that committed
        // on another node while this waited is counted.
        let stmt = tx
            .prepare_cached(
                "DELETE FROM workers w WHERE w.wid = $1 AND NOT EXISTS (
                     SELECT 1 FROM worker_conns c LEFT JOIN nodes n ON n.node = c.node
                     WHERE c.wid = $1 AND (c.node = $2 OR n.last_seen >= $3))",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&wid, &self.worker_node, &alive_since])
            .await
            .map_err(pg)?;
        commit(tx).await
    }

    /// [`werk_store::Store::worker_beat`].
    pub async fn worker_beat(
        &self,
        wid: String,
        requested: WorkerState,
        rss_kb: i64,
        now: Millis,
    ) -> Result<Option<WorkerState>> {
        let mut client = self.client().await?;
        let tx = Self::soft_tx(&mut client).await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE workers SET last_beat = GREATEST(last_beat, $2), rss_kb = $3
                 WHERE wid = $1 RETURNING state",
            )
            .await
            .map_err(pg)?;
        let Some(row) = tx
            .query_opt(&stmt, &[&wid, &now, &rss_kb])
            .await
            .map_err(pg)?
        else {
            drop(tx);
            return Ok(None);
        };
        let current = state_of(row.get(0));
        let next = current.advance(requested);
        if next != current {
            // The row is locked by the UPDATE above until the commit.
            let stmt = tx
                .prepare_cached("UPDATE workers SET state = $2 WHERE wid = $1")
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&wid, &state_code(next)])
                .await
                .map_err(pg)?;
        }
        commit(tx).await?;
        Ok(Some(next))
    }

    /// [`werk_store::Store::worker_signal`].
    pub async fn worker_signal(&self, wid: Option<String>, to: WorkerState) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Locked in wid order (as the expiry sweep does), so two signals never deadlock.
        let stmt = tx
            .prepare_cached(
                "SELECT wid, state FROM workers WHERE $1::text IS NULL OR wid = $1
                 ORDER BY wid FOR UPDATE",
            )
            .await
            .map_err(pg)?;
        let rows = tx.query(&stmt, &[&wid]).await.map_err(pg)?;
        let mut wids = Vec::new();
        let mut states = Vec::new();
        for r in &rows {
            let current = state_of(r.get(1));
            let next = current.advance(to);
            if next != current {
                wids.push(r.get::<_, String>(0));
                states.push(state_code(next));
            }
        }
        if !wids.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "UPDATE workers w SET state = v.state
                     FROM unnest($1::text[], $2::smallint[]) AS v(wid, state)
                     WHERE w.wid = v.wid",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&wids, &states]).await.map_err(pg)?;
        }
        commit(tx).await?;
        Ok(rows.len())
    }

    /// [`werk_store::Store::worker_list`].
    pub async fn worker_list(&self, alive_since: Millis) -> Result<Vec<WorkerInfo>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT w.wid, w.hostname, w.pid, w.labels, w.started_at, w.last_beat, w.state,
                        w.rss_kb, c.n
                 FROM workers w
                 JOIN (SELECT c.wid, count(*) AS n
                       FROM worker_conns c LEFT JOIN nodes n ON n.node = c.node
                       WHERE c.node = $1 OR n.last_seen >= $2
                       GROUP BY c.wid) c ON c.wid = w.wid
                 ORDER BY w.wid COLLATE \"C\"",
            )
            .await
            .map_err(pg)?;
        let rows = client
            .query(&stmt, &[&self.worker_node, &alive_since])
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| WorkerInfo {
                wid: r.get(0),
                hostname: r.get(1),
                pid: r.get(2),
                labels: r.get(3),
                started_at: r.get(4),
                last_beat: r.get(5),
                state: state_of(r.get(6)),
                rss_kb: r.get(7),
                connections: usize::try_from(r.get::<_, i64>(8)).unwrap_or(0),
            })
            .collect())
    }

    /// [`werk_store::Store::worker_sync`].
    pub async fn worker_sync(
        &self,
        wids: Vec<String>,
        cutoff: Millis,
        now: Millis,
    ) -> Result<WorkerSync> {
        let mut client = self.client().await?;
        let tx = Self::soft_tx(&mut client).await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO nodes AS n (node, last_seen) VALUES ($1, $2)
                 ON CONFLICT (node) DO UPDATE SET last_seen = GREATEST(n.last_seen, $2)",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&self.worker_node, &now])
            .await
            .map_err(pg)?;
        // Heartbeat expiry by the cluster-wide last BEAT. A row another node is deleting, or a
        // BEAT is refreshing, is skipped.
        let stmt = tx
            .prepare_cached(
                "DELETE FROM workers WHERE wid IN (
                     SELECT wid FROM workers WHERE last_beat < $1
                     ORDER BY wid FOR UPDATE SKIP LOCKED)",
            )
            .await
            .map_err(pg)?;
        let expired = tx.execute(&stmt, &[&cutoff]).await.map_err(pg)?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM nodes WHERE node IN (
                     SELECT node FROM nodes n WHERE last_seen < $1
                       AND NOT EXISTS (SELECT 1 FROM worker_conns c WHERE c.node = n.node)
                     FOR UPDATE SKIP LOCKED)",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&cutoff]).await.map_err(pg)?;
        let mut states = vec![None; wids.len()];
        if !wids.is_empty() {
            let stmt = tx
                .prepare_cached("SELECT wid, state FROM workers WHERE wid = ANY($1)")
                .await
                .map_err(pg)?;
            let rows = tx.query(&stmt, &[&wids]).await.map_err(pg)?;
            let found: std::collections::HashMap<String, WorkerState> = rows
                .iter()
                .map(|r| (r.get(0), state_of(r.get(1))))
                .collect();
            for (slot, wid) in states.iter_mut().zip(&wids) {
                *slot = found.get(wid).copied();
            }
        }
        commit(tx).await?;
        Ok(WorkerSync {
            expired: usize::try_from(expired).unwrap_or(usize::MAX),
            states,
        })
    }
}
