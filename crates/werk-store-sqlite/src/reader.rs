//! Reads on a small pool of read-only connections; WAL lets them run beside the writer and
//! each other. Every read is one read transaction, so a read of several statements (TRACK GET,
//! a page and its cursor) sees one commit.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};
use werk_core::time::local_days_back;
use werk_core::tracking::Ending;
use werk_core::{JobState, Millis};
use werk_store::{
    BatchStatus, CallbackState, Cursor, DayStats, Page, PageQuery, Reservation, StoredJob, Tracked,
};

use crate::Error;

/// Read connections: web UI scans, INFO's latencies and TRACK GET do not queue behind each
/// other (the two cores of a small server, plus slack for a slow scan).
pub(crate) const POOL: usize = 4;

pub(crate) struct Reader {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

/// A pooled connection inside a read transaction, ended when dropped.
pub(crate) struct ReadTxn<'a> {
    conn: MutexGuard<'a, Connection>,
}

impl Deref for ReadTxn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for ReadTxn<'_> {
    fn drop(&mut self) {
        // Ends the read transaction (a read-only one: nothing to lose); an error leaves the
        // connection in autocommit, which the next BEGIN needs.
        if !self.conn.is_autocommit() && self.conn.execute_batch("COMMIT").is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

const COLUMNS: &str = "jid, state, queue, jobtype, ts, reserved_at, wid, payload, score";

/// What [`batch_row`] reads from `batches`.
const BATCH_COLUMNS: &str = "bid, parent, description, created_at, committed, total, pending,
    failed, complete_job IS NOT NULL, success_job IS NOT NULL, complete_st, success_st,
    created_stamp";
/// Listed batches: committed, or still before their commit deadline (`?2` = now).
const BATCH_LIVE: &str = "(committed = 1 OR deadline IS NULL OR deadline > ?2)";

fn batch_row(r: &Row<'_>) -> rusqlite::Result<BatchStatus> {
    let st = |defined: bool, code: i64| match (defined, code) {
        (true, 1) => CallbackState::Enqueued,
        (true, 2) => CallbackState::Succeeded,
        _ => CallbackState::Pending,
    };
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(BatchStatus {
        bid: r.get(0)?,
        parent_bid: r.get(1)?,
        description: r.get(2)?,
        created_at: r.get(3)?,
        // Batches from before the column: their millisecond.
        created_stamp: r
            .get::<_, Option<String>>(12)?
            .unwrap_or_else(|| werk_core::time::format_millis(r.get(3).unwrap_or(0))),
        committed: r.get(4)?,
        total: n(r.get(5)?),
        pending: n(r.get(6)?),
        failed: n(r.get(7)?),
        complete_st: st(r.get(8)?, r.get(10)?),
        success_st: st(r.get(9)?, r.get(11)?),
    })
}

fn stored(r: &Row<'_>) -> rusqlite::Result<StoredJob> {
    let state = JobState::from_code(r.get(1)?).unwrap_or(JobState::Dead);
    let ts: i64 = r.get(4)?;
    let reserved_at: Option<i64> = r.get(5)?;
    let wid: Option<String> = r.get(6)?;
    Ok(StoredJob {
        jid: r.get(0)?,
        state,
        queue: r.get(2)?,
        jobtype: r.get(3)?,
        at: ts,
        reservation: match (state, reserved_at) {
            (JobState::Working, Some(reserved_at)) => Some(Reservation {
                reserved_at,
                expires_at: ts,
                wid: wid.unwrap_or_default(),
            }),
            _ => None,
        },
        payload: r.get(7)?,
    })
}

impl Reader {
    pub fn new(conns: Vec<Connection>) -> Reader {
        assert!(!conns.is_empty(), "at least one read connection");
        Reader {
            conns: conns.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A free connection (else waits for one, round robin) with a read transaction begun.
    fn conn(&self) -> Result<ReadTxn<'_>, Error> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        let free = (0..n).find_map(|i| self.conns[(start + i) % n].try_lock().ok());
        let conn = match free {
            Some(c) => c,
            None => self.conns[start % n]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        };
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(ReadTxn { conn })
    }

    pub fn get(&self, jid: &str) -> Result<Option<StoredJob>, Error> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE jid = ?1"))?;
        Ok(stmt.query_row([jid], stored).optional()?)
    }

    pub fn list(
        &self,
        state: JobState,
        queue: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<StoredJob>, Error> {
        let conn = self.conn()?;
        let (limit, offset) = (
            limit.min(i64::MAX as u64) as i64,
            offset.min(i64::MAX as u64) as i64,
        );
        let rows = match (state, queue) {
            (JobState::Enqueued, Some(q)) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM jobs WHERE state = 1 AND queue = ?1
                     ORDER BY score LIMIT ?2 OFFSET ?3"
                ))?;
                let rows = stmt.query_map(params![q, limit, offset], stored)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
            (JobState::Enqueued, None) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM jobs WHERE state = 1 ORDER BY queue, score LIMIT ?1 OFFSET ?2"
                ))?;
                let rows = stmt.query_map(params![limit, offset], stored)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
            (state, _) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM jobs WHERE state = ?1 AND state <> 1
                     ORDER BY score, id LIMIT ?2 OFFSET ?3"
                ))?;
                let rows = stmt.query_map(params![state.code(), limit, offset], stored)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        Ok(rows)
    }

    /// Keyset paging over one state (see [`werk_store::Store::page`]): the state's index is
    /// walked from the cursor on, so a page costs the same wherever it is.
    pub fn page(&self, q: &PageQuery) -> Result<Page, Error> {
        use rusqlite::types::Value;
        let mut cond = String::from("state = ?1");
        let mut args: Vec<Value> = vec![q.state.code().into()];
        if q.state != JobState::Enqueued {
            cond.push_str(" AND state <> 1");
        }
        let mut add = |clause: &str, v: Value, cond: &mut String| {
            args.push(v);
            cond.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        let f = &q.filter;
        if let Some(queue) = &f.queue {
            add(" AND queue = ?", queue.clone().into(), &mut cond);
        }
        if let Some(jobtype) = &f.jobtype {
            add(" AND jobtype = ?", jobtype.clone().into(), &mut cond);
        }
        if let Some(jid) = &f.jid {
            add(" AND jid = ?", jid.clone().into(), &mut cond);
        }
        if let Some(text) = f.text.as_ref().filter(|t| !t.is_empty()) {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            add(
                " AND payload LIKE ? ESCAPE '\\'",
                format!("%{escaped}%").into(),
                &mut cond,
            );
        }
        if let Some(after) = q.after {
            add(" AND (score, id) > (?", after.score.into(), &mut cond);
            add(", ?)", after.id.into(), &mut cond);
        }
        let limit = q.limit.min(10_000) as i64;
        // One row more than asked tells whether a next page exists.
        add(" ORDER BY score, id LIMIT ?", (limit + 1).into(), &mut cond);
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS}, id FROM jobs WHERE {cond}"))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            let cursor = Cursor {
                score: r.get(8)?,
                id: r.get(9)?,
            };
            Ok((cursor, stored(r)?))
        })?;
        let mut jobs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        let next = if jobs.len() as i64 > limit {
            jobs.truncate(limit as usize);
            jobs.last().map(|(c, _)| *c)
        } else {
            None
        };
        Ok(Page { jobs, next })
    }

    pub fn latency(&self, queues: &[String], now: Millis) -> Result<Vec<f64>, Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT ts FROM jobs WHERE state = 1 AND queue = ?1 ORDER BY score LIMIT 1",
        )?;
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            let ts: Option<i64> = stmt.query_row([q], |r| r.get(0)).optional()?;
            out.push(ts.map_or(0.0, |ts| ((now - ts).max(0)) as f64 / 1000.0));
        }
        Ok(out)
    }

    pub fn batch_status(&self, bid: &str, now: Millis) -> Result<Option<BatchStatus>, Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE bid = ?1 AND {BATCH_LIVE}"
        ))?;
        Ok(stmt.query_row(params![bid, now], batch_row).optional()?)
    }

    pub fn list_batches(
        &self,
        after: Option<(Millis, String)>,
        limit: u64,
        now: Millis,
    ) -> Result<Vec<BatchStatus>, Error> {
        let conn = self.conn()?;
        let limit = limit.min(10_000) as i64;
        let rows = match after {
            None => conn
                .prepare_cached(&format!(
                    "SELECT {BATCH_COLUMNS} FROM batches WHERE {BATCH_LIVE}
                     ORDER BY created_at DESC, bid DESC LIMIT ?1"
                ))?
                .query_map(params![limit, now], batch_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            Some((t, bid)) => conn
                .prepare_cached(&format!(
                    "SELECT {BATCH_COLUMNS} FROM batches WHERE {BATCH_LIVE}
                     AND (created_at, bid) < (?3, ?4)
                     ORDER BY created_at DESC, bid DESC LIMIT ?1"
                ))?
                .query_map(params![limit, now, t, bid], batch_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?,
        };
        Ok(rows)
    }

    pub fn track_get(&self, jid: &str, now: Millis) -> Result<Option<Tracked>, Error> {
        let conn = self.conn()?;
        type Row = (Option<i64>, Option<String>, Millis, Option<String>);
        let row: Option<Row> = conn
            .prepare_cached(
                "SELECT percent, descr, updated_at, final FROM tracking WHERE jid = ?1",
            )?
            .query_row([jid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let Some((percent, desc, updated_at, last)) = row else {
            return Ok(None);
        };
        let code: Option<i64> = conn
            .prepare_cached("SELECT state FROM jobs WHERE jid = ?1")?
            .query_row([jid], |r| r.get(0))
            .optional()?;
        let ended = match last.as_deref() {
            Some("success") => Some(Ending::Success),
            Some("failed") => Some(Ending::Failed),
            _ => None,
        };
        let job = code.and_then(JobState::from_code);
        let Some(state) = werk_core::tracking::state(job, ended, updated_at, now) else {
            return Ok(None);
        };
        Ok(Some(Tracked {
            jid: jid.to_string(),
            state,
            percent: percent.and_then(|p| u8::try_from(p).ok()),
            desc,
            updated_at,
        }))
    }

    pub fn cron_last_fired(&self, entries: &[String]) -> Result<Vec<Option<Millis>>, Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT tick FROM cron_fires WHERE entry = ?1")?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            out.push(stmt.query_row([e], |r| r.get(0)).optional()?);
        }
        Ok(out)
    }

    pub fn history(&self, days: u32, today: Millis) -> Result<Vec<DayStats>, Error> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT processed, failures FROM history WHERE day = ?1")?;
        let mut out = Vec::with_capacity(days as usize);
        for day in local_days_back(today, days) {
            let (p, f): (i64, i64) = stmt
                .query_row([&day], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((0, 0));
            out.push(DayStats {
                day,
                processed: p.max(0) as u64,
                failures: f.max(0) as u64,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use rusqlite::{Connection, OpenFlags};

    use super::Reader;

    fn count(c: &Connection) -> i64 {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_read_sees_one_commit_and_reads_do_not_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let w = Connection::open(&path).unwrap();
        w.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        let ro = || Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let reader = Arc::new(Reader::new(vec![ro(), ro()]));
        let first = reader.conn().unwrap();
        assert_eq!(count(&first), 1);
        w.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_eq!(count(&first), 1, "one read sees one commit");
        // A second read while the first is open gets a connection of its own (and the new
        // commit) instead of waiting for the first.
        let (tx, rx) = mpsc::channel();
        let r = reader.clone();
        std::thread::spawn(move || {
            let second = r.conn().unwrap();
            let _ = tx.send(count(&second));
        });
        let seen = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a second read waited for the first");
        assert_eq!(seen, 2);
        drop(first);
        assert_eq!(count(&reader.conn().unwrap()), 2);
    }
}
