//! The writer's Enterprise parts: batch accounting and callbacks, job tracking, throttles.
//! Each runs inside the transaction of the request that causes it (a member job's push, ACK,
//! FAIL or expiry; a callback's ACK; BATCH COMMIT), so a crash can never fire a callback twice
//! or never.

use rand::Rng;
use rusqlite::{params, OptionalExtension};
use werk_core::batch::{Progress, Stage};
use werk_core::{Job, Millis};
use werk_store::{
    BatchError, NewBatch, NewJob, TrackUpdate, BATCH_COMMIT_DEADLINE, BATCH_RETENTION,
    TRACK_RETENTION,
};

use super::{Batch, Prepared, Writer};
use crate::Error;

/// The longest a TRACK SET `reserve_until` may reach past now (Faktory's reservation limit).
const MAX_RESERVE: Millis = 24 * 3600 * 1000;

/// One `batches` row.
pub(crate) struct BatchRow {
    pub bid: String,
    pub parent: Option<String>,
    pub committed: bool,
    pub deadline: Option<Millis>,
    pub pending: i64,
    pub failed: i64,
    pub children: i64,
    pub children_complete: i64,
    pub children_success: i64,
    pub complete_job: Option<String>,
    pub success_job: Option<String>,
    pub complete_st: i64,
    pub success_st: i64,
}

impl BatchRow {
    /// Exists for clients: committed, or still before its commit deadline.
    fn live(&self, now: Millis) -> bool {
        self.committed || self.deadline.is_none_or(|d| d > now)
    }

    /// The counters the domain rules ([`werk_core::batch`]) decide on.
    fn progress(&self) -> Progress {
        Progress {
            committed: self.committed,
            pending: self.pending,
            failed: self.failed,
            children: self.children,
            children_complete: self.children_complete,
            children_success: self.children_success,
            complete: Stage::from_code(self.complete_st),
            success: Stage::from_code(self.success_st),
            has_complete_job: self.complete_job.is_some(),
            has_success_job: self.success_job.is_some(),
        }
    }

    /// Takes the callback stages [`werk_core::batch`] moved.
    fn set_stages(&mut self, p: &Progress) {
        self.complete_st = p.complete.code();
        self.success_st = p.success.code();
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

impl Writer {
    fn load_batch(&self, bid: &str) -> Result<Option<BatchRow>, Error> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT bid, parent, committed, deadline, pending, failed, children,
                        children_complete, children_success, complete_job, success_job,
                        complete_st, success_st
                 FROM batches WHERE bid = ?1",
            )?
            .query_row([bid], |r| {
                Ok(BatchRow {
                    bid: r.get(0)?,
                    parent: r.get(1)?,
                    committed: r.get(2)?,
                    deadline: r.get(3)?,
                    pending: r.get(4)?,
                    failed: r.get(5)?,
                    children: r.get(6)?,
                    children_complete: r.get(7)?,
                    children_success: r.get(8)?,
                    complete_job: r.get(9)?,
                    success_job: r.get(10)?,
                    complete_st: r.get(11)?,
                    success_st: r.get(12)?,
                })
            })
            .optional()?)
    }

    fn save_batch(&self, b: &BatchRow, now: Millis) -> Result<(), Error> {
        self.conn
            .prepare_cached(
                "UPDATE batches SET committed = ?2, deadline = ?3, pending = ?4, failed = ?5,
                    children = ?6, children_complete = ?7, children_success = ?8,
                    complete_st = ?9, success_st = ?10, updated_at = ?11
                 WHERE bid = ?1",
            )?
            .execute(params![
                b.bid,
                b.committed,
                b.deadline,
                b.pending,
                b.failed,
                b.children,
                b.children_complete,
                b.children_success,
                b.complete_st,
                b.success_st,
                now
            ])?;
        Ok(())
    }

    /// Whether a job may join `bid` (it exists and has not expired uncommitted).
    pub(super) fn batch_accepts(&self, bid: &str, now: Millis) -> Result<bool, Error> {
        Ok(self.load_batch(bid)?.is_some_and(|b| b.live(now)))
    }

    /// A member job was stored: one more in `total` and `pending`.
    pub(super) fn batch_member_added(&self, bid: &str, now: Millis) -> Result<(), Error> {
        self.conn
            .prepare_cached(
                "UPDATE batches SET total = total + 1, pending = pending + 1, updated_at = ?2
                 WHERE bid = ?1",
            )?
            .execute(params![bid, now])?;
        Ok(())
    }

    /// A job with this `batch` column failed (FAIL, reaper) or expired. A member's first
    /// failure moves it from `pending` to `failed`. Returns the job's new `batch` column.
    pub(super) fn member_failed(
        &mut self,
        batch: Option<&str>,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<Option<String>, Error> {
        let Some(batch) = batch else { return Ok(None) };
        if let Some(bid) = batch.strip_prefix("m:") {
            self.member_ran(bid, true, false, false, now, ctx)?;
            return Ok(Some(format!("f:{bid}")));
        }
        Ok(Some(batch.to_string()))
    }

    /// A job with this `batch` column was ACKed.
    pub(super) fn batch_job_acked(
        &mut self,
        batch: &str,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<(), Error> {
        let Some((role, bid)) = batch.split_once(':') else {
            return Ok(());
        };
        match role {
            // `m`: the member's first run; `f`: its previous run failed.
            "m" => self.member_ran(bid, true, false, true, now, ctx),
            "f" => self.member_ran(bid, false, true, true, now, ctx),
            "c" | "s" => {
                let Some(mut b) = self.load_batch(bid)? else {
                    return Ok(());
                };
                let mut p = b.progress();
                if !p.callback_acked(role == "c") {
                    return Ok(());
                }
                b.set_stages(&p);
                self.save_batch(&b, now)?;
                if let Some(parent) = &b.parent {
                    self.child_done(parent, role == "c", now, ctx)?;
                }
                if role == "c" {
                    self.evaluate(bid, now, ctx)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A member job's run ended ([`Progress::member_ran`]); then whatever is due fires.
    fn member_ran(
        &mut self,
        bid: &str,
        first: bool,
        failed_before: bool,
        ok: bool,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<(), Error> {
        let Some(mut b) = self.load_batch(bid)? else {
            return Ok(());
        };
        let mut p = b.progress();
        p.member_ran(first, failed_before, ok);
        b.pending = p.pending;
        b.failed = p.failed;
        self.save_batch(&b, now)?;
        self.evaluate(bid, now, ctx)
    }

    /// A child batch of `parent` became complete (`complete`) or succeeded.
    fn child_done(
        &mut self,
        parent: &str,
        complete: bool,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<(), Error> {
        let column = if complete {
            "children_complete"
        } else {
            "children_success"
        };
        self.conn
            .prepare_cached(&format!(
                "UPDATE batches SET {column} = {column} + 1, updated_at = ?2 WHERE bid = ?1"
            ))?
            .execute(params![parent, now])?;
        self.evaluate(parent, now, ctx)
    }

    /// Fires whatever callback of `bid` is now due ([`Progress::advance`]; see
    /// [`werk_store::Store::batch_commit`]), and tells its parent what it just became.
    fn evaluate(&mut self, bid: &str, now: Millis, ctx: &mut Batch) -> Result<(), Error> {
        let Some(mut b) = self.load_batch(bid)? else {
            return Ok(());
        };
        let mut p = b.progress();
        let a = p.advance();
        if !a.changed() {
            return Ok(());
        }
        for (fire, role, job) in [
            (a.fire_complete, "c", b.complete_job.clone()),
            (a.fire_success, "s", b.success_job.clone()),
        ] {
            if let (true, Some(job)) = (fire, job) {
                self.fire_callback(&b, role, &job, now, ctx)?;
            }
        }
        b.set_stages(&p);
        self.save_batch(&b, now)?;
        if let Some(parent) = &b.parent {
            if a.parent_complete {
                self.child_done(parent, true, now, ctx)?;
            }
            if a.parent_success {
                self.child_done(parent, false, now, ctx)?;
            }
        }
        Ok(())
    }

    /// Enqueues a callback job (role `c` or `s`) in this transaction.
    fn fire_callback(
        &mut self,
        b: &BatchRow,
        role: &str,
        json: &str,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<(), Error> {
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
        let taken: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM jobs WHERE jid = ?1")?
            .query_row([&job.jid], |r| r.get(0))
            .optional()?;
        if taken.is_some() {
            job.jid = fresh_jid();
        }
        let mut p = Prepared::new(NewJob { job, at: None }, now);
        p.batch = Some(format!("{role}:{}", b.bid));
        if let Some(Err(e)) = self.push(std::slice::from_ref(&p), ctx)?.pop() {
            tracing::error!(bid = %b.bid, jid = %p.jid, error = %e, "batch callback refused");
        } else {
            tracing::info!(bid = %b.bid, jid = %p.jid, callback = role, "batch callback enqueued");
        }
        Ok(())
    }

    pub(super) fn batch_new(
        &mut self,
        nb: &NewBatch,
        now: Millis,
    ) -> Result<Result<(), BatchError>, Error> {
        if let Some(parent) = &nb.parent_bid {
            if !self.batch_accepts(parent, now)? {
                return Ok(Err(BatchError::NoSuchBatch(parent.clone())));
            }
            self.conn
                .prepare_cached(
                    "UPDATE batches SET children = children + 1, updated_at = ?2 WHERE bid = ?1",
                )?
                .execute(params![parent, now])?;
        }
        self.conn
            .prepare_cached(
                "INSERT INTO batches (bid, parent, description, created_at, committed, deadline,
                    total, pending, failed, children, children_complete, children_success,
                    complete_job, success_job, complete_st, success_st, updated_at, created_stamp)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, 0, 0, 0, 0, 0, 0, ?6, ?7, 0, 0, ?4, ?8)",
            )?
            .execute(params![
                nb.bid,
                nb.parent_bid,
                nb.description,
                now,
                now.saturating_add(BATCH_COMMIT_DEADLINE),
                nb.complete.as_ref().map(Job::to_json),
                nb.success.as_ref().map(Job::to_json),
                werk_core::time::format_stamp(now),
            ])?;
        Ok(Ok(()))
    }

    pub(super) fn batch_open(
        &mut self,
        bid: &str,
        now: Millis,
    ) -> Result<Result<(), BatchError>, Error> {
        match self.load_batch(bid)? {
            Some(mut b) if b.live(now) => {
                b.committed = false;
                b.deadline = Some(now.saturating_add(BATCH_COMMIT_DEADLINE));
                self.save_batch(&b, now)?;
                Ok(Ok(()))
            }
            _ => Ok(Err(BatchError::NoSuchBatch(bid.to_string()))),
        }
    }

    pub(super) fn batch_commit(
        &mut self,
        bid: &str,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<Result<(), BatchError>, Error> {
        match self.load_batch(bid)? {
            Some(mut b) if b.live(now) => {
                b.committed = true;
                b.deadline = None;
                self.save_batch(&b, now)?;
                self.evaluate(bid, now, ctx)?;
                Ok(Ok(()))
            }
            _ => Ok(Err(BatchError::NoSuchBatch(bid.to_string()))),
        }
    }

    // ---- tracking ---------------------------------------------------------------------------

    /// A tracked job was stored: its tracking data starts (afresh, if the jid was used before).
    pub(super) fn start_tracking(&self, jid: &str, now: Millis) -> Result<(), Error> {
        self.conn
            .prepare_cached(
                "INSERT INTO tracking (jid, percent, descr, updated_at, final)
                 VALUES (?1, NULL, NULL, ?2, NULL)
                 ON CONFLICT (jid) DO UPDATE SET percent = NULL, descr = NULL,
                     updated_at = excluded.updated_at, final = NULL",
            )?
            .execute(params![jid, now])?;
        Ok(())
    }

    /// A tracked job moved; `last`: how it ended when it is gone (`success`, `failed`).
    pub(super) fn touch_tracking(
        &self,
        jid: &str,
        last: Option<&str>,
        now: Millis,
    ) -> Result<(), Error> {
        self.conn
            .prepare_cached("UPDATE tracking SET updated_at = ?2, final = ?3 WHERE jid = ?1")?
            .execute(params![jid, now, last])?;
        Ok(())
    }

    /// Tracking data of jobs about to be deleted without an ending (MUTATE delete, QUEUE
    /// REMOVE, expiry, dead-job purge): `cond` selects them in `jobs`.
    pub(super) fn forget_tracking(
        &self,
        cond: &str,
        args: &[rusqlite::types::Value],
    ) -> Result<(), Error> {
        self.conn
            .prepare(&format!(
                "DELETE FROM tracking WHERE jid IN
                 (SELECT jid FROM jobs WHERE ({cond}) AND track IS NOT NULL)"
            ))?
            .execute(rusqlite::params_from_iter(args.iter()))?;
        Ok(())
    }

    pub(super) fn track_set(&mut self, u: &TrackUpdate, now: Millis) -> Result<bool, Error> {
        if let Some(until) = u.reserve_until {
            let until = until.min(now.saturating_add(MAX_RESERVE));
            self.conn
                .prepare_cached(
                    "UPDATE jobs SET score = ?2, ts = ?2
                     WHERE jid = ?1 AND state = 2 AND score < ?2",
                )?
                .execute(params![u.jid, until])?;
        }
        let n = self
            .conn
            .prepare_cached(
                "UPDATE tracking SET percent = coalesce(?2, percent), descr = coalesce(?3, descr),
                 updated_at = ?4 WHERE jid = ?1",
            )?
            .execute(params![u.jid, u.percent, u.desc, now])?;
        Ok(n > 0)
    }

    // ---- throttles --------------------------------------------------------------------------

    /// Whether FETCH must treat `queue` as empty for `wid`: its throttle's limit is reached.
    pub(super) fn throttled(&self, queue: &str, wid: &str, now: Millis) -> Result<bool, Error> {
        let throttle = {
            let all = self.throttles.lock().unwrap_or_else(|p| p.into_inner());
            if all.is_empty() {
                return Ok(false);
            }
            all.iter().find(|t| t.queue == queue).cloned()
        };
        let Some(t) = throttle else { return Ok(false) };
        let since = t.slots_since(now);
        let held: i64 = if t.per_worker() {
            self.conn
                .prepare_cached(
                    "SELECT count(*) FROM jobs WHERE state = 2 AND state <> 1 AND queue = ?1
                     AND reserved_at > ?2 AND wid = ?3",
                )?
                .query_row(params![queue, since, wid], |r| r.get(0))?
        } else {
            self.conn
                .prepare_cached(
                    "SELECT count(*) FROM jobs WHERE state = 2 AND state <> 1 AND queue = ?1
                     AND reserved_at > ?2",
                )?
                .query_row(params![queue, since], |r| r.get(0))?
        };
        Ok(t.is_full(u64::try_from(held).unwrap_or(0)))
    }

    /// A job of `queue` stopped working: if the queue is throttled, waiting FETCHes may now
    /// get one.
    pub(super) fn wake_throttled(&self, queue: &str, ctx: &mut Batch) {
        let all = self.throttles.lock().unwrap_or_else(|p| p.into_inner());
        if all.iter().any(|t| t.queue == queue) {
            ctx.notify.push(queue.to_string());
        }
    }

    // ---- housekeeping -----------------------------------------------------------------------

    /// Drops uncommitted batches past their deadline, batches past their retention and
    /// tracking data of finished jobs past [`TRACK_RETENTION`]; at most `limit` of each.
    pub(super) fn sweep_ent(
        &mut self,
        now: Millis,
        limit: usize,
        ctx: &mut Batch,
    ) -> Result<(), Error> {
        let limit = limit as i64;
        // An uncommitted batch past its deadline never fires; a parent stops waiting for it.
        let expired: Vec<Option<String>> = self
            .conn
            .prepare_cached(
                "DELETE FROM batches WHERE bid IN (SELECT bid FROM batches
                 WHERE deadline IS NOT NULL AND deadline <= ?1 LIMIT ?2) RETURNING parent",
            )?
            .query_map(params![now, limit], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for parent in expired.into_iter().flatten() {
            self.conn
                .prepare_cached(
                    "UPDATE batches SET children = children - 1, updated_at = ?2 WHERE bid = ?1",
                )?
                .execute(params![parent, now])?;
            self.evaluate(&parent, now, ctx)?;
        }
        self.conn
            .prepare_cached(
                "DELETE FROM batches WHERE bid IN (SELECT bid FROM batches
                 WHERE (success_st = 2 AND updated_at <= ?1)
                    OR (success_st <> 2 AND updated_at <= ?2) LIMIT ?3)",
            )?
            .execute(params![
                now.saturating_sub(BATCH_RETENTION),
                now.saturating_sub(self.config.dead_retention),
                limit
            ])?;
        self.conn
            .prepare_cached(
                "DELETE FROM tracking WHERE jid IN (SELECT jid FROM tracking
                 WHERE final IS NOT NULL AND updated_at <= ?1 LIMIT ?2)",
            )?
            .execute(params![now.saturating_sub(TRACK_RETENTION), limit])?;
        Ok(())
    }
}
