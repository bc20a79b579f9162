//! Per-node batching of ACKs (issue 12: "concurrent requests share round trips and commits").
//!
//! Every ACK of a node goes through one combiner: [`PgStore::ack`] queues the request and
//! awaits its answer. [`ACK_LANES`] lanes (the `lanes` module: tasks, each using one pooled
//! connection at a time) take the requests: a lane that is idle takes a request the moment it
//! arrives, together with whatever else is waiting (at most [`ACK_BATCH_MAX`]), so a lone ACK
//! never waits for company; batches form only from the ACKs that queued up while every lane
//! was busy committing. A batch of one runs the single ACK transaction ([`PgStore::ack_one`]); a larger
//! batch is applied in **one transaction**:
//!
//! 1. one `DELETE FROM jobs WHERE jid = ANY($1) AND state <> 0 RETURNING …` (a jid asked for
//!    twice is deleted once: its first request gets the outcome, the others `NotWorking`, as
//!    if they had run one after the other; jids that are unknown or scheduled are
//!    `NotWorking` and change nothing);
//! 2. the unique locks of the deleted jobs released in one statement;
//! 3. the per-job domain work, [`PgStore::job_acked`] as for a single ACK (batch progress and
//!    callbacks under the batch row's lock, tracking, throttle wake-ups), in the order of the
//!    jobs' `batch` column, so that concurrent batched transactions take batch rows in one
//!    order;
//! 4. one counters/history upsert for the whole batch (this backend's shard, one history row
//!    per local day among the requests' `now`);
//! 5. one `COMMIT` — one WAL flush for the batch.
//!
//! Every request is answered only after that COMMIT (durability as for a single ACK); the
//! [`werk_store::EnqueueListener`] is told after it. If the batched transaction fails with
//! the connection still open (the server refused a statement: a deadlock with another
//! transaction, a constraint, a bad row — nothing of it was applied), the batch falls back to
//! one transaction per request, in request order, so one bad request cannot fail the others.
//! If the connection fails, every request of the batch gets the error; a COMMIT whose outcome
//! is unknown is an error for every request, never success.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::oneshot;
use werk_core::time::local_day;
use werk_core::{JobState, Millis};
use werk_store::{AckOutcome, StoreError};

use crate::lanes::{Lanes, Weighed};
use crate::{lock_key, pg, state_of, PgStore, Result, Transaction};

/// Lanes per node: batched ACK transactions in flight at once (each holds one pooled
/// connection while it runs).
pub const ACK_LANES: usize = 4;

/// The most ACKs one transaction applies.
pub const ACK_BATCH_MAX: usize = 128;

/// One queued ACK.
pub(crate) struct Pending {
    jid: String,
    now: Millis,
    reply: oneshot::Sender<Result<AckOutcome>>,
}

impl Weighed for Pending {}

/// Why a batched transaction did not commit.
enum Failed {
    /// The server refused it and rolled it back, the connection still works: nothing was
    /// applied; the requests may be retried one by one.
    RolledBack(StoreError),
    /// No connection, a broken one, or a COMMIT with unknown outcome: the answer for every
    /// request of the batch.
    Final(StoreError),
}

impl PgStore {
    /// Starts this store's ACK lanes (once, from [`PgStore::connect`]; needs a Tokio runtime).
    pub(crate) fn start_ack_lanes(&mut self) {
        let store = Arc::new(self.lane_handle());
        self.acks = Lanes::start(ACK_LANES, ACK_BATCH_MAX, "ACK", move |batch| {
            let store = store.clone();
            async move { store.ack_batch(batch).await }
        });
    }

    /// For tests: ACKs queued that no lane has taken yet (waits while a lane is taking some).
    #[doc(hidden)]
    pub async fn queued_acks(&self) -> usize {
        self.acks.queued().await
    }

    /// The store as a lane sees it: the same pool, configuration, listener and throttles,
    /// without lanes of its own.
    pub(crate) fn lane_handle(&self) -> PgStore {
        PgStore {
            pool: self.pool.clone(),
            config: self.config.clone(),
            listener: self.listener.clone(),
            wake: self.wake.clone(),
            throttles: self.throttles.clone(),
            worker_node: self.worker_node.clone(),
            acks: Lanes::direct(),
            pushes: Lanes::direct(),
            fetches: Lanes::direct(),
        }
    }

    /// [`werk_store::Store::ack`]: working → gone; a late ACK takes an enqueued, retry or dead
    /// job → gone too; unknown or scheduled: nothing changes. Applied by this node's ACK
    /// lanes, batched with concurrent ACKs (see the `batch_ack` module); answered after the
    /// COMMIT that applied it.
    pub async fn ack(&self, jid: String, now: Millis) -> Result<AckOutcome> {
        if !self.acks.running() {
            return self.ack_one(jid, now).await;
        }
        self.acks
            .ask("ACK", |reply| Pending { jid, now, reply })
            .await
    }

    /// Applies one batch taken by a lane and answers each of its requests.
    async fn ack_batch(&self, batch: Vec<Pending>) {
        if batch.len() == 1 {
            for p in batch {
                let outcome = self.ack_one(p.jid, p.now).await;
                let _ = p.reply.send(outcome);
            }
            return;
        }
        match self.ack_together(&batch).await {
            Ok(outcomes) => {
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(Ok(outcome));
                }
            }
            Err(Failed::RolledBack(e)) => {
                tracing::warn!(
                    acks = batch.len(),
                    error = %e,
                    "batched ACK transaction failed; applying its ACKs one by one"
                );
                for p in batch {
                    let outcome = self.ack_one(p.jid, p.now).await;
                    let _ = p.reply.send(outcome);
                }
            }
            Err(Failed::Final(e)) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// The batch in one transaction: one outcome per request, in order.
    async fn ack_together(
        &self,
        batch: &[Pending],
    ) -> std::result::Result<Vec<AckOutcome>, Failed> {
        let mut client = self.client().await.map_err(Failed::Final)?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| Failed::Final(pg(e)))?;
        let applied = self.ack_in(&tx, batch).await;
        let (outcomes, woken, changed) = match applied {
            Ok(done) => done,
            Err(e) => {
                drop(tx);
                return Err(match client.is_closed() {
                    true => Failed::Final(e),
                    false => Failed::RolledBack(e),
                });
            }
        };
        if !changed {
            // Nothing was deleted: nothing to commit (as for a single ACK).
            drop(tx);
            return Ok(outcomes);
        }
        if let Err(e) = tx.commit().await {
            return Err(match e.code() {
                // The server answered: rolled back.
                Some(_) => Failed::RolledBack(pg(e)),
                None => Failed::Final(StoreError::Backend(format!(
                    "COMMIT outcome unknown (the connection failed during COMMIT): {e}"
                ))),
            });
        }
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(outcomes)
    }

    /// Steps 1–4 of the module documentation inside `tx`: the outcomes, the queues to wake
    /// after commit, and whether anything was written.
    async fn ack_in(
        &self,
        tx: &Transaction<'_>,
        batch: &[Pending],
    ) -> Result<(Vec<AckOutcome>, BTreeSet<String>, bool)> {
        let mut outcomes = vec![AckOutcome::NotWorking; batch.len()];
        let mut woken = BTreeSet::new();
        let jids: Vec<&str> = batch.iter().map(|p| p.jid.as_str()).collect();
        let stmt = tx
            .prepare_cached(
                "DELETE FROM jobs WHERE jid = ANY($1) AND state <> 0
                 RETURNING jid, state, uniq, queue, batch, track",
            )
            .await
            .map_err(pg)?;
        let rows = tx.query(&stmt, &[&jids]).await.map_err(pg)?;
        if rows.is_empty() {
            return Ok((outcomes, woken, false));
        }
        // A jid's outcome goes to its first request; later ones find it gone.
        let mut first = HashMap::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            first.entry(p.jid.as_str()).or_insert(i);
        }
        struct Gone {
            request: usize,
            jid: String,
            uniq: Option<String>,
            queue: String,
            batch: Option<String>,
            track: bool,
        }
        let mut gone = Vec::with_capacity(rows.len());
        for r in &rows {
            let jid: String = r.get(0);
            let Some(&request) = first.get(jid.as_str()) else {
                continue;
            };
            outcomes[request] = match state_of(r.get(1)) {
                JobState::Working => AckOutcome::Acked,
                other => AckOutcome::AckedLate(other),
            };
            gone.push(Gone {
                request,
                jid,
                uniq: r.get(2),
                queue: r.get(3),
                batch: r.get(4),
                track: r.get(5),
            });
        }
        let (keys, holders): (Vec<&str>, Vec<&str>) = gone
            .iter()
            .filter_map(|g| g.uniq.as_deref().map(|u| (lock_key(u), g.jid.as_str())))
            .unzip();
        if !keys.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM unique_locks l USING unnest($1::text[], $2::text[]) AS r(key, jid)
                     WHERE l.key = r.key AND l.jid = r.jid",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&keys, &holders]).await.map_err(pg)?;
        }
        gone.sort_by(|a, b| a.batch.cmp(&b.batch).then(a.request.cmp(&b.request)));
        for g in &gone {
            let now = batch[g.request].now;
            self.job_acked(
                tx,
                &g.jid,
                &g.queue,
                g.batch.as_deref(),
                g.track,
                now,
                &mut woken,
            )
            .await?;
        }
        let days: Vec<String> = gone
            .iter()
            .map(|g| local_day(batch[g.request].now))
            .collect();
        let stmt = tx
            .prepare_cached(
                "WITH c AS (
                     INSERT INTO counters (name, shard, value)
                     VALUES ('processed', pg_backend_pid(), cardinality($1::text[]))
                     ON CONFLICT (name, shard)
                     DO UPDATE SET value = counters.value + excluded.value
                 )
                 INSERT INTO history (day, shard, processed, failures)
                 SELECT day, pg_backend_pid(), count(*), 0 FROM unnest($1::text[]) AS d(day)
                 GROUP BY day
                 ON CONFLICT (day, shard) DO UPDATE
                 SET processed = history.processed + excluded.processed",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&days]).await.map_err(pg)?;
        Ok((outcomes, woken, true))
    }
}
