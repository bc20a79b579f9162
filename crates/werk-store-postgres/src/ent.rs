//! The Enterprise parts: cron fire records, batches (accounting and callbacks), job tracking
//! and throttles. The domain rules are werk-core's ([`werk_core::batch::Progress`],
//! [`werk_core::tracking::state`], [`werk_core::throttle::Throttle`]); this file stores their
//! inputs and carries out their answers.
//!
//! # Batches across nodes
//!
//! Every change a batch rule depends on (a member's push, ACK, FAIL, reaper FAIL or expiry; a
//! callback's ACK; COMMIT, OPEN; a child's progress) runs in the transaction of the request
//! that causes it, and **locks the batch row** (`SELECT … FOR UPDATE`) before reading the
//! counters it decides on. Two nodes ACKing the last two members of one batch therefore queue
//! on that row: the second reads the first's committed counters (READ COMMITTED re-reads a
//! row it waited for), so exactly one of them sees `pending = 0` and enqueues the callback, in
//! its own transaction. A callback enqueued is a `jobs` row inserted in the same commit as the
//! stage change that records it, so a crash can neither lose it nor fire it twice.
//!
//! The price is a **hot row per batch**: pushes and finishes of one batch's members serialise
//! on its row lock (for the length of each transaction), across all nodes. Different batches
//! never wait for one another. This is accepted: a batch's members finish at the rate of one
//! short transaction each, which is far above what one batch needs; sharding the counters
//! (as `counters` is) would make "exactly one transaction sees zero" impossible to decide
//! without a lock anyway.
//!
//! Locks are taken child before parent (a child's progress is propagated upwards); a request
//! that touches several unrelated batches (a PUSHB mixing batches, a reaper pass) takes them
//! in request order, so two such requests in opposite orders may deadlock: PostgreSQL then
//! aborts one of them (nothing of it applied), and the store runs it again (the `retry`
//! module).
//!
//! The `jobs.batch` column says what a job is to a batch: `m:<bid>` a member that has not
//! finished yet, `f:<bid>` a member whose last run failed, `c:<bid>` / `s:<bid>` the batch's
//! complete / success callback (the embedded store's format). A member that succeeded is gone.
//!
//! # Throttles across nodes
//!
//! A throttle's slots are the queue's working rows (fetched less than `timeout` ago). Counting
//! them and reserving one more must not interleave between nodes, so a FETCH of a throttled
//! queue first takes `pg_advisory_xact_lock(THROTTLE_LOCK_CLASS, hashtext(queue))`: FETCHes of
//! one throttled queue serialise cluster-wide (until their commit); unthrottled queues take no
//! lock. The throttles themselves are configuration, held in memory per node.

use std::collections::BTreeSet;

use rand::Rng;
use werk_core::batch::{Progress, Stage};
use werk_core::time::format_stamp;
use werk_core::tracking::Ending;
use werk_core::{Job, JobState, Millis};
use werk_store::{
    BatchError, BatchStatus, CallbackState, CronFire, NewBatch, NewJob, Throttle, TrackUpdate,
    Tracked, BATCH_COMMIT_DEADLINE, BATCH_RETENTION, TRACK_RETENTION,
};

use crate::{commit, pg, PgStore, Result, Row, Transaction};

/// The longest a TRACK SET `reserve_until` may reach past now (Faktory's reservation limit).
const MAX_RESERVE: Millis = 24 * 3600 * 1000;

/// The first key of the two-key advisory locks that serialise FETCHes of one throttled queue
/// (ASCII "thro"; the second key is `hashtext(queue)`).
const THROTTLE_LOCK_CLASS: i32 = 0x7468_726f;

/// What a batch status reads from `batches`.
const BATCH_COLUMNS: &str = "bid, parent, description, created_at, created_stamp, committed,
    total, pending, failed, complete_job IS NOT NULL, success_job IS NOT NULL, complete_st,
    success_st";

/// Batches that exist for clients: committed, or still before their commit deadline (`$2` =
/// now).
const BATCH_LIVE: &str = "(committed OR deadline IS NULL OR deadline > $2)";

fn batch_status_row(r: &tokio_postgres::Row) -> BatchStatus {
    let st = |defined: bool, code: i16| match (defined, Stage::from_code(i64::from(code))) {
        (true, Stage::Enqueued) => CallbackState::Enqueued,
        (true, Stage::Done) => CallbackState::Succeeded,
        _ => CallbackState::Pending,
    };
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    BatchStatus {
        bid: r.get(0),
        parent_bid: r.get(1),
        description: r.get(2),
        created_at: r.get(3),
        created_stamp: r.get(4),
        committed: r.get(5),
        total: n(r.get(6)),
        pending: n(r.get(7)),
        failed: n(r.get(8)),
        complete_st: st(r.get(9), r.get(11)),
        success_st: st(r.get(10), r.get(12)),
    }
}

/// One `batches` row, locked by this transaction.
struct BatchRow {
    bid: String,
    parent: Option<String>,
    deadline: Option<Millis>,
    complete_job: Option<String>,
    success_job: Option<String>,
    /// The counters and stages the domain rules decide on.
    p: Progress,
}

impl BatchRow {
    /// Exists for clients: committed, or still before its commit deadline.
    fn live(&self, now: Millis) -> bool {
        self.p.committed || self.deadline.is_none_or(|d| d > now)
    }
}

/// A random jid for a callback whose own jid is already taken.
fn fresh_jid() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl PgStore {
    // ---- batches: rows ------------------------------------------------------------------------

    /// Loads and locks a batch row (`FOR UPDATE`: held until commit; see the module docs).
    async fn lock_batch(tx: &Transaction<'_>, bid: &str) -> Result<Option<BatchRow>> {
        let stmt = tx
            .prepare_cached(
                "SELECT bid, parent, committed, deadline, pending, failed, children,
                        children_complete, children_success, complete_job, success_job,
                        complete_st, success_st
                 FROM batches WHERE bid = $1 FOR UPDATE",
            )
            .await
            .map_err(pg)?;
        let row = tx.query_opt(&stmt, &[&bid]).await.map_err(pg)?;
        Ok(row.map(|r| {
            let complete_job: Option<String> = r.get(9);
            let success_job: Option<String> = r.get(10);
            let stage = |c: i16| Stage::from_code(i64::from(c));
            BatchRow {
                bid: r.get(0),
                parent: r.get(1),
                deadline: r.get(3),
                p: Progress {
                    committed: r.get(2),
                    pending: r.get(4),
                    failed: r.get(5),
                    children: r.get(6),
                    children_complete: r.get(7),
                    children_success: r.get(8),
                    complete: stage(r.get(11)),
                    success: stage(r.get(12)),
                    has_complete_job: complete_job.is_some(),
                    has_success_job: success_job.is_some(),
                },
                complete_job,
                success_job,
            }
        }))
    }

    /// Writes a locked batch row back; `updated_at` = now (its last change).
    async fn save_batch(tx: &Transaction<'_>, b: &BatchRow, now: Millis) -> Result<()> {
        let stmt = tx
            .prepare_cached(
                "UPDATE batches SET committed = $2, deadline = $3, pending = $4, failed = $5,
                    children = $6, children_complete = $7, children_success = $8,
                    complete_st = $9, success_st = $10, updated_at = $11
                 WHERE bid = $1",
            )
            .await
            .map_err(pg)?;
        let code = |s: Stage| s.code() as i16;
        tx.execute(
            &stmt,
            &[
                &b.bid,
                &b.p.committed,
                &b.deadline,
                &b.p.pending,
                &b.p.failed,
                &b.p.children,
                &b.p.children_complete,
                &b.p.children_success,
                &code(b.p.complete),
                &code(b.p.success),
                &now,
            ],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    /// Fires whatever is now due for a locked batch whose counters the caller changed
    /// ([`Progress::advance`]), stores it, and tells its parent what it became — `told`: what
    /// the caller already made it (a callback ACKed: complete, success) — up the chain of
    /// parents, each locked in turn.
    async fn settle(
        &self,
        tx: &Transaction<'_>,
        mut b: BatchRow,
        mut told: (bool, bool),
        now: Millis,
        woken: &mut BTreeSet<String>,
    ) -> Result<()> {
        loop {
            let a = b.p.advance();
            for (fire, role, job) in [
                (a.fire_complete, "c", &b.complete_job),
                (a.fire_success, "s", &b.success_job),
            ] {
                if let (true, Some(job)) = (fire, job) {
                    self.fire_callback(tx, &b, role, job, now, woken).await?;
                }
            }
            Self::save_batch(tx, &b, now).await?;
            let (complete, success) = (told.0 || a.parent_complete, told.1 || a.parent_success);
            let Some(parent) = b.parent.as_deref().filter(|_| complete || success) else {
                return Ok(());
            };
            let Some(mut up) = Self::lock_batch(tx, parent).await? else {
                return Ok(());
            };
            up.p.children_complete += i64::from(complete);
            up.p.children_success += i64::from(success);
            b = up;
            told = (false, false);
        }
    }

    /// Enqueues a callback job (role `c` or `s`) of a locked batch in this transaction.
    async fn fire_callback(
        &self,
        tx: &Transaction<'_>,
        b: &BatchRow,
        role: &str,
        json: &str,
        now: Millis,
        woken: &mut BTreeSet<String>,
    ) -> Result<()> {
        let mut job = match Job::from_stored(json) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(bid = %b.bid, error = %e, "stored batch callback is damaged; not enqueued");
                return Ok(());
            }
        };
        if let Some(parent) = &b.parent {
            job.add_custom("_pbid", &serde_json::Value::String(parent.clone()));
        }
        let stmt = tx
            .prepare_cached("SELECT 1 FROM jobs WHERE jid = $1")
            .await
            .map_err(pg)?;
        if tx
            .query_opt(&stmt, &[&job.jid])
            .await
            .map_err(pg)?
            .is_some()
        {
            job.jid = fresh_jid();
        }
        let jid = job.jid.clone();
        let column = format!("{role}:{}", b.bid);
        let pushed = self
            .push_in(
                tx,
                vec![NewJob { job, at: None }],
                now,
                Some(&column),
                woken,
            )
            .await?;
        match pushed.into_iter().next() {
            Some(Err(e)) => {
                tracing::error!(bid = %b.bid, %jid, error = %e, "batch callback refused")
            }
            _ => tracing::info!(bid = %b.bid, %jid, callback = role, "batch callback enqueued"),
        }
        Ok(())
    }

    // ---- batches: hooks into the transitions --------------------------------------------------

    /// Whether a job may join `bid` (it exists and has not expired uncommitted). Locks the
    /// row, so a COMMIT racing this push waits for it and counts the member.
    pub(crate) async fn batch_accepts(
        &self,
        tx: &Transaction<'_>,
        bid: &str,
        now: Millis,
    ) -> Result<bool> {
        Ok(Self::lock_batch(tx, bid)
            .await?
            .is_some_and(|b| b.live(now)))
    }

    /// A job was stored by a push: a member (`member`: its batch, accepted by
    /// [`PgStore::batch_accepts`] in this transaction) counts in `total` and `pending`; a
    /// tracked job's tracking data starts (afresh, if the jid was used before).
    pub(crate) async fn pushed(
        &self,
        tx: &Transaction<'_>,
        job: &Job,
        member: Option<&str>,
        now: Millis,
    ) -> Result<()> {
        if let Some(bid) = member {
            let stmt = tx
                .prepare_cached(
                    "UPDATE batches SET total = total + 1, pending = pending + 1, updated_at = $2
                     WHERE bid = $1",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&bid, &now]).await.map_err(pg)?;
        }
        if job.tracked() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO tracking (jid, percent, descr, updated_at, final)
                     VALUES ($1, NULL, NULL, $2, NULL)
                     ON CONFLICT (jid) DO UPDATE SET percent = NULL, descr = NULL,
                         updated_at = excluded.updated_at, final = NULL",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&job.jid, &now]).await.map_err(pg)?;
        }
        Ok(())
    }

    /// A member job's run ended ([`Progress::member_ran`]); then whatever is due fires.
    async fn member_ran(
        &self,
        tx: &Transaction<'_>,
        bid: &str,
        (first, failed_before, ok): (bool, bool, bool),
        now: Millis,
        woken: &mut BTreeSet<String>,
    ) -> Result<()> {
        let Some(mut b) = Self::lock_batch(tx, bid).await? else {
            return Ok(());
        };
        b.p.member_ran(first, failed_before, ok);
        self.settle(tx, b, (false, false), now, woken).await
    }

    /// A job with this `batch` column failed (FAIL, reaper) or expired. A member's first
    /// failure moves it from `pending` to `failed`. Returns the job's new `batch` column, if
    /// it changed.
    async fn member_failed(
        &self,
        tx: &Transaction<'_>,
        batch: Option<&str>,
        now: Millis,
        woken: &mut BTreeSet<String>,
    ) -> Result<Option<String>> {
        let Some(bid) = batch.and_then(|b| b.strip_prefix("m:")) else {
            return Ok(None);
        };
        self.member_ran(tx, bid, (true, false, false), now, woken)
            .await?;
        Ok(Some(format!("f:{bid}")))
    }

    /// An enqueued job expired (dropped at FETCH or by the sweep; its row is already deleted):
    /// a member counts as failed, its tracking data is forgotten (removed, not ended).
    pub(crate) async fn job_expired(
        &self,
        tx: &Transaction<'_>,
        jid: &str,
        batch: Option<&str>,
        track: bool,
        now: Millis,
        woken: &mut BTreeSet<String>,
    ) -> Result<()> {
        self.member_failed(tx, batch, now, woken).await?;
        if track {
            Self::forget_tracking(tx, jid).await?;
        }
        Ok(())
    }

    /// A job was ACKed (its row already deleted): a member's run succeeded, a callback is done
    /// (and may make the success callback or the parent due); tracking ends in success; a
    /// throttled queue's waiting FETCHes are woken.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn job_acked(
        &self,
        tx: &Transaction<'_>,
        jid: &str,
        queue: &str,
        batch: Option<&str>,
        track: bool,
        now: Millis,
        woken: &mut BTreeSet<String>,
    ) -> Result<()> {
        if let Some((role, bid)) = batch.and_then(|b| b.split_once(':')) {
            match role {
                // `m`: the member's first run; `f`: its previous run failed.
                "m" => {
                    self.member_ran(tx, bid, (true, false, true), now, woken)
                        .await?
                }
                "f" => {
                    self.member_ran(tx, bid, (false, true, true), now, woken)
                        .await?
                }
                "c" | "s" => {
                    if let Some(mut b) = Self::lock_batch(tx, bid).await? {
                        let complete = role == "c";
                        if b.p.callback_acked(complete) {
                            self.settle(tx, b, (complete, !complete), now, woken)
                                .await?;
                        }
                    }
                }
                _ => {}
            }
        }
        if track {
            Self::touch_tracking(tx, jid, Some("success"), now).await?;
        }
        if self.is_throttled(queue) {
            woken.insert(queue.to_string());
        }
        Ok(())
    }

    /// A working job failed (FAIL or the reaper), before its row is updated or deleted
    /// (`discarded`): member accounting, tracking, throttle wake-up.
    pub(crate) async fn job_failed(
        &self,
        tx: &Transaction<'_>,
        row: &Row,
        jid: &str,
        discarded: bool,
        now: Millis,
        woken: &mut BTreeSet<String>,
    ) -> Result<()> {
        let stmt = tx
            .prepare_cached("SELECT batch, track FROM jobs WHERE id = $1")
            .await
            .map_err(pg)?;
        let r = tx.query_one(&stmt, &[&row.id]).await.map_err(pg)?;
        let (batch, track): (Option<String>, bool) = (r.get(0), r.get(1));
        if let Some(column) = self.member_failed(tx, batch.as_deref(), now, woken).await? {
            if !discarded {
                let stmt = tx
                    .prepare_cached("UPDATE jobs SET batch = $2 WHERE id = $1")
                    .await
                    .map_err(pg)?;
                tx.execute(&stmt, &[&row.id, &column]).await.map_err(pg)?;
            }
        }
        if track {
            let last = discarded.then_some("failed");
            Self::touch_tracking(tx, jid, last, now).await?;
        }
        if self.is_throttled(&row.queue) {
            woken.insert(row.queue.clone());
        }
        Ok(())
    }

    /// Housekeeping for the sweep (in its transaction; at most `limit` of each): uncommitted
    /// batches past their deadline are dropped (never firing; a parent stops waiting for
    /// them), batches past their retention are purged, and tracking data of finished jobs past
    /// [`TRACK_RETENTION`]. Rows another node's sweep holds are skipped.
    pub(crate) async fn sweep_ent(
        &self,
        tx: &Transaction<'_>,
        now: Millis,
        limit: usize,
        woken: &mut BTreeSet<String>,
    ) -> Result<()> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let stmt = tx
            .prepare_cached(
                "DELETE FROM batches WHERE bid IN (SELECT bid FROM batches
                 WHERE deadline IS NOT NULL AND deadline <= $1
                 ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING parent",
            )
            .await
            .map_err(pg)?;
        let expired = tx.query(&stmt, &[&now, &limit]).await.map_err(pg)?;
        for r in expired {
            let Some(parent) = r.get::<_, Option<String>>(0) else {
                continue;
            };
            if let Some(mut b) = Self::lock_batch(tx, &parent).await? {
                b.p.children -= 1;
                self.settle(tx, b, (false, false), now, woken).await?;
            }
        }
        let stmt = tx
            .prepare_cached(
                "DELETE FROM batches WHERE bid IN (SELECT bid FROM batches
                 WHERE (success_st = 2 AND updated_at <= $1)
                    OR (success_st <> 2 AND updated_at <= $2)
                 LIMIT $3 FOR UPDATE SKIP LOCKED)",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &stmt,
            &[
                &now.saturating_sub(BATCH_RETENTION),
                &now.saturating_sub(self.config.dead_retention),
                &limit,
            ],
        )
        .await
        .map_err(pg)?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM tracking WHERE jid IN (SELECT jid FROM tracking
                 WHERE final IS NOT NULL AND updated_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&now.saturating_sub(TRACK_RETENTION), &limit])
            .await
            .map_err(pg)?;
        Ok(())
    }

    // ---- tracking: hooks -------------------------------------------------------------------

    /// A tracked job moved; `last`: how it ended when it is gone (`success`, `failed`).
    pub(crate) async fn touch_tracking(
        tx: &Transaction<'_>,
        jid: &str,
        last: Option<&str>,
        now: Millis,
    ) -> Result<()> {
        let stmt = tx
            .prepare_cached("UPDATE tracking SET updated_at = $2, final = $3 WHERE jid = $1")
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&jid, &now, &last]).await.map_err(pg)?;
        Ok(())
    }

    /// Tracking data of a job removed without an ending (expiry, MUTATE delete, QUEUE REMOVE,
    /// dead-job purge).
    pub(crate) async fn forget_tracking(tx: &Transaction<'_>, jid: &str) -> Result<()> {
        let stmt = tx
            .prepare_cached("DELETE FROM tracking WHERE jid = $1")
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&jid]).await.map_err(pg)?;
        Ok(())
    }

    // ---- throttles: hooks --------------------------------------------------------------------

    pub(crate) fn throttle_of(&self, queue: &str) -> Option<Throttle> {
        let all = self.throttles.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().find(|t| t.queue == queue).cloned()
    }

    fn is_throttled(&self, queue: &str) -> bool {
        let all = self.throttles.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().any(|t| t.queue == queue)
    }

    /// Whether FETCH must treat `queue` as empty for `wid`: its throttle's limit is reached.
    /// For a throttled queue, first takes the queue's throttle lock (until commit), so that
    /// counting the slots and taking one do not interleave with another node's FETCH.
    pub(crate) async fn throttled(
        &self,
        tx: &Transaction<'_>,
        queue: &str,
        wid: &str,
        now: Millis,
    ) -> Result<bool> {
        let Some(t) = self.throttle_of(queue) else {
            return Ok(false);
        };
        let stmt = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1::int4, hashtext($2))")
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&THROTTLE_LOCK_CLASS, &queue])
            .await
            .map_err(pg)?;
        let since = t.slots_since(now);
        let held: i64 = if t.per_worker() {
            let stmt = tx
                .prepare_cached(
                    "SELECT count(*) FROM jobs WHERE state = 2 AND queue = $1
                     AND reserved_at > $2 AND wid = $3",
                )
                .await
                .map_err(pg)?;
            tx.query_one(&stmt, &[&queue, &since, &wid])
                .await
                .map_err(pg)?
                .get(0)
        } else {
            let stmt = tx
                .prepare_cached(
                    "SELECT count(*) FROM jobs WHERE state = 2 AND queue = $1
                     AND reserved_at > $2",
                )
                .await
                .map_err(pg)?;
            tx.query_one(&stmt, &[&queue, &since])
                .await
                .map_err(pg)?
                .get(0)
        };
        Ok(t.is_full(u64::try_from(held).unwrap_or(0)))
    }

    // ---- the Store methods -------------------------------------------------------------------

    /// [`werk_store::Store::fire_cron`]: the tick is recorded (only if later than the entry's
    /// last one; the upsert locks the entry's row, so racing nodes queue and the later ones
    /// find the tick taken) and the job pushed, in one commit.
    pub async fn fire_cron(
        &self,
        entry: String,
        tick: Millis,
        job: NewJob,
        now: Millis,
    ) -> Result<CronFire> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO cron_fires AS c (entry, tick, jid, fired_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (entry) DO UPDATE SET tick = excluded.tick, jid = excluded.jid,
                     fired_at = excluded.fired_at
                 WHERE c.tick < excluded.tick
                 RETURNING 1",
            )
            .await
            .map_err(pg)?;
        let recorded = tx
            .query_opt(&stmt, &[&entry, &tick, &job.job.jid, &now])
            .await
            .map_err(pg)?
            .is_some();
        if !recorded {
            drop(tx);
            return Ok(CronFire::AlreadyFired);
        }
        let mut woken = BTreeSet::new();
        let pushed = self.push_in(&tx, vec![job], now, None, &mut woken).await?;
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(match pushed.into_iter().next() {
            Some(Err(e)) => CronFire::Refused(e),
            _ => CronFire::Fired,
        })
    }

    /// [`werk_store::Store::cron_last_fired`].
    pub async fn cron_last_fired(&self, entries: Vec<String>) -> Result<Vec<Option<Millis>>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT entry, tick FROM cron_fires WHERE entry = ANY($1)")
            .await
            .map_err(pg)?;
        let rows = client.query(&stmt, &[&entries]).await.map_err(pg)?;
        let ticks: std::collections::HashMap<String, Millis> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(entries.iter().map(|e| ticks.get(e).copied()).collect())
    }

    /// [`werk_store::Store::batch_new`].
    pub async fn batch_new(
        &self,
        batch: NewBatch,
        now: Millis,
    ) -> Result<std::result::Result<(), BatchError>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if let Some(parent) = &batch.parent_bid {
            match Self::lock_batch(&tx, parent).await? {
                Some(mut p) if p.live(now) => {
                    p.p.children += 1;
                    Self::save_batch(&tx, &p, now).await?;
                }
                _ => {
                    drop(tx);
                    return Ok(Err(BatchError::NoSuchBatch(parent.clone())));
                }
            }
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO batches (bid, parent, description, created_at, created_stamp,
                    committed, deadline, total, pending, failed, children, children_complete,
                    children_success, complete_job, success_job, complete_st, success_st,
                    updated_at)
                 VALUES ($1, $2, $3, $4, $5, false, $6, 0, 0, 0, 0, 0, 0, $7, $8, 0, 0, $4)",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &stmt,
            &[
                &batch.bid,
                &batch.parent_bid,
                &batch.description,
                &now,
                &format_stamp(now),
                &now.saturating_add(BATCH_COMMIT_DEADLINE),
                &batch.complete.as_ref().map(Job::to_json),
                &batch.success.as_ref().map(Job::to_json),
            ],
        )
        .await
        .map_err(pg)?;
        commit(tx).await?;
        Ok(Ok(()))
    }

    /// [`werk_store::Store::batch_open`].
    pub async fn batch_open(
        &self,
        bid: String,
        now: Millis,
    ) -> Result<std::result::Result<(), BatchError>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        match Self::lock_batch(&tx, &bid).await? {
            Some(mut b) if b.live(now) => {
                b.p.committed = false;
                b.deadline = Some(now.saturating_add(BATCH_COMMIT_DEADLINE));
                Self::save_batch(&tx, &b, now).await?;
                commit(tx).await?;
                Ok(Ok(()))
            }
            _ => Ok(Err(BatchError::NoSuchBatch(bid))),
        }
    }

    /// [`werk_store::Store::batch_commit`]: committed, and whatever is due fires in the same
    /// transaction.
    pub async fn batch_commit(
        &self,
        bid: String,
        now: Millis,
    ) -> Result<std::result::Result<(), BatchError>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut woken = BTreeSet::new();
        match Self::lock_batch(&tx, &bid).await? {
            Some(mut b) if b.live(now) => {
                b.p.committed = true;
                b.deadline = None;
                self.settle(&tx, b, (false, false), now, &mut woken).await?;
                commit(tx).await?;
                for queue in &woken {
                    self.listener.enqueued(queue);
                }
                Ok(Ok(()))
            }
            _ => Ok(Err(BatchError::NoSuchBatch(bid))),
        }
    }

    /// [`werk_store::Store::batch_status`].
    pub async fn batch_status(&self, bid: String, now: Millis) -> Result<Option<BatchStatus>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {BATCH_COLUMNS} FROM batches WHERE bid = $1 AND {BATCH_LIVE}"
            ))
            .await
            .map_err(pg)?;
        let row = client.query_opt(&stmt, &[&bid, &now]).await.map_err(pg)?;
        Ok(row.as_ref().map(batch_status_row))
    }

    /// [`werk_store::Store::list_batches`]: keyset pages over `(created_at, bid)` descending,
    /// bids compared bytewise (`COLLATE "C"`, as the index is built).
    pub async fn list_batches(
        &self,
        after: Option<(Millis, String)>,
        limit: u64,
        now: Millis,
    ) -> Result<Vec<BatchStatus>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit.min(10_000)).unwrap_or(10_000);
        let rows = match after {
            None => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {BATCH_COLUMNS} FROM batches WHERE {BATCH_LIVE}
                         ORDER BY created_at DESC, bid COLLATE \"C\" DESC LIMIT $1"
                    ))
                    .await
                    .map_err(pg)?;
                client.query(&stmt, &[&limit, &now]).await.map_err(pg)?
            }
            Some((t, bid)) => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {BATCH_COLUMNS} FROM batches WHERE {BATCH_LIVE}
                         AND (created_at < $3 OR (created_at = $3 AND bid COLLATE \"C\" < $4))
                         ORDER BY created_at DESC, bid COLLATE \"C\" DESC LIMIT $1"
                    ))
                    .await
                    .map_err(pg)?;
                client
                    .query(&stmt, &[&limit, &now, &t, &bid])
                    .await
                    .map_err(pg)?
            }
        };
        Ok(rows.iter().map(batch_status_row).collect())
    }

    /// [`werk_store::Store::track_set`]: the reservation extension and the progress, in one
    /// transaction.
    pub async fn track_set(&self, update: TrackUpdate, now: Millis) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if let Some(until) = update.reserve_until {
            let until = until.min(now.saturating_add(MAX_RESERVE));
            let stmt = tx
                .prepare_cached(
                    "UPDATE jobs SET score = $2, ts = $2
                     WHERE jid = $1 AND state = 2 AND score < $2",
                )
                .await
                .map_err(pg)?;
            tx.execute(&stmt, &[&update.jid, &until])
                .await
                .map_err(pg)?;
        }
        let stmt = tx
            .prepare_cached(
                "UPDATE tracking SET percent = coalesce($2, percent), descr = coalesce($3, descr),
                 updated_at = $4 WHERE jid = $1",
            )
            .await
            .map_err(pg)?;
        let percent = update.percent.map(i16::from);
        let n = tx
            .execute(&stmt, &[&update.jid, &percent, &update.desc, &now])
            .await
            .map_err(pg)?;
        commit(tx).await?;
        Ok(n > 0)
    }

    /// [`werk_store::Store::track_get`]: the state from where the job is (or how it ended),
    /// by [`werk_core::tracking::state`]; tracking data and job read in one statement.
    pub async fn track_get(&self, jid: String, now: Millis) -> Result<Option<Tracked>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT t.percent, t.descr, t.updated_at, t.final,
                        (SELECT j.state FROM jobs j WHERE j.jid = t.jid)
                 FROM tracking t WHERE t.jid = $1",
            )
            .await
            .map_err(pg)?;
        let Some(r) = client.query_opt(&stmt, &[&jid]).await.map_err(pg)? else {
            return Ok(None);
        };
        let percent: Option<i16> = r.get(0);
        let desc: Option<String> = r.get(1);
        let updated_at: Millis = r.get(2);
        let last: Option<String> = r.get(3);
        let code: Option<i16> = r.get(4);
        let ended = match last.as_deref() {
            Some("success") => Some(Ending::Success),
            Some("failed") => Some(Ending::Failed),
            _ => None,
        };
        let job = code.and_then(|c| JobState::from_code(i64::from(c)));
        let Some(state) = werk_core::tracking::state(job, ended, updated_at, now) else {
            return Ok(None);
        };
        Ok(Some(Tracked {
            jid,
            state,
            percent: percent.and_then(|p| u8::try_from(p).ok()),
            desc,
            updated_at,
        }))
    }

    /// [`werk_store::Store::set_throttles`]: this node's throttles (configuration, not
    /// stored; every node is given the same).
    pub fn set_throttles(&self, throttles: Vec<Throttle>) {
        *self.throttles.lock().unwrap_or_else(|p| p.into_inner()) = throttles;
    }
}
