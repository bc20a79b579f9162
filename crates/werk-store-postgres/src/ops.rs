//! The remaining job and queue operations of [`PgStore`], with exactly the semantics of the
//! matching [`werk_store::Store`] methods (their doc comments are the specification): the sweeps
//! (`sweep_expired`, `purge_dead`), MUTATE, the QUEUE commands, FLUSH, the reads behind INFO and
//! the dashboard (`history`, `list`, `page`, `queue_latency`), `delete_jobs` and `close`.
//!
//! Each change is one transaction and returns after its COMMIT. The sweeps claim rows with
//! `FOR UPDATE SKIP LOCKED`, so every node may run them at once. Removing a job forgets its
//! tracking data in the same statement (as the embedded store does); a batch member removed
//! otherwise than by ACK, FAIL or expiry stays pending (the `Store` contract), so only the
//! sweep of expired jobs has batch accounting to do (see [`PgStore::sweep_expired`]).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use werk_core::glob::redis_match;
use werk_core::time::local_days_back;
use werk_core::{JobState, Millis};
use werk_store::{
    Cursor, DayStats, JobFilter, MutateOp, Mutation, Page, PageQuery, QueueSelector, StoredJob,
};

use crate::{code, commit, pg, stored, PgStore, Result, Row, STORED};

/// Rows MUTATE reads (and locks) at a time when it must look at each job in Rust (a glob filter,
/// or a requeue that rewrites `enqueued_at`): memory stays bounded however large the set is.
const CHUNK: i64 = 500;

/// The most rows one `page` returns.
const MAX_PAGE: u64 = 10_000;

/// How long [`PgStore::close`] waits for requests in flight to finish.
const CLOSE_WAIT: Duration = Duration::from_secs(60);

fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn sql_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `DELETE FROM jobs WHERE <cond>`, forgetting the removed jobs' tracking data in the same
/// statement; selects how many jobs were removed. `cond` may use the parameters `$first..`.
fn delete_counted(cond: &str) -> String {
    format!(
        "WITH d AS (DELETE FROM jobs WHERE {cond} RETURNING jid, track),
              t AS (DELETE FROM tracking WHERE jid IN (SELECT jid FROM d WHERE track))
         SELECT count(*) FROM d"
    )
}

impl PgStore {
    /// [`werk_store::Store::sweep_expired`]: enqueued jobs whose expiry is ≤ now → gone (at most
    /// `limit`, counted in `expired`; a batch member counts as failed and tracking data is
    /// forgotten, as at FETCH), unique locks past their time dropped, and the batch and tracking
    /// housekeeping of `sweep_ent` (at most `limit` of each). Rows another node is sweeping or
    /// moving are skipped.
    pub async fn sweep_expired(&self, now: Millis, limit: usize) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut woken = BTreeSet::new();
        let stmt = tx
            .prepare_cached(
                "WITH c AS (SELECT id FROM jobs
                            WHERE expires IS NOT NULL AND expires <= $1 AND state = 1
                            ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED)
                 DELETE FROM jobs j USING c WHERE j.id = c.id AND j.state = 1
                 RETURNING j.jid, j.batch, j.track",
            )
            .await
            .map_err(pg)?;
        let gone = tx
            .query(&stmt, &[&now, &sql_limit(limit)])
            .await
            .map_err(pg)?;
        for r in &gone {
            let jid: String = r.get(0);
            let batch: Option<String> = r.get(1);
            self.job_expired(&tx, &jid, batch.as_deref(), r.get(2), now, &mut woken)
                .await?;
        }
        let n = gone.len() as i64;
        if n > 0 {
            Self::add_counter(&tx, "expired", n).await?;
        }
        // Unique-job locks past their time (no longer held). A lock a push is renewing is
        // skipped, and one renewed meanwhile fails the re-check of `until`.
        let stmt = tx
            .prepare_cached(
                "DELETE FROM unique_locks WHERE until <= $1 AND key IN
                 (SELECT key FROM unique_locks WHERE until <= $1 ORDER BY until LIMIT $2
                  FOR UPDATE SKIP LOCKED)",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&now, &sql_limit(limit)])
            .await
            .map_err(pg)?;
        self.sweep_ent(&tx, now, limit, &mut woken).await?;
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(gone.len())
    }

    /// [`werk_store::Store::purge_dead`]: dead jobs with `dead_until` ≤ now → gone, oldest first,
    /// at most `limit`, their tracking data forgotten. Rows another node is purging are skipped.
    pub async fn purge_dead(&self, now: Millis, limit: usize) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let stmt = tx
            .prepare_cached(
                "WITH c AS (SELECT id FROM jobs WHERE state = 4 AND score <= $1
                            ORDER BY score, id LIMIT $2 FOR UPDATE SKIP LOCKED),
                      d AS (DELETE FROM jobs j USING c WHERE j.id = c.id AND j.state = 4
                            RETURNING j.jid, j.track),
                      t AS (DELETE FROM tracking WHERE jid IN (SELECT jid FROM d WHERE track))
                 SELECT count(*) FROM d",
            )
            .await
            .map_err(pg)?;
        let n: i64 = tx
            .query_one(&stmt, &[&now, &sql_limit(limit)])
            .await
            .map_err(pg)?
            .get(0);
        // Counter and history rows of backends that are gone (see "Counters and history" in
        // the crate documentation) fold into shard 0. A live backend's row is never touched; a
        // pid reused meanwhile waits for this transaction and then inserts a fresh row.
        let fold = tx
            .prepare_cached(
                "WITH c AS (DELETE FROM counters c WHERE shard <> 0 AND NOT EXISTS
                                (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.shard)
                            RETURNING name, value),
                      ci AS (INSERT INTO counters (name, shard, value)
                             SELECT name, 0, sum(value) FROM c GROUP BY name
                             ON CONFLICT (name, shard)
                             DO UPDATE SET value = counters.value + excluded.value),
                      h AS (DELETE FROM history h WHERE shard <> 0 AND NOT EXISTS
                                (SELECT 1 FROM pg_stat_activity a WHERE a.pid = h.shard)
                            RETURNING day, processed, failures)
                 INSERT INTO history (day, shard, processed, failures)
                 SELECT day, 0, sum(processed), sum(failures) FROM h GROUP BY day
                 ON CONFLICT (day, shard) DO UPDATE
                 SET processed = history.processed + excluded.processed,
                     failures = history.failures + excluded.failures",
            )
            .await
            .map_err(pg)?;
        tx.execute(&fold, &[]).await.map_err(pg)?;
        commit(tx).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// [`werk_store::Store::mutate`]: MUTATE on the scheduled, retry or dead set.
    ///
    /// Jids and jobtype are matched in SQL; a glob (`regexp`) is matched in Rust with
    /// [`redis_match`] against the stored JSON, over the set's rows in chunks of `CHUNK`
    /// (PostgreSQL has no such function). Rows are locked (waiting for another node's move, then
    /// re-checked), so a job that left the set meanwhile is not touched. A kill or delete keeps
    /// the job's unique lock (it runs out); removed jobs' tracking data is forgotten.
    pub async fn mutate(&self, m: Mutation, now: Millis) -> Result<u64> {
        let target = m.target;
        if !matches!(
            target,
            JobState::Scheduled | JobState::Retry | JobState::Dead
        ) || (m.op == MutateOp::Kill && target == JobState::Dead)
        {
            return Ok(0);
        }
        let filter = match (m.op, &m.filter) {
            (MutateOp::Clear, _) | (MutateOp::Discard, None) => None,
            (_, f) => f.as_ref(),
        };
        // The filter: jids win over everything else; then jobtype (SQL) and glob (Rust).
        let mut jids: Option<Vec<String>> = None;
        let mut jobtype: Option<String> = None;
        let mut glob: Option<Vec<u8>> = None;
        if let Some(f) = filter {
            if !f.jids.is_empty() {
                jids = Some(f.jids.clone());
            } else {
                jobtype = f.jobtype.clone().filter(|j| !j.is_empty());
                glob = f
                    .regexp
                    .as_ref()
                    .filter(|g| !g.is_empty())
                    .map(|g| g.as_bytes().to_vec());
            }
        }
        // The state is a literal so that the planner matches its partial index.
        let mut cond = format!("state = {}", code(target));
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(jids) = &jids {
            params.push(jids);
            cond.push_str(&format!(" AND jid = ANY(${})", params.len()));
        }
        if let Some(jobtype) = &jobtype {
            params.push(jobtype);
            cond.push_str(&format!(" AND jobtype = ${}", params.len()));
        }
        let until = now.saturating_add(self.config.dead_retention);

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut woken = BTreeSet::new();
        let affected: u64 = match (m.op, &glob) {
            // Set-based: nothing to look at in Rust.
            (MutateOp::Clear | MutateOp::Discard, None) => {
                let n: i64 = tx
                    .query_one(&delete_counted(&cond), &params)
                    .await
                    .map_err(pg)?
                    .get(0);
                u64::try_from(n).unwrap_or(0)
            }
            (MutateOp::Kill, None) => {
                let mut p = params.clone();
                p.push(&until);
                let sql = format!(
                    "UPDATE jobs SET state = 4, score = ${n}, ts = ${n}, reserved_at = NULL,
                     wid = NULL WHERE {cond}",
                    n = p.len()
                );
                tx.execute(&sql, &p).await.map_err(pg)?
            }
            // Chunked: each job is looked at (glob) or rewritten (requeue).
            (op, glob) => {
                let n = params.len();
                let select = tx
                    .prepare(&format!(
                        "SELECT id, queue, payload, score FROM jobs
                         WHERE {cond} AND (score, id) > (${}, ${})
                         ORDER BY score, id LIMIT {CHUNK} FOR UPDATE",
                        n + 1,
                        n + 2
                    ))
                    .await
                    .map_err(pg)?;
                let mut after = (i64::MIN, i64::MIN);
                let mut affected = 0u64;
                loop {
                    let (score, id) = after;
                    let mut p = params.clone();
                    p.push(&score);
                    p.push(&id);
                    let rows = tx.query(&select, &p).await.map_err(pg)?;
                    let full = rows.len() as i64 >= CHUNK;
                    let mut hit: Vec<Row> = Vec::new();
                    for r in &rows {
                        let key = (r.get::<_, i64>(3), r.get::<_, i64>(0));
                        after = after.max(key);
                        let payload: String = r.get(2);
                        if glob
                            .as_ref()
                            .is_none_or(|g| redis_match(g, payload.as_bytes()))
                        {
                            hit.push(Row {
                                id: r.get(0),
                                queue: r.get(1),
                                payload,
                            });
                        }
                    }
                    if !hit.is_empty() {
                        let ids: Vec<i64> = hit.iter().map(|r| r.id).collect();
                        affected += match op {
                            MutateOp::Clear | MutateOp::Discard => {
                                let n: i64 = tx
                                    .query_one(&delete_counted("id = ANY($1)"), &[&ids])
                                    .await
                                    .map_err(pg)?
                                    .get(0);
                                u64::try_from(n).unwrap_or(0)
                            }
                            MutateOp::Kill => tx
                                .execute(
                                    "UPDATE jobs SET state = 4, score = $2, ts = $2,
                                     reserved_at = NULL, wid = NULL WHERE id = ANY($1)",
                                    &[&ids, &until],
                                )
                                .await
                                .map_err(pg)?,
                            MutateOp::Requeue => {
                                let mut moved = 0;
                                for row in &hit {
                                    if self.enqueue_row(&tx, row, target, now).await? {
                                        woken.insert(row.queue.clone());
                                        moved += 1;
                                    }
                                }
                                moved
                            }
                        };
                    }
                    if !full {
                        break;
                    }
                }
                affected
            }
        };
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(affected)
    }

    /// [`werk_store::Store::set_paused`]: QUEUE PAUSE / RESUME of known queues (unknown ones are
    /// ignored). Resumed queues are announced to the listener, so blocked FETCHes look again.
    pub async fn set_paused(&self, queues: QueueSelector, paused: bool) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Rows are locked in name order, so concurrent QUEUE commands never deadlock.
        let rows = match &queues {
            QueueSelector::All => tx
                .query(
                    "UPDATE queues SET paused = $1 WHERE name IN
                     (SELECT name FROM queues ORDER BY name FOR UPDATE) RETURNING name",
                    &[&paused],
                )
                .await
                .map_err(pg)?,
            QueueSelector::Names(names) => tx
                .query(
                    "UPDATE queues SET paused = $1 WHERE name IN
                     (SELECT name FROM queues WHERE name = ANY($2) ORDER BY name FOR UPDATE)
                     RETURNING name",
                    &[&paused, names],
                )
                .await
                .map_err(pg)?,
        };
        commit(tx).await?;
        if !paused {
            for r in &rows {
                self.listener.enqueued(r.get(0));
            }
        }
        Ok(())
    }

    /// [`werk_store::Store::remove_queues`]: QUEUE REMOVE. The queues' enqueued jobs → gone
    /// (their tracking data forgotten, their unique locks kept until they run out) and the
    /// queues forgotten (with their paused flags). Returns how many jobs were removed.
    pub async fn remove_queues(&self, queues: QueueSelector) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let (which, names): (&str, Option<&Vec<String>>) = match &queues {
            QueueSelector::All => ("TRUE", None),
            QueueSelector::Names(names) => ("name = ANY($1)", Some(names)),
        };
        let sql = format!(
            "WITH q AS (DELETE FROM queues WHERE name IN
                        (SELECT name FROM queues WHERE {which} ORDER BY name FOR UPDATE)
                        RETURNING name),
                  d AS (DELETE FROM jobs WHERE state = 1 AND queue IN (SELECT name FROM q)
                        RETURNING jid, track),
                  t AS (DELETE FROM tracking WHERE jid IN (SELECT jid FROM d WHERE track))
             SELECT count(*) FROM d"
        );
        let row = match names {
            Some(names) => tx.query_one(&sql, &[names]).await,
            None => tx.query_one(&sql, &[]).await,
        }
        .map_err(pg)?;
        let n: i64 = row.get(0);
        commit(tx).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// [`werk_store::Store::queue_latency`]: for each queue, in the order asked, seconds since
    /// the enqueue time of its next job; 0 for an empty or unknown queue. One statement.
    pub async fn queue_latency(&self, queues: Vec<String>, now: Millis) -> Result<Vec<f64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT (SELECT ts FROM jobs WHERE state = 1 AND queue = u.q ORDER BY score LIMIT 1)
                 FROM unnest($1::text[]) WITH ORDINALITY AS u(q, i) ORDER BY u.i",
            )
            .await
            .map_err(pg)?;
        let rows = client.query(&stmt, &[&queues]).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                r.get::<_, Option<i64>>(0)
                    .map_or(0.0, |ts| (now - ts).max(0) as f64 / 1000.0)
            })
            .collect())
    }

    /// [`werk_store::Store::flush`]: every job, queue, paused flag, counter, day of history,
    /// unique lock, batch and tracking row → gone, in one transaction. Cron fire records stay
    /// (they describe the configuration). The enqueue sequence is not reset (only order matters).
    pub async fn flush(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(
            "DELETE FROM jobs; DELETE FROM queues; DELETE FROM counters; DELETE FROM history;
             DELETE FROM unique_locks; DELETE FROM batches; DELETE FROM tracking;",
        )
        .await
        .map_err(pg)?;
        commit(tx).await
    }

    /// [`werk_store::Store::history`]: processed / failed per day for the `days` days up to and
    /// including `today`'s (local time), oldest first, days without activity as zeros; the
    /// shards of each day summed.
    pub async fn history(&self, days: u32, today: Millis) -> Result<Vec<DayStats>> {
        let days = local_days_back(today, days);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT day, sum(processed)::bigint, sum(failures)::bigint FROM history
                 WHERE day = ANY($1) GROUP BY day",
            )
            .await
            .map_err(pg)?;
        let rows = client.query(&stmt, &[&days]).await.map_err(pg)?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let found: std::collections::HashMap<String, (i64, i64)> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        Ok(days
            .into_iter()
            .map(|day| {
                let (p, f) = found.get(&day).copied().unwrap_or((0, 0));
                DayStats {
                    day,
                    processed: n(p),
                    failures: n(f),
                }
            })
            .collect())
    }

    /// [`werk_store::Store::list`]: `limit` jobs of one state from `offset` on, in the state's
    /// order: enqueued by the enqueue sequence (one queue, or all of them), the sets by their
    /// time, ties by row id.
    pub async fn list(
        &self,
        state: JobState,
        queue: Option<String>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<StoredJob>> {
        let (offset, limit) = (sql_u64(offset), sql_u64(limit));
        let client = self.client().await?;
        let rows = match (state, &queue) {
            (JobState::Enqueued, Some(q)) => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {STORED} FROM jobs WHERE state = 1 AND queue = $1
                         ORDER BY score, id LIMIT $2 OFFSET $3"
                    ))
                    .await
                    .map_err(pg)?;
                client.query(&stmt, &[q, &limit, &offset]).await
            }
            (state, _) => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {STORED} FROM jobs WHERE state = {}
                         ORDER BY score, id LIMIT $1 OFFSET $2",
                        code(state)
                    ))
                    .await
                    .map_err(pg)?;
                client.query(&stmt, &[&limit, &offset]).await
            }
        }
        .map_err(pg)?;
        Ok(rows.iter().map(stored).collect())
    }

    /// [`werk_store::Store::page`]: keyset paging over one state's jobs matching the filter, in
    /// `(score, id)` order after the cursor (enqueued: the global enqueue sequence; the sets:
    /// their time). `text` is an ASCII-case-insensitive substring of the stored JSON (`lower`
    /// under the `C` collation folds ASCII letters only). At most 10 000 jobs a page; `next` only
    /// when another matching job follows.
    pub async fn page(&self, q: PageQuery) -> Result<Page> {
        let JobFilter {
            queue,
            jobtype,
            jid,
            text,
        } = q.filter;
        let text = text
            .filter(|t| !t.is_empty())
            .map(|t| t.to_ascii_lowercase());
        let limit = q.limit.min(MAX_PAGE);
        let fetch = sql_u64(limit + 1);
        let mut cond = format!("state = {}", code(q.state));
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(queue) = &queue {
            params.push(queue);
            cond.push_str(&format!(" AND queue = ${}", params.len()));
        }
        if let Some(jobtype) = &jobtype {
            params.push(jobtype);
            cond.push_str(&format!(" AND jobtype = ${}", params.len()));
        }
        if let Some(jid) = &jid {
            params.push(jid);
            cond.push_str(&format!(" AND jid = ${}", params.len()));
        }
        if let Some(text) = &text {
            params.push(text);
            cond.push_str(&format!(
                " AND strpos(lower(payload COLLATE \"C\"), ${}) > 0",
                params.len()
            ));
        }
        let after = q.after.map(|c| (c.score, c.id));
        if let Some((score, id)) = &after {
            params.push(score);
            params.push(id);
            cond.push_str(&format!(
                " AND (score, id) > (${}, ${})",
                params.len() - 1,
                params.len()
            ));
        }
        params.push(&fetch);
        let sql = format!(
            "SELECT {STORED}, score, id FROM jobs WHERE {cond} ORDER BY score, id LIMIT ${}",
            params.len()
        );
        let client = self.client().await?;
        let rows = client.query(&sql, &params).await.map_err(pg)?;
        let mut jobs: Vec<(Cursor, StoredJob)> = rows
            .iter()
            .map(|r| {
                let cursor = Cursor {
                    score: r.get(8),
                    id: r.get(9),
                };
                (cursor, stored(r))
            })
            .collect();
        let more = jobs.len() as u64 > limit;
        jobs.truncate(limit as usize);
        let next = if more {
            jobs.last().map(|(c, _)| *c)
        } else {
            None
        };
        Ok(Page { jobs, next })
    }

    /// [`werk_store::Store::delete_jobs`]: the jobs with these jids that are in `state` → gone
    /// (never working ones), their tracking data forgotten, unique locks and batch counts kept.
    pub async fn delete_jobs(&self, state: JobState, jids: Vec<String>) -> Result<u64> {
        if state == JobState::Working || jids.is_empty() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let sql = delete_counted(&format!("state = {} AND jid = ANY($1)", code(state)));
        let n: i64 = tx.query_one(&sql, &[&jids]).await.map_err(pg)?.get(0);
        commit(tx).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// [`werk_store::Store::close`]: takes no new requests (they fail with
    /// [`werk_store::StoreError::Closed`]) and waits until the requests in flight have finished
    /// (each holds its connection until after its COMMIT), at most a minute.
    pub async fn close(&self) {
        self.pool.close();
        let start = std::time::Instant::now();
        while self.pool.status().size > 0 {
            if start.elapsed() > CLOSE_WAIT {
                tracing::warn!(
                    in_flight = self.pool.status().size,
                    "closing the store: requests still in flight after {CLOSE_WAIT:?}"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
