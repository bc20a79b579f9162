//! Per-node batching of FETCHes (issue 12: "batched FETCH for waiting connections").
//!
//! A FETCH of queues none of which is throttled is queued to this node's FETCH lanes (the
//! `lanes` module). A lane applies what it took, grouped by the list of queues asked for (in
//! the order the requests came): for a group of *k* requests it tries each queue in order with
//! **one statement** that locks up to *k* heads (`ORDER BY score LIMIT k FOR UPDATE SKIP
//! LOCKED`), reserves them for the requests in order (the oldest job to the request taken
//! first, each with its own worker id) and commits on its own; the requests that got nothing
//! move on to the next queue.
//!
//! Why: FETCHes racing on one queue each lock the head they find and skip the heads the others
//! locked, so *k* concurrent single FETCHes scan O(k²) rows between them and pay *k* round
//! trips and commits. One statement for all of them scans *k* rows, once.
//!
//! The rarer cases leave the batch: a request whose queue's head had expired is applied alone
//! by the transaction that drops expired heads (`PgStore::fetch_in_tx`); a reserved job whose
//! payload does not parse is quarantined and its request tries again alone. Every request is
//! answered after the commit that reserved its job. A reservation whose request is no longer
//! awaited (its connection's task ended meanwhile) is given back at its old place in the queue.

use std::sync::Arc;

use tokio::sync::oneshot;
use werk_core::Millis;
use werk_store::{StoreError, StoredJob};

use crate::lanes::{Lanes, Weighed};
use crate::{pg, reserved_job, PgStore, Result, Row};

/// Lanes per node: batched FETCH statements in flight at once. One: two lanes of one node
/// skip each other's locked heads; measured (mixed, 100 connections, one node, three rounds
/// alternating) one lane did 3,802 jobs/s median with PostgreSQL at 245 CPU ms per 1,000 jobs,
/// two lanes 3,585 and 280.
pub const FETCH_LANES: usize = 1;

/// The most FETCHes one batch serves.
pub const FETCH_BATCH_MAX: usize = 64;

type Answer = Result<Option<StoredJob>>;

/// One queued FETCH.
pub(crate) struct Pending {
    queues: Vec<String>,
    wid: String,
    now: Millis,
    reply: oneshot::Sender<Answer>,
}

impl Weighed for Pending {}

/// The statement reserving up to `$5` heads of queue `$1` at `$2` for the worker ids `$4` in
/// order (`$3`: the default reservation, for jobs stored without `reserve_ms`). One row per
/// locked head: its id and old score, and, when it was reserved (not expired), the job and
/// the 1-based index of the request it went to.
const RESERVE_HEADS: &str = "
WITH head AS (
    SELECT id, expires, score FROM jobs
    WHERE state = 1 AND queue = $1
      AND NOT EXISTS (SELECT 1 FROM queues WHERE name = $1 AND paused)
    ORDER BY score LIMIT $5
    FOR UPDATE OF jobs SKIP LOCKED),
live AS (
    SELECT id, row_number() OVER (ORDER BY score) AS n FROM head
    WHERE expires IS NULL OR expires > $2),
who AS (
    SELECT w.wid, w.n FROM unnest($4::text[]) WITH ORDINALITY AS w(wid, n)),
reserved AS (
    UPDATE jobs j SET state = 2,
        score = $2 + COALESCE(j.reserve_ms, $3),
        ts = $2 + COALESCE(j.reserve_ms, $3),
        reserved_at = $2, wid = who.wid
    FROM live JOIN who ON who.n = live.n
    WHERE j.id = live.id
    RETURNING j.id, j.jid, j.jobtype, j.payload, j.score, j.uniq, j.track, who.n),
unlocked AS (
    DELETE FROM unique_locks l USING reserved r
    WHERE r.uniq LIKE 'start:%' AND l.key = substr(r.uniq, 7) AND l.jid = r.jid),
started AS (
    UPDATE tracking t SET updated_at = $2, final = NULL
    FROM reserved r WHERE r.track AND t.jid = r.jid)
SELECT head.id, head.score, r.jid, r.jobtype, r.payload, r.score, r.n
FROM head LEFT JOIN reserved r ON r.id = head.id";

impl PgStore {
    /// Starts this store's FETCH lanes (once, from [`PgStore::connect`]).
    pub(crate) fn start_fetch_lanes(&mut self) {
        let store = Arc::new(self.lane_handle());
        self.fetches = Lanes::start(FETCH_LANES, FETCH_BATCH_MAX, "FETCH", move |batch| {
            let store = store.clone();
            async move { store.fetch_batch(batch).await }
        });
    }

    /// For tests: FETCHes queued that no lane has taken yet.
    #[doc(hidden)]
    pub async fn queued_fetches(&self) -> usize {
        self.fetches.queued().await
    }

    /// A FETCH of unthrottled queues: through this node's FETCH lanes.
    pub(crate) async fn fetch_batched(
        &self,
        queues: Vec<String>,
        wid: String,
        now: Millis,
    ) -> Answer {
        if !self.fetches.running() {
            let mut client = self.client().await?;
            return self.fetch_one(&mut client, &queues, wid, now).await;
        }
        self.fetches
            .ask("FETCH", |reply| Pending {
                queues,
                wid,
                now,
                reply,
            })
            .await
    }

    /// Applies one batch taken by a lane and answers each of its requests.
    async fn fetch_batch(&self, batch: Vec<Pending>) {
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        // Groups by the queues asked for, in the order the requests came.
        let mut groups: Vec<(Vec<String>, Vec<Pending>)> = Vec::new();
        for p in batch {
            match groups.iter_mut().find(|(q, _)| *q == p.queues) {
                Some((_, g)) => g.push(p),
                None => groups.push((p.queues.clone(), vec![p])),
            }
        }
        for (queues, group) in groups {
            if group.len() == 1 {
                for p in group {
                    let answer = self.fetch_one(&mut client, &p.queues, p.wid, p.now).await;
                    self.answer(&client, p.reply, answer).await;
                }
                continue;
            }
            if let Err(e) = self.fetch_group(&mut client, &queues, group).await {
                // The connection failed: the group's requests were answered with the error.
                tracing::debug!(error = %e, "a batched FETCH failed");
            }
        }
    }

    /// Serves a group of requests for the same queues (see the module documentation).
    async fn fetch_group(
        &self,
        client: &mut deadpool_postgres::Object,
        queues: &[String],
        group: Vec<Pending>,
    ) -> Result<()> {
        let now = group.iter().map(|p| p.now).max().unwrap_or_default();
        let default_ms = self.reservation_ms(0);
        let mut waiting: Vec<Pending> = group;
        // Requests whose queue's head had expired, with the queue they got to.
        let mut alone: Vec<(usize, Pending)> = Vec::new();
        for (qi, name) in queues.iter().enumerate() {
            if waiting.is_empty() {
                break;
            }
            let stmt = match client.prepare_cached(RESERVE_HEADS).await {
                Ok(s) => s,
                Err(e) => return self.fail_all(waiting, alone, pg(e)),
            };
            let wids: Vec<&str> = waiting.iter().map(|p| p.wid.as_str()).collect();
            let k = waiting.len() as i64;
            let rows = match client
                .query(&stmt, &[name, &now, &default_ms, &wids, &k])
                .await
            {
                Ok(rows) => rows,
                Err(e) => return self.fail_all(waiting, alone, pg(e)),
            };
            let mut got: Vec<Option<Answer>> = (0..waiting.len()).map(|_| None).collect();
            let mut expired = false;
            for r in &rows {
                let Some(jid) = r.get::<_, Option<String>>(2) else {
                    expired = true;
                    continue;
                };
                let id: i64 = r.get(0);
                let n: i64 = r.get(6);
                let slot = (n - 1) as usize;
                let payload: String = r.get(4);
                let request = &waiting[slot];
                let row = Row {
                    id,
                    queue: name.clone(),
                    payload: payload.clone(),
                };
                // Errors from here on leave this statement's reservations to be delivered.
                let job = match self.parse_reserved(client, row, now).await {
                    Ok(Some(job)) => job,
                    Ok(None) | Err(_) => {
                        // Quarantined (or the quarantine failed: the reaper brings it back).
                        // Leaves `got[slot]` empty: the request tries again, alone.
                        expired = true;
                        continue;
                    }
                };
                let until = self
                    .correct_reservation(client, id, r.get(5), now, &request.wid, &job)
                    .await;
                got[slot] = Some(Ok(Some(reserved_job(
                    jid,
                    name,
                    r.get(3),
                    payload,
                    (now, until),
                    &request.wid,
                ))));
            }
            let mut still = Vec::new();
            for (p, answer) in waiting.into_iter().zip(got) {
                match answer {
                    Some(answer) => {
                        let given_back = answer
                            .as_ref()
                            .ok()
                            .and_then(|j| j.as_ref())
                            .map(|j| j.jid.clone());
                        if p.reply.send(answer).is_err() {
                            if let Some(jid) = given_back {
                                self.give_back(client, &rows, &jid, now).await;
                            }
                        }
                    }
                    None if expired => alone.push((qi, p)),
                    None => still.push(p),
                }
            }
            waiting = still;
        }
        for p in waiting {
            let _ = p.reply.send(Ok(None));
        }
        for (qi, p) in alone {
            let answer = self.fetch_one(client, &queues[qi..], p.wid, p.now).await;
            self.answer(client, p.reply, answer).await;
        }
        Ok(())
    }

    /// Every request not answered yet gets `e`.
    fn fail_all(
        &self,
        waiting: Vec<Pending>,
        alone: Vec<(usize, Pending)>,
        e: StoreError,
    ) -> Result<()> {
        for p in waiting.into_iter().chain(alone.into_iter().map(|(_, p)| p)) {
            let _ = p.reply.send(Err(e.clone()));
        }
        Err(e)
    }

    /// Sends a single FETCH's answer; a job nobody awaits any more is given back.
    async fn answer(
        &self,
        client: &deadpool_postgres::Object,
        reply: oneshot::Sender<Answer>,
        answer: Answer,
    ) {
        if let Err(Ok(Some(job))) = reply.send(answer) {
            let stmt = "UPDATE jobs SET state = 1, score = nextval('werk_enqueue_seq'),
                        ts = $2, reserved_at = NULL, wid = NULL
                        WHERE jid = $1 AND state = 2";
            let at = job.reservation.map_or(0, |r| r.reserved_at);
            if let Err(e) = client.execute(stmt, &[&job.jid, &at]).await {
                tracing::warn!(jid = %job.jid, error = %pg(e), "a reserved job nobody awaits could not be given back; the reaper will");
            }
        }
    }

    /// Puts a job reserved by a batch back at its old place (`rows`: the batch's heads with
    /// their old scores) when its request is no longer awaited.
    async fn give_back(
        &self,
        client: &deadpool_postgres::Object,
        rows: &[tokio_postgres::Row],
        jid: &str,
        now: Millis,
    ) {
        let Some(r) = rows
            .iter()
            .find(|r| r.get::<_, Option<&str>>(2) == Some(jid))
        else {
            return;
        };
        let (id, score): (i64, i64) = (r.get(0), r.get(1));
        let stmt = "UPDATE jobs SET state = 1, score = $2, ts = $3, reserved_at = NULL, wid = NULL
                    WHERE id = $1 AND state = 2 AND reserved_at = $3";
        if let Err(e) = client.execute(stmt, &[&id, &score, &now]).await {
            tracing::warn!(%jid, error = %pg(e), "a reserved job nobody awaits could not be given back; the reaper will");
        }
    }
}
