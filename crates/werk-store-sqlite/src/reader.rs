//! Reads on a separate read-only connection; WAL lets them run beside the writer and see the
//! last commit.

use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};
use werk_core::time::local_days_back;
use werk_core::{JobState, Millis};
use werk_store::{DayStats, Reservation, StoredJob};

use crate::Error;

pub(crate) struct Reader {
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "jid, state, queue, jobtype, ts, reserved_at, wid, payload, score";

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
    pub fn new(conn: Connection) -> Reader {
        Reader {
            conn: Mutex::new(conn),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, jid: &str) -> Result<Option<StoredJob>, Error> {
        let conn = self.conn();
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
        let conn = self.conn();
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

    pub fn latency(&self, queues: &[String], now: Millis) -> Result<Vec<f64>, Error> {
        let conn = self.conn();
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

    pub fn cron_last_fired(&self, entries: &[String]) -> Result<Vec<Option<Millis>>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT tick FROM cron_fires WHERE entry = ?1")?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            out.push(stmt.query_row([e], |r| r.get(0)).optional()?);
        }
        Ok(out)
    }

    pub fn history(&self, days: u32, today: Millis) -> Result<Vec<DayStats>, Error> {
        let conn = self.conn();
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
