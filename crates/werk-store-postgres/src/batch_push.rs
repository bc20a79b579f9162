//! Per-node batching of PUSHes (issue 12: "concurrent requests share round trips and commits").
//!
//! A PUSH whose jobs are all plain (no batch membership, no unique lock, no tracking: the
//! crate's `plain`) is queued to this node's PUSH lanes (the `lanes` module), like an ACK. A
//! lane applies what it took — at most [`PUSH_BATCH_MAX`] jobs, a larger PUSHB alone — with
//! **one statement**, `PgStore::insert_plain`: every job of every request in one
//! `INSERT … SELECT FROM unnest(…)` that commits on its own, so concurrent PUSHes share one
//! round trip, one executor start and one WAL flush. Each request's jobs keep their order;
//! requests of one batch are concurrent, so their relative order is the order they were taken.
//!
//! A jid taken before (or by an earlier job of the batch) is not inserted; its request answers
//! it afterwards in a transaction of its own (`PgStore::push_taken`: a retried push is OK,
//! anything else a duplicate), exactly as if the requests had run one after the other.
//!
//! Every request is answered only after the statement committed. If the server refuses the
//! statement (nothing of it was applied; say, one job's text cannot be stored), each request
//! is applied on its own, so one bad request cannot fail the others; if the connection fails,
//! every request of the batch gets the error (the outcome is unknown: a client's retry with the
//! same jid is safe, see the retried-push rule).

use std::sync::Arc;

use tokio::sync::oneshot;
use werk_core::{Millis, PushError};
use werk_store::NewJob;

use crate::lanes::{Lanes, Weighed};
use crate::{pg, PgStore, Result};

/// Lanes per node: batched PUSH statements in flight at once.
pub const PUSH_LANES: usize = 4;

/// The most jobs one batch inserts (a single larger PUSHB is a batch of its own).
pub const PUSH_BATCH_MAX: usize = 256;

type Answer = Result<Vec<std::result::Result<(), PushError>>>;

/// One queued PUSH (or PUSHB) of plain jobs.
pub(crate) struct Pending {
    jobs: Vec<NewJob>,
    now: Millis,
    reply: oneshot::Sender<Answer>,
}

impl Weighed for Pending {
    fn weight(&self) -> usize {
        self.jobs.len().max(1)
    }
}

impl PgStore {
    /// Starts this store's PUSH lanes (once, from [`PgStore::connect`]; needs a Tokio runtime).
    pub(crate) fn start_push_lanes(&mut self) {
        let store = Arc::new(self.lane_handle());
        self.pushes = Lanes::start(PUSH_LANES, PUSH_BATCH_MAX, "PUSH", move |batch| {
            let store = store.clone();
            async move { store.push_batch(batch).await }
        });
    }

    /// For tests: PUSHes queued that no lane has taken yet.
    #[doc(hidden)]
    pub async fn queued_pushes(&self) -> usize {
        self.pushes.queued().await
    }

    /// A push of plain jobs: through this node's PUSH lanes, answered after the commit that
    /// stored them.
    pub(crate) async fn push_batched(&self, jobs: Vec<NewJob>, now: Millis) -> Answer {
        if !self.pushes.running() {
            let mut client = self.client().await?;
            return self.push_plain(&mut client, jobs, now).await;
        }
        self.pushes
            .ask("PUSH", |reply| Pending { jobs, now, reply })
            .await
    }

    /// Applies one batch taken by a lane and answers each of its requests.
    async fn push_batch(&self, batch: Vec<Pending>) {
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        if batch.len() == 1 {
            for p in batch {
                let answer = self.push_plain(&mut client, p.jobs, p.now).await;
                let _ = p.reply.send(answer);
            }
            return;
        }
        let mut sizes = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut all = Vec::new();
        for p in batch {
            sizes.push((p.jobs.len(), p.now));
            replies.push(p.reply);
            all.extend(p.jobs.into_iter().map(|j| (j, p.now)));
        }
        let inserted = self.insert_plain(&client, &mut all).await;
        let mut all = all.into_iter();
        let mut offset = 0;
        match inserted {
            Ok(inserted) => {
                for ((n, now), reply) in sizes.into_iter().zip(replies) {
                    let jobs: Vec<_> = all.by_ref().take(n).collect();
                    let answer = self
                        .push_taken(&mut client, jobs, &inserted[offset..offset + n], now)
                        .await;
                    offset += n;
                    let _ = reply.send(answer);
                }
            }
            Err(e) if e.code().is_some() && !client.is_closed() => {
                tracing::warn!(
                    requests = replies.len(),
                    error = %pg(e),
                    "batched PUSH statement failed; applying its PUSHes one by one"
                );
                for ((n, now), reply) in sizes.into_iter().zip(replies) {
                    let jobs: Vec<_> = all.by_ref().take(n).map(|(j, _)| j).collect();
                    let answer = self.push_plain(&mut client, jobs, now).await;
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                let e = pg(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
